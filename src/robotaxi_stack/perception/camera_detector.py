"""Camera 2D object detector: letterbox, ONNX CenterNet-style network, decode, NMS (pure core).

One RGB/BGR frame goes through these stages (numpy and OpenCV, no per-pixel Python):

1. Pre-processing: the image is letterboxed into the model's input size (aspect ratio kept,
   `cv2.resize` straight into a preallocated padded buffer; a frame of the input size is not
   resized or copied at all), then written channel-first as float32 RGB scaled to [0, 1]
   (BGR frames are reordered by a strided view, not a conversion pass).
2. Inference: `perception/inference.py`'s InferenceSession (provider order, warm-up,
   signature check against the sidecar `models/camera_detector.json`).
3. Post-processing: the network gives, on a grid of `stride` input pixels, a per-class centre
   heatmap (sigmoid scores) and per cell a sub-cell centre offset and a log box size. Peaks
   (cells that are the 3 x 3 maximum of their class and above the score threshold) become
   boxes; class-wise NMS (OpenCV `NMSBoxesBatched`) removes duplicates; boxes are mapped back
   through the letterbox into the original image and clipped to it.

Pixel convention (as sim/camera.py and sensor_msgs/CameraInfo): pixel (u, v) has its centre at
integer coordinates, so an image spans -0.5 <= u < width - 0.5. Boxes are (x0, y0, x1, y1) outer
edges in that convention: a box covering pixel columns 10..19 is x0 = 9.5, x1 = 19.5 (size 10).

Classes: car, truck_bus, bicycle, pedestrian -> robotaxi_msgs/ObjectClass CAR, TRUCK, BICYCLE,
PEDESTRIAN (truck_bus is reported as TRUCK: the image cannot tell them apart reliably).

Frames the detector cannot process (not a uint8 (H, W, 3) array, an encoding other than rgb8 or
bgr8, a size other than the configured camera's, an onnxruntime failure) give an empty
`CameraDetections` whose `reason` names the problem; they never raise.

`encode_targets` is the exact inverse of the decode, used by tools/train_camera_detector.py to
build training targets, so the training and run-time box conventions cannot drift apart.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from robotaxi_stack.common.params import ParameterError, check_fields, param
from robotaxi_stack.common.paths import data_path
from robotaxi_stack.perception.inference import (DEFAULT_PROVIDERS, InferenceConfig,
                                                 InferenceError, InferenceSession, TensorSpec)

MODEL_FORMAT = 'robotaxi-camera-detector/1'
DEFAULT_MODEL_NAME = 'camera_detector.onnx'
CLASS_NAMES = ('car', 'truck_bus', 'bicycle', 'pedestrian')
# robotaxi_msgs/ObjectClass codes of CLASS_NAMES: CAR, TRUCK, BICYCLE, PEDESTRIAN (the core
# imports no message packages).
CLASS_LABELS = np.array([1, 2, 4, 6], np.uint8)
SUPPORTED_ENCODINGS = ('rgb8', 'bgr8')
# Box regression channels of the network's `boxes` output, per grid cell.
BOX_CHANNELS = ('offset_x', 'offset_y', 'log_width', 'log_height')
# exp() of a log size beyond this many grid cells is clamped (an untrained or broken model must
# not produce inf boxes).
_MAX_LOG_SIZE = math.log(4096.0)
STAGES = ('pre', 'inference', 'post', 'total')


class CameraDetectorConfigError(ParameterError):
    """A detector parameter or the model's metadata is invalid (the message names it)."""


@dataclass(frozen=True, kw_only=True)
class CameraDetectorParams:
    """Run-time parameters of the camera detector; the model's own geometry is in its JSON."""

    model_path: str = param('', description='ONNX model; empty: models/camera_detector.onnx '
                            'of the installed package (or the source tree). Its metadata is '
                            'the .json file of the same name')
    score_threshold: float = param(0.3, min=0.01, max=1.0,
                                   description='least heatmap score of a detection')
    nms_iou: float = param(0.5, min=0.05, max=1.0,
                           description='boxes of one class overlapping a better one by more '
                           'than this IoU are dropped')
    max_detections: int = param(100, min=1, max=1000,
                                description='best detections kept per frame after NMS')
    pre_nms_top_k: int = param(300, min=1, max=10000,
                               description='best heatmap peaks given to NMS')
    expected_width_px: int = param(0, min=0, max=16384,
                                   description='frames of another width are rejected '
                                   '(0: any width)')
    expected_height_px: int = param(0, min=0, max=16384,
                                    description='frames of another height are rejected '
                                    '(0: any height)')
    providers: tuple = param(DEFAULT_PROVIDERS, description='onnxruntime execution providers '
                             'in order of preference; the first available ones are used')
    intra_op_threads: int = param(0, min=0, max=256,
                                  description='onnxruntime CPU threads (0: its default)')
    trt_engine_cache_dir: str = param('', description='TensorRT engine cache directory '
                                      '(empty: no cache)')
    fp16: bool = param(False, description='let TensorRT build FP16 kernels')

    def __post_init__(self) -> None:
        check_fields(self, CameraDetectorConfigError, 'camera_detector: ')
        if not self.providers or not all(isinstance(p, str) and p for p in self.providers):
            raise CameraDetectorConfigError(
                f'camera_detector: parameter providers = {list(self.providers)} must be a '
                'non-empty list of provider names')

    def resolved_model_path(self) -> pathlib.Path:
        """The model file: model_path, or the package's models/camera_detector.onnx."""
        if self.model_path:
            return pathlib.Path(self.model_path)
        return data_path('models', DEFAULT_MODEL_NAME)


@dataclass(frozen=True)
class ModelMetadata:
    """What models/camera_detector.json says about the network (written at export).

    input_width/input_height: network input in pixels (a multiple of stride); pad_value: the
    letterbox border grey (0..255); heatmap (1, len(classes), grid_height, grid_width) sigmoid
    scores and boxes (1, 4, grid_height, grid_width) [offset_x, offset_y in cells (0..1),
    log width, log height in cells] on cells of `stride` input pixels.
    """

    input_name: str
    input_width: int
    input_height: int
    pad_value: int
    classes: tuple[str, ...]
    stride: int
    heatmap_name: str
    boxes_name: str

    @property
    def grid_width(self) -> int:
        return self.input_width // self.stride

    @property
    def grid_height(self) -> int:
        return self.input_height // self.stride

    def tensor_specs(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """(inputs, outputs) the ONNX graph must have."""
        grid = (self.grid_height, self.grid_width)
        return ((TensorSpec(self.input_name, 'float32',
                            (1, 3, self.input_height, self.input_width)),),
                (TensorSpec(self.heatmap_name, 'float32', (1, len(self.classes)) + grid),
                 TensorSpec(self.boxes_name, 'float32', (1, len(BOX_CHANNELS)) + grid)))


def load_metadata(path: str | pathlib.Path) -> ModelMetadata:
    """Read and check the model's JSON sidecar; CameraDetectorConfigError names the problem."""
    path = pathlib.Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CameraDetectorConfigError(f'cannot read camera detector metadata {path}: '
                                        f'{error}') from None

    def get(section: dict, key: str, kind: type, where: str) -> Any:
        value = section.get(key) if isinstance(section, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CameraDetectorConfigError(
                f'{path}: {where}{key} = {value!r}: expected {kind.__name__}')
        return value

    if document.get('format') != MODEL_FORMAT:
        raise CameraDetectorConfigError(f'{path}: format = {document.get("format")!r}, '
                                        f'expected {MODEL_FORMAT!r}')
    model_input = get(document, 'input', dict, '')
    outputs = get(document, 'outputs', dict, '')
    metadata = ModelMetadata(
        input_name=get(model_input, 'name', str, 'input.'),
        input_width=get(model_input, 'width', int, 'input.'),
        input_height=get(model_input, 'height', int, 'input.'),
        pad_value=get(model_input, 'pad_value', int, 'input.'),
        classes=tuple(get(document, 'classes', list, '')),
        stride=get(document, 'stride', int, ''),
        heatmap_name=get(get(outputs, 'heatmap', dict, 'outputs.'), 'name', str,
                         'outputs.heatmap.'),
        boxes_name=get(get(outputs, 'boxes', dict, 'outputs.'), 'name', str,
                       'outputs.boxes.'))
    if metadata.classes != CLASS_NAMES:
        raise CameraDetectorConfigError(f'{path}: classes = {list(metadata.classes)}, this '
                                        f'detector decodes {list(CLASS_NAMES)}')
    if metadata.stride < 1:
        raise CameraDetectorConfigError(f'{path}: stride = {metadata.stride} must be >= 1')
    for key in ('input_width', 'input_height'):
        value = getattr(metadata, key)
        if value < metadata.stride or value % metadata.stride:
            raise CameraDetectorConfigError(f'{path}: input.{key[6:]} = {value} must be a '
                                            f'positive multiple of stride {metadata.stride}')
    if not 0 <= metadata.pad_value <= 255:
        raise CameraDetectorConfigError(f'{path}: input.pad_value = {metadata.pad_value} '
                                        'must be within [0, 255]')
    declared = tuple(get(outputs['boxes'], 'channels', list, 'outputs.boxes.'))
    if declared != BOX_CHANNELS:
        raise CameraDetectorConfigError(f'{path}: outputs.boxes.channels = {list(declared)}, '
                                        f'this detector decodes {list(BOX_CHANNELS)}')
    return metadata


# ----------------------------------------------------------------------------------------
# Letterbox geometry and pre-processing
@dataclass(frozen=True)
class LetterboxGeometry:
    """How a source image sits in the network input.

    The source is resized by (scale_x, scale_y) (equal up to the rounding of the resized size)
    to resized_width x resized_height and placed at (pad_x, pad_y) in the input. A source point
    u (CameraInfo convention) lands at (u + 0.5) * scale_x - 0.5 + pad_x.
    """

    source_width: int
    source_height: int
    input_width: int
    input_height: int
    resized_width: int
    resized_height: int
    pad_x: int
    pad_y: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.source_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.source_height

    @property
    def is_identity(self) -> bool:
        return (self.source_width, self.source_height) == (self.input_width, self.input_height)


def letterbox_geometry(source_width: int, source_height: int, input_width: int,
                       input_height: int) -> LetterboxGeometry:
    """Largest aspect-preserving fit of the source into the input, centred (padding split
    evenly, the odd pixel right/bottom)."""
    for name, value in (('source_width', source_width), ('source_height', source_height),
                        ('input_width', input_width), ('input_height', input_height)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f'{name} = {value!r}: must be an int >= 1')
    scale = min(input_width / source_width, input_height / source_height)
    resized_width = min(input_width, max(1, round(source_width * scale)))
    resized_height = min(input_height, max(1, round(source_height * scale)))
    return LetterboxGeometry(int(source_width), int(source_height), int(input_width),
                             int(input_height), resized_width, resized_height,
                             (input_width - resized_width) // 2,
                             (input_height - resized_height) // 2)


def boxes_to_input(boxes: np.ndarray, geometry: LetterboxGeometry) -> np.ndarray:
    """(N, 4) source-image box edges -> network-input box edges (float64)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    out = np.empty_like(boxes)
    out[:, 0::2] = (boxes[:, 0::2] + 0.5) * geometry.scale_x - 0.5 + geometry.pad_x
    out[:, 1::2] = (boxes[:, 1::2] + 0.5) * geometry.scale_y - 0.5 + geometry.pad_y
    return out


def boxes_to_source(boxes: np.ndarray, geometry: LetterboxGeometry) -> np.ndarray:
    """(N, 4) network-input box edges -> source-image box edges, clipped to the source image
    (-0.5 .. width - 0.5); float64."""
    boxes = np.asarray(boxes, dtype=np.float64)
    out = np.empty_like(boxes)
    out[:, 0::2] = (boxes[:, 0::2] - geometry.pad_x + 0.5) / geometry.scale_x - 0.5
    out[:, 1::2] = (boxes[:, 1::2] - geometry.pad_y + 0.5) / geometry.scale_y - 0.5
    np.clip(out[:, 0::2], -0.5, geometry.source_width - 0.5, out=out[:, 0::2])
    np.clip(out[:, 1::2], -0.5, geometry.source_height - 0.5, out=out[:, 1::2])
    return out


class Preprocessor:
    """Letterbox + HWC uint8 -> (1, 3, H, W) float32 RGB in [0, 1], into reused buffers.

    The returned tensor is this object's buffer: it is overwritten by the next call.
    """

    def __init__(self, input_width: int, input_height: int, pad_value: int) -> None:
        self.input_width = int(input_width)
        self.input_height = int(input_height)
        self.pad_value = int(pad_value)
        self._padded = np.full((self.input_height, self.input_width, 3), self.pad_value,
                               np.uint8)
        self._tensor = np.empty((1, 3, self.input_height, self.input_width), np.float32)
        self._geometry: LetterboxGeometry | None = None

    def geometry(self, source_width: int, source_height: int) -> LetterboxGeometry:
        """The letterbox of a source size (cached for the last size seen)."""
        cached = self._geometry
        if cached is None or (cached.source_width, cached.source_height) != (source_width,
                                                                              source_height):
            cached = letterbox_geometry(source_width, source_height, self.input_width,
                                        self.input_height)
            if self._geometry is not None:
                self._padded[...] = self.pad_value  # the old image may reach into the border
            self._geometry = cached
        return cached

    def letterbox(self, image: np.ndarray) -> tuple[np.ndarray, LetterboxGeometry]:
        """(H, W, 3) uint8 -> (input H, input W, 3) uint8 letterboxed view (no copy for an
        image of the input size) and its geometry. Channel order is kept."""
        geometry = self.geometry(image.shape[1], image.shape[0])
        if geometry.is_identity:
            return image, geometry
        target = self._padded[geometry.pad_y:geometry.pad_y + geometry.resized_height,
                              geometry.pad_x:geometry.pad_x + geometry.resized_width]
        # Area averaging when shrinking keeps thin far objects (poles, pedestrians) visible.
        shrinking = geometry.scale_x < 1.0 or geometry.scale_y < 1.0
        cv2.resize(image, (geometry.resized_width, geometry.resized_height), dst=target,
                   interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        return self._padded, geometry

    def __call__(self, image: np.ndarray, bgr: bool = False
                 ) -> tuple[np.ndarray, LetterboxGeometry]:
        """(1, 3, input H, input W) float32 RGB / 255 of an (H, W, 3) uint8 image."""
        letterboxed, geometry = self.letterbox(image)
        channels_first = (letterboxed[..., ::-1] if bgr else letterboxed).transpose(2, 0, 1)
        np.multiply(channels_first, np.float32(1.0 / 255.0), out=self._tensor[0],
                    casting='unsafe')
        return self._tensor, geometry


# ----------------------------------------------------------------------------------------
# Decode and NMS
def heatmap_peaks(heatmap: np.ndarray, score_threshold: float, top_k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of a (C, gh, gw) heatmap: cells equal to their class's 3 x 3 maximum and
    >= score_threshold, best `top_k` first.

    Returns (class_ids, grid_y, grid_x, scores), each (K,); ties between equal neighbours
    keep both (NMS sorts them out).
    """
    padded = np.pad(heatmap, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    height, width = heatmap.shape[1:]
    neighbourhood_max = padded[:, :height, :width].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(neighbourhood_max, padded[:, dy:dy + height, dx:dx + width],
                       out=neighbourhood_max)
    class_ids, grid_y, grid_x = np.nonzero((heatmap >= neighbourhood_max)
                                           & (heatmap >= score_threshold))
    scores = heatmap[class_ids, grid_y, grid_x]
    if len(scores) > top_k:
        best = np.argpartition(-scores, top_k - 1)[:top_k]
        class_ids, grid_y, grid_x, scores = (a[best] for a in (class_ids, grid_y, grid_x,
                                                                scores))
    order = np.argsort(-scores, kind='stable')
    return class_ids[order], grid_y[order], grid_x[order], scores[order]


def decode(heatmap: np.ndarray, boxes: np.ndarray, stride: int, score_threshold: float,
           top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Network outputs -> candidate boxes in network-input pixels.

    heatmap (C, gh, gw) scores; boxes (4, gh, gw) [offset_x, offset_y, log_w, log_h] in grid
    cells. Grid cell (gx, gy) covers input pixel edges [gx * stride - 0.5, (gx + 1) * stride
    - 0.5); the box centre is at (gx + offset_x) * stride - 0.5 and its size exp(log_w) *
    stride. Returns (boxes_xyxy (K, 4) float64, scores (K,) float32, class_ids (K,) int64),
    best score first.
    """
    class_ids, grid_y, grid_x, scores = heatmap_peaks(heatmap, score_threshold, top_k)
    cells = boxes[:, grid_y, grid_x].astype(np.float64)
    centre_x = (grid_x + cells[0]) * stride - 0.5
    centre_y = (grid_y + cells[1]) * stride - 0.5
    half_width = 0.5 * stride * np.exp(np.clip(cells[2], -_MAX_LOG_SIZE, _MAX_LOG_SIZE))
    half_height = 0.5 * stride * np.exp(np.clip(cells[3], -_MAX_LOG_SIZE, _MAX_LOG_SIZE))
    xyxy = np.stack([centre_x - half_width, centre_y - half_height, centre_x + half_width,
                     centre_y + half_height], axis=1)
    return xyxy, scores.astype(np.float32), class_ids.astype(np.int64)


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                  iou_threshold: float, max_detections: int) -> np.ndarray:
    """Indices of the boxes kept by greedy class-wise NMS, best score first, at most
    max_detections. A box is dropped when its IoU with a better kept box of the same class
    exceeds iou_threshold. boxes (N, 4) x0, y0, x1, y1."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float64)
    keep = cv2.dnn.NMSBoxesBatched(xywh, scores.astype(np.float32),
                                   class_ids.astype(np.int32), -np.inf, float(iou_threshold))
    return np.asarray(keep, dtype=np.int64).reshape(-1)[:max_detections]


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, B) IoU of axis-aligned (x0, y0, x1, y1) boxes (0 where both are empty)."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2])
                    - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3])
                     - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0, None)
    intersection = width * height
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0.0)


# ----------------------------------------------------------------------------------------
# Training targets (the inverse of `decode`)
@dataclass(frozen=True)
class Targets:
    """Training targets on the (gh, gw) grid of one frame.

    heatmap (C, gh, gw) float32: elliptical Gaussian bumps (peak 1 at each object's centre
    cell). heatmap_weight (C, gh, gw) float32: 0 inside ignore boxes of that class (small or
    mostly hidden objects are neither positives nor negatives), else 1. boxes (4, gh, gw)
    float32 regression targets and box_mask (gh, gw) float32: 1 at object centre cells.
    """

    heatmap: np.ndarray
    heatmap_weight: np.ndarray
    boxes: np.ndarray
    box_mask: np.ndarray


def encode_targets(boxes: np.ndarray, class_ids: np.ndarray, ignore: np.ndarray,
                   num_classes: int, grid_width: int, grid_height: int, stride: int,
                   sigma_per_size: float = 1.0 / 6.0, min_sigma_cells: float = 0.5) -> Targets:
    """CenterNet targets of boxes given in network-input pixel edges.

    boxes (N, 4) x0, y0, x1, y1; class_ids (N,) ints in [0, num_classes); ignore (N,) bool.
    Each kept object puts a Gaussian with sigma = max(min_sigma_cells, sigma_per_size * size
    in cells) per axis at its centre cell and its offset/log-size at that cell (`decode`
    turns a perfect prediction back into the box). Where two objects share a centre cell the
    larger keeps it. Per-object loop: N is at most a few hundred.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    ignore = np.asarray(ignore, dtype=bool).reshape(-1)
    heatmap = np.zeros((num_classes, grid_height, grid_width), np.float32)
    weight = np.ones_like(heatmap)
    box_targets = np.zeros((len(BOX_CHANNELS), grid_height, grid_width), np.float32)
    box_mask = np.zeros((grid_height, grid_width), np.float32)
    grid_x = np.arange(grid_width, dtype=np.float64)
    grid_y = np.arange(grid_height, dtype=np.float64)
    # Continuous grid coordinates: pixel edge e lies at (e + 0.5) / stride cells.
    cells = (boxes + 0.5) / stride
    sizes = cells[:, 2:] - cells[:, :2]
    order = np.argsort(sizes[:, 0] * sizes[:, 1], kind='stable')  # larger written last
    for k in order:
        x0, y0, x1, y1 = cells[k]
        if not np.all(np.isfinite(cells[k])) or x1 <= x0 or y1 <= y0:
            continue
        cls = class_ids[k]
        if ignore[k]:
            cols = slice(max(0, int(math.floor(x0))), min(grid_width, int(math.ceil(x1))))
            rows = slice(max(0, int(math.floor(y0))), min(grid_height, int(math.ceil(y1))))
            weight[cls, rows, cols] = 0.0
            continue
        centre_x, centre_y = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        cell_x = min(grid_width - 1, max(0, int(math.floor(centre_x))))
        cell_y = min(grid_height - 1, max(0, int(math.floor(centre_y))))
        sigma_x = max(min_sigma_cells, sigma_per_size * (x1 - x0))
        sigma_y = max(min_sigma_cells, sigma_per_size * (y1 - y0))
        bump = (np.exp(-0.5 * ((grid_y - cell_y) / sigma_y) ** 2)[:, None]
                * np.exp(-0.5 * ((grid_x - cell_x) / sigma_x) ** 2)[None, :])
        np.maximum(heatmap[cls], bump.astype(np.float32), out=heatmap[cls])
        box_targets[:, cell_y, cell_x] = (centre_x - cell_x, centre_y - cell_y,
                                          math.log(x1 - x0), math.log(y1 - y0))
        box_mask[cell_y, cell_x] = 1.0
    # An object's own centre must stay trainable even inside another's ignore box.
    weight[heatmap >= 1.0] = 1.0
    return Targets(heatmap, weight, box_targets, box_mask)


# ----------------------------------------------------------------------------------------
# The detector
@dataclass(frozen=True)
class CameraDetections:
    """Detections of one frame, best score first.

    boxes (K, 4) float64 x0, y0, x1, y1 outer edges in source-image pixels (module
    docstring); scores (K,) float32; class_ids (K,) int64 into CLASS_NAMES; labels (K,) uint8
    ObjectClass codes. reason: '' when the frame was processed (with or without detections),
    else why nothing was detected. stage_ms: 'pre', 'inference', 'post', 'total' of the
    stages that ran.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: np.ndarray
    image_width: int = 0
    image_height: int = 0
    reason: str = ''
    stage_ms: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def empty_detections(reason: str, image_width: int = 0, image_height: int = 0,
                     stage_ms: dict | None = None) -> CameraDetections:
    """No detections, with the reason why."""
    return CameraDetections(np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64),
                            np.zeros(0, np.uint8), image_width, image_height, reason,
                            dict(stage_ms or {}))


def check_image(image: Any, encoding: str, expected_width_px: int = 0,
                expected_height_px: int = 0) -> str:
    """'' when `image` is a frame the detector takes, else the problem in words."""
    if encoding not in SUPPORTED_ENCODINGS:
        return (f'image encoding {encoding!r} is not supported (expected one of '
                f'{list(SUPPORTED_ENCODINGS)})')
    if not isinstance(image, np.ndarray):
        return f'image must be a numpy array, got {type(image).__name__}'
    if image.dtype != np.uint8:
        return f'image dtype {image.dtype}: expected uint8'
    if image.ndim != 3 or image.shape[2] != 3:
        return f'image shape {image.shape}: expected (height, width, 3)'
    height, width = image.shape[:2]
    if width == 0 or height == 0:
        return f'image is empty ({width} x {height} pixels)'
    if (expected_width_px and width != expected_width_px) or (
            expected_height_px and height != expected_height_px):
        return (f'image size {width} x {height} differs from the camera\'s '
                f'{expected_width_px or width} x {expected_height_px or height}')
    return ''


class CameraDetector:
    """Detects cars, trucks/buses, bicycles and pedestrians in camera frames with the ONNX
    model of `params` (see the module docstring). One instance per processing thread."""

    def __init__(self, params: CameraDetectorParams) -> None:
        if not isinstance(params, CameraDetectorParams):
            raise TypeError(f'params must be CameraDetectorParams, got '
                            f'{type(params).__name__}')
        self.params = params
        model_path = params.resolved_model_path()
        self.metadata = load_metadata(model_path.with_suffix('.json'))
        inputs, outputs = self.metadata.tensor_specs()
        # Raises ModelLoadError / ModelSignatureError: a model whose tensors differ from its
        # metadata must not start.
        self.session = InferenceSession(InferenceConfig(
            model_path=str(model_path), providers=tuple(params.providers),
            trt_engine_cache_dir=params.trt_engine_cache_dir, fp16=params.fp16,
            intra_op_threads=params.intra_op_threads, inputs=inputs, outputs=outputs))
        self.preprocess = Preprocessor(self.metadata.input_width, self.metadata.input_height,
                                       self.metadata.pad_value)

    def detect(self, image: np.ndarray, encoding: str = 'rgb8') -> CameraDetections:
        """Detections in an (H, W, 3) uint8 frame of `encoding` ('rgb8' or 'bgr8'); any
        strides (e.g. a zero-copy view of an Image message with row padding)."""
        start = time.perf_counter()
        params = self.params
        problem = check_image(image, encoding, params.expected_width_px,
                              params.expected_height_px)
        if problem:
            return empty_detections(problem)
        height, width = image.shape[:2]
        tensor, geometry = self.preprocess(image, bgr=encoding == 'bgr8')
        stage_ms = {'pre': _elapsed_ms(start)}
        inference_start = time.perf_counter()
        try:
            outputs = self.session.run({self.metadata.input_name: tensor})
        except InferenceError as error:
            stage_ms['total'] = _elapsed_ms(start)
            return empty_detections(f'inference failed: {error}', width, height, stage_ms)
        stage_ms['inference'] = _elapsed_ms(inference_start)
        post_start = time.perf_counter()
        heatmap = outputs[self.metadata.heatmap_name][0]
        box_maps = outputs[self.metadata.boxes_name][0]
        if not (np.all(np.isfinite(heatmap)) and np.all(np.isfinite(box_maps))):
            stage_ms['total'] = _elapsed_ms(start)
            return empty_detections('model output is not finite', width, height, stage_ms)
        boxes, scores, class_ids = decode(heatmap, box_maps, self.metadata.stride,
                                          params.score_threshold, params.pre_nms_top_k)
        keep = nms_per_class(boxes, scores, class_ids, params.nms_iou, params.max_detections)
        boxes = boxes_to_source(boxes[keep], geometry)
        class_ids = class_ids[keep]
        stage_ms['post'] = _elapsed_ms(post_start)
        stage_ms['total'] = _elapsed_ms(start)
        return CameraDetections(boxes, scores[keep], class_ids, CLASS_LABELS[class_ids],
                                width, height, '', stage_ms)


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


__all__ = [
    'BOX_CHANNELS', 'CLASS_LABELS', 'CLASS_NAMES', 'CameraDetections', 'CameraDetector',
    'CameraDetectorConfigError', 'CameraDetectorParams', 'LetterboxGeometry', 'MODEL_FORMAT',
    'ModelMetadata', 'Preprocessor', 'STAGES', 'SUPPORTED_ENCODINGS', 'Targets', 'box_iou',
    'boxes_to_input', 'boxes_to_source', 'check_image', 'decode', 'empty_detections',
    'encode_targets', 'heatmap_peaks', 'letterbox_geometry', 'load_metadata',
    'nms_per_class',
]
