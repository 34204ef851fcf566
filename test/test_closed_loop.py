"""Closed-loop scenario runs: the whole graph (simulator, mission, planner, vehicle interface,
health monitor) driven by the scenario runner, recorded and evaluated.

The representative subset for CI (ARCHITECTURE.md section 6): the default ride (`make demo`),
and a short ride run twice under one seed for reproducibility, whose recording is then played
back. The full suite runs with `robotaxi scenario suite scenarios/`.
"""

import json
import math
import pathlib
import textwrap
import time

import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy

from robotaxi_msgs.msg import ControlCommand, MissionStatus
from robotaxi_stack.replay.bag_io import read_bag
from robotaxi_stack.replay.player import BagPlayer
from robotaxi_stack.replay.scenario_runner import run_scenario

ROOT = pathlib.Path(__file__).resolve().parents[1]

SHORT_RIDE = textwrap.dedent('''\
    format: robotaxi-scenario/1
    name: short_ride
    description: one short ride on one road, oncoming traffic; for reproducibility checks
    seed: 11
    duration_s: 52
    map: {generator: grid_town, params: {blocks_x: 2, blocks_y: 1, block_m: 120,
          speed_limit_kph: 40}}
    ego: {vehicle: bmw_320i, start: {x: 10.0, y: -1.75, yaw: 0.0, speed: 0.0}}
    rides:
      - {at_s: 0, ride_id: s1, pickup: {x: 45, y: -1.75, yaw: 0},
         dropoff: {x: 95, y: -1.75, yaw: 0}}
    actors:
      - {id: oncoming, type: car, start: {x: 200, y: 1.75, yaw: 3.1416, speed: 8},
         behavior: {kind: lane_follow, target_speed: 8}}
    sensors:
      lidar: {channels: 16, hz: 10, range_m: 60, noise_m: 0.02, dropout: 0.01,
              points_per_revolution: 600}
      camera: {hz: 5}
    sim: {perception: ground_truth}
    expect: {rides_completed: 1, no_collision: true, stop_error_m: 0.3, mrm: none}
    ''')

# Metrics that come from wall-clock timing, not from the simulated world.
WALL_CLOCK_METRICS = ('e2e_latency_ms', 'message_counts')


def _world_metrics(result):
    return {k: v for k, v in result['metrics'].items() if k not in WALL_CLOCK_METRICS}


def _assert_close(one, two, path='metrics'):
    """Equal structure and strings, floats equal to 1e-9 (relative or absolute)."""
    if isinstance(one, dict):
        assert isinstance(two, dict) and one.keys() == two.keys(), path
        for key in one:
            _assert_close(one[key], two[key], f'{path}.{key}')
    elif isinstance(one, list):
        assert isinstance(two, list) and len(one) == len(two), path
        for index, (a, b) in enumerate(zip(one, two)):
            _assert_close(a, b, f'{path}[{index}]')
    elif isinstance(one, float) and isinstance(two, float):
        assert math.isclose(one, two, rel_tol=1e-9, abs_tol=1e-9), (path, one, two)
    else:
        assert one == two, path



def test_default_ride_passes_closed_loop_with_precise_stops(tmp_path):
    result = run_scenario(ROOT / 'scenarios' / 'plain_ride.yaml', tmp_path / 'run')
    assert result['passed'], result['failures']
    metrics = result['metrics']
    assert metrics['rides_completed'] == 1 and metrics['collisions'] == 0
    assert len(metrics['stop_error_m']) == 2
    assert max(metrics['stop_error_m']) <= 0.3
    assert metrics['p95_abs_jerk_mps3'] <= 2.5
    assert metrics['max_abs_lat_accel_mps2'] <= 3.0
    assert metrics['mrm_events'] == []
    assert metrics['e2e_latency_topic'] == '/control/command'
    assert metrics['e2e_latency_ms']['p50'] > 0.0
    on_disk = json.loads((tmp_path / 'run' / 'result.json').read_text())
    assert on_disk['passed'] and on_disk['metrics']['stop_error_m'] == metrics['stop_error_m']
    assert (tmp_path / 'run' / 'summary.png').stat().st_size > 10_000


def test_same_seed_gives_the_same_ride_outcome_and_the_bag_replays(tmp_path):
    scenario = tmp_path / 'short_ride.yaml'
    scenario.write_text(SHORT_RIDE)
    first = run_scenario(scenario, tmp_path / 'a')
    second = run_scenario(scenario, tmp_path / 'b')
    assert first['passed'], first['failures']
    # Lock-step simulation (the simulator waits for the command, the mission heartbeat and the
    # prediction of each tick), inputs applied by stamp, planner and gate synced to the vehicle
    # status: the simulated world and every metric derived from it are identical. Metrics
    # agree to rounding (numpy's SIMD sums may round differently with array alignment); the
    # recorded world and the stack's outputs are compared byte for byte below.
    _assert_close(_world_metrics(first), _world_metrics(second))
    assert first['metrics']['lockstep_timeouts'] == second['metrics']['lockstep_timeouts'] == 0
    for topic in ('/localization/kinematic_state', '/sim/ground_truth/objects',
                  '/sensing/lidar/points', '/planning/mission_status', '/planning/trajectory',
                  '/control/command', '/vehicle/command'):
        one, two = ([bytes(m.data) for m in read_bag(tmp_path / run / 'bag') if m.topic == topic]
                    for run in ('a', 'b'))
        assert one and one == two, topic
    assert first['metrics']['stop_error_m'] and first['metrics']['distance_m'] > 80.0

    # The recording plays back with the player: the same command and mission bytes arrive.
    bag = tmp_path / 'a' / 'bag'
    topics = ('/vehicle/command', '/planning/mission_status')
    recorded = {t: [bytes(m.data) for m in read_bag(bag) if m.topic == t] for t in topics}
    assert all(recorded.values())
    context = Context()
    rclpy.init(context=context)
    try:
        executor = SingleThreadedExecutor(context=context)
        sink = rclpy.create_node('sink', context=context)
        player_node = rclpy.create_node('player', context=context)
        executor.add_node(sink)
        executor.add_node(player_node)
        received = {t: [] for t in topics}
        deep = QoSProfile(depth=10000, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in zip(topics, (ControlCommand, MissionStatus)):
            sink.create_subscription(
                cls, topic, lambda data, t=topic: received[t].append(bytes(data)), deep,
                raw=True)
        player = BagPlayer(player_node, bag, rate=0.0, topics=topics, publish_clock=False)
        assert player.wait_for_subscribers(timeout_s=10.0)
        result = player.play()
        assert result.published_counts == {t: len(v) for t, v in recorded.items()}
        deadline = time.monotonic() + 120.0  # one callback per spin_once: thousands here
        while time.monotonic() < deadline:
            if all(len(received[t]) == len(recorded[t]) for t in topics):
                break
            executor.spin_once(timeout_sec=0.01)
        assert received == recorded
        player.destroy()
    finally:
        rclpy.shutdown(context=context)


def test_a_broken_scenario_file_is_rejected_before_anything_starts(tmp_path):
    from robotaxi_stack.sim.scenario import ScenarioError
    scenario = tmp_path / 'bad.yaml'
    scenario.write_text(SHORT_RIDE.replace('duration_s: 52', 'duration_s: -1'))
    with pytest.raises(ScenarioError, match='duration_s'):
        run_scenario(scenario, tmp_path / 'run')
    assert not (tmp_path / 'run' / 'bag').exists()
