"""Benchmark: simulated LiDAR and camera ray casting in a town-like scene.

Usage: python bench/sim_sensors.py [--quick]

Scene: a grid town of 5 x 4 blocks (120 m) with kerbs, sidewalk slabs and buildings (~310 static
boxes) on a ground plane, and 20 actor boxes that move every frame. Measures, per frame:
  * LiDAR frame (64 channels x 1800 columns = 115,200 rays): move actors + scan, which includes
    the scene rebuild, for the default 'rebuild' strategy and the 'split' alternative
    (static scene built once + actor scene, nearest of two casts) as the baseline;
  * the scene update alone (set actors + Embree build) for both strategies;
  * a 640 x 384 camera render, one ray per pixel and with render_downsample=2;
  * the same LiDAR frame in a large map of 3000 buildings, where 'split' should win (this is
    what sets SimScene's 'auto' threshold).
Strategies are interleaved frame by frame so that load from other processes hits both alike.
Prints one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'src'))

from robotaxi_stack.sim.camera import CameraConfig, CameraModel  # noqa: E402
from robotaxi_stack.sim.lidar import LidarConfig, LidarModel  # noqa: E402
from robotaxi_stack.sim.scene import SimScene, StaticBox  # noqa: E402

BLOCK_M = 120.0
BLOCKS_X, BLOCKS_Y = 5, 4
ROAD_HALF_WIDTH_M = 7.0
KERB_WIDTH_M = 0.3
SIDEWALK_WIDTH_M = 3.0
ACTORS = 20
SENSOR_HEIGHT_M = 1.9


def town_boxes(rng: np.random.Generator) -> list[StaticBox]:
    """Kerbs, sidewalk slabs and 4-10 buildings inside every block of the grid."""
    boxes = []
    for i in range(BLOCKS_X):
        for j in range(BLOCKS_Y):
            x0 = i * BLOCK_M + ROAD_HALF_WIDTH_M
            x1 = (i + 1) * BLOCK_M - ROAD_HALF_WIDTH_M
            y0 = j * BLOCK_M + ROAD_HALF_WIDTH_M
            y1 = (j + 1) * BLOCK_M - ROAD_HALF_WIDTH_M
            k, s = KERB_WIDTH_M, SIDEWALK_WIDTH_M
            boxes += [StaticBox(x0, y0, x1, y0 + k, 'kerb'), StaticBox(x0, y1 - k, x1, y1, 'kerb'),
                      StaticBox(x0, y0, x0 + k, y1, 'kerb'), StaticBox(x1 - k, y0, x1, y1, 'kerb'),
                      StaticBox(x0, y0, x1, y0 + s, 'sidewalk'),
                      StaticBox(x0, y1 - s, x1, y1, 'sidewalk'),
                      StaticBox(x0, y0, x0 + s, y1, 'sidewalk'),
                      StaticBox(x1 - s, y0, x1, y1, 'sidewalk')]
            for _ in range(int(rng.integers(4, 11))):
                width, depth = rng.uniform(10.0, 35.0, 2)
                bx = rng.uniform(x0 + s + 1.0, x1 - s - 1.0 - width)
                by = rng.uniform(y0 + s + 1.0, y1 - s - 1.0 - depth)
                boxes.append(StaticBox(bx, by, bx + width, by + depth, 'building',
                                       height_m=float(rng.uniform(6.0, 40.0))))
    return boxes


class Traffic:
    """20 actors driving along the eastbound/westbound lanes of y = BLOCK_M near the ego."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.x0 = rng.uniform(BLOCK_M, 3 * BLOCK_M, ACTORS)
        self.direction = rng.choice([-1.0, 1.0], ACTORS)
        self.lane_y = BLOCK_M - 1.75 * self.direction
        self.speed_mps = rng.uniform(3.0, 12.0, ACTORS)
        kinds = rng.choice(['car', 'truck', 'pedestrian'], ACTORS, p=[0.7, 0.15, 0.15])
        sizes = {'car': (4.5, 1.9, 1.6), 'truck': (9.0, 2.5, 3.2), 'pedestrian': (0.6, 0.6, 1.8)}
        self.labels = list(kinds)
        self.sizes_m = np.array([sizes[k] for k in kinds])
        self.ids = np.arange(ACTORS)

    def apply(self, scene: SimScene, t_s: float) -> None:
        x = self.x0 + self.direction * self.speed_mps * t_s
        centers = np.stack([x, self.lane_y, 0.5 * self.sizes_m[:, 2]], axis=1)
        yaw = np.where(self.direction > 0, 0.0, np.pi)
        scene.set_actor_arrays(centers, yaw, self.sizes_m, self.labels, self.ids)


def stats_ms(samples_s: list[float]) -> tuple[float, float]:
    samples = np.asarray(samples_s) * 1e3
    return round(float(np.median(samples)), 2), round(float(np.percentile(samples, 99)), 2)


def large_map_boxes(rng: np.random.Generator, count: int) -> list[StaticBox]:
    """`count` scattered buildings: a map beyond the 'rebuild' sweet spot."""
    corner = rng.uniform(-600.0, 600.0, (count, 2))
    size = rng.uniform(5.0, 30.0, (count, 2))
    return [StaticBox(x, y, x + w, y + d, 'building', height_m=15.0)
            for (x, y), (w, d) in zip(corner, size)]


def lidar_frames(scenes: dict[str, SimScene], traffic: Traffic, lidar: LidarModel,
                 frames: int, rng: np.random.Generator, on_frame=None):
    """Per strategy: frame times (move actors + scan) and update times (move + build), s."""
    frame_s = {strategy: [] for strategy in scenes}
    update_s = {strategy: [] for strategy in scenes}
    for frame in range(frames + 2):  # the first two frames warm up caches and thread pools
        t_s = 0.1 * frame
        ego_pose = (BLOCK_M + 8.0 * t_s, BLOCK_M - 1.75, SENSOR_HEIGHT_M, 0.0, 0.0, 0.0)
        for strategy, scene in scenes.items():
            start = time.perf_counter()
            traffic.apply(scene, t_s)
            scan = lidar.scan(scene, ego_pose, rng)
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            traffic.apply(scene, t_s + 0.05)
            scene.commit()
            update = time.perf_counter() - start
            if frame >= 2:
                frame_s[strategy].append(elapsed)
                update_s[strategy].append(update)
                if on_frame is not None:
                    on_frame(strategy, scene, ego_pose, scan)
    return frame_s, update_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='few frames, for CI')
    args = parser.parse_args()
    frames = 12 if args.quick else 100
    rng = np.random.default_rng(0)
    boxes = town_boxes(rng)
    extent = (-100.0, -100.0, BLOCKS_X * BLOCK_M + 100.0, BLOCKS_Y * BLOCK_M + 100.0)
    scenes = {strategy: SimScene(extent, boxes, strategy=strategy)
              for strategy in ('rebuild', 'split')}
    traffic = Traffic(rng)
    lidar = LidarModel(LidarConfig(channels=64, points_per_revolution=1800, range_m=100.0,
                                   noise_m=0.02, dropout=0.01))
    camera = CameraModel(CameraConfig())
    camera_coarse = CameraModel(CameraConfig(render_downsample=2))
    render_s, render_coarse_s, points = [], [], []

    def render(strategy, scene, ego_pose, scan):
        if strategy != 'rebuild':
            return
        points.append(len(scan))
        camera_pose = ego_pose[:2] + (1.5, 0.0, 0.0, 0.0)
        start = time.perf_counter()
        camera.render(scene, camera_pose)
        middle = time.perf_counter()
        camera_coarse.render(scene, camera_pose)
        render_s.append(middle - start)
        render_coarse_s.append(time.perf_counter() - middle)

    frame_s, update_s = lidar_frames(scenes, traffic, lidar, frames, rng, render)
    large_boxes = large_map_boxes(rng, 3000)
    large_scenes = {strategy: SimScene((-700.0, -700.0, 700.0, 700.0), large_boxes,
                                       strategy=strategy) for strategy in ('rebuild', 'split')}
    large_frame_s, large_update_s = lidar_frames(large_scenes, traffic, lidar,
                                                 max(frames // 5, 5), rng)
    lidar_median, lidar_p99 = stats_ms(frame_s['rebuild'])
    split_median, split_p99 = stats_ms(frame_s['split'])
    update_median, update_p99 = stats_ms(update_s['rebuild'])
    split_update_median, _ = stats_ms(update_s['split'])
    large_median, _ = stats_ms(large_frame_s['split'])
    large_rebuild_median, _ = stats_ms(large_frame_s['rebuild'])
    large_update_median, _ = stats_ms(large_update_s['rebuild'])
    camera_median, camera_p99 = stats_ms(render_s)
    coarse_median, _ = stats_ms(render_coarse_s)
    metrics = {
        'lidar_frame_median_ms': lidar_median,
        'lidar_frame_p99_ms': lidar_p99,
        'lidar_rays_per_scan': lidar.config.rays_per_scan,
        'lidar_points_per_scan_median': int(np.median(points)),
        'scene_update_median_ms': update_median,
        'scene_update_p99_ms': update_p99,
        'camera_640x384_render_median_ms': camera_median,
        'camera_640x384_render_p99_ms': camera_p99,
        'camera_640x384_downsample2_render_median_ms': coarse_median,
        'large_map_lidar_frame_split_median_ms': large_median,
        'static_boxes': len(boxes),
        'large_map_static_boxes': len(large_boxes),
        'actors': ACTORS,
        'frames': frames,
        'load_average_1min': round(os.getloadavg()[0], 2),
    }
    baseline = {
        'lidar_frame_split_scenes_median_ms': split_median,
        'lidar_frame_split_scenes_p99_ms': split_p99,
        'scene_update_split_scenes_median_ms': split_update_median,
        'large_map_lidar_frame_rebuild_median_ms': large_rebuild_median,
        'large_map_scene_update_rebuild_median_ms': large_update_median,
        'lidar_frame_target_ms': 30.0,
    }
    ratio = {
        'split_over_rebuild_lidar_frame': round(split_median / lidar_median, 3),
        'large_map_rebuild_over_split_lidar_frame': round(large_rebuild_median / large_median,
                                                          3),
        'lidar_frame_over_target': round(lidar_median / 30.0, 3),
        'camera_full_over_downsample2': round(camera_median / coarse_median, 3),
    }
    print(json.dumps({'benchmark': 'sim_sensors', 'metrics': metrics, 'baseline': baseline,
                      'ratio': ratio}))


if __name__ == '__main__':
    main()
