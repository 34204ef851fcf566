"""Free-flow ride times and the ride-time metric (robotaxi_stack.replay.free_flow, evaluation)."""

import dataclasses
import math
import pathlib

import numpy as np
import pytest

from robotaxi_stack.common.params import ParameterError
from robotaxi_stack.planning.behavior import BehaviorParams
from robotaxi_stack.planning.mission import (
    ALIGHTING, BOARDING, COMPLETED, IDLE, TO_DROPOFF, TO_PICKUP)
from robotaxi_stack.planning.route import build_reference_path, plan_route
from robotaxi_stack.replay import evaluation
from robotaxi_stack.replay import free_flow as ff
from robotaxi_stack.sim.maps import GridTownParams, OffMapError, generate_grid_town
from robotaxi_stack.sim.scenario import parse_scenario
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle

CONFIG = pathlib.Path(__file__).resolve().parents[1] / 'config'
PARAMS = BehaviorParams()
A, D = PARAMS.comfort_accel_mps2, PARAMS.comfort_decel_mps2
FRONT_M = 3.5
V_40KPH = 40.0 / 3.6
NORTH = math.pi / 2.0


@pytest.fixture(scope='module')
def town():
    """3 x 2 blocks of 120 m: intersections (all-way stops) at multiples of 120 m."""
    return generate_grid_town(GridTownParams(blocks_x=3, blocks_y=2, block_m=120.0,
                                             speed_limit_kph=40.0))


@pytest.fixture(scope='module')
def long_block_town():
    """One 240 m block: 200 m of straight road before the first stop line."""
    return generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1, block_m=240.0,
                                             speed_limit_kph=40.0))


def _path(town, start, goal):
    route = plan_route(town, start[:2], start[2], goal[:2], goal[2])
    return build_reference_path(town, route, start[:2], start[2], goal[:2])


def _trapezoid_s(length_m, v_max, a, d, v0=0.0):
    """Analytic time [s]: from v0 up at a to at most v_max, down at d to rest after length_m."""
    ramps_m = (v_max ** 2 - v0 ** 2) / (2 * a) + v_max ** 2 / (2 * d)
    if length_m >= ramps_m:
        return (v_max - v0) / a + v_max / d + (length_m - ramps_m) / v_max
    peak = math.sqrt((2 * a * d * length_m + d * v0 ** 2) / (a + d))
    return (peak - v0) / a + peak / d


# ------------------------------------------------------------------------------ free flow

@pytest.mark.parametrize('goal_x, hold_s', [(200.0, 0.0), (200.0, 0.5), (70.0, 0.0)])
def test_straight_leg_without_stop_lines_is_the_analytic_trapezoid(
        long_block_town, goal_x, hold_s):
    leg = ff.free_flow_leg(long_block_town, (20.0, -1.75, 0.0), (goal_x, -1.75, 0.0), PARAMS,
                           FRONT_M, arrival_hold_s=hold_s)
    length = goal_x - 20.0
    assert leg.stop_lines == 0 and leg.length_m == pytest.approx(length)
    # 180 m reaches 40 km/h and cruises; 50 m turns back at a lower peak (triangle).
    assert leg.time_s == pytest.approx(_trapezoid_s(length, V_40KPH, A, D) + hold_s, rel=1e-9)
    assert leg.standing_s == hold_s and leg.v_mps[0] == 0.0 and leg.v_mps[-1] == 0.0
    assert np.all(np.diff(leg.t_s) >= 0.0) and leg.t_s[-1] == pytest.approx(leg.drive_s)


def test_leg_that_starts_moving_keeps_its_speed(long_block_town):
    path = _path(long_block_town, (20.0, -1.75, 0.0), (200.0, -1.75, 0.0))
    leg = ff.free_flow_profile(path, PARAMS, FRONT_M, start_speed_mps=5.0)
    assert leg.time_s == pytest.approx(_trapezoid_s(180.0, V_40KPH, A, D, v0=5.0), rel=1e-9)
    assert leg.time_s < ff.free_flow_profile(path, PARAMS, FRONT_M).time_s


def test_leg_through_an_intersection_stops_once_at_its_stop_line(town):
    path = _path(town, (10.0, -1.75, 0.0), (200.0, -1.75, 0.0))
    leg = ff.free_flow_profile(path, PARAMS, FRONT_M)
    assert leg.stop_lines == 1 and leg.standing_s == PARAMS.stop_line_wait_s
    # At rest with the front bumper stop_line_margin before the line (x = 112.5).
    stop_s = path.stop_lines_s[0] - FRONT_M - PARAMS.stop_line_margin_m
    assert stop_s + 10.0 + FRONT_M == pytest.approx(112.5 - PARAMS.stop_line_margin_m)
    assert leg.v_mps[np.argmin(np.abs(leg.s_m - stop_s))] == 0.0
    free = ff.free_flow_profile(dataclasses.replace(path, stop_lines_s=()), PARAMS, FRONT_M)
    assert free.stop_lines == 0
    # Both stretches have room to reach 40 km/h: the stop costs one brake-and-go and the wait.
    extra = V_40KPH / (2 * A) + V_40KPH / (2 * D) + PARAMS.stop_line_wait_s
    assert leg.time_s - free.time_s == pytest.approx(extra, rel=1e-3)


def test_stop_line_past_the_goal_is_not_stopped_at(town):
    # The goal (x = 100) comes before the stop point of the x = 112.5 stop line.
    leg = ff.free_flow_leg(town, (10.0, -1.75, 0.0), (100.0, -1.75, 0.0), PARAMS, FRONT_M)
    assert leg.stop_lines == 0
    assert leg.time_s == pytest.approx(_trapezoid_s(90.0, V_40KPH, A, D), rel=1e-9)


def test_turn_is_limited_by_the_planner_lateral_acceleration(town):
    path = _path(town, (90.0, -1.75, 0.0), (121.75, 80.0, NORTH))
    leg = ff.free_flow_profile(path, PARAMS, FRONT_M)
    kappa = np.abs(path.sample(leg.s_m)['kappa_1pm'])
    curve_limit = np.maximum(np.sqrt(PARAMS.curve_lat_accel_mps2 / np.maximum(kappa, 1e-6)),
                             PARAMS.min_speed_limit_mps)
    assert np.all(leg.v_mps <= curve_limit + 1e-9)
    # Mid-turn (radius 9.25 m round (112.5, 7.5)) the car runs at sqrt(1.6 * 9.25) ~ 3.85 m/s.
    turn = (kappa > 0.9 / 9.25)
    assert turn.sum() > 10
    assert leg.v_mps[turn].max() == pytest.approx(math.sqrt(1.6 * 9.25), rel=0.05)
    gentle = dataclasses.replace(PARAMS, curve_lat_accel_mps2=4.0)
    assert ff.free_flow_profile(path, gentle, FRONT_M).time_s < leg.time_s - 0.5


def test_bad_arguments_raise_free_flow_error(town):
    path = _path(town, (10.0, -1.75, 0.0), (100.0, -1.75, 0.0))
    for kwargs, name in (({'start_speed_mps': -1.0}, 'start_speed_mps'),
                         ({'start_speed_mps': math.nan}, 'start_speed_mps'),
                         ({'arrival_hold_s': math.inf}, 'arrival_hold_s')):
        with pytest.raises(ff.FreeFlowError, match=name):
            ff.free_flow_profile(path, PARAMS, FRONT_M, **kwargs)
    with pytest.raises(ff.FreeFlowError, match='front_m'):
        ff.free_flow_profile(path, PARAMS, math.nan)
    no_limit = dataclasses.replace(path, speed_limit_mps=np.where(path.s_m > 40.0, 0.0, 11.0))
    with pytest.raises(ff.FreeFlowError, match='no positive speed limit at station 40.5 m'):
        ff.free_flow_profile(no_limit, PARAMS, FRONT_M)
    with pytest.raises(ff.FreeFlowError, match='goal_pose.y'):
        ff.free_flow_leg(town, (10.0, -1.75, 0.0), (100.0, math.nan, 0.0), PARAMS, FRONT_M)
    with pytest.raises(ff.FreeFlowError, match='start_pose'):
        ff.free_flow_leg(town, (10.0, -1.75), (100.0, -1.75, 0.0), PARAMS, FRONT_M)


def test_leg_that_starts_on_its_goal_is_only_the_arrival_hold(town):
    leg = ff.free_flow_leg(town, (50.0, -1.75, 0.0), (50.0, -1.75, 0.0), PARAMS, FRONT_M,
                           arrival_hold_s=0.5)
    assert leg.time_s == 0.5 and leg.length_m == 0.0 and leg.drive_s == 0.0


def test_planner_settings_come_from_the_deployed_config(tmp_path):
    behavior, hold_s = ff.load_planner_settings(CONFIG)
    assert behavior.comfort_accel_mps2 == 1.2 and behavior.comfort_decel_mps2 == 1.5
    assert behavior.curve_lat_accel_mps2 == 1.6 and behavior.stop_line_wait_s == 1.0
    assert hold_s == 0.5
    (tmp_path / 'mpc_planner.param.yaml').write_text(
        '/**:\n  ros__parameters:\n    comfort_accel_mps2: 9.0\n    plan_period_s: 0.1\n')
    (tmp_path / 'mission.param.yaml').write_text(
        '/**:\n  ros__parameters:\n    arrival_hold_s: 0.5\n')
    with pytest.raises(ParameterError, match="comfort_accel_mps2' = 9.0 is out of range"):
        ff.load_planner_settings(tmp_path)
    with pytest.raises(ParameterError, match='cannot read'):
        ff.load_planner_settings(tmp_path / 'missing')


# ------------------------------------------------------------------------------ ride legs

def test_ride_legs_from_a_repeating_out_of_order_mission_timeline():
    mission = [
        (0.0, '', IDLE), (0.5, 'r1', TO_PICKUP), (1.5, 'r1', TO_PICKUP),
        (20.0, 'r1', BOARDING), (19.0, 'r1', TO_PICKUP),  # out of order, before BOARDING
        (21.0, 'r1', BOARDING), (30.0, 'r1', TO_DROPOFF), (31.0, 'r1', TO_DROPOFF),
        (55.5, 'r1', ALIGHTING), (64.0, 'r1', COMPLETED), (64.02, 'r2', TO_PICKUP),
        (80.0, 'r2', BOARDING), (90.0, 'r2', TO_DROPOFF),  # r2 never alights: skipped
        (95.0, 'r3', BOARDING),  # no TO_PICKUP recorded for r3: skipped
    ]
    legs = ff.extract_ride_legs(mission)
    assert [(leg.ride_id, leg.leg) for leg in legs] == [
        ('r1', 'to_pickup'), ('r1', 'to_dropoff'), ('r2', 'to_pickup')]
    assert [leg.time_s for leg in legs] == pytest.approx([19.5, 25.5, 15.98])
    assert ff.extract_ride_legs([]) == []


def test_ride_legs_reject_bad_entries():
    with pytest.raises(ff.FreeFlowError, match=r'mission\[1\].t_s'):
        ff.extract_ride_legs([(0.0, 'r1', TO_PICKUP), (math.nan, 'r1', BOARDING)])
    with pytest.raises(ff.FreeFlowError, match=r'mission\[0\]'):
        ff.extract_ride_legs([(0.0, 'r1')])


def _odometry(t_s, x_m, y_m=-1.75, yaw=0.0):
    t = np.asarray(t_s, float)
    return t, np.stack([np.asarray(x_m, float), np.full(len(t), y_m)], -1), \
        np.full(len(t), yaw), np.zeros(len(t))


def test_ride_time_ratios_compare_each_leg_with_its_free_flow_time(town):
    t, xy, yaw, speed = _odometry([0.0, 1.0, 30.0, 40.0], [10.0, 10.0, 90.0, 90.0])
    legs = [ff.RideLeg('r1', 'to_pickup', 1.0, 25.0), ff.RideLeg('r9', 'to_pickup', 30.0, 40.0),
            ff.RideLeg('r1', 'to_dropoff', 30.0, 70.0)]
    stops = {'r1': ((90.0, -1.75, 0.0), (121.75, 80.0, NORTH))}
    out = ff.ride_time_ratios(legs, t, xy, yaw, speed, stops, town, PARAMS, FRONT_M, 0.5)
    to_pickup = ff.free_flow_leg(town, (10.0, -1.75, 0.0), stops['r1'][0], PARAMS, FRONT_M,
                                 arrival_hold_s=0.5).time_s
    assert out[0] == {'ride_id': 'r1', 'leg': 'to_pickup', 'time_s': 24.0,
                      'free_flow_s': pytest.approx(to_pickup),
                      'ratio': pytest.approx(24.0 / to_pickup)}
    assert out[1]['ratio'] is None and 'not among the scenario rides' in out[1]['error']
    assert out[2]['free_flow_s'] > to_pickup and out[2]['ratio'] == pytest.approx(
        40.0 / out[2]['free_flow_s'])
    with pytest.raises(ff.FreeFlowError, match='finite'):
        ff.ride_time_ratios(legs, t, xy * np.nan, yaw, speed, stops, town, PARAMS, FRONT_M, 0.5)
    with pytest.raises(ff.FreeFlowError, match='non-empty'):
        ff.ride_time_ratios(legs, t[:0], xy[:0], yaw[:0], speed[:0], stops, town, PARAMS,
                            FRONT_M, 0.5)


def test_goal_off_the_map_is_a_map_error(town):
    with pytest.raises(OffMapError):
        ff.free_flow_leg(town, (10.0, -1.75, 0.0), (60.0, 60.0, 0.0), PARAMS, FRONT_M)


# ------------------------------------------------------------------------------ evaluate

SCENARIO = {
    'format': 'robotaxi-scenario/1', 'name': 'ratio', 'seed': 1, 'duration_s': 90,
    'map': {'generator': 'grid_town', 'params': {'blocks_x': 3, 'blocks_y': 2, 'block_m': 120,
                                                 'speed_limit_kph': 40}},
    'ego': {'vehicle': 'bmw_320i', 'start': {'x': 10.0, 'y': -1.75, 'yaw': 0.0}},
    'rides': [{'at_s': 0, 'ride_id': 'r1', 'pickup': {'x': 90, 'y': -1.75, 'yaw': 0},
               'dropoff': {'x': 121.75, 'y': 80, 'yaw': 1.5708}}],
    'expect': {'rides_completed': 1, 'max_ride_time_ratio': 1.3},
}


def _series(pickup_arrival_s):
    """Odometry at 10 Hz: standing at x = 10, jump to the pickup when BOARDING starts."""
    t = np.arange(0.0, pickup_arrival_s + 5.0, 0.1)
    x = np.where(t < pickup_arrival_s, 10.0, 90.0)
    mission = [(0.0, 'r1', TO_PICKUP), (pickup_arrival_s, 'r1', BOARDING)]
    odom = _odometry(t, x)
    return evaluation.Series(
        t_s=odom[0], xy_m=odom[1], yaw_rad=odom[2], speed_mps=odom[3],
        yaw_rate_rps=np.zeros(len(t)), gt_t_s=np.zeros(0), gt_objects=[], mission=mission,
        mrm=[], objects={evaluation.TOPIC_TRACKED: [], evaluation.TOPIC_DETECTED: []},
        latency={topic: [] for topic in evaluation.LATENCY_TOPICS}, message_counts={})


def test_evaluate_reports_ride_legs_and_fails_a_slow_ride(town, monkeypatch):
    monkeypatch.setattr(ff, 'config_dir', lambda: CONFIG)
    scenario = parse_scenario(SCENARIO)
    vehicle = load_vehicle(CONFIG / 'vehicle' / 'bmw_320i.yaml')
    free_s = ff.free_flow_leg(town, (10.0, -1.75, 0.0), (90.0, -1.75, 0.0), PARAMS,
                              vehicle.length_m - vehicle.rear_overhang_m,
                              arrival_hold_s=0.5).time_s
    fast, _ = evaluation.evaluate(_series(1.2 * free_s), scenario, vehicle, town=town)
    legs = fast['metrics']['ride_legs']
    assert [(leg['ride_id'], leg['leg']) for leg in legs] == [('r1', 'to_pickup')]
    assert legs[0]['free_flow_s'] == pytest.approx(free_s)
    assert fast['metrics']['max_ride_time_ratio'] == pytest.approx(1.2, abs=1e-6)
    assert not any(f.startswith('max_ride_time_ratio') for f in fast['failures'])
    slow, _ = evaluation.evaluate(_series(1.5 * free_s), scenario, vehicle)  # builds the town
    assert slow['metrics']['max_ride_time_ratio'] == pytest.approx(1.5, abs=1e-6)
    assert [f for f in slow['failures'] if f.startswith('max_ride_time_ratio')] == [
        f'max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, measured 1.50 for '
        f'r1 to_pickup ({1.5 * free_s:.1f} s vs {free_s:.1f} s free flow)']


def test_evaluate_without_completed_legs_reports_not_measured(town, monkeypatch):
    monkeypatch.setattr(ff, 'config_dir', lambda: CONFIG)
    series = _series(20.0)
    series.mission = [(0.0, 'r1', TO_PICKUP)]
    vehicle = load_vehicle(CONFIG / 'vehicle' / 'bmw_320i.yaml')
    result, _ = evaluation.evaluate(series, parse_scenario(SCENARIO), vehicle, town=town)
    assert result['metrics']['ride_legs'] == []
    assert result['metrics']['max_ride_time_ratio'] is None
    assert ('max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, not measured '
            '(no completed ride leg)') in result['failures']
