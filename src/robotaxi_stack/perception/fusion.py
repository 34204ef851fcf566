"""LiDAR-camera object fusion: LiDAR objects in base_link refined by 2D camera detections
(pure core: numpy and scipy only).

The LiDAR gives every object its position and size; the camera cannot (no range) but sees
classes well. So fusion never creates an object, it only refines the LiDAR's:

1. Projection. The 8 corners of each LiDAR box go into the camera body frame (x forward,
   y left, z up, as `config/vehicle/*.yaml` mounts it) and through the pinhole model
   u = K (-y, -z, x) / x. A box that straddles the camera's near plane is clipped there: the
   points where its 12 edges cross the plane replace the corners behind it, so a car beside
   the camera still gets the part of its box that the camera sees. The bounding rectangle is
   clipped to the image (-0.5 <= u <= width - 0.5, likewise v, pixel centres at integers as
   in OpenCV and CameraInfo); an object is in view when the clipped rectangle has an area
   (a pedestrian at 70 m is under a pixel wide, and still in view). Objects out of view pass
   through unchanged.
2. Matching. IoU of every projected box with every camera box; pairs beyond
   `max_match_range_m`, below `min_camera_score` or mixing a vehicle class with a vulnerable
   road user class (`gate_vehicle_vulnerable`) are gated out; the Hungarian assignment (scipy)
   keeps pairs with IoU >= `match_iou_threshold`.
3. Class refinement of a matched pair: a weighted log-linear pool of the two class
   distributions (each sensor puts its probability on its label and spreads the rest evenly
   over the other classes; weights `lidar_class_weight`, `camera_class_weight`), so agreement
   raises the probability and a disagreement goes to the more confident, more trusted sensor.
   An UNKNOWN object (a cluster the network did not classify) has no class vote: matched to
   a camera detection of score >= `cluster_min_camera_score` it takes the camera's class. A
   camera detection without a class (UNKNOWN) leaves the LiDAR class alone. Existence goes
   up by a noisy-or with the camera evidence: e = 1 - (1 - e) (1 - w s).
4. Camera boost. An unmatched camera detection of a `boost_labels` class (pedestrian,
   bicycle) whose box holds the projected footprint centre of an unmatched UNKNOWN cluster of
   plausible size, at a range where the box's pixel height means a plausible metric height,
   raises that cluster's existence (noisy-or with `boost_existence_weight`): a pedestrian
   that the detector missed but the clustering saw, with few points, is kept by the tracker.
5. Camera detections with no LiDAR support produce no object (they have no range); they are
   counted as `camera_only`.

Label codes are robotaxi_msgs/ObjectClass values (the core imports no message package).
Bad input never raises from `fuse`: malformed arrays give an empty result with a reason,
non-finite or invalid rows are dropped and counted, no camera frame passes LiDAR through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from robotaxi_stack.common.params import ParameterError, check_fields, param

# robotaxi_msgs/ObjectClass labels.
LABEL_UNKNOWN = 0
LABEL_CAR = 1
LABEL_TRUCK = 2
LABEL_BUS = 3
LABEL_BICYCLE = 4
LABEL_MOTORCYCLE = 5
LABEL_PEDESTRIAN = 6
NUM_LABELS = 7
VEHICLE_LABELS = (LABEL_CAR, LABEL_TRUCK, LABEL_BUS)
VULNERABLE_LABELS = (LABEL_BICYCLE, LABEL_MOTORCYCLE, LABEL_PEDESTRIAN)
# Label -> group lookup tables (indexing beats np.isin on small arrays).
_IS_VEHICLE = np.isin(np.arange(NUM_LABELS), VEHICLE_LABELS)
_IS_VULNERABLE = np.isin(np.arange(NUM_LABELS), VULNERABLE_LABELS)
_KNOWN_LABELS = NUM_LABELS - 1  # classes 1..6 take part in the class vote
NO_CAMERA_REASON = 'no camera frame'
# Class probabilities enter the log-linear pool clipped to (uniform, this): a sensor that is
# "certain" must not veto the other with log(0).
_MAX_VOTE_PROBABILITY = 0.999
# Box corners in units of the half extents (l, w, h), and the 12 edges between them.
_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1.0, 1.0) for sy in (-1.0, 1.0)
                          for sz in (-1.0, 1.0)])
_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8)
                   if np.count_nonzero(_CORNER_SIGNS[a] != _CORNER_SIGNS[b]) == 1])
# base_link-style camera body frame (x forward, y left, z up) -> optical (x right, y down,
# z forward): rows are the optical axes in the body frame.
_OPTICAL_FROM_BODY = np.array([[0.0, -1.0, 0.0],
                               [0.0, 0.0, -1.0],
                               [1.0, 0.0, 0.0]])


class FusionParamError(ParameterError):
    """A fusion parameter is out of range or inconsistent (message names it)."""


class FusionInputError(ValueError):
    """A camera calibration is malformed (not finite, not a pinhole K, not a rigid motion)."""


@dataclass(frozen=True, kw_only=True)
class FusionParams:
    """Matching, class refinement and existence parameters of LiDAR-camera fusion."""

    match_iou_threshold: float = param(0.3, min=0.01, max=1.0,
                                       description='least IoU of a projected LiDAR box and '
                                       'a camera box to match them')
    max_match_range_m: float = param(80.0, min=1.0, max=500.0,
                                     description='objects farther from base_link are neither '
                                     'matched nor boosted (camera boxes too small to tell)')
    gate_vehicle_vulnerable: bool = param(True, description='never match a vehicle class '
                                          '(car, truck, bus) with a vulnerable road user class '
                                          '(bicycle, motorcycle, pedestrian)')
    min_camera_score: float = param(0.3, min=0.0, max=1.0,
                                    description='weaker camera detections are ignored')
    lidar_class_weight: float = param(1.0, min=0.0, max=10.0,
                                      description='weight of the LiDAR class vote')
    camera_class_weight: float = param(1.0, min=0.0, max=10.0,
                                       description='weight of the camera class vote')
    cluster_min_camera_score: float = param(0.5, min=0.0, max=1.0,
                                            description='least camera score for an UNKNOWN '
                                            'object to take the camera class')
    match_existence_weight: float = param(0.6, min=0.0, max=1.0,
                                          description='noisy-or weight of a matched camera '
                                          'score in the existence probability')
    boost_labels: tuple = param((LABEL_BICYCLE, LABEL_PEDESTRIAN),
                                description='camera classes whose unmatched detections '
                                'raise the existence of clusters inside their box')
    boost_min_camera_score: float = param(0.5, min=0.0, max=1.0,
                                          description='least score of a boosting detection')
    boost_existence_weight: float = param(0.5, min=0.0, max=1.0,
                                          description='noisy-or weight of a boosting score')
    boost_box_margin: float = param(0.25, min=0.0, max=2.0,
                                    description='the camera box grows by this fraction of '
                                    'its width/height on each side for the footprint test')
    boost_min_height_m: float = param(0.5, min=0.0, max=5.0,
                                      description='least plausible cluster height, and least '
                                      'metric height of the camera box at its range')
    boost_max_height_m: float = param(2.5, min=0.1, max=10.0,
                                      description='largest plausible height (cluster, box)')
    boost_max_footprint_m: float = param(2.5, min=0.1, max=20.0,
                                         description='largest plausible cluster length/width')
    max_existence_probability: float = param(0.99, min=0.01, max=1.0,
                                             description='cap of a raised existence')
    near_plane_m: float = param(0.1, min=0.01, max=10.0,
                                description='boxes are clipped at this camera depth')

    def __post_init__(self) -> None:
        check_fields(self, FusionParamError, 'fusion: ')
        labels = self.boost_labels
        if any(isinstance(v, bool) or not isinstance(v, int)
               or not LABEL_UNKNOWN < v < NUM_LABELS for v in labels):
            raise FusionParamError(f'fusion: parameter boost_labels = {list(labels)}: each '
                                   f'must be an ObjectClass label in [1, {NUM_LABELS - 1}]')
        if self.boost_min_height_m >= self.boost_max_height_m:
            raise FusionParamError(
                f'fusion: parameter boost_min_height_m = {self.boost_min_height_m} must be < '
                f'boost_max_height_m = {self.boost_max_height_m}')


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """Pinhole camera: intrinsic (3, 3) K of the optical frame in pixels; camera_from_base
    (4, 4) maps base_link points into the camera body frame (x forward, y left, z up); image
    width_px x height_px. Validated at construction (FusionInputError)."""

    intrinsic: np.ndarray
    camera_from_base: np.ndarray
    width_px: int
    height_px: int

    def __post_init__(self) -> None:
        k = np.array(self.intrinsic, dtype=np.float64)
        transform = np.array(self.camera_from_base, dtype=np.float64)
        if k.shape != (3, 3) or not np.all(np.isfinite(k)):
            raise FusionInputError(f'camera intrinsic must be a finite 3x3 matrix, got shape '
                                   f'{k.shape}')
        if not (k[0, 0] > 0.0 and k[1, 1] > 0.0 and k[1, 0] == 0.0
                and np.array_equal(k[2], [0.0, 0.0, 1.0])):
            raise FusionInputError(f'camera intrinsic is not a pinhole K (fx, fy > 0, last '
                                   f'row 0 0 1): {k.tolist()}')
        if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
            raise FusionInputError('camera_from_base must be a finite 4x4 transform, got '
                                   f'shape {transform.shape}')
        rotation = transform[:3, :3]
        if (not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
                or np.linalg.det(rotation) <= 0.0
                or not np.array_equal(transform[3], [0.0, 0.0, 0.0, 1.0])):
            raise FusionInputError('camera_from_base is not a rigid transform (rotation and '
                                   'translation, last row 0 0 0 1)')
        for name in ('width_px', 'height_px'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FusionInputError(f'camera {name} = {value!r}: must be a positive integer')
            object.__setattr__(self, name, int(value))
        k.setflags(write=False)
        transform.setflags(write=False)
        object.__setattr__(self, 'intrinsic', k)
        object.__setattr__(self, 'camera_from_base', transform)

    @classmethod
    def from_camera_config(cls, camera: Any) -> CameraCalibration:
        """From a vehicle's `camera_front` (sim.vehicle_dynamics.CameraConfig: mount in
        base_link, intrinsics, size)."""
        base_from_camera = np.asarray(camera.mount.transform(), dtype=np.float64)
        camera_from_base = np.eye(4)
        camera_from_base[:3, :3] = base_from_camera[:3, :3].T
        camera_from_base[:3, 3] = -base_from_camera[:3, :3].T @ base_from_camera[:3, 3]
        return cls(camera.intrinsic_matrix(), camera_from_base, camera.width_px,
                   camera.height_px)


@dataclass(frozen=True, eq=False)
class LidarObjects:
    """LiDAR objects of one frame in base_link.

    boxes (N, 7) [x, y, z, length, width, height, yaw] (centre, metres, radians; note that
    obstacles.ObstacleResult.boxes put yaw fourth); labels (N,)
    ObjectClass codes; class_probability (N,) of that label; existence (N,) probability;
    is_cluster (N,) bool: an UNKNOWN obstacle cluster the network did not classify.
    """

    boxes: Any
    labels: Any
    class_probability: Any
    existence: Any
    is_cluster: Any

    @classmethod
    def empty(cls) -> LidarObjects:
        return cls(np.zeros((0, 7)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0),
                   np.zeros(0, bool))


@dataclass(frozen=True, eq=False)
class CameraDetections:
    """2D detections of one image: boxes (K, 4) [x0, y0, x1, y1] pixels (x0 <= x1, y0 <= y1),
    labels (K,) ObjectClass codes (UNKNOWN: no class), scores (K,) in [0, 1]."""

    boxes: Any
    labels: Any
    scores: Any

    @classmethod
    def empty(cls) -> CameraDetections:
        return cls(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))


@dataclass(frozen=True)
class FusionCounts:
    """What fusion did to one frame (for diagnostics). lidar_objects and camera_detections
    count the valid input rows; in_view the LiDAR objects that project into the image;
    refined the matched objects whose label changed; boosted the clusters raised by an
    unmatched pedestrian/bicycle detection; camera_only the valid detections that neither
    matched nor boosted anything (they make no object)."""

    lidar_objects: int = 0
    camera_detections: int = 0
    in_view: int = 0
    matched: int = 0
    refined: int = 0
    boosted: int = 0
    camera_only: int = 0
    dropped_lidar: int = 0
    dropped_camera: int = 0


@dataclass(frozen=True, eq=False)
class FusionResult:
    """Fused objects of one frame, one row per valid LiDAR object in input order.

    boxes (M, 7), labels (M,), class_probability (M,), existence (M,), is_cluster (M,) as in
    LidarObjects (is_cluster stays as input: it says where the object came from).
    lidar_index (M,) int: input row of each object (to copy fields the core does not touch);
    camera_index (M,) int: matched camera row, -1 when none; camera_score (M,): score of the
    matched or boosting detection, 0 when none; boosted (M,) bool; image_boxes (M, 4) the
    clipped projections [x0, y0, x1, y1] px (NaN when out of view); in_view (M,) bool.
    reason: '' when both inputs were used as given, else what was missing or dropped.
    stage_ms: wall time of 'project', 'match', 'boost'; time_ms the whole call.
    """

    boxes: np.ndarray
    labels: np.ndarray
    class_probability: np.ndarray
    existence: np.ndarray
    is_cluster: np.ndarray
    lidar_index: np.ndarray
    camera_index: np.ndarray
    camera_score: np.ndarray
    boosted: np.ndarray
    image_boxes: np.ndarray
    in_view: np.ndarray
    counts: FusionCounts = field(default_factory=FusionCounts)
    reason: str = ''
    stage_ms: dict = field(default_factory=dict)
    time_ms: float = 0.0

    def __len__(self) -> int:
        return len(self.labels)


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def project_boxes(boxes: np.ndarray, calibration: CameraCalibration,
                  near_plane_m: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Image rectangles of 3D boxes (see the module docstring, step 1).

    boxes (N, 7) finite base_link [x, y, z, l, w, h, yaw] -> (image_boxes (N, 4) [x0, y0, x1,
    y1] px clipped to the image, NaN where out of view; in_view (N,) bool).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    n = len(boxes)
    image_boxes = np.full((n, 4), np.nan)
    if n == 0:
        return image_boxes, np.zeros(0, bool)
    cos_yaw, sin_yaw = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local = _CORNER_SIGNS[None, :, :] * (0.5 * boxes[:, None, 3:6])  # (N, 8, 3)
    corners = np.empty_like(local)
    corners[..., 0] = boxes[:, None, 0] + cos_yaw[:, None] * local[..., 0] \
        - sin_yaw[:, None] * local[..., 1]
    corners[..., 1] = boxes[:, None, 1] + sin_yaw[:, None] * local[..., 0] \
        + cos_yaw[:, None] * local[..., 1]
    corners[..., 2] = boxes[:, None, 2] + local[..., 2]
    transform = calibration.camera_from_base
    camera = corners @ transform[:3, :3].T + transform[:3, 3]  # (N, 8, 3) body frame
    depth = camera[..., 0]
    front = depth >= near_plane_m
    # Edge crossings of the near plane stand in for the corners behind it.
    a, b = camera[:, _EDGES[:, 0]], camera[:, _EDGES[:, 1]]  # (N, 12, 3)
    da, db = depth[:, _EDGES[:, 0]], depth[:, _EDGES[:, 1]]
    crossing = front[:, _EDGES[:, 0]] != front[:, _EDGES[:, 1]]
    with np.errstate(divide='ignore', invalid='ignore'):
        t = np.where(crossing, (near_plane_m - da) / (db - da), 0.0)
    cut = a + t[..., None] * (b - a)
    points = np.concatenate([camera, cut], axis=1)  # (N, 20, 3)
    valid = np.concatenate([front, crossing], axis=1)
    optical = points @ (calibration.intrinsic @ _OPTICAL_FROM_BODY).T
    safe_z = np.where(valid, optical[..., 2], 1.0)
    u, v = optical[..., 0] / safe_z, optical[..., 1] / safe_z
    seen = valid.any(axis=1)
    rect = np.stack([np.where(valid, u, np.inf).min(axis=1),
                     np.where(valid, v, np.inf).min(axis=1),
                     np.where(valid, u, -np.inf).max(axis=1),
                     np.where(valid, v, -np.inf).max(axis=1)], axis=1)
    half = 0.5  # the image spans pixel centres -0.5 .. size - 0.5
    rect[:, [0, 2]] = np.clip(rect[:, [0, 2]], -half, calibration.width_px - half)
    rect[:, [1, 3]] = np.clip(rect[:, [1, 3]], -half, calibration.height_px - half)
    in_view = seen & (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
    image_boxes[in_view] = rect[in_view]
    return image_boxes, in_view


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(N, K) IoU of axis-aligned image boxes (N, 4) and (K, 4) [x0, y0, x1, y1]."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1],
                                                                   b[None, :, 1])
    inter = np.clip(width, 0.0, None) * np.clip(height, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0.0, inter / union, 0.0)


def pool_classes(lidar_labels: np.ndarray, lidar_probability: np.ndarray,
                 camera_labels: np.ndarray, camera_scores: np.ndarray,
                 lidar_weight: float, camera_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted log-linear pool of the LiDAR and camera class votes of M matched pairs.

    Each sensor's distribution over the 6 known classes puts its probability p (clipped to
    [1/6, 0.999]) on its label and (1 - p) / 5 on each other class; UNKNOWN is a uniform
    vote. posterior ~ q_lidar ** lidar_weight * q_camera ** camera_weight. Returns (labels
    (M,), probability (M,)); ties keep the LiDAR label.
    """
    def vote(labels: np.ndarray, probability: np.ndarray) -> np.ndarray:
        p = np.clip(probability, 1.0 / _KNOWN_LABELS, _MAX_VOTE_PROBABILITY)
        q = np.repeat(((1.0 - p) / (_KNOWN_LABELS - 1))[:, None], _KNOWN_LABELS, axis=1)
        known = labels != LABEL_UNKNOWN
        rows = np.flatnonzero(known)
        q[rows, labels[rows] - 1] = p[rows]
        q[~known] = 1.0 / _KNOWN_LABELS
        return np.log(q)

    logits = lidar_weight * vote(lidar_labels, lidar_probability) \
        + camera_weight * vote(camera_labels, camera_scores)
    logits -= logits.max(axis=1, keepdims=True)
    posterior = np.exp(logits)
    posterior /= posterior.sum(axis=1, keepdims=True)
    best = np.argmax(posterior, axis=1)
    rows = np.arange(len(best))
    lidar_known = lidar_labels != LABEL_UNKNOWN
    lidar_column = np.where(lidar_known, lidar_labels - 1, 0)
    keep_lidar = lidar_known & (posterior[rows, lidar_column]
                                >= posterior[rows, best] - 1e-12)
    best = np.where(keep_lidar, lidar_column, best)
    return best + 1, posterior[rows, best]


def _as_rows(name: str, value: Any, shape_tail: tuple[int, ...],
             dtype: Any) -> tuple[np.ndarray | None, str]:
    """Value as an array of shape (N, *shape_tail), or None and why."""
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        return None, f'{name} is not numeric: {error}'
    if array.size == 0:
        return np.zeros((0, *shape_tail), dtype), ''
    if array.ndim != 1 + len(shape_tail) or array.shape[1:] != shape_tail:
        expected = ', '.join(['N', *map(str, shape_tail)])
        return None, f'{name} must have shape ({expected}), got {array.shape}'
    return array, ''


def _lidar_arrays(lidar: LidarObjects) -> tuple[dict | None, str]:
    arrays, problems = {}, []
    for name, tail, dtype in (('boxes', (7,), np.float64), ('labels', (), np.float64),
                              ('class_probability', (), np.float64),
                              ('existence', (), np.float64), ('is_cluster', (), bool)):
        array, problem = _as_rows(f'lidar {name}', getattr(lidar, name), tail, dtype)
        arrays[name] = array
        if problem:
            problems.append(problem)
    if problems:
        return None, '; '.join(problems)
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        return None, f'lidar arrays differ in length: {lengths}'
    return arrays, ''


def _camera_arrays(camera: CameraDetections) -> tuple[dict | None, str]:
    arrays, problems = {}, []
    for name, tail in (('boxes', (4,)), ('labels', ()), ('scores', ())):
        array, problem = _as_rows(f'camera {name}', getattr(camera, name), tail, np.float64)
        arrays[name] = array
        if problem:
            problems.append(problem)
    if problems:
        return None, '; '.join(problems)
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        return None, f'camera arrays differ in length: {lengths}'
    return arrays, ''


def _valid_labels(labels: np.ndarray) -> np.ndarray:
    return (np.isfinite(labels) & (labels == np.round(labels)) & (labels >= 0)
            & (labels < NUM_LABELS))


def _empty_result(reason: str, counts: FusionCounts, start: float) -> FusionResult:
    return FusionResult(
        boxes=np.zeros((0, 7)), labels=np.zeros(0, np.int64), class_probability=np.zeros(0),
        existence=np.zeros(0), is_cluster=np.zeros(0, bool),
        lidar_index=np.zeros(0, np.int64), camera_index=np.zeros(0, np.int64),
        camera_score=np.zeros(0), boosted=np.zeros(0, bool), image_boxes=np.zeros((0, 4)),
        in_view=np.zeros(0, bool), counts=counts, reason=reason, time_ms=_elapsed_ms(start))


def fuse(lidar: LidarObjects, camera: CameraDetections | None,
         calibration: CameraCalibration, params: FusionParams | None = None) -> FusionResult:
    """Refine LiDAR objects with the camera detections of the same instant (module
    docstring). camera None: no camera frame, every object passes through unchanged."""
    start = time.perf_counter()
    params = FusionParams() if params is None else params
    arrays, problem = _lidar_arrays(lidar)
    if arrays is None:
        return _empty_result(f'bad lidar input: {problem}', FusionCounts(), start)
    boxes = arrays['boxes']
    with np.errstate(invalid='ignore'):
        valid = (np.all(np.isfinite(boxes), axis=1) & np.all(boxes[:, 3:6] > 0.0, axis=1)
                 & _valid_labels(arrays['labels'])
                 & np.isfinite(arrays['class_probability']) & np.isfinite(arrays['existence']))
    lidar_index = np.flatnonzero(valid)
    dropped_lidar = len(boxes) - len(lidar_index)
    boxes = boxes[lidar_index]
    labels = arrays['labels'][lidar_index].astype(np.int64)
    class_probability = np.clip(arrays['class_probability'][lidar_index], 0.0, 1.0)
    existence = np.clip(arrays['existence'][lidar_index], 0.0, 1.0)
    is_cluster = arrays['is_cluster'][lidar_index]
    reasons = [f'{dropped_lidar} lidar objects with non-finite or invalid values dropped'] \
        if dropped_lidar else []

    cam_boxes, cam_labels, cam_scores = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
    cam_index = np.zeros(0, np.int64)
    dropped_camera = 0
    if camera is None:
        reasons.append(NO_CAMERA_REASON)
    else:
        cam, problem = _camera_arrays(camera)
        if cam is None:
            reasons.append(f'bad camera input: {problem}')
        else:
            b = cam['boxes']
            with np.errstate(invalid='ignore'):
                ok = (np.all(np.isfinite(b), axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
                      & _valid_labels(cam['labels']) & np.isfinite(cam['scores'])
                      & (cam['scores'] >= 0.0) & (cam['scores'] <= 1.0))
            dropped_camera = len(b) - int(np.count_nonzero(ok))
            if dropped_camera:
                reasons.append(f'{dropped_camera} camera detections with non-finite or invalid '
                               'values dropped')
            cam_index = np.flatnonzero(ok & (cam['scores'] >= params.min_camera_score))
            cam_boxes = b[cam_index]
            cam_labels = cam['labels'][cam_index].astype(np.int64)
            cam_scores = cam['scores'][cam_index]

    n, k = len(boxes), len(cam_index)
    stage_ms = {}
    t0 = time.perf_counter()
    image_boxes, in_view = project_boxes(boxes, calibration, params.near_plane_m)
    stage_ms['project'] = _elapsed_ms(t0)

    t0 = time.perf_counter()
    in_range = np.hypot(boxes[:, 0], boxes[:, 1]) <= params.max_match_range_m
    candidates = np.flatnonzero(in_view & in_range)
    matched_camera = np.full(n, -1, np.int64)  # row into the filtered camera arrays
    if len(candidates) and k:
        iou = box_iou(image_boxes[candidates], cam_boxes)
        if params.gate_vehicle_vulnerable:
            lab = labels[candidates]
            mixed = ((_IS_VEHICLE[lab][:, None] & _IS_VULNERABLE[cam_labels][None, :])
                     | (_IS_VULNERABLE[lab][:, None] & _IS_VEHICLE[cam_labels][None, :]))
            iou[mixed] = 0.0
        # Only rows and columns with a possible pair enter the assignment.
        possible = iou >= params.match_iou_threshold
        rows_any = np.flatnonzero(possible.any(axis=1))
        cols_any = np.flatnonzero(possible.any(axis=0))
        if len(rows_any):
            sub = iou[np.ix_(rows_any, cols_any)]
            r, c = linear_sum_assignment(sub, maximize=True)
            keep = sub[r, c] >= params.match_iou_threshold
            matched_camera[candidates[rows_any[r[keep]]]] = cols_any[c[keep]]
    matched = np.flatnonzero(matched_camera >= 0)
    pair_camera = matched_camera[matched]
    new_labels = labels.copy()
    new_probability = class_probability.copy()
    camera_score = np.zeros(n)
    if len(matched):
        pooled_labels, pooled_probability = pool_classes(
            labels[matched], class_probability[matched], cam_labels[pair_camera],
            cam_scores[pair_camera], params.lidar_class_weight, params.camera_class_weight)
        lidar_unknown = labels[matched] == LABEL_UNKNOWN
        camera_unknown = cam_labels[pair_camera] == LABEL_UNKNOWN
        takes_camera = lidar_unknown & ~camera_unknown \
            & (cam_scores[pair_camera] >= params.cluster_min_camera_score)
        update = (~lidar_unknown & ~camera_unknown) | takes_camera
        new_labels[matched[update]] = pooled_labels[update]
        new_probability[matched[update]] = pooled_probability[update]
        camera_score[matched] = cam_scores[pair_camera]
        evidence = params.match_existence_weight * cam_scores[pair_camera]
        raised = 1.0 - (1.0 - existence[matched]) * (1.0 - evidence)
        existence[matched] = np.maximum(existence[matched], np.minimum(
            raised, params.max_existence_probability))
    stage_ms['match'] = _elapsed_ms(t0)

    t0 = time.perf_counter()
    boosted = np.zeros(n, bool)
    supporting = np.zeros(k, bool)
    supporting[pair_camera] = True
    boost_label = np.zeros(NUM_LABELS, bool)
    boost_label[list(params.boost_labels)] = True
    boosting = np.flatnonzero(~supporting & boost_label[cam_labels]
                              & (cam_scores >= params.boost_min_camera_score))
    footprint_m = np.maximum(boxes[:, 3], boxes[:, 4])
    clusters = np.flatnonzero(is_cluster & (labels == LABEL_UNKNOWN) & (matched_camera < 0)
                              & in_view & in_range
                              & (boxes[:, 5] >= params.boost_min_height_m)
                              & (boxes[:, 5] <= params.boost_max_height_m)
                              & (footprint_m <= params.boost_max_footprint_m))
    if len(boosting) and len(clusters):
        qualifies = _footprint_in_boxes(boxes[clusters], cam_boxes[boosting], calibration,
                                        params)
        scores = np.where(qualifies, cam_scores[boosting][None, :], 0.0)
        best = scores.max(axis=1)
        hit = best > 0.0
        rows = clusters[hit]
        boosted[rows] = True
        camera_score[rows] = best[hit]
        raised = 1.0 - (1.0 - existence[rows]) * (1.0 - params.boost_existence_weight
                                                   * best[hit])
        existence[rows] = np.maximum(existence[rows], np.minimum(
            raised, params.max_existence_probability))
        supporting[boosting[qualifies.any(axis=0)]] = True
    stage_ms['boost'] = _elapsed_ms(t0)

    camera_index = np.full(n, -1, np.int64)
    camera_index[matched] = cam_index[pair_camera]
    counts = FusionCounts(
        lidar_objects=n, camera_detections=k, in_view=int(np.count_nonzero(in_view)),
        matched=len(matched), refined=int(np.count_nonzero(new_labels[matched]
                                                             != labels[matched])),
        boosted=int(np.count_nonzero(boosted)),
        camera_only=int(k - np.count_nonzero(supporting)),
        dropped_lidar=dropped_lidar, dropped_camera=dropped_camera)
    return FusionResult(
        boxes=boxes, labels=new_labels, class_probability=new_probability,
        existence=existence, is_cluster=is_cluster, lidar_index=lidar_index,
        camera_index=camera_index, camera_score=camera_score, boosted=boosted,
        image_boxes=image_boxes, in_view=in_view, counts=counts, reason='; '.join(reasons),
        stage_ms=stage_ms, time_ms=_elapsed_ms(start))


def _footprint_in_boxes(boxes: np.ndarray, camera_boxes: np.ndarray,
                        calibration: CameraCalibration, params: FusionParams) -> np.ndarray:
    """(C, B) whether cluster c's footprint centre (box centre on its bottom face) projects
    into camera box b grown by `boost_box_margin`, at a range where b's pixel height is a
    plausible metric height."""
    transform = calibration.camera_from_base
    bottom = boxes[:, :3].copy()
    bottom[:, 2] -= 0.5 * boxes[:, 5]
    camera = bottom @ transform[:3, :3].T + transform[:3, 3]
    depth = camera[:, 0]
    in_front = depth >= params.near_plane_m
    optical = camera @ (calibration.intrinsic @ _OPTICAL_FROM_BODY).T
    safe_z = np.where(in_front, optical[:, 2], 1.0)
    u, v = optical[:, 0] / safe_z, optical[:, 1] / safe_z
    width = camera_boxes[:, 2] - camera_boxes[:, 0]
    height = camera_boxes[:, 3] - camera_boxes[:, 1]
    margin_u, margin_v = params.boost_box_margin * width, params.boost_box_margin * height
    inside = ((u[:, None] >= camera_boxes[None, :, 0] - margin_u)
              & (u[:, None] <= camera_boxes[None, :, 2] + margin_u)
              & (v[:, None] >= camera_boxes[None, :, 1] - margin_v)
              & (v[:, None] <= camera_boxes[None, :, 3] + margin_v))
    metric_height_m = height[None, :] * np.where(in_front, depth, 0.0)[:, None] \
        / calibration.intrinsic[1, 1]
    plausible = ((metric_height_m >= params.boost_min_height_m)
                 & (metric_height_m <= params.boost_max_height_m))
    return in_front[:, None] & inside & plausible
