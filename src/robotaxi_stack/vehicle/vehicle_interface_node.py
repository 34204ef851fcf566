"""vehicle_interface_node: command gate + minimal-risk maneuvers in front of the drive-by-wire.

Inputs: ~/input/control_command (ControlCommand, /control/command, command QoS),
~/input/remote_command (ControlCommand from the remote-operations bridge, used in MODE_REMOTE),
~/input/vehicle_status (VehicleStatus, /vehicle/status, sensor QoS), ~/input/emergency_stop
(std_msgs/Bool, reliable transient-local: true stops, false releases).
Outputs: ~/output/command (ControlCommand, /vehicle/command, command QoS, through the `topic`
adapter) and ~/output/mrm_state (MrmState, /system/mrm_state, reliable, at mrm_rate_hz and on
every change of state or behavior).

The logic lives in command_gate.py. This node converts messages, reads the node clock (sim time
under use_sim_time) and runs a 50 Hz timer on it that checks staleness and, while an MRM runs,
sends MRM commands stamped with the current time. The timer is phase-locked to the clock it
was created on; a lock-stepped simulator's control ticks fall on it when the node starts before
simulated time advances (the simulator's wait_for_nodes), which bringup arranges.

With `sync_vehicle_status` (the scenario runner's lock-step mode) a planner command waits for
the vehicle status of its stamp before it is gated: the simulator publishes both in one tick,
but which this node takes first varies, and the gate's rate limits start from the measured state
(two runs of one seed gave 0 and -1.5 m/s^2 as the first command). A command still waiting when
the next arrives is gated with the newest status, counted.
"""

from __future__ import annotations

import math
import sys
import time

from rclpy.node import Node
from std_msgs.msg import Bool

from robotaxi_msgs.msg import ControlCommand, MrmState, VehicleStatus
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.params import ParameterError, declare_node_parameters
from robotaxi_stack.common.qos import command_qos, objects_qos, sensor_input_qos, state_qos
from robotaxi_stack.common.stamps import NS_PER_S, ns_to_stamp, stamp_to_ns
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle
from robotaxi_stack.vehicle.adapters import AdapterError, DriveByWireAdapter
from robotaxi_stack.vehicle.command_gate import (TICK_HZ, CommandGateError, CommandSource,
                                                 ControlInput, ControlMode, GateLimits,
                                                 GatedCommand, MrmBehavior,
                                                 NonFiniteCommandError, VehicleInterfaceCore,
                                                 VehicleInterfaceParams, VehicleState)

LIMIT_WARN_HOLD_S = 2.0
"""A clamp or rejected stamp keeps its WARN this long (ROS time), so a 1 Hz diagnostics
reader sees a single event."""

VEHICLE_STATUS_STALE_S = 0.5
"""Vehicle status older than this (ROS time) is reported: the lateral limit uses its speed."""


def command_input(msg: ControlCommand) -> ControlInput:
    return ControlInput(stamp_ns=stamp_to_ns(msg.header.stamp),
                        steering_angle_rad=float(msg.steering_angle_rad),
                        steering_rate_rps=float(msg.steering_rate_rps),
                        velocity_mps=float(msg.velocity_mps),
                        acceleration_mps2=float(msg.acceleration_mps2),
                        jerk_mps3=float(msg.jerk_mps3))


def command_msg(command: GatedCommand) -> ControlCommand:
    msg = ControlCommand(steering_angle_rad=command.steering_angle_rad,
                         steering_rate_rps=command.steering_rate_rps,
                         velocity_mps=command.velocity_mps,
                         acceleration_mps2=command.acceleration_mps2,
                         jerk_mps3=command.jerk_mps3)
    msg.header.stamp = ns_to_stamp(command.stamp_ns)
    msg.header.frame_id = 'base_link'
    return msg


class TopicAdapter(DriveByWireAdapter):
    """Publishes gated commands on ~/output/command (simulator, external DBW bridges)."""

    name = 'topic'

    def __init__(self, node: Node):
        self._publisher = node.create_publisher(ControlCommand, '~/output/command',
                                                command_qos())

    def send(self, command: GatedCommand) -> None:
        try:
            self._publisher.publish(command_msg(command))
        except Exception as error:  # rclpy raises RCLError and others on a broken context
            raise AdapterError(f'publishing ~/output/command failed: {error}') from error


def make_adapter(name: str, node: Node) -> DriveByWireAdapter:
    if name == 'topic':
        return TopicAdapter(node)
    raise ParameterError(f'vehicle_interface: parameter adapter = {name!r} has no '
                         'implementation')


class VehicleInterfaceNode(Node):
    def __init__(self, **kwargs):
        super().__init__('vehicle_interface', **kwargs)
        self.params = declare_node_parameters(self, VehicleInterfaceParams)
        try:
            vehicle = load_vehicle(self.params.vehicle)
        except VehicleConfigError as error:
            raise ParameterError(f'vehicle_interface: parameter vehicle = '
                                 f'{self.params.vehicle!r}: {error}') from None
        self.limits = GateLimits.from_params(self.params, vehicle.wheelbase_m,
                                             vehicle.max_steer_angle_rad)
        self.core = VehicleInterfaceCore(self.params, self.limits)
        self.diagnostics = NodeDiagnostics(self)
        self.adapter = make_adapter(self.params.adapter, self)
        self._warn_until_ns: dict[str, int] = {}
        self._published_mrm: tuple[int, int] | None = None
        self._mrm_publisher = self.create_publisher(MrmState, '~/output/mrm_state',
                                                    objects_qos())
        self._pending: ControlCommand | None = None  # a planner command awaiting its status
        self._unsynced = 0
        self.create_subscription(ControlCommand, '~/input/control_command',
                                 self._on_planner_command, command_qos())
        self.create_subscription(ControlCommand, '~/input/remote_command',
                                 lambda msg: self._on_command(CommandSource.REMOTE, msg),
                                 command_qos())
        self.create_subscription(VehicleStatus, '~/input/vehicle_status',
                                 self._on_vehicle_status,
                                 sensor_input_qos(self.params.reliable_inputs))
        self.create_subscription(Bool, '~/input/emergency_stop', self._on_emergency_stop,
                                 state_qos())
        self.create_timer(1.0 / TICK_HZ, self._on_tick)
        self.create_timer(1.0 / self.params.mrm_rate_hz, self._publish_mrm_state)
        self.get_logger().info(
            f'vehicle {vehicle.name!r}: wheelbase {self.limits.wheelbase_m:.3f} m, steer '
            f'<= {self.limits.max_steer_angle_rad:.3f} rad, adapter {self.adapter.name!r}')

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # -- inputs ----------------------------------------------------------------------------
    def _status_covers(self, msg: ControlCommand) -> bool:
        vehicle = self.core.vehicle
        return vehicle is not None and vehicle.stamp_ns >= stamp_to_ns(msg.header.stamp)

    def _on_planner_command(self, msg: ControlCommand) -> None:
        if not self.params.sync_vehicle_status:
            self._on_command(CommandSource.PLANNER, msg)
            return
        if self._pending is not None:
            self._unsynced += 1
            self.diagnostics.health.set('vehicle_status_sync', WARN, f'{self._unsynced} '
                                        'commands gated without their vehicle status')
            pending, self._pending = self._pending, None
            self._on_command(CommandSource.PLANNER, pending)
        if self._status_covers(msg):
            self._on_command(CommandSource.PLANNER, msg)
        else:
            self._pending = msg

    def _on_command(self, source: CommandSource, msg: ControlCommand) -> None:
        start = time.perf_counter()
        now_ns = self._now_ns()
        command = command_input(msg)
        try:
            result = self.core.on_command(source, command, now_ns)
        except NonFiniteCommandError as error:
            self.diagnostics.health.set(f'{source.value}_command', ERROR, str(error))
            self.get_logger().error(str(error), throttle_duration_sec=1.0)
            result = None
        except CommandGateError as error:
            self._warn('command_order', f'{source.value}: {error}', now_ns)
            self.get_logger().warning(str(error), throttle_duration_sec=1.0)
            result = None
        else:
            self.diagnostics.health.clear(f'{source.value}_command')
        if result is not None:
            if result.clamps:
                self._warn('limits', 'clamped ' + ', '.join(result.clamps), now_ns)
            self._send(result.command)
        self._after_update(now_ns)
        self.diagnostics.timer.add((time.perf_counter() - start) * 1e3,
                                   (now_ns - command.stamp_ns) / 1e6)

    def _on_vehicle_status(self, msg: VehicleStatus) -> None:
        now_ns = self._now_ns()
        try:
            mode = ControlMode(msg.control_mode)
        except ValueError:
            self.diagnostics.health.set('vehicle_status', ERROR,
                                        f'unknown control_mode {msg.control_mode}')
            return
        state = VehicleState(stamp_ns=stamp_to_ns(msg.header.stamp),
                             velocity_mps=float(msg.velocity_mps),
                             steering_angle_rad=float(msg.steering_angle_rad),
                             control_mode=mode, gear=int(msg.gear))
        try:
            self.core.on_vehicle_status(state, now_ns)
        except CommandGateError as error:
            self.diagnostics.health.set('vehicle_status', ERROR, str(error))
            return
        self.diagnostics.health.clear('vehicle_status')
        self._after_update(now_ns)
        if self._pending is not None and self._status_covers(self._pending):
            pending, self._pending = self._pending, None
            self._on_command(CommandSource.PLANNER, pending)

    def _on_emergency_stop(self, msg: Bool) -> None:
        now_ns = self._now_ns()
        if bool(msg.data) != self.core.emergency_stop:
            self.get_logger().warning('external emergency stop '
                                      f'{"ENGAGED" if msg.data else "released"}')
        self.core.on_emergency_stop(bool(msg.data), now_ns)
        # Answer at once rather than at the next tick: every 20 ms of braking counts.
        self._send_if(self.core.on_tick(now_ns))
        self._after_update(now_ns)

    def _on_tick(self) -> None:
        now_ns = self._now_ns()
        self._send_if(self.core.on_tick(now_ns))
        for name, until_ns in list(self._warn_until_ns.items()):
            if now_ns >= until_ns:
                self.diagnostics.health.clear(name)
                del self._warn_until_ns[name]
        vehicle = self.core.vehicle
        if vehicle is not None and (now_ns - vehicle.stamp_ns) / NS_PER_S > VEHICLE_STATUS_STALE_S:
            self.diagnostics.health.set('vehicle_status_age', WARN, 'vehicle status is '
                                        f'{(now_ns - vehicle.stamp_ns) / NS_PER_S:.2f} s old')
        else:
            self.diagnostics.health.clear('vehicle_status_age')
        self._after_update(now_ns)

    # -- outputs ---------------------------------------------------------------------------
    def _send_if(self, command: GatedCommand | None) -> None:
        if command is not None:
            self._send(command)

    def _send(self, command: GatedCommand) -> None:
        values = (command.steering_angle_rad, command.acceleration_mps2)
        if not all(math.isfinite(v) for v in values):  # the core never does this; be sure
            self.diagnostics.health.set('output', ERROR, 'gate produced a non-finite command')
            return
        try:
            self.adapter.send(command)
        except AdapterError as error:
            self.diagnostics.health.set('adapter', ERROR, str(error))
            self.get_logger().error(str(error), throttle_duration_sec=1.0)
        else:
            self.diagnostics.health.clear('adapter')

    def _warn(self, name: str, message: str, now_ns: int) -> None:
        self.diagnostics.health.set(name, WARN, message)
        self._warn_until_ns[name] = now_ns + int(LIMIT_WARN_HOLD_S * NS_PER_S)

    def _after_update(self, now_ns: int) -> None:
        """Publish MrmState when state or behavior changed; refresh diagnostic values."""
        mrm = self.core.mrm
        if (mrm.state, mrm.behavior) != self._published_mrm:
            if mrm.behavior is not MrmBehavior.NONE:
                self.get_logger().warning(
                    f'MRM {mrm.behavior.name} {mrm.state.name}: {mrm.reason}')
            elif self._published_mrm is not None:
                self.get_logger().info('MRM ended: normal operation')
            self._publish_mrm_state()

    def _publish_mrm_state(self) -> None:
        mrm = self.core.mrm
        msg = MrmState(state=int(mrm.state), behavior=int(mrm.behavior), reason=mrm.reason)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._mrm_publisher.publish(msg)
        self._published_mrm = (mrm.state, mrm.behavior)
        health = self.diagnostics.health
        if mrm.behavior is MrmBehavior.NONE:
            health.clear('mrm')
        else:
            health.set('mrm', WARN, f'{mrm.behavior.name} {mrm.state.name}: {mrm.reason}')
        health.values.update({f'{name}_count': str(count)
                              for name, count in self.core.counters.items()})
        health.values['mode'] = self.core.mode.name
        health.values['emergency_stop'] = str(self.core.emergency_stop)
        health.values['mrm_state'] = mrm.state.name
        health.values['mrm_behavior'] = mrm.behavior.name

    def destroy_node(self):
        # rclpy also destroys a node whose constructor failed (before the adapter existed).
        adapter = getattr(self, 'adapter', None)
        if adapter is not None:
            adapter.close()
        return super().destroy_node()


def main(args=None) -> int:
    return run_node(VehicleInterfaceNode, 'vehicle_interface', (ParameterError,), args)


if __name__ == '__main__':
    sys.exit(main())
