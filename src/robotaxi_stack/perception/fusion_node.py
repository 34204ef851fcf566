"""fusion_node: LiDAR objects + camera detections -> /perception/objects.

Inputs: `~/input/lidar_objects` (robotaxi_msgs/DetectedObjects in base_link: detector objects
and UNKNOWN clusters) and `~/input/camera_detections` (robotaxi_msgs/Detections2D in
`camera_frame`); best effort, or reliable with `reliable_inputs` for the simulator's recording
mode. Output: `~/output/objects` (robotaxi_msgs/DetectedObjects, base_link, header.stamp =
the LiDAR objects' stamp). perception/fusion.py is the core; the calibration is the
`camera_front` of config/vehicle/<vehicle>.yaml.

Pairing. Each LiDAR message is fused with the camera detections of the nearest stamp within
`max_stamp_difference_s`. It is published as soon as that choice is final - a camera message
stamped at or after it has arrived (cameras arrive in stamp order) - or when the next LiDAR
message arrives, or `camera_wait_s` after its own arrival, whichever comes first. The wait is
counted on the steady clock from arrival, not in ROS time: under a lock-stepped simulator ROS
time can stand still (waiting for a command) or race ahead of the camera's processing, and a
missing camera must never stall the objects. Without a camera in reach the LiDAR objects go
out unchanged with a WARN ("no camera").

Every LiDAR message gets exactly one output, except a message not newer than the last one
published (out of order or repeated), which is dropped with a WARN: its stamp was superseded
downstream. A stamp more than `clock_reset_s` behind is a restarted simulator or a replay
loop: the node starts over instead. LiDAR objects in another frame than base_link give an
empty output and an ERROR; camera messages in another frame than `camera_frame` are ignored
with an ERROR; LiDAR objects or camera detections with non-finite or invalid values are
dropped with a WARN (the core counts them). Processing time, stage times and the fusion
counts go to /diagnostics.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from robotaxi_msgs.msg import DetectedObjects, Detections2D, ObjectClass
from robotaxi_stack.common.diagnostics import ERROR, WARN, NodeDiagnostics
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.common.params import ParameterError, declare_node_parameters, param
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.common.stamps import NS_PER_S, sec_to_ns, stamp_to_ns
from robotaxi_stack.perception.fusion import (LABEL_UNKNOWN, NO_CAMERA_REASON,
                                              CameraCalibration, CameraDetections,
                                              FusionInputError, FusionParams, FusionResult,
                                              LidarObjects, fuse)
from robotaxi_stack.sim.vehicle_dynamics import VehicleConfigError, load_vehicle

BASE_LINK = 'base_link'
_STAGES = ('project', 'match', 'boost')


@dataclasses.dataclass(frozen=True, kw_only=True)
class FusionNodeParams(FusionParams):
    """The node's own parameters plus every FusionParams field (flat ROS names)."""

    vehicle: str = param('bmw_320i', description='config/vehicle/<name>.yaml (or a path) '
                         'holding the camera_front calibration')
    camera_frame: str = param('camera_front', description='frame_id of the camera '
                              'detections')
    reliable_inputs: bool = param(False, description='subscribe both inputs reliable (the '
                                  'scenario runner\'s reliable simulator topics)')
    max_stamp_difference_s: float = param(0.05, min=0.0, max=1.0,
                                          description='largest LiDAR-camera stamp difference '
                                          'still fused')
    camera_wait_s: float = param(0.05, min=0.0, max=5.0,
                                 description='longest wait (steady clock, from the LiDAR '
                                 'message\'s arrival) for its camera detections')
    camera_history: int = param(10, min=1, max=1000,
                                description='camera messages kept for pairing')
    clock_reset_s: float = param(5.0, min=0.5, max=3600.0,
                                 description='a LiDAR stamp this far behind the newest is a '
                                 'restarted clock: start over instead of dropping')
    diagnostics_period_s: float = param(1.0, min=0.1, max=10.0,
                                        description='/diagnostics publishing period')


def core_params(params: FusionNodeParams) -> FusionParams:
    """The core's parameters out of the node's."""
    return FusionParams(**{f.name: getattr(params, f.name)
                           for f in dataclasses.fields(FusionParams)})


def _top_class(classification) -> tuple[int, float]:
    """(label, probability) of the most probable hypothesis; UNKNOWN, 0 when there is none."""
    if not classification:
        return LABEL_UNKNOWN, 0.0
    best = max(classification, key=lambda c: c.probability)
    return int(best.label), float(best.probability)


def lidar_objects_from_msg(msg: DetectedObjects) -> LidarObjects:
    """DetectedObjects -> core LidarObjects (non-finite values kept: the core drops them)."""
    n = len(msg.objects)
    boxes = np.empty((n, 7))
    quaternions = np.empty((n, 4))
    labels = np.empty(n, np.int64)
    probability = np.empty(n)
    existence = np.empty(n)
    for i, obj in enumerate(msg.objects):  # per object (hundreds at most), never per point
        position, orientation = obj.pose.pose.position, obj.pose.pose.orientation
        boxes[i, :6] = (position.x, position.y, position.z, obj.dimensions.x,
                        obj.dimensions.y, obj.dimensions.z)
        quaternions[i] = orientation.x, orientation.y, orientation.z, orientation.w
        labels[i], probability[i] = _top_class(obj.classification)
        existence[i] = obj.existence_probability
    x, y, z, w = quaternions.T
    with np.errstate(invalid='ignore'):
        boxes[:, 6] = np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
        # A zero quaternion is no orientation: make the box invalid rather than yaw 0.
        boxes[np.sum(quaternions ** 2, axis=1) < 1e-12, 6] = np.nan
    return LidarObjects(boxes, labels, probability, existence, labels == LABEL_UNKNOWN)


def camera_detections_from_msg(msg: Detections2D) -> CameraDetections:
    """Detections2D -> core CameraDetections (centre and size -> corner pixels)."""
    k = len(msg.detections)
    boxes = np.empty((k, 4))
    labels = np.empty(k, np.int64)
    scores = np.empty(k)
    for i, det in enumerate(msg.detections):
        half_w, half_h = 0.5 * det.size_x_px, 0.5 * det.size_y_px
        boxes[i] = (det.center_x_px - half_w, det.center_y_px - half_h,
                    det.center_x_px + half_w, det.center_y_px + half_h)
        labels[i] = _top_class(det.classification)[0]
        scores[i] = det.score
    return CameraDetections(boxes, labels, scores)


def fused_objects_msg(msg: DetectedObjects, result: FusionResult | None) -> DetectedObjects:
    """Output in base_link with the LiDAR stamp: the input objects that the core kept, with
    the refined class and raised existence written in; every other field (pose, covariance,
    twist) as the LiDAR gave it. None: no objects."""
    out = DetectedObjects()
    out.header.stamp = msg.header.stamp
    out.header.frame_id = BASE_LINK
    if result is None:
        return out
    objects = [msg.objects[i] for i in result.lidar_index]
    for j in np.flatnonzero((result.camera_index >= 0) | result.boosted):
        obj = objects[j]
        obj.existence_probability = float(result.existence[j])
        label, probability = int(result.labels[j]), float(result.class_probability[j])
        if (label, probability) != _top_class(obj.classification):
            obj.classification = [ObjectClass(label=label, probability=probability)]
    out.objects = objects
    return out


@dataclasses.dataclass
class _Pending:
    msg: DetectedObjects
    stamp_ns: int
    arrival_s: float  # time.monotonic()


class FusionNode(Node):
    def __init__(self, **kwargs):
        super().__init__('fusion', **kwargs)
        self.params = declare_node_parameters(self, FusionNodeParams)
        vehicle = load_vehicle(self.params.vehicle)
        self.calibration = CameraCalibration.from_camera_config(vehicle.camera_front)
        self._core_params = core_params(self.params)
        self._max_difference_ns = sec_to_ns(self.params.max_stamp_difference_s)
        self._reset_ns = sec_to_ns(self.params.clock_reset_s)
        # (stamp_ns, detections) in arrival order; the oldest arrivals make room.
        self._cameras: collections.deque = collections.deque(maxlen=self.params.camera_history)
        self._pending: _Pending | None = None
        self._last_published_ns: int | None = None
        self.diagnostics = NodeDiagnostics(self, period_s=self.params.diagnostics_period_s)
        self.counters = collections.Counter(lidar_received=0, camera_received=0, published=0,
                                            lidar_only=0, dropped_stale=0, rejected_camera=0,
                                            late_camera=0, clock_resets=0)
        self._last_drop_s = -np.inf  # time.monotonic() of the last dropped LiDAR message
        self._publisher = self.create_publisher(DetectedObjects, '~/output/objects',
                                                objects_qos())
        self._wait_timer = None
        if self.params.camera_wait_s > 0.0:
            self._wait_timer = self.create_timer(
                self.params.camera_wait_s, self._on_wait_timeout,
                clock=Clock(clock_type=ClockType.STEADY_TIME), autostart=False)
        qos = sensor_input_qos(self.params.reliable_inputs)
        self.create_subscription(DetectedObjects, '~/input/lidar_objects', self._on_lidar, qos)
        self.create_subscription(Detections2D, '~/input/camera_detections', self._on_camera,
                                 qos)
        self._update_counters()
        camera = vehicle.camera_front
        self.get_logger().info(f'fusing with {self.params.camera_frame} of vehicle '
                               f'{vehicle.name} ({camera.width_px}x{camera.height_px} px, '
                               f'fx {camera.fx_px:g} px)')

    # -- inputs ------------------------------------------------------------------------------
    def _on_lidar(self, msg: DetectedObjects) -> None:
        self.counters['lidar_received'] += 1
        stamp_ns = stamp_to_ns(msg.header.stamp)
        pending, last = self._pending, self._last_published_ns
        newest = pending.stamp_ns if pending is not None else last
        if newest is not None and newest - stamp_ns > self._reset_ns:
            if pending is not None:
                self._publish(pending)
            self._restart(stamp_ns)
            pending = None
        elif ((last is not None and stamp_ns <= last)
              or (pending is not None and stamp_ns == pending.stamp_ns)):
            self.counters['dropped_stale'] += 1
            self._last_drop_s = time.monotonic()
            # Not newer than the last published one, or a repeat of the waiting one.
            reference = last if last is not None and stamp_ns <= last else stamp_ns
            self.diagnostics.health.set('order', WARN, f'LiDAR objects at '
                                        f'{stamp_ns / NS_PER_S:.3f} s not newer than the last '
                                        f'one ({reference / NS_PER_S:.3f} s): dropped')
            self._update_counters()
            return
        entry = _Pending(msg, stamp_ns, time.monotonic())
        if pending is not None and stamp_ns < pending.stamp_ns:
            self._publish(entry)  # late already: no wait, the newer one keeps waiting
            return
        if pending is not None:
            self._publish(pending)  # superseded: the newer frame must not wait behind it
        if self._wait_timer is None or self._camera_decided(stamp_ns):
            self._publish(entry)
        else:
            self._pending = entry
            self._wait_timer.reset()
            self._update_counters()

    def _on_camera(self, msg: Detections2D) -> None:
        self.counters['camera_received'] += 1
        health = self.diagnostics.health
        if msg.header.frame_id != self.params.camera_frame:
            self.counters['rejected_camera'] += 1
            health.set('camera_input', ERROR, f'camera detections in frame '
                       f'{msg.header.frame_id!r}, expected {self.params.camera_frame!r}: '
                       'ignored')
            self._update_counters()
            return
        health.clear('camera_input')
        stamp_ns = stamp_to_ns(msg.header.stamp)
        last = self._last_published_ns
        if last is not None and 0 <= last - stamp_ns <= self._reset_ns:
            self.counters['late_camera'] += 1  # its LiDAR frame went out without it
        self._cameras = collections.deque(
            ((s, d) for s, d in self._cameras if s != stamp_ns), maxlen=self._cameras.maxlen)
        self._cameras.append((stamp_ns, camera_detections_from_msg(msg)))
        pending = self._pending
        if pending is not None and self._camera_decided(pending.stamp_ns):
            self._publish(pending)
        self._update_counters()

    def _on_wait_timeout(self) -> None:
        if self._pending is not None:
            self._publish(self._pending)
        elif self._wait_timer is not None:
            self._wait_timer.cancel()

    # -- pairing -----------------------------------------------------------------------------
    def _camera_decided(self, stamp_ns: int) -> bool:
        """Whether no camera message still to come can be nearer to stamp_ns than the ones
        here: one at or after it has arrived (same clock, not a reset's leftover)."""
        return any(0 <= s - stamp_ns <= self._reset_ns for s, _ in self._cameras)

    def _nearest_camera(self, stamp_ns: int) -> tuple[int, CameraDetections] | None:
        best = min(self._cameras, key=lambda entry: abs(entry[0] - stamp_ns), default=None)
        if best is None or abs(best[0] - stamp_ns) > self._max_difference_ns:
            return None
        return best

    def _restart(self, stamp_ns: int) -> None:
        self.counters['clock_resets'] += 1
        self._last_published_ns = None
        self._cameras = collections.deque(
            ((s, d) for s, d in self._cameras if abs(s - stamp_ns) <= self._reset_ns),
            maxlen=self._cameras.maxlen)
        self.get_logger().info(f'LiDAR stamp jumped back to {stamp_ns / NS_PER_S:.3f} s: '
                               'clock restarted, pairing starts over')

    # -- output ------------------------------------------------------------------------------
    def _publish(self, entry: _Pending) -> None:
        if entry is self._pending:
            self._pending = None
            if self._wait_timer is not None:
                self._wait_timer.cancel()
        start = time.perf_counter()
        msg, stamp_ns = entry.msg, entry.stamp_ns
        camera = self._nearest_camera(stamp_ns)
        health = self.diagnostics.health
        values = health.values
        result = None
        if msg.header.frame_id != BASE_LINK:
            health.set('input', ERROR, f'LiDAR objects in frame {msg.header.frame_id!r}, '
                       f'expected {BASE_LINK!r}: empty output')
        else:
            health.clear('input')
            result = fuse(lidar_objects_from_msg(msg), camera[1] if camera else None,
                          self.calibration, self._core_params)
        out = fused_objects_msg(msg, result)
        self._publisher.publish(out)
        self._last_published_ns = stamp_ns
        # A drop stays reported for two diagnostics periods, so that /diagnostics shows it.
        if time.monotonic() - self._last_drop_s > 2.0 * self.params.diagnostics_period_s:
            health.clear('order')
        self.counters['published'] += 1
        # Older cameras cannot pair with any later LiDAR stamp.
        oldest_ns = stamp_ns - self._max_difference_ns
        self._cameras = collections.deque(((s, d) for s, d in self._cameras if s >= oldest_ns),
                                          maxlen=self._cameras.maxlen)
        self.diagnostics.timer.add((time.perf_counter() - start) * 1e3,
                                   self._latency_ms(stamp_ns))

        if camera is None:
            self.counters['lidar_only'] += 1
            health.set('camera', WARN, f'no camera detections within '
                       f'{self.params.max_stamp_difference_s:g} s of the LiDAR stamp '
                       f'{stamp_ns / NS_PER_S:.3f} s: LiDAR objects published unfused')
            values['camera_dt_ms'] = 'nan'
        else:
            health.clear('camera')
            values['camera_dt_ms'] = f'{(camera[0] - stamp_ns) / 1e6:.3f}'
        problems = [r for r in result.reason.split('; ') if r and r != NO_CAMERA_REASON] \
            if result is not None else []
        if problems:
            health.set('fusion', WARN, '; '.join(problems))
        else:
            health.clear('fusion')
        values['wait_ms'] = f'{(time.monotonic() - entry.arrival_s) * 1e3:.3f}'
        values['objects'] = str(len(out.objects))
        if result is not None:
            for name, value in dataclasses.asdict(result.counts).items():
                values[name] = str(value)
            for stage in _STAGES:
                values[f'stage_{stage}_ms'] = f'{result.stage_ms.get(stage, 0.0):.3f}'
        self._update_counters()

    def _update_counters(self) -> None:
        values = self.diagnostics.health.values
        for name, value in self.counters.items():
            values[name] = str(value)

    def _latency_ms(self, stamp_ns: int) -> float | None:
        """LiDAR stamp to output in node-clock time (sim time under use_sim_time)."""
        now_ns = self.get_clock().now().nanoseconds
        if stamp_ns <= 0 or now_ns <= 0:
            return None
        return (now_ns - stamp_ns) / 1e6


def main(args=None) -> int:
    return run_node(FusionNode, 'fusion',
                    (ParameterError, VehicleConfigError, FusionInputError), args)


if __name__ == '__main__':
    sys.exit(main())
