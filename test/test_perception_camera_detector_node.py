"""camera_detector_node in process with rclpy: a held-out simulated frame (rgb8 or bgr8) ->
Detections2D with the image's header holding the clearly visible car; mono8, wrong-size,
bad-step and truncated images -> an empty Detections2D with the image's header and a
diagnostic naming the problem; stage times reach /diagnostics; a bad parameter or a missing
model stops start-up."""

import pathlib

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from builtin_interfaces.msg import Time
from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import Detections2D, ObjectClass
from robotaxi_stack.common.diagnostics import ERROR
from robotaxi_stack.common.image import array_to_image
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.perception.camera_detector import box_iou
from robotaxi_stack.perception.camera_detector_node import CameraDetectorNode, main
from robotaxi_stack.sim import perception_dataset

MODEL = pathlib.Path(__file__).resolve().parents[1] / 'models' / 'camera_detector.onnx'
STAMP = Time(sec=42, nanosec=100_000_000)
FRAME_ID = 'camera_front'
# Held-out frame with a fully visible car about 15 m ahead (test_perception_camera_detector).
CAR_SEED = 11
CAR_BOX = (304.5, 176.5, 379.5, 244.5)


@pytest.fixture(scope='module')
def frame():
    sample = perception_dataset.generate_sample(
        CAR_SEED, split='heldout', lidar=perception_dataset.lidar_config(16, 90))
    return sample.image


@pytest.fixture
def graph():
    # Reliable input: 737 kB images in process must not lose fragments.
    with node_graph(lambda context: CameraDetectorNode(context=context, parameter_overrides=[
            Parameter('reliable_inputs', value=True),
            Parameter('model_path', value=str(MODEL)),
            Parameter('providers', value=['CPUExecutionProvider']),
            Parameter('diagnostics_period_s', value=0.1)])) as (node, peer, executor):
        received = []
        peer.create_subscription(Detections2D, '/camera_detector/output/detections',
                                 received.append, objects_qos())
        publisher = peer.create_publisher(Image, '/camera_detector/input/image',
                                          sensor_input_qos(True))
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0
                          and node.count_subscribers('/camera_detector/output/detections') > 0)
        yield node, peer, executor, publisher, received


def _send(graph, image_msg):
    _, _, executor, publisher, received = graph
    count = len(received)
    publisher.publish(image_msg)
    assert spin_until(executor, lambda: len(received) > count)
    return received[-1]


def _assert_header(msg):
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP.sec, STAMP.nanosec)
    assert msg.header.frame_id == FRAME_ID


def _assert_car(msg):
    _assert_header(msg)
    cars = [d for d in msg.detections if d.classification[0].label == ObjectClass.CAR]
    assert cars
    boxes = np.array([[d.center_x_px - 0.5 * d.size_x_px, d.center_y_px - 0.5 * d.size_y_px,
                       d.center_x_px + 0.5 * d.size_x_px, d.center_y_px + 0.5 * d.size_y_px]
                      for d in cars])
    best = int(np.argmax(box_iou(boxes, np.array([CAR_BOX]))[:, 0]))
    assert box_iou(boxes[best:best + 1], np.array([CAR_BOX]))[0, 0] > 0.7
    assert cars[best].score == cars[best].classification[0].probability > 0.3
    for detection in msg.detections:
        assert detection.score >= 0.3 and len(detection.classification) == 1


def test_frame_gives_detections_with_the_image_header(graph, frame):
    node = graph[0]
    _assert_car(_send(graph, array_to_image(frame, 'rgb8', FRAME_ID, STAMP)))
    assert node.diagnostics.health.level == 0
    values = node.diagnostics.health.values
    assert int(values['detections']) >= 1 and values['provider'] == 'CPUExecutionProvider'
    assert float(values['stage_inference_ms']) > 0.0
    assert node.diagnostics.timer.cycles == 1


def test_bgr8_frame_gives_the_same_car(graph, frame):
    bgr = np.ascontiguousarray(frame[..., ::-1])
    _assert_car(_send(graph, array_to_image(bgr, 'bgr8', FRAME_ID, STAMP)))


def test_processing_and_stage_times_reach_diagnostics(graph, frame):
    node, peer, executor, _, _ = graph
    diagnostics = []
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    _send(graph, array_to_image(frame, 'rgb8', FRAME_ID, STAMP))

    def ours():
        return [{kv.key: kv.value for kv in status.values} for array in diagnostics
                for status in array.status
                if status.name == node.get_fully_qualified_name()]

    assert spin_until(executor, lambda: any(v.get('cycles') == '1' for v in ours()))
    values = [v for v in ours() if v.get('cycles') == '1'][-1]
    assert float(values['processing_p50_ms']) > 0.0
    for stage in ('pre', 'inference', 'post', 'total'):
        assert float(values[f'stage_{stage}_ms']) > 0.0


@pytest.mark.parametrize('case, text', [
    ('mono8', "encoding 'mono8' is not supported"),
    ('small', 'image size 320 x 192 differs'),
    ('step', 'malformed image: step'),
    ('truncated', 'malformed image: data has'),
])
def test_bad_image_gives_an_empty_output_and_a_diagnostic(graph, frame, case, text):
    node = graph[0]
    if case == 'mono8':
        msg = array_to_image(frame[..., 0].copy(), 'mono8', FRAME_ID, STAMP)
    elif case == 'small':
        msg = array_to_image(np.ascontiguousarray(frame[::2, ::2]), 'rgb8', FRAME_ID, STAMP)
    elif case == 'step':
        msg = array_to_image(frame, 'rgb8', FRAME_ID, STAMP)
        msg.step = 640  # less than width * 3 bytes
    else:
        msg = array_to_image(frame[:100].copy(), 'rgb8', FRAME_ID, STAMP)
        msg.height = 384  # declares more rows than the data holds
    out = _send(graph, msg)
    _assert_header(out)
    assert out.detections == []
    assert node.diagnostics.health.level == ERROR
    assert text in node.diagnostics.health.message
    assert node.rejected == 1
    # The next good image clears the condition.
    _assert_car(_send(graph, array_to_image(frame, 'rgb8', FRAME_ID, STAMP)))
    assert node.diagnostics.health.level == 0


@pytest.mark.parametrize('override, text', [
    ('score_threshold:=2.0', 'score_threshold'),
    ('model_path:=/nonexistent/camera_detector.onnx', 'camera_detector.json'),
    ('vehicle:=no_such_car', 'no_such_car'),
])
def test_main_exits_2_on_a_bad_parameter(capsys, override, text):
    assert main(args=['--ros-args', '-p', f'model_path:={MODEL}', '-p', override]) == 2
    err = capsys.readouterr().err
    assert err.startswith('camera_detector:') and text in err
