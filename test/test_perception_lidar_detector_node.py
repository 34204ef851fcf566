"""lidar_detector_node in process with rclpy: a generated held-out cloud (lidar_top or base_link)
-> classified objects in base_link with the cloud's stamp, the car at ~20 m among them as CAR
and debris ahead as UNKNOWN; empty, NaN, wrong-frame, field-less and oversized clouds -> an
empty DetectedObjects with the cloud's stamp and a diagnostic naming the problem; a failing
inference still publishes the obstacle clusters with an ERROR; bad parameters stop start-up."""

import math

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2

from builtin_interfaces.msg import Time
from rclpy_harness import node_graph, spin_until
from robotaxi_msgs.msg import DetectedObjects, ObjectClass
from robotaxi_stack.common.diagnostics import ERROR, WARN
from robotaxi_stack.common.pointcloud import array_to_pointcloud2, make_points_dtype
from robotaxi_stack.common.qos import objects_qos, sensor_input_qos
from robotaxi_stack.perception.inference import InferenceError
from robotaxi_stack.perception.lidar_detector_node import LidarDetectorNode, main
from robotaxi_stack.sim import perception_dataset as pds

STAMP = Time(sec=42, nanosec=100_000_000)
DEBRIS_AHEAD_M = 25.0


@pytest.fixture(scope='module')
def frame():
    """Held-out frame with a well-seen car ~20 m away and 0.5 m debris 25 m ahead (last box)."""
    sample = pds.generate_sample(7, split='heldout', camera=False,
                                 debris_ahead_m=DEBRIS_AHEAD_M)
    distance = np.hypot(sample.boxes_base[:, 0], sample.boxes_base[:, 1])
    cars = np.flatnonzero((sample.labels == ObjectClass.CAR) & (np.abs(distance - 20.0) < 3.0)
                          & (sample.lidar_point_counts >= 100))
    assert len(cars), 'the fixed frame must hold a well-seen car at about 20 m'
    assert sample.lidar_point_counts[-1] > 0
    return sample, int(cars[np.argmax(sample.lidar_point_counts[cars])])


@pytest.fixture
def graph():
    with node_graph(lambda context: LidarDetectorNode(context=context, parameter_overrides=[
            Parameter('reliable_inputs', value=True),
            Parameter('providers', value=['CPUExecutionProvider']),
            Parameter('diagnostics_period_s', value=0.1)])) as (node, peer, executor):
        received = []
        peer.create_subscription(DetectedObjects, '/lidar_detector/output/objects',
                                 received.append, objects_qos())
        publisher = peer.create_publisher(PointCloud2, '/lidar_detector/input/points',
                                          sensor_input_qos(True))
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0
                          and node.count_subscribers('/lidar_detector/output/objects') > 0)
        yield node, peer, executor, publisher, received


def _send(graph, cloud):
    _, _, executor, publisher, received = graph
    count = len(received)
    publisher.publish(cloud)
    assert spin_until(executor, lambda: len(received) > count)
    return received[-1]


def _xyz_cloud(xyz, frame_id='lidar_top'):
    points = np.zeros(len(xyz), make_points_dtype())
    for axis, name in enumerate('xyz'):
        points[name] = xyz[:, axis]
    return array_to_pointcloud2(points, frame_id, STAMP)


def _assert_stamp(msg):
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP.sec, STAMP.nanosec)
    assert msg.header.frame_id == 'base_link'


def _nearest(msg, xy):
    positions = np.array([(o.pose.pose.position.x, o.pose.pose.position.y)
                          for o in msg.objects]).reshape(-1, 2)
    gap = np.hypot(positions[:, 0] - xy[0], positions[:, 1] - xy[1])
    return msg.objects[int(np.argmin(gap))], float(gap.min())


def _assert_car_and_debris(msg, frame):
    sample, car = frame
    _assert_stamp(msg)
    obj, gap = _nearest(msg, sample.boxes_base[car, :2])
    assert gap < 1.0
    assert obj.classification[0].label == ObjectClass.CAR
    assert obj.existence_probability == pytest.approx(obj.classification[0].probability)
    assert obj.existence_probability > 0.5
    yaw = 2.0 * math.atan2(obj.pose.pose.orientation.z, obj.pose.pose.orientation.w)
    assert abs(math.remainder(yaw - sample.boxes_base[car, 6], math.pi)) < math.radians(10.0)
    assert obj.dimensions.x == pytest.approx(sample.boxes_base[car, 3], rel=0.2)
    cov = np.asarray(obj.pose.covariance).reshape(6, 6)
    assert np.all(np.linalg.eigvalsh(cov[:2, :2]) > 0.0) and cov[5, 5] > 0.0
    debris, gap = _nearest(msg, sample.boxes_base[-1, :2])
    assert gap < 1.0
    assert [c.label for c in debris.classification] == [ObjectClass.UNKNOWN]
    # Nothing twice: no two objects share a centre.
    positions = np.array([(o.pose.pose.position.x, o.pose.pose.position.y)
                          for o in msg.objects])
    gaps = np.hypot(*(positions[:, None, :] - positions[None, :, :]).transpose(2, 0, 1))
    assert gaps[np.triu_indices(len(positions), 1)].min() > 0.3


def test_cloud_gives_classified_objects_and_debris_with_the_cloud_stamp(graph, frame):
    node = graph[0]
    msg = _send(graph, array_to_pointcloud2(frame[0].points, 'lidar_top', STAMP))
    _assert_car_and_debris(msg, frame)
    assert node.diagnostics.health.level == 0
    values = node.diagnostics.health.values
    assert int(values['detections']) > 5 and int(values['unknown_objects']) >= 1
    assert int(values['objects']) == len(msg.objects)
    assert values['provider'] == 'CPUExecutionProvider'
    for stage in ('pre', 'inference', 'post', 'obstacles', 'merge'):
        assert float(values[f'stage_{stage}_ms']) > 0.0


def test_processing_time_reaches_diagnostics(graph, frame):
    node, peer, executor, _, _ = graph
    diagnostics = []
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    _send(graph, array_to_pointcloud2(frame[0].points, 'lidar_top', STAMP))

    def ours():
        return [{kv.key: kv.value for kv in status.values} for array in diagnostics
                for status in array.status
                if status.name == node.get_fully_qualified_name()]

    assert spin_until(executor, lambda: any(v.get('cycles') == '1' for v in ours()))
    values = [v for v in ours() if v.get('cycles') == '1'][-1]
    assert float(values['processing_p50_ms']) > 0.0
    assert float(values['inference_p50_ms']) > 0.0


def test_base_link_cloud_gives_the_same_objects(graph, frame):
    sample = frame[0]
    xyz = np.column_stack([sample.points[n] for n in 'xyz']).astype(np.float64)
    moved = xyz @ sample.base_from_lidar[:3, :3].T + sample.base_from_lidar[:3, 3]
    points = np.zeros(len(xyz), make_points_dtype())
    for axis, name in enumerate('xyz'):
        points[name] = moved[:, axis]
    points['intensity'] = sample.points['intensity']
    _assert_car_and_debris(_send(graph, array_to_pointcloud2(points, 'base_link', STAMP)),
                           frame)


def test_some_nan_points_are_dropped_with_a_warning(graph, frame):
    node = graph[0]
    points = frame[0].points.copy()
    points['x'][::10] = np.nan
    msg = _send(graph, array_to_pointcloud2(points, 'lidar_top', STAMP, is_dense=False))
    _assert_stamp(msg)
    assert len(msg.objects) > 5
    assert node.diagnostics.health.level == WARN
    assert f'{len(points[::10])} non-finite points dropped' in node.diagnostics.health.message


@pytest.mark.parametrize('case, text, level', [
    ('empty', 'empty cloud', WARN),
    ('nan', 'no finite points', WARN),
    ('frame', "frame 'camera_front'", ERROR),
    ('no_xyz', "no field(s) ['z']", ERROR),
    ('truncated', 'malformed cloud', ERROR),
])
def test_bad_cloud_gives_an_empty_output_and_a_diagnostic(graph, frame, case, text, level):
    node = graph[0]
    if case == 'empty':
        cloud = _xyz_cloud(np.zeros((0, 3)))
    elif case == 'nan':
        cloud = _xyz_cloud(np.full((5000, 3), np.nan))
    elif case == 'frame':
        cloud = array_to_pointcloud2(frame[0].points, 'camera_front', STAMP)
    elif case == 'no_xyz':
        xy = np.zeros(100, np.dtype([('x', '<f4'), ('y', '<f4')]))
        cloud = array_to_pointcloud2(xy, 'lidar_top', STAMP)
    else:
        cloud = _xyz_cloud(np.ones((100, 3)))
        cloud.width = 200  # declares more points than the buffer holds
        cloud.row_step = 200 * cloud.point_step
    msg = _send(graph, cloud)
    _assert_stamp(msg)
    assert msg.objects == []
    assert node.diagnostics.health.level == level
    assert text in node.diagnostics.health.message
    assert node.rejected == 1
    # The next good cloud clears the condition.
    _assert_car_and_debris(_send(graph, array_to_pointcloud2(frame[0].points, 'lidar_top',
                                                             STAMP)), frame)
    assert node.diagnostics.health.level == 0


def test_three_million_points_are_rejected_without_processing(graph):
    node, _, executor, _, received = graph
    cloud = _xyz_cloud(np.random.default_rng(0).uniform(-50, 50, (3_000_000, 3))
                       .astype(np.float32))
    node._on_points(cloud)  # direct call: 36 MB need not travel through DDS for this
    assert spin_until(executor, lambda: bool(received))
    _assert_stamp(received[-1])
    assert received[-1].objects == []
    assert 'exceeds max_points = 1000000' in node.diagnostics.health.message
    assert node.diagnostics.health.level == ERROR


def test_failed_inference_still_publishes_the_obstacle_clusters(graph, frame, monkeypatch):
    node = graph[0]

    def fail(inputs):
        raise InferenceError('inference failed on CPUExecutionProvider: injected')

    monkeypatch.setattr(node.detector.session, 'run', fail)
    msg = _send(graph, array_to_pointcloud2(frame[0].points, 'lidar_top', STAMP))
    _assert_stamp(msg)
    assert msg.objects and all(o.classification[0].label == ObjectClass.UNKNOWN
                               for o in msg.objects)
    debris, gap = _nearest(msg, frame[0].boxes_base[-1, :2])
    assert gap < 1.0
    assert node.diagnostics.health.level == ERROR
    assert 'obstacle clusters only' in node.diagnostics.health.message


@pytest.mark.parametrize('override, text', [
    ('bev_cell_m:=0.4', 'bev_cell_m'),
    ('bev_min_z_m:=5.0', 'bev_min_z_m'),
    ('min_z_m:=5.0', 'max_z_m'),
    ('model_path:=/no/such/model.onnx', 'model metadata'),
    ('vehicle:=no_such_car', 'no_such_car'),
])
def test_main_exits_2_on_a_bad_parameter(capsys, override, text):
    assert main(args=['--ros-args', '-p', override]) == 2
    err = capsys.readouterr().err
    assert err.startswith('lidar_detector:') and text in err
