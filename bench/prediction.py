"""Benchmark: per-cycle time of the map-based predictor (robotaxi_stack.prediction.predictor).

Usage: python bench/prediction.py [--quick]

Traffic (deterministic, seed 7): a 4 x 3 block grid_town with IDM lane followers (cars,
trucks, cyclists; random turns, all-way stops) and pedestrians crossing at crosswalks, from
prediction/evaluation.make_scenario, at 10, 50 and 200 objects (60 % vehicles, 10 % cyclists,
30 % pedestrians). The actor world steps at 10 Hz and every step is one predictor cycle, as in
the node: Predictor.predict(objects, stamp) on the ground-truth snapshot (8 s horizon, 0.5 s
steps, up to 6 modes). The first 20 cycles (history and caches warming up) are not timed.

Baseline: the same inputs predicted the way a first implementation would, object by object
with the map queries of sim.maps: nearest_lanelet + lane_path (straight on, one mode) at
constant speed for vehicles, constant velocity for the rest. It has neither turn modes nor stop
lines nor leaders; the ratio says what the vectorised multi-modal predictor costs relative to
it (> 1: faster).

Target: tracking + prediction <= 10 ms at 50 objects, so prediction <= 6 ms median at 50
(bench/tracking_prediction.py measures the whole cycle).
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
from robotaxi_stack.prediction.predictor import (  # noqa: E402
    CAR, PEDESTRIAN, Predictor, PredictorParams)
from robotaxi_stack.sim import actors as act  # noqa: E402
from robotaxi_stack.sim import maps  # noqa: E402

SEED = 7
COUNTS = (10, 50, 200)
WARMUP_CYCLES = 20
TARGET_MEDIAN_MS_AT_50 = 6.0


def traffic(count: int) -> tuple[maps.Town, act.ActorWorld]:
    vehicles = int(round(0.6 * count))
    cyclists = int(round(0.1 * count))
    town, specs = evaluation.make_scenario(SEED, cars=vehicles, cyclists=cyclists,
                                           pedestrians=count - vehicles - cyclists,
                                           duration_s=120.0, blocks=(4, 3))
    return town, act.ActorWorld(specs)


def baseline_predict(town: maps.Town, objects: np.ndarray, times_s: np.ndarray) -> list:
    """Object by object: one lane-following mode at constant speed, or constant velocity."""
    out = []
    for row in objects:
        x, y, yaw, speed = row[2], row[3], row[4], max(row[5], 0.0)
        if int(row[1]) not in (PEDESTRIAN,) and int(row[1]) >= CAR:
            try:
                lane = maps.lane_path(town, (x, y), yaw, max(speed * times_s[-1], 1.0) + 1.0)
                path = lane.path_xy
                s = maps.town.polyline_arclength(path)
                d = np.minimum(speed * times_s, s[-1])
                out.append(np.column_stack([np.interp(d, s, path[:, 0]),
                                            np.interp(d, s, path[:, 1])]))
                continue
            except maps.MapError:
                pass
        out.append(np.column_stack([x + row[6] * times_s, y + row[7] * times_s]))
    return out


def percentiles(samples_ms) -> dict:
    samples = np.asarray(samples_ms)
    return {'median_ms': round(float(np.median(samples)), 3),
            'p90_ms': round(float(np.percentile(samples, 90)), 3),
            'p99_ms': round(float(np.percentile(samples, 99)), 3),
            'max_ms': round(float(np.max(samples)), 3), 'samples': int(len(samples))}


def run(count: int, cycles: int, baseline_every: int) -> tuple[dict, dict]:
    town, world = traffic(count)
    params = PredictorParams()
    predictor = Predictor(town, params)
    times_ms, cpu_ms, baseline_ms, modes, objects_seen = [], [], [], [], []
    gc.collect()
    gc.disable()
    try:
        for k in range(cycles + WARMUP_CYCLES):
            snapshot = world.step(0.1)
            objects = evaluation._objects(snapshot, None, (0.0, 0.0, 0.0))
            start, start_cpu = time.perf_counter(), time.process_time()
            output = predictor.predict(objects, snapshot.time_s)
            elapsed = (time.perf_counter() - start) * 1e3
            elapsed_cpu = (time.process_time() - start_cpu) * 1e3
            if k < WARMUP_CYCLES:
                continue
            times_ms.append(elapsed)
            cpu_ms.append(elapsed_cpu)
            modes.append(sum(len(p.confidences) for p in output.objects))
            objects_seen.append(len(output.objects))
            if k % baseline_every == 0:
                start = time.perf_counter()
                baseline_predict(town, objects, predictor.times_s)
                baseline_ms.append((time.perf_counter() - start) * 1e3)
    finally:
        gc.enable()
    # CPU time too: on a shared machine wall time also counts waiting for a core.
    ours = percentiles(times_ms) | {'cpu_median_ms': round(float(np.median(cpu_ms)), 3),
                                    'objects': int(np.median(objects_seen)),
                                    'mean_modes': round(float(np.mean(modes)), 1)}
    return ours, percentiles(baseline_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer cycles')
    args = parser.parse_args()
    cycles = 60 if args.quick else 300
    metrics, baseline, ratio = {}, {}, {}
    for count in COUNTS:
        ours, base = run(count, cycles, baseline_every=5 if args.quick else 3)
        key = f'objects_{count}'
        metrics[key] = ours
        baseline[key] = base
        ratio[key] = {'median_speedup': round(base['median_ms'] / ours['median_ms'], 2)}
        print(f'{ours["objects"]:>3} objects ({ours["mean_modes"]} modes): median '
              f'{ours["median_ms"]:.2f} ms (cpu {ours["cpu_median_ms"]:.2f} ms), p99 '
              f'{ours["p99_ms"]:.2f} ms; per-object single-'
              f'mode baseline median {base["median_ms"]:.2f} ms')
    at_50 = metrics['objects_50']['median_ms']
    result = {
        'benchmark': 'prediction',
        'metrics': metrics,
        'baseline': baseline,
        'ratio': ratio,
        'targets': {'objects_50_median_ms': TARGET_MEDIAN_MS_AT_50,
                    'met': at_50 <= TARGET_MEDIAN_MS_AT_50},
        'config': {'quick': args.quick, 'cycles': cycles, 'warmup_cycles': WARMUP_CYCLES,
                   'seed': SEED, 'horizon_s': PredictorParams().horizon_s,
                   'time_step_s': PredictorParams().time_step_s,
                   'integration_step_s': PredictorParams().integration_step_s,
                   'python': platform.python_version(), 'numpy': np.__version__,
                   'cpus': os.cpu_count()},
    }
    print(json.dumps(result))


if __name__ == '__main__':
    main()
