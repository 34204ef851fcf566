"""mission_node in process with rclpy: rides through the service and the topic, status and goal
outputs stamped with the odometry that caused them, rejections, bad odometry, bad params."""

import math

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Pose, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter
from std_msgs.msg import Header, String

from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import MissionStatus, RideRequest
from robotaxi_msgs.srv import SetRide
from robotaxi_stack.common.paths import data_path
from robotaxi_stack.common.qos import objects_qos, sensor_qos, state_qos
from robotaxi_stack.planning.mission import BOARDING, IDLE, TO_DROPOFF, TO_PICKUP
from robotaxi_stack.planning.mission_node import MissionNode, main


def _pose(x, y, yaw):
    pose = Pose()
    pose.position.x, pose.position.y = x, y
    pose.orientation.z, pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return pose


def _odometry(t_s, x, y, yaw, speed=0.0):
    msg = Odometry()
    msg.header.stamp.sec = int(t_s)
    msg.header.stamp.nanosec = int(round((t_s - int(t_s)) * 1e9))
    msg.header.frame_id = 'map'
    msg.pose.pose = _pose(x, y, yaw)
    msg.twist.twist.linear.x = speed
    return msg


def _ride(ride_id, pickup, dropoff):
    return RideRequest(ride_id=ride_id, pickup=_pose(*pickup), dropoff=_pose(*dropoff))


@pytest.fixture
def graph():
    with node_graph(lambda context: MissionNode(context=context, parameter_overrides=[
            Parameter('scenario', value=str(data_path('scenarios', 'plain_ride.yaml'))),
            Parameter('status_rate_hz', value=5.0)])) as graph:
        yield graph


def _call(executor, client, request):
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(request)
    assert spin_until(executor, future.done)
    return future.result()


def test_ride_via_service_then_status_and_goal_follow_odometry(graph):
    node, peer, executor = graph
    statuses, goals = [], []
    peer.create_subscription(MissionStatus, '/mission/output/mission_status', statuses.append,
                             state_qos(depth=20))
    peer.create_subscription(PoseStamped, '/mission/output/goal', goals.append, state_qos())
    odometry = peer.create_publisher(Odometry, '/mission/input/odometry', sensor_qos())
    client = peer.create_client(SetRide, '/mission/set_ride')

    reply = _call(executor, client, SetRide.Request(
        ride=_ride('r1', (90.0, -1.6, 0.0), (121.75, 80.0, math.pi / 2))))
    assert reply.accepted and reply.reason == ''
    assert spin_until(executor, lambda: odometry.get_subscription_count() > 0)

    def status_in(state):
        return any(s.state == state for s in statuses)

    assert spin_until(executor, lambda: (odometry.publish(_odometry(3.25, 10.0, -1.75, 0.0)),
                                         status_in(TO_PICKUP))[1])
    status = next(s for s in statuses if s.state == TO_PICKUP)
    assert status.ride_id == 'r1'
    assert (status.header.stamp.sec, status.header.stamp.nanosec) == (3, 250_000_000)
    assert status.remaining_distance_m == pytest.approx(80.0, abs=0.01)
    assert status.eta_s == pytest.approx(80.0 / (40.0 / 3.6), abs=0.01)
    assert spin_until(executor, lambda: bool(goals))
    goal = goals[-1]
    # The pickup snapped onto the kerbside lane centre.
    assert (goal.pose.position.x, goal.pose.position.y) == pytest.approx((90.0, -1.75))
    assert goal.header.frame_id == 'map' and goal.header.stamp.sec == 3

    duplicate = _call(executor, client, SetRide.Request(
        ride=_ride('r1', (90.0, -1.75, 0.0), (121.75, 80.0, math.pi / 2))))
    assert not duplicate.accepted and 'duplicate' in duplicate.reason

    # Standing at the pickup for 0.5 s of odometry time starts boarding at that stamp.
    for t_s in (10.0, 10.25, 10.5):
        odometry.publish(_odometry(t_s, 90.0, -1.75, 0.0))
        # One message at a time, so none is lost behind the next in the executor.
        assert spin_until(executor, lambda: node._last_stamp_ns == int(t_s * 1e9))
    assert spin_until(executor, lambda: status_in(BOARDING))
    boarding = next(s for s in statuses if s.state == BOARDING)
    assert (boarding.header.stamp.sec, boarding.header.stamp.nanosec) == (10, 500_000_000)

    # The app confirms the doors closed: boarding ends at min_dwell_s (2 s) after it began.
    doors = peer.create_publisher(String, '/mission/input/doors_closed', 10)
    assert spin_until(executor, lambda: doors.get_subscription_count() > 0)
    doors.publish(String(data='r1'))
    assert spin_until(executor, lambda: node.manager._doors_ns is not None)
    odometry.publish(_odometry(12.0, 90.0, -1.75, 0.0))
    assert spin_until(executor, lambda: node._last_stamp_ns == 12 * 10**9)
    assert node.manager.output.state == BOARDING
    odometry.publish(_odometry(12.5, 90.0, -1.75, 0.0))
    assert spin_until(executor, lambda: status_in(TO_DROPOFF))
    to_dropoff = next(s for s in statuses if s.state == TO_DROPOFF)
    assert (to_dropoff.header.stamp.sec, to_dropoff.header.stamp.nanosec) == (12, 500_000_000)
    assert spin_until(executor, lambda: goals[-1].pose.position.y == pytest.approx(80.0))


def test_rejected_topic_request_and_bad_odometry_raise_diagnostics(graph):
    node, peer, executor = graph
    diagnostics, statuses = [], []
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    peer.create_subscription(MissionStatus, '/mission/output/mission_status', statuses.append,
                             state_qos(depth=20))
    requests = peer.create_publisher(RideRequest, '/mission/input/ride_request',
                                     state_qos(depth=50))
    odometry = peer.create_publisher(Odometry, '/mission/input/odometry', sensor_qos())
    requests.publish(_ride('far', (60.0, 60.0, 0.0), (121.75, 80.0, math.pi / 2)))

    def reported(text):
        return any(text in status.message for array in diagnostics for status in array.status
                   if status.name == node.get_fully_qualified_name())

    assert spin_until(executor, lambda: len(node._pending) == 1)
    assert spin_until(executor, lambda: odometry.get_subscription_count() > 0)
    # An unstamped request is taken at the next odometry (its due time has long passed).
    odometry.publish(_odometry(5.0, 10.0, -1.75, 0.0))
    assert spin_until(executor, lambda: reported("ride 'far' rejected: pickup (60.00, 60.00"))
    assert node.manager.queued_ride_ids == ()
    assert spin_until(executor, lambda: (
        odometry.publish(_odometry(1.0, float('nan'), -1.75, 0.0)), reported('non-finite'))[1])
    # The timer keeps the (unchanged) IDLE status going.
    assert spin_until(executor, lambda: len(statuses) >= 2)
    assert all(s.state == IDLE and s.ride_id == '' for s in statuses)


def test_stamped_topic_request_is_taken_at_its_due_odometry_tick(graph):
    """A request stamped 10.0 s is taken at the first odometry >= 10.5 s (request_delay_s),
    however early it arrives: under lock-step simulation every run starts the ride at the same
    tick. One that arrives after its tick is taken at once and reported late."""
    node, peer, executor = graph
    statuses, diagnostics = [], []
    peer.create_subscription(MissionStatus, '/mission/output/mission_status', statuses.append,
                             state_qos(depth=50))
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    requests = peer.create_publisher(RideRequest, '/mission/input/ride_request',
                                     state_qos(depth=50))
    odometry = peer.create_publisher(Odometry, '/mission/input/odometry', sensor_qos())
    assert spin_until(executor, lambda: odometry.get_subscription_count() > 0
                      and requests.get_subscription_count() > 0)

    def drive_to(t_s):
        odometry.publish(_odometry(t_s, 10.0, -1.75, 0.0))
        assert spin_until(executor, lambda: node._last_stamp_ns == int(round(t_s * 1e9)))

    drive_to(9.98)
    ride = _ride('r1', (90.0, -1.75, 0.0), (121.75, 80.0, math.pi / 2))
    ride.header.stamp.sec = 10
    requests.publish(ride)
    assert spin_until(executor, lambda: len(node._pending) == 1)
    for t_s in (10.0, 10.2, 10.48):
        drive_to(t_s)
        assert node.manager.queued_ride_ids == () and node.manager.active_ride_id in ('', None)
    drive_to(10.5)
    assert spin_until(executor, lambda: any(s.state == TO_PICKUP for s in statuses))
    to_pickup = next(s for s in statuses if s.state == TO_PICKUP)
    assert (to_pickup.header.stamp.sec, to_pickup.header.stamp.nanosec) == (10, 500_000_000)

    late = _ride('r2', (90.0, -1.75, 0.0), (121.75, 80.0, math.pi / 2))
    late.header.stamp.sec = 5  # due at 5.5 s, long past
    requests.publish(late)
    assert spin_until(executor, lambda: len(node._pending) == 1)
    drive_to(10.52)
    assert 'r2' in node.manager.queued_ride_ids
    assert node._pending.late == 1


def test_heartbeat_answers_every_odometry():
    """With heartbeat (the runner's lock-step mode) every odometry, also a rejected one, is
    answered by a Header with its stamp."""
    with node_graph(lambda context: MissionNode(context=context, parameter_overrides=[
            Parameter('scenario', value=str(data_path('scenarios', 'plain_ride.yaml'))),
            Parameter('heartbeat', value=True),
            # No /clock: the fallback timer sees time 0, before any odometry, and stays quiet.
            Parameter('use_sim_time', value=True)])) as (node, peer, executor):
        events = []
        peer.create_subscription(Header, '/mission/output/heartbeat',
                                 lambda m: events.append(
                                     ('beat', m.stamp.sec * 10**9 + m.stamp.nanosec)),
                                 objects_qos(depth=20))
        statuses = []
        peer.create_subscription(MissionStatus, '/mission/output/mission_status',
                                 lambda m: statuses.append(m.header.stamp.sec * 10**9
                                                           + m.header.stamp.nanosec),
                                 state_qos(depth=20))
        odometry = peer.create_publisher(Odometry, '/mission/input/odometry', sensor_qos())
        assert spin_until(executor, lambda: odometry.get_subscription_count() > 0)
        # No ride yet: IDLE at the first odometry; a NaN one and a stale one are rejected.
        for t_s, x in ((1.0, 10.0), (1.02, float('nan')), (0.5, 10.0), (1.04, 10.0)):
            odometry.publish(_odometry(t_s, x, -1.75, 0.0))
            stamp_ns = int(round(t_s * 1e9))
            assert spin_until(executor, lambda: ('beat', stamp_ns) in events)
        beats = [stamp for kind, stamp in events if kind == 'beat']
        assert beats == [1_000_000_000, 1_020_000_000, 500_000_000, 1_040_000_000]
        # The periodic status (1 Hz) goes out on odometry time: at the first odometry of
        # each second, stamped with it.
        for t_s in (1.5, 2.0, 2.5, 3.0):
            odometry.publish(_odometry(t_s, 10.0, -1.75, 0.0))
            stamp_ns = int(round(t_s * 1e9))
            assert spin_until(executor, lambda: ('beat', stamp_ns) in events)
        assert spin_until(executor, lambda: {1_000_000_000, 2_000_000_000, 3_000_000_000}
                          <= set(statuses))
        assert not {1_500_000_000, 2_500_000_000} & set(statuses)


def test_no_heartbeat_publisher_by_default(graph):
    node, peer, executor = graph
    executor.spin_once(timeout_sec=0.1)
    assert peer.count_publishers('/mission/output/heartbeat') == 0


def test_main_exits_2_on_a_bad_parameter(capsys):
    assert main(args=['--ros-args', '-p', 'min_dwell_s:=30.0']) == 2
    assert 'min_dwell_s' in capsys.readouterr().err
