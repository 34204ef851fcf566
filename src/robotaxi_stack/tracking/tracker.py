"""Multi-object tracker core (pure: numpy + scipy, no rclpy, no messages).

Detections of one sensor frame (map or base_link) -> confirmed tracks in the map frame.

Motion models, one EKF per track, all tracks of a model predicted and updated in one vectorised
pass. Every track stores a 5-vector so the table is one array:
- vehicles (car, truck, bus, bicycle, motorcycle, unknown): CTRV extended by an acceleration
  that decays (Singer), [x, y, yaw, v, yaw_rate, a]; a vehicle moves along its heading, which
  lets the box yaw measurement sharpen the velocity; the acceleration state removes the speed
  lag of a constant-velocity model while traffic speeds up or brakes.
- pedestrians: constant velocity [x, y, vx, vy, -, -] (unused entries decoupled):
  pedestrians side-step and turn on the spot, so their velocity is not tied to a heading.
Each track runs an interacting multiple model (IMM, Blom & Bar-Shalom) of two modes of its motion
model: quiet (base process noise) and manoeuvring (`manoeuvre_noise_scale` times the variance),
so steady traffic gets smooth velocities and braking or turning in is followed quickly. Both
measure the box centre; CTRV also measures the box yaw (flipped by pi first when it points
against the track heading: a detector cannot always tell front from back).

Association: position-innovation Mahalanobis distance (track position covariance + detection
covariance), gated by a chi-square bound and a Euclidean bound, plus a class-compatibility cost
`class_mismatch_cost * (1 - p_track . p_detection)`; Hungarian assignment
(scipy.optimize.linear_sum_assignment) per cluster of the gating graph.

Lifecycle: every unassigned detection starts a tentative track, except one whose centre lies
inside the box of a confirmed track (a second box of an object already tracked: the ONNX
detector split a parked van into two overlapping boxes, one with a flipped heading, and the
duplicate track read as a slow oncoming vehicle); it is confirmed after
`confirm_hits` hits within the last `confirm_window` frames. The existence probability follows a
Bayes update per frame (hit: detection_probability vs clutter_probability; miss:
detection_probability); a track is deleted below `delete_existence`, after
`max_coast_confirmed_s` (tentative: `max_coast_tentative_s`) without a hit, or when it is still
tentative after its confirmation window. Only confirmed tracks are output. Ids are uint64 from a
counter that never goes back, so an id is never reused.

Time: `update(stamp_s, detections)` processes frames in stamp order. A frame older than the newest
one, but by no more than `max_out_of_order_s`, is inserted: the state saved before the first
later frame is restored and the later frames are run again (a track born again from the same
detection of an already-processed frame keeps its id). Older frames are dropped and counted;
a second frame with an already-processed stamp is rejected and counted. Non-finite detections
are dropped and counted; a non-finite or non-positive covariance is replaced by the default.
Detections in base_link are moved to the map frame with the ego pose at their stamp, linearly
interpolated in an odometry history (`add_ego_pose`); other frames are rejected with a reason.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from robotaxi_stack.common.geometry import points_in_bev_boxes
from robotaxi_stack.common.params import ParameterError, param

NS_PER_S = 1_000_000_000
NUM_CLASSES = 7  # robotaxi_msgs/ObjectClass labels 0..6
PEDESTRIAN = 6
CTRV, CV = 0, 1  # CTRV: the vehicle model, with acceleration (CTRA)
STATE_DIM = 6
SUPPORTED_FRAMES = ('map', 'base_link')
_GATED_COST = 1e9
_MIN_EXISTENCE, _MAX_EXISTENCE = 1e-4, 0.9999
_TWO_PI = 2.0 * math.pi


class TrackerInputError(ValueError):
    """Malformed tracker input (wrong shapes or types); the message names the value."""


def _wrap(angle: Any) -> Any:
    return (np.asarray(angle) + np.pi) % _TWO_PI - np.pi


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackerParams:
    """Tracker tuning; sigmas are 1-sigma values, probabilities per frame."""

    max_out_of_order_s: float = param(0.3, min=0.0, max=2.0, description=(
        'a frame older than the newest by up to this is inserted and later frames re-run; '
        'older frames are dropped'))
    gate_mahalanobis_sq: float = param(20.0, min=1.0, max=100.0, description=(
        'squared Mahalanobis gate of the position innovation (chi-square 2 dof: 20 = 99.995 '
        '%; wide, so a braking vehicle keeps its track instead of spawning a duplicate)'))
    max_gate_distance_m: float = param(5.0, min=0.5, max=30.0,
                                       description='no association beyond this distance')
    class_mismatch_cost: float = param(4.0, min=0.0, max=100.0, description=(
        'added cost of a pair with disjoint class probabilities (scaled by 1 - overlap)'))
    vehicle_jerk_sigma_mps3: float = param(2.0, min=0.01, max=50.0,
                                           description='CTRA longitudinal (jerk) process noise')
    vehicle_yaw_accel_sigma_rps2: float = param(0.8, min=0.001, max=10.0,
                                                description='CTRV yaw-rate process noise')
    pedestrian_accel_sigma_mps2: float = param(0.5, min=0.01, max=20.0,
                                               description='CV process noise per axis')
    manoeuvre_noise_scale: float = param(8.0, min=1.0, max=1000.0, description=(
        'process-noise variance factor of the manoeuvre mode of the IMM (the quiet mode has 1)'))
    manoeuvre_start_prob: float = param(0.05, min=0.0, max=1.0, description=(
        'per-frame probability that a quiet track starts manoeuvring (IMM transition)'))
    manoeuvre_end_prob: float = param(0.2, min=0.0, max=1.0, description=(
        'per-frame probability that a manoeuvre ends (IMM transition)'))
    init_speed_sigma_mps: float = param(8.0, min=0.1, max=50.0,
                                        description='speed uncertainty of a new vehicle track')
    accel_decay_s: float = param(1.0, min=0.05, max=100.0, description=(
        'time constant of the vehicle acceleration estimate (Singer model)'))
    init_accel_sigma_mps2: float = param(1.0, min=0.01, max=10.0,
                                         description='acceleration uncertainty of a new '
                                                     'vehicle track')
    init_yaw_rate_sigma_rps: float = param(0.3, min=0.01, max=3.0,
                                           description='yaw-rate uncertainty of a new track')
    init_pedestrian_speed_sigma_mps: float = param(2.0, min=0.1, max=20.0, description=(
        'velocity uncertainty per axis of a new pedestrian track'))
    default_position_sigma_m: float = param(0.3, min=0.01, max=10.0, description=(
        'detection position sigma when its covariance is missing or invalid'))
    default_yaw_sigma_rad: float = param(0.2, min=0.001, max=3.2, description=(
        'detection yaw sigma when its covariance is missing or invalid'))
    min_position_sigma_m: float = param(0.05, min=0.001, max=5.0, description=(
        'floor on detection position sigma (an over-confident detector must not freeze a '
        'track)'))
    confirm_hits: int = param(4, min=1, max=16, description='hits needed for confirmation ...')
    confirm_window: int = param(5, min=1, max=16, description='... within this many frames')
    birth_existence: float = param(0.3, min=0.01, max=0.99,
                                   description='existence probability of a new track')
    detection_probability: float = param(0.7, min=0.05, max=0.99, description=(
        'probability that an existing object is detected (existence update)'))
    clutter_probability: float = param(0.1, min=0.001, max=0.99, description=(
        'probability that an associated detection is clutter (existence update)'))
    delete_existence: float = param(0.08, min=0.0, max=0.9,
                                    description='tracks below this existence are deleted')
    max_coast_confirmed_s: float = param(1.5, min=0.05, max=10.0,
                                         description='confirmed tracks without a hit this long '
                                                     'are deleted')
    max_coast_tentative_s: float = param(0.25, min=0.05, max=10.0,
                                         description='tentative tracks without a hit this long '
                                                     'are deleted')
    shape_smoothing: float = param(0.2, min=0.01, max=1.0, description=(
        'EMA weight of a new measurement for dimensions, height and pedestrian box yaw'))
    heading_flip_speed_mps: float = param(1.0, min=0.0, max=10.0, description=(
        'a vehicle track driving backwards faster than this gets its heading turned by pi '
        '(its heading came from a flipped box)'))
    pedestrian_heading_min_speed_mps: float = param(0.3, min=0.0, max=5.0, description=(
        'slower pedestrians report their box yaw, faster ones their direction of motion'))
    max_tracks: int = param(1000, min=1, max=100000,
                            description='births beyond this many tracks are dropped')
    pose_history_s: float = param(2.0, min=0.1, max=60.0,
                                  description='ego pose history kept for base_link detections')
    max_pose_extrapolation_s: float = param(0.1, min=0.0, max=1.0, description=(
        'base_link detections up to this far beyond the pose history are extrapolated'))

    def __post_init__(self) -> None:
        if self.confirm_hits > self.confirm_window:
            raise ParameterError(f'parameter \'confirm_hits\' = {self.confirm_hits} exceeds '
                                 f'confirm_window = {self.confirm_window}')


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True, eq=False)
class Detections:
    """One frame of detections (N objects) in `frame_id` (map or base_link).

    xy_m (N, 2) box centres, z_m (N,) centre heights, yaw_rad (N,), dims_m (N, 3) length,
    width, height, class_probs (N, 7) probabilities per ObjectClass label, covariance (N, 3, 3)
    over (x, y, yaw) in the same frame, existence (N,) detector scores in [0, 1].
    """

    frame_id: str
    xy_m: np.ndarray
    z_m: np.ndarray
    yaw_rad: np.ndarray
    dims_m: np.ndarray
    class_probs: np.ndarray
    covariance: np.ndarray
    existence: np.ndarray

    def __post_init__(self) -> None:
        n = np.asarray(self.xy_m).reshape(-1, 2).shape[0] if np.size(self.xy_m) else 0
        shapes = {'xy_m': (n, 2), 'z_m': (n,), 'yaw_rad': (n,), 'dims_m': (n, 3),
                  'class_probs': (n, NUM_CLASSES), 'covariance': (n, 3, 3), 'existence': (n,)}
        for name, shape in shapes.items():
            try:
                value = np.asarray(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError):
                raise TrackerInputError(f'detections.{name} is not numeric') from None
            if value.size == 0 and n == 0:
                value = value.reshape(shape)
            if value.shape != shape:
                raise TrackerInputError(f'detections.{name} has shape {value.shape}, '
                                        f'expected {shape}')
            object.__setattr__(self, name, value)
        if not isinstance(self.frame_id, str):
            raise TrackerInputError(f'detections.frame_id = {self.frame_id!r} is not a string')

    def __len__(self) -> int:
        return self.xy_m.shape[0]

    @classmethod
    def empty(cls, frame_id: str = 'map') -> 'Detections':
        return cls(frame_id, np.zeros((0, 2)), np.zeros(0), np.zeros(0), np.zeros((0, 3)),
                   np.zeros((0, NUM_CLASSES)), np.zeros((0, 3, 3)), np.zeros(0))

    def select(self, keep: np.ndarray) -> 'Detections':
        return Detections(self.frame_id, self.xy_m[keep], self.z_m[keep], self.yaw_rad[keep],
                          self.dims_m[keep], self.class_probs[keep], self.covariance[keep],
                          self.existence[keep])


def class_probs_from_labels(labels: Any, probabilities: Any) -> np.ndarray:
    """(N,) labels with (N,) probabilities -> (N, 7) class probabilities; the rest of each row
    is spread evenly over the other labels (a detector that names one class is unsure by 1 - p)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if labels.shape != probabilities.shape:
        raise TrackerInputError(f'labels {labels.shape} and probabilities '
                                f'{probabilities.shape} differ in length')
    if np.any((labels < 0) | (labels >= NUM_CLASSES)):
        raise TrackerInputError(f'labels must be in [0, {NUM_CLASSES - 1}]')
    p = np.clip(probabilities, 0.0, 1.0)
    probs = np.repeat(((1.0 - p) / (NUM_CLASSES - 1))[:, None], NUM_CLASSES, axis=1)
    probs[np.arange(len(labels)), labels] = p
    return probs


def detections_to_map(detections: Detections, ego_pose: Any) -> Detections:
    """base_link detections -> map frame with the ego pose (x_m, y_m, yaw_rad) of their stamp.

    Positions are rotated and shifted, yaws shifted, (x, y, yaw) covariances rotated
    (ego pose uncertainty is not added: localisation is far more precise than detection).
    """
    x0, y0, yaw0 = (float(v) for v in np.asarray(ego_pose, dtype=np.float64).reshape(3))
    c, s = math.cos(yaw0), math.sin(yaw0)
    rot = np.array([[c, -s], [s, c]])
    jac = np.eye(3)
    jac[:2, :2] = rot
    return Detections('map', detections.xy_m @ rot.T + np.array([x0, y0]), detections.z_m,
                      _wrap(detections.yaw_rad + yaw0), detections.dims_m,
                      detections.class_probs, jac @ detections.covariance @ jac.T,
                      detections.existence)


class PoseHistory:
    """Ego poses (map -> base_link) by stamp; `at(stamp_ns)` interpolates linearly (yaw along
    the shorter arc) and extrapolates at most `max_extrapolation_s` past either end."""

    def __init__(self, keep_s: float = 2.0, max_extrapolation_s: float = 0.1):
        self._keep_ns = int(keep_s * NS_PER_S)
        self._extrap_ns = int(max_extrapolation_s * NS_PER_S)
        self._stamps: list[int] = []
        self._poses: list[tuple[float, float, float]] = []

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, x_m: float, y_m: float, yaw_rad: float) -> bool:
        """Store a pose; False (and nothing stored) for a non-finite or repeated stamp/pose."""
        if not all(math.isfinite(v) for v in (x_m, y_m, yaw_rad)):
            return False
        index = bisect.bisect_left(self._stamps, stamp_ns)
        if index < len(self._stamps) and self._stamps[index] == stamp_ns:
            return False
        self._stamps.insert(index, int(stamp_ns))
        self._poses.insert(index, (float(x_m), float(y_m), float(yaw_rad)))
        cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self._keep_ns)
        if cut:
            del self._stamps[:cut], self._poses[:cut]
        return True

    def at(self, stamp_ns: int) -> tuple[float, float, float] | None:
        """Pose at stamp_ns, or None when the history does not cover it."""
        stamps = self._stamps
        if not stamps:
            return None
        if len(stamps) == 1:
            return self._poses[0] if abs(stamp_ns - stamps[0]) <= self._extrap_ns else None
        if stamp_ns < stamps[0] - self._extrap_ns or stamp_ns > stamps[-1] + self._extrap_ns:
            return None
        index = min(max(bisect.bisect_right(stamps, stamp_ns), 1), len(stamps) - 1)
        t0, t1 = stamps[index - 1], stamps[index]
        p0, p1 = self._poses[index - 1], self._poses[index]
        f = (stamp_ns - t0) / (t1 - t0)
        dyaw = float(_wrap(p1[2] - p0[2]))
        return (p0[0] + f * (p1[0] - p0[0]), p0[1] + f * (p1[1] - p0[1]),
                float(_wrap(p0[2] + f * dyaw)))


# ---------------------------------------------------------------------------------------------
# Outputs


@dataclasses.dataclass(frozen=True)
class Track:
    """One confirmed track at the output stamp (map frame)."""

    track_id: int
    label: int
    class_probs: np.ndarray
    x_m: float
    y_m: float
    z_m: float
    yaw_rad: float
    speed_mps: float
    velocity_object_mps: tuple[float, float]
    yaw_rate_rps: float
    dims_m: tuple[float, float, float]
    pose_covariance: np.ndarray
    velocity_covariance: np.ndarray
    existence_probability: float


@dataclasses.dataclass(frozen=True, eq=False)
class TrackSet:
    """Confirmed tracks (K) at `stamp_ns`, map frame.

    ids (K,) uint64; class_probs (K, 7); xyz_m (K, 3); yaw_rad (K,); speed_mps (K,);
    velocity_object_mps (K, 2) velocity in the object frame (x along yaw); velocity_map_mps
    (K, 2); yaw_rate_rps (K,); dims_m (K, 3); pose_covariance (K, 3, 3) over (x, y, yaw);
    velocity_covariance (K, 2, 2) in the object frame; existence (K,).
    """

    stamp_ns: int
    ids: np.ndarray
    class_probs: np.ndarray
    xyz_m: np.ndarray
    yaw_rad: np.ndarray
    speed_mps: np.ndarray
    velocity_object_mps: np.ndarray
    velocity_map_mps: np.ndarray
    yaw_rate_rps: np.ndarray
    dims_m: np.ndarray
    pose_covariance: np.ndarray
    velocity_covariance: np.ndarray
    existence: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        return np.argmax(self.class_probs, axis=1) if len(self.ids) else np.zeros(0, np.int64)

    def tracks(self) -> list[Track]:
        labels = self.labels
        return [Track(int(self.ids[k]), int(labels[k]), self.class_probs[k],
                      *(float(v) for v in self.xyz_m[k]), float(self.yaw_rad[k]),
                      float(self.speed_mps[k]),
                      (float(self.velocity_object_mps[k, 0]),
                       float(self.velocity_object_mps[k, 1])),
                      float(self.yaw_rate_rps[k]), tuple(float(v) for v in self.dims_m[k]),
                      self.pose_covariance[k], self.velocity_covariance[k],
                      float(self.existence[k]))
                for k in range(len(self.ids))]


@dataclasses.dataclass
class TrackerStats:
    """Cumulative input problems since start (the node reports them as diagnostics)."""

    frames: int = 0
    late_inserted: int = 0
    late_dropped: int = 0
    duplicate_stamps: int = 0
    rejected_frames: int = 0
    nonfinite_detections: int = 0
    default_covariances: int = 0
    default_class_probs: int = 0
    births_dropped: int = 0


@dataclasses.dataclass(frozen=True)
class UpdateResult:
    """Outcome of one `update`: `accepted` False with a `reason` when the frame was not used;
    `is_latest` True when it was the newest frame (then `tracks` are at its stamp; after an
    inserted late frame they are at the newest stamp). dropped/defaulted count this frame's
    detections that were dropped (non-finite) or got the default covariance."""

    accepted: bool
    reason: str
    is_latest: bool
    tracks: TrackSet
    dropped_detections: int = 0
    defaulted_covariances: int = 0


# ---------------------------------------------------------------------------------------------
# Track table (structure of arrays)


@dataclasses.dataclass
class _Table:
    ids: np.ndarray          # (N,) uint64
    model: np.ndarray        # (N,) int8, CTRV or CV
    x: np.ndarray            # (N, 6)
    P: np.ndarray            # (N, 6, 6)
    votes: np.ndarray        # (N, 7) accumulated class probabilities
    dims: np.ndarray         # (N, 3)
    z: np.ndarray            # (N,)
    box_yaw: np.ndarray      # (N,) smoothed box yaw (heading of slow pedestrians)
    existence: np.ndarray    # (N,)
    confirmed: np.ndarray    # (N,) bool
    hit_bits: np.ndarray     # (N,) uint32, bit 0 = latest frame
    age: np.ndarray          # (N,) frames since birth
    last_hit_ns: np.ndarray  # (N,) int64
    xm: np.ndarray           # (N, 2, 6) IMM mode states (quiet, manoeuvring)
    Pm: np.ndarray           # (N, 2, 6, 6)
    mu: np.ndarray           # (N, 2) mode probabilities

    @classmethod
    def empty(cls) -> '_Table':
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.int8), np.zeros((0, STATE_DIM)),
                   np.zeros((0, STATE_DIM, STATE_DIM)), np.zeros((0, NUM_CLASSES)),
                   np.zeros((0, 3)),
                   np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool),
                   np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros((0, 2, STATE_DIM)), np.zeros((0, 2, STATE_DIM, STATE_DIM)),
                   np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, keep: np.ndarray) -> '_Table':
        """The rows where `keep` (bool mask) holds; the table itself when that is all of them
        (the tracker owns its table and copies it where it keeps a state)."""
        if keep.all():
            return self
        return _Table(*(getattr(self, name)[keep] for name in _TABLE_FIELDS))

    def copy(self) -> '_Table':
        return _Table(*(getattr(self, name).copy() for name in _TABLE_FIELDS))

    def extend(self, other: '_Table') -> '_Table':
        return _Table(*(np.concatenate((getattr(self, name), getattr(other, name)))
                        for name in _TABLE_FIELDS))


_TABLE_FIELDS = tuple(f.name for f in dataclasses.fields(_Table))


@dataclasses.dataclass
class _Frame:
    stamp_ns: int
    detections: Detections      # map frame, cleaned
    before: _Table              # track table before this frame
    before_stamp_ns: int | None  # stamp of the state before this frame


# ---------------------------------------------------------------------------------------------
# Motion models (vectorised over tracks)


def _predict_ctra(x: np.ndarray, P: np.ndarray, dt: float, jerk_sigma: float,
                  yaw_accel_sigma: float, q_scale: np.ndarray,
                  accel_decay_s: float) -> tuple[np.ndarray, np.ndarray]:
    """CTRA step: the CTRV arc driven at the mean speed of the step, v += a dt; the
    acceleration decays with time constant accel_decay_s (Singer): drivers brake or speed up
    for a while, not forever, and a decaying estimate overshoots less after a stop."""
    yaw, v, w, a = x[:, 2], x[:, 3], x[:, 4], x[:, 5]
    vm = v + 0.5 * a * dt
    turning = np.abs(w) > 1e-4
    w_safe = np.where(turning, w, 1.0)
    yaw1 = yaw + w * dt
    s0, c0, s1, c1 = np.sin(yaw), np.cos(yaw), np.sin(yaw1), np.cos(yaw1)
    # Arc when turning, straight line (the w -> 0 limit, to second order) otherwise.
    ds_dv_x = np.where(turning, (s1 - s0) / w_safe, dt * c0)
    ds_dv_y = np.where(turning, (c0 - c1) / w_safe, dt * s0)
    n = len(x)
    F = _identities(n)
    F[:, 0, 2] = np.where(turning, vm / w_safe * (c1 - c0), -vm * dt * s0)
    F[:, 0, 3] = ds_dv_x
    F[:, 0, 4] = np.where(turning, vm * dt * c1 / w_safe - vm * (s1 - s0) / w_safe ** 2,
                          -0.5 * vm * dt * dt * s0)
    F[:, 0, 5] = 0.5 * dt * ds_dv_x
    F[:, 1, 2] = np.where(turning, vm / w_safe * (s1 - s0), vm * dt * c0)
    F[:, 1, 3] = ds_dv_y
    F[:, 1, 4] = np.where(turning, vm * dt * s1 / w_safe - vm * (c0 - c1) / w_safe ** 2,
                          0.5 * vm * dt * dt * c0)
    F[:, 1, 5] = 0.5 * dt * ds_dv_y
    F[:, 2, 4] = dt
    F[:, 3, 5] = dt
    decay = math.exp(-dt / accel_decay_s)
    F[:, 5, 5] = decay
    out = x.copy()
    out[:, 0] += vm * ds_dv_x
    out[:, 1] += vm * ds_dv_y
    out[:, 2] = _wrap(yaw1)
    out[:, 3] = v + a * dt
    out[:, 5] = a * decay
    # Process noise: white jerk along the heading and white yaw acceleration over the step.
    g_j = np.zeros((n, STATE_DIM))
    g_j[:, 0], g_j[:, 1] = dt ** 3 / 6.0 * c0, dt ** 3 / 6.0 * s0
    g_j[:, 3], g_j[:, 5] = 0.5 * dt * dt, dt
    g_w = np.zeros(STATE_DIM)
    g_w[2], g_w[4] = 0.5 * dt * dt, dt
    Q = (jerk_sigma ** 2) * g_j[:, :, None] * g_j[:, None, :] \
        + (yaw_accel_sigma ** 2) * (g_w[:, None] * g_w[None, :])[None]
    return out, F @ P @ F.transpose(0, 2, 1) + q_scale[:, None, None] * Q


def _identities(n: int) -> np.ndarray:
    """(n, 6, 6) identity matrices."""
    eye = np.zeros((n, STATE_DIM * STATE_DIM))
    eye[:, ::STATE_DIM + 1] = 1.0
    return eye.reshape(n, STATE_DIM, STATE_DIM)


def _predict_cv(x: np.ndarray, P: np.ndarray, dt: float, accel_sigma: float,
                q_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    F = np.eye(STATE_DIM)
    F[0, 2] = F[1, 3] = dt
    out = x.copy()
    out[:, 0] += dt * x[:, 2]
    out[:, 1] += dt * x[:, 3]
    q = np.zeros((STATE_DIM, STATE_DIM))
    q[0, 0] = q[1, 1] = dt ** 4 / 4.0
    q[0, 2] = q[2, 0] = q[1, 3] = q[3, 1] = dt ** 3 / 2.0
    q[2, 2] = q[3, 3] = dt * dt
    return out, F @ P @ F.T + (accel_sigma ** 2) * q_scale[:, None, None] * q[None]


def _unused_entries(P: np.ndarray) -> np.ndarray:
    """Decouple the CV model's unused state entries (unit variance, no correlation)."""
    P[:, 4:, :] = 0.0
    P[:, :, 4:] = 0.0
    P[:, 4, 4] = P[:, 5, 5] = 1.0
    return P


def _ctra_to_cv(x: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yaw, v = x[:, 2], x[:, 3]
    c, s = np.cos(yaw), np.sin(yaw)
    J = np.zeros((len(x), STATE_DIM, STATE_DIM))
    J[:, 0, 0] = J[:, 1, 1] = 1.0
    J[:, 2, 2], J[:, 2, 3] = -v * s, c
    J[:, 3, 2], J[:, 3, 3] = v * c, s
    out = np.zeros_like(x)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x[:, 0], x[:, 1], v * c, v * s
    return out, _unused_entries(J @ P @ J.transpose(0, 2, 1))


def _cv_to_ctra(x: np.ndarray, P: np.ndarray, box_yaw: np.ndarray, min_speed: float,
                yaw_rate_sigma: float, accel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    speed = np.hypot(x[:, 2], x[:, 3])
    yaw = np.where(speed > min_speed, np.arctan2(x[:, 3], x[:, 2]), box_yaw)
    out = np.zeros_like(x)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x[:, 0], x[:, 1], yaw, speed
    P_out = np.zeros_like(P)
    P_out[:, :2, :2] = P[:, :2, :2]
    P_out[:, 2, 2] = 0.3 ** 2
    P_out[:, 3, 3] = P[:, 2, 2] + P[:, 3, 3]
    P_out[:, 4, 4] = yaw_rate_sigma ** 2
    P_out[:, 5, 5] = accel_sigma ** 2
    return out, P_out


def _assign(num_t: int, num_d: int, t_of: np.ndarray, d_of: np.ndarray,
            cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment between num_t tracks and num_d detections over the gated
    pairs (t_of, d_of) (row-major order) with their costs; (track rows, detection columns).

    The gating graph splits into independent clusters (objects far apart never compete), so
    each cluster is solved on its own: a lone track-detection pair directly, larger clusters
    with the Hungarian algorithm. Same result as one dense assignment, far faster with many
    objects (200 x 200 dense: ~4 ms; clusters: well under 1 ms).
    """
    # A pair whose track and detection both have no other gated partner is a cluster of its
    # own; that is most pairs, and they need no graph search.
    single = (np.bincount(t_of, minlength=num_t)[t_of] == 1) \
        & (np.bincount(d_of, minlength=num_d)[d_of] == 1)
    rows, cols = [t_of[single]], [d_of[single]]
    if not single.all():
        t_of, d_of, cost = t_of[~single], d_of[~single], cost[~single]
        label = _cluster_labels(num_t + num_d, t_of, num_t + d_of)
        t_label, d_label = label[:num_t], label[num_t:]
        # A cluster's label is its lowest node, always a track: ascending labels solve the
        # clusters in the order of their first track.
        pair_label = t_label[t_of]
        for cluster in np.unique(pair_label):
            t_idx = np.flatnonzero(t_label == cluster)
            d_idx = np.flatnonzero(d_label == cluster)
            pairs = pair_label == cluster
            r, c = np.searchsorted(t_idx, t_of[pairs]), np.searchsorted(d_idx, d_of[pairs])
            sub_valid = np.zeros((len(t_idx), len(d_idx)), bool)
            sub_valid[r, c] = True
            sub_cost = np.full(sub_valid.shape, _GATED_COST)
            sub_cost[r, c] = cost[pairs]
            r, c = linear_sum_assignment(sub_cost)
            ok = sub_valid[r, c]
            rows.append(t_idx[r[ok]])
            cols.append(d_idx[c[ok]])
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def _cluster_labels(num_nodes: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges (u, v): each node's label is the lowest
    node of its component. Each pass lowers both ends of every edge to the lower of their
    labels, then points every node at its label's label; gating clusters are small and settle
    in two or three passes (building a scipy.sparse graph costs more than that)."""
    label = np.arange(num_nodes)
    while True:
        lowest = np.minimum(label[u], label[v])
        new = label.copy()
        np.minimum.at(new, u, lowest)
        np.minimum.at(new, v, lowest)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def _mode_diff(a: np.ndarray, b: np.ndarray, ctrv: np.ndarray) -> np.ndarray:
    """a - b over the state's last axis, the CTRV yaw difference wrapped; ctrv broadcasts
    over a's leading axis."""
    d = a - b
    yaw = d[..., 2]
    # np.where over the broadcast mask: boolean indexing of a strided slice costs more.
    yaw[...] = np.where(ctrv.reshape(ctrv.shape + (1,) * (yaw.ndim - 1)), _wrap(yaw), yaw)
    return d


def _combine(xm: np.ndarray, Pm: np.ndarray, mu: np.ndarray,
             ctrv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IMM output: the mode mixture's mean and covariance, (N, 6) and (N, 6, 6)."""
    x = xm[:, 0] + np.einsum('nj,njk->nk', mu, _mode_diff(xm, xm[:, :1], ctrv))
    x[ctrv, 2] = _wrap(x[ctrv, 2])
    e = _mode_diff(xm, x[:, None], ctrv)
    P = np.einsum('nj,njkl->nkl', mu, Pm + e[..., :, None] * e[..., None, :])
    return x, P


# ---------------------------------------------------------------------------------------------
# The tracker


class Tracker:
    """Stateful multi-object tracker; see the module docstring."""

    def __init__(self, params: TrackerParams | None = None):
        self.params = params or TrackerParams()
        self.stats = TrackerStats()
        self.poses = PoseHistory(self.params.pose_history_s,
                                 self.params.max_pose_extrapolation_s)
        self._table = _Table.empty()
        self._stamp_ns: int | None = None
        self._history: list[_Frame] = []
        self._next_id = 1
        # (frame stamp, detection index) -> id: a re-run frame gives a track born from the
        # same detection the same id, so a late frame does not renumber published tracks.
        self._birth_ids: dict[tuple[int, int], int] = {}
        p = self.params
        # IMM constants: mode transition matrix, process noise scale per mode, mode
        # probabilities of a new track.
        self._mode_transitions = np.array(
            [[1.0 - p.manoeuvre_start_prob, p.manoeuvre_start_prob],
             [p.manoeuvre_end_prob, 1.0 - p.manoeuvre_end_prob]])
        self._mode_noise_scale = np.array([1.0, p.manoeuvre_noise_scale])
        self._birth_mode_probs = self._mode_transitions[0].copy()

    # -- inputs --------------------------------------------------------------------------
    def add_ego_pose(self, stamp_s: float, x_m: float, y_m: float, yaw_rad: float) -> bool:
        """Ego pose (map -> base_link) at stamp_s for base_link detections; False if invalid."""
        if not math.isfinite(stamp_s):
            return False
        return self.poses.add(int(round(stamp_s * NS_PER_S)), x_m, y_m, yaw_rad)

    @property
    def stamp_ns(self) -> int | None:
        """Stamp of the newest processed frame."""
        return self._stamp_ns

    @property
    def num_tracks(self) -> int:
        """All tracks, tentative ones included."""
        return len(self._table)

    def update(self, stamp_s: float, detections: Detections) -> UpdateResult:
        """Process one frame of detections stamped stamp_s (seconds); see the module doc."""
        if not isinstance(detections, Detections):
            raise TrackerInputError(f'detections must be Detections, got {type(detections)}')
        if not math.isfinite(stamp_s):
            return self._reject(f'stamp {stamp_s!r} is not finite')
        stamp_ns = int(round(stamp_s * NS_PER_S))
        if detections.frame_id not in SUPPORTED_FRAMES:
            return self._reject(f'frame {detections.frame_id!r} is not one of '
                                f'{list(SUPPORTED_FRAMES)}')
        if self._stamp_ns is not None:
            if any(frame.stamp_ns == stamp_ns for frame in self._history) \
                    or stamp_ns == self._stamp_ns:
                self.stats.duplicate_stamps += 1
                return self._reject(f'duplicate stamp {stamp_s:.9f} s: frame ignored',
                                    counted=False)
            late_s = (self._stamp_ns - stamp_ns) / NS_PER_S
            if late_s > self.params.max_out_of_order_s:
                self.stats.late_dropped += 1
                return self._reject(f'frame {late_s:.3f} s older than the newest (limit '
                                    f'{self.params.max_out_of_order_s:.3f} s): dropped',
                                    counted=False)
        if detections.frame_id == 'base_link' and len(detections):
            pose = self.poses.at(stamp_ns)
            if pose is None:
                return self._reject(f'no ego pose at {stamp_s:.3f} s for base_link detections')
            detections = detections_to_map(detections, pose)
        clean, dropped, defaulted = self._clean(detections)
        self.stats.frames += 1
        if self._stamp_ns is None or stamp_ns > self._stamp_ns:
            self._history.append(_Frame(stamp_ns, clean, self._table.copy(), self._stamp_ns))
            self._step(stamp_ns, clean)
            is_latest = True
        else:
            self.stats.late_inserted += 1
            self._insert_late(stamp_ns, clean)
            is_latest = False
        self._prune_history()
        return UpdateResult(True, '', is_latest, self.output(), dropped, defaulted)

    def output(self) -> TrackSet:
        """Confirmed tracks at the newest processed stamp."""
        return self._track_set(self._table.select(self._table.confirmed),
                               self._stamp_ns if self._stamp_ns is not None else 0)

    # -- internals -----------------------------------------------------------------------
    def _reject(self, reason: str, counted: bool = True) -> UpdateResult:
        if counted:
            self.stats.rejected_frames += 1
        return UpdateResult(False, reason, False, self.output())

    def _clean(self, dets: Detections) -> tuple[Detections, int, int]:
        """Drop detections with non-finite pose or size; default invalid covariances/classes."""
        p = self.params
        finite = (np.all(np.isfinite(dets.xy_m), axis=1) & np.isfinite(dets.yaw_rad)
                  & np.all(np.isfinite(dets.dims_m), axis=1) & np.all(dets.dims_m > 0.0, axis=1))
        dropped = int(np.count_nonzero(~finite))
        self.stats.nonfinite_detections += dropped
        dets = dets.select(finite)
        n = len(dets)
        cov = dets.covariance.copy()
        diag = np.diagonal(cov, axis1=1, axis2=2)
        bad_cov = ~np.all(np.isfinite(cov.reshape(n, 9)), axis=1) | np.any(diag <= 0.0, axis=1)
        default = np.diag([p.default_position_sigma_m ** 2, p.default_position_sigma_m ** 2,
                           p.default_yaw_sigma_rad ** 2])
        cov[bad_cov] = default
        cov = 0.5 * (cov + cov.transpose(0, 2, 1))
        floor = p.min_position_sigma_m ** 2
        cov[:, 0, 0] = np.maximum(cov[:, 0, 0], floor)
        cov[:, 1, 1] = np.maximum(cov[:, 1, 1], floor)
        # A correlation beyond +-1 (not positive definite) would make the gate meaningless.
        det_xy = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
        not_pd = det_xy <= 1e-12
        cov[not_pd] = default
        defaulted = int(np.count_nonzero(bad_cov | not_pd))
        self.stats.default_covariances += defaulted
        probs = dets.class_probs.copy()
        bad_probs = ~np.all(np.isfinite(probs), axis=1) | np.any(probs < 0.0, axis=1) \
            | (probs.sum(axis=1) <= 0.0)
        probs[bad_probs] = 1.0 / NUM_CLASSES
        probs /= probs.sum(axis=1, keepdims=True)
        self.stats.default_class_probs += int(np.count_nonzero(bad_probs))
        z = np.where(np.isfinite(dets.z_m), dets.z_m, 0.5 * dets.dims_m[:, 2])
        existence = np.where(np.isfinite(dets.existence), np.clip(dets.existence, 0.0, 1.0),
                             1.0)
        return Detections('map', dets.xy_m, z, _wrap(dets.yaw_rad), dets.dims_m, probs, cov,
                          existence), dropped, defaulted

    def _insert_late(self, stamp_ns: int, dets: Detections) -> None:
        index = bisect.bisect_left([f.stamp_ns for f in self._history], stamp_ns)
        later = self._history[index:]
        if later:
            self._table = later[0].before.copy()
            self._stamp_ns = later[0].before_stamp_ns
        new_frame = _Frame(stamp_ns, dets, self._table.copy(), self._stamp_ns)
        self._step(stamp_ns, dets)
        for frame in later:
            frame.before, frame.before_stamp_ns = self._table.copy(), self._stamp_ns
            self._step(frame.stamp_ns, frame.detections)
        self._history.insert(index, new_frame)

    def _prune_history(self) -> None:
        if self._stamp_ns is None:
            return
        oldest_ns = self._stamp_ns - int(self.params.max_out_of_order_s * NS_PER_S)
        # Keep one frame at or before the window start: its saved state is where a late frame
        # inside the window restarts from.
        cut = 0
        while cut + 1 < len(self._history) and self._history[cut + 1].stamp_ns <= oldest_ns:
            cut += 1
        if cut:
            del self._history[:cut]
            first = self._history[0].stamp_ns
            self._birth_ids = {k: v for k, v in self._birth_ids.items() if k[0] >= first}

    def _step(self, stamp_ns: int, dets: Detections) -> None:
        p = self.params
        table = self._table
        dt = 0.0 if self._stamp_ns is None else (stamp_ns - self._stamp_ns) / NS_PER_S
        self._stamp_ns = stamp_ns
        if len(table) and dt > 0.0:
            self._predict(table, dt)
        # Tracks already past their coast limit must not grab detections with huge gates.
        coast_s = (stamp_ns - table.last_hit_ns) / NS_PER_S
        limit = np.where(table.confirmed, p.max_coast_confirmed_s, p.max_coast_tentative_s)
        table = table.select(coast_s <= limit + 1e-9)
        rows, cols = self._associate(table, dets)
        hit = np.zeros(len(table), bool)
        hit[rows] = True
        if len(rows):
            self._update(table, rows, dets.select(cols))
            table.last_hit_ns[rows] = stamp_ns
        # Existence: Bayes update with detection and clutter probabilities.
        e = table.existence
        pd, pc = p.detection_probability, p.clutter_probability
        e_hit = e * pd / (e * pd + (1.0 - e) * pc)
        e_miss = e * (1.0 - pd) / (1.0 - e * pd)
        table.existence = np.clip(np.where(hit, e_hit, e_miss), _MIN_EXISTENCE, _MAX_EXISTENCE)
        window_mask = np.uint32((1 << p.confirm_window) - 1)
        table.hit_bits = ((table.hit_bits << np.uint32(1)) | hit.astype(np.uint32)) & window_mask
        table.age += 1
        table.confirmed |= np.bitwise_count(table.hit_bits) >= p.confirm_hits
        keep = (table.existence >= p.delete_existence) & (
            table.confirmed | (table.age < p.confirm_window))
        table = table.select(keep)
        unassigned = np.ones(len(dets), bool)
        unassigned[cols] = False
        confirmed = table.select(table.confirmed)
        boxes = np.column_stack([confirmed.x[:, :2], confirmed.box_yaw, confirmed.dims[:, :2]])
        unassigned &= ~points_in_bev_boxes(dets.xy_m, boxes).any(axis=1)
        self._table = table.extend(self._births(stamp_ns, dets, np.flatnonzero(unassigned),
                                                len(table)))

    def _predict(self, table: _Table, dt: float) -> None:
        """IMM mixing, then each mode predicted with its process noise, then combined."""
        p = self.params
        n = len(table)
        ctrv = table.model == CTRV
        trans = self._mode_transitions
        c = np.maximum(table.mu @ trans, 1e-12)                       # (N, j)
        w = table.mu[:, :, None] * trans[None] / c[:, None, :]        # (N, i, j) = mu_i|j
        x_mix = table.xm[:, 0][:, None] + np.einsum(
            'nij,nik->njk', w, _mode_diff(table.xm, table.xm[:, :1], ctrv))
        e = _mode_diff(table.xm[:, :, None], x_mix[:, None], ctrv)   # (N, i, j, 6)
        P_mix = np.einsum('nij,nikl->njkl', w, table.Pm) \
            + np.einsum('nij,nijk,nijl->njkl', w, e, e)
        xf = x_mix.reshape(2 * n, STATE_DIM)
        Pf = P_mix.reshape(2 * n, STATE_DIM, STATE_DIM)
        scale = np.repeat(self._mode_noise_scale[None], n, axis=0).reshape(-1)
        ctrv_f = np.repeat(ctrv, 2)
        if ctrv.any():
            xf[ctrv_f], Pf[ctrv_f] = _predict_ctra(
                xf[ctrv_f], Pf[ctrv_f], dt, p.vehicle_jerk_sigma_mps3,
                p.vehicle_yaw_accel_sigma_rps2, scale[ctrv_f], p.accel_decay_s)
        if (~ctrv).any():
            xf[~ctrv_f], Pf[~ctrv_f] = _predict_cv(
                xf[~ctrv_f], Pf[~ctrv_f], dt, p.pedestrian_accel_sigma_mps2, scale[~ctrv_f])
        table.xm = xf.reshape(n, 2, STATE_DIM)
        table.Pm = Pf.reshape(n, 2, STATE_DIM, STATE_DIM)
        table.mu = c / c.sum(axis=1, keepdims=True)
        table.x, table.P = _combine(table.xm, table.Pm, table.mu, ctrv)

    def _associate(self, table: _Table, dets: Detections) -> tuple[np.ndarray, np.ndarray]:
        """Gated Hungarian assignment; (track rows, detection columns) of accepted pairs."""
        p = self.params
        empty = np.zeros(0, np.int64)
        if not len(table) or not len(dets):
            return empty, empty
        # The Euclidean gate first, on all (T, D) pairs: it is cheap and leaves few pairs.
        rx = dets.xy_m[None, :, 0] - table.x[:, None, 0]
        ry = dets.xy_m[None, :, 1] - table.x[:, None, 1]
        t_of, d_of = np.nonzero(rx * rx + ry * ry <= p.max_gate_distance_m ** 2)
        # Innovation covariance S = P_xy + R_xy of those pairs (a b; b c), then the
        # position-innovation Mahalanobis gate.
        P, R = table.P[t_of], dets.covariance[d_of]
        a = P[:, 0, 0] + R[:, 0, 0]
        b = 0.5 * (P[:, 0, 1] + P[:, 1, 0]) + 0.5 * (R[:, 0, 1] + R[:, 1, 0])
        c = P[:, 1, 1] + R[:, 1, 1]
        rx, ry = rx[t_of, d_of], ry[t_of, d_of]
        d2 = (c * rx * rx - 2.0 * b * rx * ry + a * ry * ry) / (a * c - b * b)
        gated = d2 <= p.gate_mahalanobis_sq
        if not gated.any():
            return empty, empty
        t_of, d_of = t_of[gated], d_of[gated]
        track_probs = table.votes / table.votes.sum(axis=1, keepdims=True)
        overlap = (track_probs @ dets.class_probs.T)[t_of, d_of]
        cost = d2[gated] + p.class_mismatch_cost * (1.0 - overlap)
        return _assign(len(table), len(dets), t_of, d_of, cost)

    def _update(self, table: _Table, rows: np.ndarray, dets: Detections) -> None:
        """IMM-EKF update of tracks `rows` with their detections (same order): both modes,
        mode probabilities from the measurement likelihoods; then shape and class."""
        p = self.params
        k = len(rows)
        ctrv = table.model[rows] == CTRV
        ctrv_f = np.repeat(ctrv, 2)
        x = table.xm[rows].reshape(2 * k, STATE_DIM)
        P = table.Pm[rows].reshape(2 * k, STATE_DIM, STATE_DIM)
        H = np.zeros((2 * k, 3, STATE_DIM))
        H[:, 0, 0] = H[:, 1, 1] = 1.0
        H[ctrv_f, 2, 2] = 1.0
        R = np.repeat(dets.covariance, 2, axis=0)
        # CV tracks do not measure yaw: a zero row of H with unit variance leaves the gain
        # column zero (and both modes' likelihoods scaled alike), so both models go through
        # one batched update.
        R[~ctrv_f, 2, :] = 0.0
        R[~ctrv_f, :, 2] = 0.0
        R[~ctrv_f, 2, 2] = 1.0
        # A box pointing against the track heading is turned (decided on the combined yaw).
        meas_yaw = dets.yaw_rad.copy()
        flip = np.abs(_wrap(meas_yaw - table.x[rows, 2])) > 0.5 * np.pi
        meas_yaw = np.repeat(np.where(flip, _wrap(meas_yaw + np.pi), meas_yaw), 2)
        y = np.zeros((2 * k, 3))
        y[:, :2] = np.repeat(dets.xy_m, 2, axis=0) - x[:, :2]
        y[:, 2] = np.where(ctrv_f, _wrap(meas_yaw - x[:, 2]), 0.0)
        PHt = P @ H.transpose(0, 2, 1)
        S = H @ PHt + R
        S_inv = np.linalg.inv(S)
        K = PHt @ S_inv
        x = x + np.einsum('kij,kj->ki', K, y)
        A = np.eye(STATE_DIM)[None] - K @ H
        P = A @ P @ A.transpose(0, 2, 1) + K @ R @ K.transpose(0, 2, 1)
        P = 0.5 * (P + P.transpose(0, 2, 1))
        x[ctrv_f, 2] = _wrap(x[ctrv_f, 2])
        log_like = (-0.5 * (np.einsum('ki,kij,kj->k', y, S_inv, y)
                            + np.log(np.linalg.det(S)))).reshape(k, 2)
        log_like -= log_like.max(axis=1, keepdims=True)
        mu = np.maximum(table.mu[rows] * np.exp(log_like), 1e-12)
        mu /= mu.sum(axis=1, keepdims=True)
        xm = x.reshape(k, 2, STATE_DIM)
        Pm = P.reshape(k, 2, STATE_DIM, STATE_DIM)
        x, P = _combine(xm, Pm, mu, ctrv)
        # A vehicle clearly moving backwards got its heading from a flipped box: turn it.
        backwards = ctrv & (x[:, 3] < -p.heading_flip_speed_mps)
        if backwards.any():
            for arr_x, arr_P in ((x, P), (xm, Pm)):
                arr_x[backwards, ..., 2] = _wrap(arr_x[backwards, ..., 2] + np.pi)
                for i in (3, 5):  # speed and acceleration change sign
                    arr_x[backwards, ..., i] *= -1.0
                    arr_P[backwards, ..., i, :] *= -1.0
                    arr_P[backwards, ..., :, i] *= -1.0
        table.xm[rows], table.Pm[rows], table.mu[rows] = xm, Pm, mu
        a = p.shape_smoothing
        box_yaw = table.box_yaw[rows]
        box_flip = np.abs(_wrap(dets.yaw_rad - box_yaw)) > 0.5 * np.pi
        meas_box = np.where(box_flip, _wrap(dets.yaw_rad + np.pi), dets.yaw_rad)
        table.box_yaw[rows] = np.where(ctrv, x[:, 2], _wrap(box_yaw + a * _wrap(meas_box
                                                                                 - box_yaw)))
        table.dims[rows] += a * (dets.dims_m - table.dims[rows])
        table.z[rows] += a * (dets.z_m - table.z[rows])
        table.votes[rows] += dets.class_probs
        table.x[rows], table.P[rows] = x, P
        self._switch_models(table, rows)

    def _switch_models(self, table: _Table, rows: np.ndarray) -> None:
        """A track whose class vote moved between pedestrian and vehicle changes its model."""
        p = self.params
        want = np.where(np.argmax(table.votes[rows], axis=1) == PEDESTRIAN, CV, CTRV)
        to_cv = rows[(want == CV) & (table.model[rows] == CTRV)]
        to_ctrv = rows[(want == CTRV) & (table.model[rows] == CV)]
        for index, model in ((to_cv, CV), (to_ctrv, CTRV)):
            if not len(index):
                continue
            xf = table.xm[index].reshape(-1, STATE_DIM)
            Pf = table.Pm[index].reshape(-1, STATE_DIM, STATE_DIM)
            if model == CV:
                xf, Pf = _ctra_to_cv(xf, Pf)
            else:
                xf, Pf = _cv_to_ctra(xf, Pf, np.repeat(table.box_yaw[index], 2),
                                     p.pedestrian_heading_min_speed_mps,
                                     p.init_yaw_rate_sigma_rps, p.init_accel_sigma_mps2)
            table.model[index] = model
            table.xm[index] = xf.reshape(-1, 2, STATE_DIM)
            table.Pm[index] = Pf.reshape(-1, 2, STATE_DIM, STATE_DIM)
            table.x[index], table.P[index] = _combine(table.xm[index], table.Pm[index],
                                                      table.mu[index], table.model[index] == CTRV)

    def _births(self, stamp_ns: int, dets: Detections, index: np.ndarray,
                num_tracks: int) -> _Table:
        p = self.params
        room = max(p.max_tracks - num_tracks, 0)
        if len(index) > room:
            self.stats.births_dropped += len(index) - room
            index = index[:room]
        n = len(index)
        if not n:
            return _Table.empty()
        d = dets.select(index)
        model = np.where(np.argmax(d.class_probs, axis=1) == PEDESTRIAN, CV, CTRV).astype(np.int8)
        ctrv = model == CTRV
        x = np.zeros((n, STATE_DIM))
        x[:, :2] = d.xy_m
        x[ctrv, 2] = d.yaw_rad[ctrv]
        P = np.zeros((n, STATE_DIM, STATE_DIM))
        P[:, :2, :2] = d.covariance[:, :2, :2]
        P[ctrv, 2, 2] = d.covariance[ctrv, 2, 2]
        P[ctrv, 3, 3] = p.init_speed_sigma_mps ** 2
        P[ctrv, 4, 4] = p.init_yaw_rate_sigma_rps ** 2
        P[ctrv, 5, 5] = p.init_accel_sigma_mps2 ** 2
        P[~ctrv, 2, 2] = P[~ctrv, 3, 3] = p.init_pedestrian_speed_sigma_mps ** 2
        P[~ctrv, 4, 4] = P[~ctrv, 5, 5] = 1.0
        ids = np.empty(n, np.uint64)
        for k, j in enumerate(index):
            key = (stamp_ns, int(j))
            track_id = self._birth_ids.get(key)
            if track_id is None:
                track_id = self._next_id
                self._next_id += 1
                self._birth_ids[key] = track_id
            ids[k] = track_id
        confirmed = np.full(n, p.confirm_hits <= 1)
        return _Table(ids, model, x, P, d.class_probs.copy(), d.dims_m.copy(), d.z_m.copy(),
                      d.yaw_rad.copy(), np.full(n, p.birth_existence), confirmed,
                      np.ones(n, np.uint32), np.ones(n, np.int64),
                      np.full(n, stamp_ns, np.int64), np.repeat(x[:, None], 2, axis=1),
                      np.repeat(P[:, None], 2, axis=1),
                      np.repeat(self._birth_mode_probs[None], n, axis=0))

    def _track_set(self, t: _Table, stamp_ns: int) -> TrackSet:
        p = self.params
        n = len(t)
        ctrv = t.model == CTRV
        x, P = t.x, t.P
        speed = np.where(ctrv, x[:, 3], np.hypot(x[:, 2], x[:, 3]))
        moving = ~ctrv & (speed > p.pedestrian_heading_min_speed_mps)
        yaw = np.where(ctrv, x[:, 2], np.where(moving, np.arctan2(x[:, 3], x[:, 2]),
                                               t.box_yaw))
        c, s = np.cos(yaw), np.sin(yaw)
        # (Columns written into preallocated arrays: np.stack costs more than the arithmetic.)
        v_map = np.empty((n, 2))
        np.multiply(speed, c, out=v_map[:, 0])
        np.multiply(speed, s, out=v_map[:, 1])
        v_map = np.where(ctrv[:, None], v_map, x[:, 2:4])
        v_obj = np.empty((n, 2))
        np.add(c * v_map[:, 0], s * v_map[:, 1], out=v_obj[:, 0])
        np.add(-s * v_map[:, 0], c * v_map[:, 1], out=v_obj[:, 1])
        pose_cov = P[:, :3, :3].copy()
        vel_cov = np.zeros((n, 2, 2))
        if n:
            # CTRV: along-track from speed, across-track from the heading uncertainty.
            vel_cov[ctrv, 0, 0] = P[ctrv, 3, 3]
            vel_cov[ctrv, 1, 1] = speed[ctrv] ** 2 * P[ctrv, 2, 2]
            rot = np.empty((n, 2, 2))
            rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c, s, -s, c
            cv_vel = rot @ P[:, 2:4, 2:4] @ rot.transpose(0, 2, 1)
            vel_cov[~ctrv] = cv_vel[~ctrv]
            # CV has no yaw state: its heading variance follows from the velocity uncertainty.
            pose_cov[~ctrv, 2, :] = 0.0
            pose_cov[~ctrv, :, 2] = 0.0
            yaw_var = (P[:, 2, 2] + P[:, 3, 3]) / np.maximum(speed ** 2, 1e-6)
            pose_cov[~ctrv, 2, 2] = np.minimum(yaw_var[~ctrv], (0.5 * np.pi) ** 2)
        yaw_rate = np.where(ctrv, x[:, 4], 0.0)
        probs = t.votes / np.maximum(t.votes.sum(axis=1, keepdims=True), 1e-12)
        return TrackSet(stamp_ns, t.ids.copy(), probs,
                        np.concatenate([x[:, :2], t.z[:, None]], axis=1),
                        _wrap(yaw), np.hypot(v_map[:, 0], v_map[:, 1]), v_obj, v_map,
                        yaw_rate, t.dims.copy(), pose_cov, vel_cov, t.existence.copy())
