"""Ride mission: a FIFO ride queue and the ride state machine (pure core).

States (the robotaxi_msgs/MissionStatus integers, defined here without importing messages):
IDLE -> TO_PICKUP -> BOARDING -> TO_DROPOFF -> ALIGHTING -> COMPLETED, or ABORTED from any
ride state; after COMPLETED/ABORTED the next queued ride starts (TO_PICKUP) or the mission is
IDLE again.

Time is passed in (seconds, the odometry stamps) and held as integer nanoseconds, so every
transition happens at an exact, reproducible stamp; nothing reads a clock. `update` makes at
most one transition per call, and COMPLETED / ABORTED are reported by one update before the
next ride starts, so a status stream sampled on change sees every ride end.

Distances are along the lanes: each goal (a ride's snapped pickup or dropoff) gets a
ReferencePath, planned once from where the car is when the leg starts and replanned only
when the car leaves it (off_route_m) or could not be placed on the map.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from robotaxi_stack.common.params import ParameterError, param
from robotaxi_stack.planning.route import (
    ReferencePath, build_reference_path, plan_route, snap_to_kerbside)
from robotaxi_stack.sim.maps import MapError, OffMapError, RouteNotFoundError, Town
from robotaxi_stack.sim.maps.town import project_on_polyline
from robotaxi_stack.sim.maps.osm import DEFAULT_ORIGIN_LATLON

IDLE = 0
TO_PICKUP = 1
BOARDING = 2
TO_DROPOFF = 3
ALIGHTING = 4
COMPLETED = 5
ABORTED = 6
STATE_NAMES = ('IDLE', 'TO_PICKUP', 'BOARDING', 'TO_DROPOFF', 'ALIGHTING', 'COMPLETED',
               'ABORTED')

_NS_PER_S = 1_000_000_000
# Time stamps beyond this are not plausible (year 2286); keeps the ns conversion exact.
_MAX_TIME_S = 1e10


class MissionInputError(ValueError):
    """An update or door event with non-finite values or a time stamp that goes back."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MissionParams:
    """Parameters of the mission node and its core (config/mission.param.yaml)."""

    boarding_dwell_s: float = param(10.0, min=0.0, max=600.0,
                                    description='longest stand at the pickup')
    alighting_dwell_s: float = param(8.0, min=0.0, max=600.0,
                                     description='longest stand at the dropoff')
    min_dwell_s: float = param(2.0, min=0.0, max=600.0,
                               description='a doors-closed event ends a stop no earlier')
    arrival_tolerance_m: float = param(1.0, min=0.05, max=10.0,
                                       description='base_link distance to the stop to arrive')
    stopped_speed_mps: float = param(0.1, min=0.001, max=2.0,
                                     description='|speed| below this counts as standing')
    arrival_hold_s: float = param(0.5, min=0.0, max=10.0,
                                  description='standing this long at the stop is arrival')
    max_queued_rides: int = param(20, min=1, max=1000,
                                  description='rides waiting behind the active one')
    status_rate_hz: float = param(1.0, min=0.1, max=50.0,
                                  description='periodic mission status (also sent on change)')
    replan_period_s: float = param(1.0, min=0.1, max=60.0,
                                   description='least time between replans of a leg path')
    off_route_m: float = param(5.0, min=1.0, max=100.0,
                               description='lateral distance from the leg path that replans')
    map_file: str = param('', description='Lanelet2 .osm; empty: the scenario map')
    map_origin_lat: float = param(DEFAULT_ORIGIN_LATLON[0], min=-80.0, max=84.0,
                                  description='projection origin of map_file [deg]')
    map_origin_lon: float = param(DEFAULT_ORIGIN_LATLON[1], min=-180.0, max=180.0,
                                  description='projection origin of map_file [deg]')
    reliable_inputs: bool = param(False, description='subscribe odometry reliable (the '
                                  'scenario runner\'s reliable simulator topics)')
    heartbeat: bool = param(False, description='publish ~/output/heartbeat (std_msgs/Header, '
                            'the odometry stamp) once each odometry is handled: the '
                            'lock-stepped simulator waits for it (scenario runner)')
    scenario: str = param('', description='scenario YAML whose map is used; empty: default')
    vehicle: str = param('bmw_320i', description='config/vehicle/<vehicle>.yaml: the front '
                         'overhang keeps a stop clear of stop lines')
    stop_line_clearance_m: float = param(1.0, min=0.0, max=20.0,
                                         description='a standing car\'s front stays this far '
                                         'before a stop line; closer stops are rejected')
    request_delay_s: float = param(0.5, min=0.0, max=10.0,
                                   description='a stamped topic ride request is taken at the '
                                   'first odometry this long after its stamp')
    max_request_future_s: float = param(10.0, min=0.0, max=3600.0,
                                        description='a request stamped further ahead of the '
                                        'odometry clock is taken at once, with a warning')

    def __post_init__(self) -> None:
        for name in ('boarding_dwell_s', 'alighting_dwell_s'):
            if self.min_dwell_s > getattr(self, name):
                raise ParameterError(f'parameter min_dwell_s = {self.min_dwell_s!r} must not '
                                     f'exceed {name} = {getattr(self, name)!r}')


@dataclasses.dataclass(frozen=True)
class Stop:
    """Where the car stops for a pickup or dropoff: the kerbside lane's centreline.

    lanelet_id, x_m, y_m, yaw_rad: the snapped stop (map frame, lane heading);
    requested: the (x, y, yaw) the ride request asked for.
    """

    lanelet_id: int
    x_m: float
    y_m: float
    yaw_rad: float
    requested: tuple[float, float, float]

    @property
    def xy(self) -> np.ndarray:
        return np.array([self.x_m, self.y_m])

    @property
    def pose(self) -> tuple[float, float, float]:
        return (self.x_m, self.y_m, self.yaw_rad)


#: One state change of a ride: (ride_id, state, t_s).
Event = tuple[str, int, float]


@dataclasses.dataclass(frozen=True)
class MissionOutput:
    """The mission after an update.

    ride_id: active ride ('' when IDLE); state: one of the state constants; goal: the stop
    (x_m, y_m, yaw_rad) the car should be at in this state (pickup while going to or standing
    at it, dropoff likewise), None when IDLE/COMPLETED/ABORTED; goal_lanelet_id (-1 without
    goal). remaining_distance_m, eta_s: to the ride's next stop along the lanes, and the time
    to get there at the map speed limits plus the remaining dwell: TO_PICKUP -> the pickup;
    BOARDING -> the dropoff (boarding left + drive); TO_DROPOFF -> the dropoff; ALIGHTING ->
    0 m and the alighting left; 0 otherwise. changed: ride, state or goal differ from the
    previous output. events: the active ride's (ride_id, state, t_s) log so far.
    queued_rides: rides waiting. reason: why the ride was aborted ('' otherwise).
    """

    ride_id: str
    state: int
    goal: tuple[float, float, float] | None
    goal_lanelet_id: int
    remaining_distance_m: float
    eta_s: float
    changed: bool
    events: tuple[Event, ...]
    queued_rides: int
    reason: str = ''


@dataclasses.dataclass
class _Ride:
    ride_id: str
    pickup: Stop
    dropoff: Stop
    events: list[Event] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Leg:
    """The cached path to one stop, its cumulative drive time and where the car was on it."""

    path: ReferencePath | None
    time_s: np.ndarray | None
    planned_ns: int
    s_hint_m: float | None = None


def _to_ns(t_s: float, name: str = 't_s') -> int:
    if isinstance(t_s, bool) or not isinstance(t_s, (int, float, np.integer, np.floating)):
        raise MissionInputError(f'{name} = {t_s!r} must be a number of seconds')
    if not math.isfinite(t_s) or abs(t_s) > _MAX_TIME_S:
        raise MissionInputError(f'{name} = {t_s!r} must be finite and plausible')
    return int(round(float(t_s) * _NS_PER_S))


def _pose3(value: Any, name: str) -> tuple[float, float, float] | str:
    """(x, y, yaw) as floats, or the reason it is not a finite pose."""
    try:
        x, y, yaw = (float(v) for v in value)
    except (TypeError, ValueError):
        return f'{name} = {value!r} is not an (x, y, yaw) pose'
    if not all(math.isfinite(v) for v in (x, y, yaw)):
        return f'{name} = ({x}, {y}, {yaw}) is not finite'
    return (x, y, yaw)


def _drive_time(path: ReferencePath) -> np.ndarray:
    """Cumulative time [s] (N,) along a path at its speed limits."""
    if len(path.s_m) < 2:
        return np.zeros(len(path.s_m))
    speed = np.maximum(path.speed_limit_mps[:-1], 0.5)  # an unset limit must not stall ETA
    return np.concatenate(([0.0], np.cumsum(np.diff(path.s_m) / speed)))


class TimedRequests:
    """Topic ride requests waiting for the odometry tick they are due at.

    A request stamped t is due at the first odometry stamped >= t + delay, so under lock-step
    simulation (or replay) every run takes it at the same tick, whenever the message itself
    happened to arrive. One that arrives after that tick has passed is taken at the next
    odometry and counted `late` (a zero stamp, "now", is never late); one due further ahead of
    the odometry clock than `max_future_ns` (a skewed dispatcher clock) is taken at once and
    counted in `future`. All times are integer nanoseconds.
    """

    def __init__(self, delay_ns: int, max_future_ns: int) -> None:
        self.delay_ns = delay_ns
        self.max_future_ns = max_future_ns
        self._items: list[tuple[int, int, Any]] = []  # (due_ns, arrival order, request)
        self._arrivals = 0
        self.late = 0
        self.future = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, stamp_ns: int, request: Any, last_odometry_ns: int | None) -> None:
        due_ns = stamp_ns + self.delay_ns
        if last_odometry_ns is not None and due_ns <= last_odometry_ns:
            if stamp_ns > 0:
                self.late += 1
            due_ns = last_odometry_ns  # the next odometry takes it
        self._items.append((due_ns, self._arrivals, request))
        self._arrivals += 1

    def due(self, odometry_ns: int) -> list[Any]:
        """Requests to take at this odometry, by due time then arrival order."""
        ready, waiting = [], []
        for item in self._items:
            if item[0] <= odometry_ns:
                ready.append(item)
            elif item[0] > odometry_ns + self.max_future_ns:
                self.future += 1
                ready.append(item)
            else:
                waiting.append(item)
        self._items = waiting
        return [request for _, _, request in sorted(ready, key=lambda item: item[:2])]


class MissionManager:
    """Ride queue and state machine on one Town (see the module docstring).

    request_ride validates and queues; update advances with every odometry sample;
    doors_closed ends a dwell early; abort ends the active ride.
    """

    def __init__(self, params: MissionParams, town: Town, front_m: float = 0.0):
        """front_m: base_link to the front bumper [m] (stops must leave it clear of stop
        lines)."""
        self.params = params
        self.town = town
        self.front_m = float(front_m)
        self._queue: collections.deque[_Ride] = collections.deque()
        self._active: _Ride | None = None
        self._state = IDLE
        self._state_since_ns = 0
        self._hold_since_ns: int | None = None
        self._doors_ns: int | None = None
        self._last_ns: int | None = None
        self._ego: tuple[float, float, float] | None = None
        self._legs: dict[tuple[str, str], _Leg] = {}
        self._history: dict[str, tuple[Event, ...]] = {}
        self._last_key: tuple | None = None
        self._terminal_reported = False
        self._reason = ''
        self._output = MissionOutput('', IDLE, None, -1, 0.0, 0.0, False, (), 0)

    # -- queries ---------------------------------------------------------------------------
    @property
    def state(self) -> int:
        return self._state

    @property
    def active_ride_id(self) -> str:
        return self._active.ride_id if self._active is not None else ''

    @property
    def queued_ride_ids(self) -> tuple[str, ...]:
        return tuple(ride.ride_id for ride in self._queue)

    @property
    def output(self) -> MissionOutput:
        """The output of the last update (IDLE before the first)."""
        return self._output

    def ride_log(self, ride_id: str) -> tuple[Event, ...]:
        """(ride_id, state, t_s) events of a ride (active or finished; () if unknown)."""
        if self._active is not None and self._active.ride_id == ride_id:
            return tuple(self._active.events)
        return self._history.get(ride_id, ())

    def _known(self, ride_id: str) -> str:
        if self._active is not None and self._active.ride_id == ride_id:
            return 'active'
        if any(ride.ride_id == ride_id for ride in self._queue):
            return 'queued'
        if ride_id in self._history:
            return 'done'
        return ''

    # -- requests --------------------------------------------------------------------------
    def request_ride(self, ride_id: str, pickup: Sequence[float], dropoff: Sequence[float],
                     ego_pose: Sequence[float] | None = None) -> tuple[bool, str]:
        """Queue a ride; returns (accepted, reason), reason '' when accepted.

        pickup, dropoff, ego_pose: (x_m, y_m, yaw_rad) in map; ego_pose None when unknown.
        Rejects: empty or duplicate ride ids (queued, active or done), a full queue,
        non-finite poses, a pickup/dropoff with no matching road lane within 5 m, and rides
        with no route to the pickup (from the last queued dropoff, or the ego when nothing
        is queued) or from pickup to dropoff. An ego pose off the lanes skips the first route
        check (it is checked again when the leg starts).
        """
        if not isinstance(ride_id, str) or not ride_id:
            return False, f'ride_id = {ride_id!r} must be a non-empty string'
        known = self._known(ride_id)
        if known:
            return False, f'duplicate ride_id {ride_id!r} (already {known})'
        if len(self._queue) >= self.params.max_queued_rides:
            return False, (f'ride queue is full ({self.params.max_queued_rides} rides '
                           f'waiting)')
        poses = {}
        for name, value in (('pickup', pickup), ('dropoff', dropoff), ('ego pose', ego_pose)):
            if value is None and name == 'ego pose':
                poses[name] = None
                continue
            pose = _pose3(value, name)
            if isinstance(pose, str):
                return False, pose
            poses[name] = pose
        stops = {}
        for name in ('pickup', 'dropoff'):
            x, y, yaw = poses[name]
            try:
                lanelet_id, xy, lane_yaw = snap_to_kerbside(self.town, (x, y), yaw)
            except MapError as error:
                return False, f'{name} ({x:.2f}, {y:.2f}, yaw {yaw:.2f}): {error}'
            stops[name] = Stop(lanelet_id, float(xy[0]), float(xy[1]), lane_yaw, (x, y, yaw))
            conflict = self._stop_line_conflict(stops[name])
            if conflict:
                return False, f'{name} ({x:.2f}, {y:.2f}): {conflict}'
        origin = self._last_planned_stop()
        origin_name = 'the previous dropoff'
        if origin is None and poses['ego pose'] is not None:
            origin, origin_name = poses['ego pose'], 'the ego'
        legs = [(origin, origin_name, stops['pickup'], 'pickup'),
                (stops['pickup'].pose, 'the pickup', stops['dropoff'], 'dropoff')]
        for start, start_name, stop, stop_name in legs:
            if start is None:
                continue
            try:
                plan_route(self.town, start[:2], start[2], stop.xy, stop.yaw_rad,
                           goal_lanelet_id=stop.lanelet_id)
            except RouteNotFoundError as error:
                return False, f'unreachable: no route from {start_name} to the {stop_name}: ' \
                              f'{error}'
            except OffMapError:
                if start_name != 'the ego':
                    raise  # our own snapped stops are on the map
        self._queue.append(_Ride(ride_id, stops['pickup'], stops['dropoff']))
        return True, ''

    def _stop_line_conflict(self, stop: Stop) -> str:
        """Why a car standing at `stop` would block a stop line ('' if it does not): its
        front within stop_line_clearance_m of, or past, a stop line on its lanelet."""
        lane = self.town.lanelet(stop.lanelet_id)
        station_m = project_on_polyline(lane.centerline, stop.xy)[0]
        for line in self.town.stop_lines_on(stop.lanelet_id):
            gap_m = line.station_m - station_m - self.front_m
            if gap_m < self.params.stop_line_clearance_m:  # negative: past the line
                return (f'the standing car would reach across the stop line {gap_m:.2f} m '
                        f'ahead of its front; stop at least '
                        f'{self.params.stop_line_clearance_m - gap_m:.2f} m earlier')
        return ''

    def _last_planned_stop(self) -> tuple[float, float, float] | None:
        """Where the car will be when a newly queued ride starts (None: where it is now)."""
        if self._queue:
            return self._queue[-1].dropoff.pose
        if self._active is not None and self._state not in (COMPLETED, ABORTED):
            return self._active.dropoff.pose
        return None

    # -- events ----------------------------------------------------------------------------
    def doors_closed(self, t_s: float, ride_id: str | None = None) -> bool:
        """Doors closed / app confirmation at t_s: ends BOARDING or ALIGHTING of the active
        ride (ride_id None or matching) at the first update at or after
        max(t_s, stop start + min_dwell_s). Returns whether it applied."""
        t_ns = _to_ns(t_s)
        if self._state not in (BOARDING, ALIGHTING) or self._active is None:
            return False
        if ride_id is not None and ride_id != self._active.ride_id:
            return False
        self._doors_ns = t_ns if self._doors_ns is None else min(self._doors_ns, t_ns)
        return True

    def abort(self, reason: str, t_s: float | None = None) -> bool:
        """End the active ride as ABORTED (logged at t_s, default the last update's time);
        the next update reports it and the one after starts the next ride. Returns False
        when no ride is under way."""
        if self._active is None or self._state in (COMPLETED, ABORTED):
            return False
        t_ns = _to_ns(t_s) if t_s is not None else (self._last_ns or 0)
        self._abort(reason, max(t_ns, self._last_ns or t_ns))
        return True

    # -- the state machine -----------------------------------------------------------------
    def update(self, t_s: float, ego_x: float, ego_y: float, ego_yaw: float,
               ego_speed_mps: float) -> MissionOutput:
        """Advance to time t_s [s] with the ego's base_link pose (map) and speed [m/s].

        Raises MissionInputError (state unchanged) for non-finite values or a t_s earlier
        than the previous update's.
        """
        t_ns = _to_ns(t_s)
        values = (ego_x, ego_y, ego_yaw, ego_speed_mps)
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)
                   for v in values):
            raise MissionInputError(f'ego state {values!r} must be finite numbers')
        if self._last_ns is not None and t_ns < self._last_ns:
            raise MissionInputError(f't_s = {t_s!r} is before the previous update '
                                    f'({self._last_ns / _NS_PER_S!r} s)')
        self._last_ns = t_ns
        self._ego = (float(ego_x), float(ego_y), float(ego_yaw))
        state = self._state
        if state in (COMPLETED, ABORTED):
            if self._terminal_reported:
                self._next_ride(t_ns)
        elif state == IDLE:
            if self._queue:
                self._next_ride(t_ns)
        elif state in (TO_PICKUP, TO_DROPOFF):
            self._check_arrival(t_ns, float(ego_speed_mps))
        else:
            self._check_dwell(t_ns)
        self._output = self._make_output(t_ns)
        if self._state in (COMPLETED, ABORTED):
            self._terminal_reported = True
        return self._output

    def _enter(self, state: int, t_ns: int) -> None:
        self._state = state
        self._state_since_ns = t_ns
        self._hold_since_ns = None
        self._doors_ns = None
        if self._active is not None:
            self._active.events.append((self._active.ride_id, state, t_ns / _NS_PER_S))
        if state in (COMPLETED, ABORTED):
            self._terminal_reported = False
            if self._active is not None:
                self._history[self._active.ride_id] = tuple(self._active.events)

    def _abort(self, reason: str, t_ns: int) -> None:
        self._reason = reason
        self._enter(ABORTED, t_ns)

    def _next_ride(self, t_ns: int) -> None:
        if self._active is not None:
            self._legs = {k: v for k, v in self._legs.items() if k[0] != self._active.ride_id}
        self._active = None
        self._reason = ''
        if not self._queue:
            self._enter(IDLE, t_ns)
            return
        self._active = self._queue.popleft()
        self._enter(TO_PICKUP, t_ns)
        self._start_leg('pickup', self._ego, t_ns)

    def _start_leg(self, which: str, origin: tuple[float, float, float] | None,
                   t_ns: int) -> None:
        """Plan (and cache) the path to the active ride's `which` stop; abort if the stop
        cannot be reached."""
        assert self._active is not None
        stop = getattr(self._active, which)
        key = (self._active.ride_id, which)
        candidates = [origin] if origin is not None else []
        if which == 'dropoff':
            candidates.append(self._active.pickup.pose)  # the car stands there
        leg = _Leg(None, None, t_ns)
        for start in candidates:
            try:
                route = plan_route(self.town, start[:2], start[2], stop.xy, stop.yaw_rad,
                                   goal_lanelet_id=stop.lanelet_id)
            except OffMapError:
                continue  # e.g. the car stands beside the lanes: retried later
            except RouteNotFoundError as error:
                self._abort(f'no route to the {which}: {error}', t_ns)
                return
            path = build_reference_path(self.town, route, start[:2], start[2], stop.xy)
            leg = _Leg(path, _drive_time(path), t_ns, 0.0)
            break
        self._legs[key] = leg

    def _check_arrival(self, t_ns: int, speed_mps: float) -> None:
        assert self._active is not None and self._ego is not None
        stop = self._active.pickup if self._state == TO_PICKUP else self._active.dropoff
        distance = math.hypot(self._ego[0] - stop.x_m, self._ego[1] - stop.y_m)
        if distance > self.params.arrival_tolerance_m \
                or abs(speed_mps) >= self.params.stopped_speed_mps:
            self._hold_since_ns = None
            return
        if self._hold_since_ns is None:
            self._hold_since_ns = t_ns
        if t_ns - self._hold_since_ns < _to_ns(self.params.arrival_hold_s):
            return
        if self._state == TO_PICKUP:
            self._enter(BOARDING, t_ns)
            # Plan the onward leg now: BOARDING reports its ETA and an unreachable dropoff
            # ends the ride before the passenger is asked to board.
            self._start_leg('dropoff', self._ego, t_ns)
        else:
            self._enter(ALIGHTING, t_ns)

    def _dwell_end_ns(self) -> int:
        dwell_s = (self.params.boarding_dwell_s if self._state == BOARDING
                   else self.params.alighting_dwell_s)
        end_ns = self._state_since_ns + _to_ns(dwell_s)
        if self._doors_ns is not None:
            earliest_ns = self._state_since_ns + _to_ns(self.params.min_dwell_s)
            end_ns = min(end_ns, max(self._doors_ns, earliest_ns))
        return end_ns

    def _check_dwell(self, t_ns: int) -> None:
        if t_ns < self._dwell_end_ns():
            return
        if self._state == BOARDING:
            self._enter(TO_DROPOFF, t_ns)
            if (self._active.ride_id, 'dropoff') not in self._legs:
                self._start_leg('dropoff', self._ego, t_ns)
        else:
            self._enter(COMPLETED, t_ns)

    # -- output ----------------------------------------------------------------------------
    def _leg_progress(self, which: str, t_ns: int) -> tuple[float, float]:
        """(remaining distance [m], drive time [s]) from the ego to the `which` stop."""
        assert self._active is not None and self._ego is not None
        key = (self._active.ride_id, which)
        stop = getattr(self._active, which)
        leg = self._legs.get(key)
        ego_xy = np.array(self._ego[:2])
        due = leg is None or t_ns - leg.planned_ns >= _to_ns(self.params.replan_period_s)
        if leg is not None and leg.path is not None:
            _, lateral = leg.path.project(ego_xy, leg.s_hint_m)
            if abs(lateral) > self.params.off_route_m and due:
                self._replan(which, t_ns)
                leg = self._legs[key]
        elif due and self._state in (TO_PICKUP, TO_DROPOFF):
            self._start_leg(which, self._ego, t_ns)
            if self._state == ABORTED:
                return 0.0, 0.0
            leg = self._legs[key]
        if leg is None or leg.path is None or leg.time_s is None:
            # Not on the map yet: straight-line estimate at the stop's speed limit.
            distance = float(np.hypot(*(ego_xy - stop.xy)))
            limit = self.town.lanelets[stop.lanelet_id].speed_limit_kph / 3.6
            return distance, distance / max(limit, 0.5)
        s, _ = leg.path.project(ego_xy, leg.s_hint_m)
        leg.s_hint_m = s
        path = leg.path
        s = min(s, path.goal_s_m)
        remaining = path.goal_s_m - s
        time_s = float(np.interp(path.goal_s_m, path.s_m, leg.time_s)
                       - np.interp(s, path.s_m, leg.time_s))
        return remaining, max(time_s, 0.0)

    def _replan(self, which: str, t_ns: int) -> None:
        """Replan a leg from the ego after it left the path; keep the old path on failure."""
        assert self._active is not None and self._ego is not None
        key = (self._active.ride_id, which)
        stop = getattr(self._active, which)
        old = self._legs[key]
        try:
            route = plan_route(self.town, self._ego[:2], self._ego[2], stop.xy, stop.yaw_rad,
                               goal_lanelet_id=stop.lanelet_id)
            path = build_reference_path(self.town, route, self._ego[:2], self._ego[2],
                                        stop.xy)
            self._legs[key] = _Leg(path, _drive_time(path), t_ns, 0.0)
        except MapError:
            self._legs[key] = dataclasses.replace(old, planned_ns=t_ns)

    def _make_output(self, t_ns: int) -> MissionOutput:
        ride = self._active
        state = self._state
        goal: tuple[float, float, float] | None = None
        goal_lanelet_id = -1
        remaining_m = eta_s = 0.0
        if ride is not None and state in (TO_PICKUP, BOARDING, TO_DROPOFF, ALIGHTING):
            stop = ride.pickup if state in (TO_PICKUP, BOARDING) else ride.dropoff
            goal, goal_lanelet_id = stop.pose, stop.lanelet_id
            if state in (TO_PICKUP, TO_DROPOFF):
                remaining_m, eta_s = self._leg_progress(
                    'pickup' if state == TO_PICKUP else 'dropoff', t_ns)
            else:
                dwell_left_s = max(0, self._dwell_end_ns() - t_ns) / _NS_PER_S
                eta_s = dwell_left_s
                if state == BOARDING:
                    remaining_m, drive_s = self._leg_progress('dropoff', t_ns)
                    eta_s += drive_s
        if self._state != state:  # a replan aborted the ride just now
            return self._make_output(t_ns)
        ride_id = ride.ride_id if ride is not None else ''
        key = (ride_id, state, goal)
        changed = key != self._last_key
        self._last_key = key
        return MissionOutput(
            ride_id=ride_id, state=state, goal=goal, goal_lanelet_id=goal_lanelet_id,
            remaining_distance_m=float(remaining_m), eta_s=float(eta_s), changed=changed,
            events=tuple(ride.events) if ride is not None else (),
            queued_rides=len(self._queue),
            reason=self._reason if state == ABORTED else '')
