"""Benchmark: one tracking + prediction cycle (robotaxi_stack.tracking.tracker, then
robotaxi_stack.prediction.predictor on its output) at 10, 50 and 200 objects.

Usage: python bench/tracking_prediction.py [--quick]

Traffic (deterministic, seed 7): the scenes of bench/prediction.py, a 4 x 3 block grid_town
with IDM lane followers (cars, cyclists; random turns, all-way stops) and pedestrians crossing
at crosswalks (prediction/evaluation.make_scenario: 60 % vehicles, 10 % cyclists, 30 %
pedestrians), stepped at 10 Hz. Every step the project's simulated detector
(sim.detection_model: position, yaw and size noise, misses, false positives on the road, class
confusion), seeing the whole town from its centre, gives one frame of map-frame detections.
One cycle is what the tracking and prediction nodes do with it: Tracker.update(stamp,
detections); the confirmed tracks as predictor rows (as prediction_node.objects_table makes
them from TrackedObjects: signed speed from the object-frame twist, yaw rate from the
predictor's history); Predictor.predict(rows, stamp) (8 s horizon, 0.5 s steps, up to 6
modes). The first 20 cycles (tracks confirming, histories and caches filling) are not timed.

Measured per cycle: wall time of the whole cycle (median, p90, p99, max) and of each stage
(median, p90), and the cycle's CPU time (on a shared machine wall time also counts waiting for a
core). Baseline: the issue's budget, 10 ms per cycle at 50 objects; ratio = budget / median
(>= 1: met).
The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'src'))

from robotaxi_stack.prediction import evaluation  # noqa: E402
from robotaxi_stack.prediction.predictor import Predictor, PredictorParams  # noqa: E402
from robotaxi_stack.sim import actors as act  # noqa: E402
from robotaxi_stack.sim import maps  # noqa: E402
from robotaxi_stack.sim.detection_model import DetectorConfig, detect  # noqa: E402
from robotaxi_stack.tracking.tracker import (  # noqa: E402
    Detections, Tracker, TrackerParams, TrackSet, class_probs_from_labels)

SEED = 7
DETECTOR_SEED = 5
COUNTS = (10, 50, 200)
STEP_S = 0.1
WARMUP_CYCLES = 20
BUDGET_MEDIAN_MS_AT_50 = 10.0


def traffic(count: int) -> tuple[maps.Town, act.ActorWorld]:
    vehicles = int(round(0.6 * count))
    cyclists = int(round(0.1 * count))
    town, specs = evaluation.make_scenario(SEED, cars=vehicles, cyclists=cyclists,
                                           pedestrians=count - vehicles - cyclists,
                                           duration_s=120.0, blocks=(4, 3))
    return town, act.ActorWorld(specs)


def tracker_input(town: maps.Town, snapshot: act.ActorSnapshot, config: DetectorConfig,
                  rng: np.random.Generator) -> Detections:
    """One simulated detector frame of the whole town, map frame."""
    x0, y0, x1, y1 = town.extent
    dets = detect(snapshot, (0.5 * (x0 + x1), 0.5 * (y0 + y1), 0.0), config, rng,
                  lambda xy: maps.is_on_road(town, xy))
    return Detections('map', np.column_stack([dets.x_m, dets.y_m]), dets.z_m, dets.yaw_rad,
                      np.column_stack([dets.length_m, dets.width_m, dets.height_m]),
                      class_probs_from_labels(dets.labels, dets.class_prob), dets.covariance,
                      dets.class_prob)


def prediction_rows(tracks: TrackSet) -> np.ndarray:
    """Confirmed tracks -> (N, 12) predictor rows, the values prediction_node.objects_table
    reads from the tracking node's TrackedObjects (yaw rate and acceleration unknown)."""
    c, s = np.cos(tracks.yaw_rad), np.sin(tracks.yaw_rad)
    v_x, v_y = tracks.velocity_object_mps[:, 0], tracks.velocity_object_mps[:, 1]
    unknown = np.full(len(tracks), np.nan)
    return np.column_stack([tracks.ids.astype(np.float64), tracks.labels, tracks.xyz_m[:, :2],
                            tracks.yaw_rad, v_x, c * v_x - s * v_y, s * v_x + c * v_y,
                            tracks.dims_m[:, :2], unknown, unknown])


def percentiles(samples_ms, prefix: str = '') -> dict:
    samples = np.asarray(samples_ms)
    return {f'{prefix}median_ms': round(float(np.median(samples)), 3),
            f'{prefix}p90_ms': round(float(np.percentile(samples, 90)), 3)}


def run(count: int, cycles: int) -> dict:
    town, world = traffic(count)
    config = DetectorConfig(range_m=2000.0)  # sees the whole town: every actor counts
    rng = np.random.default_rng(DETECTOR_SEED)
    tracker = Tracker(TrackerParams())
    predictor = Predictor(town, PredictorParams())
    cycle_ms, tracking_ms, prediction_ms, cpu_ms = [], [], [], []
    detections, tracks, modes = [], [], []
    gc.collect()
    gc.disable()
    try:
        for k in range(cycles + WARMUP_CYCLES):
            snapshot = world.step(STEP_S)
            dets = tracker_input(town, snapshot, config, rng)
            start, start_cpu = time.perf_counter(), time.process_time()
            result = tracker.update(snapshot.time_s, dets)
            tracked = time.perf_counter()
            output = predictor.predict(prediction_rows(result.tracks), snapshot.time_s)
            end, end_cpu = time.perf_counter(), time.process_time()
            if not result.accepted:
                raise RuntimeError(f'frame at {snapshot.time_s:.1f} s rejected: '
                                   f'{result.reason}')
            if k < WARMUP_CYCLES:
                continue
            cycle_ms.append((end - start) * 1e3)
            tracking_ms.append((tracked - start) * 1e3)
            prediction_ms.append((end - tracked) * 1e3)
            cpu_ms.append((end_cpu - start_cpu) * 1e3)
            detections.append(len(dets))
            tracks.append(len(result.tracks))
            modes.append(sum(len(p.confidences) for p in output.objects))
    finally:
        gc.enable()
    cycle = np.asarray(cycle_ms)
    return {'median_ms': round(float(np.median(cycle)), 3),
            'p90_ms': round(float(np.percentile(cycle, 90)), 3),
            'p99_ms': round(float(np.percentile(cycle, 99)), 3),
            'max_ms': round(float(cycle.max()), 3), 'samples': len(cycle),
            'cpu_median_ms': round(float(np.median(cpu_ms)), 3)} \
        | percentiles(tracking_ms, 'tracking_') | percentiles(prediction_ms, 'prediction_') \
        | {'detections': int(np.median(detections)), 'tracks': int(np.median(tracks)),
           'mean_modes': round(float(np.mean(modes)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer cycles')
    args = parser.parse_args()
    cycles = 60 if args.quick else 300
    metrics = {}
    for count in COUNTS:
        ours = run(count, cycles)
        metrics[f'objects_{count}'] = ours
        print(f'{count:>3} objects ({ours["tracks"]} tracks, {ours["mean_modes"]} modes): '
              f'median {ours["median_ms"]:.2f} ms (tracking {ours["tracking_median_ms"]:.2f} '
              f'+ prediction {ours["prediction_median_ms"]:.2f}; cpu '
              f'{ours["cpu_median_ms"]:.2f}), p90 {ours["p90_ms"]:.2f} ms')
    at_50 = metrics['objects_50']['median_ms']
    result = {
        'benchmark': 'tracking_prediction',
        'metrics': metrics,
        'baseline': {'budget_objects_50_median_ms': BUDGET_MEDIAN_MS_AT_50,
                     'load_average_1min': round(os.getloadavg()[0], 2)},
        'ratio': {'objects_50_budget_over_median': round(BUDGET_MEDIAN_MS_AT_50 / at_50, 2)},
        'targets': {'objects_50_median_ms': BUDGET_MEDIAN_MS_AT_50,
                    'met': at_50 <= BUDGET_MEDIAN_MS_AT_50},
        'config': {'quick': args.quick, 'cycles': cycles, 'warmup_cycles': WARMUP_CYCLES,
                   'seed': SEED, 'detector_seed': DETECTOR_SEED, 'step_s': STEP_S,
                   'python': platform.python_version(), 'numpy': np.__version__,
                   'cpus': os.cpu_count()},
    }
    print(json.dumps(result))


if __name__ == '__main__':
    main()
