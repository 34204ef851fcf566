"""tracking_node: /perception/objects (DetectedObjects) -> /perception/tracked_objects.

Inputs: `~/input/objects` (robotaxi_msgs/DetectedObjects in map or base_link, reliable),
`~/input/odometry` (nav_msgs/Odometry map -> base_link; best effort, or reliable with
`reliable_inputs` for the simulator's recording mode), used to move base_link detections into
the map frame at their stamp.
Output: `~/output/objects` (robotaxi_msgs/TrackedObjects, map frame, header.stamp = the stamp
of the detections), confirmed tracks only, twist in the object frame (linear.x along the
heading, as sim/conversions.ground_truth_msg), pose and twist covariances filled.

Every accepted frame that is the newest one so far is published (an empty DetectedObjects
gives the coasting tracks, possibly none). A frame that is rejected (unsupported frame_id, no
ego pose for base_link, duplicate stamp, older than max_out_of_order_s) or a late frame that
was merged into the history publishes nothing: its stamp was already superseded downstream.
Rejections, dropped detections and defaulted covariances raise WARN diagnostics with counts.

base_link detections newer than the newest odometry wait for the odometry of their stamp: both
come from the same sensor instant, but the executor may take the objects first when this node
was busy (seen as "no ego pose" rejections, 22 in one closed-loop ride). A frame still waiting
when the next arrives is processed then (and rejected if its pose never came), counted.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node

from robotaxi_msgs.msg import (DetectedObject, DetectedObjects, ObjectClass, TrackedObject,
                               TrackedObjects)
from robotaxi_stack.common.diagnostics import WARN, NodeDiagnostics
from robotaxi_stack.common.geometry import GeometryError, quaternion_to_yaw
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.common.stamps import NS_PER_S, ns_to_stamp, stamp_to_ns
from robotaxi_stack.tracking.tracker import (NUM_CLASSES, Detections, Tracker, TrackerParams,
                                             TrackSet)

# Pose covariance indices (row-major 6x6 over x, y, z, roll, pitch, yaw) and the variances of
# the entries a flat-ground tracker does not estimate.
_XY_YAW = np.array([0, 1, 5])
_UNESTIMATED_VAR = 0.01
_MIN_CLASS_PROBABILITY = 0.01


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingNodeParams(TrackerParams):
    reliable_inputs: bool = param(False, description='subscribe odometry reliable (the '
                                  'scenario runner\'s reliable simulator topics)')
    diagnostics_period_s: float = param(1.0, min=0.1, max=10.0,
                                        description='/diagnostics publishing period')


def core_params(params: TrackingNodeParams) -> TrackerParams:
    return TrackerParams(**{f.name: getattr(params, f.name)
                            for f in dataclasses.fields(TrackerParams)})


def _yaw(q) -> float:
    """Quaternion message -> yaw; NaN for a non-finite or zero quaternion (dropped later)."""
    values = (q.x, q.y, q.z, q.w)
    try:
        if sum(v * v for v in values) < 1e-12:
            return math.nan
        return float(quaternion_to_yaw(values))
    except GeometryError:
        return math.nan


def detections_from_msg(msg: DetectedObjects) -> Detections:
    """DetectedObjects -> core Detections in msg.header.frame_id (non-finite values kept: the
    tracker drops and counts them)."""
    n = len(msg.objects)
    xy = np.empty((n, 2))
    z = np.empty(n)
    yaw = np.empty(n)
    dims = np.empty((n, 3))
    probs = np.zeros((n, NUM_CLASSES))
    cov = np.empty((n, 3, 3))
    existence = np.empty(n)
    for i, obj in enumerate(msg.objects):
        pose = obj.pose.pose
        xy[i] = pose.position.x, pose.position.y
        z[i] = pose.position.z
        yaw[i] = _yaw(pose.orientation)
        dims[i] = obj.dimensions.x, obj.dimensions.y, obj.dimensions.z
        full = np.asarray(obj.pose.covariance, dtype=np.float64).reshape(6, 6)
        cov[i] = full[np.ix_(_XY_YAW, _XY_YAW)]
        existence[i] = obj.existence_probability
        for c in obj.classification:
            if 0 <= c.label < NUM_CLASSES:
                probs[i, c.label] += c.probability
        if not obj.classification:
            probs[i] = math.nan  # unknown class: the tracker substitutes a uniform vote
    return Detections(msg.header.frame_id, xy, z, yaw, dims, probs, cov, existence)


def detected_objects_msg(detections: Detections, stamp) -> DetectedObjects:
    """Core Detections -> DetectedObjects (for tests and the simulated detector)."""
    msg = DetectedObjects()
    msg.header.stamp = stamp
    msg.header.frame_id = detections.frame_id
    for i in range(len(detections)):
        obj = DetectedObject(existence_probability=float(detections.existence[i]))
        label = int(np.argmax(detections.class_probs[i]))
        obj.classification.append(ObjectClass(label=label, probability=float(
            detections.class_probs[i, label])))
        obj.pose.pose.position.x, obj.pose.pose.position.y = (float(v) for v in
                                                              detections.xy_m[i])
        obj.pose.pose.position.z = float(detections.z_m[i])
        half = 0.5 * float(detections.yaw_rad[i])
        obj.pose.pose.orientation.z, obj.pose.pose.orientation.w = math.sin(half), math.cos(half)
        full = np.zeros((6, 6))
        full[np.ix_(_XY_YAW, _XY_YAW)] = detections.covariance[i]
        obj.pose.covariance = full.reshape(36)
        obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = (float(v) for v in
                                                                detections.dims_m[i])
        msg.objects.append(obj)
    return msg


def tracked_objects_msg(tracks: TrackSet, stamp) -> TrackedObjects:
    """Confirmed tracks -> TrackedObjects in map, twist in the object frame."""
    msg = TrackedObjects()
    msg.header.stamp = stamp
    msg.header.frame_id = 'map'
    for k in range(len(tracks)):
        obj = TrackedObject(object_id=int(tracks.ids[k]),
                            existence_probability=float(tracks.existence[k]), has_twist=True)
        probs = tracks.class_probs[k]
        for label in np.argsort(-probs):
            if probs[label] < _MIN_CLASS_PROBABILITY and obj.classification:
                break
            obj.classification.append(ObjectClass(label=int(label),
                                                  probability=float(probs[label])))
        pose = obj.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in tracks.xyz_m[k])
        half = 0.5 * float(tracks.yaw_rad[k])
        pose.orientation.z, pose.orientation.w = math.sin(half), math.cos(half)
        cov = np.diag([0.0, 0.0, _UNESTIMATED_VAR, _UNESTIMATED_VAR, _UNESTIMATED_VAR, 0.0])
        cov[np.ix_(_XY_YAW, _XY_YAW)] = tracks.pose_covariance[k]
        obj.pose.covariance = cov.reshape(36)
        obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = (float(v) for v in
                                                                tracks.dims_m[k])
        twist = obj.twist.twist
        twist.linear.x, twist.linear.y = (float(v) for v in tracks.velocity_object_mps[k])
        twist.angular.z = float(tracks.yaw_rate_rps[k])
        twist_cov = np.diag([0.0, 0.0, _UNESTIMATED_VAR, _UNESTIMATED_VAR, _UNESTIMATED_VAR,
                             _UNESTIMATED_VAR])
        twist_cov[:2, :2] = tracks.velocity_covariance[k]
        obj.twist.covariance = twist_cov.reshape(36)
        msg.objects.append(obj)
    return msg


class TrackingNode(Node):
    def __init__(self, **kwargs):
        super().__init__('tracking', **kwargs)
        self.params = declare_node_parameters(self, TrackingNodeParams)
        self.tracker = Tracker(core_params(self.params))
        self.diagnostics = NodeDiagnostics(self, period_s=self.params.diagnostics_period_s)
        self.published = 0
        self._newest_pose_ns = -1
        self._pending: DetectedObjects | None = None  # waiting for the odometry of its stamp
        self.unsynced = 0
        self._publisher = self.create_publisher(TrackedObjects, '~/output/objects',
                                                objects_qos())
        self.create_subscription(DetectedObjects, '~/input/objects', self._on_objects,
                                 objects_qos())
        self.create_subscription(Odometry, '~/input/odometry', self._on_odometry,
                                 sensor_input_qos(self.params.reliable_inputs))
        self._update_values()

    def _on_odometry(self, msg: Odometry) -> None:
        pose = msg.pose.pose
        ok = self.tracker.add_ego_pose(stamp_to_ns(msg.header.stamp) / NS_PER_S,
                                       pose.position.x, pose.position.y,
                                       _yaw(pose.orientation))
        if ok:
            self.diagnostics.health.clear('odometry')
            self._newest_pose_ns = max(self._newest_pose_ns, stamp_to_ns(msg.header.stamp))
            pending = self._pending
            if pending is not None and stamp_to_ns(pending.header.stamp) <= self._newest_pose_ns:
                self._pending = None
                self._process(pending)
        else:
            self.diagnostics.health.set('odometry', WARN, 'non-finite or repeated odometry '
                                        'ignored')

    def _on_objects(self, msg: DetectedObjects) -> None:
        if self._pending is not None:
            self.unsynced += 1
            self.diagnostics.health.set('odometry_sync', WARN, f'{self.unsynced} frames '
                                        'processed before the odometry of their stamp')
            pending, self._pending = self._pending, None
            self._process(pending)
        if (msg.header.frame_id == 'base_link'
                and stamp_to_ns(msg.header.stamp) > self._newest_pose_ns):
            self._pending = msg
            return
        self._process(msg)

    def _process(self, msg: DetectedObjects) -> None:
        stamp_ns = stamp_to_ns(msg.header.stamp)
        with self.diagnostics.timer.measure():
            result = self.tracker.update(stamp_ns / NS_PER_S, detections_from_msg(msg))
            if result.accepted and result.is_latest:
                self._publisher.publish(tracked_objects_msg(result.tracks,
                                                            ns_to_stamp(stamp_ns)))
                self.published += 1
        health = self.diagnostics.health
        if not result.accepted:
            health.set('input', WARN, result.reason)
        else:
            health.clear('input')
        if result.dropped_detections or result.defaulted_covariances:
            health.set('detections', WARN, f'{result.dropped_detections} non-finite detections '
                       f'dropped, {result.defaulted_covariances} invalid covariances replaced')
        else:
            health.clear('detections')
        self._update_values()

    def _update_values(self) -> None:
        stats = self.tracker.stats
        values = self.diagnostics.health.values
        values['tracks'] = str(len(self.tracker.output()))
        values['tracks_all'] = str(self.tracker.num_tracks)
        for name, value in dataclasses.asdict(stats).items():
            values[name] = str(value)


def main(args=None) -> int:
    return run_node(TrackingNode, 'tracking', (ParameterError,), args)


if __name__ == '__main__':
    sys.exit(main())
