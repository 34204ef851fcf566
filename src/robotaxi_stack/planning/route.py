"""Routes and reference paths on the Lanelet2 lane map (pure core: numpy, scipy, lanelet2).

All positions are in the `map` frame [m], yaw counter-clockwise from east [rad], stations `s`
are arc lengths [m] along a path. Right-hand traffic.

- `plan_route`: the shortest drivable lanelet sequence from a pose to a goal under the
  Lanelet2 vehicle traffic rules (lane changes allowed), optionally avoiding lanelets.
- `build_reference_path`: the route as an evenly sampled centreline path (lane changes as
  smooth quintic transitions), with heading, curvature, speed limits, free lateral room,
  stop lines and crosswalks along it; it runs on past the goal so a stopping car still has
  path ahead.
- `route_remaining_m`: distance along a path from a position to its goal.
- `snap_to_kerbside`: where a pickup/dropoff request really stops: on the kerbside lane.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from robotaxi_stack.sim.maps import (
    MapError, RouteNotFoundError, Town, build_routing_graph, nearest_lanelet, successors,
    vehicle_traffic_rules)
from robotaxi_stack.sim.maps.town import (
    as_finite, as_xy, polyline_arclength, project_on_polyline, remove_duplicate_points,
    wrap_angle)

#: Largest distance between reference path samples [m].
DEFAULT_SPACING_M = 0.5
#: How far the reference path runs on past the goal [m].
DEFAULT_EXTEND_M = 30.0
#: Length of one lane change [m]: a quintic over 40 m moves 3.5 m sideways with a peak
#: curvature of 0.013 1/m, i.e. 1.6 m/s^2 lateral at 40 km/h.
DEFAULT_LANE_CHANGE_M = 40.0
#: Shortest lane change the caller may ask for [m] (the route may still force a shorter one
#: where less road is available).
MIN_LANE_CHANGE_M = 20.0
#: Straight run kept before a lane change where the road allows [m], so the car does not
#: start moving sideways while still leaving an intersection or pulling away.
LANE_CHANGE_LEAD_IN_M = 5.0
#: Pickups/dropoffs farther than this from any matching lane are off the map [m].
KERBSIDE_MAX_DIST_M = 5.0
KERBSIDE_MAX_YAW_DIFF_RAD = math.pi / 4.0
#: Gaussian smoothing (1 sigma, metres of arc length) of the heading and the curvature: wide
#: enough to average the chords of the map's turn arcs (0.5-0.8 m), narrow against the
#: 9-15 m long turns, so mid-turn curvature stays ~1/radius.
HEADING_SMOOTHING_M = 1.0
CURVATURE_SMOOTHING_M = 1.0
#: Lanelets whose centreline passes this much farther from the start than the best match
#: still count as start candidates [m]: at an intersection entry the straight, left and right
#: lanelets start at the same point, and the route decides which one the car is on.
START_AMBIGUITY_M = 0.5
# Sampling step along a lane-change blend before the final resampling [m].
_BLEND_STEP_M = 0.25
# Positions closer than this are the same point [m].
_SAME_POINT_M = 1e-6
# Windowed projection: a match in the window wins unless the global one is this much closer.
_PROJECTION_PREFERENCE_M = 1.0


@dataclasses.dataclass(frozen=True)
class Route:
    """A drivable lanelet sequence from a start pose to a goal.

    lanelet_ids: in driving order; consecutive ids are successors or, for a lane change,
    neighbours in the same direction (a lanelet may occur twice when the route goes round a
    block). start_arc_m / goal_arc_m: stations of the start / goal foot points on the first /
    last lanelet's centreline. length_m: driving distance from the start foot point to the
    goal foot point along the lane centrelines (a lane change counts the target lane).
    """

    lanelet_ids: tuple[int, ...]
    length_m: float
    start_arc_m: float
    goal_arc_m: float


@dataclasses.dataclass(frozen=True, eq=False)
class ReferencePath:
    """A route as a path sampled every `spacing` <= 0.5 m (N >= 1 points), map frame.

    s_m (N,): station [m], 0 at the start foot point, evenly spaced. xy_m (N, 2) [m]: on the
    lane centrelines (between them during a lane change). yaw_rad (N,): heading of the smoothed
    polyline (unwrapped: continuous, not wrapped to [-pi, pi)). kappa_1pm (N,): smoothed
    curvature [1/m], + = turning left. speed_limit_mps (N,): map limit of the lanelet under each
    point (curvature limits are the behavior planner's business). lanelet_id (N,) int64.
    left_bound_m, right_bound_m (N,): free lateral room [m] from the point to the left / right
    edge of the drivable area (lanes of the same direction count, the oncoming lane does not),
    >= 0. stop_lines_s: ascending stations of the stop lines the path crosses. crosswalks:
    (s_start_m, s_end_m, polygon (M, 2)) where the path crosses a crosswalk, by s_start_m.
    goal_s_m: station of the goal foot point (the path runs on past it).
    """

    s_m: np.ndarray
    xy_m: np.ndarray
    yaw_rad: np.ndarray
    kappa_1pm: np.ndarray
    speed_limit_mps: np.ndarray
    lanelet_id: np.ndarray
    left_bound_m: np.ndarray
    right_bound_m: np.ndarray
    stop_lines_s: tuple[float, ...]
    crosswalks: tuple[tuple[float, float, np.ndarray], ...]
    goal_s_m: float

    def __post_init__(self) -> None:
        count = len(self.s_m)
        for name in ('s_m', 'xy_m', 'yaw_rad', 'kappa_1pm', 'speed_limit_mps', 'lanelet_id',
                     'left_bound_m', 'right_bound_m'):
            value = np.array(getattr(self, name), dtype=np.int64 if name == 'lanelet_id'
                             else np.float64)
            shape = (count, 2) if name == 'xy_m' else (count,)
            if value.shape != shape:
                raise MapError(f'ReferencePath.{name} must have shape {shape}, got '
                               f'{value.shape}')
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        if count == 0:
            raise MapError('a ReferencePath needs at least one point')

    @property
    def length_m(self) -> float:
        """Station of the last point [m] (goal_s_m plus the extension that fitted)."""
        return float(self.s_m[-1])

    def sample(self, s: Any) -> dict[str, np.ndarray]:
        """The path at stations `s` [m] (scalar or array, clipped to [0, length_m]).

        Returns arrays shaped like `s`: 's_m', 'yaw_rad', 'kappa_1pm', 'left_bound_m',
        'right_bound_m' interpolated linearly; 'xy_m' (..., 2); 'speed_limit_mps' and
        'lanelet_id' of the sample at or before each station (they change in steps).
        """
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length_m)
        if not np.all(np.isfinite(s)):
            raise MapError('sample stations must be finite')
        out: dict[str, np.ndarray] = {'s_m': s}
        for name in ('yaw_rad', 'kappa_1pm', 'left_bound_m', 'right_bound_m'):
            out[name] = np.interp(s, self.s_m, getattr(self, name))
        out['xy_m'] = np.stack((np.interp(s, self.s_m, self.xy_m[:, 0]),
                                np.interp(s, self.s_m, self.xy_m[:, 1])), axis=-1)
        index = np.clip(np.searchsorted(self.s_m, s, side='right') - 1, 0, len(self.s_m) - 1)
        out['speed_limit_mps'] = self.speed_limit_mps[index]
        out['lanelet_id'] = self.lanelet_id[index]
        return out

    def project(self, xy: Any, s_hint_m: float | None = None,
                window_m: float = 50.0) -> tuple[float, float]:
        """(station [m], signed lateral offset [m], + = left) of a position's foot point.

        A path that comes back near itself (round a block, the extension past the goal) has
        several close candidates; with `s_hint_m` (the previous station) the foot point within
        [s_hint_m - window_m / 5, s_hint_m + window_m] wins unless the best one elsewhere is
        more than 1 m closer (a jump, e.g. a relocalised car).
        """
        xy = as_xy(xy, 'xy')
        if len(self.s_m) == 1:
            offset = xy - self.xy_m[0]
            return 0.0, float(np.hypot(*offset))
        s_all, lat_all, dist_all = _project_segments(self.xy_m, self.s_m, xy)
        best = int(np.argmin(dist_all))
        if s_hint_m is not None and math.isfinite(s_hint_m):
            seg_s0 = self.s_m[:-1]
            seg_s1 = self.s_m[1:]
            in_window = (seg_s1 >= s_hint_m - 0.2 * window_m) & (seg_s0 <= s_hint_m + window_m)
            if np.any(in_window):
                local = int(np.argmin(np.where(in_window, dist_all, np.inf)))
                if dist_all[local] <= dist_all[best] + _PROJECTION_PREFERENCE_M:
                    best = local
        return float(s_all[best]), float(lat_all[best])


class _Piece(NamedTuple):
    """Raw path points of one stretch: xy (n, 2) [m], the lanelet under each point (n,) and
    the fraction f = station / lanelet length of each point along its stretch (n,), equal
    for all lanes of a lane-change stretch."""

    xy: np.ndarray
    lanelet_ids: np.ndarray
    fraction: np.ndarray


# Per-town look-up tables (outer bounds, centreline boxes), dropped with the town.
_TOWN_CACHE: 'weakref.WeakKeyDictionary[Town, dict]' = weakref.WeakKeyDictionary()


def _town_cache(town: Town) -> dict:
    cache = _TOWN_CACHE.get(town)
    if cache is None:
        cache = {'outer_bounds': {}, 'graphs': {}}
        _TOWN_CACHE[town] = cache
    return cache


def _point_at(polyline: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Points at stations `s` [m] along an (N, 2) polyline (clamped to its ends)."""
    arc = polyline_arclength(polyline)
    return np.stack((np.interp(s, arc, polyline[:, 0]), np.interp(s, arc, polyline[:, 1])),
                    axis=-1)


def _heading_at(polyline: np.ndarray, s: float) -> float:
    """Heading [rad] of the polyline segment at station s."""
    arc = polyline_arclength(polyline)
    k = int(np.clip(np.searchsorted(arc, s, side='right') - 1, 0, len(polyline) - 2))
    d = polyline[k + 1] - polyline[k]
    return math.atan2(d[1], d[0])


def _project_segments(polyline: np.ndarray, s: np.ndarray,
                      xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Foot point of `xy` on every segment of `polyline` (N, 2) with stations s (N,):
    (station, signed lateral, distance), each (N - 1,)."""
    start = polyline[:-1]
    direction = np.diff(polyline, axis=0)
    len2 = np.maximum(np.einsum('ij,ij->i', direction, direction), 1e-18)
    rel = xy[None, :] - start
    t = np.clip(np.einsum('ij,ij->i', rel, direction) / len2, 0.0, 1.0)
    offset = rel - t[:, None] * direction
    dist = np.hypot(offset[:, 0], offset[:, 1])
    lateral = (direction[:, 0] * rel[:, 1] - direction[:, 1] * rel[:, 0]) / np.sqrt(len2)
    return s[:-1] + t * (s[1:] - s[:-1]), lateral, dist


def _lateral_offsets(points: np.ndarray, polyline: np.ndarray) -> np.ndarray:
    """Signed distance [m] (+ = left of its direction) of points (N, 2) from the line of the
    nearest segment of `polyline` (M, 2); past the ends the end segments extend."""
    start = polyline[:-1]
    direction = np.diff(polyline, axis=0)
    len2 = np.maximum(np.einsum('ij,ij->i', direction, direction), 1e-18)
    rel = points[:, None, :] - start[None, :, :]
    t = np.clip(np.einsum('nmk,mk->nm', rel, direction) / len2, 0.0, 1.0)
    offset = rel - t[..., None] * direction[None]
    nearest = np.argmin(np.einsum('nmk,nmk->nm', offset, offset), axis=1)
    rows = np.arange(len(points))
    d = direction[nearest]
    r = rel[rows, nearest]
    return (d[:, 0] * r[:, 1] - d[:, 1] * r[:, 0]) / np.sqrt(len2[nearest])


def _neighbour(graph: Any, lanelet: Any, side: str) -> Any:
    """The same-direction lanelet beside `lanelet` on `side` (lane change allowed or not)."""
    if side == 'left':
        beside = graph.left(lanelet)
        return graph.adjacentLeft(lanelet) if beside is None else beside
    beside = graph.right(lanelet)
    return graph.adjacentRight(lanelet) if beside is None else beside


def _outermost(town: Town, lanelet_id: int, side: str) -> int:
    """The last same-direction lanelet reached by stepping to `side` from lanelet_id."""
    graph = build_routing_graph(town)
    layer = town.lanelet_map.laneletLayer
    current = layer[lanelet_id]
    seen = {lanelet_id}
    while True:
        beside = _neighbour(graph, current, side)
        if beside is None or beside.id in seen:
            return int(current.id)
        seen.add(beside.id)
        current = beside


def _outer_bounds(town: Town, lanelet_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Left bound of the leftmost and right bound of the rightmost same-direction lanelet."""
    cache = _town_cache(town)['outer_bounds']
    if lanelet_id not in cache:
        left = town.lanelets[_outermost(town, lanelet_id, 'left')].left
        right = town.lanelets[_outermost(town, lanelet_id, 'right')].right
        cache[lanelet_id] = (remove_duplicate_points(left), remove_duplicate_points(right))
    return cache[lanelet_id]


def _is_lane_change(town: Town, a: int, b: int) -> bool:
    """True when b is a same-direction neighbour of a (a lane change), False when b follows
    a; MapError when neither (not a drivable sequence)."""
    if b in successors(town, a):
        return False
    graph = build_routing_graph(town)
    layer = town.lanelet_map.laneletLayer
    beside = {int(ll.id) for side in ('left', 'right')
              for ll in [_neighbour(graph, layer[a], side)] if ll is not None}
    beside |= {int(ll.id) for ll in list(graph.lefts(layer[a])) + list(graph.rights(layer[a]))}
    if b in beside:
        return True
    raise MapError(f'route lanelets {a} -> {b} are neither successive nor neighbours')


def _groups(town: Town, ids: Sequence[int]) -> list[list[int]]:
    """Split a route into stretches of parallel lanelets joined by lane changes."""
    groups = [[ids[0]]]
    for a, b in zip(ids, ids[1:]):
        if _is_lane_change(town, a, b):
            groups[-1].append(b)
        else:
            groups.append([b])
    return groups


def _group_span(town: Town, groups: list[list[int]], start_arc_m: float,
                goal_arc_m: float) -> list[tuple[float, float]]:
    """(entry, exit) lanelet fractions of each group: the start/goal foot points cut the
    first/last one."""
    spans = []
    for k, group in enumerate(groups):
        f_in = start_arc_m / town.lanelets[group[0]].length_m if k == 0 else 0.0
        f_out = goal_arc_m / town.lanelets[group[-1]].length_m if k == len(groups) - 1 else 1.0
        spans.append((f_in, f_out))
    return spans


def _route_length(town: Town, ids: Sequence[int], start_arc_m: float,
                  goal_arc_m: float) -> float:
    """Centreline distance of a route (lane changes along the target lane); negative when
    the goal lies behind the start within one stretch (the route is then unusable)."""
    groups = _groups(town, ids)
    return float(sum((f_out - f_in) * town.lanelets[group[-1]].length_m
                     for group, (f_in, f_out)
                     in zip(groups, _group_span(town, groups, start_arc_m, goal_arc_m))))


def _routing_graph(town: Town, avoid: frozenset[int]) -> Any:
    """The town's routing graph, or one over the map without the `avoid` lanelets (cached)."""
    if not avoid:
        return build_routing_graph(town)
    graphs = _town_cache(town)['graphs']
    if avoid not in graphs:
        import lanelet2  # only here: the map core wraps every other lanelet2 call
        layer = town.lanelet_map.laneletLayer
        kept = [layer[i] for i, g in town.lanelets.items()
                if g.kind in ('road', 'turn') and i not in avoid]
        submap = lanelet2.core.createSubmapFromLanelets(kept)
        rules = vehicle_traffic_rules()
        if len(graphs) >= 8:  # reroutes are rare; keep the last few blockages
            graphs.pop(next(iter(graphs)))
        # The graph refers to the rules and the submap; keep them alive together.
        graphs[avoid] = (lanelet2.routing.RoutingGraph(submap, rules), rules, submap)
    return graphs[avoid][0]


def _vehicle_boxes(town: Town) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (L,), lower corners (L, 2), upper corners (L, 2)) of the vehicle centrelines."""
    cache = _town_cache(town)
    if 'boxes' not in cache:
        geoms = [g for g in town.lanelets.values() if g.kind in ('road', 'turn')]
        cache['boxes'] = (np.array([g.lanelet_id for g in geoms], dtype=np.int64),
                          np.array([g.centerline.min(axis=0) for g in geoms]),
                          np.array([g.centerline.max(axis=0) for g in geoms]))
    return cache['boxes']


def _start_candidates(town: Town, xy: np.ndarray, yaw: float,
                      max_dist_m: float) -> list[tuple[int, float]]:
    """(lanelet id, start arc) of every lanelet the start pose may be on (see
    START_AMBIGUITY_M); the nearest_lanelet match first."""
    best = nearest_lanelet(town, xy, yaw, max_dist_m)
    out = [(best.lanelet_id, best.arc_length_m)]
    reach_m = best.distance_m + START_AMBIGUITY_M
    ids, lo, hi = _vehicle_boxes(town)
    near = np.all((xy >= lo - reach_m) & (xy <= hi + reach_m), axis=1)
    for lanelet_id in ids[near]:
        if lanelet_id == best.lanelet_id:
            continue
        line = town.lanelets[int(lanelet_id)].centerline
        arc, lateral = project_on_polyline(line, xy)
        distance = float(np.hypot(*(xy - _point_at(line, arc))))
        if (distance <= reach_m and abs(float(wrap_angle(yaw - _heading_at(line, arc))))
                <= KERBSIDE_MAX_YAW_DIFF_RAD):
            out.append((int(lanelet_id), arc))
    return out


def _shortest(graph: Any, town: Town, start: tuple[int, float], goal: tuple[int, float],
              avoid: frozenset[int]) -> tuple[list[int], float] | None:
    """Shortest usable route from start (id, arc) to goal (id, arc) on `graph`, or None."""
    layer = town.lanelet_map.laneletLayer
    (start_id, start_arc), (goal_id, goal_arc) = start, goal
    direct: list[int] | None = None
    if start_id == goal_id:
        direct = [start_id] if goal_arc >= start_arc else None
    else:
        path = graph.shortestPath(layer[start_id], layer[goal_id])
        direct = None if path is None else [int(ll.id) for ll in path]
    if direct is not None:
        length = _route_length(town, direct, start_arc, goal_arc)
        if length >= 0.0:
            return direct, length
    # The goal lies behind the start within its stretch (or no route was found): leave the
    # start lanelet first, e.g. round the block.
    best: tuple[list[int], float] | None = None
    for nxt in successors(town, start_id):
        if nxt in avoid:
            continue
        path = graph.shortestPath(layer[nxt], layer[goal_id])
        if path is None:
            continue
        ids = [start_id] + [int(ll.id) for ll in path]
        length = _route_length(town, ids, start_arc, goal_arc)
        if length >= 0.0 and (best is None or length < best[1]):
            best = (ids, length)
    return best


def plan_route(town: Town, start_xy: Any, start_yaw: float, goal_xy: Any,
               goal_yaw: float | None = None, *, avoid_lanelets: Iterable[int] = frozenset(),
               goal_lanelet_id: int | None = None, max_dist_m: float = 5.0) -> Route:
    """The shortest drivable route from a pose to a goal (Lanelet2 routing, vehicle rules).

    The start lanelet matches `start_yaw` (nearest_lanelet; where lanelets fork at the start,
    e.g. at a stop line, every branch is tried); the goal lanelet is `goal_lanelet_id` when
    given, else the nearest to `goal_xy` matching `goal_yaw` when given. `avoid_lanelets`:
    lanelet ids the route must not use (a blockage); the lanelet the start is matched to is
    exempt (the car is on it). A goal behind the start on its lane routes round the block.
    Raises OffMapError for a start/goal off the map, RouteNotFoundError when no route exists,
    MapError for invalid arguments.
    """
    start_xy = as_xy(start_xy, 'start_xy')
    goal_xy = as_xy(goal_xy, 'goal_xy')
    start_yaw = as_finite(start_yaw, 'start_yaw')
    avoid = frozenset(int(i) for i in avoid_lanelets)
    starts = _start_candidates(town, start_xy, start_yaw, max_dist_m)
    starts = starts[:1] + [c for c in starts[1:] if c[0] not in avoid]
    if goal_lanelet_id is not None:
        goal_geom = town.lanelet(goal_lanelet_id)
        if goal_geom.kind not in ('road', 'turn'):
            raise MapError(f'goal_lanelet_id = {goal_lanelet_id} is a {goal_geom.kind} '
                           f'lanelet, not a vehicle lanelet')
        goal = (int(goal_lanelet_id), project_on_polyline(goal_geom.centerline, goal_xy)[0])
    else:
        match = nearest_lanelet(town, goal_xy, goal_yaw, max_dist_m)
        goal = (match.lanelet_id, match.arc_length_m)
    if goal[0] in avoid and goal[0] != starts[0][0]:
        raise RouteNotFoundError(f'the goal lanelet {goal[0]} at goal_xy = '
                                 f'{goal_xy.tolist()} is one of the avoided lanelets')
    graph = _routing_graph(town, avoid - {starts[0][0]})
    best: tuple[list[int], float, float] | None = None
    for start in starts:
        found = _shortest(graph, town, start, goal, avoid)
        if found is not None and (best is None or found[1] < best[1] - 1e-9):
            best = (found[0], found[1], start[1])
    if best is None:
        avoided = f' avoiding lanelets {sorted(avoid)}' if avoid else ''
        raise RouteNotFoundError(
            f'no drivable route from start_xy = {start_xy.tolist()} (lanelet {starts[0][0]}) '
            f'to goal_xy = {goal_xy.tolist()} (lanelet {goal[0]}){avoided}')
    ids, length, start_arc = best
    return Route(tuple(ids), length, start_arc, goal[1])


def _smoothstep5(u: np.ndarray) -> np.ndarray:
    """Quintic 0 -> 1 with zero slope and curvature at both ends."""
    u = np.clip(u, 0.0, 1.0)
    return u ** 3 * (10.0 + u * (-15.0 + 6.0 * u))


def _single_piece(town: Town, lanelet_id: int, f_in: float, f_out: float) -> _Piece:
    """The centreline of one lanelet between two fractions, with its own vertices."""
    geom = town.lanelets[lanelet_id]
    arc = polyline_arclength(geom.centerline)
    s0, s1 = f_in * geom.length_m, f_out * geom.length_m
    inner = (arc > s0 + _SAME_POINT_M) & (arc < s1 - _SAME_POINT_M)
    s = np.concatenate(([s0], arc[inner], [s1]))
    xy = np.concatenate((_point_at(geom.centerline, s0)[None], geom.centerline[inner],
                         _point_at(geom.centerline, s1)[None]))
    fraction = s / geom.length_m
    return _Piece(xy, np.full(len(s), lanelet_id, dtype=np.int64), fraction)


def _lane_change_piece(town: Town, group: list[int], f_in: float, f_out: float,
                       lane_change_m: float) -> _Piece:
    """Parallel lanelets joined by quintic lateral transitions, one after the other.

    A point at lanelet fraction f blends the lanes' points at that same fraction, so curved
    parallel lanes work too. Each transition runs over lane_change_m, or an equal share of
    what the stretch offers when it is shorter, after a short straight lead-in.
    """
    lines = [town.lanelets[i].centerline for i in group]
    last_len_m = town.lanelets[group[-1]].length_m
    span_m = max(0.0, (f_out - f_in) * last_len_m)
    changes = len(group) - 1
    lead_in_m = min(LANE_CHANGE_LEAD_IN_M, max(0.0, span_m - changes * lane_change_m))
    each_m = min(lane_change_m, (span_m - lead_in_m) / changes)
    count = max(2, int(math.ceil(span_m / _BLEND_STEP_M)) + 1)
    fraction = np.linspace(f_in, f_out, count)
    distance = (fraction - f_in) * last_len_m
    lanes = [_point_at(line, fraction * town.lanelets[i].length_m)
             for i, line in zip(group, lines)]
    xy = lanes[0].copy()
    lane_index = np.zeros(count, dtype=np.int64)
    for k in range(changes):
        start_m = lead_in_m + k * each_m
        weight = (_smoothstep5((distance - start_m) / each_m) if each_m > _SAME_POINT_M
                  else (distance >= start_m).astype(np.float64))
        xy += weight[:, None] * (lanes[k + 1] - lanes[k])
        lane_index += weight >= 0.5
    return _Piece(xy, np.asarray(group, dtype=np.int64)[lane_index], fraction)


def _straightest(town: Town, options: Sequence[int]) -> int:
    """The successor that goes on most straight: smallest heading change, then lowest id."""
    def turn(lanelet_id: int) -> tuple[float, int]:
        line = town.lanelets[lanelet_id].centerline
        d0, d1 = line[1] - line[0], line[-1] - line[-2]
        change = float(wrap_angle(math.atan2(d1[1], d1[0]) - math.atan2(d0[1], d0[0])))
        return abs(change), lanelet_id
    return min(options, key=turn)


def _extension_pieces(town: Town, lanelet_id: int, goal_arc_m: float,
                      extend_m: float) -> list[_Piece]:
    """Lane centrelines on from the goal for at least extend_m (less where lanes end)."""
    geom = town.lanelets[lanelet_id]
    pieces = [_single_piece(town, lanelet_id, goal_arc_m / geom.length_m, 1.0)]
    covered_m = geom.length_m - goal_arc_m
    current = lanelet_id
    while covered_m < extend_m:
        options = successors(town, current)
        if not options:
            break
        current = _straightest(town, options)
        pieces.append(_single_piece(town, current, 0.0, 1.0))
        covered_m += town.lanelets[current].length_m
    return pieces


def _concatenate(pieces: list[_Piece]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Join pieces, dropping repeated points (a piece starts where the previous one ends).

    Returns xy (n, 2), lanelet id per point (n,), and per piece the index of each of its
    points in the joined arrays (a dropped point maps to the kept point it repeats).
    """
    xy_parts, id_parts, index_parts = [], [], []
    count = 0
    last: np.ndarray | None = None
    for piece in pieces:
        keep = np.ones(len(piece.xy), dtype=bool)
        keep[1:] = np.linalg.norm(np.diff(piece.xy, axis=0), axis=1) > _SAME_POINT_M
        if last is not None and np.linalg.norm(piece.xy[0] - last) <= _SAME_POINT_M:
            keep[0] = False
        index_parts.append(count - 1 + np.cumsum(keep))
        xy_parts.append(piece.xy[keep])
        id_parts.append(piece.lanelet_ids[keep])
        count += int(keep.sum())
        if keep.any():
            last = piece.xy[keep][-1]
    return np.concatenate(xy_parts), np.concatenate(id_parts), index_parts


def _smooth(values: np.ndarray, sigma_m: float, spacing_m: float) -> np.ndarray:
    if len(values) < 3 or spacing_m <= 0.0:
        return values
    return gaussian_filter1d(values, sigma_m / spacing_m, axis=0, mode='nearest')


def _stop_line_stations(town: Town, pieces: list[_Piece], indices: list[np.ndarray],
                        s_raw: np.ndarray, end_s: float) -> tuple[float, ...]:
    """Path stations of the stop lines of the lanelets the path actually runs on.

    A lanelet's stop line at station_m lies at lanelet fraction station_m / length; the
    path station follows from the fractions of the raw points on that lanelet.
    """
    found: dict[int, list[float]] = {}
    for piece, index in zip(pieces, indices):
        s_piece = s_raw[index]
        for lanelet_id in np.unique(piece.lanelet_ids):
            lines = town.stop_lines_on(int(lanelet_id))
            if not lines:
                continue
            on = np.flatnonzero(piece.lanelet_ids == lanelet_id)
            # The stretch on this lanelet runs to the next point of the piece (where the
            # next lane or the next piece takes over).
            hi = min(on[-1] + 1, len(piece.fraction) - 1)
            f_lo, f_hi = piece.fraction[on[0]], piece.fraction[hi]
            length_m = town.lanelets[int(lanelet_id)].length_m
            for line in lines:
                f = line.station_m / length_m
                if not f_lo - 1e-9 <= f <= f_hi + 1e-9:
                    continue
                s = float(np.interp(f, piece.fraction, s_piece))
                if -1e-6 <= s <= end_s + 1e-6:
                    stations = found.setdefault(line.line_id, [])
                    if all(abs(s - other) > 1e-3 for other in stations):
                        stations.append(min(max(s, 0.0), end_s))
    return tuple(sorted(s for stations in found.values() for s in stations))


def _inside_polygon(point: np.ndarray, polygon: np.ndarray) -> bool:
    """Even-odd test of one point against a closed polygon (M, 2)."""
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    spans = (y0 > point[1]) != (y1 > point[1])
    with np.errstate(divide='ignore', invalid='ignore'):
        x_cross = x0 + (point[1] - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(spans & (point[0] < x_cross)) % 2)


def _crossing_stations(xy: np.ndarray, s: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Ascending stations where the polyline xy (N, 2) crosses the polygon's edges."""
    p, r = xy[:-1], np.diff(xy, axis=0)
    q = polygon
    e = np.roll(polygon, -1, axis=0) - polygon
    denom = r[:, None, 0] * e[None, :, 1] - r[:, None, 1] * e[None, :, 0]
    rel = q[None, :, :] - p[:, None, :]
    with np.errstate(divide='ignore', invalid='ignore'):
        t = (rel[..., 0] * e[None, :, 1] - rel[..., 1] * e[None, :, 0]) / denom
        u = (rel[..., 0] * r[:, None, 1] - rel[..., 1] * r[:, None, 0]) / denom
    hit = (np.abs(denom) > 1e-12) & (t >= 0.0) & (t < 1.0) & (u >= 0.0) & (u <= 1.0)
    seg, _ = np.nonzero(hit)
    stations = np.sort(s[seg] + t[hit] * (s[seg + 1] - s[seg]))
    if len(stations) > 1:  # a crossing through a polygon corner hits two edges
        stations = stations[np.concatenate(([True], np.diff(stations) > 1e-6))]
    return stations


def _crosswalk_spans(town: Town, xy: np.ndarray,
                     s: np.ndarray) -> tuple[tuple[float, float, np.ndarray], ...]:
    if len(xy) < 2:
        return ()
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    spans = []
    for crosswalk in town.crosswalks:
        polygon = crosswalk.polygon
        if np.any(polygon.max(axis=0) < lo) or np.any(polygon.min(axis=0) > hi):
            continue
        stations = list(_crossing_stations(xy, s, polygon))
        inside = _inside_polygon(xy[0], polygon)
        bounds = ([0.0] if inside else []) + stations
        if len(bounds) % 2:
            bounds.append(float(s[-1]))
        for enter, leave in zip(bounds[::2], bounds[1::2]):
            if leave - enter > 1e-3:
                spans.append((float(enter), float(leave), polygon))
    return tuple(sorted(spans, key=lambda span: span[0]))


def build_reference_path(town: Town, route: Route, start_xy: Any, start_yaw: float,
                         goal_xy: Any, extend_m: float = DEFAULT_EXTEND_M, *,
                         spacing_m: float = DEFAULT_SPACING_M,
                         lane_change_m: float = DEFAULT_LANE_CHANGE_M) -> ReferencePath:
    """The route as a ReferencePath from the start foot point to extend_m past the goal.

    The start and goal foot points are the projections of start_xy / goal_xy on the first /
    last route lanelet (start_yaw is checked for finiteness only: the route already chose the
    lane). Centrelines are joined in route order; a lane change in the route becomes a
    quintic lateral transition over lane_change_m (>= 20 m; shorter only where the stretch
    is); past the goal the path follows the straightest successors for extend_m or until the
    lanes end. The path is then resampled every <= spacing_m.
    Raises MapError for an empty/inconsistent route or invalid arguments.
    """
    start_xy = as_xy(start_xy, 'start_xy')
    goal_xy = as_xy(goal_xy, 'goal_xy')
    as_finite(start_yaw, 'start_yaw')
    extend_m = as_finite(extend_m, 'extend_m', 0.0)
    spacing_m = as_finite(spacing_m, 'spacing_m', 0.01, DEFAULT_SPACING_M)
    lane_change_m = as_finite(lane_change_m, 'lane_change_m', MIN_LANE_CHANGE_M)
    ids = [int(i) for i in route.lanelet_ids]
    if not ids:
        raise MapError('route has no lanelets')
    for lanelet_id in ids:
        if town.lanelet(lanelet_id).kind not in ('road', 'turn'):
            raise MapError(f'route lanelet {lanelet_id} is not a vehicle lanelet')
    start_arc = project_on_polyline(town.lanelets[ids[0]].centerline, start_xy)[0]
    goal_arc = project_on_polyline(town.lanelets[ids[-1]].centerline, goal_xy)[0]
    groups = _groups(town, ids)
    spans = _group_span(town, groups, start_arc, goal_arc)
    pieces = []
    for group, (f_in, f_out) in zip(groups, spans):
        if f_out < f_in - 1e-9:
            raise MapError(f'the goal lies behind the start on lanelet(s) {group}: the route '
                           f'must leave and come back')
        pieces.append(_single_piece(town, group[0], f_in, f_out) if len(group) == 1
                      else _lane_change_piece(town, group, f_in, f_out, lane_change_m))
    route_pieces = len(pieces)
    pieces += _extension_pieces(town, ids[-1], goal_arc, extend_m)
    raw_xy, raw_ids, indices = _concatenate(pieces)
    s_raw = polyline_arclength(raw_xy)
    goal_s = float(s_raw[indices[route_pieces - 1][-1]])
    end_s = min(float(s_raw[-1]), goal_s + extend_m)

    if end_s <= _SAME_POINT_M:
        s = np.zeros(1)
        xy = raw_xy[:1].copy()
        lanelet_id = raw_ids[:1].copy()
        geom = town.lanelets[int(lanelet_id[0])]
        yaw = np.array([_heading_at(geom.centerline, start_arc)])
        kappa = np.zeros(1)
        step_m = 0.0
    else:
        count = int(math.ceil(end_s / spacing_m - 1e-9)) + 1
        s = np.linspace(0.0, end_s, count)
        step_m = float(s[1] - s[0])
        xy = np.stack((np.interp(s, s_raw, raw_xy[:, 0]), np.interp(s, s_raw, raw_xy[:, 1])),
                      axis=-1)
        # A sample belongs to the lanelet of the raw segment it lies on (segment k runs from
        # raw point k to k + 1 and belongs to its end point's lanelet).
        segment = np.clip(np.searchsorted(s_raw, s, side='right') - 1, 0, len(s_raw) - 2)
        lanelet_id = raw_ids[segment + 1]
        lanelet_id[0] = raw_ids[0]
        # Heading from the smoothed direction vectors of the raw polyline at the samples.
        seg_dir = np.diff(raw_xy, axis=0)
        seg_dir /= np.linalg.norm(seg_dir, axis=1)[:, None]
        direction = _smooth(seg_dir[segment], HEADING_SMOOTHING_M, step_m)
        yaw = np.unwrap(np.arctan2(direction[:, 1], direction[:, 0]))
        kappa = _smooth(np.gradient(yaw, s) if len(s) > 1 else np.zeros(1),
                        CURVATURE_SMOOTHING_M, step_m)

    speed_kph = np.array([town.lanelets[int(i)].speed_limit_kph for i in lanelet_id])
    left = np.empty(len(s))
    right = np.empty(len(s))
    for lanelet in np.unique(lanelet_id):
        mask = lanelet_id == lanelet
        left_line, right_line = _outer_bounds(town, int(lanelet))
        left[mask] = -_lateral_offsets(xy[mask], left_line)
        right[mask] = _lateral_offsets(xy[mask], right_line)
    return ReferencePath(
        s_m=s, xy_m=xy, yaw_rad=yaw, kappa_1pm=kappa,
        speed_limit_mps=np.nan_to_num(speed_kph / 3.6, nan=0.0), lanelet_id=lanelet_id,
        left_bound_m=np.maximum(left, 0.0), right_bound_m=np.maximum(right, 0.0),
        stop_lines_s=_stop_line_stations(town, pieces, indices, s_raw, end_s),
        crosswalks=_crosswalk_spans(town, xy, s), goal_s_m=min(goal_s, end_s))


def route_remaining_m(path: ReferencePath, xy: Any, s_hint_m: float | None = None) -> float:
    """Distance [m] along `path` from the foot point of `xy` to the goal (0 once past it).

    s_hint_m: the previous station, to stay on the right stretch of a path that comes back
    near itself (see ReferencePath.project).
    """
    s, _ = path.project(xy, s_hint_m)
    return max(0.0, path.goal_s_m - s)


def snap_to_kerbside(town: Town, xy: Any, yaw: float) -> tuple[int, np.ndarray, float]:
    """Where a car stops for a pickup/dropoff requested at pose (xy, yaw).

    Among road lanelets (not intersections) within 5 m whose heading is within 45 deg of
    `yaw`, the nearest is taken and then the kerbside one of its direction (rightmost,
    right-hand traffic); the stop is the projection of `xy` onto that lanelet's centreline.
    Returns (lanelet id, snapped xy (2,) [m], lane heading there [rad]).
    Raises OffMapError when no such lanelet is within 5 m, MapError for non-finite input.
    """
    xy = as_xy(xy, 'xy')
    yaw = as_finite(yaw, 'yaw')
    match = nearest_lanelet(town, xy, yaw, KERBSIDE_MAX_DIST_M,
                            max_yaw_diff_rad=KERBSIDE_MAX_YAW_DIFF_RAD, kinds=('road',))
    kerb_id = _outermost(town, match.lanelet_id, 'right')
    line = town.lanelets[kerb_id].centerline
    arc, _ = project_on_polyline(line, xy)
    return kerb_id, _point_at(line, arc), float(wrap_angle(_heading_at(line, arc)))
