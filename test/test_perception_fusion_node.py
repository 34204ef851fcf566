"""fusion_node in process with rclpy: LiDAR objects + camera detections in -> fused objects out
in base_link with the LiDAR stamp, whichever input arrives first; a missing camera -> the LiDAR
objects unfused with a WARN; one output per LiDAR message in stamp order, old and repeated
stamps dropped with a WARN, a clock restart starts over; wrong frames; a bad parameter stops
start-up."""

import contextlib
import math
import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter

from builtin_interfaces.msg import Time
from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import (DetectedObject, DetectedObjects, Detection2D, Detections2D,
                               ObjectClass)
from robotaxi_stack.common.diagnostics import ERROR, WARN
from robotaxi_stack.common.params import load_param_file, params_from_dict
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.perception.fusion import CameraCalibration, project_boxes
from robotaxi_stack.perception.fusion_node import (FusionNode, FusionNodeParams,
                                                   camera_detections_from_msg,
                                                   lidar_objects_from_msg, main)
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle

CAR = [16.5, 0.8, 0.75, 4.6, 1.9, 1.5, 0.2]  # base_link x, y, z, l, w, h, yaw
PEDESTRIAN = [21.55, -2.0, 0.875, 0.5, 0.6, 1.75, 0.0]
BEHIND = [-8.0, 0.5, 0.75, 4.6, 1.9, 1.5, 3.0]
T1 = Time(sec=42, nanosec=100_000_000)
T2 = Time(sec=42, nanosec=200_000_000)
T3 = Time(sec=42, nanosec=300_000_000)


@pytest.fixture(scope='module')
def calibration():
    return CameraCalibration.from_camera_config(load_vehicle('bmw_320i').camera_front)


def image_box(box, calibration):
    boxes, in_view = project_boxes(np.array([box], dtype=np.float64), calibration)
    assert in_view[0]
    return boxes[0]


def lidar_msg(stamp, frame_id='base_link'):
    """A car (CAR 0.6), an UNKNOWN cluster at the pedestrian, a car behind (CAR 0.55)."""
    msg = DetectedObjects()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for box, label, probability, existence in ((CAR, ObjectClass.CAR, 0.6, 0.7),
                                               (PEDESTRIAN, ObjectClass.UNKNOWN, 1.0, 0.5),
                                               (BEHIND, ObjectClass.CAR, 0.55, 0.4)):
        obj = DetectedObject(existence_probability=existence)
        obj.classification.append(ObjectClass(label=label, probability=probability))
        pose = obj.pose.pose
        pose.position.x, pose.position.y, pose.position.z = box[:3]
        pose.orientation.z, pose.orientation.w = math.sin(0.5 * box[6]), math.cos(0.5 * box[6])
        obj.pose.covariance = (np.eye(6) * 0.25).reshape(36)
        obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = box[3:6]
        msg.objects.append(obj)
    return msg


def camera_msg(stamp, calibration, frame_id='camera_front'):
    """The car seen as a TRUCK (0.9), the pedestrian as a PEDESTRIAN (0.8)."""
    msg = Detections2D()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for box, label, score in ((CAR, ObjectClass.TRUCK, 0.9),
                              (PEDESTRIAN, ObjectClass.PEDESTRIAN, 0.8)):
        x0, y0, x1, y1 = image_box(box, calibration)
        det = Detection2D(score=score, center_x_px=0.5 * (x0 + x1),
                          center_y_px=0.5 * (y0 + y1), size_x_px=x1 - x0, size_y_px=y1 - y0)
        det.classification.append(ObjectClass(label=label, probability=score))
        msg.detections.append(det)
    return msg


@pytest.fixture
def make_graph():
    # Each graph stays up until the test ends, however many it makes.
    stack = contextlib.ExitStack()

    def make(**overrides):
        values = {'reliable_inputs': True, 'diagnostics_period_s': 0.1, **overrides}
        node, peer, executor = stack.enter_context(node_graph(
            lambda context: FusionNode(context=context, parameter_overrides=[
                Parameter(name, value=value) for name, value in values.items()])))
        received, diagnostics = [], []
        peer.create_subscription(DetectedObjects, '/fusion/output/objects', received.append,
                                 objects_qos())
        peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
        lidar = peer.create_publisher(DetectedObjects, '/fusion/input/lidar_objects',
                                      sensor_input_qos(True))
        camera = peer.create_publisher(Detections2D, '/fusion/input/camera_detections',
                                       sensor_input_qos(True))
        assert spin_until(executor, lambda: lidar.get_subscription_count() > 0
                          and camera.get_subscription_count() > 0
                          and node.count_subscribers('/fusion/output/objects') > 0)
        return SimpleNamespace(node=node, executor=executor, lidar=lidar, camera=camera,
                               received=received, diagnostics=diagnostics)

    with stack:
        yield make


def _send_lidar(graph, msg):
    """Publish and spin until the node has taken it in."""
    count = graph.node.counters['lidar_received']
    graph.lidar.publish(msg)
    assert spin_until(graph.executor, lambda: graph.node.counters['lidar_received'] > count)


def _send_camera(graph, msg):
    count = graph.node.counters['camera_received']
    graph.camera.publish(msg)
    assert spin_until(graph.executor, lambda: graph.node.counters['camera_received'] > count)


def _wait_outputs(graph, count):
    assert spin_until(graph.executor, lambda: len(graph.received) >= count)
    return graph.received[count - 1]


def _stamp(msg):
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _classes(msg):
    return [[(c.label, round(c.probability, 3)) for c in obj.classification]
            for obj in msg.objects]


def _assert_fused(msg, stamp):
    assert _stamp(msg) == (stamp.sec, stamp.nanosec)
    assert msg.header.frame_id == 'base_link'
    assert len(msg.objects) == 3
    car, pedestrian, behind = msg.objects
    # The car: a confident camera TRUCK outvotes an unsure LiDAR CAR; existence noisy-or.
    assert [c.label for c in car.classification] == [ObjectClass.TRUCK]
    assert car.existence_probability == pytest.approx(1.0 - 0.3 * (1.0 - 0.6 * 0.9), abs=1e-6)
    # The cluster takes the camera's class.
    assert [(c.label, pytest.approx(c.probability, abs=1e-6))
            for c in pedestrian.classification] == [(ObjectClass.PEDESTRIAN, 0.8)]
    assert pedestrian.existence_probability > 0.5
    # The car behind the camera is untouched; poses and covariances are the LiDAR's.
    assert _classes(lidar_msg(stamp))[2] == _classes(msg)[2]
    assert behind.existence_probability == pytest.approx(0.4)
    assert car.pose.pose.position.x == pytest.approx(CAR[0])
    np.testing.assert_allclose(np.asarray(car.pose.covariance), (np.eye(6) * 0.25).ravel())


def test_camera_then_lidar_is_fused_with_the_lidar_stamp(make_graph, calibration):
    graph = make_graph()
    # The camera stamp differs by 20 ms (< max_stamp_difference_s): still its pair.
    _send_camera(graph, camera_msg(Time(sec=42, nanosec=120_000_000), calibration))
    _send_lidar(graph, lidar_msg(T1))
    _assert_fused(_wait_outputs(graph, 1), T1)
    node = graph.node
    assert node.diagnostics.health.level == 0, node.diagnostics.health.message
    values = node.diagnostics.health.values
    assert values['matched'] == '2' and values['refined'] == '2'
    assert values['camera_dt_ms'] == '20.000' and values['lidar_only'] == '0'

    def ours():
        return [{kv.key: kv.value for kv in status.values} for array in graph.diagnostics
                for status in array.status if status.name == node.get_fully_qualified_name()]

    assert spin_until(graph.executor, lambda: any(v.get('cycles') == '1' for v in ours()))
    reported = [v for v in ours() if v.get('cycles') == '1'][-1]
    assert float(reported['processing_p50_ms']) > 0.0
    assert float(reported['stage_project_ms']) > 0.0


def test_lidar_waits_for_its_camera(make_graph, calibration):
    graph = make_graph(camera_wait_s=5.0)
    _send_lidar(graph, lidar_msg(T1))
    assert graph.node.counters['published'] == 0  # held for the camera
    _send_camera(graph, camera_msg(T1, calibration))
    _assert_fused(_wait_outputs(graph, 1), T1)


def test_missing_camera_gives_lidar_only_output_and_a_warning(make_graph):
    graph = make_graph()  # camera_wait_s 0.05 s
    _send_lidar(graph, lidar_msg(T1))
    out = _wait_outputs(graph, 1)
    assert _stamp(out) == (T1.sec, T1.nanosec) and out.header.frame_id == 'base_link'
    assert _classes(out) == _classes(lidar_msg(T1))
    assert [o.existence_probability for o in out.objects] == pytest.approx([0.7, 0.5, 0.4])
    health = graph.node.diagnostics.health
    assert health.level == WARN and 'camera: no camera detections' in health.message
    assert health.values['lidar_only'] == '1'


def test_camera_too_far_in_time_is_not_used(make_graph, calibration):
    graph = make_graph(camera_wait_s=5.0)
    _send_camera(graph, camera_msg(T3, calibration))  # 200 ms after T1: decided, no pair
    _send_lidar(graph, lidar_msg(T1))
    out = _wait_outputs(graph, 1)
    assert _classes(out) == _classes(lidar_msg(T1))
    assert graph.node.counters['lidar_only'] == 1


def test_every_lidar_message_gets_one_output_in_stamp_order(make_graph, calibration):
    graph = make_graph(camera_wait_s=5.0)
    _send_lidar(graph, lidar_msg(T2))
    _send_lidar(graph, lidar_msg(T1))  # late: out at once, unfused, T2 keeps waiting
    _send_lidar(graph, lidar_msg(T3))  # T2 goes out unfused, T3 waits
    _send_camera(graph, camera_msg(T3, calibration))
    _wait_outputs(graph, 3)
    assert [_stamp(m) for m in graph.received] == [(42, 100_000_000), (42, 200_000_000),
                                                   (42, 300_000_000)]
    _assert_fused(graph.received[2], T3)
    assert graph.node.counters['lidar_only'] == 2
    # A camera arriving after its LiDAR frame went out is counted as late.
    _send_camera(graph, camera_msg(T2, calibration))
    assert graph.node.counters['late_camera'] == 1


def test_old_or_repeated_lidar_is_dropped_with_a_warning(make_graph):
    graph = make_graph()
    _send_lidar(graph, lidar_msg(T2))
    _wait_outputs(graph, 1)
    _send_lidar(graph, lidar_msg(T1))
    _send_lidar(graph, lidar_msg(T2))
    node = graph.node
    assert node.counters['dropped_stale'] == 2 and node.counters['published'] == 1
    health = node.diagnostics.health
    assert health.level == WARN and 'not newer than the last one (42.200 s)' in health.message
    # A stamp far back (a restarted simulator) starts over instead of being dropped.
    _send_lidar(graph, lidar_msg(Time(sec=1)))
    assert _stamp(_wait_outputs(graph, 2)) == (1, 0)
    assert node.counters['clock_resets'] == 1


def test_wrong_frames_give_empty_output_or_ignored_camera(make_graph, calibration):
    graph = make_graph(camera_wait_s=5.0)
    _send_camera(graph, camera_msg(T1, calibration, frame_id='base_link'))
    health = graph.node.diagnostics.health
    assert health.level == ERROR and "frame 'base_link', expected 'camera_front'" \
        in health.message
    assert graph.node.counters['rejected_camera'] == 1
    _send_lidar(graph, lidar_msg(T1, frame_id='map'))
    _send_camera(graph, camera_msg(T1, calibration))
    out = _wait_outputs(graph, 1)
    assert _stamp(out) == (T1.sec, T1.nanosec) and out.header.frame_id == 'base_link'
    assert out.objects == []
    assert health.level == ERROR and "LiDAR objects in frame 'map'" in health.message


def test_message_conversions(calibration):
    msg = lidar_msg(T1)
    msg.objects[1].classification = []  # no hypothesis: UNKNOWN, a cluster
    msg.objects[2].pose.pose.orientation.w = 0.0
    msg.objects[2].pose.pose.orientation.z = 0.0  # zero quaternion: no orientation
    objects = lidar_objects_from_msg(msg)
    np.testing.assert_allclose(objects.boxes[0], CAR, atol=1e-6)
    assert objects.labels.tolist() == [ObjectClass.CAR, ObjectClass.UNKNOWN, ObjectClass.CAR]
    assert objects.is_cluster.tolist() == [False, True, False]
    assert math.isnan(objects.boxes[2, 6])
    detections = camera_detections_from_msg(camera_msg(T1, calibration))
    np.testing.assert_allclose(detections.boxes[0], image_box(CAR, calibration), atol=1e-3)
    assert detections.labels.tolist() == [ObjectClass.TRUCK, ObjectClass.PEDESTRIAN]
    assert detections.scores == pytest.approx([0.9, 0.8])


def test_parameter_file_gives_the_defaults():
    path = pathlib.Path(__file__).parents[1] / 'config' / 'fusion.param.yaml'
    assert params_from_dict(FusionNodeParams, load_param_file(path, 'fusion')) \
        == FusionNodeParams()


@pytest.mark.parametrize('override, text', [
    ('match_iou_threshold:=0.0', 'match_iou_threshold'),
    ('boost_labels:=[9]', 'boost_labels'),
    ('vehicle:=no_such_car', 'no_such_car'),
])
def test_main_exits_2_on_a_bad_parameter(capsys, override, text):
    assert main(args=['--ros-args', '-p', override]) == 2
    err = capsys.readouterr().err
    assert err.startswith('fusion:') and text in err
