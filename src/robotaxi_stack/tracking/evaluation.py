"""Held-out open-loop evaluation of the tracker on simulated detections (no ROS).

Scenarios are generated here, not taken from scenarios/ (the tracker was not tuned on them by
seed): a 3x3 grid_town with per-seed random mixes of lane-following cars and trucks at different
speeds (random turns at intersections; every grid_town intersection is an all-way stop and
they stop at its stop lines, as real drivers do), cyclists, parked cars and pedestrians walking on
waypoints along sidewalks and across roads. Each is built as a scenario dict and validated by
sim/scenario.py (parse_scenario) and SimWorld (positions on the road), then the actors are
stepped with ActorWorld at 10 Hz. The ego is a sensor platform the actors do not react to: it
stands still, or drives its lane at constant speed (then the detections go to the tracker in
base_link with the ego pose, exercising the motion compensation).

Per frame: sim/detection_model.detect -> Tracker.update -> compare with the ground truth.
Ground truth is evaluated within the detector range only; tracks farther than the range plus
the matching distance cannot match such ground truth and are left out too (they are tracks of
objects that just left the range). Metrics: CLEAR MOT (replay/metrics.clear_mot) MOTA and ID
switches per 100 ground-truth track-frames; velocity RMSE (map-frame vector error) over
vehicle ground truth matched to a track (per frame, Hungarian within the same matching
distance).

`python -m robotaxi_stack.tracking.evaluation [--seeds 1 2 3] [--duration-s 30]` prints JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from robotaxi_stack.replay.metrics import MotFrame, clear_mot
from robotaxi_stack.sim import maps
from robotaxi_stack.sim.actors import ObjectLabel
from robotaxi_stack.sim.detection_model import DetectorConfig, SimDetections, detect
from robotaxi_stack.sim.scenario import Scenario, parse_scenario
from robotaxi_stack.sim.world import SimWorld
from robotaxi_stack.tracking.tracker import (Detections, Tracker, TrackerParams,
                                             class_probs_from_labels)

TARGETS = {'mota_min': 0.85, 'id_switches_per_100_max': 1.0,
           'vehicle_velocity_rmse_mps_max': 0.5}
DEFAULT_SEEDS = (11, 23, 37, 41)
MATCH_DISTANCE_M = 2.0  # clear_mot's default
STEP_S = 0.1
BLOCK_M = 100.0
BLOCKS = 3
LANE_OFFSET_M = 1.75
SIDEWALK_OFFSET_M = 5.0  # road centre -> sidewalk walking line (half road 3.5 m + 1.5 m)
VEHICLE_LABELS = (ObjectLabel.CAR, ObjectLabel.TRUCK, ObjectLabel.BUS, ObjectLabel.BICYCLE,
                  ObjectLabel.MOTORCYCLE)


@dataclasses.dataclass(frozen=True)
class ActorMix:
    """How many actors of each kind a generated scenario holds, and the ego's speed."""

    cars: int = 10
    trucks: int = 2
    cyclists: int = 3
    parked: int = 4
    pedestrians: int = 8
    ego_speed_mps: float = 0.0


MIXES = (ActorMix(ego_speed_mps=0.0), ActorMix(cars=14, trucks=3, pedestrians=6,
                                                ego_speed_mps=7.0),
         ActorMix(cars=6, cyclists=5, parked=6, pedestrians=14, ego_speed_mps=0.0),
         ActorMix(cars=12, trucks=4, cyclists=2, parked=2, pedestrians=6, ego_speed_mps=5.0))


def _lane_pose(rng: np.random.Generator) -> tuple[float, float, float]:
    """A random pose on a lane centre of the grid, at least 15 m from intersections."""
    horizontal = bool(rng.integers(2))
    road = float(rng.integers(BLOCKS + 1)) * BLOCK_M
    block = int(rng.integers(BLOCKS))
    along = block * BLOCK_M + rng.uniform(15.0, BLOCK_M - 15.0)
    forward = bool(rng.integers(2))
    # Right-hand traffic: eastbound (northbound) lanes lie right of the centre line.
    if horizontal:
        return (along, road - LANE_OFFSET_M, 0.0) if forward else \
            (along, road + LANE_OFFSET_M, math.pi)
    return (road + LANE_OFFSET_M, along, 0.5 * math.pi) if forward else \
        (road - LANE_OFFSET_M, along, -0.5 * math.pi)


def _pedestrian_points(rng: np.random.Generator, duration_s: float) -> list[list[float]]:
    """Walk along a sidewalk, cross the road at a right angle, pause, walk on."""
    speed = rng.uniform(0.9, 1.7)
    horizontal = bool(rng.integers(2))
    road = float(rng.integers(BLOCKS + 1)) * BLOCK_M
    side = 1.0 if rng.integers(2) else -1.0
    start = rng.uniform(10.0, BLOCKS * BLOCK_M - 10.0)
    direction = 1.0 if rng.integers(2) else -1.0
    walk1 = rng.uniform(5.0, 25.0)
    t0 = rng.uniform(0.0, 3.0)
    along = [start, start + direction * walk1, start + direction * walk1,
             start + direction * walk1, start + direction * (walk1 + rng.uniform(5.0, 20.0))]
    across = [side * SIDEWALK_OFFSET_M, side * SIDEWALK_OFFSET_M, -side * SIDEWALK_OFFSET_M,
              -side * SIDEWALK_OFFSET_M, -side * SIDEWALK_OFFSET_M]
    times = [t0, t0 + walk1 / speed]
    times.append(times[-1] + 2.0 * SIDEWALK_OFFSET_M / speed)
    times.append(times[-1] + rng.uniform(0.5, 3.0))  # pause on the far side
    times.append(times[-1] + abs(along[4] - along[3]) / speed)
    points = []
    for t, a, c in zip(times, along, across):
        x, y = (a, road + c) if horizontal else (road + c, a)
        points.append([round(float(t), 3), round(float(x), 3), round(float(y), 3)])
    return points


def heldout_scenario(seed: int, mix: ActorMix, duration_s: float) -> tuple[Scenario, float]:
    """A validated scenario for `seed` with the actor mix, and the ego speed [m/s]."""
    rng = np.random.default_rng(seed)
    ego = (1.5 * BLOCK_M, BLOCK_M - LANE_OFFSET_M, 0.0)
    taken = [ego[:2]]
    actors: list[dict[str, Any]] = []

    def free_pose(min_gap_m: float = 12.0) -> tuple[float, float, float]:
        for _ in range(200):
            pose = _lane_pose(rng)
            if all(math.dist(pose[:2], other) >= min_gap_m for other in taken):
                taken.append(pose[:2])
                return pose
        raise RuntimeError(f'seed {seed}: no free lane position left')

    def vehicle(kind: str, count: int, speeds: tuple[float, float]) -> None:
        for i in range(count):
            x, y, yaw = free_pose()
            speed = float(rng.uniform(*speeds))
            actors.append({'id': f'{kind}{i}', 'type': 'truck' if kind == 'truck' else
                           'bicycle' if kind == 'cyclist' else 'car',
                           'start': {'x': round(x, 3), 'y': round(y, 3), 'yaw': yaw,
                                     'speed': round(speed, 3)},
                           'behavior': {'kind': 'lane_follow', 'target_speed': round(speed, 3),
                                        'route': 'random', 'stop_at_stop_lines': True}})

    vehicle('car', mix.cars, (5.0, 14.0))
    vehicle('truck', mix.trucks, (5.0, 11.0))
    vehicle('cyclist', mix.cyclists, (3.0, 6.0))
    for i in range(mix.parked):
        x, y, yaw = free_pose()
        actors.append({'id': f'parked{i}', 'type': 'car',
                       'start': {'x': round(x, 3), 'y': round(y, 3), 'yaw': yaw},
                       'behavior': {'kind': 'parked'}})
    for i in range(mix.pedestrians):
        actors.append({'id': f'ped{i}', 'type': 'pedestrian',
                       'behavior': {'kind': 'waypoints',
                                    'points': _pedestrian_points(rng, duration_s)}})
    data = {'format': 'robotaxi-scenario/1', 'name': f'tracking_heldout_{seed}', 'seed': seed,
            'duration_s': duration_s,
            'map': {'generator': 'grid_town',
                    'params': {'blocks_x': BLOCKS, 'blocks_y': BLOCKS, 'block_m': BLOCK_M}},
            'ego': {'vehicle': 'bmw_320i', 'start': {'x': ego[0], 'y': ego[1], 'yaw': ego[2]}},
            'actors': actors, 'expect': {}}
    return parse_scenario(data), mix.ego_speed_mps


def _to_tracker_input(dets: SimDetections, ego_pose: tuple[float, float, float],
                      frame_id: str) -> Detections:
    xy = np.column_stack([dets.x_m, dets.y_m])
    yaw = dets.yaw_rad
    cov = dets.covariance
    if frame_id == 'base_link':
        x0, y0, yaw0 = ego_pose
        c, s = math.cos(yaw0), math.sin(yaw0)
        rot_t = np.array([[c, s], [-s, c]])  # map -> base_link
        xy = (xy - np.array([x0, y0])) @ rot_t.T
        yaw = yaw - yaw0
        jac = np.eye(3)
        jac[:2, :2] = rot_t
        cov = jac @ cov @ jac.T
    return Detections(frame_id, xy, dets.z_m, yaw,
                      np.column_stack([dets.length_m, dets.width_m, dets.height_m]),
                      class_probs_from_labels(dets.labels, dets.class_prob), cov,
                      dets.class_prob)


class _EgoPath:
    """Constant-speed drive along the ego's lane (or standing still)."""

    def __init__(self, town: maps.Town, start: tuple[float, float, float], speed_mps: float,
                 duration_s: float):
        self.speed_mps = speed_mps
        self.start = start
        if speed_mps > 0.0:
            lane = maps.lane_path(town, start[:2], start[2], speed_mps * duration_s + 10.0)
            xy = lane.path_xy
            self.s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
            self.xy = xy

    def pose(self, t_s: float) -> tuple[float, float, float]:
        if self.speed_mps <= 0.0:
            return self.start
        s = min(self.speed_mps * t_s, float(self.s[-1]))
        x = float(np.interp(s, self.s, self.xy[:, 0]))
        y = float(np.interp(s, self.s, self.xy[:, 1]))
        ahead = float(np.interp(min(s + 0.5, self.s[-1]), self.s, self.xy[:, 0])) - x, \
            float(np.interp(min(s + 0.5, self.s[-1]), self.s, self.xy[:, 1])) - y
        yaw = math.atan2(ahead[1], ahead[0]) if math.hypot(*ahead) > 1e-6 else self.start[2]
        return x, y, yaw


def run_scenario(scenario: Scenario, ego_speed_mps: float, detector: DetectorConfig,
                 params: TrackerParams, detector_seed: int) -> dict[str, Any]:
    """Run one held-out scenario; returns MOT frames and velocity error samples."""
    world = SimWorld(scenario)
    start = scenario.ego.start
    ego_path = _EgoPath(world.town, (start.x, start.y, start.yaw), ego_speed_mps,
                        scenario.duration_s)
    frame_id = 'base_link' if ego_speed_mps > 0.0 else 'map'
    rng = np.random.default_rng(detector_seed)
    tracker = Tracker(params)

    def on_road(xy: np.ndarray) -> np.ndarray:
        return maps.is_on_road(world.town, xy)

    frames: list[MotFrame] = []
    velocity_errors: list[np.ndarray] = []
    steps = int(round(scenario.duration_s / STEP_S))
    snapshot = world.actors.snapshot()
    for k in range(steps + 1):
        t_s = k * STEP_S
        if k:
            snapshot = world.actors.step(STEP_S)
        ego = ego_path.pose(t_s)
        tracker.add_ego_pose(t_s, *ego)
        dets = detect(snapshot, ego, detector, rng, on_road)
        result = tracker.update(t_s, _to_tracker_input(dets, ego, frame_id))
        if not result.accepted:
            raise RuntimeError(f'{scenario.name}: frame at {t_s:.1f} s rejected: '
                               f'{result.reason}')
        tracks = result.tracks
        gt_xy = snapshot.boxes[:, :2]
        in_range = np.hypot(*(gt_xy - ego[:2]).T) <= detector.range_m
        hyp_near = np.hypot(*(tracks.xyz_m[:, :2] - ego[:2]).T) \
            <= detector.range_m + MATCH_DISTANCE_M
        gt_index = np.flatnonzero(in_range)
        hyp_index = np.flatnonzero(hyp_near)
        frames.append(MotFrame([int(i) + 1 for i in gt_index], gt_xy[gt_index],
                               [int(tracks.ids[j]) for j in hyp_index],
                               tracks.xyz_m[hyp_index, :2]))
        velocity_errors.append(_vehicle_velocity_errors(
            snapshot.boxes[gt_index, :2], snapshot.velocities_mps[gt_index],
            snapshot.labels[gt_index], tracks.xyz_m[hyp_index, :2],
            tracks.velocity_map_mps[hyp_index]))
    return {'frames': frames, 'velocity_errors': np.concatenate(velocity_errors),
            'stats': dataclasses.asdict(tracker.stats)}


def _vehicle_velocity_errors(gt_xy: np.ndarray, gt_v: np.ndarray, gt_labels: np.ndarray,
                             hyp_xy: np.ndarray, hyp_v: np.ndarray) -> np.ndarray:
    """|v_track - v_gt| [m/s] of vehicle ground truth matched to tracks in one frame."""
    if not len(gt_xy) or not len(hyp_xy):
        return np.zeros(0)
    dist = np.hypot(*(gt_xy[:, None, :] - hyp_xy[None, :, :]).transpose(2, 0, 1))
    rows, cols = linear_sum_assignment(np.where(dist <= MATCH_DISTANCE_M, dist, 1e6 + dist))
    ok = (dist[rows, cols] <= MATCH_DISTANCE_M) & np.isin(gt_labels[rows], VEHICLE_LABELS)
    rows, cols = rows[ok], cols[ok]
    return np.hypot(*(hyp_v[cols] - gt_v[rows]).T)


def evaluate_tracking(seeds: Sequence[int] = DEFAULT_SEEDS, duration_s: float = 30.0,
                      params: TrackerParams | None = None,
                      detector: DetectorConfig | None = None) -> dict[str, Any]:
    """MOTA, ID switches per 100 ground-truth track-frames and vehicle velocity RMSE over the
    held-out scenarios of `seeds` (scenario i uses MIXES[i % len(MIXES)])."""
    params = params or TrackerParams()
    detector = detector or DetectorConfig()
    frames: list[MotFrame] = []
    errors = []
    per_scenario = {}
    for i, seed in enumerate(seeds):
        mix = MIXES[i % len(MIXES)]
        scenario, ego_speed = heldout_scenario(int(seed), mix, duration_s)
        run = run_scenario(scenario, ego_speed, detector, params, detector_seed=int(seed) + 1)
        mot = clear_mot(run['frames'], MATCH_DISTANCE_M)
        per_scenario[scenario.name] = {
            'mota': mot.mota, 'id_switches': mot.id_switches, 'gt_track_frames': mot.num_gt,
            'vehicle_velocity_rmse_mps': _rmse(run['velocity_errors']),
            'ego_speed_mps': ego_speed, 'tracker': run['stats']}
        frames += run['frames']
        errors.append(run['velocity_errors'])
    # Ids are per scenario (actor index + 1, tracker counters from 1): keep them apart.
    mot = clear_mot(_tag_frames(frames, seeds, duration_s), MATCH_DISTANCE_M)
    errors_all = np.concatenate(errors) if errors else np.zeros(0)
    switches_per_100 = 100.0 * mot.id_switches / mot.num_gt if mot.num_gt else None
    result = {
        'mota': mot.mota,
        'id_switches': mot.id_switches,
        'id_switches_per_100_gt_track_frames': switches_per_100,
        'vehicle_velocity_rmse_mps': _rmse(errors_all),
        'gt_track_frames': mot.num_gt, 'misses': mot.misses,
        'false_positives': mot.false_positives, 'motp_m': mot.motp_m,
        'vehicle_velocity_pairs': int(len(errors_all)),
        'seeds': [int(s) for s in seeds], 'duration_s': duration_s,
        'detector': {k: v for k, v in dataclasses.asdict(detector).items()
                     if k != 'confusion'},
        'per_scenario': per_scenario,
        'targets': TARGETS,
    }
    result['targets_met'] = bool(
        mot.mota is not None and mot.mota >= TARGETS['mota_min']
        and switches_per_100 is not None
        and switches_per_100 <= TARGETS['id_switches_per_100_max']
        and result['vehicle_velocity_rmse_mps'] is not None
        and result['vehicle_velocity_rmse_mps'] <= TARGETS['vehicle_velocity_rmse_mps_max'])
    return result


def _tag_frames(frames: list[MotFrame], seeds: Sequence[int],
                duration_s: float) -> list[MotFrame]:
    per_run = int(round(duration_s / STEP_S)) + 1
    tagged = []
    for n, frame in enumerate(frames):
        run = n // per_run
        tagged.append(MotFrame([(run, g) for g in frame.gt_ids], frame.gt_xy,
                               [(run, h) for h in frame.hyp_ids], frame.hyp_xy))
    return tagged


def _rmse(errors: np.ndarray) -> float | None:
    return float(np.sqrt(np.mean(errors ** 2))) if len(errors) else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=list(DEFAULT_SEEDS))
    parser.add_argument('--duration-s', type=float, default=30.0)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_tracking(args.seeds, args.duration_s), indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
