"""Benchmark: LiDAR obstacle path (ground removal + clustering + boxes) per frame.

Usage: python bench/perception_obstacles.py [--quick]

Input: simulated 64-channel sweeps (2000 columns, ~120k points) of a grid town with kerbs,
raised sidewalks and buildings, with cars, pedestrians and debris around the ego; and a 3M-point
cloud (25 such sweeps tiled with 2 cm jitter, like an accumulated or 128-beam dense cloud).
Measures `ObstacleDetector.detect` per frame (median_ms, p99_ms) and its stages.

Baseline: Open3D DBSCAN (eps 0.6 m, 3 points; Autoware's euclidean clustering tolerance is
0.7 m) on the same non-ground points of each frame, against our BEV grid labelling + box fit
(the 'cluster' + 'boxes' stages). DBSCAN on the 3M cloud's ~1M obstacle points is not run: it
takes minutes. Prints one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import pathlib
import platform
import sys
import time

import numpy as np
import open3d as o3d

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'src'))

from robotaxi_stack.perception.obstacles import ObstacleDetector, ObstacleParams  # noqa: E402
from robotaxi_stack.sim import maps  # noqa: E402
from robotaxi_stack.sim.lidar import LidarConfig, LidarModel  # noqa: E402
from robotaxi_stack.sim.scene import ActorBox, SimScene, SurfaceLabel  # noqa: E402
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle  # noqa: E402
from robotaxi_stack.sim.world import static_boxes  # noqa: E402

SEED = 11
BIG_POINTS = 3_000_000
DBSCAN_EPS_M = 0.6
DBSCAN_MIN_POINTS = 3


def make_frames(count: int, rng: np.random.Generator):
    """`count` sweeps from different ego positions along road y = 0, with actors around."""
    town = maps.generate_grid_town(maps.GridTownParams(blocks_x=3, blocks_y=2, block_m=120.0))
    x0, y0, x1, y1 = town.extent
    scene = SimScene((x0 - 50, y0 - 50, x1 + 50, y1 + 50), static_boxes(town))
    vehicle = load_vehicle('bmw_320i')
    mount = vehicle.lidar_top
    lidar = LidarModel(LidarConfig(channels=64, points_per_revolution=2000, range_m=100.0,
                                   noise_m=0.02, dropout=0.01))
    frames = []
    for _ in range(count):
        ego_x, ego_y = float(rng.uniform(20.0, 300.0)), -1.75
        actors = []
        for i in range(6):  # cars in both lanes
            lane_y = 1.75 if i % 2 else -1.75
            actors.append(ActorBox(ego_x + rng.uniform(8, 70) * (1 if i < 4 else -1), lane_y,
                                   0.75, 0.0 if lane_y < 0 else math.pi, 4.6, 1.9, 1.5,
                                   'car', i))
        for i in range(4):  # pedestrians on the sidewalks
            actors.append(ActorBox(ego_x + rng.uniform(-30, 40), rng.choice([-5.0, 5.0]),
                                   0.875, rng.uniform(-3, 3), 0.5, 0.6, 1.75, 'pedestrian',
                                   6 + i))
        actors.append(ActorBox(ego_x + mount.x_m + rng.uniform(25, 30), ego_y, 0.25, 0.0,
                               0.5, 0.5, 0.5, 'static', 10))
        scene.set_actors(actors)
        scan = lidar.scan(scene, (ego_x + mount.x_m, ego_y + mount.y_m, mount.z_m, 0, 0, 0),
                          rng)
        points = scan.points
        frames.append((np.column_stack([points['x'], points['y'], points['z'],
                                        points['intensity']]), scan.label))
    return frames, mount.transform()


def percentiles(samples_ms) -> dict:
    samples = np.asarray(samples_ms, dtype=float)
    return {'median_ms': round(float(np.median(samples)), 3),
            'p99_ms': round(float(np.percentile(samples, 99)), 3),
            'max_ms': round(float(samples.max()), 3), 'samples': int(len(samples))}


def time_detector(detector: ObstacleDetector, clouds, repeats: int):
    totals, stages, results = [], {}, []
    gc.collect()
    gc.disable()
    try:
        for k in range(repeats):
            cloud = clouds[k % len(clouds)]
            start = time.perf_counter()
            result = detector.detect(cloud)
            totals.append((time.perf_counter() - start) * 1e3)
            for name, value in result.stage_ms.items():
                stages.setdefault(name, []).append(value)
            results.append(result)
    finally:
        gc.enable()
    return totals, stages, results


def dbscan_ms(points_xyz: np.ndarray) -> tuple[float, int]:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_xyz.astype(np.float64)))
    start = time.perf_counter()
    labels = np.asarray(cloud.cluster_dbscan(eps=DBSCAN_EPS_M, min_points=DBSCAN_MIN_POINTS,
                                             print_progress=False))
    elapsed = (time.perf_counter() - start) * 1e3
    return elapsed, int(labels.max() + 1) if len(labels) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer frames and repeats')
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    frame_count = 4 if args.quick else 10
    frame_repeats = 20 if args.quick else 200
    big_repeats = 2 if args.quick else 8
    dbscan_frames = 2 if args.quick else frame_count

    frames, sensor_to_base = make_frames(frame_count, rng)
    detector = ObstacleDetector(ObstacleParams(), sensor_to_base)
    clouds = [points for points, _ in frames]
    detector.detect(clouds[0])  # first-call costs (imports, allocations) are not per frame
    totals, stages, results = time_detector(detector, clouds, frame_repeats)
    ground_labels = np.isin(np.concatenate([labels for _, labels in frames]),
                            [SurfaceLabel.ROAD, SurfaceLabel.SIDEWALK, SurfaceLabel.KERB])
    clustered = np.concatenate([r.point_cluster >= 0 for r in results[:frame_count]])
    metrics = {'frame_120k': percentiles(totals) | {
        'points_mean': int(np.mean([len(c) for c in clouds])),
        'clusters_mean': round(float(np.mean([len(r) for r in results])), 1),
        'ground_or_kerb_points_in_clusters': int(np.count_nonzero(clustered & ground_labels)),
        'stages_median_ms': {name: round(float(np.median(v)), 3)
                             for name, v in stages.items()}}}
    print(f'frame (~{metrics["frame_120k"]["points_mean"]} points): median '
          f'{metrics["frame_120k"]["median_ms"]:.1f} ms, p99 '
          f'{metrics["frame_120k"]["p99_ms"]:.1f} ms; stages '
          f'{metrics["frame_120k"]["stages_median_ms"]}')

    reps = -(-BIG_POINTS // len(clouds[0]))
    big = np.tile(clouds[0], (reps, 1))[:BIG_POINTS]
    big[:, :3] += rng.normal(0.0, 0.02, (len(big), 3)).astype(np.float32)
    big_totals, big_stages, big_results = time_detector(detector, [big], big_repeats)
    metrics['cloud_3m'] = percentiles(big_totals) | {
        'points': BIG_POINTS, 'clusters': len(big_results[-1]),
        'obstacle_points': big_results[-1].stats.obstacle_points,
        'stages_median_ms': {name: round(float(np.median(v)), 3)
                             for name, v in big_stages.items()}}
    print(f'3M cloud: median {metrics["cloud_3m"]["median_ms"]:.0f} ms, p99 '
          f'{metrics["cloud_3m"]["p99_ms"]:.0f} ms; stages '
          f'{metrics["cloud_3m"]["stages_median_ms"]}')

    # Baseline: DBSCAN on the very points our clustering got (non-ground, below the height cap).
    db_times, db_clusters, ours_times = [], [], []
    for k in range(dbscan_frames):
        result = results[k]
        obstacle = _obstacle_points(clouds[k], result, sensor_to_base)
        elapsed, found = dbscan_ms(obstacle)
        db_times.append(elapsed)
        db_clusters.append(found)
        ours_times.append(result.stage_ms.get('cluster', 0.0) + result.stage_ms.get('boxes',
                                                                                    0.0))
    baseline = {'open3d_dbscan_frame_120k': percentiles(db_times) | {
        'eps_m': DBSCAN_EPS_M, 'min_points': DBSCAN_MIN_POINTS,
        'clusters_mean': round(float(np.mean(db_clusters)), 1),
        'note': 'clustering only, no boxes; same non-ground points'}}
    ours_cluster_median = float(np.median(ours_times))
    ratio = {'frame_120k': {
        'clustering_speedup_vs_dbscan': round(baseline['open3d_dbscan_frame_120k']['median_ms']
                                              / max(ours_cluster_median, 1e-6), 1),
        'whole_pipeline_vs_dbscan_alone': round(
            baseline['open3d_dbscan_frame_120k']['median_ms']
            / metrics['frame_120k']['median_ms'], 2)}}
    print(f'baseline Open3D DBSCAN on the same obstacle points: median '
          f'{baseline["open3d_dbscan_frame_120k"]["median_ms"]:.1f} ms vs grid labelling + '
          f'boxes {ours_cluster_median:.1f} ms')
    print(json.dumps({
        'benchmark': 'perception_obstacles', 'metrics': metrics, 'baseline': baseline,
        'ratio': ratio,
        'config': {'quick': args.quick, 'frames': frame_count, 'frame_repeats': frame_repeats,
                   'big_repeats': big_repeats, 'lidar': '64 x 2000, noise 0.02 m, dropout 1%',
                   'params': 'ObstacleParams() defaults', 'seed': SEED,
                   'python': platform.python_version(), 'numpy': np.__version__,
                   'open3d': o3d.__version__, 'cpus': os.cpu_count()}}))


def _obstacle_points(cloud: np.ndarray, result, sensor_to_base: np.ndarray) -> np.ndarray:
    """base_link xyz of the points our clustering received (result.obstacle_mask)."""
    xyz = cloud[result.obstacle_mask, :3].astype(np.float64)
    return xyz @ sensor_to_base[:3, :3].T + sensor_to_base[:3, 3]


if __name__ == '__main__':
    main()
