"""Free-flow ride times: how long a mission leg takes on an empty road (pure: numpy, lanelet2).

The reference for "ride time within 1.3x of free-flow time". A leg is driven as the stack drives
it, minus traffic: the goal is snapped to the kerbside lane as the mission does
(`snap_to_kerbside`), the route and reference path are the planner's own (`plan_route` +
`build_reference_path` from the ego pose), and the speed profile follows the planner's behavior
rules (planning/behavior.py, parameters from config/mpc_planner.param.yaml):

* limit: min(map speed limit, curve limit max(sqrt(curve_lat_accel / |kappa|),
  min_speed_limit)) along the path;
* a full stop at every stop line the planner serves before the goal (grid_town intersections
  are all-way stops): base_link `stop_line_margin_m` + front overhang before the line, standing
  `stop_line_wait_s` there;
* from the start speed (at rest for a leg that starts at a stop) to rest at the goal, and the
  mission's `arrival_hold_s` of standing there before it reports arrival;
* forward / backward passes with the comfort acceleration / deceleration.

In v^2 over the station s both passes are min-plus recurrences, u_i = min(cap_i, u_{i-1} +
2 a ds), whose closed form is a running minimum (np.minimum.accumulate): no Python loop over
path samples. Segment times are exact for the piecewise constant-acceleration profile (an
accelerate / cruise / decelerate split inside each segment), so a straight leg reproduces the
analytic trapezoid time.

`extract_ride_legs` finds the measured legs in a MissionStatus timeline (to_pickup: first
TO_PICKUP to BOARDING; to_dropoff: first TO_DROPOFF to ALIGHTING) and `ride_time_ratios`
puts measured and free-flow times side by side for result.json.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robotaxi_stack.common.params import (
    ParameterError, check_value, load_param_file, param_specs, params_from_dict)
from robotaxi_stack.common.paths import config_dir
from robotaxi_stack.planning.behavior import BehaviorParams
from robotaxi_stack.planning.mission import (
    ALIGHTING, BOARDING, TO_DROPOFF, TO_PICKUP, MissionParams)
from robotaxi_stack.planning.route import (
    ReferencePath, build_reference_path, plan_route, snap_to_kerbside)
from robotaxi_stack.sim.maps import MapError, Town

#: Leg names in result.json: (name, state that starts it, state that ends it).
LEGS = (('to_pickup', TO_PICKUP, BOARDING), ('to_dropoff', TO_DROPOFF, ALIGHTING))
# Stations closer than this are one sample [m].
_SAME_STATION_M = 1e-6


class FreeFlowError(ValueError):
    """Unusable input for a free-flow time (names the argument or the place on the path)."""


@dataclasses.dataclass(frozen=True, eq=False)
class FreeFlowLeg:
    """Free-flow time of one leg.

    time_s: drive_s + standing_s [s]; length_m: driving distance from the start foot point to
    the goal [m]; drive_s: time in motion [s]; standing_s: stop-line waits plus the arrival
    hold [s]; stop_lines: number of stop lines stopped at. s_m, v_mps, t_s (K,): the profile
    (station, speed, time since the start; the standing is not in t_s).
    """

    time_s: float
    length_m: float
    drive_s: float
    standing_s: float
    stop_lines: int
    s_m: np.ndarray
    v_mps: np.ndarray
    t_s: np.ndarray


@dataclasses.dataclass(frozen=True)
class RideLeg:
    """One completed leg in a mission timeline: t_start_s (first status of the leg's state),
    t_end_s (first status of the state that ends it) [s]; leg: 'to_pickup' | 'to_dropoff'."""

    ride_id: str
    leg: str
    t_start_s: float
    t_end_s: float

    @property
    def time_s(self) -> float:
        return self.t_end_s - self.t_start_s


def _finite(value: Any, name: str, lo: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FreeFlowError(f'{name} = {value!r} must be a number') from None
    if not math.isfinite(number) or (lo is not None and number < lo):
        bound = f' and >= {lo:g}' if lo is not None else ''
        raise FreeFlowError(f'{name} = {value!r} must be finite{bound}')
    return number


def _pose(value: Any, name: str) -> tuple[float, float, float]:
    try:
        x, y, yaw = value
    except (TypeError, ValueError):
        raise FreeFlowError(f'{name} = {value!r} must be an (x, y, yaw) pose') from None
    return (_finite(x, f'{name}.x'), _finite(y, f'{name}.y'), _finite(yaw, f'{name}.yaw'))


def load_planner_settings(directory: str | pathlib.Path | None = None
                          ) -> tuple[BehaviorParams, float]:
    """(behavior parameters, mission arrival_hold_s [s]) as deployed: the behavior keys of
    `mpc_planner.param.yaml` and arrival_hold_s of `mission.param.yaml` in `directory`
    (default: the package's config/), unset keys at their defaults. Raises ParameterError for
    unreadable files or out-of-range values (naming the parameter)."""
    folder = pathlib.Path(directory) if directory is not None else config_dir()
    planner = load_param_file(folder / 'mpc_planner.param.yaml', 'mpc_planner')
    names = {field.name for field in dataclasses.fields(BehaviorParams)}
    behavior = params_from_dict(BehaviorParams,
                                {k: v for k, v in planner.items() if k in names},
                                context='mpc_planner')
    mission = load_param_file(folder / 'mission.param.yaml', 'mission')
    ftype, spec, default = param_specs(MissionParams)['arrival_hold_s']
    try:
        hold_s = check_value('arrival_hold_s', ftype, spec,
                             mission.get('arrival_hold_s', default))
    except ParameterError as error:
        raise ParameterError(f'mission: {error}') from None
    return behavior, float(hold_s)


def _served_stops(path: ReferencePath, behavior: BehaviorParams,
                  front_m: float) -> np.ndarray:
    """Base_link stations [m] of the stop-line stops before the goal (behavior.py's rule:
    front bumper stop_line_margin before the line; lines behind the car or past the goal
    are not stopped at; a stop at or past the goal never comes, the goal ends the leg)."""
    lines_s = np.asarray(path.stop_lines_s, dtype=np.float64)
    stop_s = lines_s - front_m - behavior.stop_line_margin_m
    used = ((stop_s >= -behavior.stop_reached_m) & (lines_s <= path.goal_s_m + front_m)
            & (stop_s < path.goal_s_m - _SAME_STATION_M))
    return np.clip(stop_s[used], 0.0, path.goal_s_m)


def _segment_times(s: np.ndarray, u: np.ndarray, cap: np.ndarray, accel: float,
                   decel: float) -> np.ndarray:
    """(K-1,) time [s] of each segment between stations s (K,) with v^2 = u at its ends:
    accelerate at `accel`, cruise at most at v^2 = cap, decelerate at `decel` into the end."""
    ds = np.diff(s)
    u0, u1 = u[:-1], u[1:]
    # Where the acceleration line from the start meets the braking line into the end.
    kink = (decel * u0 + accel * u1 + 2.0 * accel * decel * ds) / (accel + decel)
    # The limit inside a segment is the lower of its ends' limits, but the ends themselves
    # are reachable by construction (a curve limit changes between samples).
    ends = np.maximum(u0, u1)
    top = np.maximum(np.minimum(np.minimum(cap[:-1], cap[1:]), kink), ends)
    v0, v1, vp = np.sqrt(u0), np.sqrt(u1), np.sqrt(top)
    cruise_m = np.maximum(ds - (top - u0) / (2.0 * accel) - (top - u1) / (2.0 * decel), 0.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        cruise_s = np.where(cruise_m > 0.0, cruise_m / vp, 0.0)
    return (vp - v0) / accel + (vp - v1) / decel + cruise_s


def free_flow_profile(path: ReferencePath, behavior: BehaviorParams, front_m: float, *,
                      arrival_hold_s: float = 0.0,
                      start_speed_mps: float = 0.0) -> FreeFlowLeg:
    """Free-flow time from the start of `path` to rest at path.goal_s_m (module docstring).

    behavior: the planner's comfort and stop-line parameters; front_m: base_link to the front
    bumper [m]; arrival_hold_s: standing at the goal that the leg still includes [s];
    start_speed_mps: speed at the start (0: from rest). Raises FreeFlowError for invalid
    arguments or a path stretch without a positive speed limit.
    """
    front_m = _finite(front_m, 'front_m', 0.0)
    arrival_hold_s = _finite(arrival_hold_s, 'arrival_hold_s', 0.0)
    v0 = _finite(start_speed_mps, 'start_speed_mps', 0.0)
    accel, decel = behavior.comfort_accel_mps2, behavior.comfort_decel_mps2
    goal_s = float(path.goal_s_m)
    stops = _served_stops(path, behavior, front_m)
    standing_s = arrival_hold_s + len(stops) * behavior.stop_line_wait_s
    if goal_s <= _SAME_STATION_M:
        zero = np.zeros(1)
        return FreeFlowLeg(standing_s, 0.0, 0.0, standing_s, len(stops), zero, zero, zero)
    s = np.concatenate((path.s_m[path.s_m < goal_s], [goal_s], stops))
    s = np.unique(s)
    s = s[np.concatenate(([True], np.diff(s) > _SAME_STATION_M))]
    sample = path.sample(s)
    curve = np.sqrt(behavior.curve_lat_accel_mps2
                    / np.maximum(np.abs(sample['kappa_1pm']), 1e-6))
    limit = np.minimum(sample['speed_limit_mps'], np.maximum(curve,
                                                             behavior.min_speed_limit_mps))
    slow = np.flatnonzero(~(limit > 0.0))
    if slow.size:
        k = int(slow[0])
        raise FreeFlowError(f'no positive speed limit at station {s[k]:.1f} m (lanelet '
                            f'{int(sample["lanelet_id"][k])}): the leg cannot be driven')
    cap = limit ** 2
    target = cap.copy()
    target[np.searchsorted(s, stops - _SAME_STATION_M)] = 0.0  # standstill at each stop
    target[-1] = 0.0
    target[0] = min(target[0], v0 * v0)
    # Forward pass u_i = min(target_i, u_{i-1} + 2 a ds) as a running minimum, then the
    # backward pass into every stop and curve with the comfort deceleration.
    forward = 2.0 * accel * s + np.minimum.accumulate(target - 2.0 * accel * s)
    backward = np.minimum.accumulate((forward + 2.0 * decel * s)[::-1])[::-1]
    u = np.maximum(backward - 2.0 * decel * s, 0.0)
    u[np.searchsorted(s, stops - _SAME_STATION_M)] = 0.0
    u[-1] = 0.0
    dt = _segment_times(s, u, cap, accel, decel)
    t = np.concatenate(([0.0], np.cumsum(dt)))
    drive_s = float(t[-1])
    return FreeFlowLeg(drive_s + standing_s, goal_s, drive_s, standing_s, len(stops), s,
                       np.sqrt(u), t)


def free_flow_leg(town: Town, start_pose: Sequence[float], goal_pose: Sequence[float],
                  behavior: BehaviorParams, front_m: float, *, arrival_hold_s: float = 0.0,
                  start_speed_mps: float = 0.0, snap_goal: bool = True) -> FreeFlowLeg:
    """Free-flow time of a leg from base_link pose start_pose to goal_pose, (x_m, y_m, yaw_rad)
    in the map frame, on the route the planner drives.

    snap_goal: move the goal onto the kerbside lane as the mission does with a requested
    pickup/dropoff (False: the goal is already a planner goal). Other arguments: see
    free_flow_profile. Raises FreeFlowError for invalid poses and MapError (OffMapError,
    RouteNotFoundError) when the map has no such leg.
    """
    sx, sy, syaw = _pose(start_pose, 'start_pose')
    gx, gy, gyaw = _pose(goal_pose, 'goal_pose')
    if snap_goal:
        _, goal_xy, gyaw = snap_to_kerbside(town, (gx, gy), gyaw)
        gx, gy = float(goal_xy[0]), float(goal_xy[1])
    # Exactly the planner's calls (planning/planner.py _ensure_path).
    route = plan_route(town, (sx, sy), syaw, (gx, gy), gyaw)
    path = build_reference_path(town, route, (sx, sy), syaw, (gx, gy))
    return free_flow_profile(path, behavior, front_m, arrival_hold_s=arrival_hold_s,
                             start_speed_mps=start_speed_mps)


def extract_ride_legs(mission: Sequence[tuple[float, str, int]]) -> list[RideLeg]:
    """Completed legs in a MissionStatus timeline of (t_s, ride_id, state) entries.

    The entries may repeat (periodic status) and come in any order; they are sorted by time
    (stable). A leg runs from the first status of its starting state (TO_PICKUP / TO_DROPOFF)
    of a ride to that ride's first BOARDING / ALIGHTING at or after it; legs that never end
    are left out. Returns legs ordered by start time. Raises FreeFlowError for a non-finite
    stamp or a malformed entry (naming its index).
    """
    rows = []
    for index, entry in enumerate(mission):
        try:
            t_s, ride_id, state = entry
        except (TypeError, ValueError):
            raise FreeFlowError(f'mission[{index}] = {entry!r} must be (t_s, ride_id, '
                                f'state)') from None
        rows.append((_finite(t_s, f'mission[{index}].t_s'), str(ride_id), int(state)))
    rows.sort(key=lambda row: row[0])
    first: dict[tuple[str, int], float] = {}
    for t_s, ride_id, state in rows:
        first.setdefault((ride_id, state), t_s)
    legs = []
    for (ride_id, state), t_start in first.items():
        for name, start_state, end_state in LEGS:
            if state != start_state:
                continue
            ends = [t for t, r, s in rows if r == ride_id and s == end_state and t >= t_start]
            if ends:
                legs.append(RideLeg(ride_id, name, t_start, ends[0]))
    return sorted(legs, key=lambda leg: (leg.t_start_s, leg.leg))


def ride_time_ratios(legs: Sequence[RideLeg], t_s: Any, xy_m: Any, yaw_rad: Any,
                     speed_mps: Any, stops: Mapping[str, tuple[Sequence[float],
                                                               Sequence[float]]],
                     town: Town, behavior: BehaviorParams, front_m: float,
                     arrival_hold_s: float) -> list[dict]:
    """One result.json entry per leg: {ride_id, leg, time_s, free_flow_s, ratio}.

    t_s (T,), xy_m (T, 2), yaw_rad (T,), speed_mps (T,): odometry (base_link, map frame),
    non-empty and finite; the free-flow leg starts at the sample nearest to the leg's start,
    at its speed. stops: ride_id -> (pickup pose, dropoff pose) as requested (x, y, yaw).
    A leg whose reference cannot be computed (unknown ride, no route) gets free_flow_s and
    ratio None and an 'error' saying why.
    """
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    xy = np.asarray(xy_m, dtype=np.float64).reshape(-1, 2)
    yaw = np.asarray(yaw_rad, dtype=np.float64).reshape(-1)
    speed = np.asarray(speed_mps, dtype=np.float64).reshape(-1)
    if not len(t) or not len(t) == len(xy) == len(yaw) == len(speed):
        raise FreeFlowError(f'odometry arrays must be non-empty and equally long, got '
                            f'{len(t)}, {len(xy)}, {len(yaw)}, {len(speed)}')
    if not all(np.all(np.isfinite(a)) for a in (t, xy, yaw, speed)):
        raise FreeFlowError('odometry arrays must be finite')
    out = []
    for leg in legs:
        entry: dict[str, Any] = {'ride_id': leg.ride_id, 'leg': leg.leg,
                                 'time_s': leg.time_s, 'free_flow_s': None, 'ratio': None}
        k = int(np.argmin(np.abs(t - leg.t_start_s)))
        try:
            if leg.ride_id not in stops:
                raise FreeFlowError(f'ride {leg.ride_id!r} is not among the scenario rides')
            goal = stops[leg.ride_id][0 if leg.leg == 'to_pickup' else 1]
            reference = free_flow_leg(town, (xy[k, 0], xy[k, 1], yaw[k]), goal, behavior,
                                      front_m, arrival_hold_s=arrival_hold_s,
                                      start_speed_mps=max(0.0, float(speed[k])))
        except (FreeFlowError, MapError) as error:
            entry['error'] = str(error)
        else:
            entry['free_flow_s'] = reference.time_s
            entry['ratio'] = leg.time_s / reference.time_s if reference.time_s > 0.0 else None
            if entry['ratio'] is None:
                entry['error'] = 'the free-flow time is 0 s (the leg starts at its goal)'
        out.append(entry)
    return out
