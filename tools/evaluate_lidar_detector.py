"""Held-out evaluation of the committed ONNX LiDAR detector (issue 5's "Must show" numbers).

Usage (project venv, no torch):

    PYTHONPATH=src .venv/bin/python tools/evaluate_lidar_detector.py \
        [--frames 200] [--debris-frames 100] [--channels 64] [--out out/lidar_eval.json]

Frames come from sim/perception_dataset.generate_sample(split='heldout', camera=False): the
held-out split's own seed stream, town pool and actor mix, none of which training saw
(training uses split='train'). Each frame runs what lidar_detector_node runs: the detector
(perception/lidar_detector.py) on the LiDAR-frame cloud, the obstacle path
(perception/obstacles.py), and merge_with_clusters.

- Detection metrics (perception/evaluation.detection_summary, both criteria): predictions are
  the detector's boxes down to --ap-score-threshold (a low threshold traces the whole
  precision-recall curve) plus the UNKNOWN clusters; ground truth with no LiDAR return is
  ignored. Range = BEV distance of box centres from base_link.
- Debris criterion: frames with a 0.5 m UNKNOWN box in the ego lane at --debris-distances
  (seeds DEBRIS_SEED_BASE + k), found when any published object (detections at the node's
  score threshold + kept clusters) has its centre within 1 m of the box centre.
- Objects reported twice: detected ground truth (a published detection within 2 m) that also
  has a published UNKNOWN cluster centred inside its box grown by 0.5 m.

Prints progress to stderr and the JSON result as the last stdout line (and to --out).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'src'))

from robotaxi_stack.perception import evaluation  # noqa: E402
from robotaxi_stack.perception.lidar_detector import (  # noqa: E402
    LidarDetector, LidarDetectorParams, merge_with_clusters)
from robotaxi_stack.perception.obstacles import ObstacleDetector, ObstacleParams  # noqa: E402
from robotaxi_stack.sim import perception_dataset as pds  # noqa: E402

# Debris frames use their own seeds so they never repeat a metrics frame.
DEBRIS_SEED_BASE = 100_000


class Pipeline:
    """Detector + obstacle path + merge, as lidar_detector_node runs them."""

    def __init__(self, model: str, ap_score_threshold: float, node_score_threshold: float,
                 extrinsic: np.ndarray) -> None:
        self.detector = LidarDetector(LidarDetectorParams(
            model_path=model, providers=('CPUExecutionProvider',),
            score_threshold=ap_score_threshold), extrinsic)
        self.obstacles = ObstacleDetector(ObstacleParams(), extrinsic)
        self.node_score_threshold = node_score_threshold
        self.stage_ms: dict[str, list[float]] = {}

    def run(self, sample: pds.PerceptionSample):
        """(all detections + clusters for the metrics, published objects for the debris
        criterion)."""
        result = self.detector.detect(sample.points, sensor_frame=True)
        start = time.perf_counter()
        clusters = self.obstacles.detect(sample.points)
        obstacles_ms = (time.perf_counter() - start) * 1e3
        merged_all = merge_with_clusters(result, clusters)
        published = result.scores >= self.node_score_threshold
        node_view = type(result)(boxes=result.boxes[published],
                                 scores=result.scores[published],
                                 labels=result.labels[published],
                                 class_index=result.class_index[published],
                                 processed=result.processed)
        merged_node = merge_with_clusters(node_view, clusters)
        for name, value in dict(result.stage_ms, obstacles=obstacles_ms).items():
            self.stage_ms.setdefault(name, []).append(value)
        return merged_all, merged_node


def frame_detections(objects, sample: pds.PerceptionSample) -> evaluation.FrameDetections:
    return evaluation.FrameDetections(
        pred_boxes=objects.boxes, pred_scores=objects.scores, pred_labels=objects.labels,
        gt_boxes=sample.boxes_base, gt_labels=sample.labels,
        gt_ignore=sample.lidar_point_counts == 0)


def duplicates(objects, sample: pds.PerceptionSample) -> tuple[int, int]:
    """(ground-truth objects of a detector class with a published detection within 2 m,
    those of them that also have a published UNKNOWN object centred inside the box grown by
    0.5 m): objects reported twice."""
    gt = sample.boxes_base
    classified = (pds.train_class_indices(sample.labels) >= 0) & (sample.lidar_point_counts > 0)
    detected = objects.boxes[objects.from_detector, :2]
    unknown = objects.boxes[~objects.from_detector, :2]
    found = twice = 0
    for k in np.flatnonzero(classified):  # objects of one frame: tens
        if not len(detected) or np.hypot(*(detected - gt[k, :2]).T).min() > 2.0:
            continue
        found += 1
        rel = unknown - gt[k, :2]
        cos, sin = np.cos(gt[k, 6]), np.sin(gt[k, 6])
        inside = (np.abs(rel[:, 0] * cos + rel[:, 1] * sin) <= 0.5 * gt[k, 3] + 0.5) \
            & (np.abs(rel[:, 1] * cos - rel[:, 0] * sin) <= 0.5 * gt[k, 4] + 0.5)
        twice += bool(inside.any())
    return found, twice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=str(ROOT / 'models/lidar_detector.onnx'))
    parser.add_argument('--frames', type=int, default=200, help='held-out metric frames')
    parser.add_argument('--debris-frames', type=int, default=100,
                        help='held-out frames per debris distance')
    parser.add_argument('--debris-distances', type=float, nargs='+',
                        default=[25.0, 30.0, 40.0])
    parser.add_argument('--channels', type=int, default=64, help='LiDAR channels')
    parser.add_argument('--ap-score-threshold', type=float, default=0.05)
    parser.add_argument('--node-score-threshold', type=float,
                        default=LidarDetectorParams().score_threshold,
                        help='score threshold of the published objects (the node default)')
    parser.add_argument('--out', type=pathlib.Path, default=None)
    args = parser.parse_args()
    if args.frames < 1 or args.debris_frames < 0:
        parser.error('--frames must be >= 1 and --debris-frames >= 0')
    lidar = pds.lidar_config(args.channels)
    start = time.perf_counter()
    pipeline = None
    frames = []
    detected_gt = duplicated_gt = 0
    for seed in range(args.frames):
        sample = pds.generate_sample(seed, split='heldout', lidar=lidar, camera=False)
        if pipeline is None:
            pipeline = Pipeline(args.model, args.ap_score_threshold, args.node_score_threshold,
                                sample.base_from_lidar)
        merged_all, merged_node = pipeline.run(sample)
        frames.append(frame_detections(merged_all, sample))
        found, twice = duplicates(merged_node, sample)
        detected_gt += found
        duplicated_gt += twice
        if (seed + 1) % 50 == 0:
            print(f'{seed + 1}/{args.frames} metric frames, {time.perf_counter() - start:.0f} s',
                  file=sys.stderr, flush=True)
    debris_all = []
    debris_rates = {}
    for index, distance in enumerate(args.debris_distances):
        debris = []
        for k in range(args.debris_frames):
            seed = DEBRIS_SEED_BASE + 1000 * index + k
            sample = pds.generate_sample(seed, split='heldout', lidar=lidar, camera=False,
                                         debris_ahead_m=distance)
            _, merged_node = pipeline.run(sample)
            debris.append((frame_detections(merged_node, sample), len(sample.labels) - 1))
        if debris:
            debris_rates[f'{distance:g}m'] = round(evaluation.detection_rate(debris), 4)
            print(f'debris at {distance:g} m: found in {debris_rates[f"{distance:g}m"]:.1%} '
                  f'of {len(debris)} frames', file=sys.stderr, flush=True)
        debris_all.extend(debris)
    summary = evaluation.detection_summary(frames, debris_all or None)
    summary['unknown_debris_detection_rate_by_distance'] = debris_rates
    summary['published_objects_reported_twice'] = {
        'detected_ground_truth': detected_gt, 'also_an_unknown_cluster': duplicated_gt,
        'rate': round(duplicated_gt / max(detected_gt, 1), 4)}
    summary['unknown_debris_frames_per_distance'] = args.debris_frames
    summary['config'] = {
        'model': str(pathlib.Path(args.model).resolve().relative_to(ROOT))
        if pathlib.Path(args.model).resolve().is_relative_to(ROOT) else args.model,
        'split': 'heldout', 'metric_seeds': [0, args.frames - 1],
        'debris_seeds': f'{DEBRIS_SEED_BASE} + 1000 * distance_index + k',
        'lidar': {'channels': args.channels, **{k: v for k, v in pds.DEFAULT_LIDAR.items()
                                                if k != 'channels'}},
        'ap_score_threshold': args.ap_score_threshold,
        'node_score_threshold': args.node_score_threshold,
        'stage_median_ms_on_this_machine': {
            name: round(float(np.median(values)), 2)
            for name, values in pipeline.stage_ms.items()},
        'wall_s': round(time.perf_counter() - start, 1),
        'python': platform.python_version()}
    text = json.dumps(summary)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + '\n')
    print(text)


if __name__ == '__main__':
    main()
