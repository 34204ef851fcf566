"""prediction_node: tracked objects -> map-based multi-modal predictions.

Input: `~/input/objects` (robotaxi_msgs/TrackedObjects in `map`, /perception/tracked_objects or
the simulator's ground truth; twist in the object frame). Output: `~/output/objects`
(robotaxi_msgs/PredictedObjects -> /prediction/objects) for every input message, with the
input's header (stamp and frame), each object's classification, pose, twist and dimensions
copied, and up to `max_modes` PredictedPaths: poses at t = k * time_step_s (k = 1..horizon_s /
time_step_s) after the stamp, the time step as a Duration, confidences summing to 1.

The map is loaded like the planner's (planning/map_loader: `map_file`, else `scenario`'s
map). The pure core is prediction/predictor.py; this node only converts messages and reports
processing time, object and mode counts and dropped objects to /diagnostics.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from geometry_msgs.msg import Pose
from rclpy.node import Node

from robotaxi_msgs.msg import PredictedObject, PredictedObjects, PredictedPath, TrackedObjects
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.geometry import yaw_to_quaternion
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.qos import objects_qos
from robotaxi_stack.common.stamps import MonotonicStampGuard, sec_to_duration, stamp_to_ns
from robotaxi_stack.planning.map_loader import load_planning_town
from robotaxi_stack.prediction.predictor import (UNKNOWN, PredictionInputError, Predictor,
                                                 PredictorParams)
from robotaxi_stack.sim.maps import MapError
from robotaxi_stack.sim.scenario import ScenarioError

MAP_FRAME = 'map'


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictionNodeParams(PredictorParams):
    """The node's own parameters plus every PredictorParams field (flat ROS names)."""

    scenario: str = param('', description='predict on this scenario map when map_file is empty')
    map_file: str = param('', description='Lanelet2 .osm map (wins over scenario)')
    map_origin_lat: float = param(35.0, min=-90.0, max=90.0)
    map_origin_lon: float = param(139.0, min=-180.0, max=180.0)
    yaw_rate_from_twist: bool = param(False, description='use twist.angular.z as the yaw rate '
                                      '(trackers that estimate it); else from the history')
    backjump_reset_s: float = param(5.0, min=0.1, max=3600.0,
                                    description='a stamp this far back resets the history')


def core_params(params: PredictionNodeParams) -> PredictorParams:
    """The core's parameters out of the node's."""
    return PredictorParams(**{f.name: getattr(params, f.name)
                              for f in dataclasses.fields(PredictorParams)})


def _yaw(q) -> float:
    norm2 = q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w
    if not math.isfinite(norm2) or norm2 < 1e-12:
        return math.nan
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def _label(obj) -> int:
    if not obj.classification:
        return UNKNOWN
    return int(max(obj.classification, key=lambda c: c.probability).label)


def objects_table(msg: TrackedObjects, yaw_rate_from_twist: bool) -> np.ndarray:
    """TrackedObjects -> (N, 12) predictor rows (OBJECT_COLUMNS + OPTIONAL_COLUMNS); the
    object-frame twist becomes a signed speed and a map-frame velocity. Bad values stay in
    (the core drops and counts them)."""
    rows = np.full((len(msg.objects), 12), np.nan)
    for i, obj in enumerate(msg.objects):
        pose = obj.pose.pose
        yaw = _yaw(pose.orientation)
        twist = obj.twist.twist
        v_x, v_y = (twist.linear.x, twist.linear.y) if obj.has_twist else (0.0, 0.0)
        c, s = math.cos(yaw), math.sin(yaw)
        yaw_rate = twist.angular.z if obj.has_twist and yaw_rate_from_twist else math.nan
        rows[i] = (obj.object_id, _label(obj), pose.position.x, pose.position.y, yaw, v_x,
                   c * v_x - s * v_y, s * v_x + c * v_y, obj.dimensions.x, obj.dimensions.y,
                   yaw_rate, math.nan)
    return rows


class PredictionNode(Node):
    def __init__(self, **kwargs):
        super().__init__('prediction', **kwargs)
        self.params = declare_node_parameters(self, PredictionNodeParams)
        town = load_planning_town(self.params.map_file, self.params.scenario,
                                  self.params.map_origin_lat, self.params.map_origin_lon)
        self.predictor = Predictor(town, core_params(self.params))
        self.diagnostics = NodeDiagnostics(self)
        self._stamps = MonotonicStampGuard(self.params.backjump_reset_s)
        self._time_step = sec_to_duration(self.params.time_step_s)
        self._publisher = self.create_publisher(PredictedObjects, '~/output/objects',
                                                objects_qos())
        self.create_subscription(TrackedObjects, '~/input/objects', self._on_objects,
                                 objects_qos())
        self.get_logger().info(f'predicting on {len(town.lanelets)} lanelets, '
                               f'{self.params.horizon_s:g} s at {self.params.time_step_s:g} s')

    def _on_objects(self, msg: TrackedObjects) -> None:
        health = self.diagnostics.health
        with self.diagnostics.timer.measure():
            out = PredictedObjects()
            out.header = msg.header
            if msg.header.frame_id not in (MAP_FRAME, ''):
                # Defined output: the objects without paths (consumers then extrapolate).
                health.set('frame', ERROR, f'objects in frame {msg.header.frame_id!r}, '
                                           f'expected {MAP_FRAME!r}: not predicted')
                out.objects = [self._object_msg(obj) for obj in msg.objects]
                self._publisher.publish(out)
                return
            health.clear('frame')
            stamp_s = self._history_stamp(stamp_to_ns(msg.header.stamp))
            table = objects_table(msg, self.params.yaw_rate_from_twist)
            try:
                result = self.predictor.predict(table, stamp_s)
            except PredictionInputError as error:  # cannot happen with objects_table rows
                health.set('input', ERROR, str(error))
                return
            health.clear('input')
            by_id: dict[int, object] = {}
            for obj in msg.objects:
                by_id.setdefault(int(obj.object_id), obj)
            for prediction in result.objects:
                source = by_id.get(prediction.object_id)
                if source is not None:
                    out.objects.append(self._object_msg(source, prediction))
            self._publisher.publish(out)
        dropped = result.dropped_nonfinite + result.dropped_duplicate
        if dropped:
            health.set('objects', WARN, f'{result.dropped_nonfinite} objects with non-finite '
                                        f'values and {result.dropped_duplicate} duplicate ids '
                                        'dropped')
        else:
            health.clear('objects')
        values = health.values
        values['objects'] = str(len(result.objects))
        values['modes'] = str(sum(len(p.confidences) for p in result.objects))
        values['dropped_nonfinite'] = str(result.dropped_nonfinite)
        values['dropped_duplicate'] = str(result.dropped_duplicate)
        values['off_lane_vehicles'] = str(result.off_lane)
        values['dropped_offroad_unknown'] = str(result.dropped_offroad_unknown)

    def _history_stamp(self, stamp_ns: int) -> float | None:
        """The stamp for the core's history, or None for a stamp that went back (then the
        objects are still predicted, from their current state only)."""
        resets = self._stamps.resets
        if not self._stamps.accept(stamp_ns):
            self.diagnostics.health.set('stamp', WARN, 'out-of-order objects: predicted '
                                                       'without history')
            return None
        if self._stamps.resets != resets:
            self.predictor.reset()
            self.diagnostics.health.set('stamp', WARN, 'time jumped back: history reset')
        else:
            self.diagnostics.health.clear('stamp')
        return stamp_ns * 1e-9

    def _object_msg(self, source, prediction=None) -> PredictedObject:
        obj = PredictedObject(object_id=source.object_id, classification=source.classification,
                              pose=source.pose, twist=source.twist,
                              dimensions=source.dimensions)
        if prediction is None:
            return obj
        paths = prediction.paths
        quaternions = yaw_to_quaternion(paths[:, :, 2])
        for k in range(len(paths)):
            path = PredictedPath(time_step=self._time_step,
                                 confidence=float(prediction.confidences[k]))
            poses = []
            for j in range(paths.shape[1]):
                pose = Pose()
                pose.position.x = float(paths[k, j, 0])
                pose.position.y = float(paths[k, j, 1])
                pose.position.z = source.pose.pose.position.z
                pose.orientation.z = float(quaternions[k, j, 2])
                pose.orientation.w = float(quaternions[k, j, 3])
                poses.append(pose)
            path.path = poses
            obj.paths.append(path)
        return obj


def main(args=None) -> int:
    return run_node(PredictionNode, 'prediction',
                    (ParameterError, MapError, ScenarioError), args)


if __name__ == '__main__':
    sys.exit(main())
