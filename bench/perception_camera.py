"""Benchmark: camera 2D detector (perception/camera_detector.py) per frame.

Usage: python bench/perception_camera.py [--quick]

Input: held-out simulated camera_front frames (640 x 384 rgb8, perception_dataset seeds 0..7)
and the same frames upscaled to 1280 x 720 bgr8 (a camera whose frames must be letterboxed).
Measures `CameraDetector.detect` per frame: pre-processing (letterbox + float CHW), inference,
post-processing (peaks, decode, NMS, un-letterbox) and total, median and p90, for each
onnxruntime execution provider this machine offers among CPU, CUDA and TensorRT (the others are
reported as not available). Also the model's size, FLOPs and parameters (models/*.json).

Baseline: the common OpenCV pre-processing of letterboxing detectors (cv2.resize, then
cv2.copyMakeBorder, then cv2.dnn.blobFromImage with swapRB) against ours (resize straight into
a preallocated padded buffer, strided channel reorder into a reused float32 tensor).
Prints one JSON object as the last stdout line.
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

import cv2
import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'src'))

from robotaxi_stack.perception.camera_detector import (  # noqa: E402
    STAGES, CameraDetector, CameraDetectorParams, Preprocessor)
from robotaxi_stack.sim import perception_dataset  # noqa: E402

PROVIDERS = ('CPUExecutionProvider', 'CUDAExecutionProvider', 'TensorrtExecutionProvider')
TARGET_TOTAL_MS = 40.0
FRAMES = 8


def stats(samples_ms) -> dict:
    samples = np.asarray(samples_ms, dtype=float)
    return {'median_ms': round(float(np.median(samples)), 3),
            'p90_ms': round(float(np.percentile(samples, 90)), 3),
            'max_ms': round(float(samples.max()), 3)}


def time_detector(detector: CameraDetector, frames, encoding: str, repeats: int) -> dict:
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    detections = []
    detector.detect(frames[0], encoding)  # first-call costs are not per frame
    gc.collect()
    gc.disable()
    try:
        for k in range(repeats):
            result = detector.detect(frames[k % len(frames)], encoding)
            for stage in STAGES:
                per_stage[stage].append(result.stage_ms[stage])
            detections.append(len(result))
    finally:
        gc.enable()
    return {stage: stats(values) for stage, values in per_stage.items()} | {
        'detections_mean': round(float(np.mean(detections)), 2), 'samples': repeats}


def baseline_preprocess(image: np.ndarray, width: int, height: int, pad_value: int
                        ) -> np.ndarray:
    """Letterbox + blob as most OpenCV detector examples do it."""
    scale = min(width / image.shape[1], height / image.shape[0])
    resized_w, resized_h = round(image.shape[1] * scale), round(image.shape[0] * scale)
    resized = cv2.resize(image, (resized_w, resized_h), interpolation=cv2.INTER_AREA)
    left, top = (width - resized_w) // 2, (height - resized_h) // 2
    padded = cv2.copyMakeBorder(resized, top, height - resized_h - top, left,
                                width - resized_w - left, cv2.BORDER_CONSTANT,
                                value=(pad_value,) * 3)
    return cv2.dnn.blobFromImage(padded, 1.0 / 255.0, swapRB=True)


def time_call(function, repeats: int) -> dict:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return stats(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats')
    parser.add_argument('--model', type=pathlib.Path, default=ROOT / 'models' /
                        'camera_detector.onnx', help='ONNX model (its .json beside it)')
    args = parser.parse_args()
    repeats = 30 if args.quick else 300
    pre_repeats = 50 if args.quick else 500

    lidar = perception_dataset.lidar_config(16, 90)
    frames = [perception_dataset.generate_sample(seed, split='heldout', lidar=lidar).image
              for seed in range(FRAMES)]
    large_bgr = [np.ascontiguousarray(cv2.resize(f, (1280, 720))[..., ::-1]) for f in frames]
    available = ort.get_available_providers()
    metrics: dict = {'providers': {}}
    detector = None
    for provider in PROVIDERS:
        if provider not in available:
            metrics['providers'][provider] = 'not available (onnxruntime offers ' \
                f'{available})'
            continue
        detector = CameraDetector(CameraDetectorParams(model_path=str(args.model),
                                                       providers=(provider,)))
        entry = {'session_provider': detector.session.provider,
                 'frame_640x384_rgb8': time_detector(detector, frames, 'rgb8', repeats),
                 'frame_1280x720_bgr8': time_detector(detector, large_bgr, 'bgr8', repeats)}
        metrics['providers'][provider] = entry
        total = entry['frame_640x384_rgb8']['total']['median_ms']
        print(f'{provider}: 640x384 total median {total:.1f} ms '
              f'(pre {entry["frame_640x384_rgb8"]["pre"]["median_ms"]:.2f}, inference '
              f'{entry["frame_640x384_rgb8"]["inference"]["median_ms"]:.1f}, post '
              f'{entry["frame_640x384_rgb8"]["post"]["median_ms"]:.2f}); 1280x720 total '
              f'{entry["frame_1280x720_bgr8"]["total"]["median_ms"]:.1f} ms')
    model_path = args.model
    document = json.loads(model_path.with_suffix('.json').read_text())
    metrics['model'] = {'path': str(model_path), 'bytes': model_path.stat().st_size,
                        'flops': document['flops'], 'parameters': document['parameters'],
                        'input': [document['input']['width'], document['input']['height']]}
    cpu = metrics['providers']['CPUExecutionProvider']['frame_640x384_rgb8']
    metrics['cpu_total_within_target'] = cpu['total']['median_ms'] <= TARGET_TOTAL_MS

    # Pre-processing only, on the 1280 x 720 bgr8 frames that need the letterbox.
    metadata = detector.metadata
    ours = Preprocessor(metadata.input_width, metadata.input_height, metadata.pad_value)
    frame = large_bgr[0]
    metrics['preprocess_1280x720_bgr8'] = time_call(lambda: ours(frame, bgr=True),
                                                    pre_repeats)
    baseline = {'opencv_resize_border_blob_1280x720_bgr8': time_call(
        lambda: baseline_preprocess(frame, metadata.input_width, metadata.input_height,
                                    metadata.pad_value), pre_repeats),
        'target_total_median_ms': TARGET_TOTAL_MS}
    ours_tensor, _ = ours(frame, bgr=True)
    reference = baseline_preprocess(frame, metadata.input_width, metadata.input_height,
                                    metadata.pad_value)
    metrics['preprocess_max_abs_diff_vs_baseline'] = float(np.max(np.abs(ours_tensor
                                                                         - reference)))
    ratio = {
        'preprocess_speedup_vs_opencv_blob': round(
            baseline['opencv_resize_border_blob_1280x720_bgr8']['median_ms']
            / metrics['preprocess_1280x720_bgr8']['median_ms'], 2),
        'cpu_total_vs_target': round(cpu['total']['median_ms'] / TARGET_TOTAL_MS, 3)}
    print(f'pre-processing 1280x720: ours {metrics["preprocess_1280x720_bgr8"]["median_ms"]:.2f}'
          f' ms vs OpenCV resize + border + blob '
          f'{baseline["opencv_resize_border_blob_1280x720_bgr8"]["median_ms"]:.2f} ms')
    print(json.dumps({
        'benchmark': 'perception_camera', 'metrics': metrics, 'baseline': baseline,
        'ratio': ratio,
        'config': {'quick': args.quick, 'frames': FRAMES, 'repeats': repeats,
                   'split': 'heldout', 'params': 'CameraDetectorParams defaults',
                   'python': platform.python_version(), 'numpy': np.__version__,
                   'onnxruntime': ort.__version__, 'opencv': cv2.__version__,
                   'cpus': os.cpu_count()}}))


if __name__ == '__main__':
    main()
