"""3D detection metrics on BEV boxes, as Autoware's perception evaluator and nuScenes compute
them (pure numpy; no ROS, no message types).

Inputs are per-frame `FrameDetections`: predicted boxes with scores and ObjectClass labels and
ground-truth boxes with labels and an ignore flag, all in one frame (base_link for the issue 5
evaluation). A box is (x, y, z centre, length, width, height, yaw); only its BEV footprint
counts.

Matching (per frame and class, `match_frame`): predictions in descending score order (ties in
input order); each takes the best unmatched ground truth of its class that meets the criterion,
`'center_distance'` (BEV centre distance <= threshold, default 2.0 m; best = nearest) or
`'iou'` (BEV IoU >= threshold, default 0.5; best = highest IoU). Ground truth flagged ignore
(e.g. no LiDAR return on it) is never counted as missed; a prediction that meets the criterion
only with ignored ground truth is neither a true nor a false positive and is dropped (ignored
ground truth may absorb several predictions, like KITTI's don't-care regions). Classes follow
ObjectClass codes with truck and bus grouped as 'truck_bus' (a TRUCK prediction on BUS ground
truth is a match).

Range bins: predictions and ground truth are each kept by the BEV distance of their own centre
from `origin_xy` (default (0, 0): base_link), min_m <= range < max_m, as nuScenes filters both
sides independently.

AP: 101-point interpolated average precision as COCO defines it: the mean over recall levels
r = 0, 0.01, ..., 1 of the interpolated precision max{precision(r') : r' >= r} (0 where recall
r is never reached). nuScenes' variant additionally clips recall and precision below 0.1; this
one does not. AP is NaN when the bin holds no (non-ignored) ground truth.

`detection_summary` gathers issue 5's numbers for both criteria as a JSON-able dict (NaN as
None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CRITERIA = ('center_distance', 'iou')
DEFAULT_THRESHOLDS = {'center_distance': 2.0, 'iou': 0.5}
# Evaluated class -> the ObjectClass codes it covers (UNKNOWN 0, CAR 1, TRUCK 2, BUS 3,
# BICYCLE 4, MOTORCYCLE 5, PEDESTRIAN 6).
CLASS_LABELS = {'unknown': (0,), 'car': (1,), 'truck_bus': (2, 3), 'bicycle': (4,),
                'motorcycle': (5,), 'pedestrian': (6,)}
NUM_OBJECT_CLASSES = 7
RECALL_LEVELS = np.linspace(0.0, 1.0, 101)
# Issue 5's acceptance numbers; detection_summary reports each against these.
ISSUE5_TARGETS = {'car_ap_0_50m': 0.90, 'car_ap_50_80m': 0.75,
                  'pedestrian_recall_0_30m_at_precision_0.8': 0.85,
                  'unknown_debris_detection_rate': 0.95}
# Intersection points closer to a polygon edge than this count as on it [m].
_INSIDE_TOLERANCE_M = 1e-7


class EvaluationError(ValueError):
    """Malformed evaluation input; the message names the offending array or argument."""


def _boxes(value: Any, name: str) -> np.ndarray:
    try:
        boxes = np.array(value, dtype=np.float64)  # a copy: frames freeze their arrays
    except (TypeError, ValueError):
        raise EvaluationError(f'{name} must be an (N, 7) array of boxes') from None
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 7)
    if boxes.ndim != 2 or boxes.shape[1] != 7:
        raise EvaluationError(f'{name} must have shape (N, 7) (x, y, z, length, width, '
                              f'height, yaw), got {boxes.shape}')
    if not np.all(np.isfinite(boxes)):
        raise EvaluationError(f'{name} contains NaN or inf')
    if np.any(boxes[:, 3:5] <= 0.0):
        raise EvaluationError(f'{name} has a length or width <= 0')
    return boxes


def _vector(value: Any, name: str, count: int, kind: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or len(array) != count:
        raise EvaluationError(f'{name} must have shape ({count},), got {array.shape}')
    if kind == 'label':
        if count and (array.dtype.kind not in 'iu' or np.any(array < 0)
                      or np.any(array >= NUM_OBJECT_CLASSES)):
            raise EvaluationError(f'{name} must hold ObjectClass codes 0..'
                                  f'{NUM_OBJECT_CLASSES - 1}')
        return array.astype(np.int64)
    if kind == 'bool':
        if count and array.dtype != np.bool_:
            raise EvaluationError(f'{name} must be a bool array')
        return array.astype(bool)
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f'{name} must be numbers') from None
    if not np.all(np.isfinite(array)):
        raise EvaluationError(f'{name} contains NaN or inf')
    return array


@dataclass(frozen=True)
class FrameDetections:
    """Predictions and ground truth of one frame, validated at construction.

    pred_boxes (P, 7), pred_scores (P,) finite, pred_labels (P,) ObjectClass codes; gt_boxes
    (G, 7), gt_labels (G,); gt_ignore (G,) bool (None: nothing ignored). Boxes are x, y,
    z (centre), length, width, height, yaw in one frame (base_link for issue 5).
    """

    pred_boxes: np.ndarray
    pred_scores: np.ndarray
    pred_labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_ignore: np.ndarray | None = None

    def __post_init__(self) -> None:
        pred = _boxes(self.pred_boxes, 'pred_boxes')
        gt = _boxes(self.gt_boxes, 'gt_boxes')
        ignore = np.zeros(len(gt), bool) if self.gt_ignore is None else self.gt_ignore
        for name, value in (
                ('pred_boxes', pred),
                ('pred_scores', _vector(self.pred_scores, 'pred_scores', len(pred), 'score')),
                ('pred_labels', _vector(self.pred_labels, 'pred_labels', len(pred), 'label')),
                ('gt_boxes', gt),
                ('gt_labels', _vector(self.gt_labels, 'gt_labels', len(gt), 'label')),
                ('gt_ignore', _vector(ignore, 'gt_ignore', len(gt), 'bool'))):
            value.setflags(write=False)
            object.__setattr__(self, name, value)


# ----------------------------------------------------------------------------- BEV IoU

def _corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) boxes -> (N, 4, 2) BEV corners, counter-clockwise."""
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    dx = np.array([0.5, -0.5, -0.5, 0.5])[None, :] * boxes[:, 3:4]
    dy = np.array([0.5, 0.5, -0.5, -0.5])[None, :] * boxes[:, 4:5]
    return np.stack((boxes[:, 0:1] + cos * dx - sin * dy,
                     boxes[:, 1:2] + sin * dx + cos * dy), axis=-1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(K, M) bool: points (K, M, 2) inside (or on) convex CCW polygons (K, 4, 2)."""
    edge = np.roll(polygon, -1, axis=1) - polygon                      # (K, 4, 2)
    side = _cross(edge[:, None, :, :], points[:, :, None, :] - polygon[:, None, :, :])
    return np.all(side >= -_INSIDE_TOLERANCE_M, axis=-1)


def _intersection_area(corners_a: np.ndarray, corners_b: np.ndarray) -> np.ndarray:
    """(K,) areas of the intersections of K pairs of convex quadrilaterals (K, 4, 2).

    The intersection of two convex polygons is the convex hull of the vertices of each inside
    the other and the crossings of their edges; those (up to 24) points are ordered by angle
    about their mean and summed with the shoelace formula, all pairs at once.
    """
    count = len(corners_a)
    a_in_b = _inside(corners_a, corners_b)
    b_in_a = _inside(corners_b, corners_a)
    edge_a = np.roll(corners_a, -1, axis=1) - corners_a
    edge_b = np.roll(corners_b, -1, axis=1) - corners_b
    denom = _cross(edge_a[:, :, None, :], edge_b[:, None, :, :])        # (K, 4, 4)
    offset = corners_b[:, None, :, :] - corners_a[:, :, None, :]
    parallel = np.abs(denom) < 1e-12
    safe = np.where(parallel, 1.0, denom)
    t = _cross(offset, edge_b[:, None, :, :]) / safe
    u = _cross(offset, edge_a[:, :, None, :]) / safe
    crossing = ~parallel & (t >= 0.0) & (t <= 1.0) & (u >= 0.0) & (u <= 1.0)
    crossings = corners_a[:, :, None, :] + t[..., None] * edge_a[:, :, None, :]
    points = np.concatenate((corners_a, corners_b, crossings.reshape(count, 16, 2)), axis=1)
    valid = np.concatenate((a_in_b, b_in_a, crossing.reshape(count, 16)), axis=1)
    used = valid.sum(axis=1)
    centre = np.einsum('kmd,km->kd', points, valid) / np.maximum(used, 1)[:, None]
    angle = np.arctan2(points[..., 1] - centre[:, 1:2], points[..., 0] - centre[:, 0:1])
    order = np.argsort(np.where(valid, angle, np.inf), axis=1, kind='stable')
    ordered = np.take_along_axis(points, order[..., None], axis=1)
    # Unused slots repeat the first point: their shoelace terms vanish and close the ring.
    ordered_valid = np.take_along_axis(valid, order, axis=1)
    ordered = np.where(ordered_valid[..., None], ordered, ordered[:, :1, :])
    area = 0.5 * np.abs(_cross(ordered, np.roll(ordered, -1, axis=1)).sum(axis=1))
    return np.where(used >= 3, area, 0.0)


def bev_iou(boxes_a: Any, boxes_b: Any) -> np.ndarray:
    """(A, B) BEV IoU of rotated boxes (A, 7) and (B, 7) (x, y, z, length, width, height, yaw).

    Pairs whose circumscribed circles do not touch are 0 without clipping. Raises
    EvaluationError naming boxes_a / boxes_b for wrong shapes, NaN/inf or sizes <= 0.
    """
    a = _boxes(boxes_a, 'boxes_a')
    b = _boxes(boxes_b, 'boxes_b')
    iou = np.zeros((len(a), len(b)))
    if not len(a) or not len(b):
        return iou
    radius_a = 0.5 * np.hypot(a[:, 3], a[:, 4])
    radius_b = 0.5 * np.hypot(b[:, 3], b[:, 4])
    distance = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    rows, cols = np.nonzero(distance < radius_a[:, None] + radius_b[None, :])
    if not len(rows):
        return iou
    inter = _intersection_area(_corners(a)[rows], _corners(b)[cols])
    union = a[rows, 3] * a[rows, 4] + b[cols, 3] * b[cols, 4] - inter
    iou[rows, cols] = np.clip(inter / union, 0.0, 1.0)
    return iou


# ---------------------------------------------------------------------------- matching

def _check_class(class_name: str) -> tuple[int, ...]:
    if class_name not in CLASS_LABELS:
        raise EvaluationError(f'class_name = {class_name!r} must be one of '
                              f'{sorted(CLASS_LABELS)}')
    return CLASS_LABELS[class_name]


def _check_criterion(criterion: str, threshold: float | None) -> float:
    if criterion not in CRITERIA:
        raise EvaluationError(f'criterion = {criterion!r} must be one of {CRITERIA}')
    threshold = DEFAULT_THRESHOLDS[criterion] if threshold is None else threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not math.isfinite(threshold) or threshold <= 0.0 \
            or (criterion == 'iou' and threshold > 1.0):
        raise EvaluationError(f'threshold = {threshold!r} must be > 0 (and <= 1 for iou)')
    return float(threshold)


def _check_range(range_bin: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in range_bin)
    except (TypeError, ValueError):
        raise EvaluationError(f'range_bin = {range_bin!r} must be (min_m, max_m)') from None
    if not (math.isfinite(low) and 0.0 <= low < high):
        raise EvaluationError(f'range_bin = {range_bin!r} must satisfy 0 <= min_m < max_m')
    return low, high


def _check_frames(frames: Sequence[FrameDetections]) -> Sequence[FrameDetections]:
    if not all(isinstance(frame, FrameDetections) for frame in frames):
        raise EvaluationError('frames must hold FrameDetections')
    return frames


def _in_bin(boxes: np.ndarray, range_bin: tuple[float, float],
            origin_xy: np.ndarray) -> np.ndarray:
    range_m = np.hypot(boxes[:, 0] - origin_xy[0], boxes[:, 1] - origin_xy[1])
    return (range_m >= range_bin[0]) & (range_m < range_bin[1])


@dataclass(frozen=True)
class FrameMatch:
    """Matching result of one frame and class in one range bin.

    scores (K,), true_positive (K,) bool: the counted predictions (those matched only to
    ignored ground truth are left out), in descending score order; num_gt: non-ignored ground
    truth in the bin; gt_matched (G_bin,) bool per non-ignored ground truth in the bin.
    """

    scores: np.ndarray
    true_positive: np.ndarray
    num_gt: int
    gt_matched: np.ndarray


def match_frame(frame: FrameDetections, class_name: str, criterion: str = 'center_distance',
                threshold: float | None = None, range_bin: Sequence[float] = (0.0, math.inf),
                origin_xy: Sequence[float] = (0.0, 0.0)) -> FrameMatch:
    """Greedy matching of one frame's predictions of a class (see module docstring)."""
    labels = _check_class(class_name)
    threshold = _check_criterion(criterion, threshold)
    low_high = _check_range(range_bin)
    origin = np.asarray(origin_xy, dtype=np.float64)
    if origin.shape != (2,) or not np.all(np.isfinite(origin)):
        raise EvaluationError(f'origin_xy = {origin_xy!r} must be two finite numbers')
    pred_keep = np.isin(frame.pred_labels, labels) & _in_bin(frame.pred_boxes, low_high, origin)
    gt_keep = np.isin(frame.gt_labels, labels) & _in_bin(frame.gt_boxes, low_high, origin)
    pred = frame.pred_boxes[pred_keep]
    scores = frame.pred_scores[pred_keep]
    gt = frame.gt_boxes[gt_keep]
    ignore = frame.gt_ignore[gt_keep]
    order = np.argsort(-scores, kind='stable')
    pred, scores = pred[order], scores[order]
    if criterion == 'center_distance':
        quality = -np.hypot(pred[:, None, 0] - gt[None, :, 0], pred[:, None, 1] - gt[None, :, 1])
        meets = quality >= -threshold
    else:
        quality = bev_iou(pred, gt)
        meets = quality >= threshold
    matched = np.zeros(len(gt), dtype=bool)
    true_positive = np.zeros(len(pred), dtype=bool)
    counted = np.ones(len(pred), dtype=bool)
    # One Python step per prediction: a frame holds tens of objects, and greedy order matters.
    for p in range(len(pred)):
        candidates = meets[p] & ~matched & ~ignore
        if np.any(candidates):
            matched[int(np.argmax(np.where(candidates, quality[p], -np.inf)))] = True
            true_positive[p] = True
        elif np.any(meets[p] & ignore):
            counted[p] = False
    return FrameMatch(scores=scores[counted], true_positive=true_positive[counted],
                      num_gt=int(np.sum(~ignore)), gt_matched=matched[~ignore])


@dataclass(frozen=True)
class PrecisionRecall:
    """Operating points over all frames, one per distinct score (highest first).

    score_thresholds (T,): keep predictions with score >= this; precision (T,), recall (T,)
    at that threshold; num_gt: non-ignored ground truth; num_predictions: counted predictions.
    """

    score_thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_gt: int
    num_predictions: int


def precision_recall(frames: Sequence[FrameDetections], class_name: str,
                     criterion: str = 'center_distance', threshold: float | None = None,
                     range_bin: Sequence[float] = (0.0, math.inf),
                     origin_xy: Sequence[float] = (0.0, 0.0)) -> PrecisionRecall:
    """Precision/recall curve of a class over frames (matching per frame; see match_frame)."""
    matches = [match_frame(frame, class_name, criterion, threshold, range_bin, origin_xy)
               for frame in _check_frames(frames)]
    num_gt = sum(m.num_gt for m in matches)
    scores = np.concatenate([m.scores for m in matches] + [np.zeros(0)])
    true_positive = np.concatenate([m.true_positive for m in matches] + [np.zeros(0, bool)])
    order = np.argsort(-scores, kind='stable')
    scores, true_positive = scores[order], true_positive[order]
    tp = np.cumsum(true_positive)
    total = np.arange(1, len(scores) + 1)
    # Operating points only where the score changes: tied scores are kept or dropped together.
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True)) if len(scores) else \
        np.zeros(0, dtype=np.int64)
    with np.errstate(invalid='ignore', divide='ignore'):
        recall = tp[last] / num_gt if num_gt else np.full(len(last), np.nan)
    return PrecisionRecall(score_thresholds=scores[last], precision=tp[last] / total[last],
                           recall=recall, num_gt=num_gt, num_predictions=len(scores))


def average_precision(frames: Sequence[FrameDetections], class_name: str,
                      criterion: str = 'center_distance', threshold: float | None = None,
                      range_bin: Sequence[float] = (0.0, 50.0),
                      origin_xy: Sequence[float] = (0.0, 0.0)) -> float:
    """101-point interpolated AP (COCO) of a class in a range bin; NaN without ground truth."""
    return _interpolated_ap(
        precision_recall(frames, class_name, criterion, threshold, range_bin, origin_xy))


def _interpolated_ap(curve: PrecisionRecall) -> float:
    if curve.num_gt == 0:
        return math.nan
    if not len(curve.recall):
        return 0.0
    # Interpolated precision: the best precision at this recall or any higher one.
    envelope = np.maximum.accumulate(curve.precision[::-1])[::-1]
    reached = np.searchsorted(curve.recall, RECALL_LEVELS, side='left')
    precision_at = np.where(reached < len(envelope),
                            envelope[np.minimum(reached, len(envelope) - 1)], 0.0)
    return float(np.mean(precision_at))


def recall_at_precision(frames: Sequence[FrameDetections], class_name: str,
                        min_precision: float = 0.8, range_bin: Sequence[float] = (0.0, 30.0),
                        criterion: str = 'center_distance', threshold: float | None = None,
                        origin_xy: Sequence[float] = (0.0, 0.0)) -> tuple[float, float, float]:
    """(recall, precision, score_threshold) of the best-recall operating point whose precision
    is >= min_precision (the highest such threshold on ties in recall).

    No qualifying operating point: (0.0, NaN, inf), i.e. report nothing. No ground truth in
    the bin: recall NaN.
    """
    if isinstance(min_precision, bool) or not isinstance(min_precision, (int, float)) \
            or not 0.0 <= min_precision <= 1.0:
        raise EvaluationError(f'min_precision = {min_precision!r} must be in [0, 1]')
    curve = precision_recall(frames, class_name, criterion, threshold, range_bin, origin_xy)
    if curve.num_gt == 0:
        return math.nan, math.nan, math.inf
    ok = np.flatnonzero(curve.precision >= min_precision)
    if not len(ok):
        return 0.0, math.nan, math.inf
    # Recall never falls as the threshold drops; the first index of the best recall is the
    # highest threshold that reaches it.
    best = ok[int(np.argmax(curve.recall[ok]))]
    return (float(curve.recall[best]), float(curve.precision[best]),
            float(curve.score_thresholds[best]))


def detection_rate(frames_with_target_index: Sequence[tuple[FrameDetections, int]],
                   max_distance_m: float = 1.0, min_score: float = 0.0) -> float:
    """Fraction of frames in which some prediction of ANY class (UNKNOWN included) with score
    >= min_score has its BEV centre within max_distance_m of the target ground-truth box
    centre (frame.gt_boxes[target_index]); issue 5's debris criterion."""
    if not len(frames_with_target_index):
        raise EvaluationError('frames_with_target_index is empty')
    if not math.isfinite(max_distance_m) or max_distance_m <= 0.0:
        raise EvaluationError(f'max_distance_m = {max_distance_m!r} must be > 0')
    found = 0
    for entry in frames_with_target_index:
        try:
            frame, target = entry
        except (TypeError, ValueError):
            raise EvaluationError('frames_with_target_index must hold (FrameDetections, '
                                  'target_index) pairs') from None
        if not isinstance(frame, FrameDetections):
            raise EvaluationError('frames_with_target_index must hold FrameDetections')
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)) \
                or not 0 <= target < len(frame.gt_boxes):
            raise EvaluationError(f'target_index = {target!r} is not a row of gt_boxes '
                                  f'({len(frame.gt_boxes)} rows)')
        centre = frame.gt_boxes[target, :2]
        near = np.hypot(*(frame.pred_boxes[:, :2] - centre).T) <= max_distance_m
        found += bool(np.any(near & (frame.pred_scores >= min_score)))
    return found / len(frames_with_target_index)


# ----------------------------------------------------------------------------- summary

def _json_number(value: float) -> float | None:
    return None if not math.isfinite(value) else round(float(value), 4)


def detection_summary(frames: Sequence[FrameDetections],
                      debris_frames: Sequence[tuple[FrameDetections, int]] | None = None, *,
                      thresholds: dict[str, float] | None = None,
                      min_precision: float = 0.8,
                      origin_xy: Sequence[float] = (0.0, 0.0)) -> dict[str, Any]:
    """Issue 5's detection numbers for both criteria as a JSON-able dict.

    Per criterion: car AP 0-50 m and 50-80 m; truck_bus, bicycle, pedestrian AP 0-50 m;
    pedestrian recall 0-30 m at precision >= min_precision (with that operating point's
    precision and score threshold); ground-truth counts per bin; and a pass flag per issue
    target. With debris_frames ((frame, target_index) pairs): the UNKNOWN-debris detection
    rate within 1 m. NaN (no ground truth) becomes None.
    """
    frames = _check_frames(frames)
    thresholds = dict(DEFAULT_THRESHOLDS, **(thresholds or {}))
    ap_bins = [('car', (0.0, 50.0)), ('car', (50.0, 80.0)), ('truck_bus', (0.0, 50.0)),
               ('bicycle', (0.0, 50.0)), ('pedestrian', (0.0, 50.0))]
    recall_key = f'pedestrian_recall_0_30m_at_precision_{min_precision:g}'
    summary: dict[str, Any] = {
        'frames': len(frames),
        'range': 'BEV distance of each box centre from range_origin_xy (base_link at [0, 0])',
        'range_origin_xy': [float(v) for v in origin_xy],
        'ap_method': '101-point interpolated AP (COCO) on BEV boxes', 'criteria': {}}
    for criterion in CRITERIA:
        threshold = thresholds[criterion]
        result: dict[str, Any] = {'threshold': threshold, 'ap': {}, 'num_gt': {}}
        for class_name, range_bin in ap_bins:
            bin_name = f'{class_name}_{range_bin[0]:g}_{range_bin[1]:g}m'
            curve = precision_recall(frames, class_name, criterion, threshold, range_bin,
                                     origin_xy)
            result['ap'][bin_name.replace(class_name, f'{class_name}_ap', 1)] = \
                _json_number(_interpolated_ap(curve))
            result['num_gt'][bin_name] = curve.num_gt
        recall, precision, score = recall_at_precision(
            frames, 'pedestrian', min_precision, (0.0, 30.0), criterion, threshold, origin_xy)
        result[recall_key] = {'recall': _json_number(recall),
                              'precision': _json_number(precision),
                              'score_threshold': _json_number(score)}
        measured = {'car_ap_0_50m': result['ap']['car_ap_0_50m'],
                    'car_ap_50_80m': result['ap']['car_ap_50_80m'],
                    recall_key: result[recall_key]['recall']}
        result['meets_targets'] = {key: None if value is None or key not in ISSUE5_TARGETS
                                   else bool(value >= ISSUE5_TARGETS[key])
                                   for key, value in measured.items()}
        summary['criteria'][criterion] = result
    if debris_frames is not None:
        rate = detection_rate(debris_frames)
        summary['unknown_debris_detection_rate'] = _json_number(rate)
        summary['unknown_debris_frames'] = len(debris_frames)
        summary['unknown_debris_meets_target'] = bool(
            rate >= ISSUE5_TARGETS['unknown_debris_detection_rate'])
    return summary
