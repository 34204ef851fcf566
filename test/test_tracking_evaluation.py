"""Held-out tracking evaluation: simulated detector -> tracker on generated grid_town scenarios,
scored with CLEAR MOT (targets: MOTA >= 0.85, <= 1 ID switch per 100 ground-truth
track-frames, vehicle velocity RMSE <= 0.5 m/s)."""

import numpy as np
import pytest

from robotaxi_stack.sim.detection_model import DetectorConfig, detect
from robotaxi_stack.sim.world import SimWorld
from robotaxi_stack.tracking.evaluation import (MIXES, TARGETS, evaluate_tracking,
                                                heldout_scenario)

# Not the seeds the tracker was tuned on (evaluation.DEFAULT_SEEDS = 11, 23, 37, 41).
HELDOUT_SEEDS = (101, 202, 303, 404)


@pytest.fixture(scope='module')
def result():
    return evaluate_tracking(seeds=HELDOUT_SEEDS, duration_s=25.0)


def test_heldout_scenarios_are_valid_and_varied():
    scenario, ego_speed = heldout_scenario(101, MIXES[1], 30.0)
    world = SimWorld(scenario)  # validates positions on the built map
    types = {actor.type for actor in scenario.actors}
    assert types == {'car', 'truck', 'bicycle', 'pedestrian'}
    assert ego_speed > 0.0
    assert len(world.actors.snapshot().ids) == len(scenario.actors)


def test_detector_is_noisy_but_seeded():
    scenario, _ = heldout_scenario(202, MIXES[0], 30.0)
    snapshot = SimWorld(scenario).actors.snapshot()
    ego = (scenario.ego.start.x, scenario.ego.start.y, 0.0)
    config = DetectorConfig()
    a = detect(snapshot, ego, config, np.random.default_rng(7))
    b = detect(snapshot, ego, config, np.random.default_rng(7))
    assert np.array_equal(a.x_m, b.x_m) and np.array_equal(a.labels, b.labels)
    real = a.actor_index >= 0
    truth = snapshot.boxes[a.actor_index[real], :2]
    error = np.hypot(a.x_m[real] - truth[:, 0], a.y_m[real] - truth[:, 1])
    assert 0.0 < np.median(error) < 1.0
    in_range = np.hypot(*(snapshot.boxes[:, :2] - ego[:2]).T) <= config.range_m
    assert real.sum() <= in_range.sum()


def test_mota_and_id_switches_meet_targets(result):
    assert result['gt_track_frames'] > 3000
    assert result['mota'] >= TARGETS['mota_min'], result['per_scenario']
    assert result['id_switches_per_100_gt_track_frames'] \
        <= TARGETS['id_switches_per_100_max'], result['per_scenario']


def test_vehicle_velocity_rmse_meets_target(result):
    """Measured 0.42 m/s on these seeds (0.43 on the tuning seeds), target 0.5."""
    assert result['vehicle_velocity_pairs'] > 1000
    assert result['vehicle_velocity_rmse_mps'] \
        <= TARGETS['vehicle_velocity_rmse_mps_max'], result['per_scenario']
