"""Benchmark: ONNX LiDAR detector per frame (pre-processing, inference, post-processing, merge).

Usage: python bench/perception_lidar_detector.py [--quick]

Input: held-out frames of sim/perception_dataset (64 channels x 1800 columns, ~110-120k
points, lidar_top frame) through `LidarDetector.detect` with the committed
models/lidar_detector.onnx, then the obstacle path and `merge_with_clusters` as
lidar_detector_node runs them. Per execution provider: median/p90 of the pre, inference, post,
merge stages, `total_ms` (detector + merge, issue 5's "total", target <= 60 ms median on 2 CPU
cores) and `total_with_obstacles_ms` (the node's whole frame: + ground removal and
clustering). CPU always, with the default intra_op_threads (1) and with 2 threads;
CUDAExecutionProvider and TensorrtExecutionProvider when this onnxruntime offers them (an
onnxruntime-gpu install on a GPU machine), else a "not available" entry. Also the model's size,
FLOPs and parameters (from its metadata). Baseline: the issue's 60 ms target and the obstacle
path alone. Prints one JSON object as the last stdout line.
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
import onnxruntime as ort

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'src'))

from robotaxi_stack.perception.lidar_detector import (  # noqa: E402
    LidarDetector, LidarDetectorParams, default_model_path, merge_with_clusters)
from robotaxi_stack.perception.obstacles import ObstacleDetector, ObstacleParams  # noqa: E402
from robotaxi_stack.sim import perception_dataset as pds  # noqa: E402

TARGET_TOTAL_MS = 60.0
DEVICE_PROVIDERS = ('CUDAExecutionProvider', 'TensorrtExecutionProvider')


def stats(samples_ms) -> dict:
    samples = np.asarray(samples_ms, dtype=float)
    return {'median_ms': round(float(np.median(samples)), 3),
            'p90_ms': round(float(np.percentile(samples, 90)), 3),
            'max_ms': round(float(samples.max()), 3), 'samples': int(len(samples))}


def run_provider(provider: str, threads: int, frames, extrinsic, repeats: int) -> dict:
    detector = LidarDetector(LidarDetectorParams(providers=(provider,),
                                                 intra_op_threads=threads), extrinsic)
    obstacles = ObstacleDetector(ObstacleParams(), extrinsic)
    detector.detect(frames[0].points, sensor_frame=True)  # first-call allocations
    obstacles.detect(frames[0].points)
    times: dict[str, list[float]] = {}
    detections = []
    gc.collect()
    gc.disable()
    try:
        for k in range(repeats):
            points = frames[k % len(frames)].points
            result = detector.detect(points, sensor_frame=True)
            start = time.perf_counter()
            clusters = obstacles.detect(points)
            obstacles_ms = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            merged = merge_with_clusters(result, clusters)
            merge_ms = (time.perf_counter() - start) * 1e3
            for name in ('pre', 'inference', 'post'):
                times.setdefault(name, []).append(result.stage_ms[name])
            times.setdefault('merge', []).append(merge_ms)
            times.setdefault('obstacles', []).append(obstacles_ms)
            times.setdefault('total', []).append(result.stage_ms['total'] + merge_ms)
            times.setdefault('total_with_obstacles', []).append(
                result.stage_ms['total'] + obstacles_ms + merge_ms)
            detections.append((len(result), len(merged)))
    finally:
        gc.enable()
    out = {f'{name}_ms': stats(values) for name, values in times.items()}
    out['provider'] = detector.session.provider
    out['intra_op_threads'] = threads
    out['detections_mean'] = round(float(np.mean([d for d, _ in detections])), 1)
    out['objects_mean'] = round(float(np.mean([m for _, m in detections])), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer frames and repeats')
    args = parser.parse_args()
    frame_count = 3 if args.quick else 10
    repeats = 10 if args.quick else 60
    frames = [pds.generate_sample(seed, split='heldout', camera=False)
              for seed in range(frame_count)]
    extrinsic = frames[0].base_from_lidar
    model = default_model_path()
    meta = json.loads(model.with_suffix('.json').read_text())
    available = ort.get_available_providers()
    metrics = {'model': {'path': 'models/lidar_detector.onnx', 'size_bytes': model.stat().st_size,
                         'flops': meta['flops'], 'macs': meta['macs'],
                         'parameters': meta['parameters'],
                         'input_shape': meta['inputs'][0]['shape']},
               'points_mean': int(np.mean([len(f.points) for f in frames]))}
    metrics['cpu'] = run_provider('CPUExecutionProvider', LidarDetectorParams().intra_op_threads,
                                  frames, extrinsic, repeats)
    metrics['cpu_2_threads'] = run_provider('CPUExecutionProvider', 2, frames, extrinsic,
                                            repeats)
    for provider in DEVICE_PROVIDERS:
        key = provider.replace('ExecutionProvider', '').lower()
        if provider in available:
            try:
                metrics[key] = run_provider(provider, 0, frames, extrinsic, repeats)
            except Exception as error:  # a broken GPU install is a result, not a crash
                metrics[key] = {'status': f'failed: {type(error).__name__}: {error}'}
        else:
            metrics[key] = {'status': f'not available: this onnxruntime offers {available}'}
    for key in ('cpu', 'cpu_2_threads', 'cuda', 'tensorrt'):
        entry = metrics[key]
        if 'total_ms' in entry:
            print(f'{key}: total median {entry["total_ms"]["median_ms"]:.1f} ms (pre '
                  f'{entry["pre_ms"]["median_ms"]:.1f}, inference '
                  f'{entry["inference_ms"]["median_ms"]:.1f}, post '
                  f'{entry["post_ms"]["median_ms"]:.1f}, merge '
                  f'{entry["merge_ms"]["median_ms"]:.1f}); with obstacles '
                  f'{entry["total_with_obstacles_ms"]["median_ms"]:.1f} ms')
        else:
            print(f'{key}: {entry["status"]}')
    baseline = {'issue_target_total_median_ms': TARGET_TOTAL_MS,
                'obstacle_path_only': metrics['cpu']['obstacles_ms']}
    ratio = {'target_over_cpu_total_median': round(
        TARGET_TOTAL_MS / metrics['cpu']['total_ms']['median_ms'], 2),
        'cpu_meets_target': metrics['cpu']['total_ms']['median_ms'] <= TARGET_TOTAL_MS}
    print(json.dumps({
        'benchmark': 'perception_lidar_detector', 'metrics': metrics, 'baseline': baseline,
        'ratio': ratio,
        'config': {'quick': args.quick, 'frames': frame_count, 'repeats': repeats,
                   'lidar': pds.DEFAULT_LIDAR, 'split': 'heldout',
                   'params': 'LidarDetectorParams() and ObstacleParams() defaults',
                   'onnxruntime': ort.__version__, 'available_providers': available,
                   'python': platform.python_version(), 'numpy': np.__version__,
                   'cpus': os.cpu_count(), 'load_average': list(os.getloadavg())}}))


if __name__ == '__main__':
    main()
