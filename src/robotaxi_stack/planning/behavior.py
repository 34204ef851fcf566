"""Behavior layer: what the MPC should do this cycle (pure numpy, no ROS).

Given the reference path of the current mission leg, the ego's place on it and the objects
around (with predicted positions), `plan_behavior` decides

* where the car must stand still, if anywhere (`s_stop_m`, base_link station): the mission
  goal (precise kerbside stop), a stop line not yet served, a crosswalk with a pedestrian on or
  entering it, the stopping point behind a lead vehicle or a blocking obstacle;
* the speed limit along the path (map limit, curve limit, comfortable deceleration into the
  stop) and from it the time-indexed speed reference over the MPC horizon;
* the lateral corridor (road bounds, widened into the free oncoming lane while passing a
  stopped vehicle) and which objects the MPC must keep clear of (path-frame ellipses).

Decisions are rule based, as in Autoware's behavior_velocity modules: a stop line is served
by standing still behind it for `stop_line_wait_s` and then waiting for a gap (no vehicle
inside or predicted to enter the intersection within `gap_time_s`); a lead vehicle is followed
by stopping behind where it could stop (`lead_brake_mps2`); a stopped vehicle is passed when
the space beside it is free, else the car stops behind it.

Frames: map (metres). Stations s are along the reference path, lateral offsets d positive to
the left. The ego's reference point is base_link (rear-axle centre); `front_m` is the distance
from base_link to the front bumper, `rear_m` to the rear bumper.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from robotaxi_stack.common.params import param
from robotaxi_stack.planning.route import ReferencePath

# ObjectClass labels (robotaxi_msgs/ObjectClass), as plain ints so the core imports no msgs.
UNKNOWN, CAR, TRUCK, BUS, BICYCLE, MOTORCYCLE, PEDESTRIAN = range(7)
VULNERABLE = (PEDESTRIAN, BICYCLE)
# Path-frame ellipse around an object for base_link: semi-axes ELLIPSE_STRETCH x the summed
# half lengths (close to the rectangle at its corners) and ELLIPSE_WIDEN x the lateral corridor.
ELLIPSE_STRETCH = 1.4
ELLIPSE_WIDEN = 1.1


class BehaviorInputError(ValueError):
    """Non-finite or inconsistent behavior input (names the field)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BehaviorParams:
    comfort_accel_mps2: float = param(1.2, min=0.1, max=4.0,
                                      description='acceleration of the speed reference')
    comfort_decel_mps2: float = param(1.5, min=0.1, max=4.0,
                                      description='deceleration into a stop in the speed limit')
    curve_lat_accel_mps2: float = param(1.6, min=0.3, max=4.0,
                                        description='curve speed limit sqrt(a / |kappa|)')
    min_speed_limit_mps: float = param(2.0, min=0.5, max=10.0,
                                       description='floor of the curve speed limit')
    stop_line_margin_m: float = param(0.8, min=0.0, max=5.0,
                                      description='front bumper to stop line when stopped')
    stop_line_wait_s: float = param(1.0, min=0.0, max=10.0,
                                    description='standstill at a stop sign before going')
    stopped_speed_mps: float = param(0.15, min=0.01, max=1.0,
                                     description='below this the car counts as stopped')
    stop_reached_m: float = param(1.5, min=0.1, max=5.0,
                                  description='distance to a stop point that counts as at it')
    gap_time_s: float = param(5.0, min=1.0, max=20.0,
                              description='a crossing vehicle predicted sooner blocks going')
    intersection_clearance_m: float = param(1.5, min=0.0, max=5.0,
                                            description='extra margin of the conflict test')
    crosswalk_margin_m: float = param(1.5, min=0.0, max=10.0,
                                      description='front bumper to crosswalk edge when yielding')
    crosswalk_watch_m: float = param(2.0, min=0.0, max=10.0,
                                     description='pedestrians this close to a crosswalk count')
    crosswalk_horizon_s: float = param(3.0, min=0.0, max=10.0,
                                       description='predicted entry within this time counts')
    lead_brake_mps2: float = param(4.0, min=1.0, max=10.0,
                                   description='assumed braking of a lead vehicle')
    min_gap_m: float = param(4.0, min=1.0, max=20.0,
                             description='standstill bumper gap to a lead or obstacle')
    lateral_margin_m: float = param(0.4, min=0.0, max=2.0,
                                    description='clearance kept beside objects')
    in_path_horizon_s: float = param(3.0, min=0.0, max=8.0,
                                     description='objects predicted in the path this soon count')
    static_speed_mps: float = param(0.5, min=0.0, max=3.0,
                                    description='slower objects are stopped obstacles')
    static_release_mps: float = param(1.5, min=0.0, max=5.0,
                                      description='an object stopped pass_min_stopped_s counts '
                                                  'as stopped until it is faster than this')
    pass_oncoming_time_s: float = param(9.0, min=1.0, max=30.0,
                                        description='oncoming traffic this close blocks a pass')
    pass_max_offset_m: float = param(3.0, min=0.0, max=5.0,
                                     description='largest lateral offset used to pass')
    pass_lead_time_s: float = param(3.0, min=0.5, max=10.0,
                                    description='start moving out this long before a pass')
    pass_lead_min_m: float = param(10.0, min=0.0, max=50.0,
                                   description='and at least this far before it')
    pass_trail_m: float = param(4.0, min=0.0, max=30.0,
                                description='stay out this far past the passed object')
    pass_speed_mps: float = param(5.0, min=1.0, max=20.0,
                                  description='speed limit while passing')
    pass_min_stopped_s: float = param(3.0, min=0.0, max=60.0,
                                      description='only vehicles stopped this long are passed')
    queue_distance_m: float = param(25.0, min=0.0, max=100.0,
                                    description='vehicles stopped this close before a stop '
                                                'line are queued traffic, never passed')
    corridor_close_mps: float = param(0.6, min=0.05, max=5.0,
                                      description='a corridor narrower than where the car is '
                                                  'closes at this lateral speed')
    road_margin_m: float = param(0.15, min=0.0, max=1.0,
                                 description='body clearance to the road bounds')
    obstacle_range_m: float = param(80.0, min=10.0, max=300.0,
                                    description='objects farther along the path are ignored')


@dataclasses.dataclass(frozen=True)
class Objects:
    """Objects around, map frame: ids (K,), labels (K,) ObjectClass, xy_m (K, 2) box centres,
    yaw_rad (K,), velocity_mps (K, 2) in map, length_m, width_m (K,), and predicted centres
    pred_xy_m (K, T, 2) at times pred_t_s (T,) from now (pred_t_s[0] = 0)."""

    ids: np.ndarray
    labels: np.ndarray
    xy_m: np.ndarray
    yaw_rad: np.ndarray
    velocity_mps: np.ndarray
    length_m: np.ndarray
    width_m: np.ndarray
    pred_t_s: np.ndarray
    pred_xy_m: np.ndarray

    @classmethod
    def empty(cls, pred_t_s: np.ndarray) -> 'Objects':
        z = np.zeros(0)
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)), z,
                   np.zeros((0, 2)), z, z, np.asarray(pred_t_s, float),
                   np.zeros((0, len(pred_t_s), 2)))

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: np.ndarray) -> 'Objects':
        return Objects(self.ids[mask], self.labels[mask], self.xy_m[mask], self.yaw_rad[mask],
                       self.velocity_mps[mask], self.length_m[mask], self.width_m[mask],
                       self.pred_t_s, self.pred_xy_m[mask])


def constant_velocity_objects(ids, labels, xy_m, yaw_rad, velocity_mps, length_m, width_m,
                              pred_t_s) -> Objects:
    """Objects whose future is their current velocity held (ground truth, or no prediction).

    Non-finite rows are dropped by the caller; here they raise BehaviorInputError.
    """
    arrays = [np.asarray(a, dtype=float) for a in (xy_m, yaw_rad, velocity_mps, length_m,
                                                    width_m, pred_t_s)]
    for name, value in zip(('xy_m', 'yaw_rad', 'velocity_mps', 'length_m', 'width_m',
                            'pred_t_s'), arrays):
        if not np.all(np.isfinite(value)):
            raise BehaviorInputError(f'objects.{name} holds non-finite values')
    xy, yaw, vel, length, width, t = arrays
    pred = xy[:, None, :] + vel[:, None, :] * t[None, :, None]
    return Objects(np.asarray(ids, np.int64), np.asarray(labels, np.int64), xy.reshape(-1, 2),
                   yaw, vel.reshape(-1, 2), length, width, t, pred.reshape(len(xy), len(t), 2))


@dataclasses.dataclass(frozen=True)
class EgoGeometry:
    """Ego body around base_link [m]: front_m to the front bumper, rear_m to the rear bumper,
    width_m."""

    front_m: float
    rear_m: float
    width_m: float

    @property
    def centre_offset_m(self) -> float:
        """base_link to the body centre along the heading."""
        return 0.5 * (self.front_m - self.rear_m)

    @property
    def half_length_m(self) -> float:
        return 0.5 * (self.front_m + self.rear_m)


@dataclasses.dataclass
class BehaviorMemory:
    """What the behavior layer remembers between cycles (one per mission leg).

    served_stop_lines: map positions (x, y) of stop lines already served; stop_since_s: time
    the car came to rest at the pending stop line (None: not at rest there).
    """

    served_stop_lines: list = dataclasses.field(default_factory=list)
    stopped_since_s: dict = dataclasses.field(default_factory=dict)  # object id -> t (standing)
    stop_since_s: float | None = None
    stop_line_xy: tuple | None = None

    def served(self, xy: np.ndarray) -> bool:
        return any(math.hypot(xy[0] - x, xy[1] - y) < 1.0 for x, y in self.served_stop_lines)


@dataclasses.dataclass(frozen=True)
class BehaviorPlan:
    """The MPC request ingredients for one cycle (arrays over the N+1 horizon steps).

    s_stop_m: base_link station to stop at (inf: none); stop_reason: why ('' if none);
    v_ref_mps, d_ref_m, d_min_m, d_max_m (N+1,); obstacles (K, N+1, 4): s, d, half length,
    half width of the inflated ellipses around objects the MPC must keep clear of (for
    base_link); state: a short name of the decision for diagnostics; passing_ids: objects
    being passed.
    """

    s_stop_m: float
    stop_reason: str
    v_ref_mps: np.ndarray
    d_ref_m: np.ndarray
    d_min_m: np.ndarray
    d_max_m: np.ndarray
    obstacles: np.ndarray
    state: str
    passing_ids: tuple = ()


def speed_limit_profile(path: ReferencePath, params: BehaviorParams,
                        caps: tuple = ()) -> np.ndarray:
    """(N,) map speed limit lowered in curves to sqrt(curve_lat_accel / |kappa|) and to
    each cap (s_start_m, s_end_m, v_mps) over its span, reached with comfortable braking."""
    kappa = np.abs(path.kappa_1pm)
    curve = np.sqrt(params.curve_lat_accel_mps2 / np.maximum(kappa, 1e-6))
    curve = np.maximum(curve, params.min_speed_limit_mps)
    limit = np.minimum(path.speed_limit_mps, curve)
    for s0, s1, v_cap in caps:
        span = (path.s_m >= s0) & (path.s_m <= s1)
        limit[span] = np.minimum(limit[span], v_cap)
    # Slow down before a curve, not in it: limit by what a comfortable deceleration reaches.
    ds = np.diff(path.s_m, prepend=path.s_m[0])
    for i in range(len(limit) - 2, -1, -1):
        limit[i] = min(limit[i], math.sqrt(limit[i + 1] ** 2
                                           + 2.0 * params.comfort_decel_mps2 * ds[i + 1]))
    return limit


def time_speed_reference(s0_m: float, v0_mps: float, path_s_m: np.ndarray,
                         limit_mps: np.ndarray, s_stop_m: float, steps: int, step_s: float,
                         params: BehaviorParams) -> np.ndarray:
    """(steps+1,) speed reference over the horizon: accelerate comfortably towards the limit at
    the predicted station, never above sqrt(2 a_dec (s_stop - s)) so it ends at rest at s_stop.
    """
    v_ref = np.empty(steps + 1)
    s, v = s0_m, max(0.0, v0_mps)
    for k in range(steps + 1):
        cap = float(np.interp(s, path_s_m, limit_mps))
        if math.isfinite(s_stop_m):
            cap = min(cap, math.sqrt(2.0 * params.comfort_decel_mps2 * max(0.0, s_stop_m - s)))
        v = min(cap, v + params.comfort_accel_mps2 * step_s) if k else min(v, cap)
        v_ref[k] = max(0.0, v)
        s += v_ref[k] * step_s
    return v_ref


def _project(path: ReferencePath, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stations and lateral offsets of points (M, 2) on the path (vectorised, nearest point)."""
    pts = path.xy_m
    flat = xy.reshape(-1, 2)
    if len(flat) == 0:
        return np.zeros(xy.shape[:-1]), np.zeros(xy.shape[:-1])
    d2 = ((flat[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    idx = np.argmin(d2, axis=1)
    tangent = np.stack([np.cos(path.yaw_rad[idx]), np.sin(path.yaw_rad[idx])], -1)
    rel = flat - pts[idx]
    along = (rel * tangent).sum(-1)
    lateral = tangent[:, 0] * rel[:, 1] - tangent[:, 1] * rel[:, 0]
    s = path.s_m[idx] + along
    return s.reshape(xy.shape[:-1]), lateral.reshape(xy.shape[:-1])


def _conflicts(objects: Objects, zone_xy: np.ndarray, ego: EgoGeometry,
               params: BehaviorParams, horizon_s: float) -> list[int]:
    """Ids of vehicles inside or predicted within `horizon_s` to enter the zone (path points)."""
    if len(objects) == 0 or len(zone_xy) == 0:
        return []
    t_mask = objects.pred_t_s <= horizon_s + 1e-9
    pred = objects.pred_xy_m[:, t_mask, :]                          # (K, T', 2)
    d2 = ((pred[:, :, None, :] - zone_xy[None, None, :, :]) ** 2).sum(-1).min(-1)
    reach = (0.5 * ego.width_m + 0.5 * np.hypot(objects.length_m, objects.width_m)
             + params.intersection_clearance_m)
    hit = (d2 <= reach[:, None] ** 2).any(-1)
    return [int(i) for i in objects.ids[hit]]


def plan_behavior(path: ReferencePath, ego_s_m: float, ego_d_m: float, ego_speed_mps: float,
                  t_s: float, objects: Objects, ego: EgoGeometry, memory: BehaviorMemory,
                  params: BehaviorParams, *, steps: int, step_s: float, goal_active: bool,
                  max_objects: int) -> BehaviorPlan:
    """Decide stops, speeds, corridor and obstacles for one MPC cycle (see module doc).

    goal_active: drive to path.goal_s_m and stop there; False holds the car where it is
    (boarding, alighting, idle). Raises BehaviorInputError on non-finite ego values.
    """
    for name, value in (('ego_s_m', ego_s_m), ('ego_d_m', ego_d_m),
                        ('ego_speed_mps', ego_speed_mps), ('t_s', t_s)):
        if not math.isfinite(value):
            raise BehaviorInputError(f'{name} = {value}: must be finite')
    n1 = steps + 1
    front_s = ego_s_m + ego.front_m
    stops: list[tuple[float, str]] = []
    if goal_active:
        stops.append((path.goal_s_m, 'goal'))
    else:
        stops.append((ego_s_m if ego_speed_mps < params.stopped_speed_mps else
                       ego_s_m + ego_speed_mps ** 2 / (2.0 * params.comfort_decel_mps2),
                       'hold'))

    # Objects in the path frame: now and predicted.
    in_range = np.ones(len(objects), bool)
    obj_s, obj_d = _project(path, objects.xy_m)
    pred_s, pred_d = _project(path, objects.pred_xy_m)
    if len(objects):
        in_range = (obj_s > ego_s_m - 30.0) & (obj_s < ego_s_m + params.obstacle_range_m)
    heading = np.interp(obj_s, path.s_m, path.yaw_rad) if len(objects) else np.zeros(0)
    v_along = (objects.velocity_mps[:, 0] * np.cos(heading)
               + objects.velocity_mps[:, 1] * np.sin(heading)) if len(objects) else heading
    speed = np.hypot(objects.velocity_mps[:, 0], objects.velocity_mps[:, 1]) \
        if len(objects) else heading
    half_w = 0.5 * objects.width_m
    half_l = 0.5 * objects.length_m
    corridor = 0.5 * ego.width_m + half_w + params.lateral_margin_m
    t_mask = objects.pred_t_s <= params.in_path_horizon_s + 1e-9

    d_max = np.full(n1, 0.0)
    d_min = np.full(n1, 0.0)
    passing: list[int] = []
    d_ref = np.zeros(n1)
    mpc_obstacles: list[np.ndarray] = []
    state = 'cruise'

    standing = _standing(objects, speed, t_s, memory, params)
    # A standing vehicle stays where it is: the tracker's residual speed of a parked car
    # (its box grows and shrinks with the view) would otherwise drift its prediction metres
    # sideways over the horizon and the MPC would swerve around where it is not.
    vulnerable = np.isin(objects.labels, VULNERABLE) if len(objects) else np.zeros(0, bool)
    hold = standing & ~vulnerable
    pred_s[hold] = obj_s[hold, None]
    pred_d[hold] = obj_d[hold, None]
    horizon_s = ego_s_m + max(ego_speed_mps, 3.0) * steps * step_s + 10.0
    for k in range(len(objects)):
        if not in_range[k]:
            continue
        ahead = obj_s[k] + half_l[k] > ego_s_m - ego.rear_m
        in_path_now = abs(obj_d[k]) < corridor[k]
        future = np.abs(pred_d[k, t_mask]) < corridor[k]
        future &= pred_s[k, t_mask] + half_l[k] > front_s - 1.0
        rear_s = obj_s[k] - half_l[k]
        is_vulnerable = bool(vulnerable[k])
        stopped_vehicle = bool(hold[k])
        if (stopped_vehicle and in_path_now and ahead and rear_s <= front_s - 1.0
                and obj_s[k] + half_l[k] + ego.rear_m + params.pass_trail_m > ego_s_m):
            passing.append(k)  # alongside it: keep the pass corridor until past it
            continue
        if ahead and rear_s > front_s - 1.0 and (in_path_now or future.any()):
            moving_along = (v_along[k] > params.static_speed_mps and not standing[k]
                            and not is_vulnerable)
            if moving_along:
                # Lead vehicle: stop where we could stop if it braked hard now.
                lead_stop = rear_s + v_along[k] ** 2 / (2.0 * params.lead_brake_mps2)
                stops.append((lead_stop - params.min_gap_m - ego.front_m,
                              f'lead {objects.ids[k]}'))
                state = 'follow'
                continue
            object_id = int(objects.ids[k])
            stopped_for_s = t_s - memory.stopped_since_s.get(object_id, t_s)
            queued = any(0.0 <= line - (obj_s[k] + half_l[k]) <= params.queue_distance_m
                         for line in path.stop_lines_s)
            if (stopped_vehicle and in_path_now and rear_s < path.goal_s_m + 5.0
                    and not queued and stopped_for_s >= params.pass_min_stopped_s):
                need = obj_d[k] + ELLIPSE_WIDEN * corridor[k] + 0.05  # pass on the left
                oncoming_free = _oncoming_free(objects, obj_s, v_along, k, ego_s_m,
                                               ego_speed_mps, params, path)
                left = float(np.interp(obj_s[k], path.s_m, path.left_bound_m))
                room_in_lane = left - 0.5 * ego.width_m - params.road_margin_m
                if need <= room_in_lane or (oncoming_free and need <= params.pass_max_offset_m):
                    passing.append(k)
                    continue
            # Blocking (crossing, stopped with no room, pedestrian in the way): stop before it.
            first_s = np.min(np.where(future, pred_s[k, t_mask], np.inf)) if future.any() \
                else obj_s[k]
            block_s = min(obj_s[k], first_s) - half_l[k]
            stops.append((block_s - params.min_gap_m - ego.front_m, f'object {objects.ids[k]}'))
            state = 'yield' if is_vulnerable else 'stop_for_obstacle'
    # Every object within reach becomes an MPC clearance constraint (leads are also covered).
    order = np.argsort(np.abs(obj_s - ego_s_m)) if len(objects) else np.zeros(0, int)
    for k in order:
        if not in_range[k] or obj_s[k] > horizon_s:
            continue
        if len(mpc_obstacles) >= max_objects:
            break
        t_k = np.arange(n1) * step_s
        ps = np.interp(t_k, objects.pred_t_s, pred_s[k])
        pd = np.interp(t_k, objects.pred_t_s, pred_d[k])
        # Ellipse around the box for base_link: body centre sits centre_offset ahead of it.
        # 1.4 x the box sum keeps the ellipse close to the rectangle at its corners.
        a = ELLIPSE_STRETCH * (half_l[k] + ego.half_length_m)
        b = ELLIPSE_WIDEN * corridor[k]
        row = np.stack([ps - ego.centre_offset_m, pd, np.full(n1, a), np.full(n1, b)], -1)
        mpc_obstacles.append(row)

    # Corridor for base_link at each predicted station (approximate with current speed).
    s_pred = ego_s_m + np.arange(n1) * step_s * max(ego_speed_mps, 1.0)
    left_k = np.interp(s_pred, path.s_m, path.left_bound_m)
    right_k = np.interp(s_pred, path.s_m, path.right_bound_m)
    d_max[:] = left_k - 0.5 * ego.width_m - params.road_margin_m
    d_min[:] = -(right_k - 0.5 * ego.width_m - params.road_margin_m)
    caps = []
    if passing:
        state = 'pass'
        reach = max(obj_d[k] + ELLIPSE_WIDEN * corridor[k] + 0.05 for k in passing)
        d_max[:] = np.maximum(d_max, reach + 0.3)
        lead_m = max(params.pass_lead_min_m, params.pass_lead_time_s * ego_speed_mps)
        for k in passing:
            # Move out early enough to be beside it in time, come back once past it.
            start = obj_s[k] - half_l[k] - ego.front_m - lead_m
            end = obj_s[k] + half_l[k] + ego.rear_m + params.pass_trail_m
            near = (s_pred >= start) & (s_pred <= end)
            offset = obj_d[k] + ELLIPSE_WIDEN * corridor[k] + 0.05
            d_ref[near] = np.maximum(d_ref[near], offset)
            caps.append((start, end, params.pass_speed_mps))

    # The corridor never starts narrower than where the car is: when it closes under it (a pass
    # called off with the car out in the oncoming lane) it closes at corridor_close_mps, so the
    # MPC steers back at a comfortable rate instead of paying the road-bound penalty with full
    # lock (it turned the car 0.9 rad towards the lane while braking).
    closing = np.arange(n1) * step_s * params.corridor_close_mps
    d_max = np.maximum(d_max, ego_d_m - closing)
    d_min = np.minimum(d_min, ego_d_m + closing)

    # Stop lines: stand still behind each, then go when the intersection is clear.
    for line_s in path.stop_lines_s:
        stop_at = line_s - ego.front_m - params.stop_line_margin_m
        if stop_at < ego_s_m - params.stop_reached_m or line_s > path.goal_s_m + ego.front_m:
            continue
        xy = np.asarray(path.sample(line_s)['xy_m']).reshape(2)
        if memory.served(xy):
            continue
        at_rest = (abs(stop_at - ego_s_m) < params.stop_reached_m
                   and ego_speed_mps < params.stopped_speed_mps)
        if at_rest:
            if memory.stop_since_s is None or memory.stop_line_xy is None \
                    or math.hypot(*(np.asarray(memory.stop_line_xy) - xy)) > 1.0:
                memory.stop_since_s, memory.stop_line_xy = t_s, (float(xy[0]), float(xy[1]))
            waited = t_s - memory.stop_since_s >= params.stop_line_wait_s
            zone = path.xy_m[(path.s_m >= line_s) & (path.s_m <= line_s + 30.0)]
            # Moving vehicles only: parked cars never clear, pedestrians are the
            # crosswalk rule's business, a stopped car in our way is an in-path blocker.
            movers = (speed > params.static_speed_mps) & ~vulnerable
            blockers = _conflicts(objects.select(movers), zone, ego, params,
                                  params.gap_time_s) if len(objects) else []
            if waited and not blockers:
                memory.served_stop_lines.append((float(xy[0]), float(xy[1])))
                memory.stop_since_s = None
                continue
            state = 'wait_gap' if waited else 'stop_line'
        stops.append((stop_at, 'stop line'))
        break

    # Crosswalks: yield to pedestrians on or about to enter them.
    for s0, s1, polygon in path.crosswalks:
        if front_s > s0 + 0.5 or s0 > ego_s_m + params.obstacle_range_m:
            continue  # committed (already on it) or too far to matter
        if not vulnerable.any():
            break
        cwt = objects.pred_t_s <= params.crosswalk_horizon_s + 1e-9
        pts = objects.pred_xy_m[vulnerable][:, cwt, :]
        if _near_polygon(pts.reshape(-1, 2), polygon, params.crosswalk_watch_m).any():
            stops.append((s0 - ego.front_m - params.crosswalk_margin_m, 'crosswalk'))
            state = 'yield_crosswalk'

    s_stop, reason = min(stops, key=lambda item: item[0]) if stops else (math.inf, '')
    if reason == 'hold':
        state = 'hold'
    elif state == 'cruise' and s_stop - ego_s_m < 40.0:
        state = {'goal': 'approach_goal', 'stop line': 'stop_line'}.get(reason, state)
    limit = speed_limit_profile(path, params, tuple(caps))
    v_ref = time_speed_reference(ego_s_m, ego_speed_mps, path.s_m, limit, s_stop, steps,
                                 step_s, params)
    obstacles = (np.stack(mpc_obstacles) if mpc_obstacles else np.zeros((0, n1, 4)))
    return BehaviorPlan(float(s_stop), reason, v_ref, d_ref, np.minimum(d_min, d_max),
                        d_max, obstacles, state, tuple(int(objects.ids[k]) for k in passing))


def _standing(objects: Objects, speed_mps: np.ndarray, t_s: float, memory: BehaviorMemory,
              params: BehaviorParams) -> np.ndarray:
    """(K,) bool: objects standing still, and memory.stopped_since_s updated.

    An object slower than static_speed_mps stands; one that has stood for pass_min_stopped_s
    keeps standing until it is faster than static_release_mps. A parked van's track from the
    ONNX detector reads up to ~1 m/s as its box grows and shrinks with the view: without the
    hysteresis a pass is called off halfway, beside the van. Tracks that ended are forgotten.
    """
    ids = [int(i) for i in objects.ids]
    for oid in set(memory.stopped_since_s) - set(ids):
        del memory.stopped_since_s[oid]
    standing = np.zeros(len(ids), bool)
    for k, oid in enumerate(ids):
        since = memory.stopped_since_s.get(oid)
        settled = since is not None and t_s - since >= params.pass_min_stopped_s
        limit = params.static_release_mps if settled else params.static_speed_mps
        if speed_mps[k] > limit:
            memory.stopped_since_s.pop(oid, None)
        else:
            memory.stopped_since_s.setdefault(oid, t_s)
            standing[k] = True
    return standing


def _oncoming_free(objects: Objects, obj_s: np.ndarray, v_along: np.ndarray, skip: int,
                   ego_s_m: float, ego_speed_mps: float, params: BehaviorParams,
                   path: ReferencePath) -> bool:
    """No vehicle comes towards us on the left within pass_oncoming_time_s of the pass.

    Oncoming means faster towards us than static_release_mps: a standing or creeping vehicle
    there is an obstacle the MPC keeps clear of, not traffic (a duplicate box of the parked van,
    heading flipped, read 1.15 m/s and called a pass off with the ego already out)."""
    if len(objects) == 0:
        return True
    heading = np.interp(obj_s, path.s_m, path.yaw_rad)
    rel = objects.xy_m - path.xy_m[np.clip(np.searchsorted(path.s_m, obj_s), 0,
                                           len(path.s_m) - 1)]
    lateral = np.cos(heading) * rel[:, 1] - np.sin(heading) * rel[:, 0]
    for k in range(len(objects)):
        if k == skip or objects.labels[k] in VULNERABLE:
            continue
        if not (0.5 < lateral[k] < 6.0) or -v_along[k] <= params.static_release_mps:
            continue
        closing = max(0.0, -v_along[k]) + max(ego_speed_mps, 2.0)
        gap = obj_s[k] - ego_s_m
        if -10.0 < gap and gap < closing * params.pass_oncoming_time_s:
            return False
    return True


def _near_polygon(points: np.ndarray, polygon: np.ndarray, margin_m: float) -> np.ndarray:
    """(M,) bool: points inside the polygon's bounding box grown by margin (crosswalks are
    axis-aligned rectangles in generated towns; a box test is exact there and conservative
    elsewhere)."""
    if len(points) == 0:
        return np.zeros(0, bool)
    lo = polygon.min(axis=0) - margin_m
    hi = polygon.max(axis=0) + margin_m
    return np.all((points >= lo) & (points <= hi), axis=1)
