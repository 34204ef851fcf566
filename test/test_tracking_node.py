"""tracking_node in process with rclpy: base_link detections + odometry in, confirmed tracks
out (ids, stamps, frame, object-frame twist); bad input gives a diagnostic, not a crash."""

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.parameter import Parameter

from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import DetectedObjects, TrackedObjects
from robotaxi_stack.common.qos import objects_qos, sensor_qos
from robotaxi_stack.common.stamps import ns_to_stamp, stamp_to_ns
from robotaxi_stack.tracking.tracker import Detections, class_probs_from_labels
from robotaxi_stack.tracking.tracking_node import (TrackingNode, detected_objects_msg,
                                                   detections_from_msg, main)

EGO_SPEED_MPS = 5.0


@pytest.fixture
def graph():
    with node_graph(lambda context: TrackingNode(context=context, parameter_overrides=[
            Parameter('diagnostics_period_s', value=0.2)])) as graph:
        yield graph


def _odometry(t_ns):
    msg = Odometry()
    msg.header.stamp = ns_to_stamp(t_ns)
    msg.header.frame_id, msg.child_frame_id = 'map', 'base_link'
    msg.pose.pose.position.x = EGO_SPEED_MPS * t_ns * 1e-9
    msg.pose.pose.orientation.w = 1.0
    msg.twist.twist.linear.x = EGO_SPEED_MPS
    return msg


def _car_ahead(t_ns, frame_id='base_link'):
    """A car driving at 10 m/s along the x axis, 20 m ahead of the ego at t = 0."""
    t_s = t_ns * 1e-9
    x_map = 20.0 + 10.0 * t_s
    x = x_map - EGO_SPEED_MPS * t_s if frame_id == 'base_link' else x_map
    dets = Detections(frame_id, np.array([[x, 0.0]]), np.array([0.75]), np.zeros(1),
                      np.array([[4.6, 1.9, 1.5]]), class_probs_from_labels([1], [0.9]),
                      np.diag([0.04, 0.04, 0.0025])[None], np.ones(1))
    return detected_objects_msg(dets, ns_to_stamp(t_ns))


def test_conversions_round_trip():
    msg = _car_ahead(500_000_000, 'map')
    dets = detections_from_msg(msg)
    assert dets.frame_id == 'map' and len(dets) == 1
    assert dets.xy_m[0] == pytest.approx([25.0, 0.0])
    assert dets.covariance[0] == pytest.approx(np.diag([0.04, 0.04, 0.0025]))
    assert np.argmax(dets.class_probs[0]) == 1


def test_tracks_follow_detections_with_stamps_ids_and_object_frame_twist(graph):
    node, peer, executor = graph
    outputs = []
    peer.create_subscription(TrackedObjects, '/tracking/output/objects', outputs.append,
                             objects_qos(depth=50))
    objects = peer.create_publisher(DetectedObjects, '/tracking/input/objects',
                                    objects_qos(depth=50))
    odometry = peer.create_publisher(Odometry, '/tracking/input/odometry', sensor_qos())
    assert spin_until(executor, lambda: objects.get_subscription_count() > 0
                      and odometry.get_subscription_count() > 0
                      and peer.count_publishers('/tracking/output/objects') > 0)
    stamps = [100_000_000 * k + 1_000_000_000 for k in range(20)]
    for t_ns in stamps:
        # Odometry before and after the detection stamp (50 Hz), as localisation delivers it.
        for dt_ns in (-20_000_000, 0, 20_000_000):
            odometry.publish(_odometry(t_ns + dt_ns))
        assert spin_until(executor, lambda: len(node.tracker.poses) >= 2)
        objects.publish(_car_ahead(t_ns))
        assert spin_until(executor, lambda: node.tracker.stamp_ns == t_ns), t_ns
    assert spin_until(executor, lambda: len(outputs) == len(stamps))
    assert [stamp_to_ns(m.header.stamp) for m in outputs] == stamps
    assert all(m.header.frame_id == 'map' for m in outputs)
    confirmed = [m for m in outputs if m.objects]
    assert len(confirmed) >= 15  # confirmed after a few frames, then every frame
    ids = {obj.object_id for m in confirmed for obj in m.objects}
    assert len(ids) == 1
    last = outputs[-1].objects[0]
    t_s = stamps[-1] * 1e-9
    assert last.pose.pose.position.x == pytest.approx(20.0 + 10.0 * t_s, abs=0.3)
    assert last.twist.twist.linear.x == pytest.approx(10.0, abs=0.5)
    assert abs(last.twist.twist.linear.y) < 0.1
    assert last.classification[0].label == 1
    assert 0.5 < last.existence_probability <= 1.0
    cov = np.asarray(last.pose.covariance).reshape(6, 6)
    assert cov[0, 0] > 0.0 and cov[1, 1] > 0.0 and cov[5, 5] > 0.0


def test_bad_input_reports_diagnostics_and_empty_input_gives_empty_output(graph):
    node, peer, executor = graph
    outputs, diagnostics = [], []
    peer.create_subscription(TrackedObjects, '/tracking/output/objects', outputs.append,
                             objects_qos(depth=50))
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 50)
    objects = peer.create_publisher(DetectedObjects, '/tracking/input/objects',
                                    objects_qos(depth=50))
    assert spin_until(executor, lambda: objects.get_subscription_count() > 0
                      and peer.count_publishers('/tracking/output/objects') > 0)

    def reported(text):
        return any(text in status.message for array in diagnostics for status in array.status
                   if status.name == node.get_fully_qualified_name())

    # An unsupported frame: rejected, nothing published.
    wrong = _car_ahead(1_000_000_000, 'map')
    wrong.header.frame_id = 'lidar_top'
    objects.publish(wrong)
    assert spin_until(executor, lambda: reported("frame 'lidar_top'"))
    # base_link detections without any odometry wait for the odometry of their stamp ...
    objects.publish(_car_ahead(1_100_000_000, 'base_link'))
    assert spin_until(executor, lambda: node._pending is not None)
    assert outputs == []
    # A NaN detection is dropped and reported; the frame is still published (empty).
    nan_msg = _car_ahead(1_200_000_000, 'map')
    nan_msg.objects[0].pose.pose.position.x = math.nan
    objects.publish(nan_msg)
    assert spin_until(executor, lambda: len(outputs) == 1)
    assert outputs[0].objects == [] and stamp_to_ns(outputs[0].header.stamp) == 1_200_000_000
    # ... and, when the next frame comes first, are processed then: rejected (no ego pose),
    # counted as unsynced.
    assert node.tracker.stats.rejected_frames == 2
    assert node.unsynced == 1 and node._pending is None
    assert spin_until(executor, lambda: reported('processed before the odometry'))
    assert spin_until(executor, lambda: reported('1 non-finite detections dropped'))
    # An empty frame gives an empty output with its stamp.
    empty = DetectedObjects()
    empty.header.stamp = ns_to_stamp(1_300_000_000)
    empty.header.frame_id = 'map'
    objects.publish(empty)
    assert spin_until(executor, lambda: len(outputs) == 2)
    assert outputs[1].objects == [] and stamp_to_ns(outputs[1].header.stamp) == 1_300_000_000
    # A duplicate stamp is rejected and counted.
    objects.publish(empty)
    assert spin_until(executor, lambda: reported('duplicate stamp'))
    assert node.tracker.stats.duplicate_stamps == 1
    assert len(outputs) == 2
    values = {kv.key: kv.value for array in diagnostics for status in array.status
              for kv in status.values}
    assert 'processing_p50_ms' in values and 'tracks' in values
    assert node.tracker.stats.rejected_frames == 2


def test_main_exits_2_on_a_bad_parameter(capsys):
    assert main(args=['--ros-args', '-p', 'confirm_hits:=9', '-p', 'confirm_window:=4']) == 2
    assert 'confirm_hits' in capsys.readouterr().err
