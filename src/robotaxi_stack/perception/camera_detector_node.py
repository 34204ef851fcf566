"""camera_detector_node: camera image -> 2D detections (robotaxi_msgs/Detections2D).

Input: `~/input/image` (sensor_msgs/Image rgb8 or bgr8, e.g. /sensing/camera/front/image_raw;
best effort, or reliable with `reliable_inputs` for the simulator's recording mode). Output:
`~/output/detections` (robotaxi_msgs/Detections2D -> /perception/camera/detections) with the
image's header (stamp and camera frame), one Detection2D per object: pixel box centre and size
(CameraInfo convention: pixel centres at integer coordinates), score, and one ObjectClass
(CAR, TRUCK, BICYCLE or PEDESTRIAN) whose probability is the score.

The detector is perception/camera_detector.py with the ONNX model of `model_path` (default:
models/camera_detector.onnx from the installed share directory or the source tree). Frames
must have the size of the vehicle's camera_front (config/vehicle/<vehicle>.yaml) unless
`expected_width_px` / `expected_height_px` say otherwise.

Every image gets exactly one output. An image that cannot be processed (encoding other than
rgb8/bgr8, a size other than the camera's, a step or data length that does not fit, an
inference failure) gives an empty Detections2D with the image's header and an ERROR diagnostic
naming the problem. Processing time, stage times (pre, inference, post) and the execution
provider go to /diagnostics.
"""

from __future__ import annotations

import dataclasses
import sys
import time

from rclpy.node import Node
from sensor_msgs.msg import Image

from robotaxi_msgs.msg import Detection2D, Detections2D, ObjectClass
from robotaxi_stack.common.diagnostics import ERROR, NodeDiagnostics
from robotaxi_stack.common.image import ImageError, image_to_array
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.common.stamps import NS_PER_S, stamp_to_ns
from robotaxi_stack.perception.camera_detector import (STAGES, SUPPORTED_ENCODINGS,
                                                       CameraDetections, CameraDetector,
                                                       CameraDetectorParams)
from robotaxi_stack.perception.inference import InferenceError
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle


@dataclasses.dataclass(frozen=True, kw_only=True)
class CameraDetectorNodeParams(CameraDetectorParams):
    """The node's own parameters plus every CameraDetectorParams field (flat ROS names)."""

    expected_width_px: int = param(0, min=0, max=16384,
                                   description='frames of another width are rejected (0: the '
                                   'width of the vehicle\'s camera_front)')
    expected_height_px: int = param(0, min=0, max=16384,
                                    description='frames of another height are rejected (0: '
                                    'the height of the vehicle\'s camera_front)')
    vehicle: str = param('bmw_320i', description='config/vehicle/<name>.yaml (or a path) '
                         'holding the camera_front calibration')
    reliable_inputs: bool = param(False, description='subscribe the image reliable (the '
                                  'scenario runner\'s reliable simulator topics)')
    diagnostics_period_s: float = param(1.0, min=0.1, max=10.0,
                                        description='/diagnostics publishing period')


def core_params(params: CameraDetectorNodeParams, camera_width_px: int,
                camera_height_px: int) -> CameraDetectorParams:
    """The core's parameters out of the node's; an expected size of 0 becomes the camera's."""
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(CameraDetectorParams)}
    values['expected_width_px'] = params.expected_width_px or camera_width_px
    values['expected_height_px'] = params.expected_height_px or camera_height_px
    return CameraDetectorParams(**values)


def detections_msg(result: CameraDetections | None, header) -> Detections2D:
    """Detections2D with `header` holding the detections of `result` (none for None)."""
    msg = Detections2D()
    msg.header = header
    if result is None or len(result) == 0:
        return msg
    boxes = result.boxes
    centre = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    size = boxes[:, 2:] - boxes[:, :2]
    detections = []
    for k in range(len(result)):  # per detection (<= max_detections), never per pixel
        score = float(result.scores[k])
        detections.append(Detection2D(
            classification=[ObjectClass(label=int(result.labels[k]), probability=score)],
            score=score, center_x_px=float(centre[k, 0]), center_y_px=float(centre[k, 1]),
            size_x_px=float(size[k, 0]), size_y_px=float(size[k, 1])))
    msg.detections = detections
    return msg


class CameraDetectorNode(Node):
    def __init__(self, **kwargs):
        super().__init__('camera_detector', **kwargs)
        self.params = declare_node_parameters(self, CameraDetectorNodeParams)
        camera = load_vehicle(self.params.vehicle).camera_front
        self.detector = CameraDetector(core_params(self.params, camera.width_px,
                                                             camera.height_px))
        self.diagnostics = NodeDiagnostics(self, period_s=self.params.diagnostics_period_s)
        self.published = 0
        self.rejected = 0
        self._publisher = self.create_publisher(Detections2D, '~/output/detections',
                                                objects_qos())
        self.create_subscription(Image, '~/input/image', self._on_image,
                                 sensor_input_qos(self.params.reliable_inputs))
        session = self.detector.session
        self.diagnostics.health.values.update(published='0', rejected='0',
                                              provider=session.provider)
        core = self.detector.params
        self.get_logger().info(
            f'camera detector {core.resolved_model_path()} on {session.provider}, '
            f'{core.expected_width_px} x {core.expected_height_px} frames, score >= '
            f'{core.score_threshold:g}')

    def _on_image(self, msg: Image) -> None:
        start = time.perf_counter()
        result, problem = self._detect(msg)
        out = detections_msg(result if not problem else None, msg.header)
        self._publisher.publish(out)
        self.published += 1
        self.diagnostics.timer.add((time.perf_counter() - start) * 1e3, self._latency_ms(msg))
        health = self.diagnostics.health
        values = health.values
        if problem:
            self.rejected += 1
            health.set('input', ERROR, problem)
            stamp_s = stamp_to_ns(msg.header.stamp) / NS_PER_S
            self.get_logger().warning(f'image at {stamp_s:.3f} s: {problem}',
                                      throttle_duration_sec=5.0)
        else:
            health.clear('input')
        values['published'] = str(self.published)
        values['rejected'] = str(self.rejected)
        values['detections'] = str(len(out.detections))
        if result is not None:
            for stage in STAGES:
                values[f'stage_{stage}_ms'] = f'{result.stage_ms.get(stage, 0.0):.3f}'
            values['inference_median_ms'] = f'{self.detector.session.timing().median_ms:.3f}'

    def _detect(self, msg: Image) -> tuple[CameraDetections | None, str]:
        """(result, problem): problem is '' when the image was processed."""
        if msg.encoding not in SUPPORTED_ENCODINGS:
            return None, (f'image encoding {msg.encoding!r} is not supported (expected one of '
                          f'{list(SUPPORTED_ENCODINGS)}): not processed')
        try:
            image = image_to_array(msg)  # zero-copy view on msg.data
        except ImageError as error:
            return None, f'malformed image: {error}: not processed'
        result = self.detector.detect(image, msg.encoding)
        if result.reason:
            return result, f'{result.reason}: not processed'
        return result, ''

    def _latency_ms(self, msg: Image) -> float | None:
        """Image stamp to output in node-clock time (sim time under use_sim_time)."""
        stamp_ns = stamp_to_ns(msg.header.stamp)
        now_ns = self.get_clock().now().nanoseconds
        if stamp_ns <= 0 or now_ns <= 0:
            return None
        return (now_ns - stamp_ns) / 1e6


def main(args=None) -> int:
    return run_node(CameraDetectorNode, 'camera_detector',
                    (ParameterError, VehicleConfigError, InferenceError), args)


if __name__ == '__main__':
    sys.exit(main())
