"""Simulated LiDAR and camera (robotaxi_stack.sim.scene / lidar / camera): geometry, noise,
ground truth, frames and configuration errors."""

import math

import numpy as np
import pytest

from robotaxi_stack.sim.camera import (BODY_FROM_OPTICAL, SKY_RGB, CameraConfig,
                                       CameraConfigError, CameraInputError, CameraModel)
from robotaxi_stack.sim.lidar import LIDAR_POINT_DTYPE, LidarConfig, LidarConfigError, LidarModel
from robotaxi_stack.sim.scene import (ACTOR_GEOMETRY_ID, AUTO_SPLIT_MIN_STATIC_TRIANGLES,
                                      LABEL_REFLECTIVITY, MISS_GEOMETRY_ID,
                                      NO_ACTOR_ID, STATIC_GEOMETRY_ID, ActorBox, PoseError,
                                      SceneError, SimScene, StaticBox, SurfaceLabel)

SENSOR_HEIGHT_M = 1.8
GROUND = (-500.0, -500.0, 500.0, 500.0)


def down_rays(points_xy, z_m=50.0):
    """Rays straight down from z_m above each (x, y)."""
    points_xy = np.asarray(points_xy, dtype=np.float32).reshape(-1, 2)
    rays = np.zeros((len(points_xy), 6), np.float32)
    rays[:, :2] = points_xy
    rays[:, 2] = z_m
    rays[:, 5] = -1.0
    return rays


def point_ranges(points):
    return np.sqrt(points['x'].astype(np.float64) ** 2 + points['y'] ** 2 + points['z'] ** 2)


@pytest.fixture(scope='module')
def ground_scene():
    return SimScene(GROUND)


@pytest.fixture(scope='module')
def lidar64():
    return LidarModel(LidarConfig(channels=64, vertical_fov_min_deg=-25.0,
                                  vertical_fov_max_deg=15.0, points_per_revolution=1800,
                                  range_m=100.0, noise_m=0.01, dropout=0.0))


# ---------------------------------------------------------------- scene

def test_static_box_takes_default_height_of_its_label():
    assert StaticBox(0, 0, 10, 0.3, 'kerb').height_m == pytest.approx(0.15)
    assert StaticBox(0, 0, 10, 3, 'curb').label is SurfaceLabel.KERB
    assert StaticBox(0, 0, 10, 10, 'building', height_m=30.0).height_m == 30.0


@pytest.mark.parametrize('kwargs, match', [
    (dict(x_min_m=0, y_min_m=0, x_max_m=math.nan, y_max_m=1, label='kerb'), 'non-finite'),
    (dict(x_min_m=0, y_min_m=0, x_max_m=0, y_max_m=1, label='kerb'), 'empty'),
    (dict(x_min_m=0, y_min_m=0, x_max_m=1, y_max_m=1, label='lava'), 'lava'),
    (dict(x_min_m=0, y_min_m=0, x_max_m=1, y_max_m=1, label='car'), 'height_m'),
    (dict(x_min_m=0, y_min_m=0, x_max_m=1, y_max_m=1, label='building', height_m=-1.0),
     'height_m'),
])
def test_static_box_rejects_bad_values(kwargs, match):
    with pytest.raises(SceneError, match=match):
        StaticBox(**kwargs)


def test_cast_reports_label_geometry_and_actor_of_each_hit():
    scene = SimScene(GROUND, [StaticBox(10, -50, 10.3, 50, 'kerb'),
                              StaticBox(20, 20, 40, 40, 'building', height_m=10.0)])
    scene.set_actors([ActorBox(0, 30, 0.8, 0.0, 4.5, 1.9, 1.6, 'car', 7),
                      ActorBox(0, -30, 0.9, 0.0, 0.6, 0.6, 1.8, 'pedestrian', 9)])
    hits = scene.cast_rays(down_rays([[0, 0], [10.15, 0], [30, 30], [0, 30], [0, -30],
                                      [600, 0]]))
    assert hits.label.tolist() == [SurfaceLabel.ROAD, SurfaceLabel.KERB, SurfaceLabel.BUILDING,
                                   SurfaceLabel.CAR, SurfaceLabel.PEDESTRIAN, SurfaceLabel.NONE]
    assert hits.actor_id.tolist() == [NO_ACTOR_ID] * 3 + [7, 9, NO_ACTOR_ID]
    assert hits.geometry_id.tolist() == [STATIC_GEOMETRY_ID] * 3 + [ACTOR_GEOMETRY_ID] * 2 \
        + [MISS_GEOMETRY_ID]
    np.testing.assert_allclose(hits.range_m[:5], [50.0, 49.85, 40.0, 48.4, 48.2], atol=1e-4)
    assert np.isinf(hits.range_m[5])
    # Normals point out of the solids: up on the ground and on top faces.
    np.testing.assert_allclose(hits.normal_map[:5], [[0, 0, 1]] * 5, atol=1e-6)


def test_rebuild_and_split_strategies_give_identical_hits():
    rng = np.random.default_rng(3)
    boxes = [StaticBox(x, y, x + 8, y + 6, 'building', height_m=float(h))
             for x, y, h in zip(rng.uniform(-60, 60, 30), rng.uniform(-60, 60, 30),
                                rng.uniform(3, 20, 30))]
    actors = [ActorBox(x, y, 0.8, yaw, 4.5, 1.9, 1.6, 'car', i)
              for i, (x, y, yaw) in enumerate(zip(rng.uniform(-30, 30, 10),
                                                  rng.uniform(-30, 30, 10),
                                                  rng.uniform(-3, 3, 10)))]
    # From above every box: rays starting inside a box could hit its bottom face and the
    # coplanar ground at the same range, where the two strategies may break the tie apart.
    rays = np.zeros((4000, 6), np.float32)
    rays[:, 2] = 25.0
    rays[:, 3:] = rng.normal(size=(4000, 3))
    rays[:, 5] = -np.abs(rays[:, 5])
    results = []
    for strategy in ('rebuild', 'split'):
        scene = SimScene(GROUND, boxes, strategy=strategy)
        scene.set_actors(actors)
        results.append(scene.cast_rays(rays))
    rebuild, split = results
    assert (rebuild.label == SurfaceLabel.CAR).sum() > 20
    np.testing.assert_array_equal(rebuild.range_m, split.range_m)
    np.testing.assert_array_equal(rebuild.label, split.label)
    np.testing.assert_array_equal(rebuild.actor_id, split.actor_id)
    np.testing.assert_array_equal(rebuild.geometry_id, split.geometry_id)


def test_auto_strategy_splits_only_large_static_worlds():
    small = [StaticBox(10.0 * i, 0, 10.0 * i + 5, 5, 'building', height_m=5.0)
             for i in range(AUTO_SPLIT_MIN_STATIC_TRIANGLES // 12 - 1)]
    assert SimScene(GROUND, small).strategy == 'rebuild'
    large = small + [StaticBox(0, 10.0 * i, 5, 10.0 * i + 5, 'kerb') for i in range(1, 4)]
    assert SimScene(GROUND, large).strategy == 'split'
    assert SimScene(GROUND, large, strategy='rebuild').strategy == 'rebuild'


def test_set_actors_replaces_actors_of_the_previous_frame():
    scene = SimScene(GROUND)
    rays = down_rays([[5, 0], [25, 0]])
    scene.set_actors([ActorBox(5, 0, 0.8, 0.0, 4.5, 1.9, 1.6, 'car', 1)])
    assert scene.cast_rays(rays).actor_id.tolist() == [1, NO_ACTOR_ID]
    scene.set_actors([ActorBox(25, 0, 1.5, 0.0, 10, 2.5, 3.0, 'truck', 2)])
    hits = scene.cast_rays(rays)
    assert hits.actor_id.tolist() == [NO_ACTOR_ID, 2]
    assert hits.label.tolist() == [SurfaceLabel.ROAD, SurfaceLabel.TRUCK]
    scene.set_actors([])
    assert scene.cast_rays(rays).actor_id.tolist() == [NO_ACTOR_ID, NO_ACTOR_ID]


def test_actor_yaw_rotates_the_box_footprint():
    scene = SimScene(GROUND)
    # A 10 m x 1 m box turned to point along +y covers (0, 4) but not (4, 0).
    scene.set_actors([ActorBox(0, 0, 1, math.pi / 2, 10.0, 1.0, 2.0, 'bus', 3)])
    hits = scene.cast_rays(down_rays([[0, 4], [4, 0]]))
    assert hits.label.tolist() == [SurfaceLabel.BUS, SurfaceLabel.ROAD]


@pytest.mark.parametrize('centers, yaw, sizes, labels, ids, match', [
    ([[0, 0, math.nan]], [0], [[1, 1, 1]], ['car'], [1], 'centers_m'),
    ([[0, 0, 0]], [math.inf], [[1, 1, 1]], ['car'], [1], 'yaw_rad'),
    ([[0, 0, 0]], [0], [[1, 0, 1]], ['car'], [1], 'sizes_m'),
    ([[0, 0, 0]], [0], [[1, 1, 1]], ['car'], [-4], 'actor_ids'),
    ([[0, 0, 0]], [0], [[1, 1, 1]], ['spaceship'], [1], 'spaceship'),
    ([[0, 0, 0], [1, 1, 1]], [0], [[1, 1, 1]], ['car'], [1], 'length'),
])
def test_set_actor_arrays_rejects_bad_values(centers, yaw, sizes, labels, ids, match):
    with pytest.raises(SceneError, match=match):
        SimScene(GROUND).set_actor_arrays(centers, yaw, sizes, labels, ids)


def test_cast_rays_rejects_malformed_rays():
    scene = SimScene(GROUND)
    with pytest.raises(SceneError, match='shape'):
        scene.cast_rays(np.zeros((4, 3), np.float32))
    rays = down_rays([[0, 0]])
    rays[0, 4] = np.nan
    with pytest.raises(SceneError, match='NaN'):
        scene.cast_rays(rays)
    with pytest.raises(SceneError, match='strategy'):
        SimScene(GROUND, strategy='fastest')
    with pytest.raises(SceneError, match='ground_extent_m'):
        SimScene((0, 0, math.inf, 1))


# ---------------------------------------------------------------- lidar

def test_point_layout_matches_pointcloud2_fields():
    assert LIDAR_POINT_DTYPE.itemsize == 24
    assert [LIDAR_POINT_DTYPE.fields[n][1] for n in LIDAR_POINT_DTYPE.names] == \
        [0, 4, 8, 12, 16, 20]
    assert LIDAR_POINT_DTYPE['ring'] == np.uint16
    assert LIDAR_POINT_DTYPE['time'] == np.float32


def test_ground_returns_of_each_ring_lie_at_height_over_sine_of_elevation(ground_scene,
                                                                          lidar64):
    config = lidar64.config
    scan = lidar64.scan(ground_scene, (3.0, -2.0, SENSOR_HEIGHT_M, 0.0, 0.0, 0.4),
                        np.random.default_rng(1))
    points = scan.points
    elevation = config.ring_elevations_rad()
    with np.errstate(divide='ignore'):
        expected_m = np.where(elevation < 0, SENSOR_HEIGHT_M / np.sin(-elevation), np.inf)
    error_m = point_ranges(points) - expected_m[points['ring']]
    assert np.max(np.abs(error_m)) < 6 * config.noise_m
    # Every ring whose ground range is inside the sensor's range returns a full revolution;
    # rings that look up or reach the ground beyond range_m return nothing.
    counts = np.bincount(points['ring'], minlength=config.channels)
    inside = expected_m < config.range_m - 1.0
    outside = expected_m > config.range_m + 1.0
    assert inside.sum() > 20 and outside.sum() > 20
    assert np.all(counts[inside] == config.points_per_revolution)
    assert np.all(counts[outside] == 0)
    np.testing.assert_allclose(points['z'], -SENSOR_HEIGHT_M, atol=6 * config.noise_m)
    assert np.all(scan.label == SurfaceLabel.ROAD)
    assert np.all(scan.actor_id == NO_ACTOR_ID)


@pytest.fixture(scope='module')
def wall_scan():
    """A 32-beam sensor 10 m in front of a large building face (normal along -x)."""
    scene = SimScene(None, [StaticBox(10.0, -50.0, 11.0, 50.0, 'building', height_m=40.0)])
    config = LidarConfig(channels=32, vertical_fov_min_deg=-10.0, vertical_fov_max_deg=10.0,
                         points_per_revolution=1800, noise_m=0.05)
    scan = LidarModel(config).scan(scene, (0.0, 0.0, 2.0, 0.0, 0.0, 0.0),
                                   np.random.default_rng(2))
    return config, scan


def test_wall_range_error_std_matches_noise_and_mean_is_zero(wall_scan):
    config, scan = wall_scan
    points = scan.points
    range_m = point_ranges(points)
    direction_x = points['x'] / range_m
    error_m = range_m - 10.0 / direction_x
    assert len(error_m) > 20000
    assert abs(np.std(error_m) / config.noise_m - 1.0) < 0.1
    assert abs(np.mean(error_m)) < 4 * config.noise_m / math.sqrt(len(error_m))


def test_intensity_follows_reflectivity_and_incidence_angle(wall_scan):
    _, scan = wall_scan
    points = scan.points
    range_m = point_ranges(points)
    # The wall normal is -x, so |cos(incidence)| is the x component of the unit ray direction.
    expected = 255.0 * LABEL_REFLECTIVITY[SurfaceLabel.BUILDING] * points['x'] / range_m
    np.testing.assert_allclose(points['intensity'], expected, rtol=1e-3, atol=1e-3)
    assert points['intensity'].max() <= 255.0
    assert np.all(scan.label == SurfaceLabel.BUILDING)


def test_dropout_drops_the_configured_fraction(ground_scene):
    base = LidarConfig(channels=32, noise_m=0.0, dropout=0.0)
    pose = (0.0, 0.0, SENSOR_HEIGHT_M, 0.0, 0.0, 0.0)
    full = len(LidarModel(base).scan(ground_scene, pose, np.random.default_rng(4)))
    dropout = 0.25
    lossy = LidarModel(LidarConfig(channels=32, noise_m=0.0, dropout=dropout))
    kept = len(lossy.scan(ground_scene, pose, np.random.default_rng(5)))
    sigma = math.sqrt(dropout * (1 - dropout) / full)
    assert abs(kept / full - (1 - dropout)) < 4 * sigma


def test_ring_and_time_fields_follow_the_firing_order(ground_scene, lidar64):
    config = lidar64.config
    points = lidar64.scan(ground_scene, (0.0, 0.0, SENSOR_HEIGHT_M, 0.0, 0.0, 0.0),
                          np.random.default_rng(6)).points
    range_m = point_ranges(points)
    elevation = np.arcsin(points['z'] / range_m)
    nearest_ring = np.argmin(np.abs(elevation[:, None]
                                    - config.ring_elevations_rad()[None, :]), axis=1)
    np.testing.assert_array_equal(points['ring'], nearest_ring)
    # The head spins clockwise from straight behind: column k looks at azimuth pi - k * step.
    azimuth = np.arctan2(points['y'], points['x'])
    step = 2 * math.pi / config.points_per_revolution
    column = np.round(np.mod(math.pi - azimuth, 2 * math.pi) / step).astype(int)
    column %= config.points_per_revolution
    expected_time_s = column / (config.hz * config.points_per_revolution)
    np.testing.assert_allclose(points['time'], expected_time_s, atol=1e-6)
    assert points['time'].min() >= 0.0 and points['time'].max() < 1.0 / config.hz
    assert np.all(np.diff(points['time']) >= 0.0)


def test_sensor_pose_rotates_and_translates_into_the_sensor_frame():
    # A wall on the map's +y side, 10 m from a sensor at (5, 2) that faces +y.
    scene = SimScene(None, [StaticBox(-45.0, 12.0, 55.0, 13.0, 'building', height_m=30.0)])
    model = LidarModel(LidarConfig(channels=16, vertical_fov_min_deg=-5.0,
                                   vertical_fov_max_deg=5.0, noise_m=0.0))
    points = model.scan(scene, (5.0, 2.0, 1.0, 0.0, 0.0, math.pi / 2),
                        np.random.default_rng(0)).points
    assert len(points) > 1000
    np.testing.assert_allclose(points['x'], 10.0, atol=1e-3)


def test_actor_returns_carry_actor_id_and_label(ground_scene):
    scene = SimScene(GROUND)
    scene.set_actors([ActorBox(8.0, 0.0, 0.8, 0.0, 4.5, 1.9, 1.6, 'car', 42)])
    scan = LidarModel(LidarConfig(channels=32)).scan(
        scene, (0.0, 0.0, SENSOR_HEIGHT_M, 0.0, 0.0, 0.0), np.random.default_rng(7))
    on_car = scan.actor_id == 42
    assert on_car.sum() > 50
    assert np.all(scan.label[on_car] == SurfaceLabel.CAR)
    assert np.all(scan.points['x'][on_car] > 5.5 - 0.1)
    assert np.all(scan.label[~on_car] == SurfaceLabel.ROAD)


def test_empty_scene_gives_an_empty_cloud(lidar64):
    scan = lidar64.scan(SimScene(), (0, 0, 0, 0, 0, 0), np.random.default_rng(0))
    assert len(scan) == 0
    assert scan.points.dtype == LIDAR_POINT_DTYPE
    assert scan.label.shape == (0,) and scan.actor_id.shape == (0,)


def test_scan_is_reproducible_for_a_seed(ground_scene):
    model = LidarModel(LidarConfig(channels=16, noise_m=0.05, dropout=0.1))
    pose = (0, 0, SENSOR_HEIGHT_M, 0.01, -0.02, 1.0)
    first = model.scan(ground_scene, pose, np.random.default_rng(11)).points
    second = model.scan(ground_scene, pose, np.random.default_rng(11)).points
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize('pose', [(0, 0, 1), (0, 0, 1, 0, math.nan, 0), (0, 0, 1, 0, 0, math.inf)])
def test_scan_rejects_malformed_pose(ground_scene, lidar64, pose):
    with pytest.raises(PoseError):
        lidar64.scan(ground_scene, pose, np.random.default_rng(0))


@pytest.mark.parametrize('kwargs, key', [
    (dict(channels=8), 'channels'),
    (dict(channels=129), 'channels'),
    (dict(channels=32.0), 'channels'),
    (dict(vertical_fov_min_deg=10.0, vertical_fov_max_deg=5.0), 'vertical_fov_max_deg'),
    (dict(range_m=-1.0), 'range_m'),
    (dict(range_m=math.nan), 'range_m'),
    (dict(min_range_m=5.0, range_m=4.0), 'min_range_m'),
    (dict(noise_m=-0.1), 'noise_m'),
    (dict(dropout=1.5), 'dropout'),
    (dict(hz=0.0), 'hz'),
    (dict(points_per_revolution=10), 'points_per_revolution'),
])
def test_lidar_config_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(LidarConfigError, match=key):
        LidarConfig(**kwargs)


def test_lidar_config_from_dict_reads_scenario_keys_and_rejects_unknown_ones():
    config = LidarConfig.from_dict({'channels': 64, 'hz': 10, 'range_m': 100, 'noise_m': 0.02,
                                    'dropout': 0.01})
    assert (config.channels, config.hz, config.dropout) == (64, 10.0, 0.01)
    assert LidarConfig.from_dict({'azimuth_resolution_deg': 0.4}).points_per_revolution == 900
    assert isinstance(LidarConfigError('x'), ValueError)
    with pytest.raises(LidarConfigError, match='beams'):
        LidarConfig.from_dict({'beams': 64})
    with pytest.raises(LidarConfigError, match='not both'):
        LidarConfig.from_dict({'azimuth_resolution_deg': 0.2, 'points_per_revolution': 1800})
    with pytest.raises(LidarConfigError, match='azimuth_resolution_deg'):
        LidarConfig.from_dict({'azimuth_resolution_deg': 0.0})


# ---------------------------------------------------------------- camera

CAMERA_HEIGHT_M = 1.5


@pytest.fixture(scope='module')
def camera():
    return CameraModel(CameraConfig())


def test_render_gives_an_rgb_image_of_sky_for_an_empty_scene(camera):
    image = camera.render(SimScene(), (0, 0, CAMERA_HEIGHT_M, 0, 0, 0))
    assert image.shape == (384, 640, 3) and image.dtype == np.uint8
    assert np.all(image == SKY_RGB)


def test_box_appears_where_the_pinhole_model_predicts(camera):
    scene = SimScene(GROUND)
    center = np.array([12.0, 2.0, 1.0])
    size = np.array([2.0, 1.5, 1.2])
    scene.set_actors([ActorBox(*center, 0.0, *size, 'car', 5)])
    frame = camera.render_frame(scene, (0, 0, CAMERA_HEIGHT_M, 0, 0, 0))
    rows, cols = np.nonzero(frame.actor_id == 5)
    corners = center + (np.array([[x, y, z] for x in (-.5, .5) for y in (-.5, .5)
                                  for z in (-.5, .5)]) * size)
    uv, valid = camera.project_points(corners - [0.0, 0.0, CAMERA_HEIGHT_M])
    assert np.all(valid)
    # Pixel centres inside the projected silhouette: first/last covered pixel within 1 px.
    assert abs(cols.min() - uv[:, 0].min()) <= 1.0 and abs(cols.max() - uv[:, 0].max()) <= 1.0
    assert abs(rows.min() - uv[:, 1].min()) <= 1.0 and abs(rows.max() - uv[:, 1].max()) <= 1.0
    # A box on the left (+y) and below the camera lands left of and below the principal point.
    assert cols.max() < camera.config.cx and rows.min() > camera.config.cy - 40
    assert np.all(frame.label[rows, cols] == SurfaceLabel.CAR)
    # The front face is 11 m ahead along the optical axis.
    centre_uv, _ = camera.project_points([[11.0, 2.0, 1.0 - CAMERA_HEIGHT_M]])
    u, v = np.round(centre_uv[0]).astype(int)
    assert frame.depth_m[v, u] == pytest.approx(11.0, abs=1e-3)
    assert np.any(np.abs(frame.rgb[v, u].astype(int) - SKY_RGB) > 30)


def test_camera_yaw_turns_the_view(camera):
    scene = SimScene(GROUND)
    scene.set_actors([ActorBox(0.0, 15.0, CAMERA_HEIGHT_M, 0.0, 2.0, 2.0, 2.0, 'truck', 8)])
    config = camera.config
    centre = (round(config.cy), round(config.cx))
    facing_y = camera.render_frame(scene, (0, 0, CAMERA_HEIGHT_M, 0, 0, math.pi / 2))
    facing_x = camera.render_frame(scene, (0, 0, CAMERA_HEIGHT_M, 0, 0, 0))
    assert facing_y.actor_id[centre] == 8
    assert not np.any(facing_x.actor_id == 8)


def test_project_points_uses_the_optical_frame_convention(camera):
    config = camera.config
    uv, valid = camera.project_points([[10.0, 0.0, 0.0], [10.0, 1.0, 0.0], [10.0, 0.0, 1.0],
                                       [-10.0, 0.0, 0.0], [1.0, 5.0, 0.0]])
    np.testing.assert_allclose(uv[0], [config.cx, config.cy])
    np.testing.assert_allclose(uv[1], [config.cx - config.fx * 0.1, config.cy])
    np.testing.assert_allclose(uv[2], [config.cx, config.cy - config.fy * 0.1])
    assert valid.tolist() == [True, True, True, False, False]
    assert np.all(np.isnan(uv[3]))
    # BODY_FROM_OPTICAL maps optical z (forward) to body x and optical x (right) to body -y.
    np.testing.assert_array_equal(BODY_FROM_OPTICAL @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_array_equal(BODY_FROM_OPTICAL @ [1, 0, 0], [0, -1, 0])


def test_project_points_rejects_malformed_points(camera):
    with pytest.raises(CameraInputError, match='shape'):
        camera.project_points(np.zeros((3, 2)))
    with pytest.raises(CameraInputError, match='NaN'):
        camera.project_points([[1.0, math.nan, 0.0]])
    uv, valid = camera.project_points(np.zeros((0, 3)))
    assert uv.shape == (0, 2) and valid.shape == (0,)


def test_camera_info_has_k_identity_r_p_and_zero_distortion():
    config = CameraConfig(fx=500.0, fy=510.0, cx=300.0, cy=200.0)
    info = CameraModel(config).camera_info_dict()
    assert (info['width'], info['height'], info['distortion_model']) == (640, 384, 'plumb_bob')
    assert info['d'] == [0.0] * 5
    assert info['k'] == [500.0, 0.0, 300.0, 0.0, 510.0, 200.0, 0.0, 0.0, 1.0]
    assert info['r'] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert info['p'] == [500.0, 0.0, 300.0, 0.0, 0.0, 510.0, 200.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_downsampled_render_agrees_with_full_render():
    scene = SimScene(GROUND, [StaticBox(15, 6, 40, 20, 'building', height_m=15.0)])
    scene.set_actors([ActorBox(14.0, -1.75, 0.8, 0.2, 4.5, 1.9, 1.6, 'car', 1)])
    pose = (0, 0, CAMERA_HEIGHT_M, 0, 0.05, 0)
    full = CameraModel(CameraConfig()).render_frame(scene, pose)
    coarse = CameraModel(CameraConfig(render_downsample=2)).render_frame(scene, pose)
    assert coarse.rgb.shape == full.rgb.shape
    assert np.mean(coarse.label == full.label) > 0.98
    assert len(np.unique(full.label)) == 4  # road, building, car, sky


@pytest.mark.parametrize('kwargs, key', [
    (dict(width=320), 'width'),
    (dict(height=200), 'height'),
    (dict(fx=0.0), 'fx'),
    (dict(fy=math.inf), 'fy'),
    (dict(cx=700.0), 'cx'),
    (dict(cy=500.0), 'cy'),
    (dict(hz=0.0), 'hz'),
    (dict(render_downsample=3), 'render_downsample'),
])
def test_camera_config_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(CameraConfigError, match=key):
        CameraConfig(**kwargs)


def test_camera_config_from_dict_rejects_unknown_keys():
    assert CameraConfig.from_dict({'hz': 15}).hz == 15.0
    with pytest.raises(CameraConfigError, match='fov'):
        CameraConfig.from_dict({'fov': 90})
