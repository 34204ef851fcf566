"""Traffic actors for the closed-loop simulator (pure core: numpy only).

Actors are boxes on flat ground with a type (car, truck, bus, bicycle, pedestrian, static), a
size [length, width, height] in metres (the type's default unless overridden) and one behaviour:

- parked: stands at its start pose.
- lane_follow: drives along a path polyline (N, 2) in the map frame, its box centre on the path
  and its yaw the path tangent, with the Intelligent Driver Model (IDM; Treiber, Hennecke &
  Helbing 2000) for the speed: target speed, time gap, minimum (jam) gap, maximum acceleration,
  comfortable deceleration. It follows the nearest leader ahead on its path: any other actor or
  the ego whose footprint intrudes into the corridor of half-width (own half width + lateral
  margin) around the path within the look-ahead. It may stop at stop lines (arc positions along
  the path; front bumper at the line), wait `stop_dwell_s`, then proceed, and it holds at the end
  of its path. Speeds never go negative; the IDM output is clipped to
  [-max_decel_mps2, max_accel_mps2].
- waypoints: `points [[t_s, x_m, y_m], ...]` with strictly increasing times, linear between
  points, at the first point before its time, holding the last point after its time; yaw from
  the direction of motion (kept while standing).

`ActorWorld` steps all actors together: the IDM of every lane-following actor is evaluated in
one vectorised pass against a snapshot taken at the start of the step (so the result does not
depend on actor order), then positions advance with the ballistic update that Treiber
recommends for IDM (exact for constant acceleration, speeds clamped at zero). Everything is
float64 numpy without randomness, so a run is deterministic.

Outputs per actor, for ground truth and sensor models: box [cx, cy, cz, yaw, length, width,
height] (map frame, centre at half height above flat ground at z = 0), velocity (vx, vy) in the
map frame and the robotaxi_msgs ObjectClass label.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Sequence

import numpy as np

LOOKAHEAD_BASE_M = 50.0
LOOKAHEAD_TIME_S = 6.0
"""A lane follower looks for leaders LOOKAHEAD_BASE_M + LOOKAHEAD_TIME_S * speed ahead."""

MAX_START_OFFSET_M = 3.0
"""A lane follower's start position may be at most this far from its path."""

STOP_SNAP_DISTANCE_M = 0.3
STOP_SNAP_SPEED_MPS = 0.25
"""IDM only creeps asymptotically up to a standing target: once the front bumper is within
STOP_SNAP_DISTANCE_M of a stop line or the path end below STOP_SNAP_SPEED_MPS, it stops."""

STOP_LINE_PASSED_M = 1.0
"""A stop line whose front-bumper distance is below -STOP_LINE_PASSED_M has been passed."""

_MIN_SEGMENT_M = 1e-6


class ActorError(ValueError):
    """An actor definition or a world input is invalid; the message names the value."""


class ActorType(str, enum.Enum):
    """Actor types of the scenario format (ARCHITECTURE.md section 6)."""

    CAR = 'car'
    TRUCK = 'truck'
    BUS = 'bus'
    BICYCLE = 'bicycle'
    PEDESTRIAN = 'pedestrian'
    STATIC = 'static'


class ObjectLabel(enum.IntEnum):
    """Class labels; values equal robotaxi_msgs/ObjectClass constants."""

    UNKNOWN = 0
    CAR = 1
    TRUCK = 2
    BUS = 3
    BICYCLE = 4
    MOTORCYCLE = 5
    PEDESTRIAN = 6


DEFAULT_SIZES_M: dict[ActorType, tuple[float, float, float]] = {
    ActorType.CAR: (4.6, 1.9, 1.5),
    ActorType.TRUCK: (7.5, 2.5, 3.2),  # rigid delivery truck / large van
    ActorType.BUS: (12.0, 2.55, 3.2),
    ActorType.BICYCLE: (1.8, 0.6, 1.7),  # with its rider
    ActorType.PEDESTRIAN: (0.5, 0.6, 1.75),
    ActorType.STATIC: (1.0, 1.0, 0.5),  # debris, a box, a traffic cone cluster
}
"""Default [length, width, height] per type in metres."""

TYPE_LABELS: dict[ActorType, ObjectLabel] = {
    ActorType.CAR: ObjectLabel.CAR,
    ActorType.TRUCK: ObjectLabel.TRUCK,
    ActorType.BUS: ObjectLabel.BUS,
    ActorType.BICYCLE: ObjectLabel.BICYCLE,
    ActorType.PEDESTRIAN: ObjectLabel.PEDESTRIAN,
    ActorType.STATIC: ObjectLabel.UNKNOWN,
}


def _finite(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ActorError(f'{name} = {value!r} is not a number') from None
    if not math.isfinite(number):
        raise ActorError(f'{name} = {number!r} is not finite')
    return number


def _positive(value: Any, name: str, allow_zero: bool = False) -> float:
    number = _finite(value, name)
    if number < 0.0 or (number == 0.0 and not allow_zero):
        raise ActorError(f'{name} = {number} must be {">= 0" if allow_zero else "> 0"}')
    return number


def _array(value: Any, name: str, columns: int) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ActorError(f'{name} is not numeric') from None
    if array.ndim != 2 or array.shape[1] != columns:
        raise ActorError(f'{name} must have shape (N, {columns}), got {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ActorError(f'{name} contains NaN or inf')
    array.setflags(write=False)
    return array


# ---------------------------------------------------------------------------------------------
# Behaviours and actor specs


@dataclasses.dataclass(frozen=True)
class ParkedBehavior:
    """Stand still at the start pose."""


@dataclasses.dataclass(frozen=True, eq=False)
class LaneFollowBehavior:
    """IDM car-following along `path_xy` (N, 2) map-frame polyline, N >= 2.

    stop_lines_s_m are arc positions along the path (from its first point) where the front
    bumper stops for stop_dwell_s; start_s_m places the box centre on the path (default: the
    projection of the actor's start position). A parameter given as None takes its default.
    """

    path_xy: np.ndarray
    target_speed_mps: float
    time_gap_s: float = 1.5
    min_gap_m: float = 2.0
    max_accel_mps2: float = 1.5
    comfort_decel_mps2: float = 2.0
    max_decel_mps2: float = 8.0
    accel_exponent: float = 4.0
    stop_lines_s_m: tuple = ()
    stop_dwell_s: float = 2.0
    lateral_margin_m: float = 0.5
    start_s_m: float | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            has_default = field.default not in (None, dataclasses.MISSING)
            if getattr(self, field.name) is None and has_default:
                object.__setattr__(self, field.name, field.default)
        path = _array(self.path_xy, 'lane_follow.path_xy', 2)
        # Repeated points (lanelet joins) would make zero-length segments.
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = np.linalg.norm(np.diff(path, axis=0), axis=1) > _MIN_SEGMENT_M
        path = path[keep]
        path.setflags(write=False)
        if len(path) < 2:
            raise ActorError('lane_follow.path_xy needs at least 2 distinct points')
        object.__setattr__(self, 'path_xy', path)
        _positive(self.target_speed_mps, 'lane_follow.target_speed_mps')
        for name in ('time_gap_s', 'min_gap_m', 'stop_dwell_s', 'lateral_margin_m'):
            object.__setattr__(self, name, _positive(getattr(self, name), f'lane_follow.{name}',
                                                     allow_zero=True))
        for name in ('target_speed_mps', 'max_accel_mps2', 'comfort_decel_mps2',
                     'max_decel_mps2', 'accel_exponent'):
            object.__setattr__(self, name, _positive(getattr(self, name), f'lane_follow.{name}'))
        if self.max_decel_mps2 < self.comfort_decel_mps2:
            raise ActorError(f'lane_follow.max_decel_mps2 = {self.max_decel_mps2} is below '
                             f'comfort_decel_mps2 = {self.comfort_decel_mps2}')
        length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        lines = []
        for index, value in enumerate(self.stop_lines_s_m):
            position = _finite(value, f'lane_follow.stop_lines_s_m[{index}]')
            if not 0.0 <= position <= length:
                raise ActorError(f'lane_follow.stop_lines_s_m[{index}] = {position} is outside '
                                 f'the path [0, {length:.3f}] m')
            lines.append(position)
        object.__setattr__(self, 'stop_lines_s_m', tuple(sorted(lines)))
        if self.start_s_m is not None:
            start = _finite(self.start_s_m, 'lane_follow.start_s_m')
            if not 0.0 <= start <= length:
                raise ActorError(f'lane_follow.start_s_m = {start} is outside the path '
                                 f'[0, {length:.3f}] m')
            object.__setattr__(self, 'start_s_m', start)


@dataclasses.dataclass(frozen=True, eq=False)
class WaypointsBehavior:
    """Timed waypoints `points` (K, 3) = [t_s, x_m, y_m] of the box centre, times increasing."""

    points: np.ndarray

    def __post_init__(self):
        points = _array(self.points, 'waypoints.points', 3)
        if len(points) == 0:
            raise ActorError('waypoints.points is empty')
        steps = np.diff(points[:, 0])
        if np.any(steps <= 0.0):
            bad = int(np.argmax(steps <= 0.0)) + 1
            raise ActorError(f'waypoints.points[{bad}] time {points[bad, 0]} s is not after '
                             f'the previous point ({points[bad - 1, 0]} s)')
        object.__setattr__(self, 'points', points)


Behavior = ParkedBehavior | LaneFollowBehavior | WaypointsBehavior


@dataclasses.dataclass(frozen=True, eq=False)
class ActorSpec:
    """One actor: id, type, behaviour, start pose of the box centre (map frame), start speed.

    size_m overrides the type's default [length, width, height]. For lane_follow the start
    position is projected onto the path and the yaw comes from the path; for waypoints the start
    pose is the first waypoint (yaw_rad is used only if the actor never moves).
    """

    actor_id: str
    actor_type: ActorType
    behavior: Behavior
    x_m: float = 0.0
    y_m: float = 0.0
    yaw_rad: float = 0.0
    speed_mps: float = 0.0
    size_m: tuple | None = None

    def __post_init__(self):
        if not isinstance(self.actor_id, str) or not self.actor_id:
            raise ActorError(f'actor_id = {self.actor_id!r} must be a non-empty string')
        try:
            actor_type = ActorType(self.actor_type)
        except ValueError:
            raise ActorError(f'actor {self.actor_id!r}: type {self.actor_type!r} is not one of '
                             f'{[t.value for t in ActorType]}') from None
        object.__setattr__(self, 'actor_type', actor_type)
        if not isinstance(self.behavior, (ParkedBehavior, LaneFollowBehavior,
                                          WaypointsBehavior)):
            raise ActorError(f'actor {self.actor_id!r}: behavior {self.behavior!r} is not '
                             'ParkedBehavior, LaneFollowBehavior or WaypointsBehavior')
        for name in ('x_m', 'y_m', 'yaw_rad'):
            object.__setattr__(self, name, _finite(getattr(self, name),
                                                   f'actor {self.actor_id!r}: {name}'))
        object.__setattr__(self, 'speed_mps', _positive(
            self.speed_mps, f'actor {self.actor_id!r}: speed_mps', allow_zero=True))
        if self.size_m is None:
            size = DEFAULT_SIZES_M[actor_type]
        else:
            try:
                values = list(self.size_m)
            except TypeError:
                raise ActorError(f'actor {self.actor_id!r}: size_m = {self.size_m!r} must be '
                                 '[length, width, height]') from None
            if len(values) != 3:
                raise ActorError(f'actor {self.actor_id!r}: size_m = {self.size_m!r} must be '
                                 '[length, width, height]')
            size = tuple(_positive(v, f'actor {self.actor_id!r}: size_m[{i}]')
                         for i, v in enumerate(values))
        object.__setattr__(self, 'size_m', tuple(float(v) for v in size))

    @property
    def label(self) -> ObjectLabel:
        """robotaxi_msgs ObjectClass label of this actor's type."""
        return TYPE_LABELS[self.actor_type]


# ---------------------------------------------------------------------------------------------
# Geometry helpers


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 7) boxes [cx, cy, cz, yaw, l, w, h] -> (M, 4, 2) footprint corners in the same frame,
    counter-clockwise from rear right."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    half_l, half_w = 0.5 * boxes[:, 4], 0.5 * boxes[:, 5]
    local = np.stack([np.stack([-half_l, -half_w], -1), np.stack([half_l, -half_w], -1),
                      np.stack([half_l, half_w], -1), np.stack([-half_l, half_w], -1)], axis=1)
    cos_yaw, sin_yaw = np.cos(boxes[:, 3])[:, None], np.sin(boxes[:, 3])[:, None]
    x = boxes[:, 0:1] + cos_yaw * local[..., 0] - sin_yaw * local[..., 1]
    y = boxes[:, 1:2] + sin_yaw * local[..., 0] + cos_yaw * local[..., 1]
    return np.stack([x, y], axis=-1)


def idm_accel(speed_mps, desired_speed_mps, gap_m, approach_mps, time_gap_s, min_gap_m,
              max_accel_mps2, comfort_decel_mps2, exponent=4.0) -> np.ndarray:
    """IDM acceleration (arrays broadcast). gap_m = inf means a free road; gap_m <= 0 gives a
    very large deceleration (callers clip). approach_mps = own speed - leader speed."""
    speed = np.asarray(speed_mps, dtype=np.float64)
    gap = np.asarray(gap_m, dtype=np.float64)
    desired_gap = min_gap_m + np.maximum(
        0.0, speed * time_gap_s + speed * approach_mps / (2.0 * np.sqrt(max_accel_mps2
                                                                        * comfort_decel_mps2)))
    free = 1.0 - (speed / desired_speed_mps) ** exponent
    with np.errstate(over='ignore'):
        interaction = np.where(np.isfinite(gap), (desired_gap / np.maximum(gap, 1e-3)) ** 2,
                               0.0)
    return max_accel_mps2 * (free - interaction)


def simplify_polyline(path_xy: np.ndarray, tolerance_m: float) -> np.ndarray:
    """Indices of the vertices of (N, 2) `path_xy` that Ramer-Douglas-Peucker keeps: the
    polyline through them stays within tolerance_m of every dropped vertex."""
    count = len(path_xy)
    keep = np.zeros(count, dtype=bool)
    keep[[0, count - 1]] = True
    pending = [(0, count - 1)]
    while pending:
        first, last = pending.pop()
        if last <= first + 1:
            continue
        chord = path_xy[last] - path_xy[first]
        rel = path_xy[first + 1:last] - path_xy[first]
        chord_sq = float(chord @ chord)
        t = np.clip(rel @ chord / chord_sq, 0.0, 1.0) if chord_sq > 0.0 else 0.0
        dist = np.linalg.norm(rel - np.multiply.outer(t, chord), axis=1)
        worst = int(np.argmax(dist))
        if dist[worst] > tolerance_m:
            split = first + 1 + worst
            keep[split] = True
            pending += [(first, split), (split, last)]
    return np.flatnonzero(keep)


_SEARCH_TOLERANCE_M = 0.02  # path simplification for the leader search (lateral error bound)


def accel_to_stop_within(speed_mps, distance_m, dt_s: float) -> np.ndarray:
    """Largest constant acceleration over dt_s that covers at most distance_m (>= 0) under the
    ballistic update with the speed clamped at zero (arrays broadcast; inf distance -> inf)."""
    speed = np.asarray(speed_mps, dtype=np.float64)
    distance = np.maximum(np.asarray(distance_m, dtype=np.float64), 0.0)
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        # Still moving at the end of the step: v dt + a dt^2 / 2 <= d.
        moving = 2.0 * (distance - speed * dt_s) / (dt_s * dt_s)
        # Stopping inside the step: v^2 / (2 |a|) <= d.
        stopping = np.where(distance > 0.0, -speed * speed / (2.0 * distance), -np.inf)
    return np.where(speed * dt_s > 2.0 * distance, stopping, moving)


class _PackedPaths:
    """All lane-follow paths packed end to end, so that one np.interp / searchsorted call serves
    every actor. Path i occupies the packed arc range [offset_i, offset_i + length_i]; a gap of
    1 m separates paths so that no query interpolates across two of them.

    Poses use the full paths. The leader search uses Ramer-Douglas-Peucker-simplified copies
    (within _SEARCH_TOLERANCE_M; straight roads collapse to one segment), whose vertices keep
    their arc positions on the full path, so both report the same arc positions.
    """

    def __init__(self, paths: Sequence[np.ndarray]):
        self.count = len(paths)
        offsets, lengths, knots_s, knots_xy, head_s, head_yaw = [], [], [], [], [], []
        seg_start, seg_vec, seg_len, seg_s0, seg_span, seg_counts = [], [], [], [], [], []
        offset = 0.0
        for path in paths:
            vec = np.diff(path, axis=0)
            length = np.linalg.norm(vec, axis=1)
            s_vertices = np.concatenate([[0.0], np.cumsum(length)])
            # Heading knots at segment midpoints (unwrapped), plus both ends, so the yaw varies
            # continuously instead of jumping at vertices.
            yaw = np.unwrap(np.arctan2(vec[:, 1], vec[:, 0]))
            mids = s_vertices[:-1] + 0.5 * length
            offsets.append(offset)
            lengths.append(s_vertices[-1])
            knots_s.append(s_vertices + offset)
            knots_xy.append(path)
            head_s.append(np.concatenate([[0.0], mids, [s_vertices[-1]]]) + offset)
            head_yaw.append(np.concatenate([[yaw[0]], yaw, [yaw[-1]]]))
            kept = simplify_polyline(path, _SEARCH_TOLERANCE_M)
            coarse = path[kept]
            seg_start.append(coarse[:-1])
            seg_vec.append(np.diff(coarse, axis=0))
            seg_len.append(np.linalg.norm(seg_vec[-1], axis=1))
            seg_s0.append(s_vertices[kept[:-1]])
            seg_span.append(np.diff(s_vertices[kept]))
            seg_counts.append(len(kept) - 1)
            offset += s_vertices[-1] + 1.0

        def packed(parts, shape):
            return np.concatenate(parts) if parts else np.zeros(shape)

        self.offsets = np.array(offsets)
        self.lengths = np.array(lengths)
        self.knots_s = packed(knots_s, 0)
        self.knots_xy = packed(knots_xy, (0, 2))
        self.head_s = packed(head_s, 0)
        self.head_yaw = packed(head_yaw, 0)
        self.seg_start = packed(seg_start, (0, 2))
        self.seg_vec = packed(seg_vec, (0, 2))
        self.seg_len = packed(seg_len, 0)
        self.seg_s0 = packed(seg_s0, 0)
        self.seg_span = packed(seg_span, 0)
        self.seg_count = np.array(seg_counts, dtype=np.int64)
        self.seg_first = np.cumsum(self.seg_count) - self.seg_count
        # Packed arc position of every search segment start, for searchsorted.
        self.seg_packed_s0 = packed([s0 + off for s0, off in zip(seg_s0, offsets)], 0)

    def poses(self, s_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(F,) arc positions, one per path -> x, y, yaw arrays (F,)."""
        packed = s_m + self.offsets
        x = np.interp(packed, self.knots_s, self.knots_xy[:, 0])
        y = np.interp(packed, self.knots_s, self.knots_xy[:, 1])
        yaw = np.interp(packed, self.head_s, self.head_yaw)
        return x, y, yaw

    def window(self, s_from: np.ndarray, s_to: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global indices of the search segments of path i overlapping [s_from_i, s_to_i], and
        their owning path index (sorted); every path contributes at least one segment."""
        first = np.searchsorted(self.seg_packed_s0, s_from + self.offsets, side='right') - 1
        last = np.searchsorted(self.seg_packed_s0, s_to + self.offsets, side='left')
        first = np.clip(first, self.seg_first, self.seg_first + self.seg_count - 1)
        last = np.clip(last, first + 1, self.seg_first + self.seg_count)
        counts = last - first
        owner = np.repeat(np.arange(len(counts)), counts)
        column_start = np.cumsum(counts) - counts
        index = first[owner] + (np.arange(counts.sum()) - column_start[owner])
        return index, owner

    def project(self, path_index: int, point_xy: np.ndarray) -> tuple[float, float]:
        """Arc position and distance of the closest point on one path to a point."""
        sl = slice(self.seg_first[path_index],
                   self.seg_first[path_index] + self.seg_count[path_index])
        vec = self.seg_vec[sl]
        rel = point_xy - self.seg_start[sl]
        t = np.clip(np.einsum('ij,ij->i', rel, vec) / self.seg_len[sl] ** 2, 0.0, 1.0)
        dist = np.linalg.norm(rel - t[:, None] * vec, axis=1)
        best = int(np.argmin(dist))
        return float(self.seg_s0[sl][best] + t[best] * self.seg_span[sl][best]), float(dist[best])


# ---------------------------------------------------------------------------------------------
# World


@dataclasses.dataclass(frozen=True, eq=False)
class ActorSnapshot:
    """All actors at one time, map frame; row i belongs to ids[i].

    boxes (M, 7) = [cx, cy, cz, yaw, length, width, height] in metres/radians, velocities_mps
    (M, 2) = box-centre velocity (vx, vy), labels (M,) uint8 robotaxi_msgs ObjectClass labels.
    """

    time_s: float
    ids: tuple
    types: tuple
    labels: np.ndarray
    boxes: np.ndarray
    velocities_mps: np.ndarray

    def footprints(self) -> np.ndarray:
        """(M, 4, 2) footprint corners, counter-clockwise from rear right."""
        return box_corners(self.boxes)

    def speeds_mps(self) -> np.ndarray:
        """(M,) speed magnitudes."""
        return np.linalg.norm(self.velocities_mps, axis=1)


class ActorWorld:
    """Deterministic stepping of all traffic actors around the ego.

    `step(dt_s, ego_footprint_xy, ego_velocity_xy_mps)` advances every actor by dt_s seconds,
    lane followers reacting to the state at the start of the step, and returns the snapshot.
    """

    def __init__(self, actors: Sequence[ActorSpec], start_time_s: float = 0.0):
        actors = list(actors)
        for index, actor in enumerate(actors):
            if not isinstance(actor, ActorSpec):
                raise ActorError(f'actors[{index}] = {actor!r} is not an ActorSpec')
        ids = [a.actor_id for a in actors]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ActorError(f'duplicate actor id(s) {duplicates}')
        self._time_s = _finite(start_time_s, 'start_time_s')
        self.specs = tuple(actors)
        self.ids = tuple(ids)
        self.types = tuple(a.actor_type for a in actors)
        self.labels = np.array([int(a.label) for a in actors], dtype=np.uint8)
        self.labels.setflags(write=False)
        count = len(actors)
        self._sizes = np.array([a.size_m for a in actors], dtype=np.float64).reshape(count, 3)
        self._pose = np.array([[a.x_m, a.y_m, a.yaw_rad] for a in actors],
                              dtype=np.float64).reshape(count, 3)
        self._velocity = np.zeros((count, 2))

        self._waypoint_rows = [i for i, a in enumerate(actors)
                               if isinstance(a.behavior, WaypointsBehavior)]
        self._waypoint_yaws = [self._segment_yaws(actors[i]) for i in self._waypoint_rows]

        rows = [i for i, a in enumerate(actors) if isinstance(a.behavior, LaneFollowBehavior)]
        self._lane_rows = np.array(rows, dtype=np.int64)
        behaviors = [actors[i].behavior for i in rows]
        self._paths = _PackedPaths([b.path_xy for b in behaviors])

        def column(name):
            return np.array([getattr(b, name) for b in behaviors], dtype=np.float64)

        self._target_speed = column('target_speed_mps')
        self._time_gap = column('time_gap_s')
        self._min_gap = column('min_gap_m')
        self._max_accel = column('max_accel_mps2')
        self._comfort_decel = column('comfort_decel_mps2')
        self._max_decel = column('max_decel_mps2')
        self._exponent = column('accel_exponent')
        self._dwell_s = column('stop_dwell_s')
        self._half_length = 0.5 * self._sizes[self._lane_rows, 0]
        self._band = 0.5 * self._sizes[self._lane_rows, 1] + column('lateral_margin_m')
        lines = max((len(b.stop_lines_s_m) for b in behaviors), default=0)
        self._stop_lines = np.full((len(rows), lines + 1), np.inf)
        for k, behavior in enumerate(behaviors):
            self._stop_lines[k, :len(behavior.stop_lines_s_m)] = behavior.stop_lines_s_m
        self._next_stop = np.zeros(len(rows), dtype=np.int64)
        self._dwell_left = np.full(len(rows), np.nan)

        start_s = []
        for k, (row, behavior) in enumerate(zip(rows, behaviors)):
            actor = actors[row]
            if behavior.start_s_m is not None:
                start_s.append(behavior.start_s_m)
                continue
            s_m, offset_m = self._paths.project(k, np.array([actor.x_m, actor.y_m]))
            if offset_m > MAX_START_OFFSET_M:
                raise ActorError(f'actor {actor.actor_id!r}: start ({actor.x_m}, {actor.y_m}) '
                                 f'is {offset_m:.2f} m from its lane_follow path (at most '
                                 f'{MAX_START_OFFSET_M} m)')
            start_s.append(s_m)
        self._s = np.minimum(np.array(start_s, dtype=np.float64), self._max_s())
        self._v = np.array([actors[r].speed_mps for r in rows], dtype=np.float64)
        # Stop lines already behind the front bumper at the start do not apply.
        for _ in range(lines):
            behind = (self._current_stop_line() - (self._s + self._half_length)
                      < -STOP_LINE_PASSED_M)
            self._next_stop += behind
        self._update_poses()

    # -- public API -------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Simulation time of the current state."""
        return self._time_s

    def snapshot(self) -> ActorSnapshot:
        """Current boxes, velocities and labels of all actors (copies, read-only)."""
        boxes = np.column_stack([self._pose[:, :2], 0.5 * self._sizes[:, 2], self._pose[:, 2],
                                 self._sizes]) if len(self.ids) else np.zeros((0, 7))
        velocities = self._velocity.copy()
        boxes.setflags(write=False)
        velocities.setflags(write=False)
        return ActorSnapshot(time_s=self._time_s, ids=self.ids, types=self.types,
                             labels=self.labels, boxes=boxes, velocities_mps=velocities)

    def step(self, dt_s: float, ego_footprint_xy: np.ndarray | None = None,
             ego_velocity_xy_mps=(0.0, 0.0)) -> ActorSnapshot:
        """Advance all actors by dt_s; the ego ((4, 2) footprint corners and (2,) velocity,
        map frame) is a possible leader for lane followers. Returns the new snapshot."""
        dt_s = _finite(dt_s, 'dt_s')
        if dt_s <= 0.0:
            raise ActorError(f'dt_s = {dt_s} must be > 0')
        extra_corners = np.zeros((0, 4, 2))
        extra_velocity = np.zeros((0, 2))
        if ego_footprint_xy is not None:
            footprint = _array(ego_footprint_xy, 'ego_footprint_xy', 2)
            if footprint.shape != (4, 2):
                raise ActorError(f'ego_footprint_xy must have shape (4, 2), got '
                                 f'{footprint.shape}')
            velocity = _array([ego_velocity_xy_mps], 'ego_velocity_xy_mps', 2)
            extra_corners, extra_velocity = footprint[None], velocity
        if len(self._lane_rows):
            self._step_lane_followers(dt_s, extra_corners, extra_velocity)
        self._time_s += dt_s
        self._update_poses()
        return self.snapshot()

    # -- lane following -----------------------------------------------------------------------

    def _max_s(self) -> np.ndarray:
        return np.maximum(self._paths.lengths - self._half_length, 0.0)

    def _current_stop_line(self) -> np.ndarray:
        index = np.minimum(self._next_stop, self._stop_lines.shape[1] - 1)
        return self._stop_lines[np.arange(len(index)), index]

    def _leaders(self, corners: np.ndarray, velocities: np.ndarray,
                 owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest obstacle ahead on each follower's path: (gap_m, leader speed along path).

        corners (K, 4, 2) and velocities (K, 2) of all objects; owners (K,) is the follower
        index of each object (-1 for objects that are not followers) so no follower sees
        itself. An object counts if a corner lies within the follower's corridor band or one of
        its edges crosses the path (an object straddling the lane). Bounding boxes first pick
        the (object, window segment) pairs that can interact; the exact tests then run on
        those P pairs at once as (P, 4) arrays.
        """
        followers = len(self._s)
        paths = self._paths
        s_to = self._s + LOOKAHEAD_BASE_M + LOOKAHEAD_TIME_S * self._v
        seg, column_owner = paths.window(self._s, s_to)
        start, vec = paths.seg_start[seg], paths.seg_vec[seg]  # (W, 2)
        band = self._band[column_owner]
        seg_low = np.minimum(start, start + vec) - band[:, None]
        seg_high = np.maximum(start, start + vec) + band[:, None]
        obj_low, obj_high = corners.min(axis=1), corners.max(axis=1)  # (K, 2)
        near = ((obj_low[:, None, 0] <= seg_high[:, 0]) & (obj_high[:, None, 0] >= seg_low[:, 0])
                & (obj_low[:, None, 1] <= seg_high[:, 1]) & (obj_high[:, None, 1] >= seg_low[:, 1])
                & (owners[:, None] != column_owner))
        obj, col = np.nonzero(near)
        gap = np.full(followers, np.inf)
        leader_speed = np.zeros(followers)
        if len(obj) == 0:
            return gap, leader_speed
        seg = seg[col]
        ax, ay = paths.seg_start[seg, 0, None], paths.seg_start[seg, 1, None]  # (P, 1)
        dx, dy = paths.seg_vec[seg, 0, None], paths.seg_vec[seg, 1, None]
        s0, span = paths.seg_s0[seg, None], paths.seg_span[seg, None]
        px, py = corners[obj, :, 0], corners[obj, :, 1]  # (P, 4)

        # Corners inside the corridor band.
        rx, ry = px - ax, py - ay
        t = np.clip((rx * dx + ry * dy) / paths.seg_len[seg, None] ** 2, 0.0, 1.0)
        dist_sq = (rx - t * dx) ** 2 + (ry - t * dy) ** 2
        s_hit = np.where(dist_sq <= band[col, None] ** 2, s0 + t * span, np.inf)

        # Edges crossing the path centre line: edge p + a e meets segment q + b d.
        ex, ey = np.roll(px, -1, axis=1) - px, np.roll(py, -1, axis=1) - py
        denom = ex * dy - ey * dx
        wx, wy = ax - px, ay - py
        with np.errstate(divide='ignore', invalid='ignore'):
            a = (wx * dy - wy * dx) / denom
            b = (wx * ey - wy * ex) / denom
        crossing = (a >= 0.0) & (a <= 1.0) & (b >= 0.0) & (b <= 1.0)
        s_hit = np.minimum(s_hit, np.where(crossing, s0 + b * span, np.inf)).min(axis=1)

        follower = column_owner[col]
        s_hit[s_hit < self._s[follower]] = np.inf  # behind the follower's centre
        # Nearest pair per follower: sort by (follower, s) and take each follower's first.
        order = np.lexsort((s_hit, follower))
        follower, s_hit, obj = follower[order], s_hit[order], obj[order]
        first = np.flatnonzero(np.r_[True, follower[1:] != follower[:-1]])
        hit = first[np.isfinite(s_hit[first])]
        rows, s_leader, leader = follower[hit], s_hit[hit], obj[hit]
        heading = np.interp(s_leader + paths.offsets[rows], paths.head_s, paths.head_yaw)
        gap[rows] = s_leader - (self._s[rows] + self._half_length[rows])
        leader_speed[rows] = (velocities[leader, 0] * np.cos(heading)
                              + velocities[leader, 1] * np.sin(heading))
        return gap, leader_speed

    def _idm(self, gap: np.ndarray, leader_speed: np.ndarray, min_gap: np.ndarray) -> np.ndarray:
        return idm_accel(self._v, self._target_speed, gap, self._v - leader_speed,
                         self._time_gap, min_gap, self._max_accel, self._comfort_decel,
                         self._exponent)

    def _step_lane_followers(self, dt_s: float, extra_corners: np.ndarray,
                             extra_velocity: np.ndarray) -> None:
        snapshot = self.snapshot()
        corners = np.concatenate([snapshot.footprints(), extra_corners])
        velocities = np.concatenate([self._velocity, extra_velocity])
        owners = np.full(len(corners), -1, dtype=np.int64)
        owners[self._lane_rows] = np.arange(len(self._lane_rows))
        gap, leader_speed = self._leaders(corners, velocities, owners)

        front = self._s + self._half_length
        zero = np.zeros_like(self._v)
        # Stop lines that cannot be reached any more (passed, or closer than the hard braking
        # distance) are given up, as a human driver would run a line they cannot stop at.
        dwelling = np.isfinite(self._dwell_left)
        for _ in range(self._stop_lines.shape[1]):
            to_line = self._current_stop_line() - front
            unreachable = (to_line < -STOP_LINE_PASSED_M) | (
                self._v * self._v > 2.0 * self._max_decel * np.maximum(to_line, 1e-3))
            skip = np.isfinite(to_line) & ~dwelling & unreachable
            if not skip.any():
                break
            self._next_stop += skip
        to_line = self._current_stop_line() - front
        to_end = self._paths.lengths - front
        # Stop lines and the path end count from the same look-ahead as leaders.
        lookahead = LOOKAHEAD_BASE_M + LOOKAHEAD_TIME_S * self._v
        line_gap = np.where(to_line <= lookahead, to_line, np.inf)
        end_gap = np.where(to_end <= lookahead, to_end, np.inf)

        # Standing targets get the jam distance added, so the front bumper converges onto them.
        accel = np.minimum.reduce([
            self._idm(gap, leader_speed, self._min_gap),
            self._idm(line_gap + self._min_gap, zero, self._min_gap),
            self._idm(end_gap + self._min_gap, zero, self._min_gap)])
        # In continuous time IDM keeps the jam distance and stops at standing targets by itself;
        # with finite steps it overshoots slightly. Capping the acceleration so that this step
        # covers at most the free distance (the leader taken as standing, which is conservative)
        # removes that overshoot; the physical deceleration limit still has the last word.
        free_m = np.minimum.reduce([gap - self._min_gap, line_gap, end_gap])
        accel = np.minimum(accel, accel_to_stop_within(self._v, free_m, dt_s))
        accel = np.clip(accel, -self._max_decel, self._max_accel)
        # Standing at a stop line or at the path end: hold instead of creeping on.
        holding = dwelling | ((self._v == 0.0) & (to_end < STOP_SNAP_DISTANCE_M))
        accel = np.where(holding, np.minimum(accel, 0.0), accel)

        # Ballistic update with the speed clamped at zero (the actor stops within the step).
        v_new = self._v + accel * dt_s
        stops = v_new < 0.0
        with np.errstate(divide='ignore', invalid='ignore'):
            ds = np.where(stops, -self._v * self._v / (2.0 * accel),
                          self._v * dt_s + 0.5 * accel * dt_s * dt_s)
        self._s = self._s + ds
        self._v = np.maximum(v_new, 0.0)
        at_end = self._s >= self._max_s()
        self._s = np.minimum(self._s, self._max_s())
        self._v = np.where(at_end, 0.0, self._v)

        front = self._s + self._half_length
        to_line = self._current_stop_line() - front
        to_end = self._paths.lengths - front
        slow = self._v < STOP_SNAP_SPEED_MPS
        self._v = np.where(slow & (to_end < STOP_SNAP_DISTANCE_M), 0.0, self._v)
        arrived = ~dwelling & slow & (np.abs(to_line) < STOP_SNAP_DISTANCE_M)
        self._v = np.where(arrived, 0.0, self._v)
        self._dwell_left = np.where(arrived, self._dwell_s, self._dwell_left)
        # Dwelling that started in an earlier step counts down now.
        self._dwell_left = np.where(dwelling, self._dwell_left - dt_s, self._dwell_left)
        released = dwelling & (self._dwell_left <= 1e-9)
        self._next_stop += released
        self._dwell_left = np.where(released, np.nan, self._dwell_left)

    # -- poses --------------------------------------------------------------------------------

    @staticmethod
    def _segment_yaws(actor: ActorSpec) -> np.ndarray:
        """Yaw of each waypoint segment; standing segments keep the neighbouring motion's yaw."""
        points = actor.behavior.points
        if len(points) < 2:
            return np.array([actor.yaw_rad])
        delta = np.diff(points[:, 1:], axis=0)
        moving = np.linalg.norm(delta, axis=1) > _MIN_SEGMENT_M
        if not moving.any():
            return np.full(len(delta), actor.yaw_rad)
        yaw = np.arctan2(delta[:, 1], delta[:, 0])
        moving_index = np.flatnonzero(moving)
        # Carry the last moving yaw forward; segments before the first motion take its yaw.
        source = np.maximum.accumulate(np.where(moving, np.arange(len(yaw)), -1))
        source = np.where(source < 0, moving_index[0], source)
        return yaw[source]

    def _update_poses(self) -> None:
        if len(self._lane_rows):
            x, y, yaw = self._paths.poses(self._s)
            rows = self._lane_rows
            self._pose[rows] = np.column_stack([x, y, yaw])
            self._velocity[rows] = self._v[:, None] * np.column_stack([np.cos(yaw), np.sin(yaw)])
        t = self._time_s
        for row, yaws in zip(self._waypoint_rows, self._waypoint_yaws):
            points = self.specs[row].behavior.points
            times = points[:, 0]
            if len(points) == 1 or t <= times[0]:
                self._pose[row] = (points[0, 1], points[0, 2], yaws[0])
                self._velocity[row] = 0.0
            elif t >= times[-1]:
                self._pose[row] = (points[-1, 1], points[-1, 2], yaws[-1])
                self._velocity[row] = 0.0
            else:
                i = int(np.searchsorted(times, t, side='right')) - 1
                span = times[i + 1] - times[i]
                fraction = (t - times[i]) / span
                xy = points[i, 1:] + fraction * (points[i + 1, 1:] - points[i, 1:])
                self._pose[row] = (xy[0], xy[1], yaws[i])
                self._velocity[row] = (points[i + 1, 1:] - points[i, 1:]) / span
