"""Benchmark: simulator real-time factor on the default scenario, alone and with the stack.

Usage: python bench/sim_realtime.py [--quick]

The default ride (scenarios/plain_ride.yaml) with its sensors raised to the issue's setting: a
64-channel LiDAR at 10 Hz (1800 columns, 115,200 rays) and the 640 x 384 camera at 10 Hz.
* sim alone: the simulator's world loop without ROS transport — ego dynamics at 100 Hz, actors,
  ground truth, LiDAR and camera ray casting and their PointCloud2 / Image message filling —
  driven by a scripted command (accelerate, cruise), as fast as it goes;
* with the stack: `robotaxi scenario run` of the same scenario, shortened: simulator, mission,
  planner, vehicle interface and health monitor lock-stepped at 50 Hz, everything recorded.
Real-time factor = simulated seconds / wall seconds (>= 1 is faster than real time).
Prints one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import yaml
from builtin_interfaces.msg import Time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'src'))

from robotaxi_stack.common.image import array_to_image  # noqa: E402
from robotaxi_stack.common.pointcloud import array_to_pointcloud2  # noqa: E402
from robotaxi_stack.sim.scenario import load_scenario  # noqa: E402
from robotaxi_stack.sim.world import SimWorld  # noqa: E402

STEP_HZ = 100
SENSOR_HZ = 10
STAMP = Time(sec=0, nanosec=0)


def scenario_file(folder: pathlib.Path, duration_s: float) -> pathlib.Path:
    document = yaml.safe_load((ROOT / 'scenarios' / 'plain_ride.yaml').read_text())
    document['duration_s'] = duration_s
    document['name'] = 'plain_ride_64ch'
    document['sensors'] = {'lidar': {'channels': 64, 'hz': SENSOR_HZ, 'range_m': 100,
                                     'noise_m': 0.02, 'dropout': 0.01,
                                     'points_per_revolution': 1800},
                           'camera': {'hz': SENSOR_HZ}}
    path = folder / 'plain_ride_64ch.yaml'
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def sim_alone(path: pathlib.Path, duration_s: float) -> dict:
    world = SimWorld(load_scenario(path), base_dir=str(ROOT))
    dt = 1.0 / STEP_HZ
    steps = int(duration_s * STEP_HZ)
    every = STEP_HZ // SENSOR_HZ
    lidar_points = []
    start = time.perf_counter()
    for k in range(steps):
        accel = 1.0 if world.ego.state.speed_mps < 8.0 else 0.0
        world.step(0.0, accel, dt)
        world.odometry()
        if k % every == 0:
            world.ground_truth()
            scan = world.lidar_scan()
            lidar_points.append(len(scan.points))
            array_to_pointcloud2(scan.points, 'lidar_top', STAMP)
            array_to_image(world.camera_image(), 'rgb8', 'camera_front', STAMP)
    wall_s = time.perf_counter() - start
    return {'sim_s': duration_s, 'wall_s': round(wall_s, 2),
            'real_time_factor': round(duration_s / wall_s, 3),
            'lidar_points_per_frame': int(sum(lidar_points) / max(1, len(lidar_points)))}


def with_stack(path: pathlib.Path, duration_s: float, out: pathlib.Path) -> dict:
    from robotaxi_stack.replay.scenario_runner import run_scenario
    start = time.perf_counter()
    result = run_scenario(path, out)
    wall_s = time.perf_counter() - start
    return {'sim_s': duration_s, 'wall_s_including_startup': round(wall_s, 2),
            'real_time_factor': round(duration_s / wall_s, 3),
            'run_failures': result['failures'],
            'e2e_latency_ms': result['metrics'].get('e2e_latency_ms')}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='10 s alone, 15 s with the stack')
    parser.add_argument('--no-stack', action='store_true', help='only the sim-alone figure')
    options = parser.parse_args()
    alone_s, stack_s = (10.0, 15.0) if options.quick else (30.0, 40.0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        alone = sim_alone(scenario_file(folder, alone_s), alone_s)
        print(f'sim alone: {alone}', flush=True)
        metrics = {'sim_alone': alone}
        if not options.no_stack:
            stack = with_stack(scenario_file(folder, stack_s), stack_s, folder / 'run')
            print(f'with stack: {stack}', flush=True)
            metrics['with_stack'] = stack
    ratio = {'sim_alone_rtf_over_target': round(alone['real_time_factor'] / 1.0, 3)}
    if 'with_stack' in metrics:
        ratio['with_stack_over_alone'] = round(metrics['with_stack']['real_time_factor']
                                               / alone['real_time_factor'], 3)
    print(json.dumps({'benchmark': 'sim_realtime', 'metrics': metrics,
                      'baseline': {'real_time_factor_target': 1.0,
                                   'load_average_1min': round(os.getloadavg()[0], 2)},
                      'ratio': ratio}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
