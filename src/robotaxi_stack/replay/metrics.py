"""Closed-loop evaluation metrics over numpy time series, and result.json (ARCHITECTURE.md 6).

Pure functions: the scenario runner extracts arrays from the recording (sim time in seconds, map
frame in metres) and calls these. Nothing here reads bags or imports ROS.

- Safety: oriented box footprints, exact convex-polygon overlap (separating axes) and distance
  (point-to-segment minima) between the ego and every actor, vectorised over time and actors.
- Service: stop errors of boarding/alighting stops, completed rides, MRM events, ride time
  over free-flow time (computed by replay/free_flow.py, checked here).
- Comfort: longitudinal acceleration and jerk, lateral acceleration.
- Latency: percentiles of receive time minus header stamp.
- Perception/tracking/prediction: detection AP per class, CLEAR MOT (MOTA, ID switches),
  minADE/minFDE at 3 s over the top-k modes with miss rate.
- `build_result` assembles result.json with `passed` and human-readable `failures`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.signal import savgol_filter

from robotaxi_stack.sim.actors import box_corners as _box_corners_7
from robotaxi_stack.sim.scenario import PERCEPTION_CLASS_KEYS, Expect

# Index = robotaxi_msgs/MissionStatus state constant.
MISSION_STATES = ('IDLE', 'TO_PICKUP', 'BOARDING', 'TO_DROPOFF', 'ALIGHTING', 'COMPLETED',
                  'ABORTED')
MISSION_BOARDING = 2
MISSION_ALIGHTING = 4
MISSION_COMPLETED = 5
# Index = robotaxi_msgs/MrmState state and behavior constants.
MRM_STATES = ('NORMAL', 'MRM_OPERATING', 'MRM_SUCCEEDED', 'MRM_FAILED')
MRM_BEHAVIORS = ('none', 'comfortable_stop', 'emergency_stop', 'pull_over')

# Pairs of boxes processed per vectorised batch: bounds temporary memory (tens of MB).
_PAIR_BATCH = 16384
_EPS = 1e-9


class MetricsError(ValueError):
    """Invalid metric input (shape, NaN/inf, ordering); the message names the argument."""


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def _array(name: str, value: Any, ndim: int | None = None, tail: tuple[int, ...] = (),
           finite: bool = True) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if ndim is not None and arr.ndim != ndim:
        raise MetricsError(f'{name}: expected {ndim} dimensions, got shape {arr.shape}')
    if tail and arr.shape[arr.ndim - len(tail):] != tail:
        raise MetricsError(f'{name}: expected shape (..., {", ".join(map(str, tail))}), '
                           f'got {arr.shape}')
    if finite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise MetricsError(f'{name}: non-finite value {arr[tuple(bad)]} at index {tuple(bad)}')
    return arr


def _times(name: str, value: Any, min_len: int = 1) -> np.ndarray:
    t = _array(name, value, ndim=1)
    if t.size < min_len:
        raise MetricsError(f'{name}: expected at least {min_len} samples, got {t.size}')
    steps = np.diff(t)
    if np.any(steps <= 0.0):
        i = int(np.flatnonzero(steps <= 0.0)[0])
        raise MetricsError(f'{name}: times must increase strictly, got {t[i + 1]} after {t[i]} '
                           f'at index {i + 1}')
    return t


def _same_length(t: np.ndarray, **arrays: np.ndarray) -> None:
    for name, arr in arrays.items():
        if arr.shape[0] != t.shape[0]:
            raise MetricsError(f'{name}: expected {t.shape[0]} samples like the times, got '
                               f'{arr.shape[0]}')


# --------------------------------------------------------------------------------------------
# Footprints and convex polygon geometry
# --------------------------------------------------------------------------------------------

def box_corners(x: Any, y: Any, yaw: Any, length: Any, width: Any) -> np.ndarray:
    """Corners of oriented boxes, counter-clockwise from rear-right.

    x, y, yaw, length, width: broadcastable arrays (m, m, rad, m, m); (x, y) is the box centre.
    Returns (..., 4, 2) corner positions in the frame of (x, y).
    """
    x, y, yaw, length, width = np.broadcast_arrays(
        *(_array(name, v) for name, v in
          (('x', x), ('y', y), ('yaw', yaw), ('length', length), ('width', width))))
    if np.any(length <= 0.0) or np.any(width <= 0.0):
        raise MetricsError('box_corners: length and width must be > 0')
    # The simulator's footprint function, on its (M, 7) box rows; z and height do not matter.
    flat = np.stack([x.ravel(), y.ravel(), np.zeros(x.size), yaw.ravel(), length.ravel(),
                     width.ravel(), np.ones(x.size)], axis=-1)
    return _box_corners_7(flat).reshape(x.shape + (4, 2))


def ego_footprint(x: Any, y: Any, yaw: Any, length_m: float, width_m: float,
                  center_offset_m: float) -> np.ndarray:
    """Ego box corners from base_link (rear-axle centre) poses.

    The box centre lies `center_offset_m` ahead of base_link along the heading:
    wheelbase/2 + (front_overhang - rear_overhang)/2 for a vehicle parameter set.
    Returns (..., 4, 2) as `box_corners`.
    """
    x, y, yaw = np.broadcast_arrays(_array('x', x), _array('y', y), _array('yaw', yaw))
    return box_corners(x + center_offset_m * np.cos(yaw), y + center_offset_m * np.sin(yaw),
                       yaw, length_m, width_m)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _edge_normals(poly: np.ndarray) -> np.ndarray:
    edges = np.roll(poly, -1, axis=-2) - poly
    return np.stack((-edges[..., 1], edges[..., 0]), axis=-1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether convex polygons overlap with positive area (touching is not overlap).

    a: (K, N, 2), b: (K, P, 2) vertices in order (either winding). Returns (K,) bool.
    Separating axis theorem over the edge normals of both polygons.
    """
    axes = np.concatenate((_edge_normals(a), _edge_normals(b)), axis=-2)  # (K, N+P, 2)
    proj_a = np.einsum('kad,kvd->kav', axes, a)
    proj_b = np.einsum('kad,kvd->kav', axes, b)
    norm = np.linalg.norm(axes, axis=-1)
    scale = norm * _EPS
    separated = ((proj_a.max(-1) <= proj_b.min(-1) + scale)
                 | (proj_b.max(-1) <= proj_a.min(-1) + scale))
    return ~np.any(separated & (norm > 0.0), axis=-1)  # a repeated vertex gives no axis


def _point_segment_distance(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Minimum distance from each of (K, V, 2) points to the edges of (K, E, 2) polygons: (K,)."""
    start = poly[:, None, :, :]
    edge = (np.roll(poly, -1, axis=-2) - poly)[:, None, :, :]
    offset = points[:, :, None, :] - start  # (K, V, E, 2)
    length2 = np.sum(edge * edge, axis=-1)
    t = np.clip(np.sum(offset * edge, axis=-1) / np.maximum(length2, _EPS), 0.0, 1.0)
    gap = offset - t[..., None] * edge
    return np.sqrt(np.min(np.sum(gap * gap, axis=-1), axis=(1, 2)))


def convex_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact distance between convex polygons, 0 where they overlap or touch.

    a: (K, N, 2), b: (K, P, 2). Returns (K,) metres. Between disjoint convex polygons the
    closest pair of boundary points always involves a vertex of one polygon, so the distance is
    the minimum of vertex-to-edge distances in both directions.
    """
    return _distance_and_overlap(a, b)[0]


def _distance_and_overlap(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _array('a', a, ndim=3, tail=(2,))
    b = _array('b', b, ndim=3, tail=(2,))
    if a.shape[0] != b.shape[0]:
        raise MetricsError(f'convex_distance: {a.shape[0]} polygons vs {b.shape[0]}')
    dist = np.empty(a.shape[0])
    overlap = np.empty(a.shape[0], dtype=bool)
    for lo in range(0, a.shape[0], _PAIR_BATCH):
        batch = slice(lo, lo + _PAIR_BATCH)
        pa, pb = a[batch], b[batch]
        overlap[batch] = boxes_overlap(pa, pb)
        gap = np.minimum(_point_segment_distance(pa, pb), _point_segment_distance(pb, pa))
        dist[batch] = np.where(overlap[batch], 0.0, gap)
    return dist, overlap


@dataclass(frozen=True)
class CollisionEvent:
    """One contiguous overlap of the ego with an actor: first and last overlapping sample time."""

    t_s: float
    actor_id: str
    end_t_s: float


def collisions_and_clearance(times_s: Any, ego_boxes: Any, actor_boxes: Any, actor_valid: Any,
                             actor_ids: Sequence[str]
                             ) -> tuple[list[CollisionEvent], float | None]:
    """Collisions and minimum clearance between the ego footprint and actor boxes.

    times_s: (T,) sim time; ego_boxes: (T, 4, 2); actor_boxes: (T, M, 4, 2) (any values where
    invalid); actor_valid: (T, M) bool, true where the actor exists at that time;
    actor_ids: M ids. Returns (collision events sorted by time, minimum ego-actor distance in m
    over valid samples, 0 on contact; None when no actor is ever valid).
    """
    t = _times('times_s', times_s)
    ego = _array('ego_boxes', ego_boxes, ndim=3, tail=(4, 2))
    valid = np.asarray(actor_valid, dtype=bool)
    boxes = _array('actor_boxes', actor_boxes, ndim=4, tail=(4, 2), finite=False)
    _same_length(t, ego_boxes=ego, actor_boxes=boxes, actor_valid=valid)
    if valid.shape != boxes.shape[:2] or len(actor_ids) != boxes.shape[1]:
        raise MetricsError(f'actor_valid {valid.shape} and actor_ids ({len(actor_ids)}) must '
                           f'match actor_boxes {boxes.shape[:2]}')
    ti, mi = np.nonzero(valid)
    if ti.size == 0:
        return [], None
    pair_boxes = boxes[ti, mi]
    if not np.all(np.isfinite(pair_boxes)):
        raise MetricsError('actor_boxes: non-finite corners where actor_valid is true')
    # Exact geometry only where it can matter: a pair whose bounding circles are farther apart
    # than some pair's centres can neither overlap nor hold the minimum clearance.
    ego_pairs = ego[ti]
    centre_a, centre_b = ego_pairs.mean(axis=1), pair_boxes.mean(axis=1)
    radius_a = np.linalg.norm(ego_pairs - centre_a[:, None], axis=-1).max(axis=1)
    radius_b = np.linalg.norm(pair_boxes - centre_b[:, None], axis=-1).max(axis=1)
    centre_dist = np.linalg.norm(centre_a - centre_b, axis=-1)
    near = np.flatnonzero(centre_dist - radius_a - radius_b <= centre_dist.min())
    dist, overlap = _distance_and_overlap(ego_pairs[near], pair_boxes[near])
    hit = np.zeros(valid.shape, dtype=bool)
    hit[ti[near], mi[near]] = overlap  # contact without overlap is clearance 0, not a collision
    # Rising/falling edges of each actor's overlap flags delimit collision events.
    edges = np.diff(np.pad(hit.astype(np.int8), ((1, 1), (0, 0))), axis=0)
    starts_t, starts_m = np.nonzero(edges == 1)
    ends_t, ends_m = np.nonzero(edges == -1)
    start_order = np.lexsort((starts_t, starts_m))
    end_order = np.lexsort((ends_t, ends_m))
    events = [CollisionEvent(float(t[s]), str(actor_ids[m]), float(t[e - 1]))
              for s, m, e in zip(starts_t[start_order], starts_m[start_order],
                                 ends_t[end_order])]
    events.sort(key=lambda event: (event.t_s, event.actor_id))
    return events, float(dist.min())


# --------------------------------------------------------------------------------------------
# Rides, stops, MRM
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StopMeasurement:
    """A boarding (pickup) or alighting (dropoff) stop and its base_link position error."""

    ride_id: str
    stop: str
    t_start_s: float
    t_end_s: float
    error_m: float
    standing: bool  # false: the vehicle never stood still in the period (error over all samples)


def stop_errors(times_s: Any, ego_xy: Any, ego_speed_mps: Any, status_times_s: Any,
                status_ride_ids: Sequence[str], status_states: Any,
                requested_stops: Mapping[str, tuple[Any, Any]],
                standstill_mps: float = 0.1) -> list[StopMeasurement]:
    """Stop errors of every BOARDING / ALIGHTING period of the mission status timeline.

    times_s (T,), ego_xy (T, 2) base_link position, ego_speed_mps (T,): odometry.
    status_times_s (S,), status_ride_ids (S,), status_states (S,) MissionStatus state codes:
    the mission status messages. requested_stops: ride_id -> (pickup_xy, dropoff_xy).
    A period runs from the first status with (ride, BOARDING|ALIGHTING) to the next status with
    another (ride, state), or to the last odometry sample. Its error is the largest distance
    between the requested position and base_link over the samples where |speed| <=
    standstill_mps (all samples of the period if the vehicle never stands; the sample nearest
    to the period start if the period holds none).
    """
    t = _times('times_s', times_s)
    xy = _array('ego_xy', ego_xy, ndim=2, tail=(2,))
    speed = _array('ego_speed_mps', ego_speed_mps, ndim=1)
    _same_length(t, ego_xy=xy, ego_speed_mps=speed)
    st = _times('status_times_s', status_times_s, min_len=0)
    states = np.asarray(status_states, dtype=int).reshape(-1)
    if states.shape[0] != st.shape[0] or len(status_ride_ids) != st.shape[0]:
        raise MetricsError('status_ride_ids and status_states must match status_times_s')
    key = [(str(r), int(s)) for r, s in zip(status_ride_ids, states)]
    # Runs of equal (ride, state): the status repeats at 1 Hz within one period.
    runs = [i for i in range(len(key)) if i == 0 or key[i] != key[i - 1]]
    out = []
    for n, i in enumerate(runs):
        ride_id, state = key[i]
        if state not in (MISSION_BOARDING, MISSION_ALIGHTING):
            continue
        if ride_id not in requested_stops:
            raise MetricsError(f'requested_stops: no stop for ride {ride_id!r}')
        stop = 'pickup' if state == MISSION_BOARDING else 'dropoff'
        target = _array(f'requested_stops[{ride_id!r}]', requested_stops[ride_id][
            0 if stop == 'pickup' else 1]).reshape(2)
        last = n + 1 == len(runs)
        t_end = t[-1] if last else st[runs[n + 1]]
        in_period = (t >= st[i]) & ((t <= t_end) if last else (t < t_end))
        standing = in_period & (np.abs(speed) <= standstill_mps)
        samples = standing if standing.any() else in_period
        if not samples.any():
            samples = np.zeros_like(in_period)
            samples[np.argmin(np.abs(t - st[i]))] = True
        error = np.hypot(*(xy[samples] - target).T).max()
        out.append(StopMeasurement(ride_id, stop, float(st[i]), float(t_end), float(error),
                                   bool(standing.any())))
    return out


def rides_completed(status_ride_ids: Sequence[str], status_states: Any) -> int:
    """Number of distinct rides that reached COMPLETED in the mission status messages."""
    states = np.asarray(status_states, dtype=int).reshape(-1)
    if states.shape[0] != len(status_ride_ids):
        raise MetricsError('status_ride_ids and status_states must have the same length')
    return len({str(r) for r, s in zip(status_ride_ids, states) if s == MISSION_COMPLETED})


def mrm_events(times_s: Any, states: Any, behaviors: Any,
               reasons: Sequence[str] | None = None) -> list[dict]:
    """MRM episodes from MrmState messages: one event per entry into a non-NORMAL state and per
    behavior change while not NORMAL.

    times_s (S,), states (S,), behaviors (S,) MrmState codes; reasons (S,) optional strings.
    Returns [{'t_s', 'state', 'behavior', 'reason'}] with names (MRM_STATES, MRM_BEHAVIORS).
    """
    t = _times('times_s', times_s, min_len=0)
    state = np.asarray(states, dtype=int).reshape(-1)
    behavior = np.asarray(behaviors, dtype=int).reshape(-1)
    if state.shape != t.shape or behavior.shape != t.shape or (
            reasons is not None and len(reasons) != t.size):
        raise MetricsError('states, behaviors and reasons must match times_s')
    for name, codes, table in (('states', state, MRM_STATES),
                               ('behaviors', behavior, MRM_BEHAVIORS)):
        if np.any((codes < 0) | (codes >= len(table))):
            raise MetricsError(f'{name}: unknown code in {np.unique(codes).tolist()}')
    active = state != 0
    prev_active = np.concatenate(([False], active[:-1]))
    prev_behavior = np.concatenate(([-1], behavior[:-1]))
    starts = np.flatnonzero(active & (~prev_active | (behavior != prev_behavior)))
    return [{'t_s': float(t[i]), 'state': MRM_STATES[state[i]],
             'behavior': MRM_BEHAVIORS[behavior[i]],
             'reason': '' if reasons is None else str(reasons[int(i)])} for i in starts]


# --------------------------------------------------------------------------------------------
# Comfort
# --------------------------------------------------------------------------------------------

def _uniform(t: np.ndarray) -> tuple[np.ndarray, float]:
    dt = float(np.median(np.diff(t)))
    n = int(math.floor((t[-1] - t[0]) / dt + 1e-9)) + 1
    return t[0] + dt * np.arange(n), dt


def _savgol(values: np.ndarray, dt: float, window_s: float, polyorder: int,
            deriv: int) -> np.ndarray:
    window = max(polyorder + 2, int(round(window_s / dt)))
    window += 1 - window % 2
    if window > values.size:
        window = values.size - (1 - values.size % 2)
    if window <= polyorder:
        raise MetricsError(f'need at least {polyorder + 2} samples for a smoothed derivative, '
                           f'got {values.size}')
    return savgol_filter(values, window, polyorder, deriv=deriv, delta=dt, mode='interp')


def longitudinal_profiles(times_s: Any, speed_mps: Any, accel_mps2: Any = None,
                          window_s: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed longitudinal acceleration and jerk at the given times.

    times_s (T,), speed_mps (T,), accel_mps2 (T,) optional measured/commanded acceleration.
    Returns (accel_mps2 (T,), jerk_mps3 (T,)). Why filtered: finite differences of 50 Hz
    odometry amplify noise by 1/dt per derivative (a 1 cm/s speed ripple becomes 25 m/s^3 of
    jerk), so derivatives are Savitzky-Golay fits over `window_s` on a uniform resampling:
    cubic for acceleration and jerk from speed (exact for cubic speed profiles), quadratic for
    jerk from an acceleration channel, which is preferred when available (one derivative less).
    """
    t = _times('times_s', times_s, min_len=2)
    speed = _array('speed_mps', speed_mps, ndim=1)
    _same_length(t, speed_mps=speed)
    if window_s <= 0.0 or not math.isfinite(window_s):
        raise MetricsError(f'window_s: expected > 0, got {window_s}')
    grid, dt = _uniform(t)
    if accel_mps2 is None:
        v = np.interp(grid, t, speed)
        accel = _savgol(v, dt, window_s, 3, 1)
        jerk = _savgol(v, dt, window_s, 3, 2)
    else:
        a_in = _array('accel_mps2', accel_mps2, ndim=1)
        _same_length(t, accel_mps2=a_in)
        a = np.interp(grid, t, a_in)
        accel = _savgol(a, dt, window_s, 2, 0)
        jerk = _savgol(a, dt, window_s, 2, 1)
    return np.interp(t, grid, accel), np.interp(t, grid, jerk)


def lateral_accel(times_s: Any, speed_mps: Any, yaw_rate_rps: Any = None, yaw_rad: Any = None,
                  window_s: float = 0.5) -> np.ndarray:
    """Lateral acceleration v * yaw_rate (m/s^2, (T,)), smoothed over `window_s`.

    Give the measured yaw rate (odometry twist.angular.z) or, failing that, the yaw angle, which
    is unwrapped and differentiated with a quadratic Savitzky-Golay fit.
    """
    t = _times('times_s', times_s, min_len=2)
    speed = _array('speed_mps', speed_mps, ndim=1)
    _same_length(t, speed_mps=speed)
    grid, dt = _uniform(t)
    if yaw_rate_rps is not None:
        rate_in = _array('yaw_rate_rps', yaw_rate_rps, ndim=1)
        _same_length(t, yaw_rate_rps=rate_in)
        rate = np.interp(grid, t, rate_in)
    elif yaw_rad is not None:
        yaw = _array('yaw_rad', yaw_rad, ndim=1)
        _same_length(t, yaw_rad=yaw)
        rate = _savgol(np.interp(grid, t, np.unwrap(yaw)), dt, window_s, 2, 1)
    else:
        raise MetricsError('lateral_accel: give yaw_rate_rps or yaw_rad')
    lat = _savgol(np.interp(grid, t, speed) * rate, dt, window_s, 2, 0)
    return np.interp(t, grid, lat)


@dataclass(frozen=True)
class ComfortMetrics:
    """Ride comfort summary: maxima and 95th percentile of absolute values."""

    max_abs_accel_mps2: float
    max_abs_jerk_mps3: float
    p95_abs_jerk_mps3: float
    max_abs_lat_accel_mps2: float


def jerk_and_lat_accel(times_s: Any, speed_mps: Any, *, accel_mps2: Any = None,
                       yaw_rate_rps: Any = None, yaw_rad: Any = None,
                       window_s: float = 0.5) -> ComfortMetrics:
    """Comfort metrics from odometry (see `longitudinal_profiles`, `lateral_accel`)."""
    accel, jerk = longitudinal_profiles(times_s, speed_mps, accel_mps2, window_s)
    lat = lateral_accel(times_s, speed_mps, yaw_rate_rps, yaw_rad, window_s)
    return ComfortMetrics(float(np.max(np.abs(accel))), float(np.max(np.abs(jerk))),
                          float(np.percentile(np.abs(jerk), 95)), float(np.max(np.abs(lat))))


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------

def latency_percentiles(pairs: Any) -> dict[str, float]:
    """End-to-end latency percentiles: pairs (N, 2) of [receive time s, header stamp s].

    Returns {'p50': ms, 'p99': ms} (linear interpolation between order statistics).
    """
    arr = _array('pairs', pairs, ndim=2, tail=(2,))
    if arr.shape[0] == 0:
        raise MetricsError('pairs: no samples')
    latency_ms = (arr[:, 0] - arr[:, 1]) * 1e3
    if np.any(latency_ms < 0.0):
        i = int(np.argmin(latency_ms))
        raise MetricsError(f'pairs[{i}]: received {-latency_ms[i]:.3f} ms before its stamp; '
                           'receive times and stamps must share one clock')
    p50, p99 = np.percentile(latency_ms, [50.0, 99.0])
    return {'p50': float(p50), 'p99': float(p99)}


# --------------------------------------------------------------------------------------------
# Tracking: CLEAR MOT
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MotFrame:
    """One evaluation instant: ground-truth and tracker objects (ids, BEV centres in m)."""

    gt_ids: Sequence[Any]
    gt_xy: Any
    hyp_ids: Sequence[Any]
    hyp_xy: Any


@dataclass(frozen=True)
class MotMetrics:
    """CLEAR MOT totals; mota is None without ground truth, motp_m None without matches."""

    mota: float | None
    motp_m: float | None
    id_switches: int
    misses: int
    false_positives: int
    num_gt: int
    num_matches: int


def clear_mot(frames: Iterable[MotFrame], max_distance_m: float = 2.0) -> MotMetrics:
    """CLEAR MOT (Bernardin & Stiefelhagen 2008) with centre-distance gating.

    Per frame, correspondences of the previous frame are kept while both objects exist and stay
    within `max_distance_m`; the remaining objects are matched by minimum total distance
    (Hungarian, scipy linear_sum_assignment). A ground-truth object matched to a tracker id
    other than the one it was last matched to counts as an ID switch.
    MOTA = 1 - (misses + false positives + ID switches) / ground-truth objects.
    """
    last_match: dict[Any, Any] = {}  # gt id -> hyp id it was last matched to (any earlier frame)
    prev_pairs: dict[Any, Any] = {}
    misses = false_pos = switches = num_gt = 0
    dist_sum = 0.0
    matches = 0
    for n, frame in enumerate(frames):
        gt_xy = _array(f'frames[{n}].gt_xy', frame.gt_xy).reshape(-1, 2)
        hyp_xy = _array(f'frames[{n}].hyp_xy', frame.hyp_xy).reshape(-1, 2)
        gt_ids, hyp_ids = list(frame.gt_ids), list(frame.hyp_ids)
        if len(gt_ids) != gt_xy.shape[0] or len(hyp_ids) != hyp_xy.shape[0]:
            raise MetricsError(f'frames[{n}]: ids and positions differ in length')
        if len(set(gt_ids)) != len(gt_ids) or len(set(hyp_ids)) != len(hyp_ids):
            raise MetricsError(f'frames[{n}]: duplicate ids in one frame')
        dist = np.hypot(*(gt_xy[:, None, :] - hyp_xy[None, :, :]).transpose(2, 0, 1)) \
            if gt_ids and hyp_ids else np.zeros((len(gt_ids), len(hyp_ids)))
        gt_index = {g: i for i, g in enumerate(gt_ids)}
        hyp_index = {h: j for j, h in enumerate(hyp_ids)}
        pairs: dict[Any, Any] = {}
        for g, h in prev_pairs.items():
            if g in gt_index and h in hyp_index and \
                    dist[gt_index[g], hyp_index[h]] <= max_distance_m:
                pairs[g] = h
        free_g = [i for i, g in enumerate(gt_ids) if g not in pairs]
        used_h = {hyp_index[h] for h in pairs.values()}
        free_h = [j for j in range(len(hyp_ids)) if j not in used_h]
        if free_g and free_h:
            sub = dist[np.ix_(free_g, free_h)]
            # Gated pairs cost more than any set of feasible pairs: feasible matches first.
            cost = np.where(sub <= max_distance_m, sub, 1e6 + sub)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if sub[r, c] <= max_distance_m:
                    g, h = gt_ids[free_g[r]], hyp_ids[free_h[c]]
                    if g in last_match and last_match[g] != h:
                        switches += 1
                    pairs[g] = h
        for g, h in pairs.items():
            last_match[g] = h
            dist_sum += float(dist[gt_index[g], hyp_index[h]])
        matches += len(pairs)
        num_gt += len(gt_ids)
        misses += len(gt_ids) - len(pairs)
        false_pos += len(hyp_ids) - len(pairs)
        prev_pairs = pairs
    mota = 1.0 - (misses + false_pos + switches) / num_gt if num_gt else None
    return MotMetrics(mota, dist_sum / matches if matches else None, switches, misses, false_pos,
                      num_gt, matches)


# --------------------------------------------------------------------------------------------
# Detection AP
# --------------------------------------------------------------------------------------------

def convex_intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Area of the intersection of convex polygons a (K, N, 2) and b (K, P, 2): (K,) m^2.

    The intersection is the convex hull of a's vertices inside b, b's vertices inside a and the
    edge-edge crossings; its candidate points are ordered by angle about their mean and summed
    with the shoelace formula (unused candidates repeat a used point and add no area).
    """
    a, b = _ccw(a), _ccw(b)

    def inside(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
        edge = np.roll(poly, -1, axis=-2) - poly
        rel = points[:, :, None, :] - poly[:, None, :, :]
        scale = np.linalg.norm(edge, axis=-1)[:, None, :]
        return np.all(_cross(edge[:, None, :, :], rel) >= -_EPS * scale, axis=-1)

    ea = np.roll(a, -1, axis=-2) - a
    eb = np.roll(b, -1, axis=-2) - b
    denom = _cross(ea[:, :, None, :], eb[:, None, :, :])  # (K, N, P)
    rel = b[:, None, :, :] - a[:, :, None, :]
    safe = np.where(np.abs(denom) > _EPS, denom, 1.0)
    s = _cross(rel, eb[:, None, :, :]) / safe
    u = _cross(rel, ea[:, :, None, :]) / safe
    crossing = (np.abs(denom) > _EPS) & (s >= 0) & (s <= 1) & (u >= 0) & (u <= 1)
    cross_pts = a[:, :, None, :] + s[..., None] * ea[:, :, None, :]
    k = a.shape[0]
    pts = np.concatenate((a, b, cross_pts.reshape(k, -1, 2)), axis=1)
    used = np.concatenate((inside(a, b), inside(b, a), crossing.reshape(k, -1)), axis=1)
    count = used.sum(axis=1)
    centre = np.einsum('kv,kvd->kd', used, pts) / np.maximum(count, 1)[:, None]
    angle = np.arctan2(pts[..., 1] - centre[:, None, 1], pts[..., 0] - centre[:, None, 0])
    order = np.argsort(np.where(used, angle, np.inf), axis=1)
    pts = np.take_along_axis(pts, order[..., None], axis=1)
    used = np.take_along_axis(used, order, axis=1)
    # Replace unused (sorted last) candidates with the first point: zero-area closing edges.
    pts = np.where(used[..., None], pts, pts[:, :1, :])
    area = 0.5 * np.abs(np.sum(_cross(pts, np.roll(pts, -1, axis=1)), axis=1))
    return np.where(count >= 3, area, 0.0)


def _ccw(poly: np.ndarray) -> np.ndarray:
    signed = np.sum(_cross(poly, np.roll(poly, -1, axis=-2)), axis=-1)
    return np.where((signed < 0)[:, None, None], poly[:, ::-1, :], poly)


def bev_iou(a_boxes: Any, b_boxes: Any) -> np.ndarray:
    """IoU of oriented BEV boxes [x, y, yaw, length, width]: a (K, 5), b (K, 5) -> (K,)."""
    a = _array('a_boxes', a_boxes, ndim=2, tail=(5,))
    b = _array('b_boxes', b_boxes, ndim=2, tail=(5,))
    pa = box_corners(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4])
    pb = box_corners(b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4])
    inter = convex_intersection_area(pa, pb)
    union = a[:, 3] * a[:, 4] + b[:, 3] * b[:, 4] - inter
    return inter / union


@dataclass(frozen=True, eq=False)
class DetectionFrame:
    """One evaluated frame: labelled ground truth and scored detections.

    gt_xy (G, 2), gt_labels (G,), det_xy (D, 2), det_labels (D,), det_scores (D,); for IoU
    matching also gt_boxes (G, 5) and det_boxes (D, 5) as [x, y, yaw, length, width].
    """

    gt_xy: Any
    gt_labels: Sequence[str]
    det_xy: Any
    det_labels: Sequence[str]
    det_scores: Any
    gt_boxes: Any = None
    det_boxes: Any = None


@dataclass(frozen=True, eq=False)
class ClassAP:
    """Average precision of one class with its precision-recall curve (in score order)."""

    label: str
    ap: float | None  # None without ground truth of this class
    precision: np.ndarray
    recall: np.ndarray
    num_gt: int
    num_det: int


def _frame_geometry(frame: DetectionFrame, n: int, match: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-object geometry of a frame: centres (N, 2) or, for IoU matching, boxes (N, 5)."""
    if match == 'center':
        return (_array(f'frames[{n}].gt_xy', frame.gt_xy).reshape(-1, 2),
                _array(f'frames[{n}].det_xy', frame.det_xy).reshape(-1, 2))
    if frame.gt_boxes is None or frame.det_boxes is None:
        raise MetricsError(f'frames[{n}]: IoU matching needs gt_boxes and det_boxes')
    return (_array(f'frames[{n}].gt_boxes', frame.gt_boxes).reshape(-1, 5),
            _array(f'frames[{n}].det_boxes', frame.det_boxes).reshape(-1, 5))


def _affinity(gt: np.ndarray, det: np.ndarray, match: str) -> np.ndarray:
    """(D, G) matching score, higher is better: minus centre distance, or BEV IoU."""
    if match == 'center':
        return -np.hypot(*(det[:, None, :2] - gt[None, :, :2]).transpose(2, 0, 1))
    d_idx, g_idx = np.meshgrid(np.arange(len(det)), np.arange(len(gt)), indexing='ij')
    return bev_iou(det[d_idx.ravel()], gt[g_idx.ravel()]).reshape(len(det), len(gt))


def detection_ap(frames: Iterable[DetectionFrame], labels: Sequence[str] | None = None,
                 match: str = 'center', max_distance_m: float = 2.0,
                 min_iou: float = 0.5) -> dict[str, ClassAP]:
    """Average precision per class over frames.

    match: 'center' (BEV centre distance <= max_distance_m) or 'iou' (BEV IoU >= min_iou).
    In each frame, detections of a class are taken in descending score and matched greedily to
    the best still-unmatched ground truth of that class that passes the criterion (true
    positive) or to none (false positive). AP is the area under the precision-recall curve with
    precision made monotone (all-point interpolation). labels: classes to report (default all
    seen in the ground truth).
    """
    if match not in ('center', 'iou'):
        raise MetricsError(f"match: expected 'center' or 'iou', got {match!r}")
    frames = list(frames)
    seen = sorted({str(label) for f in frames for label in f.gt_labels})
    labels = list(labels) if labels is not None else seen
    scores: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    tps: dict[str, list[np.ndarray]] = {label: [] for label in labels}
    num_gt = dict.fromkeys(labels, 0)
    for n, frame in enumerate(frames):
        gt_labels = np.asarray([str(v) for v in frame.gt_labels], dtype=str)
        det_labels = np.asarray([str(v) for v in frame.det_labels], dtype=str)
        det_scores = _array(f'frames[{n}].det_scores', frame.det_scores).reshape(-1)
        gt_geom, det_geom = _frame_geometry(frame, n, match)
        if det_scores.size != det_labels.size or det_geom.shape[0] != det_labels.size or \
                gt_geom.shape[0] != gt_labels.size:
            raise MetricsError(f'frames[{n}]: labels, scores and positions differ in length')
        for label in labels:
            gt_sel = np.flatnonzero(gt_labels == label)
            det_sel = np.flatnonzero(det_labels == label)
            num_gt[label] += gt_sel.size
            if det_sel.size == 0:
                continue
            order = np.argsort(-det_scores[det_sel], kind='stable')
            det_sel = det_sel[order]
            tp = np.zeros(det_sel.size, dtype=bool)
            if gt_sel.size:
                score = _affinity(gt_geom[gt_sel], det_geom[det_sel], match)
                ok = score >= (-max_distance_m if match == 'center' else min_iou)
                taken = np.zeros(gt_sel.size, dtype=bool)
                for d in range(det_sel.size):  # greedy in score order (a few per frame)
                    cand = np.where(ok[d] & ~taken, score[d], -np.inf)
                    g = int(np.argmax(cand))
                    if np.isfinite(cand[g]):
                        taken[g] = tp[d] = True
            scores[label].append(det_scores[det_sel])
            tps[label].append(tp)
    out = {}
    for label in labels:
        s = np.concatenate(scores[label]) if scores[label] else np.zeros(0)
        tp = np.concatenate(tps[label]) if tps[label] else np.zeros(0, dtype=bool)
        order = np.argsort(-s, kind='stable')
        tp_cum = np.cumsum(tp[order])
        precision = tp_cum / np.arange(1, tp.size + 1)
        recall = tp_cum / num_gt[label] if num_gt[label] else np.zeros(tp.size)
        ap = _average_precision(precision, recall) if num_gt[label] else None
        out[label] = ClassAP(label, ap, precision, recall, num_gt[label], int(tp.size))
    return out


def _average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    if precision.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate(([0.0], recall)))
    return float(np.sum(steps * envelope))


def recall_at_precision(precision: Any, recall: Any, min_precision: float) -> float:
    """Highest recall on the curve where precision >= min_precision (0 if never reached)."""
    p = _array('precision', precision, ndim=1)
    r = _array('recall', recall, ndim=1)
    if p.shape != r.shape:
        raise MetricsError('precision and recall must have the same length')
    ok = p >= min_precision
    return float(r[ok].max()) if ok.any() else 0.0


def perception_summary(per_class: Mapping[str, ClassAP],
                       min_precision: float = 0.8) -> dict[str, float]:
    """result.json perception metrics: ap_<cls> and recall_<cls> (recall at precision >=
    min_precision) for classes with ground truth; <cls> from PERCEPTION_CLASS_KEYS."""
    out = {}
    for label, result in per_class.items():
        if result.ap is None:
            continue
        key = PERCEPTION_CLASS_KEYS.get(label, label)
        out[f'ap_{key}'] = result.ap
        out[f'recall_{key}'] = recall_at_precision(result.precision, result.recall,
                                                   min_precision)
    return out


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------

def future_positions(track_times_s: Any, track_xy: Any, t0_s: float,
                     horizon_s: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth positions at t0 + horizon_s by linear interpolation of a track.

    track_times_s (N,), track_xy (N, 2), horizon_s (S,). Returns (xy (S, 2), valid (S,)):
    invalid where the time falls outside the track.
    """
    t = _times('track_times_s', track_times_s)
    xy = _array('track_xy', track_xy, ndim=2, tail=(2,))
    _same_length(t, track_xy=xy)
    query = float(t0_s) + _array('horizon_s', horizon_s, ndim=1)
    valid = (query >= t[0] - 1e-9) & (query <= t[-1] + 1e-9)
    out = np.stack((np.interp(query, t, xy[:, 0]), np.interp(query, t, xy[:, 1])), axis=-1)
    return out, valid


@dataclass(frozen=True)
class PredictionMetrics:
    """minADE/minFDE over the top-k modes up to the evaluation horizon; None if no object."""

    ade_3s_m: float | None
    fde_3s_m: float | None
    miss_rate: float | None
    num_objects: int
    num_skipped: int  # objects whose ground truth does not cover the horizon
    k: int


def prediction_errors(pred_xy: Any, pred_conf: Any, gt_xy: Any, gt_valid: Any, horizon_s: Any,
                      top_k: int = 6, mode_valid: Any = None, eval_horizon_s: float = 3.0,
                      miss_threshold_m: float = 2.0) -> PredictionMetrics:
    """minADE / minFDE at `eval_horizon_s` over the top-k most confident modes, and miss rate.

    pred_xy (N, K, S, 2) predicted positions at horizon_s (S,) seconds after the prediction
    stamp; pred_conf (N, K); mode_valid (N, K) optional (padding for fewer modes); gt_xy
    (N, S, 2), gt_valid (N, S) ground truth at the same times. horizon_s must contain
    eval_horizon_s. ADE averages steps with 0 < t <= eval_horizon_s; minADE and minFDE each
    take their best mode (nuScenes/Waymo convention). An object is a miss when minFDE >
    miss_threshold_m. Objects without valid ground truth at every evaluated step are skipped.
    """
    pred = _array('pred_xy', pred_xy, ndim=4, tail=(2,))
    n, k, s = pred.shape[:3]
    conf = _array('pred_conf', pred_conf, ndim=2)
    gt = _array('gt_xy', gt_xy, ndim=3, tail=(2,))
    valid = np.asarray(gt_valid, dtype=bool)
    horizon = _array('horizon_s', horizon_s, ndim=1)
    modes_ok = np.ones((n, k), dtype=bool) if mode_valid is None else \
        np.asarray(mode_valid, dtype=bool)
    if conf.shape != (n, k) or modes_ok.shape != (n, k) or gt.shape != (n, s, 2) or \
            valid.shape != (n, s) or horizon.shape != (s,):
        raise MetricsError(f'prediction_errors: inconsistent shapes pred {pred.shape}, conf '
                           f'{conf.shape}, gt {gt.shape}, gt_valid {valid.shape}, horizon '
                           f'{horizon.shape}')
    if top_k < 1:
        raise MetricsError(f'top_k: expected >= 1, got {top_k}')
    final = np.flatnonzero(np.isclose(horizon, eval_horizon_s, atol=1e-6))
    if final.size == 0:
        raise MetricsError(f'horizon_s: has no step at {eval_horizon_s} s')
    steps = (horizon > 1e-9) & (horizon <= eval_horizon_s + 1e-6)
    keep = np.all(valid[:, steps], axis=1) & modes_ok.any(axis=1)
    if not keep.any():
        return PredictionMetrics(None, None, None, 0, int(n), top_k)
    pred, conf, modes_ok, gt = pred[keep], conf[keep], modes_ok[keep], gt[keep]
    err = np.linalg.norm(pred - gt[:, None, :, :], axis=-1)  # (N, K, S)
    # Rank modes by confidence; invalid modes and ranks beyond k are excluded from the minima.
    rank = np.argsort(np.argsort(-np.where(modes_ok, conf, -np.inf), axis=1, kind='stable'),
                      axis=1)
    chosen = modes_ok & (rank < top_k)
    ade = np.where(chosen, err[:, :, steps].mean(axis=-1), np.inf).min(axis=1)
    fde = np.where(chosen, err[:, :, final[0]], np.inf).min(axis=1)
    return PredictionMetrics(float(ade.mean()), float(fde.mean()),
                             float(np.mean(fde > miss_threshold_m)), int(keep.sum()),
                             int(n - keep.sum()), top_k)


# --------------------------------------------------------------------------------------------
# result.json
# --------------------------------------------------------------------------------------------

def _jsonable(value: Any, path: str) -> Any:
    """Plain-JSON copy of metrics; NaN/inf are errors (JSON has no such numbers)."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f'{path}.{key}') for key, item in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f'{path}[{i}]') for i, item in enumerate(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise MetricsError(f'{path}: non-finite value {value}')
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise MetricsError(f'{path}: cannot write {type(value).__name__} to JSON')


def _lookup(metrics: Mapping, path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = metrics
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


# expectation -> (metric path in result.json metrics, comparison the measured value must pass)
_THRESHOLDS = {
    'max_abs_jerk_mps3': (('max_abs_jerk_mps3',), '<='),
    'max_abs_lat_accel_mps2': (('max_abs_lat_accel_mps2',), '<='),
    'max_e2e_latency_p99_ms': (('e2e_latency_ms', 'p99'), '<='),
    'min_mota': (('tracking', 'mota'), '>='),
    'max_id_switches': (('tracking', 'id_switches'), '<='),
    'max_ade_3s_m': (('prediction', 'ade_3s_m'), '<='),
    'max_fde_3s_m': (('prediction', 'fde_3s_m'), '<='),
}


def _check_threshold(name: str, path: tuple[str, ...], op: str, limit: float,
                     metrics: Mapping) -> str | None:
    found, measured = _lookup(metrics, path)
    where = '.'.join(path)
    if not found or measured is None:
        return f'{name}: expected {where} {op} {limit:g}, not measured'
    ok = measured <= limit if op == '<=' else measured >= limit
    return None if ok else f'{name}: expected {where} {op} {limit:g}, measured {measured:g}'


def _check_expectations(metrics: Mapping, expect: Expect) -> list[str]:
    failures = []
    if expect.rides_completed is not None:
        done = metrics.get('rides_completed')
        if done is None or done < expect.rides_completed:
            failures.append(f'rides_completed: expected >= {expect.rides_completed}, measured '
                            f'{"nothing" if done is None else done}')
    if expect.no_collision:
        found, count = _lookup(metrics, ('collisions',))
        if not found:
            failures.append('no_collision: expected no collision, collisions not measured')
        elif count:
            events = metrics.get('collision_events') or []
            first = (f' (first at t={events[0]["t_s"]:.2f} s with actor '
                     f'{events[0]["actor_id"]!r})') if events else ''
            failures.append(f'no_collision: expected no collision, measured {count} '
                            f'collision(s){first}')
    if expect.stop_error_m is not None:
        errors = metrics.get('stop_error_m')
        if errors is None or (not errors and (expect.rides_completed or 0) > 0):
            failures.append(f'stop_error_m: expected every stop within '
                            f'{expect.stop_error_m:g} m, no stop measured')
        else:
            for i, error in enumerate(errors):
                if error > expect.stop_error_m:
                    failures.append(f'stop_error_m: expected every stop within '
                                    f'{expect.stop_error_m:g} m, measured {error:.3f} m at '
                                    f'stop {i + 1} of {len(errors)}')
    if expect.mrm is not None:
        events = metrics.get('mrm_events')
        if events is None:
            failures.append(f'mrm: expected {expect.mrm}, MRM events not measured')
        elif expect.mrm == 'none' and events:
            failures.append(f'mrm: expected none, measured {events[0]["behavior"]} at '
                            f't={events[0]["t_s"]:.2f} s ({events[0].get("reason", "")})')
        elif expect.mrm == 'any' and not events:
            failures.append('mrm: expected an MRM, measured none')
        elif expect.mrm not in ('none', 'any') and not any(
                e['behavior'] == expect.mrm for e in events):
            seen = ', '.join(sorted({e['behavior'] for e in events})) or 'none'
            failures.append(f'mrm: expected {expect.mrm}, measured {seen}')
    if expect.min_clearance_m is not None:
        found, clearance = _lookup(metrics, ('min_clearance_m',))
        # None: no actor ever existed, which satisfies any clearance.
        if not found:
            failures.append(f'min_clearance_m: expected >= {expect.min_clearance_m:g} m, '
                            'not measured')
        elif clearance is not None and clearance < expect.min_clearance_m:
            failures.append(f'min_clearance_m: expected >= {expect.min_clearance_m:g} m, '
                            f'measured {clearance:.3f} m')
    for name, (path, op) in _THRESHOLDS.items():
        limit = getattr(expect, name)
        if limit is not None:
            failure = _check_threshold(name, path, op, limit, metrics)
            if failure:
                failures.append(failure)
    for key, limit in expect.min_perception:
        failure = _check_threshold(f'min_perception.{key}', ('perception', key), '>=', limit,
                                   metrics)
        if failure:
            failures.append(failure)
    if expect.max_ride_time_ratio is not None:
        failures += _check_ride_time_ratio(metrics, expect.max_ride_time_ratio)
    return failures


def _check_ride_time_ratio(metrics: Mapping, limit: float) -> list[str]:
    """Every completed ride leg within `limit` x its free-flow time (replay/free_flow.py)."""
    name = 'max_ride_time_ratio'
    legs = metrics.get('ride_legs') or []
    if not legs:  # only the summary value (or nothing) to go by
        ratio = metrics.get(name)
        if ratio is None:
            why = metrics.get('ride_time_error') or 'no completed ride leg'
            return [f'{name}: expected ride time <= {limit:g} x free-flow time, not measured '
                    f'({why})']
        return [] if ratio <= limit else [
            f'{name}: expected ride time <= {limit:g} x free-flow time, measured {ratio:.2f}']
    failures = []
    for leg in legs:
        where = f"{leg.get('ride_id')} {leg.get('leg')}"
        ratio = leg.get('ratio')
        if ratio is None:
            failures.append(f'{name}: expected ride time <= {limit:g} x free-flow time, not '
                            f"measured for {where} ({leg.get('error', 'no free-flow time')})")
        elif ratio > limit:
            failures.append(f'{name}: expected ride time <= {limit:g} x free-flow time, '
                            f"measured {ratio:.2f} for {where} ({leg['time_s']:.1f} s vs "
                            f"{leg['free_flow_s']:.1f} s free flow)")
    return failures


def build_result(scenario_name: str, metrics: Mapping[str, Any], expect: Expect) -> dict:
    """result.json content: {'scenario', 'passed', 'failures', 'metrics'} (section 6).

    metrics: the section 6 keys (collisions, min_clearance_m, rides_completed, stop_error_m,
    max_abs_jerk_mps3, max_abs_lat_accel_mps2, e2e_latency_ms {p50, p99}, mrm_events,
    perception, tracking, prediction) plus optional extras such as collision_events. Each set
    expectation whose metric is missing fails as 'not measured'. NaN/inf raise MetricsError.
    """
    clean = _jsonable(metrics, 'metrics')
    failures = _check_expectations(clean, expect)
    return {'scenario': scenario_name, 'passed': not failures, 'failures': failures,
            'metrics': clean}
