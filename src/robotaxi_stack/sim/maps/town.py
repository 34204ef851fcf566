"""Town: a Lanelet2 map plus the plain-numpy geometry the simulator reads every tick.

All coordinates are in the `map` frame: metres east (x) and north (y) of the map's projection
origin, z up. Polylines are (N, 2) float64 arrays, rectangles are (K, 4) float64 rows
[x_min, y_min, x_max, y_max].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from robotaxi_stack.sim.maps.errors import MapError

#: Lanelet kinds. `road`: a driving lane between intersections; `turn`: a lanelet through an
#: intersection (has a turn_direction); `crosswalk`: a pedestrian crossing; `other`: anything
#: vehicles may not use that is not a crosswalk (walkways, ...).
LANELET_KINDS = ('road', 'turn', 'crosswalk', 'other')
VEHICLE_KINDS = ('road', 'turn')

# Points closer than this are the same point; far below the 1 cm the .osm round trip keeps.
_SAME_POINT_M = 1e-6


def as_xy(value: Any, name: str) -> np.ndarray:
    """Return `value` as a finite (2,) float64 position [m], or raise MapError naming it."""
    try:
        xy = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MapError(f'{name} = {value!r} is not a 2-D position [x, y] in metres') from exc
    if xy.shape != (2,):
        raise MapError(f'{name} = {value!r} must have shape (2,), got {xy.shape}')
    if not np.all(np.isfinite(xy)):
        raise MapError(f'{name} = {value!r} must be finite')
    return xy


def as_points(value: Any, name: str) -> np.ndarray:
    """Return `value` as a finite (N, 2) float64 array [m], or raise MapError naming it."""
    try:
        xy = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MapError(f'{name} is not an (N, 2) array of positions in metres') from exc
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise MapError(f'{name} must have shape (N, 2), got {xy.shape}')
    if not np.all(np.isfinite(xy)):
        bad = int(np.argmax(~np.all(np.isfinite(xy), axis=1)))
        raise MapError(f'{name}[{bad}] = {xy[bad].tolist()} must be finite')
    return xy


def as_finite(value: Any, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    """Return `value` as a finite float in [low, high], or raise MapError naming it."""
    if isinstance(value, bool):
        raise MapError(f'{name} = {value!r} must be a number')
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise MapError(f'{name} = {value!r} must be a number') from exc
    if not math.isfinite(number) or not low <= number <= high:
        raise MapError(f'{name} = {value!r} is out of range; allowed {low} <= {name} <= {high}')
    return number


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles [rad] into [-pi, pi)."""
    return (np.asarray(angle_rad) + np.pi) % (2.0 * np.pi) - np.pi


def remove_duplicate_points(xy: np.ndarray) -> np.ndarray:
    """Drop consecutive points closer than 1 um (zero-length segments break projections)."""
    if len(xy) < 2:
        return xy
    keep = np.ones(len(xy), dtype=bool)
    keep[1:] = np.linalg.norm(np.diff(xy, axis=0), axis=1) > _SAME_POINT_M
    return xy[keep]


def polyline_arclength(xy: np.ndarray) -> np.ndarray:
    """Cumulative arc length [m] (N,) of an (N, 2) polyline, starting at 0."""
    s = np.zeros(len(xy))
    if len(xy) > 1:
        np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1), out=s[1:])
    return s


def resample_polyline(xy: np.ndarray, count: int) -> np.ndarray:
    """Resample an (N, 2) polyline to `count` points evenly spaced in arc length."""
    s = polyline_arclength(xy)
    if s[-1] <= 0.0:
        return np.repeat(xy[:1], count, axis=0)
    target = np.linspace(0.0, s[-1], count)
    return np.column_stack((np.interp(target, s, xy[:, 0]), np.interp(target, s, xy[:, 1])))


def centerline_from_bounds(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Centreline (N, 2) of a lanelet from its left (L, 2) and right (R, 2) bounds [m].

    Bounds with equal point counts are averaged point by point: for the generated towns
    (concentric arcs sampled at the same angles) this lies exactly on the centre arc. Other
    bounds are first resampled to a common count by normalised arc length.
    """
    if len(left) != len(right):
        count = max(len(left), len(right),
                    int(math.ceil(float(polyline_arclength(left)[-1]))) + 1)
        left = resample_polyline(left, count)
        right = resample_polyline(right, count)
    return remove_duplicate_points(0.5 * (left + right))


def line_station_on_polyline(polyline: np.ndarray, line_xy: np.ndarray) -> float:
    """Arc length [m] along `polyline` (N, 2) where the segment `line_xy` (2, 2) crosses it.

    Returns the first crossing; where the segment does not reach the polyline (a stop line
    drawn short of the lane centre), the projection of the segment's midpoint instead.
    """
    start = polyline[:-1]
    direction = np.diff(polyline, axis=0)
    s0 = polyline_arclength(polyline)[:-1]
    seg_len = np.linalg.norm(direction, axis=1)
    a0 = line_xy[0]
    edge = line_xy[1] - line_xy[0]
    denom = direction[:, 0] * edge[1] - direction[:, 1] * edge[0]
    rel = a0 - start
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (rel[:, 0] * edge[1] - rel[:, 1] * edge[0]) / denom
        u = (rel[:, 0] * direction[:, 1] - rel[:, 1] * direction[:, 0]) / denom
    tol = 1e-9
    hit = (np.abs(denom) > 1e-12) & (t >= -tol) & (t <= 1 + tol) & (u >= -tol) & (u <= 1 + tol)
    if np.any(hit):
        stations = s0[hit] + np.clip(t[hit], 0.0, 1.0) * seg_len[hit]
        return float(np.min(stations))
    return project_on_polyline(polyline, 0.5 * (line_xy[0] + line_xy[1]))[0]


def project_on_polyline(polyline: np.ndarray, xy: np.ndarray) -> tuple[float, float]:
    """Project `xy` (2,) on `polyline` (N, 2): (arc length [m], signed lateral [m], + = left)."""
    if len(polyline) == 1:
        return 0.0, float(np.linalg.norm(xy - polyline[0]))
    start = polyline[:-1]
    direction = np.diff(polyline, axis=0)
    len2 = np.einsum('ij,ij->i', direction, direction)
    t = np.clip(np.einsum('ij,ij->i', xy - start, direction) / len2, 0.0, 1.0)
    foot = start + t[:, None] * direction
    dist2 = np.einsum('ij,ij->i', xy - foot, xy - foot)
    k = int(np.argmin(dist2))
    seg_len = math.sqrt(len2[k])
    rel = xy - start[k]
    lateral = (direction[k, 0] * rel[1] - direction[k, 1] * rel[0]) / seg_len
    return float(polyline_arclength(polyline)[k] + t[k] * seg_len), float(lateral)


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class LaneletGeometry:
    """Plain-numpy view of one lanelet.

    centerline, left, right: (N, 2), (L, 2), (R, 2) float64 polylines [m] in the direction of
    travel (for crosswalks: across the road). speed_limit_kph: the limit the Lanelet2 vehicle
    traffic rules read (nan for lanelets vehicles may not use). turn_direction: 'left',
    'right', 'straight' on intersection lanelets, '' elsewhere. length_m: centreline length.
    """

    lanelet_id: int
    kind: str
    centerline: np.ndarray
    left: np.ndarray
    right: np.ndarray
    speed_limit_kph: float
    turn_direction: str = ''
    length_m: float = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in LANELET_KINDS:
            raise MapError(f'lanelet {self.lanelet_id}: kind = {self.kind!r} must be one of '
                           f'{LANELET_KINDS}')
        for name in ('centerline', 'left', 'right'):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim != 2 or value.shape[1] != 2 or len(value) < 2:
                raise MapError(f'lanelet {self.lanelet_id}: {name} must have shape (N>=2, 2), '
                               f'got {value.shape}')
            object.__setattr__(self, name, _read_only(value))
        object.__setattr__(self, 'length_m', float(polyline_arclength(self.centerline)[-1]))


@dataclasses.dataclass(frozen=True, eq=False)
class StopLine:
    """A stop line: segment `xy` (2, 2) [m] that vehicles on `lanelet_id` stop before.

    station_m: arc length along that lanelet's centreline where the line crosses it.
    """

    line_id: int
    lanelet_id: int
    xy: np.ndarray
    station_m: float

    def __post_init__(self) -> None:
        object.__setattr__(self, 'xy', _read_only(np.asarray(self.xy).reshape(2, 2)))


@dataclasses.dataclass(frozen=True, eq=False)
class Crosswalk:
    """A pedestrian crossing: the crosswalk lanelet's id and its polygon (M, 2) [m]."""

    lanelet_id: int
    polygon: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, 'polygon', _read_only(self.polygon))


def _as_rects(value: Any, name: str) -> np.ndarray:
    rects = np.asarray(value, dtype=np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(rects)) or np.any(rects[:, 2:] < rects[:, :2]):
        raise MapError(f'{name} must hold finite [x_min, y_min, x_max, y_max] rows')
    return _read_only(rects)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Town:
    """A Lanelet2 map and the numpy geometry derived from it.

    lanelet_map: the lanelet2.core.LaneletMap (coordinates in the `map` frame).
    lanelets: lanelet id -> LaneletGeometry, for every lanelet of the map.
    stop_lines: one StopLine per (stop line, lanelet it applies to).
    crosswalks: the crosswalk polygons.
    road_rects (K, 4): the road surface (ground level) as disjoint axis-aligned rectangles.
    block_rects (M, 4): its complement inside `extent` (kerb-level blocks: sidewalk, then
        buildings); block_ids (M,) says which block each rectangle is part of.
    building_rects (B, 4): building footprints (standing on the block, `building_height_m`).
    extent (4,): [x_min, y_min, x_max, y_max] of the town [m].
    The rectangle arrays are empty for maps loaded from .osm, which carry no surface model;
    `is_on_road` then tests the lanelet polygons instead.
    params: the generator parameters (GridTownParams) or None for a loaded map.
    """

    lanelet_map: Any
    lanelets: Mapping[int, LaneletGeometry]
    stop_lines: tuple[StopLine, ...]
    crosswalks: tuple[Crosswalk, ...]
    road_rects: np.ndarray
    block_rects: np.ndarray
    block_ids: np.ndarray
    building_rects: np.ndarray
    extent: np.ndarray
    params: Any = None
    kerb_height_m: float = 0.0
    building_height_m: float = 0.0
    # Derived look-up structures and lazily built lanelet2 objects (routing graph, rules).
    _cache: dict = dataclasses.field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lanelets:
            raise MapError('a Town needs at least one lanelet')
        object.__setattr__(self, 'lanelets', dict(sorted(self.lanelets.items())))
        object.__setattr__(self, 'stop_lines', tuple(self.stop_lines))
        object.__setattr__(self, 'crosswalks', tuple(self.crosswalks))
        for name in ('road_rects', 'block_rects', 'building_rects'):
            object.__setattr__(self, name, _as_rects(getattr(self, name), name))
        block_ids = np.asarray(self.block_ids, dtype=np.int64).reshape(-1)
        if len(block_ids) != len(self.block_rects):
            raise MapError(f'block_ids has {len(block_ids)} entries for '
                           f'{len(self.block_rects)} block_rects')
        block_ids.setflags(write=False)
        object.__setattr__(self, 'block_ids', block_ids)
        object.__setattr__(self, 'extent', _as_rects(self.extent, 'extent').reshape(4))
        self._build_segment_index()
        stops: dict[int, list[StopLine]] = {}
        for line in self.stop_lines:
            stops.setdefault(line.lanelet_id, []).append(line)
        self._cache['stop_lines_by_lanelet'] = {
            key: tuple(sorted(value, key=lambda line: line.station_m))
            for key, value in stops.items()}

    def _build_segment_index(self) -> None:
        """Concatenate every centreline segment once, for vectorised nearest-lane queries."""
        ids = np.fromiter(self.lanelets.keys(), dtype=np.int64, count=len(self.lanelets))
        geoms = list(self.lanelets.values())
        counts = np.array([len(g.centerline) - 1 for g in geoms])
        starts = np.concatenate([g.centerline[:-1] for g in geoms])
        ends = np.concatenate([g.centerline[1:] for g in geoms])
        s0 = np.concatenate([polyline_arclength(g.centerline)[:-1] for g in geoms])
        owner = np.repeat(np.arange(len(geoms)), counts)
        direction = ends - starts
        kind_code = np.array([LANELET_KINDS.index(g.kind) for g in geoms], dtype=np.int64)
        turn = np.array([g.turn_direction not in ('', 'straight') for g in geoms])
        self._cache['segments'] = {
            'lanelet_ids': ids, 'start': starts, 'direction': direction,
            'len2': np.maximum(np.einsum('ij,ij->i', direction, direction), 1e-18),
            'heading': np.arctan2(direction[:, 1], direction[:, 0]), 's0': s0,
            'owner': owner, 'kind_code': kind_code[owner], 'is_turning': turn[owner]}

    def __repr__(self) -> str:
        kinds = {k: sum(g.kind == k for g in self.lanelets.values()) for k in LANELET_KINDS}
        return (f'Town(lanelets={kinds}, stop_lines={len(self.stop_lines)}, '
                f'extent={self.extent.tolist()}, params={self.params!r})')

    def stop_lines_on(self, lanelet_id: int) -> tuple[StopLine, ...]:
        """Stop lines that apply to `lanelet_id`, ordered by station along it."""
        return self._cache['stop_lines_by_lanelet'].get(int(lanelet_id), ())

    def lanelet(self, lanelet_id: int) -> LaneletGeometry:
        """Geometry of one lanelet; MapError naming the id if the map has none such."""
        try:
            return self.lanelets[int(lanelet_id)]
        except KeyError:
            raise MapError(f'lanelet_id = {lanelet_id!r} is not a lanelet of this map') from None
