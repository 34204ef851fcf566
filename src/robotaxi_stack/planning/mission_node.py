"""mission_node: ride requests + odometry -> mission status and the goal pose.

Inputs: `~/input/odometry` (nav_msgs/Odometry, /localization/kinematic_state, sensor QoS),
`~/input/ride_request` (robotaxi_msgs/RideRequest, /planning/ride_request: reliable,
transient local, depth 50), `~/input/doors_closed` (std_msgs/String holding the ride_id: the
door sensor or the rider app confirming), service `~/set_ride` (robotaxi_msgs/SetRide).
Outputs: `~/output/mission_status` (robotaxi_msgs/MissionStatus -> /planning/mission_status,
reliable transient local depth 1) at status_rate_hz and on every change, and `~/output/goal`
(geometry_msgs/PoseStamped in `map` -> /planning/mission/goal, transient local) whenever the
goal changes. The core advances in the odometry callback, so under lock-step simulation every
transition happens at an exact sim stamp, and each output carries the stamp of the odometry
message that caused it. With `heartbeat` (the scenario runner's lock-step mode) a
std_msgs/Header with the odometry stamp goes to `~/output/heartbeat` after each odometry message
is handled (also a rejected one), after any status and goal it caused: the simulator waits for
it before stepping, so a mission node starved of CPU cannot fall behind the planner, which
applies status changes a fixed delay after their stamp. Topic ride requests are taken at the first odometry at least
`request_delay_s` after their header stamp (mission.TimedRequests), so a simulated or replayed
run takes each ride at the same tick; the `~/set_ride` service answers at once.
"""

from __future__ import annotations

import math
import sys

from geometry_msgs.msg import Pose, PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from std_msgs.msg import Header, String

from robotaxi_msgs.msg import MissionStatus, RideRequest
from robotaxi_msgs.srv import SetRide
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.geometry import GeometryError, quaternion_to_yaw
from robotaxi_stack.common.params import ParameterError, declare_node_parameters
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos, state_qos
from robotaxi_stack.common.stamps import (NS_PER_S, MonotonicStampGuard, ns_to_stamp,
                                          stamp_to_ns)
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.planning.map_loader import load_planning_town
from robotaxi_stack.planning.mission import (
    STATE_NAMES, MissionInputError, MissionManager, MissionOutput, MissionParams, TimedRequests)
from robotaxi_stack.sim.maps import MapError
from robotaxi_stack.sim.scenario import ScenarioError
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle

RIDE_REQUEST_DEPTH = 50


def _pose_xyyaw(pose: Pose) -> tuple[float, float, float]:
    """geometry_msgs/Pose -> (x, y, yaw); NaN yaw for a non-finite or zero quaternion."""
    q = pose.orientation
    quaternion = (q.x, q.y, q.z, q.w)
    try:
        yaw = float(quaternion_to_yaw(quaternion))
        if sum(v * v for v in quaternion) < 1e-12:
            yaw = math.nan
    except GeometryError:
        yaw = math.nan
    return float(pose.position.x), float(pose.position.y), yaw


class MissionNode(Node):
    def __init__(self, **kwargs):
        super().__init__('mission', **kwargs)
        self.params = declare_node_parameters(self, MissionParams)
        town = load_planning_town(self.params.map_file, self.params.scenario,
                                  self.params.map_origin_lat, self.params.map_origin_lon)
        try:
            vehicle = load_vehicle(self.params.vehicle)
        except VehicleConfigError as error:
            raise ParameterError(f'mission: parameter vehicle = {self.params.vehicle!r}: '
                                 f'{error}') from None
        self.manager = MissionManager(self.params, town,
                                      front_m=vehicle.length_m - vehicle.rear_overhang_m)
        self.diagnostics = NodeDiagnostics(self)
        self._stamp_guard = MonotonicStampGuard()
        self._last_stamp_ns: int | None = None
        self._ego_pose: tuple[float, float, float] | None = None
        self._last_goal: tuple | None = None
        self._pending = self._new_pending()
        self._status_pub = self.create_publisher(MissionStatus, '~/output/mission_status',
                                                 state_qos())
        self._goal_pub = self.create_publisher(PoseStamped, '~/output/goal', state_qos())
        self._heartbeat_pub = (self.create_publisher(Header, '~/output/heartbeat',
                                                     objects_qos(depth=10))
                               if self.params.heartbeat else None)
        self.create_subscription(Odometry, '~/input/odometry', self._on_odometry,
                                 sensor_input_qos(self.params.reliable_inputs))
        self.create_subscription(RideRequest, '~/input/ride_request', self._on_ride_request,
                                 state_qos(depth=RIDE_REQUEST_DEPTH))
        # Reliable, volatile: matches any reliable publisher (the app, `ros2 topic pub`); an
        # old door event must not be replayed to a restarted node.
        self.create_subscription(String, '~/input/doors_closed', self._on_doors_closed,
                                 objects_qos(depth=10))
        self.create_service(SetRide, '~/set_ride', self._on_set_ride)
        self._status_period_ns = int(NS_PER_S / self.params.status_rate_hz)
        self._status_sent_ns: int | None = None  # odometry time of the last status
        # The periodic status follows odometry time (the same ticks in every lock-stepped run);
        # this timer only covers silent odometry, so the status never goes quiet.
        self.create_timer(1.0 / self.params.status_rate_hz, self._on_status_timer)
        self._update_health()

    def _new_pending(self) -> TimedRequests:
        return TimedRequests(int(self.params.request_delay_s * NS_PER_S),
                             int(self.params.max_request_future_s * NS_PER_S))

    # -- inputs ----------------------------------------------------------------------------
    def _on_odometry(self, msg: Odometry) -> None:
        with self.diagnostics.timer.measure():
            self._handle_odometry(msg)
        if self._heartbeat_pub is not None:
            self._heartbeat_pub.publish(Header(stamp=msg.header.stamp, frame_id='map'))

    def _handle_odometry(self, msg: Odometry) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        x, y, yaw = _pose_xyyaw(msg.pose.pose)
        speed = float(msg.twist.twist.linear.x)
        if not all(math.isfinite(v) for v in (x, y, yaw, speed)):
            self.diagnostics.health.set('odometry', ERROR,
                                        'non-finite odometry ignored')
            return
        resets = self._stamp_guard.resets
        if not self._stamp_guard.accept(stamp_ns):
            self.diagnostics.health.set('odometry', WARN,
                                        f'{self._stamp_guard.rejected} out-of-order '
                                        f'odometry messages ignored')
            return
        if self._stamp_guard.resets != resets:
            # Time jumped far back (a restarted simulator, a looping replay): the rides
            # belong to the old timeline, and their requests are sent again with it.
            self.get_logger().warning('odometry time jumped back: mission state reset')
            self.diagnostics.health.set('clock', WARN, 'time jumped back: mission reset')
            self.manager = MissionManager(self.params, self.manager.town,
                                          front_m=self.manager.front_m)
            self._last_goal = None
            self._status_sent_ns = None
            # Pending requests stay: a replay's first request may come before this tick.
        self._ego_pose = (x, y, yaw)
        for request in self._pending.due(stamp_ns):
            self._request(request)
        self._check_request_timing()
        try:
            output = self.manager.update(stamp_ns / NS_PER_S, x, y, yaw, speed)
        except MissionInputError as error:
            self.diagnostics.health.set('odometry', ERROR, str(error))
            return
        self.diagnostics.health.clear('odometry')
        self._last_stamp_ns = stamp_ns
        if output.changed:
            self._log_change(output)
        if (output.changed or self._status_sent_ns is None
                or stamp_ns - self._status_sent_ns >= self._status_period_ns):
            self._publish_status()
        if output.goal is not None and output.goal != self._last_goal:
            self._publish_goal(output)
        self._last_goal = output.goal
        self._update_health()

    def _request(self, msg: RideRequest) -> tuple[bool, str]:
        accepted, reason = self.manager.request_ride(
            msg.ride_id, _pose_xyyaw(msg.pickup), _pose_xyyaw(msg.dropoff), self._ego_pose)
        if accepted:
            self.get_logger().info(f'ride {msg.ride_id!r} accepted '
                                   f'({len(self.manager.queued_ride_ids)} queued)')
            self.diagnostics.health.clear('ride_request')
        else:
            self.get_logger().warning(f'ride request {msg.ride_id!r} rejected: {reason}')
            self.diagnostics.health.set('ride_request', WARN,
                                        f'ride {msg.ride_id!r} rejected: {reason}')
        self._update_health()
        return accepted, reason

    def _on_ride_request(self, msg: RideRequest) -> None:
        self._pending.add(stamp_to_ns(msg.header.stamp), msg, self._last_stamp_ns)
        self._check_request_timing()

    def _check_request_timing(self) -> None:
        late, future = self._pending.late, self._pending.future
        if late or future:
            self.diagnostics.health.set(
                'request_timing', WARN, f'{late} ride requests arrived after their due tick '
                f'(run may not be reproducible), {future} stamped in the future taken at once')

    def _on_set_ride(self, request: SetRide.Request,
                     response: SetRide.Response) -> SetRide.Response:
        response.accepted, response.reason = self._request(request.ride)
        return response

    def _on_doors_closed(self, msg: String) -> None:
        if self._last_stamp_ns is None:
            return  # no ride can be standing at a stop before the first odometry
        # The odometry time base, not the node clock: transitions stay on odometry stamps
        # even when the two clocks differ (replay without sim time).
        if self.manager.doors_closed(self._last_stamp_ns / NS_PER_S, msg.data):
            self.get_logger().info(f'ride {msg.data!r}: doors closed')
        else:
            self.get_logger().debug(f'doors_closed for {msg.data!r} ignored (active ride '
                                    f'{self.manager.active_ride_id!r}, state '
                                    f'{STATE_NAMES[self.manager.state]})')

    # -- outputs ---------------------------------------------------------------------------
    def _stamp(self):
        if self._last_stamp_ns is None:
            return self.get_clock().now().to_msg()
        return ns_to_stamp(self._last_stamp_ns)

    def _on_status_timer(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if self._last_stamp_ns is None or now_ns - self._last_stamp_ns >= self._status_period_ns:
            self._publish_status()

    def _publish_status(self) -> None:
        self._status_sent_ns = self._last_stamp_ns
        output = self.manager.output
        msg = MissionStatus(ride_id=output.ride_id, state=output.state,
                            remaining_distance_m=output.remaining_distance_m,
                            eta_s=output.eta_s)
        msg.header.stamp = self._stamp()
        msg.header.frame_id = 'map'
        self._status_pub.publish(msg)

    def _publish_goal(self, output: MissionOutput) -> None:
        x, y, yaw = output.goal
        msg = PoseStamped()
        msg.header.stamp = self._stamp()
        msg.header.frame_id = 'map'
        msg.pose.position.x, msg.pose.position.y = x, y
        msg.pose.orientation.z = math.sin(0.5 * yaw)
        msg.pose.orientation.w = math.cos(0.5 * yaw)
        self._goal_pub.publish(msg)

    def _log_change(self, output: MissionOutput) -> None:
        state = STATE_NAMES[output.state]
        ride = f'ride {output.ride_id!r}: ' if output.ride_id else ''
        reason = f' ({output.reason})' if output.reason else ''
        self.get_logger().info(f'{ride}{state}{reason}, {output.remaining_distance_m:.0f} m, '
                               f'eta {output.eta_s:.0f} s')

    def _update_health(self) -> None:
        output = self.manager.output
        values = self.diagnostics.health.values
        values['state'] = STATE_NAMES[output.state]
        values['ride_id'] = output.ride_id
        values['queued_rides'] = str(len(self.manager.queued_ride_ids))
        values['remaining_distance_m'] = f'{output.remaining_distance_m:.1f}'
        values['eta_s'] = f'{output.eta_s:.1f}'


def main(args=None) -> int:
    return run_node(MissionNode, 'mission', (ParameterError, MapError, ScenarioError), args)


if __name__ == '__main__':
    sys.exit(main())
