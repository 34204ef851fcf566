"""Tests of the ride mission core (robotaxi_stack.planning.mission) and the planning map
loader, without ROS: the state sequence at exact times, dwell rules, request validation, the
ride queue, distance/ETA along the lanes, abort."""

import dataclasses
import math

import numpy as np
import pytest

from robotaxi_stack.common.params import ParameterError, load_param_file, params_from_dict
from robotaxi_stack.common.paths import data_path
from robotaxi_stack.planning.map_loader import load_planning_town
from robotaxi_stack.planning.mission import (
    ABORTED, ALIGHTING, BOARDING, COMPLETED, IDLE, TO_DROPOFF, TO_PICKUP, MissionInputError,
    MissionManager, MissionParams)
from robotaxi_stack.planning.route import build_reference_path, plan_route
from robotaxi_stack.sim.maps import (
    GridTownParams, MapFormatError, generate_grid_town, write_osm)

NORTH = math.pi / 2.0
START = (10.0, -1.75, 0.0)
PICKUP = (90.0, -1.75, 0.0)
DROPOFF = (121.75, 80.0, NORTH)
LIMIT_MPS = 40.0 / 3.6


@pytest.fixture(scope='module')
def town():
    # The map of scenarios/plain_ride.yaml.
    return generate_grid_town(GridTownParams(blocks_x=3, blocks_y=2, block_m=120.0))


@pytest.fixture
def manager(town):
    return MissionManager(MissionParams(), town)


def _stand(manager, times, pose, speed=0.0):
    """Updates at each time with the ego standing at pose; returns the outputs."""
    return [manager.update(t, pose[0], pose[1], pose[2], speed) for t in times]


def test_whole_ride_passes_every_state_at_exact_times(manager):
    assert manager.request_ride('r1', PICKUP, DROPOFF, START) == (True, '')
    first = manager.update(0.0, *START, 0.0)
    assert (first.state, first.ride_id, first.changed) == (TO_PICKUP, 'r1', True)
    assert first.goal == pytest.approx(PICKUP) and first.goal_lanelet_id > 0
    # Standing 0.4 m short of the pickup: arrival after exactly 0.5 s of standing.
    near_pickup = (89.6, -1.75, 0.0)
    out = _stand(manager, [2.0, 2.4, 2.49], near_pickup)
    assert [o.state for o in out] == [TO_PICKUP] * 3 and not out[-1].changed
    boarding = manager.update(2.5, *near_pickup, 0.0)
    assert boarding.state == BOARDING and boarding.changed
    assert boarding.goal == pytest.approx(PICKUP)
    # Boarding lasts boarding_dwell_s = 10 s.
    assert manager.update(12.49, *near_pickup, 0.0).state == BOARDING
    to_dropoff = manager.update(12.5, *near_pickup, 0.0)
    assert to_dropoff.state == TO_DROPOFF and to_dropoff.goal == pytest.approx(DROPOFF)
    near_dropoff = (121.75, 79.2, NORTH)
    assert [o.state for o in _stand(manager, [30.0, 30.3], near_dropoff)] == [TO_DROPOFF] * 2
    # Moving (0.2 m/s >= stopped_speed_mps) restarts the standing time.
    assert manager.update(30.4, *near_dropoff, 0.2).state == TO_DROPOFF
    assert manager.update(30.8, *near_dropoff, 0.0).state == TO_DROPOFF
    assert manager.update(31.3, *near_dropoff, 0.0).state == ALIGHTING
    assert manager.update(39.29, *near_dropoff, 0.0).state == ALIGHTING
    completed = manager.update(39.3, *near_dropoff, 0.0)
    assert (completed.state, completed.ride_id, completed.goal) == (COMPLETED, 'r1', None)
    idle = manager.update(39.32, *near_dropoff, 0.0)
    assert (idle.state, idle.ride_id, idle.changed) == (IDLE, '', True)
    assert manager.ride_log('r1') == (
        ('r1', TO_PICKUP, 0.0), ('r1', BOARDING, 2.5), ('r1', TO_DROPOFF, 12.5),
        ('r1', ALIGHTING, 31.3), ('r1', COMPLETED, 39.3))
    assert completed.events == manager.ride_log('r1')


def test_arrival_needs_the_tolerance(manager):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    out = _stand(manager, [0.0, 1.0, 2.0, 3.0], (88.9, -1.75, 0.0))  # 1.1 m short
    assert all(o.state == TO_PICKUP for o in out)
    assert out[-1].remaining_distance_m == pytest.approx(1.1)


def _to_boarding(manager, t_board=2.5):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    manager.update(0.0, *START, 0.0)
    _stand(manager, [t_board - 0.5, t_board], PICKUP)
    assert manager.state == BOARDING


def test_doors_closed_ends_boarding_but_not_before_min_dwell(manager):
    _to_boarding(manager)
    assert manager.doors_closed(3.0, 'r1')
    # min_dwell_s = 2 s after boarding started at 2.5 s.
    assert manager.update(4.49, *PICKUP, 0.0).state == BOARDING
    assert manager.update(4.5, *PICKUP, 0.0).state == TO_DROPOFF
    assert manager.ride_log('r1')[-1] == ('r1', TO_DROPOFF, 4.5)


def test_doors_closed_after_min_dwell_ends_the_stop_at_the_next_update(manager):
    _to_boarding(manager)
    assert manager.update(5.0, *PICKUP, 0.0).state == BOARDING
    assert manager.doors_closed(6.0)
    assert manager.update(5.98, *PICKUP, 0.0).state == BOARDING
    assert manager.update(6.0, *PICKUP, 0.0).state == TO_DROPOFF


def test_doors_closed_for_another_ride_or_while_driving_is_ignored(manager):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    manager.update(0.0, *START, 0.0)
    assert not manager.doors_closed(0.5, 'r1')  # still driving to the pickup
    _stand(manager, [2.0, 2.5], PICKUP)
    assert not manager.doors_closed(3.0, 'r2')
    assert manager.update(12.49, *PICKUP, 0.0).state == BOARDING


def test_doors_closed_ends_alighting_early(manager):
    _to_boarding(manager)
    manager.update(12.5, *PICKUP, 0.0)
    _stand(manager, [40.0, 40.5], DROPOFF)
    assert manager.state == ALIGHTING
    assert manager.doors_closed(41.0, 'r1')
    assert manager.update(42.48, *DROPOFF, 0.0).state == ALIGHTING
    assert manager.update(42.5, *DROPOFF, 0.0).state == COMPLETED


def test_duplicate_ids_are_rejected_while_queued_active_and_done(manager):
    assert manager.request_ride('r1', PICKUP, DROPOFF, START)[0]
    accepted, reason = manager.request_ride('r1', PICKUP, DROPOFF, START)
    assert not accepted and 'duplicate' in reason and 'queued' in reason
    manager.update(0.0, *START, 0.0)
    assert 'active' in manager.request_ride('r1', PICKUP, DROPOFF, START)[1]
    assert manager.abort('test', 1.0)
    manager.update(1.0, *START, 0.0)
    manager.update(1.02, *START, 0.0)
    assert manager.state == IDLE
    accepted, reason = manager.request_ride('r1', PICKUP, DROPOFF, START)
    assert not accepted and 'done' in reason
    assert not manager.request_ride('', PICKUP, DROPOFF, START)[0]


def test_off_map_requests_name_the_stop_and_where(manager):
    accepted, reason = manager.request_ride('r1', (60.0, 60.0, 0.0), DROPOFF, START)
    assert not accepted and reason.startswith('pickup (60.00, 60.00') and 'off the map' in reason
    accepted, reason = manager.request_ride('r2', PICKUP, (121.75, 80.0, 0.0), START)
    assert not accepted and reason.startswith('dropoff (121.75, 80.00') and 'heading' in reason
    assert manager.queued_ride_ids == ()


def test_non_finite_poses_are_rejected(manager):
    nan = float('nan')
    for pickup, dropoff, ego, word in (((nan, -1.75, 0.0), DROPOFF, START, 'pickup'),
                                       (PICKUP, (121.75, math.inf, NORTH), START, 'dropoff'),
                                       (PICKUP, DROPOFF, (10.0, -1.75, nan), 'ego'),
                                       (PICKUP, (1.0, 2.0), START, 'dropoff')):
        accepted, reason = manager.request_ride('r1', pickup, dropoff, ego)
        assert not accepted and reason.startswith(word), reason
    assert manager.queued_ride_ids == ()


def test_unreachable_rides_are_rejected(town, manager):
    # The westbound lane entering at the east edge cannot be reached from anywhere.
    accepted, reason = manager.request_ride('r1', PICKUP, (390.0, 1.75, math.pi), START)
    assert not accepted and 'unreachable' in reason and 'pickup to the dropoff' in reason
    # From the eastbound dead end at the east edge the car can go nowhere.
    accepted, reason = manager.request_ride('r2', PICKUP, DROPOFF, (395.0, -1.75, 0.0))
    assert not accepted and 'from the ego to the pickup' in reason
    # Without a known ego pose only the pickup -> dropoff leg is checked.
    assert manager.request_ride('r3', PICKUP, DROPOFF, None) == (True, '')


def test_non_finite_or_backward_updates_raise_and_change_nothing(manager):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    manager.update(1.0, *START, 0.0)
    with pytest.raises(MissionInputError, match='finite'):
        manager.update(1.1, float('nan'), -1.75, 0.0, 0.0)
    with pytest.raises(MissionInputError, match='before the previous'):
        manager.update(0.5, *START, 0.0)
    with pytest.raises(MissionInputError):
        manager.update(float('inf'), *START, 0.0)
    out = manager.update(1.2, *START, 0.0)
    assert out.state == TO_PICKUP and not out.changed


def test_two_queued_rides_run_one_after_the_other(manager):
    second_pickup, second_dropoff = (200.0, -1.75, 0.0), (300.0, -1.75, 0.0)
    assert manager.request_ride('r1', PICKUP, DROPOFF, START)[0]
    assert manager.request_ride('r2', second_pickup, second_dropoff, START)[0]
    out = manager.update(0.0, *START, 0.0)
    assert out.ride_id == 'r1' and out.queued_rides == 1
    _stand(manager, [1.0, 1.5], PICKUP)
    assert manager.doors_closed(1.5)
    manager.update(3.5, *PICKUP, 0.0)
    _stand(manager, [20.0, 20.5], DROPOFF)
    assert manager.doors_closed(20.5)
    completed = manager.update(22.5, *DROPOFF, 0.0)
    assert (completed.ride_id, completed.state) == ('r1', COMPLETED)
    nxt = manager.update(22.52, *DROPOFF, 0.0)
    assert (nxt.ride_id, nxt.state, nxt.queued_rides) == ('r2', TO_PICKUP, 0)
    assert nxt.goal == pytest.approx(second_pickup)
    assert manager.ride_log('r2') == (('r2', TO_PICKUP, 22.52),)


def test_a_full_queue_rejects_more_rides(town):
    manager = MissionManager(MissionParams(max_queued_rides=1), town)
    assert manager.request_ride('r1', PICKUP, DROPOFF, START)[0]
    manager.update(0.0, *START, 0.0)  # r1 becomes active, the queue is empty again
    assert manager.request_ride('r2', PICKUP, DROPOFF, START)[0]
    accepted, reason = manager.request_ride('r3', PICKUP, DROPOFF, START)
    assert not accepted and 'full' in reason


def test_remaining_distance_and_eta_decrease_along_the_lanes(town, manager):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    first = manager.update(0.0, *START, 0.0)
    assert first.remaining_distance_m == pytest.approx(80.0)
    assert first.eta_s == pytest.approx(80.0 / LIMIT_MPS)
    _stand(manager, [0.5, 1.0], PICKUP)
    boarding = manager.update(1.0, *PICKUP, 0.0)
    # BOARDING: the ride's next stop is the dropoff: boarding time left plus the drive.
    route = plan_route(town, PICKUP[:2], 0.0, DROPOFF[:2], NORTH)
    drive_m = route.length_m
    assert boarding.remaining_distance_m == pytest.approx(drive_m, abs=0.01)
    assert boarding.eta_s == pytest.approx(10.0 + drive_m / LIMIT_MPS, abs=0.01)
    manager.update(11.0, *PICKUP, 0.0)
    assert manager.state == TO_DROPOFF
    path = build_reference_path(town, route, PICKUP[:2], 0.0, DROPOFF[:2])
    previous = (math.inf, math.inf)
    t = 11.0
    for s in np.arange(5.0, path.goal_s_m - 2.0, 5.0):
        t += 0.5
        x, y = path.sample(s)['xy_m']
        out = manager.update(t, x, y, float(path.sample(s)['yaw_rad']), LIMIT_MPS)
        assert out.state == TO_DROPOFF
        # Along the lanes, not straight-line: through the left turn it still counts arc.
        assert out.remaining_distance_m == pytest.approx(path.goal_s_m - s, abs=0.05)
        assert out.remaining_distance_m < previous[0] and out.eta_s < previous[1]
        previous = (out.remaining_distance_m, out.eta_s)


def test_abort_reports_aborted_then_starts_the_next_ride(manager):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    manager.request_ride('r2', (200.0, -1.75, 0.0), (300.0, -1.75, 0.0), START)
    manager.update(0.0, *START, 0.0)
    assert not manager.doors_closed(0.0)
    assert manager.abort('rider cancelled', 0.7)
    assert not manager.abort('again')
    aborted = manager.update(1.0, 30.0, -1.75, 0.0, 5.0)
    assert (aborted.ride_id, aborted.state, aborted.changed) == ('r1', ABORTED, True)
    assert aborted.reason == 'rider cancelled' and aborted.goal is None
    assert manager.ride_log('r1')[-1] == ('r1', ABORTED, 0.7)
    nxt = manager.update(1.02, 30.0, -1.75, 0.0, 5.0)
    assert (nxt.ride_id, nxt.state, nxt.reason) == ('r2', TO_PICKUP, '')
    assert nxt.remaining_distance_m == pytest.approx(170.0)


def test_idle_reports_no_goal_and_abort_without_a_ride_is_refused(manager):
    out = manager.update(0.0, *START, 0.0)
    assert (out.state, out.ride_id, out.goal, out.changed) == (IDLE, '', None, True)
    assert not manager.update(1.0, *START, 0.0).changed
    assert not manager.abort('nothing to abort')


def test_params_validate_dwell_order_and_the_shipped_file():
    with pytest.raises(ParameterError, match='min_dwell_s'):
        MissionParams(min_dwell_s=9.0, alighting_dwell_s=8.0)
    with pytest.raises(ParameterError, match='arrival_tolerance_m'):
        params_from_dict(MissionParams, {'arrival_tolerance_m': -1.0})
    shipped = params_from_dict(MissionParams, load_param_file(
        data_path('config', 'mission.param.yaml'), 'mission'))
    assert shipped == MissionParams()
    assert dataclasses.replace(shipped, scenario='x').scenario == 'x'


def test_map_loader_prefers_the_map_file_then_the_scenario(town, tmp_path):
    default = load_planning_town('', '')
    plain = load_planning_town('', str(data_path('scenarios', 'plain_ride.yaml')))
    assert default.params == plain.params == town.params
    small = generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1))
    path = tmp_path / 'small.osm'
    write_osm(small, path, origin_latlon=(48.0, 11.0))
    loaded = load_planning_town(str(path), str(data_path('scenarios', 'plain_ride.yaml')),
                                48.0, 11.0)
    assert loaded.params is None and len(loaded.lanelets) == len(small.lanelets)
    np.testing.assert_allclose(loaded.extent, small.extent, atol=0.01)
    with pytest.raises(MapFormatError, match='does not exist'):
        load_planning_town(str(tmp_path / 'missing.osm'), '')
    with pytest.raises(ValueError, match='missing.yaml'):
        load_planning_town('', str(tmp_path / 'missing.yaml'))


def test_mission_runs_on_a_loaded_osm_map(town, tmp_path):
    path = tmp_path / 'town.osm'
    write_osm(town, path)
    manager = MissionManager(MissionParams(), load_planning_town(str(path), ''))
    assert manager.request_ride('r1', PICKUP, DROPOFF, START) == (True, '')
    out = manager.update(0.0, *START, 0.0)
    assert out.state == TO_PICKUP
    assert out.remaining_distance_m == pytest.approx(80.0, abs=0.05)


def test_leg_is_planned_once_the_ego_is_on_the_map(manager):
    pickup_round_the_corner = (121.75, 60.0, NORTH)
    off_lanes = (60.0, -8.0, 0.0)  # on the sidewalk, 6.25 m from the lane centre
    assert manager.request_ride('r1', pickup_round_the_corner, DROPOFF, off_lanes)[0]
    first = manager.update(0.0, *off_lanes, 0.0)
    assert first.state == TO_PICKUP
    # No path yet: a straight-line estimate.
    assert first.remaining_distance_m == pytest.approx(math.hypot(61.75, 68.0))
    # Back on the lane; the next try waits for replan_period_s (1 s).
    assert manager.update(0.5, 60.0, -1.75, 0.0, 1.0).remaining_distance_m \
        == pytest.approx(math.hypot(61.75, 61.75))
    along = manager.update(1.0, 60.0, -1.75, 0.0, 1.0).remaining_distance_m
    assert along == pytest.approx(52.5 + 9.25 * math.pi / 2 + 52.5, abs=0.01)


def test_leaving_the_route_replans_from_where_the_ego_is(manager):
    manager.request_ride('r1', PICKUP, DROPOFF, START)
    assert manager.update(0.0, *START, 0.0).remaining_distance_m == pytest.approx(80.0)
    # The car took another road (northbound on x = 121.75, past the pickup's road): the
    # distance is measured on a new route from there, not by projection on the old one.
    detour = (121.75, 30.0, NORTH)
    far = manager.update(2.0, *detour, 8.0)
    assert far.state == TO_PICKUP and far.remaining_distance_m > 200.0
    assert manager.update(2.5, 121.75, 34.0, NORTH, 8.0).remaining_distance_m \
        == pytest.approx(far.remaining_distance_m - 4.0, abs=0.01)


def test_timed_requests_are_due_by_stamp_plus_delay_then_arrival_order():
    from robotaxi_stack.planning.mission import TimedRequests
    queue = TimedRequests(delay_ns=500, max_future_ns=10_000)
    queue.add(1_000, 'b', last_odometry_ns=None)
    queue.add(900, 'a', last_odometry_ns=None)
    queue.add(1_000, 'c', last_odometry_ns=None)
    assert queue.due(1_399) == []
    assert queue.due(1_400) == ['a']
    assert queue.due(1_500) == ['b', 'c']  # same due time: arrival order
    assert len(queue) == 0 and queue.late == 0
    # Arriving after its tick: taken at the next odometry, counted late; a zero stamp is "now".
    queue.add(100, 'late', last_odometry_ns=1_500)
    queue.add(0, 'now', last_odometry_ns=1_500)
    assert queue.due(1_520) == ['late', 'now'] and queue.late == 1
    # A skewed clock far ahead: taken at once rather than waiting, counted.
    queue.add(1_000_000, 'future', last_odometry_ns=1_520)
    assert queue.due(1_540) == ['future'] and queue.future == 1


def test_stops_that_would_reach_across_a_stop_line_are_rejected(town):
    # The eastbound lane's stop line before (120, 0) is at x = 112.5; the car's front is 4 m
    # ahead of base_link and must stay 1 m (stop_line_clearance_m) before the line.
    manager = MissionManager(MissionParams(), town, front_m=4.0)
    accepted, reason = manager.request_ride('r1', (108.0, -1.75, 0.0), DROPOFF, START)
    assert not accepted and reason.startswith('pickup (108.00, -1.75)')
    assert 'stop line 0.50 m ahead' in reason and '0.50 m earlier' in reason
    accepted, reason = manager.request_ride('r2', (114.0, -1.75, 0.0), DROPOFF, START)
    assert not accepted and 'across the stop line -' in reason  # past the line
    assert manager.request_ride('r3', (107.4, -1.75, 0.0), DROPOFF, START) == (True, '')
    # A stop on a lanelet without a stop line ahead, however close to its end, is fine.
    assert manager.request_ride('r4', PICKUP, DROPOFF, START) == (True, '')
