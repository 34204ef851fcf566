"""mpc_planner node in process with rclpy: one control command per odometry carrying its stamp,
trajectories ordered in time, the mission goal and ground-truth objects applied, non-finite
and out-of-order odometry rejected with diagnostics, bad parameters refused."""

import math

import pytest
import rclpy
from geometry_msgs.msg import Pose, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter

from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import (ControlCommand, MissionStatus, ObjectClass, TrackedObject,
                               TrackedObjects, Trajectory)
from robotaxi_stack.common.diagnostics import ERROR, WARN
from robotaxi_stack.common.params import ParameterError
from robotaxi_stack.common.paths import data_path
from robotaxi_stack.common.qos import command_qos, objects_qos, sensor_qos, state_qos
from robotaxi_stack.planning.mpc_planner_node import MpcPlannerNode, main
from robotaxi_stack.planning.planner import PlannerParams

START = (10.0, -1.75, 0.0)
PICKUP = (90.0, -1.75, 0.0)
HOLD_ACCEL_MPS2 = PlannerParams().hold_accel_mps2


def _stamp(msg, t_s):
    msg.header.stamp.sec = int(t_s)
    msg.header.stamp.nanosec = int(round((t_s - int(t_s)) * 1e9))
    msg.header.frame_id = 'map'
    return msg


def _key(t_s):
    return (int(t_s), int(round((t_s - int(t_s)) * 1e9)))


def _stamp_key(msg):
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def _pose(x, y, yaw):
    pose = Pose()
    pose.position.x, pose.position.y = x, y
    pose.orientation.z, pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return pose


def _odometry(t_s, x=START[0], y=START[1], yaw=START[2], speed=0.0):
    msg = _stamp(Odometry(), t_s)
    msg.child_frame_id = 'base_link'
    msg.pose.pose = _pose(x, y, yaw)
    msg.twist.twist.linear.x = speed
    return msg


def _tracked_car(object_id, x, y, yaw, speed, length=4.5, width=1.8):
    obj = TrackedObject(object_id=object_id, existence_probability=1.0, has_twist=True)
    obj.classification.append(ObjectClass(label=ObjectClass.CAR, probability=1.0))
    obj.pose.pose = _pose(x, y, yaw)
    obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = length, width, 1.5
    obj.twist.twist.linear.x = speed
    return obj


class _Graph:
    """The node under test, a peer with publishers/subscribers on its default topic names."""

    def __init__(self, node, peer, executor):
        self.node, self.peer, self.executor = node, peer, executor
        self.commands, self.trajectories = [], []
        peer.create_subscription(ControlCommand, '/mpc_planner/output/control_command',
                                 self.commands.append, command_qos())
        peer.create_subscription(Trajectory, '/mpc_planner/output/trajectory',
                                 self.trajectories.append, objects_qos(depth=50))
        self.odometry = peer.create_publisher(Odometry, '/mpc_planner/input/odometry',
                                              sensor_qos())
        self.mission = peer.create_publisher(MissionStatus, '/mpc_planner/input/mission_status',
                                             state_qos())
        self.goal = peer.create_publisher(PoseStamped, '/mpc_planner/input/goal', state_qos())
        self.objects = peer.create_publisher(
            TrackedObjects, '/mpc_planner/input/ground_truth_objects', objects_qos())
        assert self.spin_until(lambda: self.odometry.get_subscription_count() > 0
                               and self.mission.get_subscription_count() > 0
                               and self.goal.get_subscription_count() > 0
                               and self.objects.get_subscription_count() > 0)

    def spin_until(self, condition):
        return spin_until(self.executor, condition, timeout_s=20.0)

    def command_at(self, t_s):
        return next((c for c in self.commands if _stamp_key(c) == _key(t_s)), None)

    def trajectory_at(self, t_s):
        return next((m for m in self.trajectories if _stamp_key(m) == _key(t_s)), None)

    def drive(self, msg):
        """Publish one odometry (again while it is not answered: the input is best effort;
        repeats carry the same stamp and are ignored) until its command arrives."""
        t_key = _stamp_key(msg)
        assert self.spin_until(lambda: (self.odometry.publish(msg), any(
            _stamp_key(c) == t_key for c in self.commands))[1]), f'no command for {t_key}'
        return next(c for c in self.commands if _stamp_key(c) == t_key)

    def set_ride_leg(self, t_s, state=MissionStatus.TO_PICKUP, goal=PICKUP):
        status = _stamp(MissionStatus(ride_id='r1', state=state), t_s)
        pose = _stamp(PoseStamped(), t_s)
        pose.pose = _pose(*goal)
        self.mission.publish(status)
        self.goal.publish(pose)
        assert self.spin_until(lambda: self.node.mission.items and self.node.goals.items)


@pytest.fixture
def graph():
    with node_graph(lambda context: MpcPlannerNode(context=context, parameter_overrides=[
            Parameter('perception', value='ground_truth'),
            Parameter('scenario', value=str(data_path('scenarios', 'plain_ride.yaml'))),
            Parameter('input_delay_s', value=0.0)])) as (node, peer, executor):
        yield _Graph(node, peer, executor)


def _assert_trajectory_well_formed(msg):
    assert msg.header.frame_id == 'map'
    assert len(msg.points) >= 2
    times = [p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in msg.points]
    assert times[0] == 0.0
    assert all(b > a for a, b in zip(times, times[1:]))
    for point in msg.points:
        values = (point.pose.position.x, point.pose.position.y, point.pose.orientation.z,
                  point.pose.orientation.w, point.longitudinal_velocity_mps,
                  point.acceleration_mps2, point.front_wheel_angle_rad, point.heading_rate_rps)
        assert all(math.isfinite(v) for v in values)
        q = point.pose.orientation
        assert math.isclose(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2, 1.0, rel_tol=1e-6)


def test_every_odometry_gets_a_command_with_its_stamp_and_the_goal_starts_the_drive(graph):
    # No mission yet: a brake-hold command and a standing-still trajectory.
    hold = graph.drive(_odometry(1.0))
    assert hold.acceleration_mps2 == pytest.approx(HOLD_ACCEL_MPS2)
    assert hold.velocity_mps == 0.0 and hold.header.frame_id == 'base_link'
    assert graph.spin_until(lambda: graph.trajectory_at(1.0) is not None)
    standing = graph.trajectory_at(1.0)
    _assert_trajectory_well_formed(standing)
    assert all(p.longitudinal_velocity_mps == 0.0 for p in standing.points)
    assert graph.node.diagnostics.health.values['behavior'] == 'hold'

    graph.set_ride_leg(1.0)
    stamps = [1.1 + 0.02 * k for k in range(8)]  # 50 Hz odometry; plans at 1.1 and 1.2
    commands = [graph.drive(_odometry(t_s)) for t_s in stamps]
    for t_s, command in zip(stamps, commands):
        assert _stamp_key(command) == _key(t_s)
        assert all(math.isfinite(v) for v in (command.steering_angle_rad,
                                               command.steering_rate_rps, command.velocity_mps,
                                               command.acceleration_mps2, command.jerk_mps3))
    assert len(graph.commands) == 1 + len(stamps)  # exactly one command per odometry
    assert max(c.acceleration_mps2 for c in commands) > 0.0  # it drives off to the pickup
    assert graph.spin_until(lambda: graph.trajectory_at(1.1) is not None
                            and graph.trajectory_at(1.2) is not None)
    assert graph.trajectory_at(1.12) is None  # planned every plan_period_s only
    trajectory = graph.trajectory_at(1.1)
    _assert_trajectory_well_formed(trajectory)
    first, last = trajectory.points[0], trajectory.points[-1]
    assert (first.pose.position.x, first.pose.position.y) == pytest.approx(START[:2], abs=0.01)
    assert last.pose.position.x > first.pose.position.x
    assert last.longitudinal_velocity_mps > 0.0
    values = graph.node.diagnostics.health.values
    assert values['behavior'] != 'hold' and values['stop_reason'] == 'goal'
    assert graph.node.diagnostics.health.level < ERROR


def test_inactive_mission_state_holds_the_car(graph):
    graph.set_ride_leg(1.0, state=MissionStatus.BOARDING)
    command = graph.drive(_odometry(1.0))
    assert command.acceleration_mps2 == pytest.approx(HOLD_ACCEL_MPS2)
    assert graph.node.diagnostics.health.values['stop_reason'] == 'hold'


def test_non_finite_odometry_gets_no_command_and_an_error_diagnostic(graph):
    graph.set_ride_leg(1.0)
    graph.drive(_odometry(1.0))
    bad = _odometry(2.0, x=math.nan)
    health = graph.node.diagnostics.health
    assert graph.spin_until(lambda: (graph.odometry.publish(bad), health.level == ERROR)[1])
    assert 'odometry' in health.message and 'finite' in health.message
    # The next good odometry is answered (inputs are handled in order), the bad one never was.
    graph.drive(_odometry(2.1))
    assert graph.command_at(2.0) is None
    # Cleared by the good odometry (its repeats may only warn out-of-order).
    assert health.level != ERROR and 'finite' not in health.message


def test_out_of_order_odometry_is_ignored_with_a_warning(graph):
    graph.set_ride_leg(1.0)
    graph.drive(_odometry(3.0))
    health = graph.node.diagnostics.health
    health.clear('odometry')  # repeats of 3.0 (see _Graph.drive) warn the same way
    old = _odometry(2.5)
    assert graph.spin_until(lambda: (graph.odometry.publish(old),
                                     'out-of-order' in health.message)[1])
    assert health.level == WARN
    graph.drive(_odometry(3.02))
    assert graph.command_at(2.5) is None
    assert [_stamp_key(c) for c in graph.commands] == [_key(3.0), _key(3.02)]


def test_ground_truth_objects_reach_the_behavior_and_bad_rows_are_dropped(graph):
    graph.set_ride_leg(1.0)
    objects = _stamp(TrackedObjects(), 1.0)
    objects.objects.append(_tracked_car(7, 40.0, -1.75, 0.0, 6.0))       # lead car
    objects.objects.append(_tracked_car(8, math.nan, 1.75, math.pi, 8.0))  # broken row
    graph.objects.publish(objects)
    assert graph.spin_until(lambda: bool(graph.node.objects.items))
    graph.drive(_odometry(1.0, speed=8.0))
    health = graph.node.diagnostics.health
    assert health.values['behavior'] == 'follow'
    assert health.values['stop_reason'] == 'lead 7'
    assert health.level == WARN and '1 objects with non-finite values dropped' in health.message


def test_unroutable_goal_brakes_and_reports_a_route_error(graph):
    graph.set_ride_leg(1.0, goal=(5000.0, 5000.0, 0.0))
    command = graph.drive(_odometry(1.0, speed=3.0))
    assert command.acceleration_mps2 < 0.0 and command.velocity_mps <= 3.0
    health = graph.node.diagnostics.health
    assert health.level == ERROR and 'route' in health.message and '5000' in health.message
    assert graph.spin_until(lambda: graph.trajectory_at(1.0) is not None)
    velocities = [p.longitudinal_velocity_mps for p in graph.trajectory_at(1.0).points]
    assert velocities[-1] == 0.0 and all(b <= a for a, b in zip(velocities, velocities[1:]))


@pytest.mark.parametrize('name, value', [('plan_period_s', -1.0), ('input_delay_s', 5.0),
                                         ('perception', 'radar'), ('no_such_param', 1.0)])
def test_bad_parameter_raises_parameter_error_naming_it(name, value):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ParameterError, match=name):
            MpcPlannerNode(context=context, parameter_overrides=[Parameter(name, value=value)])
    finally:
        rclpy.shutdown(context=context)


def test_main_exits_2_on_a_bad_parameter(capsys):
    assert main(args=['--ros-args', '-p', 'plan_period_s:=-1.0']) == 2
    assert 'plan_period_s' in capsys.readouterr().err


def test_synced_odometry_waits_for_the_vehicle_status_of_its_stamp():
    """sync_vehicle_status (lock-stepped runs): odometry at t is handled once the status
    stamped t is in, with that status's steering; an odometry still waiting when the next
    arrives is handled with the newest status and counted."""
    from robotaxi_msgs.msg import VehicleStatus
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = MpcPlannerNode(context=context, parameter_overrides=[
            Parameter('scenario', value=str(data_path('scenarios', 'plain_ride.yaml'))),
            Parameter('sync_vehicle_status', value=True)])
        handled = []
        node._handle_odometry = lambda msg: handled.append(
            (_stamp_key(msg), node._steer_at(_stamp_key(msg)[0] * 10**9
                                             + _stamp_key(msg)[1])))

        def status(t_s, steer):
            return _stamp(VehicleStatus(steering_angle_rad=steer), t_s)

        node._on_status(status(1.0, 0.01))
        node._on_odometry(_odometry(1.02))
        assert handled == [] and node.pending_odometry is not None
        node._on_status(status(1.02, 0.02))
        assert handled == [(_key(1.02), 0.02)] and node.pending_odometry is None
        node._on_status(status(1.04, 0.04))
        node._on_odometry(_odometry(1.04))  # its status is already in: handled at once
        assert handled[-1] == (_key(1.04), 0.04)
        node._on_odometry(_odometry(1.06))
        node._on_odometry(_odometry(1.08))  # 1.06 never got its status
        assert handled[-1] == (_key(1.06), 0.04) and node.unsynced == 1
        assert node.diagnostics.health.level == WARN
    finally:
        rclpy.shutdown(context=context)
