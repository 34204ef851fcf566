"""LiDAR obstacle path (perception/obstacles.py): ground removal and clustering on simulated
64-channel scans of a grid town with kerbs, synthetic slopes, bad input, fusion with detector
boxes."""

import math

import numpy as np
import pytest

from robotaxi_stack.perception.obstacles import (
    LABEL_UNKNOWN, ObstacleCluster, ObstacleDetector, ObstacleParamError, ObstacleParams,
    detect_obstacles, merge_with_detections)
from robotaxi_stack.sim import maps
from robotaxi_stack.sim.lidar import LidarConfig, LidarModel
from robotaxi_stack.sim.scene import ActorBox, SimScene, SurfaceLabel
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle
from robotaxi_stack.sim.world import static_boxes

EGO_XY = (40.0, -1.75)  # base_link on the first eastbound lane of road y = 0, heading east
GROUND_LABELS = (SurfaceLabel.ROAD, SurfaceLabel.KERB, SurfaceLabel.SIDEWALK)


@pytest.fixture(scope='module')
def vehicle():
    return load_vehicle('bmw_320i')


@pytest.fixture(scope='module')
def town_scene():
    town = maps.generate_grid_town(maps.GridTownParams(blocks_x=2, blocks_y=1, block_m=120.0))
    assert town.kerb_height_m > 0.0  # the point of this scene: kerbs and raised sidewalks
    x0, y0, x1, y1 = town.extent
    return SimScene((x0 - 50, y0 - 50, x1 + 50, y1 + 50), static_boxes(town))


@pytest.fixture(scope='module')
def lidar():
    # The scenario default of ARCHITECTURE.md section 6: 64 channels, 2 cm noise, 1% dropout.
    return LidarModel(LidarConfig(channels=64, range_m=100.0, noise_m=0.02, dropout=0.01))


def scan_from_ego(scene, lidar, vehicle, seed=1):
    mount = vehicle.lidar_top
    pose = (EGO_XY[0] + mount.x_m, EGO_XY[1] + mount.y_m, mount.z_m, 0.0, 0.0, 0.0)
    return lidar.scan(scene, pose, np.random.default_rng(seed))


def as_array(scan):
    points = scan.points
    return np.column_stack([points['x'], points['y'], points['z'], points['intensity']])


def to_base_link(x_map, y_map):
    return x_map - EGO_XY[0], y_map - EGO_XY[1]


def cluster_labels(result, scan, index):
    """Ground-truth surface labels of the points of cluster `index`."""
    return scan.label[result.point_cluster == index]


def nearest_cluster(result, x_m, y_m):
    distances = [math.hypot(c.x_m - x_m, c.y_m - y_m) for c in result.clusters]
    best = int(np.argmin(distances))
    return best, result.clusters[best], distances[best]


# ------------------------------------------------------------------------- simulated town

@pytest.fixture(scope='module')
def street(town_scene, lidar, vehicle):
    """A car in the oncoming lane, a pedestrian on our lane's edge, 0.5 m debris at 27 m."""
    actors = [
        ActorBox(EGO_XY[0] + 17.2, 1.75, 0.75, math.pi, 4.6, 1.9, 1.5, 'car', 0),
        ActorBox(EGO_XY[0] + 12.2, EGO_XY[1] - 1.2, 0.875, 0.3, 0.5, 0.6, 1.75,
                 'pedestrian', 1),
        ActorBox(EGO_XY[0] + 1.2 + 27.0, EGO_XY[1], 0.25, 0.2, 0.5, 0.5, 0.5, 'static', 2),
    ]
    town_scene.set_actors(actors)
    scan = scan_from_ego(town_scene, lidar, vehicle)
    detector = ObstacleDetector(ObstacleParams(), vehicle.lidar_top.transform())
    return actors, scan, detector.detect(as_array(scan))


def test_car_pedestrian_and_debris_are_each_one_cluster_at_their_position(street):
    actors, scan, result = street
    assert result.reason == ''
    expected = {0: SurfaceLabel.CAR, 1: SurfaceLabel.PEDESTRIAN, 2: SurfaceLabel.STATIC_OBJECT}
    for actor in actors:
        x_m, y_m = to_base_link(actor.center_x_m, actor.center_y_m)
        index, cluster, distance = nearest_cluster(result, x_m, y_m)
        # Debris shows only its front face (centre 0.25 m behind it): within 0.5 m for all.
        assert distance < 0.5, (actor.label, cluster)
        labels = cluster_labels(result, scan, index)
        assert np.all(labels == expected[actor.actor_id]), (actor.label, np.bincount(labels))
        # Every point of the actor that is not ground belongs to this one cluster.
        actor_points = (scan.actor_id == actor.actor_id) & ~result.ground_mask
        assert np.all(result.point_cluster[actor_points] == index)
        assert cluster.label == LABEL_UNKNOWN
        assert cluster.point_count == np.count_nonzero(result.point_cluster == index)
    car = nearest_cluster(result, *to_base_link(actors[0].center_x_m, actors[0].center_y_m))[1]
    # Front and side are visible (an L): the min-area box recovers the car's footprint.
    assert car.length_m == pytest.approx(4.6, abs=0.3)
    assert car.width_m == pytest.approx(1.9, abs=0.3)
    assert abs(math.remainder(car.yaw_rad, math.pi)) < math.radians(3.0)
    assert car.height_m == pytest.approx(1.5, abs=0.25)


def test_ground_kerbs_and_sidewalks_produce_no_clusters(street):
    _, scan, result = street
    on_ground = np.isin(scan.label, GROUND_LABELS)
    assert on_ground.sum() > 30000
    assert np.count_nonzero(result.point_cluster[on_ground] >= 0) == 0
    # Road returns are all ground; sidewalk returns too, but for the few grazing the kerb
    # edge's vertical face at the very top of the threshold.
    assert np.all(result.ground_mask[scan.label == SurfaceLabel.ROAD])
    sidewalk = scan.label == SurfaceLabel.SIDEWALK
    assert np.mean(result.ground_mask[sidewalk]) > 0.995
    # Clustered points come from the obstacle points, which are never ground.
    assert not np.any(result.ground_mask & result.obstacle_mask)
    assert np.all(result.obstacle_mask[result.point_cluster >= 0])
    assert np.count_nonzero(result.obstacle_mask) == result.stats.obstacle_points
    assert set(result.stage_ms) == {'crop', 'ground', 'cluster', 'boxes'}


def test_empty_street_has_no_cluster_on_the_road(town_scene, lidar, vehicle):
    town_scene.set_actors([])
    scan = scan_from_ego(town_scene, lidar, vehicle, seed=5)
    result = detect_obstacles(as_array(scan), sensor_to_base_link=vehicle.lidar_top.transform())
    for index, cluster in enumerate(result.clusters):
        # Only building walls remain: behind the sidewalks, |y| > road + sidewalk.
        assert np.all(cluster_labels(result, scan, index) == SurfaceLabel.BUILDING)
        assert abs(cluster.y_m + EGO_XY[1]) > 3.5 + 2.5


@pytest.mark.parametrize('distance_m', [25.0, 27.5, 30.0])
def test_half_metre_debris_in_the_lane_is_found_at_25_to_30_m(town_scene, lidar, vehicle,
                                                              distance_m):
    x_map = EGO_XY[0] + vehicle.lidar_top.x_m + distance_m
    town_scene.set_actors([ActorBox(x_map, EGO_XY[1], 0.25, 0.0, 0.5, 0.5, 0.5, 'static', 0)])
    scan = scan_from_ego(town_scene, lidar, vehicle, seed=int(distance_m * 10))
    assert np.count_nonzero(scan.actor_id == 0) >= 3  # the sensor sees it at all
    result = detect_obstacles(as_array(scan), sensor_to_base_link=vehicle.lidar_top.transform())
    index, cluster, distance = nearest_cluster(result, *to_base_link(x_map, EGO_XY[1]))
    assert distance < 0.5
    assert np.all(cluster_labels(result, scan, index) == SurfaceLabel.STATIC_OBJECT)
    assert cluster.height_m <= 0.6


def test_structured_points_give_the_same_result_as_an_array(street, vehicle):
    _, scan, result = street
    structured = ObstacleDetector(ObstacleParams(), vehicle.lidar_top.transform()).detect(
        scan.points)
    np.testing.assert_array_equal(structured.point_cluster, result.point_cluster)
    np.testing.assert_allclose(structured.boxes, result.boxes)


# ------------------------------------------------------------------------ synthetic geometry

def plane_and_box_scan(lidar, grade, box_x_m, box_size_m=(0.6, 1.0, 0.6), sensor_z_m=1.6):
    """Sensor at the origin of a plane z = grade * x (the ground under the sensor is z = 0) with
    a box standing on the plane at (box_x_m, 0); returns (points in base_link, box hit mask)."""
    directions = lidar.directions_sensor.astype(np.float64)
    origin = np.array([0.0, 0.0, sensor_z_m])
    denominator = directions[:, 2] - grade * directions[:, 0]
    with np.errstate(divide='ignore'):
        t_plane = np.where(denominator < -1e-9, -origin[2] / denominator, np.inf)
    scene = SimScene(None)
    length, width, height = box_size_m
    scene.set_actors([ActorBox(box_x_m, 0.0, grade * box_x_m + 0.5 * height, 0.0, length,
                               width, height, 'static', 0)])
    rays = np.column_stack([np.broadcast_to(origin, directions.shape),
                            directions]).astype(np.float32)
    t_box = scene.cast_rays(rays).range_m.astype(np.float64)
    t_hit = np.minimum(t_plane, t_box)
    valid = np.isfinite(t_hit) & (t_hit < 80.0)
    points = origin + directions[valid] * t_hit[valid, None]
    return points.astype(np.float32), (t_box <= t_plane)[valid]


@pytest.mark.parametrize('grade', [-0.06, 0.0, 0.06])
def test_gentle_slopes_are_ground_and_a_box_on_them_is_found(lidar, grade):
    points, on_box = plane_and_box_scan(lidar, grade, box_x_m=15.0)
    result = detect_obstacles(points)
    # Plane points are ground, or cropped (ego box, below min_z_m far downhill): never obstacles.
    assert np.all(result.point_cluster[~on_box] == -1)
    assert np.mean(result.ground_mask[~on_box]) > 0.97
    assert len(result) == 1
    assert result.clusters[0].x_m == pytest.approx(15.0, abs=0.5)
    assert result.clusters[0].y_m == pytest.approx(0.0, abs=0.2)
    assert result.clusters[0].height_m == pytest.approx(0.6, abs=0.25)


@pytest.mark.parametrize('params', [ObstacleParams(), ObstacleParams(cluster_gap_cells=0),
                                    ObstacleParams(cluster_diagonal=False, cluster_gap_cells=3)])
def test_box_fit_recovers_a_rotated_l_shape(params):
    yaw = math.radians(30.0)
    u = np.linspace(-2.0, 2.0, 60)
    v = np.linspace(-0.9, 0.9, 30)
    # Two visible faces of a 4 x 1.8 box, 0.1 .. 1.4 m high.
    local = np.concatenate([np.column_stack([u, np.full_like(u, -0.9)]),
                            np.column_stack([np.full_like(v, -2.0), v])])
    rotation = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    xy = local @ rotation.T + [12.0, 5.0]
    heights = np.linspace(0.3, 1.4, 4)
    points = np.column_stack([np.repeat(xy, len(heights), axis=0),
                              np.tile(heights, len(xy))]).astype(np.float32)
    result = detect_obstacles(points, params)
    assert len(result) == 1
    box = result.clusters[0]
    assert box.x_m == pytest.approx(12.0, abs=0.05) and box.y_m == pytest.approx(5.0, abs=0.05)
    assert box.length_m == pytest.approx(4.0, abs=0.05)
    assert box.width_m == pytest.approx(1.8, abs=0.05)
    assert math.degrees(box.yaw_rad) == pytest.approx(30.0, abs=0.5)


def wall_and_specks():
    """A 40 m wall, a 2-point speck and a 1 m post, all standing on nothing (no ground)."""
    wall_x = np.repeat(np.linspace(10.0, 50.0, 400), 4)
    wall_z = np.tile([0.3, 0.8, 1.3, 1.8], 400)
    wall = np.column_stack([wall_x, np.full_like(wall_x, 8.0), wall_z])
    speck = np.array([[20.0, -5.0, 0.8], [20.05, -5.0, 0.9]])
    post = np.column_stack([np.full(10, 15.0), np.full(10, -2.0), np.linspace(0.3, 1.0, 10)])
    return np.concatenate([wall, speck, post]).astype(np.float32)


def test_point_and_size_limits_reject_specks_and_walls():
    result = detect_obstacles(wall_and_specks())
    assert len(result) == 1
    assert (result.clusters[0].x_m, result.clusters[0].y_m) == pytest.approx((15.0, -2.0),
                                                                            abs=0.1)
    assert result.stats.clusters_too_small == 1
    assert result.stats.clusters_too_large == 1
    relaxed = detect_obstacles(wall_and_specks(), ObstacleParams(
        min_cluster_points=2, max_cluster_length_m=45.0))
    assert len(relaxed) == 3
    assert max(c.length_m for c in relaxed.clusters) == pytest.approx(40.0, abs=0.1)


def test_max_clusters_keeps_the_nearest():
    posts = [np.column_stack([np.full(5, x), np.zeros(5), np.linspace(0.5, 1.0, 5)])
             for x in (30.0, 10.0, 20.0)]
    points = np.concatenate(posts).astype(np.float32)
    result = detect_obstacles(points, ObstacleParams(max_clusters=2))
    assert [round(c.x_m) for c in result.clusters] == [10, 20]
    assert result.stats.clusters_over_limit == 1
    assert np.all(result.point_cluster[:5] == -1)


# ---------------------------------------------------------------------------- bad input

def test_nan_and_inf_points_are_dropped_and_counted(street, vehicle):
    _, scan, clean = street
    points = as_array(scan)
    rng = np.random.default_rng(0)
    bad = rng.choice(len(points), 500, replace=False)
    points[bad[:250], 0] = np.nan
    points[bad[250:], 2] = np.inf
    result = ObstacleDetector(ObstacleParams(), vehicle.lidar_top.transform()).detect(points)
    assert result.reason == ''
    assert result.stats.non_finite_points == 500
    assert np.all(result.point_cluster[bad] == -1) and not np.any(result.ground_mask[bad])
    assert len(result) == pytest.approx(len(clean), abs=1)


@pytest.mark.parametrize('points, reason', [
    (np.zeros((0, 3), np.float32), 'empty cloud'),
    (np.zeros((0, 4)), 'empty cloud'),
    (np.full((100, 3), np.nan, np.float32), 'no finite points'),
    (np.array([[500.0, 0.0, 0.0], [1.0, 0.0, 0.5]], np.float32), 'no points inside the crop'),
    (np.zeros((10, 2), np.float32), 'bad input'),
    (np.zeros(10, np.float32), 'bad input'),
    (np.array([['a', 'b', 'c']]), 'bad input'),
    ('not points', 'bad input'),
])
def test_data_problems_return_an_empty_result_with_a_reason(points, reason):
    result = detect_obstacles(points)
    assert len(result) == 0 and result.boxes.shape == (0, 7)
    assert result.reason.startswith(reason)
    n = len(points) if isinstance(points, np.ndarray) and points.ndim == 2 else 0
    if reason != 'bad input':
        assert result.point_cluster.shape == (n,) and result.ground_mask.shape == (n,)


def test_three_million_points_still_work(street, vehicle):
    actors, scan, clean = street
    points = as_array(scan)
    reps = -(-3_000_000 // len(points))
    rng = np.random.default_rng(2)
    big = np.tile(points, (reps, 1))[:3_000_000]
    big[:, :3] += rng.normal(0.0, 0.02, (len(big), 3)).astype(np.float32)
    result = ObstacleDetector(ObstacleParams(), vehicle.lidar_top.transform()).detect(big)
    assert result.stats.input_points == 3_000_000
    assert result.point_cluster.shape == (3_000_000,)
    for actor in actors:
        assert nearest_cluster(result, *to_base_link(actor.center_x_m,
                                                     actor.center_y_m))[2] < 0.5


def test_parameters_are_validated_with_their_names():
    with pytest.raises(ObstacleParamError, match='max_range_m'):
        ObstacleParams(max_range_m=1.0)
    with pytest.raises(ObstacleParamError, match='min_z_m'):
        ObstacleParams(min_z_m=2.0, max_z_m=1.0)
    with pytest.raises(ObstacleParamError, match='min_cluster_points'):
        ObstacleParams(min_cluster_points=1.5)
    with pytest.raises(ValueError, match='4x4'):
        ObstacleDetector(ObstacleParams(), np.eye(3))


# ---------------------------------------------------------------------- detector fusion

def cluster(x_m, y_m, yaw_rad=0.0, length_m=4.0, width_m=2.0):
    return ObstacleCluster(x_m, y_m, 0.7, yaw_rad, length_m, width_m, 1.4, 50)


def test_clusters_explained_by_detections_are_dropped():
    clusters = [cluster(10.0, 0.0), cluster(20.0, 5.0, length_m=0.6, width_m=0.6),
                cluster(30.0, -3.0), cluster(40.0, 0.0)]
    detections = np.array([
        [10.3, 0.2, 0.1, 4.5, 1.9],     # centre inside: the same car
        [20.5, 5.0, 0.0, 0.5, 0.5],     # beside it, barely touching: IoU 0.04
        [32.2, -3.0, 0.0, 4.0, 2.0],    # centres outside each other, IoU 0.29
    ])
    kept = merge_with_detections(clusters, detections)
    assert [c.x_m for c in kept] == [20.0, 40.0]
    assert all(c.label == LABEL_UNKNOWN for c in kept)
    # A stricter IoU keeps the cluster that only overlaps partly.
    kept = merge_with_detections(clusters, detections, iou_threshold=0.5)
    assert [c.x_m for c in kept] == [20.0, 30.0, 40.0]


def test_merge_accepts_detection_objects_and_ignores_broken_boxes(street):
    _, _, result = street

    class Detection:
        def __init__(self, cluster):
            self.x_m, self.y_m, self.yaw_rad = cluster.x_m, cluster.y_m, cluster.yaw_rad
            self.length_m, self.width_m = cluster.length_m + 0.2, cluster.width_m + 0.2

    car = max(result.clusters, key=lambda c: c.length_m * (c.length_m < 6.0))
    kept = merge_with_detections(result, [Detection(car)])
    assert len(kept) == len(result) - 1 and car not in kept
    broken = np.array([[np.nan, 0.0, 0.0, 4.0, 2.0], [car.x_m, car.y_m, 0.0, 0.0, 2.0]])
    assert len(merge_with_detections(result, broken)) == len(result)
    assert len(merge_with_detections(result, np.zeros((0, 5)))) == len(result)
    assert merge_with_detections([], np.array([[0.0, 0.0, 0.0, 1.0, 1.0]])) == ()
