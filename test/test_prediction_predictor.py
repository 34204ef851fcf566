"""Prediction core: lane modes on a grid town, stop lines, leaders, lane changes, pedestrians at
crosswalks, CTRV fallbacks, bad input (NaN, duplicates, empty) and parameter checks."""

import math

import numpy as np
import pytest

from robotaxi_stack.common.params import ParameterError
from robotaxi_stack.prediction.predictor import (
    BICYCLE, CAR, MODE_CONSTANT_VELOCITY, MODE_CROSS_THEN_LEFT, MODE_CROSS_THEN_RIGHT,
    MODE_CTRV, MODE_LANE, MODE_STAND, MODE_START_CROSSING, MODE_TURN_ONTO_CROSSWALK,
    PEDESTRIAN, PredictionInputError, Predictor, PredictorParams)
from robotaxi_stack.sim import maps

# grid_town defaults: block 120 m, one 3.5 m lane per direction; the eastbound lane of the road
# y = 0 is centred on y = -1.75, its stop line before (120, 0) at x = 112.5.
EAST_LANE_Y = -1.75
STOP_LINE_X = 112.5


@pytest.fixture(scope='module')
def town():
    return maps.generate_grid_town(maps.GridTownParams())


@pytest.fixture
def predictor(town):
    return Predictor(town)


def _row(object_id, label, x, y, yaw, speed, length=4.6, width=1.9):
    return [object_id, label, x, y, yaw, speed, speed * np.cos(yaw), speed * np.sin(yaw),
            length, width]


def _top(prediction):
    return prediction.paths[int(np.argmax(prediction.confidences))]


def test_straight_lane_top_mode_follows_the_lane(predictor):
    out = predictor.predict(np.array([_row(1, CAR, 20.0, EAST_LANE_Y + 0.3, 0.05, 8.0)]))
    (pred,) = out.objects
    assert pred.object_id == 1 and pred.paths.shape[1:] == (16, 3)
    assert np.allclose(out.times_s, np.arange(1, 17) * 0.5)
    assert pred.confidences.sum() == pytest.approx(1.0)
    assert np.all(np.diff(pred.confidences) <= 1e-12)  # most confident first
    top = _top(pred)
    # Converges onto the lane centre and keeps about its speed (IDM already eases off a
    # little for the stop line 90 m ahead).
    assert top[-1, 1] == pytest.approx(EAST_LANE_Y, abs=0.05)
    assert top[0, 0] == pytest.approx(24.0, abs=0.3)
    assert 42.5 < top[5, 0] <= 44.0
    assert np.all(np.abs(top[:, 2]) < 0.1)
    assert set(pred.kinds) == {MODE_LANE}


def test_intersection_approach_gives_straight_left_and_right(town, predictor):
    # Past the stop line after its wait: the car goes on into the intersection.
    out = predictor.predict(np.array([_row(1, CAR, 112.0, EAST_LANE_Y, 0.0, 3.0)]))
    (pred,) = out.objects
    turns = set()
    for ids, path in zip(pred.lanelet_ids, pred.paths):
        kinds = [town.lanelets[i].turn_direction for i in ids]
        turn = next(k for k in kinds if k)
        turns.add(turn)
        end = path[-1]
        if turn == 'left':
            assert end[1] > 5.0 and end[0] == pytest.approx(121.75, abs=0.5)  # northbound
        elif turn == 'right':
            assert end[1] < -5.0 and end[0] == pytest.approx(118.25, abs=0.5)  # southbound
        else:
            assert end[1] == pytest.approx(EAST_LANE_Y, abs=0.1) and end[0] > 122.0
    assert turns == {'straight', 'left', 'right'}
    assert len(pred.confidences) == 3
    assert pred.confidences.min() > 0.2
    # Much too fast for the turns: going straight on is by far the most likely.
    (fast,) = Predictor(town).predict(np.array([_row(1, CAR, 112.0, EAST_LANE_Y, 0.0,
                                                      12.0)])).objects
    assert 'straight' in [town.lanelets[i].turn_direction
                          for i in fast.lanelet_ids[int(np.argmax(fast.confidences))]]
    assert fast.confidences.max() > 0.9


def test_vehicle_stops_at_the_stop_line_then_waits(predictor):
    out = predictor.predict(np.array([_row(1, CAR, 92.0, EAST_LANE_Y, 0.0, 6.0)]))
    top = _top(out.objects[0])
    front_x = top[:, 0] + 2.3
    assert front_x.max() <= STOP_LINE_X + 0.05
    standing = np.flatnonzero(np.abs(front_x - STOP_LINE_X) < 0.3)
    assert len(standing) >= 3  # stands there for >= 1 s of the horizon
    assert np.all(np.diff(top[:, 0]) >= -1e-9)


def test_leader_limits_the_followers_profile(town):
    alone = Predictor(town).predict(np.array([_row(1, CAR, 10.0, EAST_LANE_Y, 0.0, 10.0)]))
    rows = np.array([_row(1, CAR, 10.0, EAST_LANE_Y, 0.0, 10.0),
                     _row(2, CAR, 30.0, EAST_LANE_Y, 0.0, 3.0)])
    both = Predictor(town).predict(rows)
    follower, leader = both.objects
    free_x = _top(alone.objects[0])[:, 0]
    follow_x = _top(follower)[:, 0]
    lead_x = _top(leader)[:, 0]
    assert follow_x[-1] < free_x[-1] - 20.0
    # Never closer than the two half lengths (no overtaking, no overlap).
    assert np.all(lead_x - follow_x >= 4.6 - 1e-6)


def test_lane_change_mode_when_drifting_towards_the_adjacent_lane():
    town = maps.generate_grid_town(maps.GridTownParams(lanes_per_direction=2))
    predictor = Predictor(town)
    # Eastbound lanes of y = 0: y = -1.75 (inner) and y = -5.25 (outer). The car in the outer
    # lane drifts left at 0.9 m/s.
    yaw = math.atan2(0.9, 9.0)
    row = [1, CAR, 40.0, -4.6, yaw, math.hypot(9.0, 0.9), 9.0, 0.9, 4.6, 1.9]
    (pred,) = predictor.predict(np.array([row])).objects
    assert _top(pred)[-1, 1] == pytest.approx(-1.75, abs=0.1)
    keep = [path for path in pred.paths if abs(path[-1, 1] + 5.25) < 0.1]
    assert keep, 'keeping the lane stays a mode'
    # Without the drift the car keeps its lane.
    row = _row(2, CAR, 40.0, -5.25, 0.0, 9.0)
    (pred,) = predictor.predict(np.array([row])).objects
    assert _top(pred)[-1, 1] == pytest.approx(-5.25, abs=0.1)


def test_yaw_rate_history_picks_the_turn(town):
    predictor = Predictor(town)
    # A car on the left-turn arc at (120, 0): centre (112.5, 7.5), radius 9.25 m.
    radius, v = 9.25, 4.0
    for k in range(6):
        angle = -math.pi / 2 + 0.06 + k * 0.1 * v / radius
        x = 112.5 + radius * math.cos(angle)
        y = 7.5 + radius * math.sin(angle)
        yaw = angle + math.pi / 2
        out = predictor.predict(np.array([_row(1, CAR, x, y, yaw, v)]), stamp_s=k * 0.1)
    pred = out.objects[0]
    top_ids = pred.lanelet_ids[int(np.argmax(pred.confidences))]
    assert 'left' in [town.lanelets[i].turn_direction for i in top_ids]
    assert pred.confidences.max() > 0.8


def test_pedestrian_walking_to_a_crosswalk_gets_a_crossing_mode(predictor):
    # On the sidewalk south of the road y = 0 (y = -5), walking east towards the crosswalk
    # of the west arm of (120, 0) (centre x = 114.5).
    row = _row(7, PEDESTRIAN, 111.0, -5.0, 0.0, 1.4, 0.5, 0.6)
    (pred,) = predictor.predict(np.array([row])).objects
    assert MODE_CONSTANT_VELOCITY in pred.kinds and MODE_TURN_ONTO_CROSSWALK in pred.kinds
    crossing = pred.paths[pred.kinds.index(MODE_TURN_ONTO_CROSSWALK)]
    assert crossing[-1, 0] == pytest.approx(114.5, abs=0.1)
    assert crossing[-1, 1] > 0.0  # across the road
    assert pred.confidences.sum() == pytest.approx(1.0)


def test_pedestrian_on_a_crosswalk_turns_either_way_after_it(predictor):
    row = _row(7, PEDESTRIAN, 114.5, -1.0, math.pi / 2, 1.4, 0.5, 0.6)
    (pred,) = predictor.predict(np.array([row])).objects
    assert {MODE_CONSTANT_VELOCITY, MODE_CROSS_THEN_LEFT, MODE_CROSS_THEN_RIGHT} <= \
        set(pred.kinds)
    left = pred.paths[pred.kinds.index(MODE_CROSS_THEN_LEFT)]
    right = pred.paths[pred.kinds.index(MODE_CROSS_THEN_RIGHT)]
    assert left[-1, 0] < 110.0 and right[-1, 0] > 119.0
    assert left[-1, 1] == pytest.approx(5.0, abs=0.1)


def test_standing_pedestrian_at_a_crosswalk_edge_may_start_crossing(predictor):
    at_edge = _row(7, PEDESTRIAN, 114.5, -4.5, 0.0, 0.0, 0.5, 0.6)
    elsewhere = _row(8, PEDESTRIAN, 60.0, -5.0, 0.0, 0.0, 0.5, 0.6)
    pred, other = predictor.predict(np.array([at_edge, elsewhere])).objects
    assert set(pred.kinds) == {MODE_STAND, MODE_START_CROSSING}
    start = pred.paths[pred.kinds.index(MODE_START_CROSSING)]
    assert start[-1, 1] > 3.5
    assert pred.confidences[pred.kinds.index(MODE_START_CROSSING)] == pytest.approx(0.3)
    assert other.kinds == (MODE_STAND,)
    assert np.allclose(other.paths[:, :, :2], [60.0, -5.0])


def test_off_map_and_reversing_vehicles_get_one_ctrv_mode(predictor):
    rows = np.array([_row(1, CAR, 60.0, 40.0, 0.3, 5.0),
                     _row(2, CAR, 60.0, EAST_LANE_Y, 0.0, -2.0)])
    out = predictor.predict(rows)
    off_map, reversing = out.objects
    assert off_map.kinds == (MODE_CTRV,) and off_map.confidences.tolist() == [1.0]
    assert off_map.paths[-1, -1, 0] == pytest.approx(60.0 + 40.0 * math.cos(0.3))
    assert reversing.kinds == (MODE_CTRV,)
    assert reversing.paths[0, -1, 0] == pytest.approx(44.0)
    assert out.off_lane == 2


def test_bicycle_on_the_road_follows_the_lane_on_the_sidewalk_does_not(predictor):
    on_road = _row(1, BICYCLE, 40.0, EAST_LANE_Y - 1.0, 0.0, 4.0, 1.8, 0.6)
    sidewalk = _row(2, BICYCLE, 40.0, -5.0, 0.0, 4.0, 1.8, 0.6)
    road, walk = predictor.predict(np.array([on_road, sidewalk])).objects
    assert set(road.kinds) == {MODE_LANE}
    assert walk.kinds[0] == MODE_CONSTANT_VELOCITY
    assert _top(walk)[-1, 1] == pytest.approx(-5.0)


def test_bad_rows_are_dropped_and_counted(predictor):
    rows = np.array([_row(1, CAR, 20.0, EAST_LANE_Y, 0.0, 8.0),
                     _row(2, CAR, np.nan, EAST_LANE_Y, 0.0, 8.0),
                     _row(3, CAR, 40.0, EAST_LANE_Y, 0.0, 8.0),
                     _row(1, CAR, 60.0, EAST_LANE_Y, 0.0, 8.0),
                     _row(4, CAR, 80.0, EAST_LANE_Y, 0.0, 8.0, length=0.0)])
    rows[2, 4] = np.inf
    out = predictor.predict(rows)
    assert [p.object_id for p in out.objects] == [1]
    assert out.objects[0].paths[0, 0, 0] < 30.0  # the first row with id 1 was kept
    assert out.dropped_nonfinite == 3 and out.dropped_duplicate == 1
    for pred in out.objects:
        assert np.all(np.isfinite(pred.paths))


def test_empty_input_and_wrong_shape(predictor):
    for empty in ([], np.zeros((0, 10))):
        out = predictor.predict(empty)
        assert out.objects == [] and out.dropped_nonfinite == 0
    with pytest.raises(PredictionInputError, match=r'\(N, 10\)'):
        predictor.predict(np.zeros((2, 7)))


def test_stamps_that_go_back_do_not_update_the_history(predictor):
    row = np.array([_row(1, CAR, 20.0, EAST_LANE_Y, 0.0, 8.0)])
    assert not predictor.predict(row, 1.0).stamp_rejected
    assert predictor.predict(row, 0.5).stamp_rejected
    assert predictor.predict(row, float('nan')).stamp_rejected
    assert not predictor.predict(row, 1.1).stamp_rejected


def test_many_objects_every_path_finite_and_normalised(town):
    rng = np.random.default_rng(4)
    rows = []
    for k in range(120):
        label = int(rng.choice([CAR, PEDESTRIAN, BICYCLE]))
        rows.append(_row(k, label, rng.uniform(-40, 400), rng.uniform(-40, 280),
                         rng.uniform(-math.pi, math.pi), rng.uniform(0, 12)))
    out = Predictor(town).predict(np.array(rows))
    assert len(out.objects) == 120
    for pred in out.objects:
        assert np.all(np.isfinite(pred.paths))
        assert pred.confidences.sum() == pytest.approx(1.0)
        assert 1 <= len(pred.confidences) <= PredictorParams().max_modes


def test_params_are_checked():
    with pytest.raises(ParameterError, match='horizon_s'):
        PredictorParams(horizon_s=8.0, time_step_s=0.3)
    with pytest.raises(ParameterError, match='max_decel_mps2'):
        PredictorParams(max_decel_mps2=1.0, comfort_decel_mps2=2.0)


def test_a_lone_object_near_but_not_on_a_lane_gets_a_fallback_mode(predictor):
    """Regression: an object whose grid cells hold lane segments, none within the candidate
    radius (a building cluster beside the road), crashed the lane matching."""
    for y in np.arange(-14.0, 14.0, 0.25):
        out = predictor.predict(np.array([_row(7, CAR, 60.0, float(y), 0.0, 0.0)]))
        assert len(out.objects) == 1
        assert out.objects[0].confidences.sum() == pytest.approx(1.0)


def test_unknown_objects_wholly_off_the_road_are_dropped(town):
    """A wall cluster with a spurious speed goes; debris on the road and an unknown object
    reaching onto the road stay; a classified pedestrian on the sidewalk stays."""
    rows = np.array([
        _row(1, 0, 60.0, -9.0, 0.0, 20.0, length=0.3, width=0.3),     # wall, "20 m/s"
        _row(2, 0, 60.0, EAST_LANE_Y, 0.0, 0.0, length=0.5, width=0.5),  # debris in the lane
        _row(3, 0, 60.0, -4.0, 0.0, 0.0, length=1.0, width=1.5),      # reaches onto the road
        _row(4, 6, 60.0, -5.0, 0.0, 0.0, length=0.6, width=0.6)])      # pedestrian, sidewalk
    result = Predictor(town).predict(rows)
    assert [p.object_id for p in result.objects] == [2, 3, 4]
    assert result.dropped_offroad_unknown == 1
    kept = Predictor(town, PredictorParams(drop_offroad_unknown=False)).predict(rows)
    assert [p.object_id for p in kept.objects] == [1, 2, 3, 4]
    assert kept.dropped_offroad_unknown == 0
