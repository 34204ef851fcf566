"""mpc_planner_node: mission goal + objects + odometry -> /planning/trajectory, /control/command.

Runs on odometry (50 Hz): every odometry message gets a control command carrying its stamp
(the vehicle interface and the lock-stepped simulator key on it); every `plan_period_s` of
odometry time the MPC is solved first. Inputs that other nodes derive from the same odometry
(mission status, goal) and objects are applied `input_delay_s` after their stamp, so that a
run does not depend on which callback the executor happened to take first: under lock-step
simulation every run sees the same inputs at the same cycle. A message that arrives later
than that is still used, with a diagnostic (the run may then not be reproducible).

Objects come from /prediction/objects (PredictedObjects; in the graph's ground-truth mode the
prediction node runs on the simulator's ground truth), or, with the parameter `perception`
ground_truth (the planner alone, no prediction node), from /sim/ground_truth/objects
(TrackedObjects) predicted at constant velocity.
"""

from __future__ import annotations

import math
import sys

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node

from robotaxi_msgs.msg import (ControlCommand, MissionStatus, PredictedObjects, TrackedObjects,
                               Trajectory, VehicleStatus)
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.params import ParameterError, declare_node_parameters
from robotaxi_stack.common.qos import (command_qos, objects_qos, sensor_input_qos,
                                       state_qos)
from robotaxi_stack.common.stamps import NS_PER_S, stamp_to_ns
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.planning import behavior as bh
from robotaxi_stack.planning import conversions as conv
from robotaxi_stack.planning import mpc
from robotaxi_stack.planning.map_loader import load_planning_town
from robotaxi_stack.planning.planner import Goal, PlannerCore, PlannerInputError
from robotaxi_stack.planning.planner_params import PlannerNodeParams, split_params
from robotaxi_stack.sim.maps import MapError
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle

DRIVING_STATES = (MissionStatus.TO_PICKUP, MissionStatus.TO_DROPOFF)


class StampedBuffer:
    """Messages by stamp; `at(t)` gives the newest with stamp <= t (older ones are pruned)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, object]] = []
        self.used_ns = -1
        self.late = 0

    def add(self, stamp_ns: int, value) -> None:
        if stamp_ns <= self.used_ns:
            self.late += 1  # would have been applied already: not reproducible
        self.items.append((stamp_ns, value))
        self.items.sort(key=lambda item: item[0])

    def newest_ns(self) -> int:
        return self.items[-1][0] if self.items else -1

    def at(self, t_ns: int):
        ready = [item for item in self.items if item[0] <= t_ns]
        if not ready:
            return None
        newest = ready[-1]
        self.items = [item for item in self.items if item[0] >= newest[0]]
        self.used_ns = max(self.used_ns, t_ns)
        return newest


class MpcPlannerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('mpc_planner', **kwargs)
        self.params = declare_node_parameters(self, PlannerNodeParams)
        planner_params, behavior_params, mpc_params = split_params(self.params)
        vehicle = load_vehicle(self.params.vehicle)
        town = load_planning_town(self.params.map_file, self.params.scenario,
                                  self.params.map_origin_lat, self.params.map_origin_lon)
        ego = bh.EgoGeometry(front_m=vehicle.length_m - vehicle.rear_overhang_m,
                             rear_m=vehicle.rear_overhang_m, width_m=vehicle.width_m)
        self.core = PlannerCore(town, ego, vehicle.wheelbase_m, planner_params,
                                behavior_params, mpc_params)
        self.diagnostics = NodeDiagnostics(self)
        self.delay_ns = int(self.params.input_delay_s * NS_PER_S)
        self.plan_period_ns = int(round(self.params.plan_period_s * NS_PER_S))
        self.objects = StampedBuffer()
        self.mission = StampedBuffer()
        self.goals = StampedBuffer()
        self.status = StampedBuffer()
        self.steer_rad = 0.0
        self.last_plan_ns: int | None = None
        self.last_odom_ns = -1
        self.pending_odometry: Odometry | None = None
        self.unsynced = 0
        self.fallbacks = 0
        self.trajectory_pub = self.create_publisher(Trajectory, '~/output/trajectory',
                                                    objects_qos())
        self.command_pub = self.create_publisher(ControlCommand, '~/output/control_command',
                                                 command_qos())
        inputs_qos = sensor_input_qos(self.params.reliable_inputs)
        self.create_subscription(Odometry, '~/input/odometry', self._on_odometry, inputs_qos)
        self.create_subscription(VehicleStatus, '~/input/vehicle_status', self._on_status,
                                 inputs_qos)
        if self.params.perception == 'ground_truth':
            self.create_subscription(TrackedObjects, '~/input/ground_truth_objects',
                                     self._on_objects, objects_qos())
        else:
            self.create_subscription(PredictedObjects, '~/input/objects', self._on_objects,
                                     objects_qos())
        self.create_subscription(MissionStatus, '~/input/mission_status',
                                 lambda m: self.mission.add(stamp_to_ns(m.header.stamp), m),
                                 state_qos())
        self.create_subscription(PoseStamped, '~/input/goal',
                                 lambda m: self.goals.add(stamp_to_ns(m.header.stamp), m),
                                 state_qos())
        source = ('ground truth at constant velocity' if self.params.perception == 'ground_truth'
                  else 'prediction')
        self.get_logger().info(f'planning on {len(town.lanelets)} lanelets, objects from '
                               f'{source}, vehicle {vehicle.name}')

    def _on_status(self, msg: VehicleStatus) -> None:
        if math.isfinite(msg.steering_angle_rad):
            self.status.add(stamp_to_ns(msg.header.stamp), msg.steering_angle_rad)
        else:
            self.diagnostics.health.set('vehicle_status', WARN, 'non-finite steering ignored')
        pending = self.pending_odometry
        if pending is not None and self.status.newest_ns() >= stamp_to_ns(pending.header.stamp):
            self.pending_odometry = None
            self._handle_odometry(pending)

    def _steer_at(self, t_ns: int) -> float:
        """Measured steering from the newest status not newer than this odometry."""
        entry = self.status.at(t_ns)
        return self.steer_rad if entry is None else entry[1]

    def _on_objects(self, msg) -> None:
        self.objects.add(stamp_to_ns(msg.header.stamp), msg)

    def _goal_now(self, t_ns: int) -> Goal | None:
        status = self.mission.at(t_ns - self.delay_ns)
        goal = self.goals.at(t_ns - self.delay_ns)
        if status is None or goal is None:
            return None
        pose = goal[1].pose
        return Goal(pose.position.x, pose.position.y, conv.quaternion_yaw(pose.orientation),
                    active=status[1].state in DRIVING_STATES)

    def _objects_now(self, t_ns: int) -> bh.Objects:
        pred_t = self.core.prediction_times()
        entry = self.objects.at(t_ns - self.delay_ns)
        if entry is None:
            return bh.Objects.empty(pred_t)
        stamp_ns, msg = entry
        age_s = (t_ns - stamp_ns) / NS_PER_S
        if age_s > self.params.max_object_age_s:
            self.diagnostics.health.set('objects', WARN, f'objects are {age_s:.2f} s old')
        else:
            self.diagnostics.health.clear('objects')
        if isinstance(msg, TrackedObjects):
            objects, dropped = conv.objects_from_tracked(msg, age_s, pred_t)
        else:
            objects, dropped = conv.objects_from_predicted(msg, age_s, pred_t)
        if dropped:
            self.diagnostics.health.set('object_values', WARN,
                                        f'{dropped} objects with non-finite values dropped')
        return objects

    def _on_odometry(self, msg: Odometry) -> None:
        """With sync_vehicle_status, an odometry message waits for the vehicle status of its
        stamp: the simulator publishes both in one tick, but which the executor takes first
        varies, and steering one tick older made lock-stepped runs differ (and a steering
        measurement two ticks old made the lateral control weave after a pass). A message
        still waiting when the next arrives goes with the newest status, counted."""
        if not self.params.sync_vehicle_status:
            self._handle_odometry(msg)
            return
        if self.pending_odometry is not None:
            self.unsynced += 1
            self.diagnostics.health.set('vehicle_status', WARN, f'{self.unsynced} odometry '
                                        'messages handled without their vehicle status')
            self._handle_odometry(self.pending_odometry)
            self.pending_odometry = None
        if self.status.newest_ns() >= stamp_to_ns(msg.header.stamp):
            self._handle_odometry(msg)
        else:
            self.pending_odometry = msg

    def _handle_odometry(self, msg: Odometry) -> None:
        t_ns = stamp_to_ns(msg.header.stamp)
        if t_ns <= self.last_odom_ns:
            self.diagnostics.health.set('odometry', WARN, 'out-of-order odometry ignored')
            return
        ego = conv.ego_from_odometry(msg, self._steer_at(t_ns))
        try:
            ego.check()
        except PlannerInputError as error:
            self.diagnostics.health.set('odometry', ERROR, f'{error}; no command sent')
            return
        self.last_odom_ns = t_ns
        self.diagnostics.health.clear('odometry')
        t_s = t_ns / NS_PER_S
        with self.diagnostics.timer.measure():
            if self.last_plan_ns is None or t_ns - self.last_plan_ns >= self.plan_period_ns:
                self._plan(t_ns, t_s, ego, msg)
            command = self.core.command(t_s, ego)
            self.command_pub.publish(conv.command_msg(command, msg.header.stamp))
        late = self.objects.late + self.mission.late + self.goals.late
        if late:
            self.diagnostics.health.set('input_timing', WARN, f'{late} inputs arrived later '
                                        f'than input_delay_s; run may not be reproducible')

    def _plan(self, t_ns: int, t_s: float, ego, odometry: Odometry) -> None:
        self.last_plan_ns = t_ns
        try:
            self.core.set_goal(self._goal_now(t_ns))
            plan = self.core.plan(t_s, ego, self._objects_now(t_ns))
        except (PlannerInputError, bh.BehaviorInputError, mpc.MpcInputError) as error:
            self.diagnostics.health.set('plan', ERROR, f'{error}; holding')
            plan = self.core.hold_plan(t_s, ego, str(error))
        else:
            self.diagnostics.health.clear('plan')
        if plan.result is not None and plan.result.fallback:
            self.fallbacks += 1
            self.diagnostics.health.set('mpc', WARN, f'MPC fallback #{self.fallbacks}: '
                                        f'{plan.result.status}: {plan.result.message}')
        elif plan.result is not None:
            self.diagnostics.health.clear('mpc')
        if self.core.route_error:
            self.diagnostics.health.set('route', ERROR, self.core.route_error)
        else:
            self.diagnostics.health.clear('route')
        values = self.diagnostics.health.values
        values['behavior'] = plan.behavior.state if plan.behavior else 'hold'
        values['stop_reason'] = plan.behavior.stop_reason if plan.behavior else ''
        if plan.result is not None:
            values['mpc_solve_ms'] = f'{plan.result.solve_ms:.2f}'
            values['mpc_status'] = plan.result.status
        self.trajectory_pub.publish(conv.trajectory_msg(plan, odometry.header.stamp))


def main(args=None) -> int:
    return run_node(MpcPlannerNode, 'mpc_planner',
                    (ParameterError, MapError, VehicleConfigError), args)


if __name__ == '__main__':
    sys.exit(main())
