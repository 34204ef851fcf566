"""lidar_obstacle_node in process with rclpy: a simulated 64-channel sweep with a car ahead in
(lidar_top or base_link) -> one UNKNOWN object at the car in base_link with the cloud's stamp;
empty, NaN, wrong-frame, field-less and oversized clouds -> an empty DetectedObjects with the
cloud's stamp and a diagnostic naming the problem; a bad parameter stops start-up."""

import math
import time

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
from robotaxi_stack.perception.lidar_obstacle_node import (LidarObstacleNode, main,
                                                           position_covariances)
from robotaxi_stack.sim.lidar import LidarConfig, LidarModel
from robotaxi_stack.sim.scene import ActorBox, SimScene
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle

# base_link = map at the origin, heading +x; the car 15 m ahead, slightly left and turned.
CAR = ActorBox(15.0, 0.8, 0.75, 0.2, 4.6, 1.9, 1.5, 'car', 0)
STAMP = Time(sec=42, nanosec=100_000_000)


@pytest.fixture(scope='module')
def car_scan():
    vehicle = load_vehicle('bmw_320i')
    scene = SimScene((-100.0, -100.0, 100.0, 100.0))
    scene.set_actors([CAR])
    mount = vehicle.lidar_top
    lidar = LidarModel(LidarConfig(channels=64, range_m=100.0, noise_m=0.02, dropout=0.01))
    scan = lidar.scan(scene, (mount.x_m, mount.y_m, mount.z_m, 0.0, 0.0, 0.0),
                      np.random.default_rng(3))
    assert np.count_nonzero(scan.actor_id == 0) > 200  # the car is well seen
    return vehicle, scan.points


@pytest.fixture
def graph():
    # Reliable input: multi-megabyte clouds in process must not lose fragments.
    with node_graph(lambda context: LidarObstacleNode(context=context, parameter_overrides=[
            Parameter('reliable_inputs', value=True),
            Parameter('diagnostics_period_s', value=0.1)])) as (node, peer, executor):
        received = []
        peer.create_subscription(DetectedObjects, '/lidar_obstacle/output/objects',
                                 received.append, objects_qos())
        publisher = peer.create_publisher(PointCloud2, '/lidar_obstacle/input/points',
                                          sensor_input_qos(True))
        assert spin_until(executor, lambda: publisher.get_subscription_count() > 0
                          and node.count_subscribers('/lidar_obstacle/output/objects') > 0)
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


def _assert_empty_with_stamp(msg):
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP.sec, STAMP.nanosec)
    assert msg.header.frame_id == 'base_link'
    assert msg.objects == []


def _assert_one_car(msg):
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP.sec, STAMP.nanosec)
    assert msg.header.frame_id == 'base_link'
    assert len(msg.objects) == 1  # flat ground, nothing else in range
    obj = msg.objects[0]
    assert [(c.label, c.probability) for c in obj.classification] == [(ObjectClass.UNKNOWN,
                                                                       1.0)]
    position = obj.pose.pose.position
    # The LiDAR sees the rear and the left side (an L): the box centre is near the car's.
    assert math.hypot(position.x - CAR.center_x_m, position.y - CAR.center_y_m) < 0.5
    assert position.z == pytest.approx(CAR.center_z_m, abs=0.2)
    yaw = 2.0 * math.atan2(obj.pose.pose.orientation.z, obj.pose.pose.orientation.w)
    assert abs(math.remainder(yaw - CAR.yaw_rad, math.pi)) < math.radians(5.0)
    assert obj.dimensions.x == pytest.approx(CAR.length_m, abs=0.4)
    assert obj.dimensions.y == pytest.approx(CAR.width_m, abs=0.4)
    assert obj.dimensions.z == pytest.approx(CAR.height_m, abs=0.25)
    assert 0.9 < obj.existence_probability <= 0.95
    assert not obj.has_twist
    cov = np.asarray(obj.pose.covariance).reshape(6, 6)
    xy = cov[:2, :2]
    assert np.all(np.linalg.eigvalsh(xy) > 0.0) and cov[5, 5] > 0.0
    # Less certain along the car (its yaw direction) than across it.
    along = np.array([math.cos(CAR.yaw_rad), math.sin(CAR.yaw_rad)])
    across = np.array([-along[1], along[0]])
    assert along @ xy @ along > 2.0 * (across @ xy @ across)
    return obj


def test_car_ahead_is_one_unknown_object_in_base_link_with_the_cloud_stamp(graph, car_scan):
    node, _, executor, _, _ = graph
    _, points = car_scan
    _assert_one_car(_send(graph, array_to_pointcloud2(points, 'lidar_top', STAMP)))
    assert node.diagnostics.health.level == 0
    values = node.diagnostics.health.values
    assert values['objects'] == '1' and int(values['input_points']) == len(points)
    assert float(values['stage_ground_ms']) > 0.0
    assert node.diagnostics.timer.cycles == 1


def test_processing_and_stage_times_reach_diagnostics(graph, car_scan):
    node, peer, executor, _, _ = graph
    diagnostics = []
    peer.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    _send(graph, array_to_pointcloud2(car_scan[1], 'lidar_top', STAMP))

    def ours():
        return [{kv.key: kv.value for kv in status.values} for array in diagnostics
                for status in array.status
                if status.name == node.get_fully_qualified_name()]

    assert spin_until(executor, lambda: any(v.get('cycles') == '1' for v in ours()))
    values = [v for v in ours() if v.get('cycles') == '1'][-1]
    assert float(values['processing_p50_ms']) > 0.0
    for stage in ('crop', 'ground', 'cluster', 'boxes'):
        assert float(values[f'stage_{stage}_ms']) > 0.0


def test_base_link_cloud_gives_the_same_object(graph, car_scan):
    vehicle, points = car_scan
    xyz = np.column_stack([points[n] for n in 'xyz']).astype(np.float64)
    transform = vehicle.lidar_top.transform()
    moved = xyz @ transform[:3, :3].T + transform[:3, 3]
    _assert_one_car(_send(graph, _xyz_cloud(moved, 'base_link')))


def test_some_nan_points_are_dropped_with_a_warning(graph, car_scan):
    node = graph[0]
    points = car_scan[1].copy()
    points['x'][::10] = np.nan
    _assert_one_car(_send(graph, array_to_pointcloud2(points, 'lidar_top', STAMP,
                                                      is_dense=False)))
    assert node.diagnostics.health.level == WARN
    assert f'{len(points[::10])} non-finite points dropped' in node.diagnostics.health.message


@pytest.mark.parametrize('case, text, level', [
    ('empty', 'empty cloud', WARN),
    ('nan', 'no finite points', WARN),
    ('frame', "frame 'camera_front'", ERROR),
    ('no_frame', "frame ''", ERROR),
    ('no_xyz', "no field(s) ['z']", ERROR),
    ('truncated', 'malformed cloud', ERROR),
])
def test_bad_cloud_gives_an_empty_output_and_a_diagnostic(graph, car_scan, case, text, level):
    node = graph[0]
    if case == 'empty':
        cloud = _xyz_cloud(np.zeros((0, 3)))
    elif case == 'nan':
        cloud = _xyz_cloud(np.full((5000, 3), np.nan))
    elif case in ('frame', 'no_frame'):
        cloud = array_to_pointcloud2(car_scan[1], 'camera_front' if case == 'frame' else '',
                                     STAMP)
    elif case == 'no_xyz':
        xy = np.zeros(100, np.dtype([('x', '<f4'), ('y', '<f4')]))
        cloud = array_to_pointcloud2(xy, 'lidar_top', STAMP)
    else:
        cloud = _xyz_cloud(np.ones((100, 3)))
        cloud.width = 200  # declares more points than the buffer holds
        cloud.row_step = 200 * cloud.point_step
    _assert_empty_with_stamp(_send(graph, cloud))
    assert node.diagnostics.health.level == level
    assert text in node.diagnostics.health.message
    assert node.rejected == 1
    # The next good cloud clears the condition.
    _assert_one_car(_send(graph, array_to_pointcloud2(car_scan[1], 'lidar_top', STAMP)))
    assert node.diagnostics.health.level == 0


def test_three_million_points_are_rejected_without_processing(graph):
    node, _, _, _, received = graph
    cloud = _xyz_cloud(np.random.default_rng(0).uniform(-50, 50, (3_000_000, 3))
                       .astype(np.float32))
    start = time.perf_counter()
    node._on_points(cloud)  # direct call: 36 MB need not travel through DDS for this
    assert time.perf_counter() - start < 0.5
    assert spin_until(graph[2], lambda: bool(received))
    _assert_empty_with_stamp(received[-1])
    assert 'exceeds max_points = 1000000' in node.diagnostics.health.message
    assert node.diagnostics.health.level == ERROR


def test_position_covariance_follows_the_box_axes():
    boxes = np.array([[0.0, 0.0, 0.0, 0.0, 4.0, 2.0, 1.5],
                      [0.0, 0.0, 0.0, 0.5 * math.pi, 4.0, 2.0, 1.5]])
    cov = position_covariances(boxes, 0.1, 0.3)
    assert cov[0, 0, 0] == pytest.approx(0.01 + 1.44)
    assert cov[0, 1, 1] == pytest.approx(0.01 + 0.36)
    assert cov[1, 1, 1] == pytest.approx(0.01 + 1.44)
    assert cov[1, 0, 1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('override, text', [
    ('min_z_m:=5.0', 'max_z_m'),
    ('max_points:=10', 'max_points'),
    ('vehicle:=no_such_car', 'no_such_car'),
])
def test_main_exits_2_on_a_bad_parameter(capsys, override, text):
    assert main(args=['--ros-args', '-p', override]) == 2
    err = capsys.readouterr().err
    assert err.startswith('lidar_obstacle:') and text in err
