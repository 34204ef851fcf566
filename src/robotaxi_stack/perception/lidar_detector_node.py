"""lidar_detector_node: LiDAR point cloud -> classified 3D objects + UNKNOWN obstacles.

Input: `~/input/points` (sensor_msgs/PointCloud2 in `lidar_frame` or base_link; best effort,
or reliable with `reliable_inputs`). Output: `~/output/objects` (robotaxi_msgs/DetectedObjects
-> /perception/lidar/objects), frame base_link, header.stamp = the cloud's stamp.

Each cloud runs through the ONNX detector (perception/lidar_detector.py: car, truck/bus,
bicycle, pedestrian boxes) and the obstacle path (perception/obstacles.py: ground removal and
clustering). Clusters that a detection explains are dropped, the rest are published as UNKNOWN
objects (`merge_with_clusters`), so debris the network does not know is still reported and
nothing twice. A detection: classification [its class, probability = score], existence = score,
pose = box centre and yaw, dimensions = box size; a cluster: as lidar_obstacle_node fills it.

Every cloud gets exactly one output. A cloud that cannot be processed (unexpected frame_id,
no x/y/z fields, malformed layout, more than `max_points` points, empty, no finite point)
gives an empty DetectedObjects with the cloud's stamp and a diagnostic naming the problem;
clouds with some non-finite points are processed without them and counted in a WARN. When
inference fails at run time the obstacle clusters are still published, with an ERROR.
Processing time, stage times (pre, inference, post, obstacles, merge), the provider and
counts go to /diagnostics.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2

from robotaxi_msgs.msg import DetectedObjects
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.pointcloud import PointCloudError, pointcloud2_to_array
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.common.stamps import NS_PER_S, stamp_to_ns
from robotaxi_stack.perception.inference import InferenceError
from robotaxi_stack.perception.lidar_detector import (LidarDetector, LidarDetectorParams,
                                                      LidarObjects, merge_with_clusters)
from robotaxi_stack.perception.lidar_obstacle_node import (BASE_LINK, detected_objects,
                                                      position_covariances)
from robotaxi_stack.perception.obstacles import ObstacleDetector, ObstacleParams
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle

# Variance of the pose entries the BEV boxes do not estimate (roll, pitch) and of z.
_UNESTIMATED_VAR = 0.01
_STAGES = ('pre', 'inference', 'post', 'obstacles', 'merge')
# Detector reasons that are a valid empty frame rather than an input problem.
_VALID_EMPTY = ('no points inside the grid', 'no detections above score_threshold')


@dataclasses.dataclass(frozen=True, kw_only=True)
class LidarDetectorNodeParams(LidarDetectorParams, ObstacleParams):
    """The node's own parameters plus every LidarDetectorParams and ObstacleParams field."""

    vehicle: str = param('bmw_320i', description='config/vehicle/<name>.yaml (or a path) '
                         'holding the lidar_top extrinsic')
    lidar_frame: str = param('lidar_top', description='frame_id of clouds in the sensor '
                             'frame; base_link clouds are accepted too')
    reliable_inputs: bool = param(False, description='subscribe the cloud reliable (the '
                                  'scenario runner\'s reliable simulator topics)')
    max_points: int = param(1_000_000, min=1000, max=50_000_000,
                            description='larger clouds are rejected (a misconfigured driver '
                            'or accumulated sweeps would blow the frame budget)')
    merge_iou_threshold: float = param(0.1, min=0.0, max=1.0,
                                       description='a cluster overlapping a (grown) detection '
                                       'by more BEV IoU is the same object')
    merge_margin_m: float = param(0.5, min=0.0, max=5.0,
                                  description='detection boxes grow by this on every side '
                                  'for the cluster merge')
    merge_min_height_ratio: float = param(0.4, min=0.0, max=1.0,
                                          description='clusters lower than this fraction of '
                                          'a detection\'s height stay separate objects '
                                          '(debris in front of a vehicle)')
    existence_half_points: float = param(10.0, min=0.1, max=10000.0,
                                         description='cluster point count with existence '
                                         'probability 0.5 (p = n / (n + this))')
    max_existence_probability: float = param(0.95, min=0.01, max=1.0,
                                             description='cap of a cluster\'s existence '
                                             'probability')
    unknown_class_probability: float = param(1.0, min=0.01, max=1.0,
                                             description='probability of a cluster\'s UNKNOWN '
                                             'class')
    position_sigma_min_m: float = param(0.1, min=0.01, max=5.0,
                                        description='position sigma of a point-sized cluster')
    position_sigma_per_extent: float = param(0.3, min=0.0, max=2.0,
                                             description='cluster position sigma per metre of '
                                             'box extent along each box axis')
    yaw_sigma_rad: float = param(0.5, min=0.01, max=3.2,
                                 description='yaw sigma of a cluster box (no heading)')
    detection_position_sigma_m: float = param(0.2, min=0.01, max=5.0,
                                              description='position sigma of a detection')
    detection_position_sigma_per_extent: float = param(0.05, min=0.0, max=2.0,
                                                       description='detection position '
                                                       'sigma per metre of box extent')
    detection_yaw_sigma_rad: float = param(0.15, min=0.01, max=3.2,
                                           description='yaw sigma of a detection')
    diagnostics_period_s: float = param(1.0, min=0.1, max=10.0,
                                        description='/diagnostics publishing period')

    def __post_init__(self) -> None:
        # Each core validates its own fields and their consistency.
        detector_params(self)
        obstacle_params(self)


def detector_params(params: LidarDetectorNodeParams) -> LidarDetectorParams:
    """The detector core's parameters out of the node's."""
    return LidarDetectorParams(**{f.name: getattr(params, f.name)
                                  for f in dataclasses.fields(LidarDetectorParams)})


def obstacle_params(params: LidarDetectorNodeParams) -> ObstacleParams:
    """The obstacle core's parameters out of the node's."""
    return ObstacleParams(**{f.name: getattr(params, f.name)
                             for f in dataclasses.fields(ObstacleParams)})


def objects_msg(objects: LidarObjects | None, header_stamp,
                params: LidarDetectorNodeParams) -> DetectedObjects:
    """DetectedObjects in base_link with `header_stamp`: one object per row of `objects`
    (none for None)."""
    msg = DetectedObjects()
    msg.header.stamp = header_stamp
    msg.header.frame_id = BASE_LINK
    if objects is None or len(objects) == 0:
        return msg
    boxes = objects.boxes
    detector = objects.from_detector
    # position_covariances takes obstacle-order boxes [x, y, z, yaw, length, width, height].
    obstacle_order = boxes[:, [0, 1, 2, 6, 3, 4, 5]]
    covariance = np.zeros((len(boxes), 6, 6))
    covariance[detector, :2, :2] = position_covariances(
        obstacle_order[detector], params.detection_position_sigma_m,
        params.detection_position_sigma_per_extent)
    covariance[~detector, :2, :2] = position_covariances(
        obstacle_order[~detector], params.position_sigma_min_m,
        params.position_sigma_per_extent)
    covariance[:, 2, 2] = covariance[:, 3, 3] = covariance[:, 4, 4] = _UNESTIMATED_VAR
    covariance[:, 5, 5] = np.where(detector, params.detection_yaw_sigma_rad,
                                   params.yaw_sigma_rad) ** 2
    class_probability = np.where(detector, objects.scores, params.unknown_class_probability)
    msg.objects = detected_objects(boxes[:, :3], boxes[:, 6], boxes[:, 3:6], objects.labels,
                                   class_probability, objects.scores, covariance)
    return msg


class LidarDetectorNode(Node):
    def __init__(self, **kwargs):
        super().__init__('lidar_detector', **kwargs)
        self.params = declare_node_parameters(self, LidarDetectorNodeParams)
        vehicle = load_vehicle(self.params.vehicle)
        extrinsic = vehicle.lidar_top.transform()
        self.detector = LidarDetector(detector_params(self.params), extrinsic)
        core = obstacle_params(self.params)
        # The polar ground grid is centred on the sensor for lidar-frame clouds and on
        # base_link for clouds already moved there (as in lidar_obstacle_node).
        self._obstacles = {self.params.lidar_frame: ObstacleDetector(core, extrinsic),
                           BASE_LINK: ObstacleDetector(core, None)}
        self.diagnostics = NodeDiagnostics(self, period_s=self.params.diagnostics_period_s)
        self.published = 0
        self.rejected = 0
        self._publisher = self.create_publisher(DetectedObjects, '~/output/objects',
                                                objects_qos())
        self.create_subscription(PointCloud2, '~/input/points', self._on_points,
                                 sensor_input_qos(self.params.reliable_inputs))
        session = self.detector.session
        self.diagnostics.health.values.update(
            published='0', rejected='0', model=str(self.detector.model_path),
            provider=session.provider,
            warmup_ms=','.join(f'{t:.1f}' for t in session.timing().warmup_ms))
        self.get_logger().info(f'detector {self.detector.model_path} on {session.provider}, '
                               f'{self.params.lidar_frame} clouds of vehicle {vehicle.name}')

    def _on_points(self, msg: PointCloud2) -> None:
        start = time.perf_counter()
        objects, stage_ms, counts, problem, level = self._process(msg)
        out = objects_msg(objects, msg.header.stamp, self.params)
        self._publisher.publish(out)
        self.published += 1
        processing_ms = (time.perf_counter() - start) * 1e3
        self.diagnostics.timer.add(processing_ms, self._latency_ms(msg))
        health = self.diagnostics.health
        values = health.values
        if problem:
            if objects is None:
                self.rejected += 1
            health.set('input', level, problem)
            stamp_s = stamp_to_ns(msg.header.stamp) / NS_PER_S
            self.get_logger().warning(f'cloud at {stamp_s:.3f} s: {problem}',
                                      throttle_duration_sec=5.0)
        else:
            health.clear('input')
        non_finite = counts.get('non_finite_points', 0)
        if non_finite and objects is not None:
            health.set('points', WARN, f'{non_finite} non-finite points dropped')
        else:
            health.clear('points')
        values['published'] = str(self.published)
        values['rejected'] = str(self.rejected)
        values['objects'] = str(len(out.objects))
        for name, value in counts.items():
            values[name] = str(value)
        for stage in _STAGES:
            values[f'stage_{stage}_ms'] = f'{stage_ms.get(stage, 0.0):.3f}'
        timing = self.detector.session.timing()
        values['inference_p50_ms'] = f'{timing.median_ms:.3f}'

    def _process(self, msg: PointCloud2
                 ) -> tuple[LidarObjects | None, dict, dict, str, int]:
        """(objects or None, stage_ms, counts, problem, level): problem '' when processed;
        objects None when the cloud could not be processed at all."""
        frame_id = msg.header.frame_id
        obstacles = self._obstacles.get(frame_id)
        if obstacles is None:
            return None, {}, {}, (f'cloud in frame {frame_id!r}, expected '
                                  f'{self.params.lidar_frame!r} or {BASE_LINK!r}: not '
                                  'processed'), ERROR
        declared = int(msg.width) * int(msg.height)
        if declared > self.params.max_points:
            return None, {}, {}, (f'cloud of {declared} points exceeds max_points = '
                                  f'{self.params.max_points}: not processed'), ERROR
        names = {field.name for field in msg.fields}
        missing = [axis for axis in 'xyz' if axis not in names]
        if missing:
            return None, {}, {}, (f'cloud has no field(s) {missing} (fields: '
                                  f'{sorted(names)}): not processed'), ERROR
        try:
            points = pointcloud2_to_array(msg)  # zero-copy view on msg.data
        except PointCloudError as error:
            return None, {}, {}, f'malformed cloud: {error}', ERROR
        detections = self.detector.detect(points,
                                          sensor_frame=frame_id == self.params.lidar_frame)
        stage_ms = dict(detections.stage_ms)
        counts = dataclasses.asdict(detections.stats)
        failed = detections.reason.startswith('inference failed')
        if not detections.processed and not failed \
                and detections.reason not in _VALID_EMPTY:
            level = ERROR if detections.reason.startswith('bad input') else WARN
            return None, stage_ms, counts, f'{detections.reason}: no objects', level
        start = time.perf_counter()
        clusters = obstacles.detect(points)
        stage_ms['obstacles'] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        p = self.params
        objects = merge_with_clusters(detections, clusters,
                                      iou_threshold=p.merge_iou_threshold,
                                      margin_m=p.merge_margin_m,
                                      min_height_ratio=p.merge_min_height_ratio,
                                      cluster_half_points=p.existence_half_points,
                                      max_cluster_score=p.max_existence_probability)
        stage_ms['merge'] = (time.perf_counter() - start) * 1e3
        counts.update(detections=len(detections), clusters=len(clusters),
                      unknown_objects=len(objects) - len(detections))
        if failed:
            return objects, stage_ms, counts, f'{detections.reason}: obstacle clusters ' \
                'only', ERROR
        return objects, stage_ms, counts, '', WARN

    def _latency_ms(self, msg: PointCloud2) -> float | None:
        """Cloud stamp to output in node-clock time (sim time under use_sim_time)."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        now_ns = self.get_clock().now().nanoseconds
        if stamp_ns <= 0 or now_ns <= 0:
            return None
        return (now_ns - stamp_ns) / 1e6


def main(args=None) -> int:
    return run_node(LidarDetectorNode, 'lidar_detector',
                    (ParameterError, VehicleConfigError, InferenceError), args)


if __name__ == '__main__':
    sys.exit(main())
