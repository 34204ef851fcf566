"""vehicle_interface_node in process: gated commands, MRM on silence, e-stop, bad parameters."""

import math
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from std_msgs.msg import Bool

from robotaxi_msgs.msg import ControlCommand, MrmState, VehicleStatus
from robotaxi_stack.common.diagnostics import ERROR, WARN
from robotaxi_stack.common.params import ParameterError
from robotaxi_stack.common.qos import command_qos, objects_qos, sensor_qos, state_qos
from robotaxi_stack.common.stamps import stamp_to_ns
from robotaxi_stack.vehicle import vehicle_interface_node
from robotaxi_stack.vehicle.vehicle_interface_node import VehicleInterfaceNode

PREFIX = '/vehicle_interface'


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)


class Harness:
    """The node plus a peer that plays planner, vehicle and remote operations."""

    def __init__(self, context, **overrides):
        parameters = [Parameter('use_sim_time', value=False)]
        parameters += [Parameter(name, value=value) for name, value in overrides.items()]
        self.node = VehicleInterfaceNode(context=context, parameter_overrides=parameters)
        self.peer = rclpy.create_node('peer', context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.commands, self.mrm_states = [], []
        self.peer.create_subscription(ControlCommand, f'{PREFIX}/output/command',
                                      self.commands.append, command_qos())
        self.peer.create_subscription(MrmState, f'{PREFIX}/output/mrm_state',
                                      self.mrm_states.append, objects_qos(depth=50))
        self.command_pub = self.peer.create_publisher(
            ControlCommand, f'{PREFIX}/input/control_command', command_qos())
        self.status_pub = self.peer.create_publisher(
            VehicleStatus, f'{PREFIX}/input/vehicle_status', sensor_qos())
        self.estop_pub = self.peer.create_publisher(
            Bool, f'{PREFIX}/input/emergency_stop', state_qos())
        assert self.spin_until(lambda: self.command_pub.get_subscription_count() == 1
                               and self.status_pub.get_subscription_count() == 1
                               and self.estop_pub.get_subscription_count() == 1
                               and self.mrm_states)

    def now(self):
        return self.peer.get_clock().now().to_msg()

    def spin_until(self, predicate, timeout_s=10.0, each=None):
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            if each is not None:
                each()
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def publish_command(self, steer=0.0, accel=0.0, velocity=0.0):
        msg = ControlCommand(steering_angle_rad=steer, acceleration_mps2=accel,
                             velocity_mps=velocity)
        msg.header.stamp = self.now()
        self.command_pub.publish(msg)
        return stamp_to_ns(msg.header.stamp)

    def publish_status(self, velocity, mode=VehicleStatus.MODE_AUTONOMOUS):
        msg = VehicleStatus(velocity_mps=velocity, control_mode=mode,
                            gear=VehicleStatus.GEAR_DRIVE)
        msg.header.stamp = self.now()
        self.status_pub.publish(msg)


def test_command_in_gives_gated_command_out_with_the_same_stamp(context):
    harness = Harness(context, recovery_time_s=0.0)
    sent = {}

    def send():
        sent[harness.publish_command(steer=0.05, accel=0.5, velocity=2.0)] = True

    def passed_through():
        return any(stamp_to_ns(c.header.stamp) in sent
                   and abs(c.steering_angle_rad - 0.05) < 1e-6
                   and abs(c.acceleration_mps2 - 0.5) < 1e-6 for c in harness.commands)

    assert harness.spin_until(passed_through, each=send)
    assert harness.spin_until(lambda: harness.mrm_states[-1].state == MrmState.NORMAL)
    assert harness.mrm_states[-1].behavior == MrmState.NONE
    stamps = [stamp_to_ns(c.header.stamp) for c in harness.commands]
    assert stamps == sorted(set(stamps))  # one command per stamp, in order
    assert all(c.header.frame_id == 'base_link' for c in harness.commands)


def test_sync_vehicle_status_gates_a_command_once_the_status_of_its_stamp_is_in(context):
    harness = Harness(context, recovery_time_s=0.0, sync_vehicle_status=True)
    stamp = harness.now()
    command = ControlCommand(steering_angle_rad=0.02, acceleration_mps2=0.3, velocity_mps=1.0)
    command.header.stamp = stamp
    harness.command_pub.publish(command)
    assert harness.spin_until(lambda: harness.node._pending is not None)
    harness.spin_until(lambda: False, timeout_s=0.3)
    assert not any(c.header.stamp == stamp for c in harness.commands)  # held: no status yet
    status = VehicleStatus(velocity_mps=1.0, control_mode=VehicleStatus.MODE_AUTONOMOUS,
                           gear=VehicleStatus.GEAR_DRIVE)
    status.header.stamp = stamp
    harness.status_pub.publish(status)
    assert harness.spin_until(lambda: any(c.header.stamp == stamp for c in harness.commands))
    assert harness.node._pending is None and harness.node._unsynced == 0
    # A command whose status never comes goes out with the next command, counted.
    first = harness.publish_command(accel=0.1, velocity=1.0)
    assert harness.spin_until(lambda: harness.node._pending is not None)
    harness.publish_command(accel=0.1, velocity=1.0)
    assert harness.spin_until(
        lambda: any(stamp_to_ns(c.header.stamp) == first for c in harness.commands))
    assert harness.node._unsynced == 1


def test_steering_beyond_the_limit_is_clamped(context):
    harness = Harness(context, recovery_time_s=0.0, max_steer_angle_rad=0.4,
                      max_steer_rate_rps=5.0)
    sent = set()

    def send():
        sent.add(harness.publish_command(steer=1.0, velocity=1.0))

    assert harness.spin_until(lambda: any(
        stamp_to_ns(c.header.stamp) in sent and abs(c.steering_angle_rad - 0.4) < 1e-6
        for c in harness.commands), each=send)
    assert max(abs(c.steering_angle_rad) for c in harness.commands) <= 0.4 + 1e-6
    assert harness.node.core.counters['steer_angle'] > 0
    assert harness.node.diagnostics.health.level == WARN


def test_silence_starts_a_comfortable_stop_with_decelerating_commands(context):
    harness = Harness(context)

    def moving():
        harness.publish_status(10.0)

    def braking():
        accels = [c.acceleration_mps2 for c in harness.commands]
        return len(accels) >= 10 and accels[-1] < accels[-10] and accels[-1] < 0.0

    assert harness.spin_until(lambda: harness.mrm_states[-1].state
                              == MrmState.MRM_OPERATING and braking(), each=moving)
    mrm = harness.mrm_states[-1]
    assert mrm.behavior == MrmState.COMFORTABLE_STOP
    assert mrm.reason == 'no planner control command received'
    accels = [c.acceleration_mps2 for c in harness.commands]
    assert all(after <= before for before, after in zip(accels, accels[1:]))
    assert min(accels) >= -2.5 - 1e-6


def test_emergency_stop_input_starts_an_emergency_stop(context):
    harness = Harness(context)

    def moving():
        harness.publish_status(10.0)

    harness.estop_pub.publish(Bool(data=True))
    assert harness.spin_until(lambda: harness.mrm_states[-1].behavior
                              == MrmState.EMERGENCY_STOP, each=moving)
    assert harness.mrm_states[-1].reason == 'external emergency stop'
    assert harness.spin_until(lambda: harness.commands
                              and harness.commands[-1].acceleration_mps2 < -5.9, each=moving)
    assert harness.mrm_states[-1].state == MrmState.MRM_OPERATING


def test_non_finite_command_is_dropped_with_an_error_diagnostic(context):
    harness = Harness(context, recovery_time_s=0.0)
    msg = ControlCommand(steering_angle_rad=math.nan)
    msg.header.stamp = harness.now()
    harness.command_pub.publish(msg)
    assert harness.spin_until(lambda: harness.node.core.counters['non_finite'] == 1)
    assert harness.node.diagnostics.health.level == ERROR
    bad_stamp = stamp_to_ns(msg.header.stamp)
    assert all(math.isfinite(c.steering_angle_rad) for c in harness.commands)
    harness.spin_until(lambda: False, timeout_s=0.3)  # time for a (wrong) answer to arrive
    assert bad_stamp not in {stamp_to_ns(c.header.stamp) for c in harness.commands}


@pytest.mark.parametrize('name, value', [('max_accel_mps2', -1.0),
                                         ('vehicle', 'no_such_car'),
                                         ('emergency_stop_decel_mps2', 9.0),
                                         ('adapter', 'can'),
                                         ('max_jerk', 3.0)])
def test_bad_parameter_raises_parameter_error(context, name, value):
    with pytest.raises(ParameterError, match=name):
        VehicleInterfaceNode(context=context, parameter_overrides=[Parameter(name, value=value)])


def test_main_exits_with_code_2_on_a_bad_parameter(capsys):
    code = vehicle_interface_node.main(['vehicle_interface_node', '--ros-args', '-p',
                                        'max_lat_accel_mps2:=100.0'])
    assert code == 2
    assert 'max_lat_accel_mps2' in capsys.readouterr().err
