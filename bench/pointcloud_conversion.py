"""Benchmark: sensor_msgs/PointCloud2 <-> numpy against element-by-element conversion.

Layout: the contract LiDAR layout x, y, z, intensity (float32), ring (uint16), time (float32),
24 bytes per point (make_points_dtype's aligned layout). Sizes: 120k points (one 10 Hz scan of a
64-channel spinning LiDAR) and 2M points (a dense multi-LiDAR frame).

Measured, each as the median over repeats with the garbage collector off:
* to_numpy_view: pointcloud2_to_array(msg), a zero-copy view (what nodes use);
* to_numpy_copy: pointcloud2_to_array(msg, copy=True), an owned copy, the fair comparison with a
  baseline that materialises the points;
* from_numpy: array_to_pointcloud2(points, ...) with is_dense computed (default path);
* from_numpy_tobytes_fill: the same message built with `msg.data = points.tobytes()`, to show
  what the single-copy fill path saves.
Baselines, measured in the same run: struct.unpack_from per point into a list, then np.array
(reading), and struct.pack_into per point into a bytearray assigned to msg.data (writing). They
are timed on fewer points and scaled linearly per point (the JSON says how many).

Usage: python bench/pointcloud_conversion.py [--quick]; the last stdout line is the JSON result.
"""

import argparse
import gc
import json
import os
import platform
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                'src'))

from builtin_interfaces.msg import Time  # noqa: E402
from robotaxi_stack.common.pointcloud import (  # noqa: E402
    array_to_pointcloud2, make_points_dtype, pointcloud2_to_array)
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

FIELDS = ('x', 'y', 'z', 'intensity', 'ring', 'time')
# x, y, z, intensity at 0..12, ring uint16 at 16, 2 pad bytes, time at 20: 24 bytes.
STRUCT_FORMAT = '<ffffHxxf'
SIZES = (120_000, 2_000_000)
TARGET_GBPS = 1.0
TARGET_SPEEDUP = 50.0


def timed_ms(function, repeats):
    """Median and max of `repeats` calls of function, in ms, with the GC off."""
    samples = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter_ns()
            function()
            samples.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        gc.enable()
    return float(np.median(samples)), float(np.max(samples))


def make_points(n, seed):
    rng = np.random.default_rng(seed)
    points = np.zeros(n, make_points_dtype(FIELDS))  # zeroed padding, as struct writes
    points['x'] = rng.uniform(-100.0, 100.0, n)
    points['y'] = rng.uniform(-100.0, 100.0, n)
    points['z'] = rng.uniform(-3.0, 10.0, n)
    points['intensity'] = rng.uniform(0.0, 255.0, n)
    points['ring'] = rng.integers(0, 64, n)
    points['time'] = rng.uniform(0.0, 0.1, n)
    return points


def naive_to_numpy(msg, dtype):
    """Element-by-element reading, the way naive code does it."""
    rows = []
    data = msg.data
    step = msg.point_step
    for i in range(msg.width * msg.height):
        rows.append(struct.unpack_from(STRUCT_FORMAT, data, i * step))
    return np.array(rows, dtype=dtype)


def naive_from_numpy(points, frame_id, stamp):
    """Element-by-element writing, the way naive code does it."""
    step = struct.calcsize(STRUCT_FORMAT)
    buffer = bytearray(len(points) * step)
    for i, point in enumerate(points):
        struct.pack_into(STRUCT_FORMAT, buffer, i * step, *point)
    msg = PointCloud2()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp
    msg.height = 1
    msg.width = len(points)
    msg.fields = [PointField(name=n, offset=points.dtype.fields[n][1],
                             datatype=PointField.UINT16 if n == 'ring' else PointField.FLOAT32,
                             count=1) for n in FIELDS]
    msg.point_step = step
    msg.row_step = step * len(points)
    msg.is_dense = True
    msg.data = buffer
    return msg


def tobytes_from_numpy(points, frame_id, stamp):
    """array_to_pointcloud2's message, filled with the two-copy `msg.data = tobytes()`."""
    msg = array_to_pointcloud2(points[:0], frame_id, stamp)
    msg.width = len(points)
    msg.row_step = points.dtype.itemsize * len(points)
    msg.is_dense = bool(np.isfinite(points['x']).all() and np.isfinite(points['y']).all()
                        and np.isfinite(points['z']).all())
    msg.data = points.tobytes()
    return msg


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer repeats, smaller baseline')
    args = parser.parse_args()
    view_repeats, copy_repeats, baseline_repeats = (50, 5, 1) if args.quick else (500, 21, 3)
    baseline_points = 5_000 if args.quick else 20_000

    stamp = Time(sec=1, nanosec=0)
    metrics, baseline, ratio = {}, {}, {}
    below_targets = []

    # Baseline: per-point cost measured once on a slice, scaled to each size.
    sample = make_points(baseline_points, seed=1)
    sample_msg = array_to_pointcloud2(sample, 'lidar_top', stamp)
    decoded = naive_to_numpy(sample_msg, sample.dtype)
    encoded = naive_from_numpy(sample, 'lidar_top', stamp)
    # The baselines must do the same work as the fast path, or the ratio means nothing.
    if not (np.array_equal(decoded, sample) and encoded.data == sample_msg.data):
        raise RuntimeError('baseline conversion disagrees with the fast path')
    read_ms, _ = timed_ms(lambda: naive_to_numpy(sample_msg, sample.dtype), baseline_repeats)
    write_ms, _ = timed_ms(lambda: naive_from_numpy(sample, 'lidar_top', stamp),
                           baseline_repeats)
    read_us_per_point = read_ms * 1e3 / baseline_points
    write_us_per_point = write_ms * 1e3 / baseline_points
    baseline['measured_points'] = baseline_points
    baseline['scaled_linearly_per_point'] = True
    baseline['to_numpy_us_per_point'] = round(read_us_per_point, 4)
    baseline['from_numpy_us_per_point'] = round(write_us_per_point, 4)

    for n in SIZES:
        key = f'points_{n}'
        points = make_points(n, seed=2)
        msg = array_to_pointcloud2(points, 'lidar_top', stamp)
        nbytes = len(msg.data)
        if not np.array_equal(pointcloud2_to_array(msg), points):
            raise RuntimeError(f'round trip of {n} points changed them')

        view_ms, view_max_ms = timed_ms(lambda m=msg: pointcloud2_to_array(m), view_repeats)
        copy_ms, copy_max_ms = timed_ms(lambda m=msg: pointcloud2_to_array(m, copy=True),
                                        copy_repeats)
        write_ms, write_max_ms = timed_ms(
            lambda p=points: array_to_pointcloud2(p, 'lidar_top', stamp), copy_repeats)
        tobytes_ms, _ = timed_ms(lambda p=points: tobytes_from_numpy(p, 'lidar_top', stamp),
                                 copy_repeats)
        gbps = {name: nbytes / (ms * 1e-3) / 1e9 for name, ms in
                (('view', view_ms), ('copy', copy_ms), ('write', write_ms))}
        metrics[key] = {
            'bytes': nbytes,
            'to_numpy_view_median_ms': round(view_ms, 5),
            'to_numpy_view_max_ms': round(view_max_ms, 5),
            'to_numpy_view_effective_gbps': round(gbps['view'], 1),
            'to_numpy_copy_median_ms': round(copy_ms, 3),
            'to_numpy_copy_max_ms': round(copy_max_ms, 3),
            'to_numpy_copy_gbps': round(gbps['copy'], 3),
            'from_numpy_median_ms': round(write_ms, 3),
            'from_numpy_max_ms': round(write_max_ms, 3),
            'from_numpy_gbps': round(gbps['write'], 3),
            'from_numpy_tobytes_fill_median_ms': round(tobytes_ms, 3),
        }
        base_read_ms = read_us_per_point * n / 1e3
        base_write_ms = write_us_per_point * n / 1e3
        baseline[key] = {'to_numpy_median_ms': round(base_read_ms, 1),
                         'from_numpy_median_ms': round(base_write_ms, 1),
                         'to_numpy_gbps': round(nbytes / (base_read_ms * 1e-3) / 1e9, 4),
                         'from_numpy_gbps': round(nbytes / (base_write_ms * 1e-3) / 1e9, 4)}
        ratio[key] = {'to_numpy_view_speedup': round(base_read_ms / view_ms, 1),
                      'to_numpy_copy_speedup': round(base_read_ms / copy_ms, 1),
                      'from_numpy_speedup': round(base_write_ms / write_ms, 1)}
        for name, value in (('to_numpy_copy_gbps', gbps['copy']),
                            ('from_numpy_gbps', gbps['write'])):
            if value < TARGET_GBPS:
                below_targets.append(f'{key}.{name}={value:.2f}')
        for name, value in ratio[key].items():
            if value < TARGET_SPEEDUP:
                below_targets.append(f'{key}.{name}={value}')
        print(f'{n:>9} points ({nbytes / 1e6:.1f} MB): view {view_ms * 1e3:.1f} us, '
              f'copy {copy_ms:.2f} ms ({gbps["copy"]:.2f} GB/s), '
              f'from_numpy {write_ms:.2f} ms ({gbps["write"]:.2f} GB/s, tobytes fill '
              f'{tobytes_ms:.2f} ms); naive {base_read_ms:.0f} / {base_write_ms:.0f} ms')

    result = {
        'benchmark': 'pointcloud_conversion',
        'metrics': metrics,
        'baseline': baseline,
        'ratio': ratio,
        'targets': {'min_gbps': TARGET_GBPS, 'min_speedup': TARGET_SPEEDUP,
                    'met': not below_targets, 'below': below_targets},
        'config': {'quick': args.quick, 'point_step_bytes': points.dtype.itemsize,
                   'fields': list(FIELDS), 'repeats_view': view_repeats,
                   'repeats_copy': copy_repeats, 'repeats_baseline': baseline_repeats,
                   'python': platform.python_version(), 'numpy': np.__version__,
                   'cpus': os.cpu_count(),
                   # glibc.malloc.hugetlb=1 backs the message's 48 MB buffer with huge pages;
                   # without it first-touch page faults dominate from_numpy at 2M points.
                   'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')},
    }
    print(json.dumps(result))


if __name__ == '__main__':
    main()
