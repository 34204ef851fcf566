"""Traffic actors: sizes and labels, waypoints, IDM following, stop lines, path ends, inputs."""

import math

import numpy as np
import pytest

from robotaxi_stack.sim.actors import (
    DEFAULT_SIZES_M, ActorError, ActorSpec, ActorType, ActorWorld, LaneFollowBehavior,
    ObjectLabel, ParkedBehavior, WaypointsBehavior, accel_to_stop_within, box_corners, idm_accel,
    simplify_polyline)

DT_S = 0.05
LANE_Y_M = -1.75


def _straight_path(length_m=400.0, spacing_m=1.0):
    x = np.arange(0.0, length_m + 1e-9, spacing_m)
    return np.column_stack([x, np.full_like(x, LANE_Y_M)])


def _car(actor_id, x_m, speed_mps, path=None, **behavior):
    path = _straight_path() if path is None else path
    behavior.setdefault('target_speed_mps', 10.0)
    return ActorSpec(actor_id, 'car', LaneFollowBehavior(path, **behavior), x_m=x_m,
                     y_m=LANE_Y_M, speed_mps=speed_mps)


def _gaps(snapshot, rear, front):
    """Bumper-to-bumper gap along x between two actors on the straight lane."""
    boxes = snapshot.boxes
    return (boxes[front, 0] - 0.5 * boxes[front, 4]) - (boxes[rear, 0] + 0.5 * boxes[rear, 4])


def _run(world, seconds, **step_args):
    return [world.step(DT_S, **step_args) for _ in range(round(seconds / DT_S))]


# -- types, sizes, parked, waypoints ------------------------------------------------------------

def test_types_have_default_sizes_labels_and_size_override():
    world = ActorWorld([
        ActorSpec('c', 'car', ParkedBehavior(), x_m=1.0, y_m=2.0, yaw_rad=0.3),
        ActorSpec('p', ActorType.PEDESTRIAN, ParkedBehavior()),
        ActorSpec('d', 'static', ParkedBehavior(), size_m=[0.4, 0.3, 0.2]),
        ActorSpec('b', 'bus', ParkedBehavior()),
    ])
    snapshot = world.snapshot()
    assert snapshot.labels.tolist() == [ObjectLabel.CAR, ObjectLabel.PEDESTRIAN,
                                        ObjectLabel.UNKNOWN, ObjectLabel.BUS]
    assert snapshot.boxes[0] == pytest.approx([1.0, 2.0, 0.75, 0.3, 4.6, 1.9, 1.5])
    assert snapshot.boxes[1, 4:] == pytest.approx(DEFAULT_SIZES_M[ActorType.PEDESTRIAN])
    assert snapshot.boxes[2, 4:] == pytest.approx([0.4, 0.3, 0.2])
    assert snapshot.boxes[3, 4] > 10.0
    assert snapshot.types[1] is ActorType.PEDESTRIAN


def test_parked_actor_stays_put():
    world = ActorWorld([ActorSpec('van', 'truck', ParkedBehavior(), x_m=150.0, y_m=LANE_Y_M)])
    before = world.snapshot()
    after = _run(world, 5.0)[-1]
    assert np.array_equal(before.boxes, after.boxes)
    assert not after.velocities_mps.any()
    assert after.time_s == pytest.approx(5.0)


def test_waypoints_interpolate_linearly_and_hold_the_last_point():
    world = ActorWorld([ActorSpec('ped', 'pedestrian',
                                  WaypointsBehavior([[5.0, 110.0, -9.0], [15.0, 110.0, 9.0]]))])
    snapshot = world.snapshot()  # before the first waypoint time: waits at the first point
    assert snapshot.boxes[0, :2] == pytest.approx([110.0, -9.0])
    assert snapshot.boxes[0, 3] == pytest.approx(math.pi / 2)
    assert not snapshot.velocities_mps.any()
    states = {round(s.time_s, 6): s for s in _run(world, 20.0)}
    assert states[10.0].boxes[0, :2] == pytest.approx([110.0, 0.0])
    assert states[10.0].velocities_mps[0] == pytest.approx([0.0, 1.8])
    assert states[12.5].boxes[0, :2] == pytest.approx([110.0, 4.5])
    assert states[20.0].boxes[0, :2] == pytest.approx([110.0, 9.0])
    assert states[20.0].boxes[0, 3] == pytest.approx(math.pi / 2)
    assert not states[20.0].velocities_mps.any()


def test_waypoint_actor_keeps_its_heading_while_waiting():
    points = [[0.0, 0.0, 0.0], [2.0, 10.0, 0.0], [4.0, 10.0, 0.0], [6.0, 10.0, 10.0]]
    world = ActorWorld([ActorSpec('bike', 'bicycle', WaypointsBehavior(points))])
    states = {round(s.time_s, 6): s for s in _run(world, 6.0)}
    assert states[3.0].boxes[0, [0, 1, 3]] == pytest.approx([10.0, 0.0, 0.0])
    assert not states[3.0].velocities_mps.any()
    assert states[5.0].boxes[0, [0, 1, 3]] == pytest.approx([10.0, 5.0, math.pi / 2])
    assert states[5.0].velocities_mps[0] == pytest.approx([0.0, 5.0])


# -- IDM lane following -------------------------------------------------------------------------

def test_free_lane_follower_reaches_target_speed_along_path():
    world = ActorWorld([_car('a', 10.0, 0.0, path=_straight_path(1000.0, 10.0),
                             target_speed_mps=12.0)])
    states = _run(world, 40.0)
    speeds = np.array([s.speeds_mps()[0] for s in states])
    assert speeds[-1] == pytest.approx(12.0, rel=0.02)
    assert np.all(np.diff(speeds) >= -1e-9)
    assert states[-1].boxes[0, 1] == pytest.approx(LANE_Y_M)
    assert states[-1].velocities_mps[0, 1] == pytest.approx(0.0, abs=1e-9)


def test_follower_behind_stopping_leader_stops_at_min_gap_without_overlap():
    # The leader's path ends at 150 m, so it brakes to a stop there and holds.
    leader = _car('lead', 60.0, 10.0, path=_straight_path(150.0), target_speed_mps=10.0)
    follower = _car('follow', 20.0, 12.0, target_speed_mps=15.0, min_gap_m=2.5)
    world = ActorWorld([leader, follower])
    states = _run(world, 60.0)
    gaps = np.array([_gaps(s, rear=1, front=0) for s in states])
    assert gaps.min() >= 2.5 - 1e-6
    final = states[-1]
    assert final.speeds_mps() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert gaps[-1] == pytest.approx(2.5, abs=0.1)
    assert final.boxes[0, 0] + 0.5 * final.boxes[0, 4] <= 150.0 + 1e-9  # held at its path end


def test_follower_survives_a_leader_that_stops_dead():
    # A waypoint leader at 10 m/s halts instantly at t = 4 s: the follower must brake hard.
    leader = ActorSpec('lead', 'car', WaypointsBehavior([[0.0, 50.0, LANE_Y_M],
                                                         [4.0, 90.0, LANE_Y_M]]))
    follower = _car('follow', 20.0, 10.0, target_speed_mps=12.0)
    world = ActorWorld([leader, follower])
    states = _run(world, 20.0)
    gaps = np.array([_gaps(s, rear=1, front=0) for s in states])
    assert gaps.min() > 0.5 * 2.0  # no overlap, and most of the jam distance kept
    assert states[-1].speeds_mps()[1] == pytest.approx(0.0, abs=1e-3)
    assert gaps[-1] >= 2.0 - 1e-6


def test_follower_converges_to_time_gap_distance_at_steady_speed():
    # Leader drives at a constant 10 m/s (waypoints); follower wants 30 m/s.
    leader = ActorSpec('lead', 'car', WaypointsBehavior([[0.0, 60.0, LANE_Y_M],
                                                         [100.0, 1060.0, LANE_Y_M]]))
    path = _straight_path(1200.0, 5.0)
    follower = _car('follow', 10.0, 10.0, path=path, target_speed_mps=30.0, time_gap_s=1.2,
                    min_gap_m=2.0)
    world = ActorWorld([leader, follower])
    final = _run(world, 80.0)[-1]
    speed = final.speeds_mps()[1]
    assert speed == pytest.approx(10.0, rel=5e-3)
    # IDM equilibrium: (s0 + v T) / sqrt(1 - (v / v0)^delta), the time-gap distance s0 + v T
    # stretched by the free-road term.
    equilibrium = (2.0 + 10.0 * 1.2) / math.sqrt(1.0 - (10.0 / 30.0) ** 4)
    assert _gaps(final, rear=1, front=0) == pytest.approx(equilibrium, rel=0.01)
    assert _gaps(final, rear=1, front=0) == pytest.approx(2.0 + 10.0 * 1.2, rel=0.02)


def test_follower_stops_behind_the_ego():
    ego_rear_m, ego_length_m = 100.0, 4.5
    ego = np.array([[ego_rear_m, -2.6], [ego_rear_m + ego_length_m, -2.6],
                    [ego_rear_m + ego_length_m, -0.9], [ego_rear_m, -0.9]])
    world = ActorWorld([_car('a', 20.0, 10.0)])
    states = _run(world, 40.0, ego_footprint_xy=ego, ego_velocity_xy_mps=(0.0, 0.0))
    fronts = np.array([s.boxes[0, 0] + 0.5 * s.boxes[0, 4] for s in states])
    assert fronts.max() <= ego_rear_m - 2.0 + 1e-6
    assert fronts[-1] == pytest.approx(ego_rear_m - 2.0, abs=0.1)
    assert states[-1].speeds_mps()[0] == pytest.approx(0.0, abs=1e-3)


def test_follower_matches_a_moving_ego_ahead():
    world = ActorWorld([_car('a', 20.0, 12.0, path=_straight_path(2000.0, 10.0),
                             target_speed_mps=15.0)])
    ego_speed, ego_rear = 8.0, 60.0
    for _ in range(round(60.0 / DT_S)):
        corners = np.array([[ego_rear, -2.6], [ego_rear + 4.5, -2.6], [ego_rear + 4.5, -0.9],
                            [ego_rear, -0.9]])
        snapshot = world.step(DT_S, ego_footprint_xy=corners,
                              ego_velocity_xy_mps=(ego_speed, 0.0))
        ego_rear += ego_speed * DT_S
    assert snapshot.speeds_mps()[0] == pytest.approx(ego_speed, rel=0.01)
    gap = ego_rear - (snapshot.boxes[0, 0] + 2.3)
    assert gap == pytest.approx((2.0 + 8.0 * 1.5) / math.sqrt(1 - (8.0 / 15.0) ** 4), rel=0.02)


def test_objects_beside_the_lane_are_ignored():
    # A parked truck in the neighbouring lane, centre 3.5 m to the left of the path.
    truck = ActorSpec('truck', 'truck', ParkedBehavior(), x_m=120.0, y_m=LANE_Y_M + 3.5)
    path = _straight_path(1000.0, 10.0)
    world = ActorWorld([_car('a', 20.0, 10.0, path=path), truck])
    speeds = [s.speeds_mps()[0] for s in _run(world, 20.0)]
    assert min(speeds) == pytest.approx(10.0)
    # The same truck half a metre into the lane is a leader.
    truck = ActorSpec('truck', 'truck', ParkedBehavior(), x_m=120.0, y_m=LANE_Y_M + 2.25)
    world = ActorWorld([_car('a', 20.0, 10.0, path=path), truck])
    assert _run(world, 30.0)[-1].speeds_mps()[0] == pytest.approx(0.0, abs=1e-3)


def test_object_straddling_the_lane_stops_the_follower():
    # A bus across the road: all its corners are outside the corridor band, its sides cross it.
    bus = ActorSpec('bus', 'bus', ParkedBehavior(), x_m=120.0, y_m=LANE_Y_M, yaw_rad=math.pi / 2)
    world = ActorWorld([_car('a', 20.0, 10.0), bus])
    final = _run(world, 40.0)[-1]
    bus_near_side = 120.0 - 0.5 * DEFAULT_SIZES_M[ActorType.BUS][1]
    assert final.speeds_mps()[0] == pytest.approx(0.0, abs=1e-3)
    assert final.boxes[0, 0] + 2.3 == pytest.approx(bus_near_side - 2.0, abs=0.1)


def test_lane_follower_stops_at_stop_line_then_proceeds_after_dwell():
    world = ActorWorld([_car('a', 20.0, 10.0, stop_lines_s_m=(100.0,), stop_dwell_s=3.0)])
    states = _run(world, 40.0)
    fronts = np.array([s.boxes[0, 0] + 2.3 for s in states])
    speeds = np.array([s.speeds_mps()[0] for s in states])
    standing = np.flatnonzero(speeds == 0.0)
    assert len(standing) > 0
    assert fronts[standing[0]] == pytest.approx(100.0, abs=0.3)
    assert fronts[standing[0]] <= 100.0 + 1e-6
    assert (standing[-1] - standing[0] + 1) * DT_S == pytest.approx(3.0, abs=2 * DT_S)
    assert np.all(np.diff(standing) == 1)  # one stop, no stuttering
    assert fronts[-1] > 150.0  # proceeded after the dwell


def test_stop_line_that_cannot_be_reached_is_run():
    world = ActorWorld([_car('a', 20.0, 14.0, target_speed_mps=14.0, stop_lines_s_m=(25.0,))])
    speeds = [s.speeds_mps()[0] for s in _run(world, 5.0)]
    assert min(speeds) > 5.0


def test_lane_follower_holds_at_path_end():
    world = ActorWorld([_car('a', 20.0, 10.0, path=_straight_path(80.0))])
    states = _run(world, 30.0)
    fronts = np.array([s.boxes[0, 0] + 2.3 for s in states])
    assert fronts.max() <= 80.0 + 1e-9
    assert fronts[-1] == pytest.approx(80.0, abs=0.3)
    assert fronts[-1] == fronts[-40]  # holds, no creeping


def test_lane_follower_pose_follows_a_curved_path():
    radius = 30.0
    angles = np.linspace(-math.pi / 2, math.pi / 2, 200)
    path = np.column_stack([radius * np.cos(angles), radius * np.sin(angles)])
    spec = ActorSpec('a', 'car', LaneFollowBehavior(path, 6.0, start_s_m=0.0), speed_mps=6.0)
    world = ActorWorld([spec])
    for snapshot in _run(world, 8.0):
        x, y, _, yaw = snapshot.boxes[0, :4]
        assert math.hypot(x, y) == pytest.approx(radius, abs=0.01)
        tangent = math.atan2(y, x) + math.pi / 2
        assert math.remainder(yaw - tangent, 2 * math.pi) == pytest.approx(0.0, abs=0.02)
        velocity = snapshot.velocities_mps[0]
        assert np.linalg.norm(velocity) > 5.0
        assert velocity / np.linalg.norm(velocity) == pytest.approx([math.cos(yaw),
                                                                     math.sin(yaw)])


def test_actor_world_is_deterministic_and_order_independent():
    def specs():
        rng = np.random.default_rng(11)
        actors = [_car(f'c{i}', float(x), float(v), target_speed_mps=float(t))
                  for i, (x, v, t) in enumerate(zip(rng.uniform(0, 200, 6), rng.uniform(0, 12, 6),
                                                    rng.uniform(6, 14, 6)))]
        actors.append(ActorSpec('ped', 'pedestrian', WaypointsBehavior(
            [[2.0, 90.0, -6.0], [9.0, 90.0, 6.0]])))
        return actors
    ego = np.array([[150.0, -2.6], [154.5, -2.6], [154.5, -0.9], [150.0, -0.9]])
    first = ActorWorld(specs())
    second = ActorWorld(specs())
    reverse = ActorWorld(specs()[::-1])
    for _ in range(200):
        a = first.step(DT_S, ego)
        b = second.step(DT_S, ego)
        c = reverse.step(DT_S, ego)
        assert np.array_equal(a.boxes, b.boxes)
        assert np.array_equal(a.velocities_mps, b.velocities_mps)
    # Reordering changes only rounding (paths are packed in list order), not the behaviour.
    assert np.allclose(a.boxes, c.boxes[::-1], rtol=0.0, atol=1e-9)
    assert a.speeds_mps().min() < 5.0  # the scene had interactions (queue behind the ego)


# -- helpers and bad inputs ---------------------------------------------------------------------

def test_box_corners_and_idm_free_road():
    corners = box_corners(np.array([[1.0, 2.0, 0.5, math.pi / 2, 4.0, 2.0, 1.0]]))
    assert np.allclose(corners[0], [[2.0, 0.0], [2.0, 4.0], [0.0, 4.0], [0.0, 0.0]])
    assert idm_accel(0.0, 10.0, np.inf, 0.0, 1.5, 2.0, 1.5, 2.0) == pytest.approx(1.5)
    assert idm_accel(10.0, 10.0, np.inf, 0.0, 1.5, 2.0, 1.5, 2.0) == pytest.approx(0.0)


def test_accel_bound_covers_exactly_the_free_distance():
    speeds = np.array([10.0, 10.0, 0.0, 3.0])
    distances = np.array([100.0, 0.2, 0.0, np.inf])
    bound = accel_to_stop_within(speeds, distances, 0.1)
    assert 10.0 * 0.1 + 0.5 * bound[0] * 0.1 ** 2 == pytest.approx(100.0)  # ends the step there
    assert bound[1] == pytest.approx(-10.0 ** 2 / (2 * 0.2))  # stops inside the step
    assert bound[2] == 0.0  # standing with no room: hold
    assert bound[3] == np.inf


def test_polyline_simplification_keeps_corners_and_drops_collinear_points():
    path = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [3, 1], [3, 2]], dtype=float)
    assert simplify_polyline(path, 0.01).tolist() == [0, 3, 5]


def test_lane_follow_parameters_given_as_none_take_defaults():
    behavior = LaneFollowBehavior(_straight_path(), 8.0, time_gap_s=None, min_gap_m=None)
    assert (behavior.time_gap_s, behavior.min_gap_m) == (1.5, 2.0)
    with pytest.raises(ActorError, match='target_speed_mps'):
        LaneFollowBehavior(_straight_path(), None)


def test_empty_world_steps():
    world = ActorWorld([])
    snapshot = world.step(DT_S)
    assert snapshot.boxes.shape == (0, 7) and snapshot.velocities_mps.shape == (0, 2)
    assert snapshot.footprints().shape == (0, 4, 2)


@pytest.mark.parametrize('make, message', [
    (lambda: LaneFollowBehavior([[0.0, 0.0], [np.nan, 1.0]], 5.0), 'NaN or inf'),
    (lambda: LaneFollowBehavior([[0.0, 0.0], [0.0, 0.0]], 5.0), '2 distinct points'),
    (lambda: LaneFollowBehavior([[0.0, 0.0], [10.0, 0.0]], 0.0), 'target_speed_mps = 0.0'),
    (lambda: LaneFollowBehavior([[0.0, 0.0], [10.0, 0.0]], 5.0, stop_lines_s_m=(12.0,)),
     r'stop_lines_s_m\[0\] = 12.0'),
    (lambda: LaneFollowBehavior(np.zeros((3, 3)), 5.0), r'shape \(N, 2\)'),
    (lambda: WaypointsBehavior([[0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), r'points\[1\] time 0.0'),
    (lambda: WaypointsBehavior(np.zeros((0, 3))), 'empty'),
    (lambda: ActorSpec('x', 'tank', ParkedBehavior()), "type 'tank'"),
    (lambda: ActorSpec('x', 'car', ParkedBehavior(), size_m=[4.0, -1.0, 1.0]),
     r'size_m\[1\] = -1.0'),
    (lambda: ActorSpec('x', 'car', ParkedBehavior(), x_m=float('inf')), 'x_m'),
    (lambda: ActorSpec('x', 'car', 'parked'), 'behavior'),
    (lambda: ActorWorld([ActorSpec('a', 'car', ParkedBehavior()),
                         ActorSpec('a', 'bus', ParkedBehavior())]), "duplicate.*'a'"),
    (lambda: ActorWorld([ActorSpec('a', 'car', LaneFollowBehavior(_straight_path(), 5.0),
                                   x_m=10.0, y_m=8.0)]), 'from its lane_follow path'),
])
def test_invalid_definitions_raise_actor_error_naming_the_value(make, message):
    with pytest.raises(ActorError, match=message):
        make()


def test_invalid_step_inputs_raise_actor_error():
    world = ActorWorld([_car('a', 10.0, 5.0)])
    with pytest.raises(ActorError, match='dt_s'):
        world.step(0.0)
    with pytest.raises(ActorError, match='dt_s'):
        world.step(float('nan'))
    with pytest.raises(ActorError, match=r'shape \(4, 2\)'):
        world.step(DT_S, ego_footprint_xy=np.zeros((3, 2)))
    with pytest.raises(ActorError, match='ego_footprint_xy contains NaN'):
        world.step(DT_S, ego_footprint_xy=np.full((4, 2), np.nan))
    with pytest.raises(ActorError, match='ego_velocity_xy_mps'):
        world.step(DT_S, ego_footprint_xy=np.zeros((4, 2)), ego_velocity_xy_mps=(np.inf, 0.0))
    assert world.time_s == 0.0
