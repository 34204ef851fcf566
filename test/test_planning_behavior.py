"""Tests of the rule-based behavior layer (robotaxi_stack.planning.behavior, no ROS) on reference
paths of the default scenario's grid town (ARCHITECTURE.md section 6): goal stop and hold, stop
lines with standstill and gap acceptance, crosswalks, lead following, passing a parked car,
objects beside the path, and input errors."""

import math

import numpy as np
import pytest

from robotaxi_stack.planning import behavior as bh
from robotaxi_stack.planning.map_loader import load_planning_town
from robotaxi_stack.planning.route import build_reference_path, plan_route

NORTH = math.pi / 2.0
START = (10.0, -1.75, 0.0)
# bmw_320i (config/vehicle): base_link to front bumper, to rear bumper, width.
EGO = bh.EgoGeometry(front_m=3.458, rear_m=1.05, width_m=1.61)
PARAMS = bh.BehaviorParams()
STEPS, STEP_S, MAX_OBJECTS = 40, 0.1, 10
PRED_T = np.arange(0.0, 8.0 + 1e-9, 0.5)
# Eastbound stop line before the intersection at x = 120: 120 - 3.5 (box) - 4 = 112.5;
# its crosswalk spans x = 113..116 across the whole road (y = -3.5..3.5).
STOP_LINE_XY = (112.5, -1.75)
CAR, PEDESTRIAN = bh.CAR, bh.PEDESTRIAN


@pytest.fixture(scope='module')
def town():
    return load_planning_town('', 'scenarios/plain_ride.yaml')


def _path(town, goal_xy, goal_yaw):
    route = plan_route(town, START[:2], START[2], goal_xy, goal_yaw)
    return build_reference_path(town, route, START[:2], START[2], goal_xy)


@pytest.fixture(scope='module')
def kerb_path(town):
    """Straight eastbound path to the pickup at (90, -1.75) (before the first stop line)."""
    return _path(town, (90.0, -1.75), 0.0)


@pytest.fixture(scope='module')
def turn_path(town):
    """Eastbound, left through the 4-way stop at (120, 0), north to (121.75, 60)."""
    return _path(town, (121.75, 60.0), NORTH)


def _objects(rows):
    """rows: (id, label, x, y, yaw, vx, vy, length, width) -> constant-velocity Objects."""
    if not rows:
        return bh.Objects.empty(PRED_T)
    table = np.array([row[2:] for row in rows], dtype=float)
    return bh.constant_velocity_objects(
        [row[0] for row in rows], [row[1] for row in rows], table[:, 0:2], table[:, 2],
        table[:, 3:5], table[:, 5], table[:, 6], PRED_T)


def _car(object_id, x, y, yaw=0.0, vx=0.0, vy=0.0):
    return (object_id, CAR, x, y, yaw, vx, vy, 4.5, 1.8)


def _pedestrian(object_id, x, y, vx=0.0, vy=0.0):
    return (object_id, PEDESTRIAN, x, y, 0.0, vx, vy, 0.6, 0.6)


def _plan(path, ego_s, speed, objects=(), *, t_s=0.0, memory=None, goal_active=True,
          ego_d=0.0):
    objects = objects if isinstance(objects, bh.Objects) else _objects(list(objects))
    if memory is None:
        # Stopped objects have stood for a minute (parked), unless a test says otherwise.
        memory = bh.BehaviorMemory(stopped_since_s={int(i): t_s - 60.0 for i in objects.ids})
    return bh.plan_behavior(path, ego_s, ego_d, speed, t_s, objects, EGO, memory, PARAMS,
                            steps=STEPS, step_s=STEP_S, goal_active=goal_active,
                            max_objects=MAX_OBJECTS)


def _station(path, xy):
    return path.project(np.asarray(xy, float))[0]


def _stop_line_s(path):
    line_s = _station(path, STOP_LINE_XY)
    assert path.stop_lines_s and path.stop_lines_s[0] == pytest.approx(line_s, abs=0.3)
    return path.stop_lines_s[0]


def _served_memory():
    return bh.BehaviorMemory(served_stop_lines=[STOP_LINE_XY])


# -- goal and hold --------------------------------------------------------------------------

def test_goal_is_the_stop_point_and_the_speed_reference_ends_at_rest_near_it(kerb_path):
    plan = _plan(kerb_path, 0.0, 0.0)
    assert plan.s_stop_m == kerb_path.goal_s_m
    assert plan.stop_reason == 'goal'
    assert plan.state == 'cruise'
    assert plan.v_ref_mps.shape == (STEPS + 1,)
    assert plan.v_ref_mps[-1] > 1.0  # far from the goal: accelerating
    near = _plan(kerb_path, kerb_path.goal_s_m - 0.5, 0.5)
    assert near.s_stop_m == kerb_path.goal_s_m and near.stop_reason == 'goal'
    assert near.state == 'approach_goal'
    assert near.v_ref_mps[-1] == pytest.approx(0.0, abs=0.05)
    assert np.all(near.v_ref_mps <= math.sqrt(2.0 * PARAMS.comfort_decel_mps2 * 0.5) + 1e-9)


def test_inactive_goal_holds_the_car_where_it_stands(kerb_path):
    plan = _plan(kerb_path, 30.0, 0.0, goal_active=False)
    assert plan.stop_reason == 'hold' and plan.state == 'hold'
    assert plan.s_stop_m == pytest.approx(30.0)
    assert np.all(plan.v_ref_mps == 0.0)


def test_inactive_goal_while_moving_stops_at_comfortable_deceleration(kerb_path):
    speed = 6.0
    plan = _plan(kerb_path, 30.0, speed, goal_active=False)
    assert plan.stop_reason == 'hold'
    assert plan.s_stop_m == pytest.approx(
        30.0 + speed ** 2 / (2.0 * PARAMS.comfort_decel_mps2))
    assert plan.v_ref_mps[0] <= speed + 1e-9
    assert plan.v_ref_mps[-1] < 1.0
    assert np.all(np.diff(plan.v_ref_mps) <= 1e-9)


# -- stop lines -----------------------------------------------------------------------------

def test_stop_line_beyond_the_goal_is_ignored(kerb_path):
    plan = _plan(kerb_path, kerb_path.goal_s_m - 10.0, 5.0)
    assert plan.stop_reason == 'goal'


def test_approaching_a_stop_line_stops_with_the_front_bumper_before_it(turn_path):
    line_s = _stop_line_s(turn_path)
    plan = _plan(turn_path, 60.0, 10.0)
    assert plan.stop_reason == 'stop line'
    assert plan.s_stop_m == pytest.approx(line_s - EGO.front_m - PARAMS.stop_line_margin_m)
    # The front bumper stands before the line (base_link is front_m behind it).
    assert plan.s_stop_m + EGO.front_m < line_s
    assert plan.s_stop_m < turn_path.goal_s_m
    assert plan.state == 'stop_line'


def test_stop_line_is_served_after_the_standstill_wait_and_not_stopped_at_again(turn_path):
    line_s = _stop_line_s(turn_path)
    stop_at = line_s - EGO.front_m - PARAMS.stop_line_margin_m
    memory = bh.BehaviorMemory()
    first = _plan(turn_path, stop_at, 0.0, t_s=10.0, memory=memory)
    assert first.stop_reason == 'stop line' and first.state == 'stop_line'
    assert memory.stop_since_s == 10.0 and memory.served_stop_lines == []
    waiting = _plan(turn_path, stop_at, 0.0, t_s=10.0 + 0.5 * PARAMS.stop_line_wait_s,
                    memory=memory)
    assert waiting.stop_reason == 'stop line' and memory.served_stop_lines == []
    done = _plan(turn_path, stop_at, 0.0, t_s=10.0 + PARAMS.stop_line_wait_s + 0.01,
                 memory=memory)
    assert len(memory.served_stop_lines) == 1
    assert memory.served_stop_lines[0] == pytest.approx(STOP_LINE_XY, abs=0.1)
    assert done.stop_reason == 'goal' and done.s_stop_m == turn_path.goal_s_m
    assert done.v_ref_mps[-1] > 0.5  # it goes
    after = _plan(turn_path, stop_at + 0.5, 1.0, t_s=12.0, memory=memory)
    assert after.stop_reason == 'goal'


def test_rolling_through_a_stop_line_without_standing_still_does_not_serve_it(turn_path):
    line_s = _stop_line_s(turn_path)
    stop_at = line_s - EGO.front_m - PARAMS.stop_line_margin_m
    memory = bh.BehaviorMemory()
    for t_s in (10.0, 11.0, 12.0, 13.0):
        plan = _plan(turn_path, stop_at, 1.0, t_s=t_s, memory=memory)
        assert plan.stop_reason == 'stop line'
    assert memory.served_stop_lines == [] and memory.stop_since_s is None


@pytest.mark.parametrize('crossing', [
    _car(7, 150.0, 1.75, math.pi, vx=-8.0),           # oncoming, through the intersection
    _car(7, 121.75, -35.0, NORTH, vy=8.0),            # northbound from the right
    _car(7, 118.25, 40.0, -NORTH, vy=-8.0),           # southbound, crossing our left turn
], ids=['oncoming', 'from_the_right', 'southbound'])
def test_moving_vehicle_predicted_into_the_intersection_keeps_the_car_waiting(turn_path,
                                                                               crossing):
    line_s = _stop_line_s(turn_path)
    stop_at = line_s - EGO.front_m - PARAMS.stop_line_margin_m
    memory = bh.BehaviorMemory()
    for t_s in (10.0, 10.0 + PARAMS.stop_line_wait_s + 0.5, 10.0 + PARAMS.stop_line_wait_s + 3):
        plan = _plan(turn_path, stop_at, 0.0, [crossing], t_s=t_s, memory=memory)
    assert plan.stop_reason == 'stop line'
    assert plan.state == 'wait_gap'
    assert plan.s_stop_m == pytest.approx(stop_at)
    assert memory.served_stop_lines == []
    # The same vehicle 6 s further back (not there within gap_time_s) no longer blocks.
    far = list(crossing)
    far[2] -= 6.0 * crossing[5]
    far[3] -= 6.0 * crossing[6]
    gone = _plan(turn_path, stop_at, 0.0, [tuple(far)], t_s=20.0, memory=memory)
    assert gone.stop_reason == 'goal' and len(memory.served_stop_lines) == 1


def test_parked_car_beside_the_intersection_does_not_block_the_stop_line(turn_path):
    line_s = _stop_line_s(turn_path)
    stop_at = line_s - EGO.front_m - PARAMS.stop_line_margin_m
    memory = bh.BehaviorMemory()
    parked = [_car(3, 127.0, -1.75)]  # past the intersection on the road we leave
    _plan(turn_path, stop_at, 0.0, parked, t_s=10.0, memory=memory)
    plan = _plan(turn_path, stop_at, 0.0, parked, t_s=10.0 + PARAMS.stop_line_wait_s + 0.1,
                 memory=memory)
    assert plan.stop_reason == 'goal'
    assert len(memory.served_stop_lines) == 1


# -- crosswalks -----------------------------------------------------------------------------

def _crosswalk_start(path):
    s0, _, polygon = path.crosswalks[0]
    assert polygon[:, 0].min() == pytest.approx(113.0) and polygon[:, 0].max() == \
        pytest.approx(116.0)
    return s0


@pytest.mark.parametrize('pedestrian', [
    _pedestrian(5, 114.5, 2.5),                 # standing on the far half of the crosswalk
    _pedestrian(5, 114.5, -8.0, vy=1.2),        # walking towards it from the kerb
], ids=['on_it', 'entering'])
def test_pedestrian_on_or_entering_a_crosswalk_stops_the_car_before_it(turn_path, pedestrian):
    s0 = _crosswalk_start(turn_path)
    plan = _plan(turn_path, 60.0, 10.0, [pedestrian], memory=_served_memory())
    assert plan.stop_reason == 'crosswalk'
    assert plan.state == 'yield_crosswalk'
    assert plan.s_stop_m == pytest.approx(s0 - EGO.front_m - PARAMS.crosswalk_margin_m)
    assert plan.s_stop_m + EGO.front_m < s0


@pytest.mark.parametrize('pedestrian', [
    _pedestrian(5, 60.0, -8.0),                 # on the pavement mid-block
    _pedestrian(5, 114.5, -30.0, vy=1.2),       # walking towards it, but > horizon away
], ids=['mid_block', 'far_from_the_crosswalk'])
def test_pedestrian_away_from_the_crosswalk_does_not_stop_the_car(turn_path, pedestrian):
    plan = _plan(turn_path, 60.0, 10.0, [pedestrian], memory=_served_memory())
    assert plan.stop_reason == 'goal'
    assert plan.state != 'yield_crosswalk'


def test_crosswalk_already_entered_is_not_yielded_at(turn_path):
    s0 = _crosswalk_start(turn_path)
    on_it = s0 - EGO.front_m + 1.0  # front bumper 1 m onto the crosswalk
    # Beside our lane on the first crosswalk only (clear of the one on the road we turn into).
    plan = _plan(turn_path, on_it, 3.0, [_pedestrian(5, 113.5, 1.0)], memory=_served_memory())
    assert plan.stop_reason != 'crosswalk'


# -- vehicles in and beside the path ------------------------------------------------------

def test_moving_lead_car_is_followed_with_a_stop_point_behind_it(kerb_path):
    ego_s, lead_x, lead_v = 20.0, 50.0, 8.0
    plan = _plan(kerb_path, ego_s, 10.0, [_car(11, lead_x, -1.75, vx=lead_v)])
    lead_s = _station(kerb_path, (lead_x, -1.75))
    rear_s = lead_s - 2.25
    assert plan.state == 'follow'
    assert plan.stop_reason == 'lead 11'
    expected = (rear_s + lead_v ** 2 / (2.0 * PARAMS.lead_brake_mps2) - PARAMS.min_gap_m
                - EGO.front_m)
    assert plan.s_stop_m == pytest.approx(expected, abs=0.05)
    assert plan.s_stop_m + EGO.front_m < rear_s + lead_v ** 2 / (2 * PARAMS.lead_brake_mps2)
    assert plan.obstacles.shape == (1, STEPS + 1, 4)
    assert plan.passing_ids == ()


def test_parked_car_in_lane_is_passed_through_the_free_oncoming_lane(kerb_path):
    ego_s, car_x = 10.0, 50.0
    plain = _plan(kerb_path, ego_s, 8.0)
    plan = _plan(kerb_path, ego_s, 8.0, [_car(21, car_x, -1.75)])
    assert plan.state == 'pass'
    assert plan.passing_ids == (21,)
    assert plan.stop_reason == 'goal' and plan.s_stop_m == kerb_path.goal_s_m
    # Corridor widened into the oncoming lane far enough for the body beside the car.
    corridor = 0.5 * EGO.width_m + 0.9 + PARAMS.lateral_margin_m
    assert np.all(plan.d_max_m > plain.d_max_m)
    assert np.all(plan.d_max_m >= corridor)
    assert np.all(plan.d_max_m <= PARAMS.pass_max_offset_m + 0.3 + 1e-9)
    # Lateral reference to the left around the car's station, on the lane elsewhere.
    s_pred = ego_s + np.arange(STEPS + 1) * STEP_S * 8.0
    car_s = _station(kerb_path, (car_x, -1.75))
    near = np.abs(s_pred - car_s) < 4.0
    assert near.any() and np.all(plan.d_ref_m[near] >= corridor)
    assert np.all(plain.d_ref_m == 0.0)
    # The car stays an MPC clearance constraint.
    assert plan.obstacles.shape[0] == 1
    assert plan.obstacles[0, 0, 0] == pytest.approx(car_s - EGO.centre_offset_m, abs=0.05)


def test_pass_corridor_stays_open_while_the_car_is_beside_the_parked_car(kerb_path):
    car_x = 50.0
    car_s = _station(kerb_path, (car_x, -1.75))
    corridor = 0.5 * EGO.width_m + 0.9 + PARAMS.lateral_margin_m
    # base_link level with the parked car's rear bumper, already out in the oncoming lane.
    plan = _plan(kerb_path, car_s - 2.25, 5.0, [_car(21, car_x, -1.75)], ego_d=corridor + 0.1)
    assert plan.passing_ids == (21,)
    assert plan.d_max_m[0] >= corridor
    assert plan.d_ref_m[0] >= corridor
    # Level with its front bumper: still beside it.
    beside = _plan(kerb_path, car_s + 2.25, 5.0, [_car(21, car_x, -1.75)], ego_d=corridor + 0.1)
    assert beside.passing_ids == (21,) and beside.d_ref_m[0] >= corridor


def test_pass_ends_once_the_parked_car_is_behind(kerb_path):
    car_x = 50.0
    car_s = _station(kerb_path, (car_x, -1.75))
    plan = _plan(kerb_path, car_s + 15.0, 5.0, [_car(21, car_x, -1.75)], ego_d=1.0)
    assert plan.passing_ids == ()
    assert plan.state != 'pass'
    assert np.all(plan.d_ref_m == 0.0)
    assert plan.stop_reason == 'goal'


def test_parked_car_with_oncoming_traffic_close_is_stopped_behind(kerb_path):
    ego_s, car_x = 10.0, 50.0
    objects = [_car(21, car_x, -1.75), _car(22, 75.0, 1.75, math.pi, vx=-8.0)]
    plan = _plan(kerb_path, ego_s, 8.0, objects)
    car_s = _station(kerb_path, (car_x, -1.75))
    assert plan.passing_ids == ()
    assert plan.stop_reason == 'object 21'
    assert plan.state == 'stop_for_obstacle'
    assert plan.s_stop_m == pytest.approx(car_s - 2.25 - PARAMS.min_gap_m - EGO.front_m,
                                          abs=0.05)
    assert plan.d_ref_m.max() == 0.0
    assert plan.obstacles.shape[0] >= 1
    assert plan.obstacles[0, 0, 0] == pytest.approx(car_s - EGO.centre_offset_m, abs=0.05)


def test_parked_car_with_oncoming_traffic_far_away_is_passed(kerb_path):
    objects = [_car(21, 50.0, -1.75), _car(22, 400.0, 1.75, math.pi, vx=-8.0)]
    plan = _plan(kerb_path, 10.0, 8.0, objects)
    assert plan.passing_ids == (21,)


def test_objects_beside_the_path_do_not_stop_the_car(kerb_path):
    objects = [
        _car(31, 40.0, 1.75, math.pi, vx=-8.0),       # oncoming, in its own lane
        _car(32, 60.0, 1.75, math.pi),                # parked in the oncoming lane
        _car(33, 70.0, 118.25, math.pi, vx=-8.0),     # on the parallel road at y = 120
        _pedestrian(34, 45.0, -6.0, vx=1.2),          # walking along the pavement
    ]
    plan = _plan(kerb_path, 10.0, 8.0, objects)
    assert plan.stop_reason == 'goal' and plan.s_stop_m == kerb_path.goal_s_m
    assert plan.state == 'cruise'
    assert plan.passing_ids == ()
    assert np.all(plan.d_ref_m == 0.0)


def test_car_crossing_into_the_path_ahead_stops_the_car_before_it(kerb_path):
    # A car leaving a driveway at x = 45 northwards into our lane within the horizon.
    plan = _plan(kerb_path, 10.0, 8.0, [_car(41, 45.0, -8.0, NORTH, vy=3.0)])
    assert plan.stop_reason == 'object 41'
    assert plan.s_stop_m < _station(kerb_path, (45.0, -1.75)) - EGO.front_m


def test_obstacle_slots_are_capped_at_max_objects(kerb_path):
    # Parked in the oncoming lane, all within the planning horizon.
    rows = [_car(100 + i, 12.0 + 3.0 * i, 1.75, math.pi) for i in range(MAX_OBJECTS + 4)]
    plan = _plan(kerb_path, 10.0, 8.0, rows)
    assert plan.obstacles.shape == (MAX_OBJECTS, STEPS + 1, 4)
    assert np.all(np.isfinite(plan.obstacles))


# -- profiles -------------------------------------------------------------------------------

def test_speed_limit_profile_is_the_map_limit_on_straights_and_lower_in_the_turn(turn_path):
    limit = bh.speed_limit_profile(turn_path, PARAMS)
    assert limit.shape == turn_path.s_m.shape
    assert np.all(limit <= turn_path.speed_limit_mps + 1e-9)
    assert limit[0] == pytest.approx(40.0 / 3.6)
    kappa = np.abs(turn_path.kappa_1pm)
    in_turn = kappa > 0.5 * kappa.max()
    assert kappa.max() > 0.05
    assert np.all(limit[in_turn] <= np.sqrt(PARAMS.curve_lat_accel_mps2 / kappa[in_turn])
                  + 1e-9)
    assert np.all(limit >= PARAMS.min_speed_limit_mps - 1e-9)
    # It decelerates into the turn no harder than comfort_decel.
    ds = np.diff(turn_path.s_m)
    assert np.all(limit[:-1] ** 2 - limit[1:] ** 2
                  <= 2.0 * PARAMS.comfort_decel_mps2 * ds + 1e-6)


def test_time_speed_reference_accelerates_comfortably_and_ends_at_rest_at_the_stop():
    path_s = np.linspace(0.0, 200.0, 401)
    limit = np.full_like(path_s, 10.0)
    v_ref = bh.time_speed_reference(0.0, 0.0, path_s, limit, math.inf, 40, 0.1, PARAMS)
    assert v_ref[0] == 0.0
    assert np.all(np.diff(v_ref) <= PARAMS.comfort_accel_mps2 * 0.1 + 1e-9)
    assert v_ref[-1] == pytest.approx(PARAMS.comfort_accel_mps2 * 4.0)
    stopping = bh.time_speed_reference(50.0, 10.0, path_s, limit, 70.0, 80, 0.1, PARAMS)
    s = 50.0 + np.concatenate([[0.0], np.cumsum(stopping[:-1] * 0.1)])
    cap = np.sqrt(2.0 * PARAMS.comfort_decel_mps2 * np.maximum(0.0, 70.0 - s))
    assert np.all(stopping <= cap + 1e-9)
    assert stopping[-1] < 0.3
    assert s[-1] == pytest.approx(70.0, abs=0.05)


# -- inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize('field', ['ego_s_m', 'ego_d_m', 'ego_speed_mps', 't_s'])
@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_non_finite_ego_input_raises_behavior_input_error(kerb_path, field, bad):
    values = {'ego_s_m': 10.0, 'ego_d_m': 0.0, 'ego_speed_mps': 5.0, 't_s': 1.0}
    values[field] = bad
    with pytest.raises(bh.BehaviorInputError, match=field):
        bh.plan_behavior(kerb_path, values['ego_s_m'], values['ego_d_m'],
                         values['ego_speed_mps'], values['t_s'], bh.Objects.empty(PRED_T), EGO,
                         bh.BehaviorMemory(), PARAMS, steps=STEPS, step_s=STEP_S,
                         goal_active=True, max_objects=MAX_OBJECTS)


@pytest.mark.parametrize('field', ['xy_m', 'yaw_rad', 'velocity_mps', 'length_m', 'width_m'])
def test_constant_velocity_objects_with_nan_raise_behavior_input_error(field):
    values = {'xy_m': [[1.0, 2.0]], 'yaw_rad': [0.0], 'velocity_mps': [[1.0, 0.0]],
              'length_m': [4.5], 'width_m': [1.8]}
    values[field] = np.where(np.ones_like(values[field], bool), math.nan, 0.0)
    with pytest.raises(bh.BehaviorInputError, match=field):
        bh.constant_velocity_objects([1], [CAR], values['xy_m'], values['yaw_rad'],
                                     values['velocity_mps'], values['length_m'],
                                     values['width_m'], PRED_T)


def test_constant_velocity_objects_hold_their_velocity():
    objects = bh.constant_velocity_objects([4, 5], [CAR, PEDESTRIAN], [[1.0, 2.0], [0.0, 0.0]],
                                           [0.0, NORTH], [[2.0, 0.0], [0.0, -1.0]], [4.5, 0.6],
                                           [1.8, 0.6], PRED_T)
    assert len(objects) == 2
    assert objects.pred_xy_m.shape == (2, len(PRED_T), 2)
    assert objects.pred_xy_m[0, -1] == pytest.approx([1.0 + 2.0 * PRED_T[-1], 2.0])
    assert objects.pred_xy_m[1, 2] == pytest.approx([0.0, -PRED_T[2]])
    assert objects.select(np.array([False, True])).ids.tolist() == [5]


def test_empty_objects_plan_without_obstacles(kerb_path):
    plan = _plan(kerb_path, 10.0, 5.0, bh.Objects.empty(PRED_T))
    assert len(bh.Objects.empty(PRED_T)) == 0
    assert plan.obstacles.shape == (0, STEPS + 1, 4)
    assert plan.stop_reason == 'goal'
    for array in (plan.v_ref_mps, plan.d_ref_m, plan.d_min_m, plan.d_max_m):
        assert array.shape == (STEPS + 1,) and np.all(np.isfinite(array))
    assert np.all(plan.d_min_m <= plan.d_max_m)
    assert np.all(plan.d_min_m < 0.0) and np.all(plan.d_max_m > 0.0)


def test_a_car_that_has_only_just_stopped_is_not_passed_but_waited_behind(kerb_path):
    parked = [_car(5, 50.0, -1.75)]
    memory = bh.BehaviorMemory()
    first = _plan(kerb_path, 20.0, 3.0, parked, t_s=10.0, memory=memory)
    assert first.stop_reason == 'object 5' and first.passing_ids == ()
    later = _plan(kerb_path, 20.0, 0.0, parked, t_s=10.0 + PARAMS.pass_min_stopped_s,
                  memory=memory)
    assert later.passing_ids == (5,)


def test_a_car_queued_before_a_stop_line_is_never_passed(turn_path):
    line_s = turn_path.stop_lines_s[0]
    queued_xy = turn_path.sample(line_s - 6.0)['xy_m']
    plan = _plan(turn_path, line_s - 40.0, 3.0, [_car(6, queued_xy[0], queued_xy[1])])
    assert plan.passing_ids == () and plan.stop_reason == 'object 6'


def test_a_parked_car_whose_track_wobbles_stays_passed_and_predicted_in_place(kerb_path):
    # The ONNX detector's box of a parked van grows and shrinks with the view: its track reads
    # up to ~1 m/s in random directions. Once it has stood pass_min_stopped_s it keeps standing.
    car_x = 50.0
    car_s = _station(kerb_path, (car_x, -1.75))
    corridor = 0.5 * EGO.width_m + 0.9 + PARAMS.lateral_margin_m
    memory = bh.BehaviorMemory()
    _plan(kerb_path, 10.0, 3.0, [_car(21, car_x, -1.75)], t_s=0.0, memory=memory)
    wobble = [_car(21, car_x, -1.75, vx=-0.8, vy=0.6)]  # 1.0 m/s, below static_release_mps
    plan = _plan(kerb_path, car_s - 2.25, 3.0, wobble, t_s=PARAMS.pass_min_stopped_s + 1.0,
                 memory=memory, ego_d=corridor + 0.1)
    assert plan.passing_ids == (21,) and plan.stop_reason == 'goal'
    assert plan.d_ref_m[0] >= corridor
    # The MPC keeps clear of where it stands, not of where the wobble would carry it.
    assert np.ptp(plan.obstacles[0, :, 0]) == 0.0 and np.ptp(plan.obstacles[0, :, 1]) == 0.0
    assert plan.obstacles[0, 0, 1] == pytest.approx(0.0, abs=0.05)


def test_a_car_that_only_just_stopped_is_released_by_a_small_speed(kerb_path):
    memory = bh.BehaviorMemory()
    _plan(kerb_path, 20.0, 3.0, [_car(5, 50.0, -1.75)], t_s=10.0, memory=memory)
    assert 5 in memory.stopped_since_s
    # Not yet settled: 1 m/s means it moves again (a lead creeping forward).
    plan = _plan(kerb_path, 20.0, 3.0, [_car(5, 50.0, -1.75, vx=1.0)], t_s=11.0, memory=memory)
    assert 5 not in memory.stopped_since_s
    assert plan.stop_reason == 'lead 5'
    assert plan.obstacles[0, -1, 0] > plan.obstacles[0, 0, 0] + 3.0  # predicted moving on


def test_a_parked_car_that_drives_off_is_released_and_ended_tracks_are_forgotten(kerb_path):
    memory = bh.BehaviorMemory()
    _plan(kerb_path, 10.0, 3.0, [_car(21, 50.0, -1.75), _car(22, 70.0, -1.75)], t_s=0.0,
          memory=memory)
    drives_off = [_car(21, 50.0, -1.75, vx=PARAMS.static_release_mps + 0.5)]
    plan = _plan(kerb_path, 10.0, 3.0, drives_off, t_s=10.0, memory=memory)
    assert memory.stopped_since_s == {}
    assert plan.passing_ids == () and plan.stop_reason == 'lead 21'


def test_a_slow_vehicle_in_the_oncoming_lane_does_not_call_a_pass_off(kerb_path):
    # A duplicate box of the parked car, heading flipped, "driving" 1.15 m/s towards us.
    objects = [_car(21, 50.0, -1.75), _car(22, 55.0, -0.85, math.pi, vx=-1.15)]
    plan = _plan(kerb_path, 10.0, 8.0, objects)
    assert 21 in plan.passing_ids
    # Real oncoming traffic does.
    traffic = [_car(21, 50.0, -1.75), _car(22, 75.0, 1.75, math.pi, vx=-3.0)]
    assert _plan(kerb_path, 10.0, 8.0, traffic).passing_ids == ()


def test_a_corridor_closing_under_the_car_closes_at_a_comfortable_lateral_rate(kerb_path):
    # Out in the oncoming lane (a pass just called off): the bound starts at the car and
    # reaches the lane bound no faster than corridor_close_mps.
    plain = _plan(kerb_path, 10.0, 5.0)
    out = _plan(kerb_path, 10.0, 5.0, ego_d=2.5)
    t = np.arange(STEPS + 1) * STEP_S
    assert out.d_max_m[0] == pytest.approx(2.5)
    assert np.allclose(out.d_max_m, np.maximum(plain.d_max_m, 2.5 - PARAMS.corridor_close_mps * t))
    assert np.array_equal(out.d_min_m, plain.d_min_m)
    assert out.d_ref_m.max() == 0.0
