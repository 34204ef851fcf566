"""Held-out evaluation of the predictor on generated traffic (pure core, no ROS).

Scenarios are generated here from seeds, never from the files the predictor was developed on:
a grid_town (block size drawn per seed), cars and trucks that follow the lanes with IDM and
pick a random successor at every intersection (sim.actors lane_follow, stopping at the
all-way stop lines), cyclists doing the same, and pedestrians with waypoints that walk along a
sidewalk to a crosswalk, sometimes wait, cross, and walk on along the far sidewalk. The actor
world is stepped at 10 Hz; its ground-truth snapshots (optionally with Gaussian noise on
position, heading and speed) are the predictor input at every step (the history it needs), and
every `predict_period_s` the predictions are scored against the future ground truth with
replay.metrics.prediction_errors: minADE and minFDE at 3 s over the top-3 modes and the miss
rate (no mode within 2 m at 3 s), for moving objects (speed > 0.5 m/s) and all pedestrians.

The predictor never sees the actors' routes: only the map and the snapshots.

Run: python -m robotaxi_stack.prediction.evaluation [--seeds 1 2 3] [--duration 60]
prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Sequence

import numpy as np

from robotaxi_stack.prediction.predictor import PEDESTRIAN, Predictor, PredictorParams
from robotaxi_stack.replay.metrics import future_positions, prediction_errors
from robotaxi_stack.sim import actors as act
from robotaxi_stack.sim import maps

DEFAULT_SEEDS = (101, 202, 303)
TARGETS = {'min_ade_3s_m': 1.0, 'min_fde_3s_m': 2.0, 'miss_rate': 0.10}
STEP_S = 0.1
EVAL_HORIZON_S = 3.0
TOP_K = 3
MOVING_SPEED_MPS = 0.5
_PATH_LENGTH_M = 2000.0


def _road_lanelets(town: maps.Town, min_length_m: float) -> list[maps.LaneletGeometry]:
    return [g for g in town.lanelets.values() if g.kind == 'road' and g.length_m >= min_length_m]


def _lane_followers(town: maps.Town, rng: np.random.Generator, count: int, kind: str,
                    speed_range: tuple[float, float], taken: list) -> list[act.ActorSpec]:
    """Lane followers on random road lanelets, at least 15 m from each other."""
    specs = []
    roads = _road_lanelets(town, 40.0)
    limit_mps = town.params.speed_limit_kph / 3.6
    for _ in range(count * 20):
        if len(specs) == count:
            break
        geom = roads[int(rng.integers(len(roads)))]
        station = rng.uniform(5.0, geom.length_m - 15.0)
        s = maps.town.polyline_arclength(geom.centerline)
        xy = np.array([np.interp(station, s, geom.centerline[:, 0]),
                       np.interp(station, s, geom.centerline[:, 1])])
        if any(np.hypot(*(xy - other)) < 15.0 for other in taken):
            continue
        d = geom.centerline[-1] - geom.centerline[0]
        yaw = math.atan2(d[1], d[0])
        target = min(rng.uniform(*speed_range), limit_mps)
        lane = maps.lane_path(town, xy, yaw, _PATH_LENGTH_M, choose='random', rng=rng)
        behavior = act.LaneFollowBehavior(path_xy=lane.path_xy, target_speed_mps=target,
                                          stop_lines_s_m=tuple(lane.stop_s))
        actor_type = kind if kind != 'car' else ('truck' if rng.random() < 0.2 else 'car')
        specs.append(act.ActorSpec(actor_id=f'{kind}{len(specs)}', actor_type=actor_type,
                                   behavior=behavior, x_m=float(xy[0]), y_m=float(xy[1]),
                                   yaw_rad=yaw, speed_mps=target * rng.uniform(0.4, 1.0)))
        taken.append(xy)
    return specs


def _crossing_pedestrians(town: maps.Town, rng: np.random.Generator, count: int,
                          duration_s: float) -> list[act.ActorSpec]:
    """Pedestrians that walk to a crosswalk along the sidewalk, may wait, cross, walk on."""
    params = town.params
    block = params.block_m
    specs = []
    crosswalks = list(town.crosswalks)
    for k in range(count):
        crosswalk = crosswalks[int(rng.integers(len(crosswalks)))]
        centerline = town.lanelets[crosswalk.lanelet_id].centerline
        centre = 0.5 * (centerline[0] + centerline[-1])
        axis = centerline[-1] - centerline[0]
        half_len = 0.5 * float(np.linalg.norm(axis))
        axis = axis / (2.0 * half_len)
        normal = np.array([-axis[1], axis[0]])
        grid_point = np.round(centre / block) * block
        box_side = 1.0 if float((grid_point - centre) @ normal) > 0.0 else -1.0
        side = rng.choice([-1.0, 1.0])
        kerb_u = side * (half_len + 0.5 * params.sidewalk_width_m)
        speed = rng.uniform(1.1, 1.6)

        def at(u, w):
            return centre + axis * u + normal * w

        start_w = -box_side * rng.uniform(5.0, 20.0)
        t = rng.uniform(0.0, max(duration_s - 25.0, 1.0))
        points = [(t, *at(kerb_u, start_w))]
        t += abs(start_w) / speed
        points.append((t, *at(kerb_u, 0.0)))
        if rng.random() < 0.5:
            t += rng.uniform(0.5, 3.0)
            points.append((t, *at(kerb_u, 0.0)))
        t += 2.0 * abs(kerb_u) / speed
        points.append((t, *at(-kerb_u, 0.0)))
        on_w = (-box_side if rng.random() < 0.7 else box_side) * rng.uniform(3.0, 15.0)
        t += abs(on_w) / speed
        points.append((t, *at(-kerb_u, on_w)))
        behavior = act.WaypointsBehavior(points=np.array(points))
        specs.append(act.ActorSpec(actor_id=f'ped{k}', actor_type='pedestrian',
                                   behavior=behavior, x_m=points[0][1], y_m=points[0][2]))
    return specs


def make_scenario(seed: int, cars: int = 10, cyclists: int = 2,
                  pedestrians: int = 6, duration_s: float = 60.0,
                  blocks: tuple[int, int] = (3, 2)) -> tuple[maps.Town, list[act.ActorSpec]]:
    """A held-out scenario: town and actors, all drawn from `seed` (fewer lane followers
    than asked when the roads have no room for them 15 m apart)."""
    rng = np.random.default_rng(seed)
    town = maps.generate_grid_town(maps.GridTownParams(
        blocks_x=blocks[0], blocks_y=blocks[1],
        block_m=float(rng.choice([90.0, 120.0, 150.0])),
        speed_limit_kph=float(rng.choice([30.0, 40.0, 50.0]))))
    taken: list = []
    specs = _lane_followers(town, rng, cars, 'car', (5.0, 12.0), taken)
    specs += _lane_followers(town, rng, cyclists, 'bicycle', (3.5, 5.5), taken)
    specs += _crossing_pedestrians(town, rng, pedestrians, duration_s)
    return town, specs


def _objects(snapshot: act.ActorSnapshot, rng: np.random.Generator | None,
             noise: tuple[float, float, float]) -> np.ndarray:
    """Snapshot -> predictor rows (ids = index + 1, as the ground-truth message)."""
    boxes, vel = snapshot.boxes, snapshot.velocities_mps
    count = len(boxes)
    xy = boxes[:, 0:2].copy()
    yaw = boxes[:, 3].copy()
    speed = np.hypot(vel[:, 0], vel[:, 1])
    if rng is not None:
        xy += rng.normal(0.0, noise[0], (count, 2))
        yaw += rng.normal(0.0, noise[1], count)
        speed = np.maximum(speed + rng.normal(0.0, noise[2], count), 0.0)
    # The ground-truth twist is along the heading; keep speed and heading consistent.
    heading_vel = np.column_stack([speed * np.cos(yaw), speed * np.sin(yaw)])
    return np.column_stack([np.arange(1, count + 1), snapshot.labels.astype(float), xy, yaw,
                            speed, heading_vel, boxes[:, 4], boxes[:, 5]])


def _run_seed(seed: int, duration_s: float, predict_period_s: float,
              noise: tuple[float, float, float], params: PredictorParams,
              samples: dict, predict_ms: list) -> None:
    town, specs = make_scenario(seed, duration_s=duration_s)
    world = act.ActorWorld(specs)
    predictor = Predictor(town, params)
    noise_rng = np.random.default_rng(seed + 7919) if any(noise) else None
    steps = int(round(duration_s / STEP_S))
    every = int(round(predict_period_s / STEP_S))
    times = np.arange(steps + 1) * STEP_S
    snaps = [world.snapshot()]
    for _ in range(steps):
        snaps.append(world.step(STEP_S))
    track_xy = np.stack([s.boxes[:, :2] for s in snaps], axis=1)      # (A, T, 2)
    horizon = predictor.times_s
    labels = snaps[0].labels
    for k, snap in enumerate(snaps):
        objects = _objects(snap, noise_rng, noise)
        if k < 10 or k % every or times[k] + EVAL_HORIZON_S > duration_s + 1e-9:
            predictor.observe(objects, times[k])
            continue
        start = time.perf_counter()
        output = predictor.predict(objects, times[k])
        predict_ms.append((time.perf_counter() - start) * 1e3)
        speed = snap.speeds_mps()
        for pred in output.objects:
            index = pred.object_id - 1
            if speed[index] <= MOVING_SPEED_MPS and labels[index] != PEDESTRIAN:
                continue
            gt, valid = future_positions(times, track_xy[index], times[k], horizon)
            group = {PEDESTRIAN: 'pedestrian', 4: 'bicycle'}.get(int(labels[index]), 'vehicle')
            samples.setdefault(group, []).append((pred, gt, valid))


def _score(entries: list, max_modes: int, horizon: np.ndarray) -> dict:
    n = len(entries)
    pred = np.zeros((n, max_modes, len(horizon), 2))
    conf = np.zeros((n, max_modes))
    mode_ok = np.zeros((n, max_modes), dtype=bool)
    gt = np.zeros((n, len(horizon), 2))
    valid = np.zeros((n, len(horizon)), dtype=bool)
    for i, (p, g, v) in enumerate(entries):
        k = len(p.confidences)
        pred[i, :k] = p.paths[:, :, :2]
        conf[i, :k] = p.confidences
        mode_ok[i, :k] = True
        gt[i], valid[i] = g, v
    result = prediction_errors(pred, conf, gt, valid, horizon, top_k=TOP_K, mode_valid=mode_ok,
                               eval_horizon_s=EVAL_HORIZON_S)
    return {'min_ade_3s_m': result.ade_3s_m, 'min_fde_3s_m': result.fde_3s_m,
            'miss_rate': result.miss_rate, 'samples': result.num_objects}


def evaluate_prediction(seeds: Sequence[int] = DEFAULT_SEEDS, duration_s: float = 60.0,
                        predict_period_s: float = 1.0,
                        noise: tuple[float, float, float] = (0.05, 0.01, 0.05),
                        params: PredictorParams | None = None) -> dict:
    """minADE@3s, minFDE@3s (top-3 modes) and miss rate over held-out scenarios.

    noise: 1-sigma Gaussian noise on the input (position [m], yaw [rad], speed [m/s]).
    Returns {'min_ade_3s_m', 'min_fde_3s_m', 'miss_rate', 'samples', 'per_class',
    'predict_ms', 'targets', 'met', 'config'}.
    """
    params = params or PredictorParams()
    samples: dict[str, list] = {}
    predict_ms: list[float] = []
    for seed in seeds:
        _run_seed(int(seed), duration_s, predict_period_s, tuple(noise), params, samples,
                  predict_ms)
    horizon = np.arange(1, params.steps + 1) * params.time_step_s
    everything = [entry for group in samples.values() for entry in group]
    if not everything:
        raise ValueError('no object was evaluated: longer duration or more seeds needed')
    overall = _score(everything, params.max_modes, horizon)
    per_class = {group: _score(entries, params.max_modes, horizon)
                 for group, entries in sorted(samples.items())}
    met = all(overall[key] is not None and overall[key] <= limit
              for key, limit in TARGETS.items())
    ms = np.asarray(predict_ms)
    return overall | {
        'per_class': per_class,
        'predict_ms': {'median': float(np.median(ms)), 'p99': float(np.percentile(ms, 99))},
        'targets': dict(TARGETS), 'met': met,
        'config': {'seeds': [int(s) for s in seeds], 'duration_s': duration_s,
                   'predict_period_s': predict_period_s, 'noise': list(noise),
                   'top_k': TOP_K}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS))
    parser.add_argument('--duration', type=float, default=60.0, help='seconds per scenario')
    parser.add_argument('--no-noise', action='store_true', help='exact ground truth input')
    args = parser.parse_args(argv)
    noise = (0.0, 0.0, 0.0) if args.no_noise else (0.05, 0.01, 0.05)
    result = evaluate_prediction(args.seeds, args.duration, noise=noise)
    print(json.dumps(result))
    return 0 if result['met'] else 1


if __name__ == '__main__':
    raise SystemExit(main())
