"""The `grid_town` generator (ARCHITECTURE.md section 6): a Manhattan grid as a Lanelet2 map.

Geometry (all in the `map` frame, metres):
- Straight two-way roads along x = i*block_m (i = 0..blocks_x) and y = j*block_m
  (j = 0..blocks_y), right-hand traffic. Each side of a road's centre line carries
  `lanes_per_direction` lanes of `lane_width_m`; lane k (k = 0 next to the centre line) is
  centred (k + 0.5)*lane_width_m to the right of the centre line. So the first eastbound lane
  of the road y = 0 is centred on y = -1.75 and the first northbound lane of x = 240 on
  x = 241.75 (defaults). Half a road is W = lanes_per_direction*lane_width_m wide.
- Every grid point is a four-way intersection; its box is the square where the two roads
  cross, |dx|, |dy| <= W. Each road also runs on for `edge_road_m` past the outer grid lines
  (a dead end at the town's edge), so the outer grid points have four arms too.
- Each arm has a stop line for its incoming lanes `stop_line_offset_m` (4 m) before the box,
  i.e. W + 4 m from the grid point. It is the end of the incoming road lanelet and is
  referenced by a traffic_sign regulatory element (a stop sign) on that lanelet.
- Intersection lanelets (turn_direction straight/left/right) run from stop line to stop line:
  every lane goes straight on; the leftmost lane (k = 0) also turns left and the rightmost lane
  (k = n - 1) also turns right, into the same lane index. Turns are circular arcs tangent to
  both lanes, centred W + 4 m back and W + 4 m to the side of the grid point (radius 5.75 m
  right, 9.25 m left with the defaults).
- A crosswalk lanelet crosses each arm between the stop line and the box, spanning the road
  (|lateral| <= W) from `crosswalk_gap_m` to `crosswalk_gap_m + crosswalk_width_m` outside the
  box: 0.5 m .. 3.5 m (defaults).
- Off the road: kerb-level blocks (sidewalk `sidewalk_width_m` wide along the kerb, then
  buildings `building_setback_m` further in). Block corners at intersections are cut back by
  a `corner_cut_m` square (kerb cut-back), which keeps a vehicle on a right-turn centreline
  about 1.3 m clear of the kerb (defaults).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import lanelet2
import numpy as np

from robotaxi_stack.sim.maps.errors import MapParamError
from robotaxi_stack.sim.maps.town import (
    Crosswalk, LaneletGeometry, StopLine, Town, centerline_from_bounds,
    line_station_on_polyline)

# Arm / travel directions in the order east, north, west, south.
_DIRS = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
_EAST, _NORTH, _WEST, _SOUTH = 0, 1, 2, 3
# Most degrees one arc segment of a turn bound spans: keeps chord error < 1 cm at r <= 11 m.
_ARC_STEP_DEG = 5.0

# (type, low, high) of every parameter; relational limits are checked after these.
_PARAM_RANGES: dict[str, tuple[type, float, float]] = {
    'blocks_x': (int, 1, 50),
    'blocks_y': (int, 1, 50),
    'block_m': (float, 10.0, 2000.0),
    'lanes_per_direction': (int, 1, 4),
    'lane_width_m': (float, 2.5, 5.0),
    'speed_limit_kph': (float, 5.0, 130.0),
    'sidewalk_width_m': (float, 0.5, 10.0),
    'kerb_height_m': (float, 0.0, 0.5),
    'stop_line_offset_m': (float, 1.0, 20.0),
    'crosswalk_gap_m': (float, 0.0, 5.0),
    'crosswalk_width_m': (float, 1.0, 10.0),
    'corner_cut_m': (float, 0.0, 10.0),
    'edge_road_m': (float, 10.0, 1000.0),
    'building_setback_m': (float, 0.0, 50.0),
    'building_height_m': (float, 0.0, 300.0),
}
# Shortest road lanelet allowed between two stop lines [m].
_MIN_ROAD_LANELET_M = 5.0
# lanelet2's bundled type stubs misspell this class (TrafficSignWithType).
_TrafficSignsWithType = getattr(lanelet2.core, 'TrafficSignsWithType')


def _attributes(**values: str) -> Any:
    # Built once per kind: lanelet2 copies attribute maps into each primitive.
    return lanelet2.core.AttributeMap(values)


_CENTRE_LINE = _attributes(type='line_thin', subtype='solid')
_LANE_DIVIDER = _attributes(type='line_thin', subtype='dashed')
_ROAD_BORDER = _attributes(type='road_border')
_VIRTUAL = _attributes(type='virtual')
_CROSSWALK_EDGE = _attributes(type='line_thin', subtype='dashed')
_STOP_LINE = _attributes(type='stop_line')
_STOP_SIGN = _attributes(type='traffic_sign', subtype='stop_sign')
_TRAFFIC_SIGN_RULE = _attributes(type='regulatory_element', subtype='traffic_sign')


def _range_error(name: str, value: Any, low: float, high: float, why: str = '') -> MapParamError:
    reason = f' ({why})' if why else ''
    return MapParamError(f'GridTownParams.{name} = {value!r} is out of range; allowed '
                         f'{low:g} <= {name} <= {high:g}{reason}')


@dataclasses.dataclass(frozen=True)
class GridTownParams:
    """Validated parameters of `grid_town` (lengths in metres, speed in km/h).

    Construction raises MapParamError naming the parameter, its value and the allowed range.
    """

    blocks_x: int = 3
    blocks_y: int = 2
    block_m: float = 120.0
    lanes_per_direction: int = 1
    lane_width_m: float = 3.5
    speed_limit_kph: float = 40.0
    sidewalk_width_m: float = 3.0
    kerb_height_m: float = 0.15
    stop_line_offset_m: float = 4.0
    crosswalk_gap_m: float = 0.5
    crosswalk_width_m: float = 3.0
    corner_cut_m: float = 2.0
    edge_road_m: float = 40.0
    building_setback_m: float = 2.0
    building_height_m: float = 12.0

    def __post_init__(self) -> None:
        for name, (kind, low, high) in _PARAM_RANGES.items():
            value = getattr(self, name)
            numeric = isinstance(value, (int, float, np.integer, np.floating))
            if isinstance(value, bool) or not numeric:
                raise MapParamError(f'GridTownParams.{name} = {value!r} must be '
                                    f'{"an integer" if kind is int else "a number"}')
            if kind is int:
                if float(value) != int(value):
                    raise MapParamError(f'GridTownParams.{name} = {value!r} must be an integer')
                value = int(value)
            else:
                value = float(value)
            if not math.isfinite(value) or not low <= value <= high:
                raise _range_error(name, getattr(self, name), low, high)
            object.__setattr__(self, name, value)
        half_road_m = self.half_road_m
        s = self.stop_line_offset_m
        if self.crosswalk_gap_m + self.crosswalk_width_m > s:
            raise _range_error('crosswalk_width_m', self.crosswalk_width_m, 1.0,
                               s - self.crosswalk_gap_m,
                               'the crosswalk must fit between stop line and intersection box')
        min_block_m = 2.0 * (half_road_m + s) + _MIN_ROAD_LANELET_M
        if self.block_m < min_block_m:
            raise _range_error('block_m', self.block_m, min_block_m, 2000.0,
                               'two intersections and their stop lines must fit in a block')
        min_edge_m = half_road_m + s + _MIN_ROAD_LANELET_M
        if self.edge_road_m < min_edge_m:
            raise _range_error('edge_road_m', self.edge_road_m, min_edge_m, 1000.0,
                               'the outer arms need their stop line and a road lanelet')
        max_cut_m = min(self.sidewalk_width_m, s)
        if self.corner_cut_m > max_cut_m:
            raise _range_error('corner_cut_m', self.corner_cut_m, 0.0, max_cut_m,
                               'the cut-back stays within the sidewalk and the stop line')

    @property
    def half_road_m(self) -> float:
        """Distance from a road's centre line to its kerb [m]."""
        return self.lanes_per_direction * self.lane_width_m

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> 'GridTownParams':
        """Build from a scenario's `map.params` mapping; unknown keys are errors naming them."""
        if not isinstance(values, Mapping):
            raise MapParamError(f'grid_town params = {values!r} must be a mapping')
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MapParamError(f'unknown grid_town parameter(s) {unknown}; known: '
                                f'{sorted(known)}')
        return cls(**values)


def _right(v: np.ndarray) -> np.ndarray:
    return np.array([v[1], -v[0]])


def _left(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]])


@dataclasses.dataclass
class _Row:
    """The 2n + 1 shared points across a road at one place.

    Index m + n (m = -n..n) lies m*lane_width_m along the row's `perp` direction.
    """

    points: list
    xy: np.ndarray


class _GridBuilder:
    """Builds one grid town; holds the id counter and the objects made so far."""

    def __init__(self, params: GridTownParams) -> None:
        self.p = params
        self.n = params.lanes_per_direction
        self.lw = params.lane_width_m
        self.half_m = params.half_road_m
        self.reach_m = params.half_road_m + params.stop_line_offset_m
        self.next_id = 1
        self.lanelet_map = lanelet2.core.LaneletMap()
        self.geoms: dict[int, LaneletGeometry] = {}
        self.stop_lines: list[StopLine] = []
        self.crosswalks: list[Crosswalk] = []
        self.rows: dict[tuple[int, int, int], _Row] = {}
        self.incoming: dict[tuple[int, int, int, int], Any] = {}
        road = {'type': 'lanelet', 'subtype': 'road', 'location': 'urban', 'one_way': 'yes',
                'participant:vehicle': 'yes', 'speed_limit': f'{params.speed_limit_kph:g}'}
        self.road_attrs = _attributes(**road)
        self.turn_attrs = {turn: _attributes(**road, turn_direction=turn)
                           for turn in ('left', 'right', 'straight')}
        self.crosswalk_attrs = _attributes(type='lanelet', subtype='crosswalk',
                                           location='urban', one_way='no',
                                           **{'participant:pedestrian': 'yes'})

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def point(self, xy: np.ndarray, z_m: float = 0.0) -> Any:
        return lanelet2.core.Point3d(self.new_id(), float(xy[0]), float(xy[1]), z_m)

    def linestring(self, points: list, attrs: Any) -> Any:
        return lanelet2.core.LineString3d(self.new_id(), points, attrs)

    def node_xy(self, i: int, j: int) -> np.ndarray:
        return np.array([i * self.p.block_m, j * self.p.block_m])

    def row(self, centre: np.ndarray, perp: np.ndarray) -> _Row:
        offsets = np.arange(-self.n, self.n + 1) * self.lw
        xy = centre[None, :] + offsets[:, None] * perp[None, :]
        return _Row([self.point(p) for p in xy], xy)

    def add_lanelet(self, attrs: Any, left_ls: Any, right_ls: Any, left: np.ndarray,
                    right: np.ndarray, kind: str, turn: str = '') -> Any:
        lanelet = lanelet2.core.Lanelet(self.new_id(), left_ls, right_ls, attrs)
        speed = self.p.speed_limit_kph if kind != 'crosswalk' else math.nan
        self.geoms[lanelet.id] = LaneletGeometry(
            lanelet.id, kind, centerline_from_bounds(left, right), left, right, speed, turn)
        self.lanelet_map.add(lanelet)
        return lanelet

    def build(self) -> Town:
        p = self.p
        bx, by = p.blocks_x, p.blocks_y
        for i in range(bx + 1):
            for j in range(by + 1):
                for d in range(4):
                    centre = self.node_xy(i, j) + _DIRS[d] * self.reach_m
                    self.rows[(i, j, d)] = self.row(centre, _right(_DIRS[d]))
        for j in range(by + 1):
            for i in range(bx):
                self.road_segment((i, j, _EAST), (i + 1, j, _WEST), self.rows[(i + 1, j, _WEST)])
            self.stub((0, j, _WEST))
            self.stub((bx, j, _EAST))
        for i in range(bx + 1):
            for j in range(by):
                self.road_segment((i, j, _NORTH), (i, j + 1, _SOUTH),
                                  self.rows[(i, j + 1, _SOUTH)])
            self.stub((i, 0, _SOUTH))
            self.stub((i, by, _NORTH))
        for i in range(bx + 1):
            for j in range(by + 1):
                self.intersection(i, j)
        road, blocks, block_ids, buildings, extent = _surface_rects(p)
        return Town(lanelet_map=self.lanelet_map, lanelets=self.geoms,
                    stop_lines=tuple(self.stop_lines), crosswalks=tuple(self.crosswalks),
                    road_rects=road, block_rects=blocks, block_ids=block_ids,
                    building_rects=buildings, extent=extent, params=p,
                    kerb_height_m=p.kerb_height_m, building_height_m=p.building_height_m)

    def stub(self, key: tuple[int, int, int]) -> None:
        """The road past an outer grid line: from the arm's stop-line row to the town edge."""
        i, j, d = key
        centre = self.node_xy(i, j) + _DIRS[d] * self.p.edge_road_m
        self.road_segment(key, None, self.row(centre, -_right(_DIRS[d])))

    def road_segment(self, key1: tuple[int, int, int], key2: tuple[int, int, int] | None,
                     row2: _Row) -> None:
        """Both directions of one road stretch, from arm row `key1` to `row2`.

        row2's perp is opposite to row1's, so row1 index m + n faces row2 index -m + n.
        Lanes heading away from key1 use bounds m = k, k + 1; the others the inverted
        bounds m = -k, -(k + 1); m = 0 is the shared centre line.
        """
        n = self.n
        row1 = self.rows[key1]
        bounds = {}
        for m in range(-n, n + 1):
            attrs = _CENTRE_LINE if m == 0 else _ROAD_BORDER if abs(m) == n else _LANE_DIVIDER
            ls = self.linestring([row1.points[m + n], row2.points[-m + n]], attrs)
            bounds[m] = (ls, np.array([row1.xy[m + n], row2.xy[-m + n]]))
        for k in range(n):
            left_ls, left = bounds[k]
            right_ls, right = bounds[k + 1]
            lanelet = self.add_lanelet(self.road_attrs, left_ls, right_ls, left, right, 'road')
            if key2 is not None:
                self.incoming[key2 + (k,)] = lanelet
            left_ls, left = bounds[-k]
            right_ls, right = bounds[-(k + 1)]
            lanelet = self.add_lanelet(self.road_attrs, left_ls.invert(), right_ls.invert(),
                                       left[::-1], right[::-1], 'road')
            self.incoming[key1 + (k,)] = lanelet

    def intersection(self, i: int, j: int) -> None:
        """Turn lanelets, stop lines (with stop signs) and crosswalks of grid point (i, j)."""
        n = self.n
        node = self.node_xy(i, j)
        for a_in in range(4):
            row_in = self.rows[(i, j, a_in)]
            heading_in = -_DIRS[a_in]
            for a_out in range(4):
                if a_out == a_in:
                    continue
                row_out = self.rows[(i, j, a_out)]
                cross = heading_in[0] * _DIRS[a_out][1] - heading_in[1] * _DIRS[a_out][0]
                if cross > 0.5:
                    turn, lanes = 'left', [0]
                    centre = node - heading_in * self.reach_m + _left(heading_in) * self.reach_m
                elif cross < -0.5:
                    turn, lanes = 'right', [n - 1]
                    centre = node - heading_in * self.reach_m + _right(heading_in) * self.reach_m
                else:
                    turn, lanes, centre = 'straight', list(range(n)), None
                for k in lanes:
                    self.turn_lanelet(turn, centre, (row_in.points[-k + n], row_in.xy[-k + n]),
                                      (row_in.points[-k - 1 + n], row_in.xy[-k - 1 + n]),
                                      (row_out.points[k + n], row_out.xy[k + n]),
                                      (row_out.points[k + 1 + n], row_out.xy[k + 1 + n]))
            self.stop_sign(node, (i, j, a_in), row_in)
            self.crosswalk(node, a_in)

    def turn_lanelet(self, turn: str, centre: np.ndarray | None, left_in: tuple,
                     right_in: tuple, left_out: tuple, right_out: tuple) -> None:
        left = self.bound_xy(centre, left_in[1], left_out[1])
        right = self.bound_xy(centre, right_in[1], right_out[1])
        left_ls = self.linestring(
            [left_in[0]] + [self.point(q) for q in left[1:-1]] + [left_out[0]], _VIRTUAL)
        right_ls = self.linestring(
            [right_in[0]] + [self.point(q) for q in right[1:-1]] + [right_out[0]], _VIRTUAL)
        self.add_lanelet(self.turn_attrs[turn], left_ls, right_ls, left, right, 'turn', turn)

    @staticmethod
    def bound_xy(centre: np.ndarray | None, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """A turn bound from `start` to `end` (2,): a line, or an arc around `centre`."""
        if centre is None:
            return np.array([start, end])
        v0, v1 = start - centre, end - centre
        a0 = math.atan2(v0[1], v0[0])
        sweep = math.remainder(math.atan2(v1[1], v1[0]) - a0, 2.0 * math.pi)
        count = max(2, int(math.ceil(abs(math.degrees(sweep)) / _ARC_STEP_DEG))) + 1
        frac = np.linspace(0.0, 1.0, count)
        angle = a0 + sweep * frac
        radius = np.hypot(*v0) + (np.hypot(*v1) - np.hypot(*v0)) * frac
        xy = centre + radius[:, None] * np.column_stack((np.cos(angle), np.sin(angle)))
        # The ends are shared lanelet2 points: keep them bit-identical to the rows.
        xy[0], xy[-1] = start, end
        return xy

    def stop_sign(self, node: np.ndarray, key: tuple[int, int, int], row_in: _Row) -> None:
        """A stop line per incoming lane on the arm's stop-line row, and a stop sign."""
        n = self.n
        arm = _DIRS[key[2]]
        kerb_side = -_right(arm)  # right of the incoming traffic
        base = node + arm * self.reach_m + kerb_side * (self.half_m + 0.5)
        sign = self.linestring([self.point(base, 1.5),
                                self.point(base + kerb_side * 0.6, 1.5)],
                               _STOP_SIGN)
        for k in range(n):
            lanelet = self.incoming[key + (k,)]
            xy = np.array([row_in.xy[-k + n], row_in.xy[-k - 1 + n]])
            line = self.linestring([self.point(xy[0]), self.point(xy[1])], _STOP_LINE)
            regelem = lanelet2.core.TrafficSign(
                self.new_id(), _TRAFFIC_SIGN_RULE, _TrafficSignsWithType([sign], 'stop_sign'),
                _TrafficSignsWithType([]), [line])
            lanelet.addRegulatoryElement(regelem)
            self.lanelet_map.add(regelem)
            geom = self.geoms[lanelet.id]
            self.stop_lines.append(StopLine(line.id, lanelet.id, xy,
                                            line_station_on_polyline(geom.centerline, xy)))

    def crosswalk(self, node: np.ndarray, arm_index: int) -> None:
        """A crosswalk lanelet across the arm, between its stop line and the box."""
        arm = _DIRS[arm_index]
        across = _right(arm)  # walking direction; its left is `arm`, away from the box
        near_m = self.half_m + self.p.crosswalk_gap_m
        far_m = near_m + self.p.crosswalk_width_m
        span = np.array([-self.half_m, self.half_m])[:, None] * across[None, :]
        left = node + arm * far_m + span
        right = node + arm * near_m + span
        left_ls = self.linestring([self.point(q) for q in left], _CROSSWALK_EDGE)
        right_ls = self.linestring([self.point(q) for q in right], _CROSSWALK_EDGE)
        lanelet = self.add_lanelet(self.crosswalk_attrs, left_ls, right_ls, left, right,
                                   'crosswalk')
        self.crosswalks.append(Crosswalk(lanelet.id, np.concatenate((left, right[::-1]))))


def _surface_rects(p: GridTownParams) -> tuple[np.ndarray, ...]:
    """Road surface, blocks (with cut corners), buildings and extent as rectangles.

    Roads form a full cross-hatch over the extent, so the blocks are the products of the gaps
    between road strips in x and in y; together road and block rectangles tile the extent
    without overlap.
    """
    w, b, e, c = p.half_road_m, p.block_m, p.edge_road_m, p.corner_cut_m

    def gaps(count: int) -> list[tuple[float, float, bool, bool]]:
        # (low, high, low side faces a grid point, high side faces a grid point)
        out = [(-e, -w, False, True)]
        out += [(k * b + w, (k + 1) * b - w, True, True) for k in range(count)]
        out.append((count * b + w, count * b + e, True, False))
        return out

    x_gaps, y_gaps = gaps(p.blocks_x), gaps(p.blocks_y)
    x_max, y_max = p.blocks_x * b + e, p.blocks_y * b + e
    road = [(i * b - w, -e, i * b + w, y_max) for i in range(p.blocks_x + 1)]
    road += [(x0, j * b - w, x1, j * b + w)
             for j in range(p.blocks_y + 1) for (x0, x1, _, _) in x_gaps]
    blocks, block_ids, buildings = [], [], []
    inset = p.sidewalk_width_m + p.building_setback_m
    blocks_xy = [(gx, gy) for gx in x_gaps for gy in y_gaps]
    for block, ((x0, x1, x_lo, x_hi), (y0, y1, y_lo, y_hi)) in enumerate(blocks_xy):
        # Cut-back size at each corner: only corners that touch an intersection box.
        bl, br = c * (x_lo and y_lo), c * (x_hi and y_lo)
        tl, tr = c * (x_lo and y_hi), c * (x_hi and y_hi)
        bands = [(x0 + bl, y0, x1 - br, y0 + c), (x0, y0 + c, x1, y1 - c),
                 (x0 + tl, y1 - c, x1 - tr, y1)] if c > 0.0 else [(x0, y0, x1, y1)]
        blocks += bands
        block_ids += [block] * len(bands)
        for corner_cut, (cx, cy) in ((bl, (x0, y0)), (br, (x1 - c, y0)),
                                     (tl, (x0, y1 - c)), (tr, (x1 - c, y1 - c))):
            if corner_cut > 0.0:
                road.append((cx, cy, cx + c, cy + c))
        if x1 - x0 > 2.0 * inset and y1 - y0 > 2.0 * inset:
            buildings.append((x0 + inset, y0 + inset, x1 - inset, y1 - inset))
    extent = np.array([-e, -e, x_max, y_max])
    return (np.array(road), np.array(blocks), np.array(block_ids, dtype=np.int64),
            np.array(buildings).reshape(-1, 4), extent)


def generate_grid_town(params: GridTownParams | None = None) -> Town:
    """Generate `grid_town` (geometry in the module docstring) as a Town.

    The Lanelet2 map is Autoware-compatible: road/crosswalk subtypes, location urban,
    one_way, participant tags, `speed_limit` in km/h on every vehicle lanelet, turn_direction
    on intersection lanelets, stop lines referenced by traffic_sign (stop_sign) regulatory
    elements. Lanelet ids are deterministic for given params.
    """
    if params is None:
        params = GridTownParams()
    if not isinstance(params, GridTownParams):
        raise MapParamError(f'params = {params!r} must be a GridTownParams')
    return _GridBuilder(params).build()
