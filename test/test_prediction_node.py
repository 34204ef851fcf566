"""prediction_node in process with rclpy: TrackedObjects in, PredictedObjects out with the same
header, copied object fields, 16 poses per path at 0.5 s, confidences summing to 1; bad objects
dropped with a diagnostic; a bad parameter stops start-up."""

import math

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter

from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import ObjectClass, PredictedObjects, TrackedObject, TrackedObjects
from robotaxi_stack.common.paths import data_path
from robotaxi_stack.common.qos import objects_qos
from robotaxi_stack.prediction.prediction_node import PredictionNode, main


@pytest.fixture
def graph():
    scenario = str(data_path('scenarios', 'plain_ride.yaml'))
    with node_graph(lambda context: PredictionNode(context=context, parameter_overrides=[
            Parameter('scenario', value=scenario)])) as graph:
        yield graph


def _object(object_id, label, x, y, yaw, speed):
    obj = TrackedObject(object_id=object_id, existence_probability=1.0, has_twist=True)
    obj.classification.append(ObjectClass(label=label, probability=1.0))
    obj.pose.pose.position.x, obj.pose.pose.position.y = x, y
    obj.pose.pose.position.z = 0.75
    obj.pose.pose.orientation.z = math.sin(yaw / 2)
    obj.pose.pose.orientation.w = math.cos(yaw / 2)
    obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = 4.6, 1.9, 1.5
    obj.twist.twist.linear.x = speed
    return obj


def _objects(t_s, objects):
    msg = TrackedObjects(objects=objects)
    msg.header.stamp.sec = int(t_s)
    msg.header.stamp.nanosec = int(round((t_s - int(t_s)) * 1e9))
    msg.header.frame_id = 'map'
    return msg


def test_tracked_objects_in_predicted_objects_out_with_the_same_stamp(graph):
    node, peer, executor = graph
    received = []
    peer.create_subscription(PredictedObjects, '/prediction/output/objects', received.append,
                             objects_qos())
    publisher = peer.create_publisher(TrackedObjects, '/prediction/input/objects',
                                      objects_qos())
    assert spin_until(executor, lambda: publisher.get_subscription_count() > 0)
    car = _object(5, ObjectClass.CAR, 20.0, -1.75, 0.0, 8.0)
    walker = _object(9, ObjectClass.PEDESTRIAN, 60.0, -5.0, 0.0, 1.4)
    publisher.publish(_objects(12.3, [car, walker]))
    assert spin_until(executor, lambda: bool(received))
    msg = received[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 300_000_000)
    assert msg.header.frame_id == 'map'
    assert [o.object_id for o in msg.objects] == [5, 9]
    out_car = msg.objects[0]
    assert out_car.classification[0].label == ObjectClass.CAR
    assert out_car.twist.twist.linear.x == pytest.approx(8.0)
    assert out_car.dimensions.x == pytest.approx(4.6)
    assert out_car.pose.pose.position.x == pytest.approx(20.0)
    assert out_car.paths
    assert sum(p.confidence for p in out_car.paths) == pytest.approx(1.0, abs=1e-5)
    best = max(out_car.paths, key=lambda p: p.confidence)
    assert (best.time_step.sec, best.time_step.nanosec) == (0, 500_000_000)
    assert len(best.path) == 16
    # Pose k is at t = (k + 1) * 0.5 s: the car drives east along its lane.
    assert best.path[0].position.x == pytest.approx(24.0, abs=0.3)
    assert best.path[-1].position.y == pytest.approx(-1.75, abs=0.05)
    assert best.path[0].orientation.w == pytest.approx(1.0, abs=1e-3)
    assert msg.objects[1].paths[0].path[1].position.x == pytest.approx(61.4, abs=0.01)


def test_bad_objects_are_dropped_with_a_diagnostic(graph):
    node, peer, executor = graph
    received, diagnostics = [], []
    peer.create_subscription(PredictedObjects, '/prediction/output/objects', received.append,
                             objects_qos())
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    publisher = peer.create_publisher(TrackedObjects, '/prediction/input/objects',
                                      objects_qos())
    assert spin_until(executor, lambda: publisher.get_subscription_count() > 0)
    good = _object(1, ObjectClass.CAR, 20.0, -1.75, 0.0, 8.0)
    bad = _object(2, ObjectClass.CAR, float('nan'), -1.75, 0.0, 8.0)
    twin = _object(1, ObjectClass.CAR, 60.0, -1.75, 0.0, 8.0)
    publisher.publish(_objects(3.0, [good, bad, twin]))
    publisher.publish(_objects(4.0, []))
    assert spin_until(executor, lambda: len(received) == 2)
    assert [o.object_id for o in received[0].objects] == [1]
    assert received[0].objects[0].pose.pose.position.x == pytest.approx(20.0)
    assert received[1].objects == []

    def reported(text):
        return any(text in status.message for array in diagnostics for status in array.status
                   if status.name == node.get_fully_qualified_name())

    publisher.publish(_objects(5.0, [good, bad]))
    assert spin_until(executor, lambda: reported('1 objects with non-finite values'))
    values = {kv.key: kv.value for array in diagnostics for status in array.status
              for kv in status.values}
    assert 'processing_p50_ms' in values and values['dropped_nonfinite'] == '1'


def test_objects_in_another_frame_come_out_without_paths(graph):
    node, peer, executor = graph
    received = []
    peer.create_subscription(PredictedObjects, '/prediction/output/objects', received.append,
                             objects_qos())
    publisher = peer.create_publisher(TrackedObjects, '/prediction/input/objects',
                                      objects_qos())
    assert spin_until(executor, lambda: publisher.get_subscription_count() > 0)
    msg = _objects(2.0, [_object(1, ObjectClass.CAR, 20.0, -1.75, 0.0, 8.0)])
    msg.header.frame_id = 'base_link'
    publisher.publish(msg)
    assert spin_until(executor, lambda: bool(received))
    assert received[0].header.frame_id == 'base_link'
    assert [o.object_id for o in received[0].objects] == [1]
    assert received[0].objects[0].paths == []
    assert 'frame' in node.diagnostics.health.message


def test_main_exits_2_on_a_bad_parameter(capsys):
    assert main(args=['--ros-args', '-p', 'time_step_s:=0.3']) == 2
    assert 'horizon_s' in capsys.readouterr().err
