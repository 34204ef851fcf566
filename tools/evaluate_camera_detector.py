"""Evaluate the camera 2D detector on held-out simulated frames; prints/writes JSON.

Usage (no torch; the project venv):

    PYTHONPATH=src .venv/bin/python tools/evaluate_camera_detector.py --frames 300 \
        --out out/camera_detector_eval.json

Frames: perception_dataset.generate_sample(seed, split='heldout', camera=True) for seeds
first_seed .. first_seed + frames - 1: towns, seeds and actor mixes the training never saw.
The committed model runs through perception/camera_detector.py exactly as the node runs it,
with a low score threshold (--score-threshold) so that the whole precision-recall curve is
seen.

Metrics (2D, image pixels; ground truth = the visible-pixel boxes):
- AP per class at IoU >= 0.5, COCO-style: greedy matching by descending score, each ground
  truth matched at most once; the interpolated precision (the running maximum from the right)
  averaged over the 101 recall points 0, 0.01, ..., 1. Ground truth with fewer than
  --min-visible-px visible pixels is ignored: a detection matched to it is neither a true nor a
  false positive. truck and bus are one class (truck_bus).
- Car AP within 50 m and at 50-80 m: as above with cars outside the range bin ignored (range:
  BEV distance of the 3D box centre from base_link, the dataset's definition).
- Pedestrian recall within 30 m at precision >= 0.8: pedestrians beyond 30 m are ignored; the
  best recall over score thresholds whose precision is >= 0.8, with that precision and score.
  Detections that match no pedestrian at all count as false positives wherever they are (the
  image gives no range), so the precision is a lower bound.
- Precision and recall of each class at the deployed score threshold (--deployed-threshold,
  config/camera_detector.param.yaml's value), and the detector's stage times.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'src'))

from robotaxi_stack.perception.camera_detector import (  # noqa: E402
    CLASS_NAMES, STAGES, CameraDetector, CameraDetectorParams, box_iou)
from robotaxi_stack.sim import perception_dataset  # noqa: E402

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def match_frame(pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray,
                gt_ignore: np.ndarray, iou_threshold: float = 0.5
                ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one frame and class (COCO rules).

    Predictions in descending score order take the unmatched ground truth of highest IoU >=
    iou_threshold, preferring ground truth that is not ignored. Returns (true_positive (P,)
    bool, ignored (P,) bool) in the order of the inputs; a prediction that is neither is a
    false positive.
    """
    count = len(pred_scores)
    true_positive = np.zeros(count, bool)
    ignored = np.zeros(count, bool)
    if count == 0 or len(gt_boxes) == 0:
        return true_positive, ignored
    iou = box_iou(pred_boxes, gt_boxes)
    gt_ignore = np.asarray(gt_ignore, bool)
    taken = np.zeros(len(gt_boxes), bool)
    for k in np.argsort(-np.asarray(pred_scores), kind='stable'):  # per detection, <= ~100
        for candidates, is_ignored in ((~gt_ignore, False), (gt_ignore, True)):
            overlap = np.where(candidates & ~taken & (iou[k] >= iou_threshold), iou[k], -1.0)
            best = int(np.argmax(overlap))
            if overlap[best] >= 0.0:
                taken[best] = True
                true_positive[k], ignored[k] = not is_ignored, is_ignored
                break
    return true_positive, ignored


def precision_recall(scores: np.ndarray, true_positive: np.ndarray, gt_count: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, score) after each detection in descending score order; the
    detections are the non-ignored ones of all frames."""
    order = np.argsort(-np.asarray(scores), kind='stable')
    hits = np.asarray(true_positive, bool)[order]
    tp = np.cumsum(hits)
    fp = np.cumsum(~hits)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / gt_count if gt_count else np.zeros(len(tp))
    return precision, recall, np.asarray(scores)[order]


def average_precision(scores: np.ndarray, true_positive: np.ndarray, gt_count: int) -> float:
    """COCO 101-point interpolated AP; NaN without ground truth."""
    if gt_count == 0:
        return float('nan')
    if len(scores) == 0:
        return 0.0
    precision, recall, _ = precision_recall(scores, true_positive, gt_count)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side='left')
    sampled = np.where(index < len(envelope), envelope[np.minimum(index, len(envelope) - 1)],
                       0.0)
    return float(np.mean(sampled))


def recall_at_precision(scores: np.ndarray, true_positive: np.ndarray, gt_count: int,
                        min_precision: float) -> tuple[float, float, float]:
    """(recall, precision, score threshold) of the score cut with the best recall whose
    precision >= min_precision; (0, NaN, NaN) when no cut reaches it."""
    if gt_count == 0 or len(scores) == 0:
        return 0.0, float('nan'), float('nan')
    precision, recall, sorted_scores = precision_recall(scores, true_positive, gt_count)
    # A cut must keep every detection of equal score: only the last of a tie is a valid cut.
    valid = np.append(sorted_scores[1:] != sorted_scores[:-1], True) & (
        precision >= min_precision)
    if not np.any(valid):
        return 0.0, float('nan'), float('nan')
    best = int(np.flatnonzero(valid)[np.argmax(recall[valid])])
    return float(recall[best]), float(precision[best]), float(sorted_scores[best])


class ClassAccumulator:
    """Detections of one class and ground-truth selection over frames."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.true_positive: list[np.ndarray] = []
        self.gt_count = 0
        self.detections = 0

    def add(self, pred_boxes, pred_scores, gt_boxes, gt_ignore, iou_threshold) -> None:
        tp, ignored = match_frame(pred_boxes, pred_scores, gt_boxes, gt_ignore, iou_threshold)
        self.scores.append(np.asarray(pred_scores)[~ignored])
        self.true_positive.append(tp[~ignored])
        self.gt_count += int(np.count_nonzero(~np.asarray(gt_ignore, bool)))
        self.detections += len(pred_scores)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.concatenate(self.scores) if self.scores else np.zeros(0),
                np.concatenate(self.true_positive) if self.true_positive else np.zeros(0, bool))

    def summary(self, min_precision: float, deployed_threshold: float) -> dict:
        scores, tp = self.arrays()
        recall, precision, threshold = recall_at_precision(scores, tp, self.gt_count,
                                                           min_precision)
        deployed = scores >= deployed_threshold
        tp_deployed = int(np.count_nonzero(tp & deployed))
        return {'ap': _round(average_precision(scores, tp, self.gt_count)),
                'gt': self.gt_count, 'detections': self.detections,
                f'recall_at_precision_{min_precision:g}': _round(recall),
                'precision_there': _round(precision), 'score_threshold_there': _round(threshold),
                'at_deployed_threshold': {
                    'precision': _round(tp_deployed / max(int(np.count_nonzero(deployed)), 1)),
                    'recall': _round(tp_deployed / max(self.gt_count, 1))}}


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 4)


def evaluate(args) -> dict:
    detector = CameraDetector(CameraDetectorParams(
        model_path=str(args.model), score_threshold=args.score_threshold,
        providers=('CPUExecutionProvider',)))
    overall = {name: ClassAccumulator() for name in CLASS_NAMES}
    car_near, car_far, pedestrian_near = (ClassAccumulator() for _ in range(3))
    stage_ms: dict[str, list[float]] = {stage: [] for stage in STAGES}
    lidar = perception_dataset.lidar_config(16, 90)  # the camera does not depend on it
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.frames):
        sample = perception_dataset.generate_sample(seed, split='heldout', lidar=lidar,
                                                    camera=True)
        result = detector.detect(sample.image, 'rgb8')
        if result.reason:
            raise RuntimeError(f'held-out seed {seed}: {result.reason}')
        for stage in STAGES:
            stage_ms[stage].append(result.stage_ms[stage])
        classes = perception_dataset.train_class_indices(sample.labels)
        visible = sample.image_visible_px > 0
        small = sample.image_visible_px < args.min_visible_px
        range_m = np.hypot(sample.boxes_base[:, 0], sample.boxes_base[:, 1])
        for class_id, name in enumerate(CLASS_NAMES):
            mine = result.class_ids == class_id
            boxes, scores = result.boxes[mine], result.scores[mine]
            gt = (classes == class_id) & visible
            gt_boxes = sample.image_boxes[gt]
            overall[name].add(boxes, scores, gt_boxes, small[gt], args.iou)
            if name == 'car':
                car_near.add(boxes, scores, gt_boxes, small[gt] | (range_m[gt] > 50.0),
                             args.iou)
                car_far.add(boxes, scores, gt_boxes,
                            small[gt] | (range_m[gt] <= 50.0) | (range_m[gt] > 80.0), args.iou)
            if name == 'pedestrian':
                pedestrian_near.add(boxes, scores, gt_boxes,
                                    small[gt] | (range_m[gt] > args.pedestrian_range_m),
                                    args.iou)
    wall_s = time.perf_counter() - start
    summary = {name: acc.summary(args.min_precision, args.deployed_threshold)
               for name, acc in overall.items()}
    aps = [v['ap'] for v in summary.values() if v['ap'] is not None]
    pedestrian = pedestrian_near.summary(args.min_precision, args.deployed_threshold)
    return {
        'evaluation': 'camera_detector_2d', 'model': str(args.model), 'split': 'heldout',
        'seeds': [args.first_seed, args.first_seed + args.frames - 1], 'frames': args.frames,
        'iou_threshold': args.iou, 'min_visible_px': args.min_visible_px,
        'ap_method': 'COCO 101-point interpolated, greedy matching by score',
        'score_threshold_evaluated': args.score_threshold,
        'deployed_score_threshold': args.deployed_threshold,
        'per_class': summary,
        'mean_ap': _round(float(np.mean(aps))) if aps else None,
        'car_ap_within_50m': car_near.summary(args.min_precision,
                                              args.deployed_threshold)['ap'],
        'car_ap_50_80m': car_far.summary(args.min_precision, args.deployed_threshold)['ap'],
        f'pedestrian_within_{args.pedestrian_range_m:g}m': {
            'gt': pedestrian['gt'],
            'recall_at_precision': pedestrian[f'recall_at_precision_{args.min_precision:g}'],
            'min_precision': args.min_precision,
            'precision': pedestrian['precision_there'],
            'score_threshold': pedestrian['score_threshold_there'],
            'ap': pedestrian['ap'],
            'at_deployed_threshold': pedestrian['at_deployed_threshold']},
        'timing_ms_median': {stage: round(float(np.median(v)), 3)
                             for stage, v in stage_ms.items()},
        'provider': detector.session.provider,
        'wall_s': round(wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=pathlib.Path,
                        default=ROOT / 'models' / 'camera_detector.onnx')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--first-seed', type=int, default=0)
    parser.add_argument('--iou', type=float, default=0.5)
    parser.add_argument('--min-visible-px', type=int, default=50)
    parser.add_argument('--pedestrian-range-m', type=float, default=30.0)
    parser.add_argument('--min-precision', type=float, default=0.8)
    parser.add_argument('--score-threshold', type=float, default=0.05,
                        help='detector threshold while evaluating (low: the whole PR curve)')
    parser.add_argument('--deployed-threshold', type=float, default=0.3,
                        help='score threshold of the node configuration')
    parser.add_argument('--out', type=pathlib.Path, help='also write the JSON here')
    args = parser.parse_args()
    if args.frames < 1:
        parser.error('--frames must be >= 1')
    result = evaluate(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + '\n')
    print(text)


if __name__ == '__main__':
    main()
