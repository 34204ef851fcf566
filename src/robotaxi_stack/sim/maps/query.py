"""Queries on a Town: heading-aware lane matching, routing, lane paths, on-road tests.

Positions are in the `map` frame [m], yaw is the heading [rad] counter-clockwise from east.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence, cast

import lanelet2
import numpy as np

from robotaxi_stack.sim.maps.errors import MapError, OffMapError, RouteNotFoundError
from robotaxi_stack.sim.maps.osm import vehicle_traffic_rules
from robotaxi_stack.sim.maps.town import (
    LANELET_KINDS, VEHICLE_KINDS, Town, as_finite, as_points, as_xy, polyline_arclength,
    wrap_angle)

# Heading mismatch is charged as this many metres of distance per radian when ranking
# candidate lanelets, so that inside an intersection the lanelet whose direction fits the
# pose wins over one that merely passes as close.
_YAW_COST_M_PER_RAD = 2.0
# Tie-break at a fork (all branches start at the same point with the same heading): prefer
# going straight by this much [m].
_TURN_TIE_BREAK_M = 1e-3
# Points chunk for the polygon test (points x edges booleans held at once).
_POLYGON_TEST_CELLS = 2_000_000


@dataclasses.dataclass(frozen=True)
class LaneletMatch:
    """Where a position lies on a lanelet.

    arc_length_m: station of the foot point along the lanelet's centreline; lateral_m: signed
    offset from the centreline (+ = left of the travel direction); distance_m: |offset|;
    yaw_error_rad: pose yaw minus lane heading, wrapped (nan when no yaw was given).
    """

    lanelet_id: int
    arc_length_m: float
    lateral_m: float
    distance_m: float
    yaw_error_rad: float


class LanePath(NamedTuple):
    """A path along lane centrelines.

    path_xy: (N, 2) float64 [m], evenly spaced (<= spacing_m) from the start's foot point on
    its lane. lanelet_ids: the lanelets it runs through, in order. stop_s: arc lengths [m]
    along path_xy of the stop lines it meets, ascending.
    """

    path_xy: np.ndarray
    lanelet_ids: list[int]
    stop_s: list[float]


def nearest_lanelet(town: Town, xy: Any, yaw: float | None = None, max_dist_m: float = 5.0,
                    *, max_yaw_diff_rad: float = math.pi / 4.0,
                    kinds: Sequence[str] = VEHICLE_KINDS) -> LaneletMatch:
    """The lanelet a pose is on: closest centreline within `max_dist_m` whose heading is
    within `max_yaw_diff_rad` of `yaw` (any heading when yaw is None).

    A pose on the eastbound lane therefore never matches the westbound lane next to it.
    Raises OffMapError (naming the position) when no lanelet of `kinds` qualifies.
    """
    xy = as_xy(xy, 'xy')
    max_dist_m = as_finite(max_dist_m, 'max_dist_m', 0.0)
    max_yaw_diff_rad = as_finite(max_yaw_diff_rad, 'max_yaw_diff_rad', 0.0, math.pi)
    if yaw is not None:
        yaw = as_finite(yaw, 'yaw')
    unknown = [k for k in kinds if k not in LANELET_KINDS]
    if unknown or not kinds:
        raise MapError(f'kinds = {list(kinds)!r} must be a non-empty subset of {LANELET_KINDS}')
    seg = town._cache['segments']
    rel = xy[None, :] - seg['start']
    t = np.clip(np.einsum('ij,ij->i', rel, seg['direction']) / seg['len2'], 0.0, 1.0)
    offset = rel - t[:, None] * seg['direction']
    dist = np.hypot(offset[:, 0], offset[:, 1])
    allowed = np.isin(seg['kind_code'], [LANELET_KINDS.index(k) for k in kinds])
    candidate = allowed & (dist <= max_dist_m)
    cost = dist + _TURN_TIE_BREAK_M * seg['is_turning']
    yaw_error: np.ndarray = np.full(len(dist), math.nan)
    if yaw is not None:
        yaw_error = np.asarray(wrap_angle(yaw - seg['heading']))
        candidate &= np.abs(yaw_error) <= max_yaw_diff_rad
        cost = cost + _YAW_COST_M_PER_RAD * np.abs(yaw_error)
    if not np.any(candidate):
        closest = float(np.min(np.where(allowed, dist, np.inf)))
        heading = '' if yaw is None else f' with heading within {max_yaw_diff_rad:.2f} rad ' \
                                         f'of yaw = {yaw:.3f} rad'
        raise OffMapError(f'xy = {xy.tolist()} is off the map: no {"/".join(kinds)} lanelet '
                          f'within {max_dist_m} m{heading} (closest centreline of any heading '
                          f'{closest:.2f} m away)')
    k = int(np.argmin(np.where(candidate, cost, np.inf)))
    seg_len = math.sqrt(seg['len2'][k])
    direction = seg['direction'][k]
    lateral = (direction[0] * rel[k, 1] - direction[1] * rel[k, 0]) / seg_len
    return LaneletMatch(int(seg['lanelet_ids'][seg['owner'][k]]),
                        float(seg['s0'][k] + t[k] * seg_len), float(lateral), float(dist[k]),
                        float(yaw_error[k]))


def build_routing_graph(town: Town) -> Any:
    """The lanelet2 RoutingGraph of the town under German vehicle traffic rules (cached)."""
    graph = town._cache.get('routing_graph')
    if graph is None:
        rules = vehicle_traffic_rules()
        graph = lanelet2.routing.RoutingGraph(town.lanelet_map, rules)
        # The graph refers to the rules; keep both alive together.
        town._cache['traffic_rules'] = rules
        town._cache['routing_graph'] = graph
        town._cache['successors'] = {}
    return graph


def successors(town: Town, lanelet_id: int) -> tuple[int, ...]:
    """Ids of the lanelets a vehicle may enter from the end of `lanelet_id` (no lane change)."""
    graph = build_routing_graph(town)
    cache = town._cache['successors']
    lanelet_id = int(lanelet_id)
    if lanelet_id not in cache:
        town.lanelet(lanelet_id)
        lanelet = town.lanelet_map.laneletLayer[lanelet_id]
        cache[lanelet_id] = tuple(sorted(ll.id for ll in graph.following(lanelet, False)))
    return cache[lanelet_id]


def _path_ids(path: Any) -> list[int]:
    return [int(ll.id) for ll in path]


def _route_length_m(town: Town, ids: Sequence[int]) -> float:
    return float(sum(town.lanelets[i].length_m for i in ids))


def shortest_route(town: Town, start_xy: Any, start_yaw: float, goal_xy: Any,
                   goal_yaw: float | None = None, *, max_dist_m: float = 5.0) -> list[int]:
    """Lanelet ids of the shortest drivable route from a pose to a goal position.

    The start lanelet respects `start_yaw`; the goal lanelet is the nearest to `goal_xy`
    (respecting `goal_yaw` when given). A goal behind the start on the same lanelet routes
    round the block. Lane changes appear as consecutive adjacent lanelets. Raises OffMapError
    for poses off the map and RouteNotFoundError when no route exists.
    """
    start = nearest_lanelet(town, start_xy, start_yaw, max_dist_m)
    goal = nearest_lanelet(town, goal_xy, goal_yaw, max_dist_m)
    graph = build_routing_graph(town)
    layer = town.lanelet_map.laneletLayer
    if start.lanelet_id == goal.lanelet_id and goal.arc_length_m >= start.arc_length_m:
        return [start.lanelet_id]
    if start.lanelet_id == goal.lanelet_id:
        best: list[int] | None = None
        for nxt in successors(town, start.lanelet_id):
            path = graph.shortestPath(layer[nxt], layer[goal.lanelet_id])
            if path is None:
                continue
            ids = [start.lanelet_id] + _path_ids(path)
            if best is None or _route_length_m(town, ids) < _route_length_m(town, best):
                best = ids
        route = best
    else:
        path = graph.shortestPath(layer[start.lanelet_id], layer[goal.lanelet_id])
        route = None if path is None else _path_ids(path)
    if route is None:
        raise RouteNotFoundError(
            f'no drivable route from start_xy = {np.asarray(start_xy).tolist()} (lanelet '
            f'{start.lanelet_id}) to goal_xy = {np.asarray(goal_xy).tolist()} (lanelet '
            f'{goal.lanelet_id})')
    return route


def _straightest(town: Town, options: Sequence[int]) -> int:
    """The successor that goes straight on: tagged straight, else least heading change."""
    def key(lanelet_id: int) -> tuple[int, float, int]:
        geom = town.lanelets[lanelet_id]
        d0 = geom.centerline[1] - geom.centerline[0]
        d1 = geom.centerline[-1] - geom.centerline[-2]
        change = abs(float(wrap_angle(math.atan2(d1[1], d1[0]) - math.atan2(d0[1], d0[0]))))
        return (0 if geom.turn_direction == 'straight' else 1, change, lanelet_id)
    return min(options, key=key)


def lane_path(town: Town, xy: Any, yaw: float, length_m: float, choose: str = 'straight',
              rng: np.random.Generator | None = None, *, spacing_m: float = 0.5,
              max_dist_m: float = 5.0) -> LanePath:
    """Follow lane centrelines for `length_m` from the lane under a pose.

    Starts at the foot point of `xy` on the lanelet matched by `nearest_lanelet` (heading
    aware) and follows successors: choose='straight' goes straight on where it can;
    choose='random' picks uniformly with `rng` (required, so runs are reproducible) among the
    successors that do not dead-end, or all when every one does. The path is shorter than
    `length_m` only where the lanes end (the town's edge). Path points are spaced evenly,
    `spacing_m` or less apart (a single point when the start is at a dead end).
    """
    length_m = as_finite(length_m, 'length_m', 0.0)
    if length_m <= 0.0:
        raise MapError(f'length_m = {length_m!r} must be > 0')
    spacing_m = as_finite(spacing_m, 'spacing_m', 1e-3)
    if choose not in ('straight', 'random'):
        raise MapError(f"choose = {choose!r} must be 'straight' or 'random'")
    if choose == 'random' and not isinstance(rng, np.random.Generator):
        raise MapError(f"choose = 'random' needs rng = a numpy Generator, got {rng!r}")
    match = nearest_lanelet(town, xy, yaw, max_dist_m)
    geom = town.lanelets[match.lanelet_id]
    s_cl = polyline_arclength(geom.centerline)
    foot = np.array([np.interp(match.arc_length_m, s_cl, geom.centerline[:, 0]),
                     np.interp(match.arc_length_m, s_cl, geom.centerline[:, 1])])
    rest = geom.centerline[s_cl > match.arc_length_m + 1e-9]
    pieces = [foot[None, :], rest]
    last_xy = rest[-1] if len(rest) else foot
    ids = [match.lanelet_id]
    starts_s = [-match.arc_length_m]  # path station of each lanelet's centreline start
    total_m = geom.length_m - match.arc_length_m
    current = match.lanelet_id
    while total_m < length_m:
        options = successors(town, current)
        if not options:
            break
        if choose == 'straight':
            current = _straightest(town, options)
        else:
            onward = [o for o in options if successors(town, o)] or list(options)
            current = onward[int(cast(np.random.Generator, rng).integers(len(onward)))]
        centerline = town.lanelets[current].centerline
        # Successors share their first point with our last one; a loaded map may leave a gap.
        gap_m = float(np.linalg.norm(centerline[0] - last_xy))
        if gap_m < 1e-6:
            gap_m, centerline = 0.0, centerline[1:]
        pieces.append(centerline)
        ids.append(current)
        starts_s.append(total_m + gap_m)
        total_m += gap_m + town.lanelets[current].length_m
        last_xy = centerline[-1]
    raw = np.concatenate([p for p in pieces if len(p)])
    s_raw = polyline_arclength(raw)
    end_s = min(length_m, float(s_raw[-1]))
    if end_s <= 1e-9:
        path_xy = raw[:1].copy()
    else:
        count = int(math.ceil(end_s / spacing_m - 1e-9)) + 1
        s_new = np.linspace(0.0, end_s, count)
        path_xy = np.column_stack((np.interp(s_new, s_raw, raw[:, 0]),
                                   np.interp(s_new, s_raw, raw[:, 1])))
    stop_s = sorted(start + line.station_m
                    for lanelet_id, start in zip(ids, starts_s)
                    for line in town.stop_lines_on(lanelet_id)
                    if -1e-6 <= start + line.station_m <= end_s + 1e-9)
    return LanePath(path_xy, ids, [max(0.0, float(s)) for s in stop_s])


def is_on_road(town: Town, xy: Any) -> np.ndarray:
    """(N,) bool: which points of `xy` (N, 2) [m] lie on the road surface.

    Generated towns test their road rectangles (cut kerb corners included; a point on the
    kerb line counts as on the road). Loaded maps, which have no surface model, test
    the polygons of their vehicle and crosswalk lanelets.
    """
    xy = as_points(xy, 'xy')
    if len(town.road_rects):
        return _in_road_cells(town, xy)
    return _in_lanelet_polygons(town, xy)


def _road_cells(town: Town) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectangle edges split the extent into cells that are each all road or all block."""
    cells = town._cache.get('road_cells')
    if cells is None:
        rects = np.concatenate((town.road_rects, town.block_rects))
        x_breaks = np.unique(np.concatenate((rects[:, 0], rects[:, 2])))
        y_breaks = np.unique(np.concatenate((rects[:, 1], rects[:, 3])))
        cx = 0.5 * (x_breaks[:-1] + x_breaks[1:])
        cy = 0.5 * (y_breaks[:-1] + y_breaks[1:])
        road = town.road_rects
        in_x = (cx[:, None] > road[None, :, 0]) & (cx[:, None] < road[None, :, 2])
        in_y = (cy[:, None] > road[None, :, 1]) & (cy[:, None] < road[None, :, 3])
        is_road = np.einsum('ik,jk->ij', in_x.astype(np.int32), in_y.astype(np.int32)) > 0
        cells = (x_breaks, y_breaks, is_road)
        town._cache['road_cells'] = cells
    return cells


def _in_road_cells(town: Town, xy: np.ndarray) -> np.ndarray:
    x_breaks, y_breaks, is_road = _road_cells(town)
    out = np.zeros(len(xy), dtype=bool)
    # A point on a cell edge looks at the cells on both sides: road rectangles are closed.
    for side_x in ('left', 'right'):
        ix = np.searchsorted(x_breaks, xy[:, 0], side=side_x) - 1
        for side_y in ('left', 'right'):
            iy = np.searchsorted(y_breaks, xy[:, 1], side=side_y) - 1
            ok = (ix >= 0) & (ix < len(x_breaks) - 1) & (iy >= 0) & (iy < len(y_breaks) - 1)
            out[ok] |= is_road[ix[ok], iy[ok]]
    return out


def _lanelet_edges(town: Town) -> tuple[np.ndarray, np.ndarray]:
    edges = town._cache.get('polygon_edges')
    if edges is None:
        polygons = [np.concatenate((g.left, g.right[::-1])) for g in town.lanelets.values()
                    if g.kind in VEHICLE_KINDS + ('crosswalk',)]
        if not polygons:
            edges = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
            town._cache['polygon_edges'] = edges
            return edges
        starts = np.cumsum([0] + [len(p) for p in polygons[:-1]])
        a = np.concatenate(polygons)
        b = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
        edges = (np.column_stack((a, b)), starts)
        town._cache['polygon_edges'] = edges
    return edges


def _in_lanelet_polygons(town: Town, xy: np.ndarray) -> np.ndarray:
    """Even-odd test against every lanelet polygon at once, in chunks of points."""
    edges, starts = _lanelet_edges(town)
    out = np.zeros(len(xy), dtype=bool)
    if len(edges) == 0:
        return out
    x0, y0, x1, y1 = edges.T
    chunk = max(1, _POLYGON_TEST_CELLS // len(edges))
    for first in range(0, len(xy), chunk):
        px = xy[first:first + chunk, 0:1]
        py = xy[first:first + chunk, 1:2]
        spans = (y0 > py) != (y1 > py)
        with np.errstate(divide='ignore', invalid='ignore'):
            x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        crossings = (spans & (px < x_cross)).astype(np.int32)
        parity = np.add.reduceat(crossings, starts, axis=1) % 2
        out[first:first + chunk] = np.any(parity == 1, axis=1)
    return out
