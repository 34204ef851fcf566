"""Benchmark: per-cycle Tracker.update time (robotaxi_stack.tracking.tracker) at 10, 50 and 200
objects.

Usage: python bench/tracking.py [--quick]

Scene (deterministic, seed 5): N objects in a 200 m x 200 m area, 70 % vehicles driving CTRV
(5-15 m/s, yaw rates up to 0.2 rad/s) and 30 % pedestrians walking (0.5-1.8 m/s); detections at
10 Hz with 0.2 m position noise, 0.05 rad yaw noise, 7 % misses and 0.5 false positives per
frame on average. The first frames (until the tracks are confirmed) are excluded; measured is
the wall time of one `update` (input checks, IMM predict, gating + Hungarian, update, lifecycle,
births, output arrays).

Baseline, on the same frames: the same association and filter written per object, the way a
first implementation loops — per-track EKF predict/update with numpy on 6x6 matrices, a Python
double loop for the gated Mahalanobis cost matrix, linear_sum_assignment — without lifecycle
or IMM, deleting a track after 4 misses (so it does less work than the tracker).
Ratio = baseline / tracker.
Target: tracking + prediction <= 10 ms at 50 objects; this reports tracking alone
(bench/tracking_prediction.py measures the whole cycle).

The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'src'))

from robotaxi_stack.tracking.tracker import (  # noqa: E402
    Detections, Tracker, TrackerParams, class_probs_from_labels)

SEED = 5
STEP_S = 0.1
WARMUP_FRAMES = 10
TARGET_50_MEDIAN_MS = 10.0


def make_frames(num_objects: int, num_frames: int, rng: np.random.Generator) -> list:
    n_veh = int(round(0.7 * num_objects))
    labels = np.array([1] * n_veh + [6] * (num_objects - n_veh))
    xy = rng.uniform(-100.0, 100.0, (num_objects, 2))
    yaw = rng.uniform(-np.pi, np.pi, num_objects)
    speed = np.where(labels == 1, rng.uniform(5.0, 15.0, num_objects),
                     rng.uniform(0.5, 1.8, num_objects))
    yaw_rate = np.where(labels == 1, rng.uniform(-0.2, 0.2, num_objects), 0.0)
    dims = np.where(labels[:, None] == 1, [4.6, 1.9, 1.5], [0.5, 0.6, 1.75])
    frames = []
    for _ in range(num_frames):
        seen = rng.random(num_objects) >= 0.07
        n = int(seen.sum())
        ghosts = int(rng.poisson(0.5))
        det_xy = np.concatenate([xy[seen] + rng.normal(0.0, 0.2, (n, 2)),
                                 rng.uniform(-100.0, 100.0, (ghosts, 2))])
        det_yaw = np.concatenate([yaw[seen] + rng.normal(0.0, 0.05, n),
                                  rng.uniform(-np.pi, np.pi, ghosts)])
        det_labels = np.concatenate([labels[seen], np.ones(ghosts, int)])
        det_dims = np.concatenate([dims[seen], np.tile([4.5, 1.9, 1.5], (ghosts, 1))])
        m = n + ghosts
        cov = np.tile(np.diag([0.04, 0.04, 0.0025]), (m, 1, 1))
        frames.append(Detections('map', det_xy, 0.5 * det_dims[:, 2], det_yaw, det_dims,
                                 class_probs_from_labels(det_labels, np.full(m, 0.85)), cov,
                                 np.ones(m)))
        yaw = yaw + yaw_rate * STEP_S
        xy = xy + STEP_S * speed[:, None] * np.column_stack([np.cos(yaw), np.sin(yaw)])
    return frames


def percentiles(times_ms: list[float]) -> dict[str, float]:
    array = np.asarray(times_ms)
    return {'median_ms': round(float(np.median(array)), 3),
            'p99_ms': round(float(np.percentile(array, 99)), 3),
            'max_ms': round(float(array.max()), 3)}


class NaiveTracker:
    """Per-object loops: CV-in-yaw EKF (CTRV), gated Mahalanobis cost by double loop."""

    def __init__(self, gate: float):
        self.gate = gate
        self.x: list[np.ndarray] = []
        self.P: list[np.ndarray] = []
        self.misses: list[int] = []
        self.t = None

    def update(self, t: float, dets: Detections) -> None:
        dt = 0.0 if self.t is None else t - self.t
        self.t = t
        for i in range(len(self.x)):
            x, P = self.x[i], self.P[i]
            yaw, v = x[2], x[3]
            F = np.eye(6)
            F[0, 2], F[0, 3] = -v * dt * math.sin(yaw), dt * math.cos(yaw)
            F[1, 2], F[1, 3] = v * dt * math.cos(yaw), dt * math.sin(yaw)
            F[2, 4] = F[3, 5] = dt
            x = x.copy()
            x[0] += v * dt * math.cos(yaw)
            x[1] += v * dt * math.sin(yaw)
            x[2] += x[4] * dt
            x[3] += x[5] * dt
            self.x[i], self.P[i] = x, F @ P @ F.T + np.eye(6) * 0.01
        cost = np.full((len(self.x), len(dets)), 1e9)
        for i in range(len(self.x)):
            for j in range(len(dets)):
                r = dets.xy_m[j] - self.x[i][:2]
                S = self.P[i][:2, :2] + dets.covariance[j][:2, :2]
                d2 = float(r @ np.linalg.solve(S, r))
                if d2 <= self.gate:
                    cost[i, j] = d2
        rows, cols = linear_sum_assignment(cost) if cost.size else ([], [])
        used = set()
        self.misses = [m + 1 for m in self.misses]
        H = np.zeros((3, 6))
        H[0, 0] = H[1, 1] = H[2, 2] = 1.0
        for i, j in zip(rows, cols):
            if cost[i, j] >= 1e9:
                continue
            used.add(j)
            self.misses[i] = 0
            z = np.array([*dets.xy_m[j], dets.yaw_rad[j]])
            y = z - H @ self.x[i]
            y[2] = (y[2] + np.pi) % (2 * np.pi) - np.pi
            S = H @ self.P[i] @ H.T + dets.covariance[j]
            K = self.P[i] @ H.T @ np.linalg.inv(S)
            self.x[i] = self.x[i] + K @ y
            self.P[i] = (np.eye(6) - K @ H) @ self.P[i]
        for j in range(len(dets)):
            if j not in used:
                self.x.append(np.array([*dets.xy_m[j], dets.yaw_rad[j], 0.0, 0.0, 0.0]))
                self.P.append(np.diag([0.04, 0.04, 0.01, 64.0, 0.09, 1.0]))
                self.misses.append(0)
        keep = [i for i, m in enumerate(self.misses) if m <= 3]  # the only lifecycle rule
        self.x = [self.x[i] for i in keep]
        self.P = [self.P[i] for i in keep]
        self.misses = [self.misses[i] for i in keep]


def run(frames: list, tracker) -> list[float]:
    times_ms = []
    for k, dets in enumerate(frames):
        start = time.perf_counter()
        tracker.update(k * STEP_S, dets)
        times_ms.append((time.perf_counter() - start) * 1e3)
    return times_ms[WARMUP_FRAMES:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='fewer frames')
    args = parser.parse_args()
    num_frames = 40 if args.quick else 300
    rng = np.random.default_rng(SEED)
    metrics, baseline, ratio = {}, {}, {}
    for count in (10, 50, 200):
        frames = make_frames(count, num_frames, rng)
        tracker = Tracker(TrackerParams())
        ours = run(frames, tracker)
        key = f'objects_{count}'
        metrics[key] = percentiles(ours) | {'confirmed_tracks': len(tracker.output()),
                                            'all_tracks': tracker.num_tracks}
        naive = run(frames[:min(num_frames, 60)],
                    NaiveTracker(TrackerParams().gate_mahalanobis_sq))
        baseline[key] = percentiles(naive)
        ratio[key] = {'median_speedup': round(baseline[key]['median_ms']
                                              / metrics[key]['median_ms'], 1)}
        print(f'{count:>3} objects: median {metrics[key]["median_ms"]:.2f} ms, p99 '
              f'{metrics[key]["p99_ms"]:.2f} ms ({metrics[key]["confirmed_tracks"]} confirmed '
              f'tracks); per-object loops {baseline[key]["median_ms"]:.2f} ms median')
    result = {
        'benchmark': 'tracking',
        'metrics': metrics,
        'baseline': baseline,
        'ratio': ratio,
        'targets': {'objects_50_median_ms': TARGET_50_MEDIAN_MS,
                    'met': metrics['objects_50']['median_ms'] <= TARGET_50_MEDIAN_MS,
                    'note': 'target is for tracking + prediction; this is tracking alone'},
        'config': {'quick': args.quick, 'frames': num_frames, 'warmup_frames': WARMUP_FRAMES,
                   'seed': SEED, 'python': platform.python_version(),
                   'numpy': np.__version__, 'cpus': os.cpu_count()},
    }
    print(json.dumps(result))


if __name__ == '__main__':
    main()
