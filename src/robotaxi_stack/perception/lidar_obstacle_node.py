"""lidar_obstacle_node: LiDAR point cloud -> UNKNOWN obstacles (DetectedObjects in base_link).

Input: `~/input/points` (sensor_msgs/PointCloud2 in `lidar_frame` or base_link; best effort,
or reliable with `reliable_inputs` for the simulator's recording mode). Output:
`~/output/objects` (robotaxi_msgs/DetectedObjects -> /perception/lidar/objects or, until the
ONNX detectors exist, /perception/objects), frame base_link, header.stamp = the cloud's stamp.

Every solid cluster of perception/obstacles.py becomes one UNKNOWN object: pose = box centre
(yaw of the box, which has no heading), dimensions = box length, width, height, existence
probability rising with the cluster's point count, an (x, y, yaw) covariance whose position
part grows with the box extent along each box axis (a cluster's centre is only as good as the
part of the object the LiDAR sees), has_twist false.

Every cloud gets exactly one output. A cloud that cannot be processed (unexpected frame_id,
no x/y/z fields, malformed layout, more than `max_points` points, empty, no finite point)
gives an empty DetectedObjects with the cloud's stamp and a diagnostic naming the problem;
clouds with some non-finite points are processed without them and counted in a WARN.
Processing time, stage times and point/cluster counts go to /diagnostics.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from robotaxi_msgs.msg import DetectedObject, DetectedObjects, ObjectClass
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.pointcloud import PointCloudError, pointcloud2_to_array
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.common.stamps import NS_PER_S, stamp_to_ns
from robotaxi_stack.perception.obstacles import (ObstacleDetector, ObstacleParams,
                                                 ObstacleResult)
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle

BASE_LINK = 'base_link'
# Variance of the pose entries a BEV cluster does not estimate (z, roll, pitch), as the
# tracker's messages fill them.
_UNESTIMATED_VAR = 0.01
_STAGES = ('crop', 'ground', 'cluster', 'boxes')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LidarObstacleNodeParams(ObstacleParams):
    """The node's own parameters plus every ObstacleParams field (flat ROS names)."""

    vehicle: str = param('bmw_320i', description='config/vehicle/<name>.yaml (or a path) '
                         'holding the lidar_top extrinsic')
    lidar_frame: str = param('lidar_top', description='frame_id of clouds in the sensor '
                             'frame; base_link clouds are accepted too')
    reliable_inputs: bool = param(False, description='subscribe the cloud reliable (the '
                                  'scenario runner\'s reliable simulator topics)')
    max_points: int = param(1_000_000, min=1000, max=50_000_000,
                            description='larger clouds are rejected (a misconfigured driver '
                            'or accumulated sweeps would blow the frame budget)')
    existence_half_points: float = param(10.0, min=0.1, max=10000.0,
                                         description='cluster point count with existence '
                                         'probability 0.5 (p = n / (n + this))')
    max_existence_probability: float = param(0.95, min=0.01, max=1.0,
                                             description='cap of the existence probability')
    unknown_class_probability: float = param(1.0, min=0.01, max=1.0,
                                             description='probability of the UNKNOWN class')
    position_sigma_min_m: float = param(0.1, min=0.01, max=5.0,
                                        description='position sigma of a point-sized cluster')
    position_sigma_per_extent: float = param(0.3, min=0.0, max=2.0,
                                             description='position sigma per metre of box '
                                             'extent along each box axis (0.29: uniform)')
    yaw_sigma_rad: float = param(0.5, min=0.01, max=3.2,
                                 description='yaw sigma of a cluster box (no heading)')
    diagnostics_period_s: float = param(1.0, min=0.1, max=10.0,
                                        description='/diagnostics publishing period')


def core_params(params: LidarObstacleNodeParams) -> ObstacleParams:
    """The core's parameters out of the node's."""
    return ObstacleParams(**{f.name: getattr(params, f.name)
                             for f in dataclasses.fields(ObstacleParams)})


def existence_probabilities(point_counts: np.ndarray, half_points: float,
                            cap: float) -> np.ndarray:
    """(K,) existence probability n / (n + half_points), capped: more returns, more certain."""
    counts = np.asarray(point_counts, dtype=np.float64)
    return np.minimum(counts / (counts + half_points), cap)


def position_covariances(boxes: np.ndarray, sigma_min_m: float,
                         sigma_per_extent: float) -> np.ndarray:
    """(K, 2, 2) base_link (x, y) covariance of box centres.

    boxes: (K, >=6) [x, y, z, yaw, length, width, ...]. Along each box axis the sigma is
    hypot(sigma_min_m, sigma_per_extent * extent): a long box's centre moves with the part
    of the object that happens to be visible, mostly along its length.
    """
    yaw, length, width = boxes[:, 3], boxes[:, 4], boxes[:, 5]
    var_along = sigma_min_m ** 2 + (sigma_per_extent * length) ** 2
    var_across = sigma_min_m ** 2 + (sigma_per_extent * width) ** 2
    c, s = np.cos(yaw), np.sin(yaw)
    cov = np.empty((len(boxes), 2, 2))
    cov[:, 0, 0] = c * c * var_along + s * s * var_across
    cov[:, 1, 1] = s * s * var_along + c * c * var_across
    cov[:, 0, 1] = cov[:, 1, 0] = c * s * (var_along - var_across)
    return cov


def objects_msg(result: ObstacleResult | None, header_stamp,
                params: LidarObstacleNodeParams) -> DetectedObjects:
    """DetectedObjects in base_link with `header_stamp`: one UNKNOWN object per cluster of
    `result` (none for None)."""
    msg = DetectedObjects()
    msg.header.stamp = header_stamp
    msg.header.frame_id = BASE_LINK
    if result is None or len(result) == 0:
        return msg
    boxes = result.boxes
    existence = existence_probabilities(result.point_counts, params.existence_half_points,
                                        params.max_existence_probability)
    xy_cov = position_covariances(boxes, params.position_sigma_min_m,
                                  params.position_sigma_per_extent)
    covariance = np.zeros((len(boxes), 6, 6))
    covariance[:, :2, :2] = xy_cov
    covariance[:, 2, 2] = covariance[:, 3, 3] = covariance[:, 4, 4] = _UNESTIMATED_VAR
    covariance[:, 5, 5] = params.yaw_sigma_rad ** 2
    count = len(boxes)
    msg.objects = detected_objects(
        boxes[:, :3], boxes[:, 3], boxes[:, 4:7], np.full(count, ObjectClass.UNKNOWN),
        np.full(count, params.unknown_class_probability), existence, covariance)
    return msg


def detected_objects(center_m: np.ndarray, yaw_rad: np.ndarray, size_m: np.ndarray,
                     labels: np.ndarray, class_probability: np.ndarray,
                     existence: np.ndarray, covariance: np.ndarray) -> list[DetectedObject]:
    """One DetectedObject per row (no twist): centres (N, 3), yaws (N,), sizes (N, 3) as
    length, width, height, one class each, (N, 6, 6) pose covariances."""
    half_yaw = 0.5 * yaw_rad
    quat_z, quat_w = np.sin(half_yaw), np.cos(half_yaw)
    objects = []
    for k in range(len(center_m)):  # per object (a few hundred at most), never per point
        obj = DetectedObject(existence_probability=float(existence[k]), has_twist=False)
        obj.classification.append(ObjectClass(label=int(labels[k]),
                                              probability=float(class_probability[k])))
        pose = obj.pose.pose
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in center_m[k])
        pose.orientation.z, pose.orientation.w = float(quat_z[k]), float(quat_w[k])
        obj.pose.covariance = covariance[k].reshape(36)
        obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = (float(v) for v in size_m[k])
        objects.append(obj)
    return objects


class LidarObstacleNode(Node):
    def __init__(self, **kwargs):
        super().__init__('lidar_obstacle', **kwargs)
        self.params = declare_node_parameters(self, LidarObstacleNodeParams)
        vehicle = load_vehicle(self.params.vehicle)
        obstacle_params = core_params(self.params)
        # One detector per accepted frame: the polar ground grid is centred on the sensor
        # for lidar-frame clouds and on base_link for clouds already moved there.
        self._detectors = {
            self.params.lidar_frame: ObstacleDetector(obstacle_params,
                                                      vehicle.lidar_top.transform()),
            BASE_LINK: ObstacleDetector(obstacle_params, None),
        }
        self.diagnostics = NodeDiagnostics(self, period_s=self.params.diagnostics_period_s)
        self.published = 0
        self.rejected = 0
        self._publisher = self.create_publisher(DetectedObjects, '~/output/objects',
                                                objects_qos())
        self.create_subscription(PointCloud2, '~/input/points', self._on_points,
                                 sensor_input_qos(self.params.reliable_inputs))
        self.diagnostics.health.values.update(published='0', rejected='0')
        self.get_logger().info(f'obstacles from {self.params.lidar_frame} clouds of vehicle '
                               f'{vehicle.name}, range {self.params.max_range_m:g} m')

    def _on_points(self, msg: PointCloud2) -> None:
        start = time.perf_counter()
        result, problem, level = self._detect(msg)
        out = objects_msg(result if not problem else None, msg.header.stamp, self.params)
        self._publisher.publish(out)
        self.published += 1
        processing_ms = (time.perf_counter() - start) * 1e3
        self.diagnostics.timer.add(processing_ms, self._latency_ms(msg))
        health = self.diagnostics.health
        values = health.values
        if problem:
            self.rejected += 1
            health.set('input', level, problem)
            stamp_s = stamp_to_ns(msg.header.stamp) / NS_PER_S
            self.get_logger().warning(f'cloud at {stamp_s:.3f} s: {problem}',
                                      throttle_duration_sec=5.0)
        else:
            health.clear('input')
        non_finite = result.stats.non_finite_points if result is not None else 0
        if non_finite and not problem:
            health.set('points', WARN, f'{non_finite} non-finite points dropped')
        else:
            health.clear('points')
        values['published'] = str(self.published)
        values['rejected'] = str(self.rejected)
        values['objects'] = str(len(out.objects))
        if result is not None:
            for name, value in dataclasses.asdict(result.stats).items():
                values[name] = str(value)
            for stage in _STAGES:
                values[f'stage_{stage}_ms'] = f'{result.stage_ms.get(stage, 0.0):.3f}'

    def _detect(self, msg: PointCloud2) -> tuple[ObstacleResult | None, str, int]:
        """(result, problem, level): problem is '' when the cloud was processed."""
        frame_id = msg.header.frame_id
        detector = self._detectors.get(frame_id)
        if detector is None:
            return None, (f'cloud in frame {frame_id!r}, expected '
                          f'{self.params.lidar_frame!r} or {BASE_LINK!r}: not processed'), ERROR
        declared = int(msg.width) * int(msg.height)
        if declared > self.params.max_points:
            return None, (f'cloud of {declared} points exceeds max_points = '
                          f'{self.params.max_points}: not processed'), ERROR
        names = {field.name for field in msg.fields}
        missing = [axis for axis in 'xyz' if axis not in names]
        if missing:
            return None, (f'cloud has no field(s) {missing} (fields: {sorted(names)}): '
                          'not processed'), ERROR
        try:
            points = pointcloud2_to_array(msg)  # zero-copy view on msg.data
        except PointCloudError as error:
            return None, f'malformed cloud: {error}', ERROR
        result = detector.detect(points)
        # Nothing inside the crop is a valid empty frame (e.g. an open field); empty, all
        # non-finite or unreadable clouds are input problems.
        if not result.reason or result.reason == 'no points inside the crop':
            return result, '', WARN
        level = ERROR if result.reason.startswith('bad input') else WARN
        return result, f'{result.reason}: no obstacles', level

    def _latency_ms(self, msg: PointCloud2) -> float | None:
        """Cloud stamp to output in node-clock time (sim time under use_sim_time)."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        now_ns = self.get_clock().now().nanoseconds
        if stamp_ns <= 0 or now_ns <= 0:
            return None
        return (now_ns - stamp_ns) / 1e6


def main(args=None) -> int:
    return run_node(LidarObstacleNode, 'lidar_obstacle',
                    (ParameterError, VehicleConfigError), args)


if __name__ == '__main__':
    sys.exit(main())
