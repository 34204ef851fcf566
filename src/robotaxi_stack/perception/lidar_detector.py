"""ONNX LiDAR 3D object detector: BEV pre-processing, inference, decode and rotated NMS (core).

A CenterPoint-style detector (Yin et al., "Center-based 3D Object Detection and Tracking",
CVPR 2021) on a bird's-eye-view grid, small enough for a CPU frame budget:

1. Pre-processing (`BevEncoder`): the points (base_link, or the LiDAR frame with the
   extrinsic) inside a square grid centred on the LiDAR's base_link (x, y) and a base_link z
   band are binned into `cell_m` cells; per cell, fully vectorised over flat cell ids
   (np.bincount, np.add.at, np.maximum.at into reused buffers), the features of
   `FEATURE_NAMES`. Why hand-made cell statistics rather than a learned pillar encoder: they
   cost ~5 ms for 120k points, where a PointNet per pillar would not fit the 60 ms budget on
   two cores together with the CNN.
2. Model (`models/lidar_detector.onnx`, trained by tools/train_lidar_detector.py): a small
   encoder-decoder 2D CNN, stride 2, with class heatmaps (sigmoid, 3x3 max-pool peak
   suppression inside the graph: non-peaks are 0) and regression maps (`REGRESSION_NAMES`:
   sub-cell centre offset, centre z, log size, sin/cos yaw).
3. Post-processing (`decode_detections`, `rotated_nms`): peaks above the score threshold are
   decoded to boxes and de-duplicated by greedy rotated-BEV-IoU NMS (across classes by
   default).

The grid geometry, feature definition version, classes and tensor names live in the sidecar
`models/lidar_detector.json` written at export; `LidarDetector` refuses a model whose metadata
differs from its parameters. Boxes are (K, 7) base_link [x, y, z (centre), length, width,
height, yaw]; yaw is the box orientation (the training loss accepts either heading of a box,
so heading is not reliable up to pi). Labels are robotaxi_msgs/ObjectClass codes: car -> CAR,
truck_bus -> TRUCK or BUS by length, bicycle -> BICYCLE, pedestrian -> PEDESTRIAN.

`merge_with_clusters` adds the obstacle path's clusters (perception/obstacles.py) that no
detection explains, as UNKNOWN objects: debris the network does not classify is never
missed, and nothing is reported twice.

Data problems (empty cloud, wrong shape, only non-finite points, nothing inside the grid, an
onnxruntime failure) give an empty `DetectorResult` whose `reason` says why; they never raise.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robotaxi_stack.common.params import ParameterError, check_fields, param
from robotaxi_stack.perception.inference import (DEFAULT_PROVIDERS, InferenceConfig,
                                                 InferenceError, InferenceSession, TensorSpec)
from robotaxi_stack.perception.obstacles import ObstacleCluster, ObstacleResult

FEATURE_VERSION = 1
FEATURE_NAMES = ('occupancy', 'log_count', 'max_z', 'min_z', 'mean_z', 'max_intensity',
                 'mean_intensity', 'range')
CLASS_NAMES = ('car', 'truck_bus', 'bicycle', 'pedestrian')
REGRESSION_NAMES = ('offset_x', 'offset_y', 'z', 'log_length', 'log_width', 'log_height',
                    'sin_yaw', 'cos_yaw')
INPUT_NAME = 'bev_features'
OUTPUT_NAMES = ('heatmap', 'regression')
# robotaxi_msgs/ObjectClass codes (the core imports no messages).
LABEL_UNKNOWN, LABEL_CAR, LABEL_TRUCK, LABEL_BUS, LABEL_BICYCLE, LABEL_PEDESTRIAN = \
    0, 1, 2, 3, 4, 6
CLASS_LABELS = (LABEL_CAR, LABEL_TRUCK, LABEL_BICYCLE, LABEL_PEDESTRIAN)
# A truck_bus box longer than this is a bus (city buses 10-18 m, rigid trucks 6-9 m).
BUS_MIN_LENGTH_M = 9.0
# Cell point counts saturate here: log_count = log1p(min(count, COUNT_CAP)) / log1p(COUNT_CAP).
COUNT_CAP = 255
INTENSITY_FULL_SCALE = 255.0
# Decoded log sizes are clipped to this band (0.05 m .. 33 m) so a wild output cannot overflow.
_LOG_SIZE_RANGE = (-3.0, 3.5)
DEFAULT_MODEL = ('models', 'lidar_detector.onnx')


class LidarDetectorError(ParameterError):
    """Detector parameters, model or metadata are inconsistent (message names the value)."""


def default_model_path() -> pathlib.Path:
    """models/lidar_detector.onnx of the installed share directory, else of the source tree
    (an install made before the model was committed has no copy)."""
    from robotaxi_stack.common.paths import SOURCE_ROOT, data_path

    try:
        installed = data_path(*DEFAULT_MODEL)
    except OSError:  # ament_index without AMENT_PREFIX_PATH (plain venv, no ROS sourced)
        return SOURCE_ROOT.joinpath(*DEFAULT_MODEL)
    return installed if installed.is_file() else SOURCE_ROOT.joinpath(*DEFAULT_MODEL)


def metadata_path(model_path: str | pathlib.Path) -> pathlib.Path:
    """The sidecar JSON of a model: same path with the suffix .json."""
    return pathlib.Path(model_path).with_suffix('.json')


@dataclass(frozen=True, kw_only=True)
class LidarDetectorParams:
    """Detector parameters; the bev_* values must equal the model's metadata."""

    model_path: str = param('', description='ONNX model; empty: models/lidar_detector.onnx '
                            'of the installed share directory or the source tree')
    providers: tuple = param(DEFAULT_PROVIDERS, description='onnxruntime execution providers '
                             'in preference order; the first available ones are used')
    trt_engine_cache_dir: str = param('', description='TensorRT engine cache directory '
                                      '(empty: no cache)')
    fp16: bool = param(False, description='allow TensorRT FP16 kernels')
    intra_op_threads: int = param(1, min=0, max=64,
                                  description='onnxruntime CPU threads (0: its default, one '
                                  'per core; 1 was faster on a shared 2-core machine)')
    bev_range_m: float = param(80.0, min=10.0, max=200.0,
                               description='half side of the square BEV grid around the LiDAR')
    bev_cell_m: float = param(0.5, min=0.05, max=2.0, description='BEV cell size')
    bev_min_z_m: float = param(-2.0, min=-10.0, max=10.0,
                               description='points below this base_link z are ignored')
    bev_max_z_m: float = param(4.0, min=-10.0, max=20.0,
                               description='points at or above this base_link z are ignored')
    score_threshold: float = param(0.3, min=0.0, max=1.0,
                                   description='least heatmap score of a detection')
    nms_iou_threshold: float = param(0.2, min=0.0, max=1.0,
                                     description='a box overlapping a higher-scored box (any '
                                     'class) by more BEV IoU is dropped')
    nms_class_agnostic: bool = param(True, description='NMS across classes (else per class: '
                                     'higher AP for confused classes, but one object may be '
                                     'reported with two classes)')
    max_detections: int = param(200, min=1, max=5000,
                                description='highest-scored peaks decoded per frame')

    def __post_init__(self) -> None:
        check_fields(self, LidarDetectorError, 'lidar_detector: ')
        if self.bev_min_z_m >= self.bev_max_z_m:
            raise LidarDetectorError(
                f'lidar_detector: parameter bev_min_z_m = {self.bev_min_z_m} must be < '
                f'bev_max_z_m = {self.bev_max_z_m}')
        if not self.providers or not all(isinstance(p, str) and p for p in self.providers):
            raise LidarDetectorError(f'lidar_detector: parameter providers = '
                                     f'{list(self.providers)} must name providers')
        cells = 2.0 * self.bev_range_m / self.bev_cell_m
        if abs(cells - round(cells)) > 1e-6:
            raise LidarDetectorError(
                f'lidar_detector: parameter bev_cell_m = {self.bev_cell_m} must divide '
                f'2 * bev_range_m = {2.0 * self.bev_range_m}')


@dataclass(frozen=True)
class BevGrid:
    """Square BEV grid centred on the LiDAR (base_link axes): cells x cells of cell_m.

    Feature tensors are (C, cells, cells) indexed [channel, x cell, y cell]; x cell i spans
    base_link x in centre_x - range_m + [i, i + 1) * cell_m (y likewise). The model's outputs
    have cells // output_stride cells of cell_m * output_stride.
    """

    range_m: float = 80.0
    cell_m: float = 0.5
    min_z_m: float = -2.0
    max_z_m: float = 4.0
    output_stride: int = 2

    @property
    def cells(self) -> int:
        return int(round(2.0 * self.range_m / self.cell_m))

    @property
    def output_cells(self) -> int:
        return self.cells // self.output_stride

    @property
    def output_cell_m(self) -> float:
        return self.cell_m * self.output_stride

    @classmethod
    def from_params(cls, params: LidarDetectorParams, output_stride: int) -> BevGrid:
        return cls(params.bev_range_m, params.bev_cell_m, params.bev_min_z_m,
                   params.bev_max_z_m, output_stride)

    def to_dict(self) -> dict:
        return {'frame': 'base_link axes, centred on the LiDAR (x, y)',
                'range_m': self.range_m, 'cell_m': self.cell_m, 'cells': self.cells,
                'min_z_m': self.min_z_m, 'max_z_m': self.max_z_m,
                'output_stride': self.output_stride, 'output_cells': self.output_cells}


@dataclass(frozen=True)
class DetectorStats:
    """Point and detection counts of one frame (for diagnostics)."""

    input_points: int = 0
    non_finite_points: int = 0
    outside_grid_points: int = 0
    occupied_cells: int = 0
    peaks: int = 0
    suppressed: int = 0


@dataclass(frozen=True, eq=False)
class DetectorResult:
    """Detections of one frame.

    boxes (K, 7) float64 base_link [x, y, z, length, width, height, yaw]; scores (K,) float64
    heatmap peak scores, highest first; labels (K,) uint8 ObjectClass codes; class_index (K,)
    int64 index into CLASS_NAMES. processed: the model ran on this frame. reason: '' when
    processed with detections, else why there are none (an input problem when not processed).
    stage_ms: 'pre', 'inference', 'post' (those that ran) and 'total'.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_index: np.ndarray
    processed: bool = False
    reason: str = ''
    stats: DetectorStats = field(default_factory=DetectorStats)
    stage_ms: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def empty_result(reason: str, stats: DetectorStats | None = None, *, processed: bool = False,
                 stage_ms: dict | None = None) -> DetectorResult:
    return DetectorResult(boxes=np.zeros((0, 7)), scores=np.zeros(0),
                          labels=np.zeros(0, np.uint8), class_index=np.zeros(0, np.int64),
                          processed=processed, reason=reason,
                          stats=stats if stats is not None else DetectorStats(),
                          stage_ms=stage_ms or {})


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def point_columns(points: Any) -> tuple[tuple[np.ndarray, ...] | None, int, str]:
    """Contiguous float32 (x, y, z, intensity) columns, the point count, and a problem ('' if
    none). points: (N,) structured with x, y, z [, intensity] fields, or (N, >=3) numeric with
    intensity in column 3 when present; a missing intensity reads as 0."""
    if not isinstance(points, np.ndarray):
        try:
            points = np.asarray(points, dtype=np.float32)
        except (TypeError, ValueError) as error:
            return None, 0, f'points are not numeric: {error}'
    if points.dtype.names is not None:
        if not {'x', 'y', 'z'} <= set(points.dtype.names):
            return None, 0, f'structured points lack x, y, z fields: {points.dtype.names}'
        flat = points.reshape(-1)
        names = ('x', 'y', 'z', 'intensity') if 'intensity' in points.dtype.names else 'xyz'
        columns = [np.ascontiguousarray(flat[name], dtype=np.float32) for name in names]
    else:
        if points.ndim != 2 or points.shape[1] < 3:
            return None, 0, f'points must have shape (N, >=3), got {points.shape}'
        if points.dtype.kind not in 'fiu':
            return None, len(points), f'points must be numeric, got dtype {points.dtype}'
        columns = [np.ascontiguousarray(points[:, axis], dtype=np.float32)
                   for axis in range(min(points.shape[1], 4))]
    if len(columns) == 3:
        columns.append(np.zeros(len(columns[0]), np.float32))
    return tuple(columns), len(columns[0]), ''


class BevEncoder:
    """Points -> (C, cells, cells) float32 BEV features of FEATURE_NAMES (version
    FEATURE_VERSION) into one reused buffer.

    Per occupied cell: occupancy 1; log_count = log1p(min(n, COUNT_CAP)) / log1p(COUNT_CAP);
    max/min/mean of z normalised as (z - min_z_m) / (max_z_m - min_z_m) in [0, 1); max/mean of
    intensity / INTENSITY_FULL_SCALE clipped to [0, 1]. Empty cells are 0 in all of these.
    range: distance of the cell centre from the LiDAR / range_m, for every cell (the network
    learns how density falls with range). sensor_to_base_link: 4x4 LiDAR extrinsic (the grid
    centre is its translation); None: LiDAR at the base_link origin. Not thread-safe.
    """

    def __init__(self, grid: BevGrid, sensor_to_base_link: np.ndarray | None = None) -> None:
        self.grid = grid
        if sensor_to_base_link is None:
            transform = np.eye(4)
        else:
            transform = np.asarray(sensor_to_base_link, dtype=np.float64)
            if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
                raise ValueError('sensor_to_base_link must be a finite 4x4 transform, got '
                                 f'shape {transform.shape}')
        self._rotation = transform[:3, :3].astype(np.float32)
        self._rotate = not np.allclose(transform[:3, :3], np.eye(3))
        self._translation = transform[:3, 3].astype(np.float32)
        self.centre_xy = transform[:2, 3].copy()
        n = grid.cells
        self._cells = n * n
        self.features = np.zeros((1, len(FEATURE_NAMES), n, n), np.float32)
        centres = (np.arange(n) + 0.5) * grid.cell_m - grid.range_m
        self.features[0, FEATURE_NAMES.index('range')] = (
            np.hypot(centres[:, None], centres[None, :]) / grid.range_m)
        self._max = np.zeros((3, self._cells), np.float32)  # max z, max (1 - z), max intensity
        self._sum = np.zeros((2, self._cells), np.float32)  # z, intensity

    def to_base_link(self, columns: tuple[np.ndarray, ...],
                     sensor_frame: bool) -> tuple[np.ndarray, ...]:
        """(x, y, z) float32 columns in base_link from columns in the sensor frame or not."""
        x, y, z = columns[:3]
        if not sensor_frame:
            return x, y, z
        if not self._rotate:
            return tuple(c + t for c, t in zip((x, y, z), self._translation))
        r, t = self._rotation, self._translation
        return tuple(r[row, 0] * x + r[row, 1] * y + r[row, 2] * z + t[row]
                     for row in range(3))

    def encode(self, points: Any, *, sensor_frame: bool = False
               ) -> tuple[np.ndarray | None, DetectorStats, str]:
        """(features (1, C, cells, cells) view of the reused buffer or None, stats, problem).

        problem is '' when features were made; otherwise features is None and problem says
        why ('bad input: ...', 'empty cloud', 'no finite points', 'no points inside the grid').
        Points with a non-finite coordinate are dropped and counted; a non-finite intensity
        reads as 0.
        """
        columns, count, problem = point_columns(points)
        if columns is None:
            return None, DetectorStats(count), f'bad input: {problem}'
        if count == 0:
            return None, DetectorStats(0), 'empty cloud'
        g = self.grid
        n = g.cells
        with np.errstate(invalid='ignore', over='ignore'):
            x, y, z = self.to_base_link(columns, sensor_frame)
            finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
            non_finite = count - int(np.count_nonzero(finite))
            inv_cell = np.float32(1.0 / g.cell_m)
            fx = (x - np.float32(self.centre_xy[0] - g.range_m)) * inv_cell
            fy = (y - np.float32(self.centre_xy[1] - g.range_m)) * inv_cell
            # NaN compares False, so non-finite points fall out here too.
            keep = (fx >= 0) & (fx < n) & (fy >= 0) & (fy < n)
            keep &= (z >= g.min_z_m) & (z < g.max_z_m)
        index = np.flatnonzero(keep)
        if len(index) == 0:
            stats = DetectorStats(count, non_finite, count - non_finite)
            return None, stats, ('no finite points' if non_finite == count
                                 else 'no points inside the grid')
        cell = fx[index].astype(np.int32)
        cell *= np.int32(n)
        cell += fy[index].astype(np.int32)
        z_norm = (z[index] - np.float32(g.min_z_m)) * np.float32(1.0 / (g.max_z_m - g.min_z_m))
        intensity = columns[3][index] * np.float32(1.0 / INTENSITY_FULL_SCALE)
        np.nan_to_num(intensity, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(intensity, 0.0, 1.0, out=intensity)

        counts = np.bincount(cell, minlength=self._cells)
        occupied = counts > 0
        top, sums = self._max, self._sum
        top.fill(0.0)
        sums.fill(0.0)
        np.maximum.at(top[0], cell, z_norm)
        np.maximum.at(top[1], cell, np.float32(1.0) - z_norm)  # min z as 1 - max(1 - z)
        np.maximum.at(top[2], cell, intensity)
        np.add.at(sums[0], cell, z_norm)
        np.add.at(sums[1], cell, intensity)
        inv_count = 1.0 / np.maximum(counts, 1).astype(np.float32)
        out = self.features[0]
        flat = out.reshape(len(FEATURE_NAMES), -1)
        flat[0] = occupied
        np.log1p(np.minimum(counts, COUNT_CAP), out=flat[1], casting='unsafe')
        flat[1] *= np.float32(1.0 / math.log1p(COUNT_CAP))
        flat[2] = top[0]
        np.subtract(1.0, top[1], out=flat[3])
        flat[3] *= occupied
        np.multiply(sums[0], inv_count, out=flat[4])
        flat[5] = top[2]
        np.multiply(sums[1], inv_count, out=flat[6])
        stats = DetectorStats(count, non_finite, count - non_finite - len(index),
                              int(np.count_nonzero(occupied)))
        return self.features, stats, ''


def decode_detections(heatmap: np.ndarray, regression: np.ndarray, grid: BevGrid,
                      centre_xy: Sequence[float] = (0.0, 0.0), score_threshold: float = 0.3,
                      max_detections: int = 200
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of the heatmap -> (boxes (K, 7), scores (K,), class_index (K,)), highest first.

    heatmap (classes, H, W): peak-suppressed scores (the model zeroes non-peaks); regression
    (len(REGRESSION_NAMES), H, W) on the same H x W output grid of grid.output_cell_m cells.
    Every cell with a score >= score_threshold (at most max_detections, highest first) is a
    box: centre = cell corner + offset cells, size = exp(log size), yaw = atan2(sin, cos).
    """
    heatmap = np.asarray(heatmap)
    regression = np.asarray(regression)
    if heatmap.ndim != 3 or regression.shape != (len(REGRESSION_NAMES),) + heatmap.shape[1:]:
        raise ValueError(f'heatmap (C, H, W) and regression ({len(REGRESSION_NAMES)}, H, W) '
                         f'expected, got {heatmap.shape} and {regression.shape}')
    flat = heatmap.reshape(-1)
    with np.errstate(invalid='ignore'):
        candidates = np.flatnonzero(flat >= score_threshold)
    if len(candidates) > max_detections:
        top = np.argpartition(-flat[candidates], max_detections - 1)[:max_detections]
        candidates = candidates[top]
    candidates = candidates[np.argsort(-flat[candidates], kind='stable')]
    cls, ix, iy = np.unravel_index(candidates, heatmap.shape)
    reg = regression[:, ix, iy].astype(np.float64)
    cell = grid.output_cell_m
    boxes = np.empty((len(candidates), 7))
    boxes[:, 0] = centre_xy[0] - grid.range_m + (ix + reg[0]) * cell
    boxes[:, 1] = centre_xy[1] - grid.range_m + (iy + reg[1]) * cell
    boxes[:, 2] = reg[2]
    boxes[:, 3:6] = np.exp(np.clip(reg[3:6], *_LOG_SIZE_RANGE)).T
    boxes[:, 6] = np.arctan2(reg[6], reg[7])
    scores = flat[candidates].astype(np.float64)
    keep = np.all(np.isfinite(boxes), axis=1) & np.isfinite(scores)
    return boxes[keep], scores[keep], cls[keep].astype(np.int64)


def bev_overlaps(boxes: np.ndarray, iou_threshold: float,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """(K, K) bool: pairs of boxes (K, 7) of the same group whose BEV IoU > iou_threshold.

    Only pairs whose circumscribed circles meet get the polygon IoU (the rest cannot overlap).
    """
    from robotaxi_stack.replay.metrics import bev_iou  # the project's one oriented IoU

    count = len(boxes)
    over = np.zeros((count, count), bool)
    if count < 2:
        return over
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    gap = np.hypot(boxes[:, None, 0] - boxes[None, :, 0], boxes[:, None, 1] - boxes[None, :, 1])
    near = np.triu(gap < radius[:, None] + radius[None, :], k=1)
    if groups is not None:
        near &= groups[:, None] == groups[None, :]
    a, b = np.nonzero(near)
    if len(a):
        bev = boxes[:, [0, 1, 6, 3, 4]]
        hit = bev_iou(bev[a], bev[b]) > iou_threshold
        over[a[hit], b[hit]] = over[b[hit], a[hit]] = True
    return over


def rotated_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of the boxes greedy rotated-BEV NMS keeps, highest score first.

    boxes (K, 7) [x, y, z, l, w, h, yaw], scores (K,); a box is dropped when a kept
    higher-scored box of the same group (e.g. class) overlaps it by BEV IoU > iou_threshold.
    """
    order = np.argsort(-np.asarray(scores), kind='stable')
    boxes = np.asarray(boxes, dtype=np.float64)[order]
    over = bev_overlaps(boxes, iou_threshold, None if groups is None
                        else np.asarray(groups)[order])
    keep = np.ones(len(order), bool)
    for k in np.flatnonzero(over.any(axis=1)):  # only boxes that overlap anything
        if keep[k]:
            keep[k + 1:] &= ~over[k, k + 1:]
    return order[keep]


def class_labels(class_index: np.ndarray, length_m: np.ndarray) -> np.ndarray:
    """ObjectClass codes of CLASS_NAMES indices; truck_bus boxes longer than
    BUS_MIN_LENGTH_M are BUS."""
    labels = np.asarray(CLASS_LABELS, np.uint8)[class_index]
    labels[(class_index == CLASS_NAMES.index('truck_bus')) & (length_m > BUS_MIN_LENGTH_M)] \
        = LABEL_BUS
    return labels


def load_metadata(model_path: str | pathlib.Path) -> dict:
    """The model's sidecar JSON, checked against this module's feature and class definitions.

    Raises LidarDetectorError naming the file and the entry that differs.
    """
    path = metadata_path(model_path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LidarDetectorError(f'lidar_detector: cannot read model metadata {path}: '
                                 f'{error}') from None
    expected = {'feature_version': FEATURE_VERSION, 'features': list(FEATURE_NAMES),
                'classes': list(CLASS_NAMES), 'regression': list(REGRESSION_NAMES)}
    for key, want in expected.items():
        if meta.get(key) != want:
            raise LidarDetectorError(f'lidar_detector: model metadata {path}: {key} = '
                                     f'{meta.get(key)!r}, this code needs {want!r}')
    if not isinstance(meta.get('grid'), dict):
        raise LidarDetectorError(f'lidar_detector: model metadata {path} has no grid')
    return meta


def check_grid(params: LidarDetectorParams, meta: dict, source: str) -> BevGrid:
    """The model's BevGrid; LidarDetectorError when a bev_* parameter differs from it."""
    grid = meta['grid']
    for name, key in (('bev_range_m', 'range_m'), ('bev_cell_m', 'cell_m'),
                      ('bev_min_z_m', 'min_z_m'), ('bev_max_z_m', 'max_z_m')):
        have = grid.get(key)
        if not isinstance(have, (int, float)) or not math.isclose(
                getattr(params, name), have, rel_tol=0.0, abs_tol=1e-6):
            raise LidarDetectorError(
                f'lidar_detector: parameter {name} = {getattr(params, name)} does not match '
                f'the model ({source}: grid.{key} = {have!r})')
    stride = grid.get('output_stride')
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise LidarDetectorError(f'lidar_detector: {source}: grid.output_stride = {stride!r} '
                                 'must be an int >= 1')
    return BevGrid.from_params(params, stride)


class LidarDetector:
    """Pre-processing + ONNX inference + decode + NMS for one LiDAR.

    sensor_to_base_link: 4x4 LiDAR extrinsic; the grid is centred on its (x, y) (None: the
    LiDAR at the base_link origin). `detect(points, sensor_frame=True)` takes points in the
    LiDAR frame, else in base_link. Raises LidarDetectorError (metadata mismatch) or
    robotaxi_stack.perception.inference.ModelLoadError/ModelSignatureError at construction.
    Not thread-safe (reuses buffers).
    """

    def __init__(self, params: LidarDetectorParams | None = None,
                 sensor_to_base_link: np.ndarray | None = None) -> None:
        params = LidarDetectorParams() if params is None else params
        if not isinstance(params, LidarDetectorParams):
            raise TypeError(f'params must be LidarDetectorParams, got {type(params).__name__}')
        self.params = params
        self.model_path = pathlib.Path(params.model_path) if params.model_path \
            else default_model_path()
        self.metadata = load_metadata(self.model_path)
        self.grid = check_grid(params, self.metadata, str(metadata_path(self.model_path)))
        self.encoder = BevEncoder(self.grid, sensor_to_base_link)
        n, m = self.grid.cells, self.grid.output_cells
        self.session = InferenceSession(InferenceConfig(
            model_path=str(self.model_path), providers=tuple(params.providers),
            trt_engine_cache_dir=params.trt_engine_cache_dir, fp16=params.fp16,
            intra_op_threads=params.intra_op_threads,
            inputs=(TensorSpec(INPUT_NAME, 'float32', (1, len(FEATURE_NAMES), n, n)),),
            outputs=(TensorSpec(OUTPUT_NAMES[0], 'float32', (1, len(CLASS_NAMES), m, m)),
                     TensorSpec(OUTPUT_NAMES[1], 'float32',
                                (1, len(REGRESSION_NAMES), m, m)))))

    @property
    def centre_xy(self) -> np.ndarray:
        return self.encoder.centre_xy

    def detect(self, points: Any, *, sensor_frame: bool = False) -> DetectorResult:
        """Detections of one sweep; see the module docstring."""
        start = time.perf_counter()
        features, stats, problem = self.encoder.encode(points, sensor_frame=sensor_frame)
        stage_ms = {'pre': _elapsed_ms(start)}
        if features is None:
            stage_ms['total'] = stage_ms['pre']
            return empty_result(problem, stats, stage_ms=stage_ms)
        inference_start = time.perf_counter()
        try:
            outputs = self.session.run({INPUT_NAME: features})
        except InferenceError as error:
            stage_ms['total'] = _elapsed_ms(start)
            return empty_result(f'inference failed: {error}', stats, stage_ms=stage_ms)
        stage_ms['inference'] = _elapsed_ms(inference_start)
        post_start = time.perf_counter()
        p = self.params
        boxes, scores, class_index = decode_detections(
            outputs[OUTPUT_NAMES[0]][0], outputs[OUTPUT_NAMES[1]][0], self.grid,
            self.centre_xy, p.score_threshold, p.max_detections)
        # Class-agnostic by default: peaks of two class heatmaps on one object are one object
        # (a car and a pedestrian box overlap by at most IoU 0.04, so real neighbours
        # survive); per class, a confused object may come out twice with different classes.
        keep = rotated_nms(boxes, scores, p.nms_iou_threshold,
                           None if p.nms_class_agnostic else class_index)
        stats = DetectorStats(stats.input_points, stats.non_finite_points,
                              stats.outside_grid_points, stats.occupied_cells,
                              peaks=len(scores), suppressed=len(scores) - len(keep))
        boxes, scores, class_index = boxes[keep], scores[keep], class_index[keep]
        stage_ms['post'] = _elapsed_ms(post_start)
        stage_ms['total'] = _elapsed_ms(start)
        return DetectorResult(boxes=boxes, scores=scores,
                              labels=class_labels(class_index, boxes[:, 3]),
                              class_index=class_index, processed=True,
                              reason='' if len(keep) else 'no detections above score_threshold',
                              stats=stats, stage_ms=stage_ms)


@dataclass(frozen=True, eq=False)
class LidarObjects:
    """Detections plus the obstacle clusters no detection explains, in base_link.

    boxes (M, 7) [x, y, z, length, width, height, yaw]; labels (M,) uint8 ObjectClass codes
    (clusters UNKNOWN); scores (M,): detection scores, and for clusters n / (n + half_points)
    capped (more returns, more certain); point_counts (M,) int64 cluster returns (-1 for
    detections); from_detector (M,) bool. Detections come first.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    point_counts: np.ndarray
    from_detector: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _centres_inside(centres: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K,) whether BEV centre k (K, 2) lies inside box k (K, >=7 [x, y, z, l, w, h, yaw])."""
    rel = centres - boxes[:, :2]
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    along = rel[:, 0] * cos + rel[:, 1] * sin
    across = rel[:, 1] * cos - rel[:, 0] * sin
    return (np.abs(along) <= 0.5 * boxes[:, 3]) & (np.abs(across) <= 0.5 * boxes[:, 4])


def merge_with_clusters(detections: DetectorResult,
                        clusters: ObstacleResult | Sequence[ObstacleCluster], *,
                        iou_threshold: float = 0.1, margin_m: float = 0.5,
                        min_height_ratio: float = 0.4, cluster_half_points: float = 10.0,
                        max_cluster_score: float = 0.95) -> LidarObjects:
    """Detections + the clusters no detection explains (as UNKNOWN).

    A cluster is explained by a detection (and dropped) when its BEV IoU with the detection
    box grown by margin_m on every side exceeds iou_threshold, its centre lies inside that
    grown box, or the detection's centre lies inside the cluster - as
    obstacles.merge_with_detections decides - and, in addition, the cluster is at least
    min_height_ratio times as tall as the detection. The margin absorbs the offset between a
    network box and the cluster of the visible part of the same object (one face of a car
    seen from behind). The height test keeps low debris lying against or in front of a
    vehicle box: held-out frames showed the network extending a car box over 0.5 m debris
    just ahead of it, which would otherwise hide the debris.
    """
    if isinstance(clusters, ObstacleResult):
        clusters = clusters.clusters
    clusters = tuple(clusters)
    rows = np.array([(c.x_m, c.y_m, c.z_m, c.length_m, c.width_m, c.height_m, c.yaw_rad)
                     for c in clusters], dtype=np.float64).reshape(-1, 7)
    boxes = detections.boxes
    explained = np.zeros(len(rows), bool)
    if len(rows) and len(boxes):
        grown = boxes.copy()
        grown[:, 3:5] += 2.0 * margin_m
        # Pairs whose circumscribed circles meet and whose heights fit (the rest cannot
        # explain each other).
        reach = 0.5 * np.hypot(rows[:, 3], rows[:, 4])[:, None] \
            + 0.5 * np.hypot(grown[:, 3], grown[:, 4])[None, :]
        gap = np.hypot(rows[:, None, 0] - grown[None, :, 0], rows[:, None, 1] - grown[None, :, 1])
        tall = rows[:, None, 5] >= min_height_ratio * boxes[None, :, 5]
        k, m = np.nonzero((gap < reach) & tall)
        if len(k):
            from robotaxi_stack.replay.metrics import bev_iou  # the project's one oriented IoU

            hit = _centres_inside(rows[k, :2], grown[m]) | _centres_inside(boxes[m, :2], rows[k])
            rest = np.flatnonzero(~hit)
            if len(rest):
                bev = [0, 1, 6, 3, 4]
                hit[rest] = bev_iou(rows[k[rest]][:, bev], grown[m[rest]][:, bev]) \
                    > iou_threshold
            explained[k[hit]] = True
    kept = np.flatnonzero(~explained)
    counts = np.array([clusters[i].point_count for i in kept], dtype=np.int64)
    cluster_scores = np.minimum(counts / (counts + cluster_half_points), max_cluster_score)
    n = len(detections)
    return LidarObjects(
        boxes=np.concatenate([boxes, rows[kept]]),
        labels=np.concatenate([detections.labels,
                               np.full(len(kept), LABEL_UNKNOWN, np.uint8)]),
        scores=np.concatenate([detections.scores, cluster_scores]),
        point_counts=np.concatenate([np.full(n, -1, np.int64), counts]),
        from_detector=np.concatenate([np.ones(n, bool), np.zeros(len(kept), bool)]))
