"""simulator_node: the closed-loop world, owner of /clock.

Publishes /clock, localisation and vehicle status at the physics rate, LiDAR and camera at
their rates, ground truth at 10 Hz and the scenario's rides at their times; consumes the gated
/vehicle/command through the simulated drive-by-wire adapter (with a command watchdog, as a
real DBW box has). Scenario faults on the topics it publishes (drop, delay, freeze) are applied
here; killing nodes is the scenario runner's job.

Lock-step: when something publishes /vehicle/command, the simulator does not advance past a
control tick until a command stamped at (or after) that tick's time has arrived, or
`lockstep_timeout_s` of wall time has passed (counted and reported: a timeout means the run may
not be reproducible). With a deterministic stack this makes closed-loop runs reproducible
whatever the machine's load; without a command publisher the world runs free. Two more waits
close the races of nodes that are not on the command's path: `lockstep_prediction` waits for
/prediction/objects of each ground-truth message (or LiDAR cloud, through perception and
tracking, which keep the source stamp), `lockstep_mission` for the mission node's
heartbeat of each odometry message (see StampWait).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import pathlib
import sys
import time

import rclpy
from geometry_msgs.msg import Pose
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from nav_msgs.msg import Odometry

from std_msgs.msg import Header

from robotaxi_msgs.msg import (ControlCommand, PredictedObjects, RideRequest, TrackedObjects,
                               VehicleStatus)
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.image import array_to_image
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.paths import data_path
from robotaxi_stack.common.pointcloud import array_to_pointcloud2
from robotaxi_stack.common.qos import clock_qos, command_qos, objects_qos, sensor_qos
from robotaxi_stack.common.stamps import NS_PER_S, ns_to_stamp, stamp_to_ns
from robotaxi_stack.sim import conversions as conv
from robotaxi_stack.sim.scenario import (DelayTopicFault, DropTopicFault, FreezeSensorFault,
                                         ScenarioError, load_scenario)
from robotaxi_stack.sim.vehicle_dynamics import VehicleCommandError
from robotaxi_stack.sim.world import SimWorld

DEFAULT_SCENARIO = 'scenarios/plain_ride.yaml'
MATCH_TIMEOUT_S = 10.0  # longest wait for known endpoints to match before time starts
MATCH_SETTLE_S = 1.0  # then this, for the endpoint pairs between the other nodes
# Topics every node subscribes to when its object is made (not a sign that it is ready).
INFRASTRUCTURE_TOPICS = frozenset({'/clock', '/parameter_events', '/rosout'})
GROUND_TRUTH_HZ = 10.0
MISSION_HEARTBEAT_TOPIC = '/planning/mission/heartbeat'
# Writer history in recording mode: ~20 s of 50 Hz topics, ~20 s of 10 Hz frames. Lost
# samples are repaired from it (DDS NACKs); acknowledgements are heartbeat-paced (~1 s), so
# waiting for them per frame would stall the loop: the history is the flow buffer instead.
RELIABLE_SENSOR_DEPTH = 1000
ACK_TIMEOUT_S = 2.0
CONTROL_HZ = 50.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulatorParams:
    scenario: str = param('', description='scenario YAML; empty: the default ride')
    vehicle: str = param('', description='must match the scenario ego vehicle when set')
    step_hz: float = param(100.0, min=50.0, max=1000.0,
                           description='physics rate; a multiple of the 50 Hz control rate')
    real_time_factor: float = param(1.0, min=0.0, max=100.0,
                                    description='pacing; 0 runs as fast as possible')
    lockstep: bool = param(True, description='wait for each control tick command')
    lockstep_prediction: bool = param(False, description='also wait, after each message of '
                                      'lockstep_prediction_input, for /prediction/objects of '
                                      'that stamp (the object chain is then lock-stepped)')
    lockstep_prediction_input: str = param('/sim/ground_truth/objects', choices=(
        '/sim/ground_truth/objects', '/sensing/lidar/points'), description='what prediction '
        'runs on: ground truth, or the LiDAR through perception and tracking')
    lockstep_mission: bool = param(False, description='also wait, at each odometry tick, for '
                                   'the mission heartbeat of that stamp (the mission node '
                                   'runs with heartbeat true)')
    lockstep_timeout_s: float = param(1.0, min=0.01, max=30.0,
                                      description='wall time to wait for a command')
    command_timeout_s: float = param(0.5, min=0.05, max=5.0,
                                     description='DBW watchdog: older commands are ignored')
    watchdog_decel_mps2: float = param(3.0, min=0.5, max=10.0,
                                       description='DBW braking without a fresh command')
    position_noise_m: float = param(0.0, min=0.0, max=5.0)
    yaw_noise_rad: float = param(0.0, min=0.0, max=0.5)
    exit_at_end: bool = param(True, description='shut down after scenario duration_s')
    wait_for_nodes: tuple = param((), description='start time only once these nodes exist')
    startup_timeout_s: float = param(60.0, min=1.0, max=600.0,
                                     description='how long to wait for wait_for_nodes')
    reliable_sensors: bool = param(False, description='publish every topic reliable with a '
                                   'deep history (a recorder that lags a few seconds still '
                                   'gets every message); vehicles use best effort')
    counts_file: str = param('', description='write the per-topic published message counts '
                             '(JSON) here at exit, for the recording completeness check')


@dataclasses.dataclass
class StampWait:
    """Lock-step on a node off the command's path: after `trigger` (a topic we publish) went
    out stamped t, wait for a `reply` (a topic that node publishes) stamped >= t.

    Without it such a node may fall behind under load, and its output would reach its reader
    (which applies it a fixed delay after its stamp) late in one run only. Messages dropped by
    a fault are never sent, so they are not waited for.
    """

    trigger: str
    reply: str
    sent_ns: int = -1  # stamp of the newest trigger sent
    waited_ns: int = -1  # ... and of the newest one waited for
    received_ns: int = -1  # newest reply stamp
    subscription: object = None

    def on_reply(self, msg) -> None:
        header = msg if isinstance(msg, Header) else msg.header  # a heartbeat is a Header
        self.received_ns = max(self.received_ns, stamp_to_ns(header.stamp))

    def arrived(self) -> bool:
        return self.received_ns >= self.sent_ns


class SimulatorNode(Node):
    def __init__(self, **kwargs):
        super().__init__('simulator', **kwargs)
        self.params = declare_node_parameters(self, SimulatorParams)
        path = self.params.scenario or str(data_path(DEFAULT_SCENARIO))
        self.scenario = load_scenario(path)
        if self.params.vehicle and self.params.vehicle != self.scenario.ego.vehicle:
            raise ParameterError(f'simulator: parameter vehicle = {self.params.vehicle!r} but '
                                 f'scenario {path} drives {self.scenario.ego.vehicle!r}')
        self.world = SimWorld(self.scenario, base_dir=str(data_path()),
                              position_noise_m=self.params.position_noise_m,
                              yaw_noise_rad=self.params.yaw_noise_rad)
        self.diagnostics = NodeDiagnostics(self)
        self.step_ns = int(round(NS_PER_S / self.params.step_hz))
        control_ns = int(round(NS_PER_S / CONTROL_HZ))
        if control_ns % self.step_ns:
            raise ParameterError(f'simulator: parameter step_hz = {self.params.step_hz} must '
                                 f'be a multiple of the {CONTROL_HZ:.0f} Hz control rate')
        self.control_every = control_ns // self.step_ns
        self.now_ns = 0
        self.command: ControlCommand | None = None
        self.command_received_ns = -1
        self.lockstep_timeouts = 0
        self.waits: list[StampWait] = []
        self.published: collections.Counter = collections.Counter()
        if self.params.reliable_sensors:
            # Deep reliable history: the writer keeps frames until a slow recorder acked them.
            sensor_qos_profile = rclpy.qos.QoSProfile(
                depth=RELIABLE_SENSOR_DEPTH, reliability=rclpy.qos.ReliabilityPolicy.RELIABLE)
        else:
            sensor_qos_profile = sensor_qos()
        self.pub = {
            '/clock': self.create_publisher(Clock, '/clock', clock_qos()),
            '/localization/kinematic_state': self.create_publisher(
                Odometry, '/localization/kinematic_state', sensor_qos_profile),
            '/vehicle/status': self.create_publisher(VehicleStatus, '/vehicle/status',
                                                     sensor_qos_profile),
            '/sim/ground_truth/objects': self.create_publisher(
                TrackedObjects, '/sim/ground_truth/objects',
                sensor_qos_profile if self.params.reliable_sensors else objects_qos()),
            '/sensing/lidar/points': self.create_publisher(
                PointCloud2, '/sensing/lidar/points', sensor_qos_profile),
            '/sensing/camera/front/image_raw': self.create_publisher(
                Image, '/sensing/camera/front/image_raw', sensor_qos_profile),
            '/sensing/camera/front/camera_info': self.create_publisher(
                CameraInfo, '/sensing/camera/front/camera_info', sensor_qos_profile),
            '/planning/ride_request': self.create_publisher(
                RideRequest, '/planning/ride_request',
                rclpy.qos.QoSProfile(depth=50, reliability=rclpy.qos.ReliabilityPolicy.RELIABLE,
                                     durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL)),
        }
        self.command_sub = self.create_subscription(ControlCommand, '/vehicle/command',
                                                    self._on_command, command_qos())
        for enabled, trigger, reply, msg_type in (
                (self.params.lockstep_prediction, self.params.lockstep_prediction_input,
                 '/prediction/objects', PredictedObjects),
                (self.params.lockstep_mission, '/localization/kinematic_state',
                 MISSION_HEARTBEAT_TOPIC, Header)):
            if enabled:
                wait = StampWait(trigger, reply)
                wait.subscription = self.create_subscription(msg_type, reply, wait.on_reply,
                                                             objects_qos(depth=10))
                self.waits.append(wait)
        self.pending_rides = sorted(self.scenario.rides, key=lambda r: r.at_s)
        self.delayed: collections.deque = collections.deque()
        self.frozen: dict[str, object] = {}
        self._check_faults()
        self.get_logger().info(
            f'scenario {self.scenario.name!r} ({path}): {len(self.scenario.actors)} actors, '
            f'{len(self.scenario.rides)} rides, {self.scenario.duration_s:.0f} s')

    def _check_faults(self) -> None:
        for index, fault in enumerate(self.scenario.faults):
            topic = getattr(fault, 'topic', None)
            if topic is not None and topic not in self.pub:
                raise ScenarioError(f'faults[{index}].topic', f'{topic!r} is not published by '
                                    f'the simulator; injectable: {sorted(self.pub)}')

    # -- inputs ----------------------------------------------------------------------------
    def _on_command(self, msg: ControlCommand) -> None:
        values = (msg.steering_angle_rad, msg.acceleration_mps2)
        if not all(math.isfinite(v) for v in values):
            self.diagnostics.health.set('command', ERROR, 'non-finite command ignored')
            return
        self.command = msg
        self.command_received_ns = self.now_ns

    def _command_for_step(self) -> tuple[float, float]:
        state = self.world.ego.state
        fresh = (self.command is not None and self.now_ns - self.command_received_ns
                 <= self.params.command_timeout_s * NS_PER_S)
        if fresh:
            self.diagnostics.health.clear('watchdog')
            return self.command.steering_angle_rad, self.command.acceleration_mps2
        if self.command is not None:
            self.diagnostics.health.set('watchdog', WARN, 'no fresh /vehicle/command: braking')
        # DBW watchdog: hold the wheel, brake to a stop (never roll away).
        decel = self.params.watchdog_decel_mps2 if abs(state.speed_mps) > 0.0 else 0.0
        return state.steer_rad, -math.copysign(decel, state.speed_mps) if decel else 0.0

    # -- fault-aware publishing ------------------------------------------------------------
    def _active(self, kind, topic_or_sensor: str):
        t_s = self.now_ns / NS_PER_S
        for fault in self.scenario.faults:
            if isinstance(fault, kind) and fault.at_s <= t_s < fault.at_s + fault.duration_s:
                if getattr(fault, 'topic', None) == topic_or_sensor \
                        or getattr(fault, 'sensor', None) == topic_or_sensor:
                    return fault
        return None

    def _publish(self, topic: str, msg) -> None:
        if self._active(DropTopicFault, topic):
            return
        delay = self._active(DelayTopicFault, topic)
        if delay:
            self.delayed.append((self.now_ns + int(delay.delay_s * NS_PER_S), topic, msg))
            return
        self._send(topic, msg)

    def _send(self, topic: str, msg) -> None:
        self.pub[topic].publish(msg)
        for wait in self.waits:
            if wait.trigger == topic:
                wait.sent_ns = stamp_to_ns(msg.header.stamp)
        self.published[topic] += 1

    def _release_delayed(self) -> None:
        while self.delayed and self.delayed[0][0] <= self.now_ns:
            _, topic, msg = self.delayed.popleft()
            self._send(topic, msg)

    def _sensor_due(self, hz: float) -> bool:
        period_ns = int(round(NS_PER_S / hz))
        return self.now_ns % period_ns < self.step_ns

    # -- one tick --------------------------------------------------------------------------
    def publish_tick(self) -> None:
        stamp = ns_to_stamp(self.now_ns)
        self._send('/clock', Clock(clock=stamp))
        self._release_delayed()
        t_s = self.now_ns / NS_PER_S
        while self.pending_rides and self.pending_rides[0].at_s <= t_s + 1e-9:
            ride = self.pending_rides.pop(0)
            msg = RideRequest(ride_id=ride.ride_id, pickup=Pose(), dropoff=Pose())
            msg.header.stamp, msg.header.frame_id = stamp, 'map'
            for target, pose in ((msg.pickup, ride.pickup), (msg.dropoff, ride.dropoff)):
                target.position.x, target.position.y = pose.x, pose.y
                target.orientation = conv.yaw_quaternion(pose.yaw)
            self._publish('/planning/ride_request', msg)
        if (self.now_ns // self.step_ns) % self.control_every == 0:
            state = self.world.ego.state
            self._publish('/localization/kinematic_state',
                          conv.odometry_msg(self.world.odometry(), stamp))
            self._publish('/vehicle/status', conv.vehicle_status_msg(
                state, stamp, VehicleStatus.MODE_AUTONOMOUS))
        if self._sensor_due(GROUND_TRUTH_HZ):
            self._publish('/sim/ground_truth/objects',
                          conv.ground_truth_msg(self.world.ground_truth(), stamp))
        lidar = self.world.lidar
        if lidar is not None and self._sensor_due(lidar.config.hz):
            self._publish_sensor('lidar', '/sensing/lidar/points', stamp, lambda: (
                array_to_pointcloud2(self.world.lidar_scan().points, 'lidar_top', stamp),))
        camera = self.world.camera
        if camera is not None and self._sensor_due(camera.config.hz):
            self._publish_sensor('camera', '/sensing/camera/front/image_raw', stamp, lambda: (
                array_to_image(self.world.camera_image(), 'rgb8', 'camera_front', stamp),
                conv.camera_info_msg(camera.camera_info_dict(), stamp, 'camera_front')))

    def _publish_sensor(self, sensor: str, topic: str, stamp, render) -> None:
        if self._active(FreezeSensorFault, sensor) and sensor in self.frozen:
            messages = self.frozen[sensor]
            for msg in messages:
                msg.header.stamp = stamp  # a frozen driver repeats its frame, fresh stamp
        else:
            messages = render()
            self.frozen[sensor] = messages
        self._publish(topic, messages[0])
        if len(messages) > 1:
            self._publish('/sensing/camera/front/camera_info', messages[1])

    def step_physics(self) -> None:
        steer_rad, accel_mps2 = self._command_for_step()
        try:
            self.world.step(steer_rad, accel_mps2, self.step_ns / NS_PER_S)
        except VehicleCommandError as error:
            self.diagnostics.health.set('command', ERROR, str(error))
            self.world.step(self.world.ego.state.steer_rad, 0.0, self.step_ns / NS_PER_S)
        self.now_ns += self.step_ns

    def wants_command(self) -> bool:
        """Lock-step applies on control ticks while a command publisher exists."""
        return (self.params.lockstep and (self.now_ns // self.step_ns) % self.control_every == 0
                and self.count_publishers('/vehicle/command') > 0)

    def due_waits(self) -> list[StampWait]:
        """The StampWaits with a trigger not yet waited for, while their node publishes."""
        return [wait for wait in self.waits
                if self.params.lockstep and wait.sent_ns > wait.waited_ns
                and self.count_publishers(wait.reply) > 0]

    def command_arrived(self) -> bool:
        return (self.command is not None
                and stamp_to_ns(self.command.header.stamp) >= self.now_ns)


def _has_subscriptions(node: Node, name: str) -> bool:
    namespace = '/'
    if '/' in name:
        namespace, name = '/' + name.rsplit('/', 1)[0].strip('/'), name.rsplit('/', 1)[1]
    if name not in node.get_node_names():
        return False
    try:
        topics = node.get_subscriber_names_and_types_by_node(name, namespace)
    except Exception:  # the node left the graph between the two queries
        return False
    # /clock and /parameter_events are subscribed when the node object is made, long before
    # its set-up ends: only the node's own inputs say it is ready.
    return any(topic not in INFRASTRUCTURE_TOPICS for topic, _ in topics)


def wait_for_graph(node: SimulatorNode, executor) -> None:
    """Hold time at 0 until every wait_for_nodes node is up, so runs start identically."""
    wanted = {name.lstrip('/') for name in node.params.wait_for_nodes}
    deadline = time.monotonic() + node.params.startup_timeout_s
    while rclpy.ok(context=node.context):
        # A node counts once its subscriptions exist: nodes create them after their heavy
        # set-up (maps, solvers), so a tick published before that would be lost to them.
        missing = {name for name in wanted if not _has_subscriptions(node, name)}
        if not missing:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f'nodes {sorted(missing)} did not start within '
                               f'{node.params.startup_timeout_s:.0f} s')
        node.pub['/clock'].publish(Clock(clock=ns_to_stamp(0)))
        executor.spin_once(timeout_sec=0.1)
    # Endpoint matching trails node discovery, and a message published before its
    # subscription has matched is lost (seen: the t = 0 command never arriving, so the run
    # started one tick late after a minute's wait). Wait until every endpoint the graph knows
    # of on our topics has matched, then a moment for the pairs between the other nodes, which
    # discover each other at the same time; a QoS-incompatible endpoint never matches, hence
    # the bound.
    if wanted:
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        unmatched = _unmatched_topics(node)
        while unmatched and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            unmatched = _unmatched_topics(node)
        if unmatched:
            node.get_logger().warning(f'endpoints on {unmatched} not matched after '
                                      f'{MATCH_TIMEOUT_S:.0f} s (QoS mismatch?); starting')
        settle = time.monotonic() + MATCH_SETTLE_S
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.05)


def _unmatched_topics(node: SimulatorNode) -> list[str]:
    topics = [topic for topic, publisher in node.pub.items()
              if publisher.get_subscription_count() < node.count_subscribers(topic)]
    subscriptions = [('/vehicle/command', node.command_sub)]
    subscriptions += [(wait.reply, wait.subscription) for wait in node.waits]
    topics += [topic for topic, subscription in subscriptions
               if subscription.get_publisher_count() < node.count_publishers(topic)]
    return sorted(topics)


def _wait_for(node: SimulatorNode, executor, arrived, what: str) -> None:
    """Spin until arrived() or the lock-step timeout; a timeout is counted and reported."""
    # The stack's first answers include its start-up (route, solver warm-up).
    wait_s = (node.params.startup_timeout_s if node.now_ns == 0
              else node.params.lockstep_timeout_s)
    deadline = time.monotonic() + wait_s
    while not arrived() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.002)
    if not arrived():
        node.lockstep_timeouts += 1
        node.get_logger().warning(
            f'no {what} for t = {node.now_ns / NS_PER_S:.2f} s within {wait_s:.1f} s wall: '
            f'stepping without it (run may not be reproducible)')
        node.diagnostics.health.set('lockstep', WARN, f'{node.lockstep_timeouts} timeouts')


def run(node: SimulatorNode, executor) -> None:
    """The simulation loop: publish the instant, wait for the stack if lock-stepped, step."""
    wait_for_graph(node, executor)
    end_ns = int(node.scenario.duration_s * NS_PER_S)
    wall_start = time.monotonic()
    while rclpy.ok(context=node.context) and node.now_ns <= end_ns:
        with node.diagnostics.timer.measure():
            node.publish_tick()
        executor.spin_once(timeout_sec=0.0)
        if node.wants_command():
            _wait_for(node, executor, node.command_arrived, 'command')
        for wait in node.due_waits():
            _wait_for(node, executor, wait.arrived, wait.reply)
            wait.waited_ns = wait.sent_ns
        node.step_physics()
        if node.params.real_time_factor > 0.0:
            ahead_s = (node.now_ns / NS_PER_S / node.params.real_time_factor
                       - (time.monotonic() - wall_start))
            if ahead_s > 0.0:
                executor.spin_once(timeout_sec=ahead_s)
    node.diagnostics.health.values['lockstep_timeouts'] = str(node.lockstep_timeouts)
    node.diagnostics.publish()
    # Reliable readers (a recorder) get the last messages before this process exits; the
    # first wait covers one heartbeat period, the rest are normally acknowledged by then.
    if node.params.reliable_sensors:
        for publisher in node.pub.values():
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
    if node.params.counts_file:
        write_counts(node.params.counts_file, node.published, node.lockstep_timeouts)


def write_counts(path: str, published: dict, lockstep_timeouts: int) -> None:
    """Published message counts per topic (what a complete recording must hold)."""
    document = {'published': dict(sorted(published.items())),
                'lockstep_timeouts': lockstep_timeouts}
    pathlib.Path(path).write_text(json.dumps(document, indent=2) + '\n')


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = SimulatorNode()
    except (ParameterError, ScenarioError) as error:
        print(f'simulator: {error}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        run(node, executor)
        if not node.params.exit_at_end:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError as error:
        print(f'simulator: {error}', file=sys.stderr)
        return 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
