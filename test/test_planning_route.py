"""Tests of robotaxi_stack.planning.route on generated grid towns (ARCHITECTURE.md section 6):
route choice and length, reference path geometry, bounds, stop lines, crosswalks, the
extension past the goal, lane changes, rerouting, errors and kerbside snapping."""

import math

import numpy as np
import pytest

from robotaxi_stack.sim.maps import (
    GridTownParams, MapError, OffMapError, RouteNotFoundError, generate_grid_town,
    nearest_lanelet, shortest_route, successors)
from robotaxi_stack.planning.route import (
    ReferencePath, Route, build_reference_path, plan_route, route_remaining_m,
    snap_to_kerbside)

NORTH = math.pi / 2.0
# Grid-point (120, 0) turn arcs (defaults): eastbound -> northbound turns left round
# (112.5, 7.5) with radius 9.25 m; eastbound -> southbound turns right round (112.5, -7.5)
# with radius 5.75 m.
LEFT_CENTRE, LEFT_RADIUS = np.array([112.5, 7.5]), 9.25
RIGHT_CENTRE, RIGHT_RADIUS = np.array([112.5, -7.5]), 5.75


@pytest.fixture(scope='module')
def town():
    return generate_grid_town(GridTownParams(blocks_x=3, blocks_y=2, block_m=120.0))


@pytest.fixture(scope='module')
def town_two_lanes():
    return generate_grid_town(GridTownParams(blocks_x=2, blocks_y=1, block_m=120.0,
                                             lanes_per_direction=2))


def _path(town, start, goal, goal_yaw=None, **kwargs):
    route = plan_route(town, start[:2], start[2], goal, goal_yaw)
    return route, build_reference_path(town, route, start[:2], start[2], goal, **kwargs)


def test_straight_route_on_one_lanelet_measures_from_the_start_foot_point(town):
    route = plan_route(town, (10.0, -1.6), 0.0, (90.0, -1.75))
    assert isinstance(route, Route) and len(route.lanelet_ids) == 1
    assert route.length_m == pytest.approx(80.0)
    assert route.start_arc_m == pytest.approx(2.5) and route.goal_arc_m == pytest.approx(82.5)


def test_straight_route_through_two_intersections_is_the_straight_distance(town):
    route = plan_route(town, (10.0, -1.75), 0.0, (300.0, -1.75))
    assert route.length_m == pytest.approx(290.0)
    turns = [town.lanelets[i].turn_direction for i in route.lanelet_ids]
    assert turns == ['', 'straight', '', 'straight', '']


def test_left_turn_route_matches_lanelet2_shortest_route(town):
    route = plan_route(town, (10.0, -1.75), 0.0, (121.75, 80.0), NORTH)
    assert list(route.lanelet_ids) == shortest_route(town, (10.0, -1.75), 0.0,
                                                     (121.75, 80.0), NORTH)
    assert [town.lanelets[i].turn_direction for i in route.lanelet_ids] == ['', 'left', '']
    # 102.5 m east, a quarter circle of 9.25 m (its 5-degree chords), 72.5 m north.
    assert route.length_m == pytest.approx(102.5 + LEFT_RADIUS * math.pi / 2 + 72.5, abs=0.01)


def test_reference_path_runs_on_lane_centres_through_a_left_turn(town):
    route, path = _path(town, (10.0, -1.6, 0.0), (121.75, 80.0), NORTH)
    assert isinstance(path, ReferencePath)
    assert path.s_m[0] == 0.0
    np.testing.assert_allclose(path.xy_m[0], [10.0, -1.75])  # the start's foot point
    steps = np.linalg.norm(np.diff(path.xy_m, axis=0), axis=1)
    assert steps.max() <= 0.5 + 1e-9
    np.testing.assert_allclose(np.diff(path.s_m), path.s_m[1], rtol=1e-9)
    x, y = path.xy_m.T
    east = x <= 112.5
    np.testing.assert_allclose(y[east], -1.75, atol=1e-9)
    north = y >= 7.5
    np.testing.assert_allclose(x[north], 121.75, atol=1e-9)
    turn = ~east & ~north
    assert turn.sum() > 20
    radius = np.linalg.norm(path.xy_m[turn] - LEFT_CENTRE, axis=1)
    np.testing.assert_allclose(radius, LEFT_RADIUS, atol=0.01)
    assert set(path.lanelet_id.tolist()) == set(route.lanelet_ids)


def test_yaw_and_curvature_follow_the_turn(town):
    _, path = _path(town, (10.0, -1.75, 0.0), (121.75, 80.0), NORTH)
    x, y = path.xy_m.T
    # Smoothing spreads the turn's heading change over a few metres before it, no farther.
    straight_east = x < 104.0
    np.testing.assert_allclose(path.yaw_rad[straight_east], 0.0, atol=1e-9)
    np.testing.assert_allclose(path.kappa_1pm[straight_east], 0.0, atol=1e-9)
    straight_north = y > 12.0
    np.testing.assert_allclose(path.yaw_rad[straight_north], NORTH, atol=1e-6)
    # Middle third of the arc: curvature ~ 1/radius, positive (turning left).
    angle = np.arctan2(y - LEFT_CENTRE[1], x - LEFT_CENTRE[0])
    middle = (x > 112.5) & (y < 7.5) & (angle > -math.pi / 2 + math.pi / 6) \
        & (angle < -math.pi / 6)
    assert middle.sum() >= 5
    np.testing.assert_allclose(path.kappa_1pm[middle], 1.0 / LEFT_RADIUS, rtol=0.1)
    # The heading keeps turning one way and its change matches the path's own chords.
    assert np.all(np.diff(path.yaw_rad) >= -1e-9)
    chord_heading = np.arctan2(*np.diff(path.xy_m, axis=0).T[::-1])
    assert np.max(np.abs(chord_heading - 0.5 * (path.yaw_rad[1:] + path.yaw_rad[:-1]))) < 0.1


def test_right_turn_curvature_is_negative_one_over_its_radius(town):
    route, path = _path(town, (10.0, -1.75, 0.0), (118.25, -30.0), -NORTH)
    assert 'right' in [town.lanelets[i].turn_direction for i in route.lanelet_ids]
    x, y = path.xy_m.T
    angle = np.arctan2(y - RIGHT_CENTRE[1], x - RIGHT_CENTRE[0])
    middle = (x > 112.5) & (y > -7.5) & (angle > math.pi / 6) & (angle < math.pi / 3)
    assert middle.sum() >= 3
    np.testing.assert_allclose(path.kappa_1pm[middle], -1.0 / RIGHT_RADIUS, rtol=0.15)
    assert path.yaw_rad[-1] == pytest.approx(-NORTH, abs=1e-6)


def test_bounds_reach_the_centre_line_and_the_kerb_with_one_lane_each_way(town):
    _, path = _path(town, (10.0, -1.75, 0.0), (100.0, -1.75))
    road = path.xy_m[:, 0] < 112.0
    # Left: up to the centre line y = 0 (the oncoming lane is not ours); right: kerb -3.5.
    np.testing.assert_allclose(path.left_bound_m[road], 1.75, atol=1e-9)
    np.testing.assert_allclose(path.right_bound_m[road], 1.75, atol=1e-9)
    assert np.all(path.left_bound_m >= 0.0) and np.all(path.right_bound_m >= 0.0)


def test_bounds_include_the_same_direction_lane_but_not_the_oncoming_one(town_two_lanes):
    _, inner = _path(town_two_lanes, (20.0, -1.75, 0.0), (100.0, -1.75))
    road = inner.xy_m[:, 0] < 108.0
    np.testing.assert_allclose(inner.left_bound_m[road], 1.75, atol=1e-9)
    np.testing.assert_allclose(inner.right_bound_m[road], 5.25, atol=1e-9)
    _, outer = _path(town_two_lanes, (20.0, -5.25, 0.0), (100.0, -5.25))
    road = outer.xy_m[:, 0] < 108.0
    np.testing.assert_allclose(outer.left_bound_m[road], 5.25, atol=1e-9)
    np.testing.assert_allclose(outer.right_bound_m[road], 1.75, atol=1e-9)


def test_stop_lines_and_crosswalks_are_at_their_stations(town):
    _, path = _path(town, (10.0, -1.75, 0.0), (300.0, -1.75))
    # Stop lines 7.5 m before each grid point; crosswalks 4..7 m either side of it.
    assert path.stop_lines_s == pytest.approx((102.5, 222.5))
    spans = [(a, b) for a, b, _ in path.crosswalks]
    np.testing.assert_allclose(spans, [(103.0, 106.0), (114.0, 117.0), (223.0, 226.0),
                                       (234.0, 237.0)], atol=1e-6)
    for s_start, s_end, polygon in path.crosswalks:
        middle = path.sample(0.5 * (s_start + s_end))['xy_m']
        x0, y0 = polygon.min(axis=0)
        x1, y1 = polygon.max(axis=0)
        assert x0 <= middle[0] <= x1 and y0 <= middle[1] <= y1


def test_goal_station_extension_and_remaining_distance(town):
    route, path = _path(town, (10.0, -1.75, 0.0), (90.0, -1.75))
    assert path.goal_s_m == pytest.approx(route.length_m) == pytest.approx(80.0)
    assert path.length_m == pytest.approx(110.0)  # 30 m past the goal
    np.testing.assert_allclose(path.xy_m[-1], [120.0, -1.75], atol=1e-9)
    assert route_remaining_m(path, (10.0, -1.75)) == pytest.approx(80.0)
    assert route_remaining_m(path, (50.0, -1.0)) == pytest.approx(40.0)
    assert route_remaining_m(path, (100.0, -1.75)) == 0.0  # past the goal
    _, longer = _path(town, (10.0, -1.75, 0.0), (90.0, -1.75), extend_m=55.0)
    assert longer.length_m == pytest.approx(135.0)


def test_extension_stops_where_the_lanes_end(town):
    _, path = _path(town, (380.0, -1.75, 0.0), (395.0, -1.75))
    assert path.goal_s_m == pytest.approx(15.0)
    assert path.length_m == pytest.approx(20.0)  # the road ends at x = 400
    _, at_end = _path(town, (400.0, -1.75, 0.0), (400.0, -1.75))
    assert len(at_end.s_m) == 1 and at_end.goal_s_m == 0.0 and at_end.length_m == 0.0
    assert at_end.yaw_rad[0] == pytest.approx(0.0)


def test_sample_interpolates_and_keeps_per_lanelet_values(town):
    route, path = _path(town, (10.0, -1.75, 0.0), (121.75, 80.0), NORTH)
    sample = path.sample(np.array([5.25, 300.0, -3.0]))
    np.testing.assert_allclose(sample['xy_m'][0], [15.25, -1.75])
    np.testing.assert_allclose(sample['s_m'], [5.25, path.length_m, 0.0])
    assert sample['lanelet_id'][0] == route.lanelet_ids[0]
    np.testing.assert_allclose(sample['speed_limit_mps'], 40.0 / 3.6)
    scalar = path.sample(20.0)
    assert scalar['yaw_rad'].shape == () and scalar['xy_m'].shape == (2,)
    with pytest.raises(MapError, match='finite'):
        path.sample(float('nan'))


def test_lane_change_is_a_smooth_transition_of_at_least_20_m(town_two_lanes):
    route, path = _path(town_two_lanes, (20.0, -5.25, 0.0), (125.25, 60.0), NORTH)
    # The left turn leaves from the inner lane, so the route changes lanes first.
    assert town_two_lanes.lanelets[route.lanelet_ids[1]].centerline[0, 1] == -1.75
    y = path.xy_m[:, 1]
    road = path.xy_m[:, 0] < 109.0
    # 89 m of road to the stop line: a 5 m lead-in, then the 40 m default transition.
    np.testing.assert_allclose(y[path.s_m <= 5.0], -5.25, atol=1e-9)
    np.testing.assert_allclose(y[road & (path.s_m >= 45.0)], -1.75, atol=1e-9)
    moving = (y > -5.25 + 1e-9) & (y < -1.75 - 1e-9) & road
    assert path.s_m[moving][-1] - path.s_m[moving][0] >= 20.0
    assert np.all(np.diff(y[road]) >= -1e-9)  # monotone towards the inner lane
    # Peak curvature of a 3.5 m quintic over 40 m: 5.77 * 3.5 / 40^2 = 0.0126 1/m.
    assert np.max(np.abs(path.kappa_1pm[path.xy_m[:, 0] < 100.0])) < 0.015
    np.testing.assert_allclose(path.left_bound_m[road] + path.right_bound_m[road], 7.0,
                               atol=1e-6)
    # The stop line is the inner lane's; the outer lane's is left behind.
    # (89 m of road plus what the sideways move adds to the path's length.)
    assert len(path.stop_lines_s) == 1
    np.testing.assert_allclose(path.sample(path.stop_lines_s[0])['xy_m'], [109.0, -1.75],
                               atol=0.01)


def test_lane_change_shortens_to_the_available_road(town_two_lanes):
    route, path = _path(town_two_lanes, (100.0, -5.25, 0.0), (125.25, 60.0), NORTH)
    y = path.xy_m[:, 1]
    road = path.xy_m[:, 0] <= 109.0
    # Only 9 m to the stop line: the whole stretch is the transition.
    assert y[road][0] == pytest.approx(-5.25)
    first_turn = np.argmax(path.xy_m[:, 0] > 109.0)
    np.testing.assert_allclose(y[first_turn - 1:first_turn + 1], -1.75, atol=0.01)
    assert np.max(np.abs(np.diff(y[road]))) < 0.5


def test_goal_behind_the_start_routes_round_the_block(town):
    route, path = _path(town, (60.0, -1.75, 0.0), (30.0, -1.75))
    assert route.lanelet_ids[0] == route.lanelet_ids[-1] and len(route.lanelet_ids) > 4
    assert path.goal_s_m == pytest.approx(route.length_m)
    assert len(path.stop_lines_s) == 4
    # The extension past the goal overlaps the start: a station hint disambiguates.
    assert path.project((60.0, -1.75))[0] == pytest.approx(0.0)
    near_goal_s = path.project((60.0, -1.75), s_hint_m=path.goal_s_m + 25.0)[0]
    assert near_goal_s == pytest.approx(path.goal_s_m + 30.0)
    assert route_remaining_m(path, (29.0, -1.75), s_hint_m=path.goal_s_m - 5.0) \
        == pytest.approx(1.0)


def test_start_at_an_intersection_entry_takes_the_branch_the_route_needs(town):
    # Standing on the stop line, the straight and the left-turn lanelets both start here.
    route = plan_route(town, (112.6, -1.75), 0.0, (121.75, 80.0), NORTH)
    assert town.lanelets[route.lanelet_ids[0]].turn_direction == 'left'
    assert route.length_m < 90.0


def test_reroute_avoids_a_blocked_lanelet(town):
    route = plan_route(town, (10.0, -1.75), 0.0, (241.75, 60.0))
    blocked = route.lanelet_ids[2]
    detour = plan_route(town, (10.0, -1.75), 0.0, (241.75, 60.0), avoid_lanelets={blocked})
    assert blocked not in detour.lanelet_ids
    assert detour.length_m > route.length_m
    for a, b in zip(detour.lanelet_ids, detour.lanelet_ids[1:]):
        assert b in successors(town, a)
    # The lanelet the car is on cannot be avoided; the goal's can, and then there is none.
    same = plan_route(town, (10.0, -1.75), 0.0, (241.75, 60.0),
                      avoid_lanelets={route.lanelet_ids[0]})
    assert same.lanelet_ids == route.lanelet_ids
    with pytest.raises(RouteNotFoundError, match='avoided'):
        plan_route(town, (10.0, -1.75), 0.0, (241.75, 60.0),
                   avoid_lanelets={route.lanelet_ids[-1]})


def test_unreachable_and_off_map_poses_raise_typed_errors(town):
    # The westbound lane entering at the east edge has no predecessor.
    with pytest.raises(RouteNotFoundError, match='no drivable route'):
        plan_route(town, (60.0, -1.75), 0.0, (390.0, 1.75), math.pi)
    with pytest.raises(OffMapError, match='off the map'):
        plan_route(town, (60.0, -10.0), 0.0, (90.0, -1.75))
    with pytest.raises(OffMapError):
        plan_route(town, (60.0, -1.75), 0.0, (60.0, 60.0))
    with pytest.raises(OffMapError, match='heading'):
        plan_route(town, (60.0, -1.75), NORTH, (90.0, -1.75))
    with pytest.raises(MapError, match='finite'):
        plan_route(town, (float('nan'), -1.75), 0.0, (90.0, -1.75))


def test_build_reference_path_rejects_inconsistent_routes(town):
    east = nearest_lanelet(town, (60.0, -1.75), 0.0).lanelet_id
    west = nearest_lanelet(town, (60.0, 1.75), math.pi).lanelet_id
    with pytest.raises(MapError, match='no lanelets'):
        build_reference_path(town, Route((), 0.0, 0.0, 0.0), (10.0, -1.75), 0.0, (90.0, -1.75))
    with pytest.raises(MapError, match='neither successive nor neighbours'):
        build_reference_path(town, Route((east, west), 0.0, 0.0, 0.0), (10.0, -1.75), 0.0,
                             (90.0, 1.75))
    with pytest.raises(MapError, match='behind the start'):
        build_reference_path(town, Route((east,), 0.0, 0.0, 0.0), (60.0, -1.75), 0.0,
                             (30.0, -1.75))


def test_snapping_moves_a_pickup_onto_the_lane_centre(town):
    lanelet_id, xy, yaw = snap_to_kerbside(town, (90.0, -1.35), 0.1)
    assert lanelet_id == nearest_lanelet(town, (90.0, -1.75), 0.0).lanelet_id
    np.testing.assert_allclose(xy, [90.0, -1.75])
    assert yaw == pytest.approx(0.0)


def test_snapping_on_the_oncoming_lane_keeps_that_lane(town):
    lanelet_id, xy, yaw = snap_to_kerbside(town, (90.0, 1.5), math.pi)
    np.testing.assert_allclose(xy, [90.0, 1.75])
    assert abs(yaw) == pytest.approx(math.pi)
    assert town.lanelets[lanelet_id].centerline[0, 0] > town.lanelets[lanelet_id].centerline[
        -1, 0]


def test_snapping_picks_the_kerbside_lane_and_rejects_far_or_crossing_poses(town,
                                                                            town_two_lanes):
    _, xy, _ = snap_to_kerbside(town_two_lanes, (60.0, -1.75), 0.0)
    np.testing.assert_allclose(xy, [60.0, -5.25])  # rightmost of the two eastbound lanes
    with pytest.raises(OffMapError, match='off the map'):
        snap_to_kerbside(town, (60.0, 60.0), 0.0)  # inside a block
    with pytest.raises(OffMapError):
        snap_to_kerbside(town, (90.0, -1.75), NORTH)  # heading across the road
    with pytest.raises(OffMapError):
        snap_to_kerbside(town, (120.0, -1.75), 0.0)  # intersection box: no place to stop
