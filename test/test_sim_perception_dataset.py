"""Simulated perception dataset (robotaxi_stack.sim.perception_dataset): determinism, splits,
placement, LiDAR/camera labels, the debris-ahead frame and argument errors."""

import math

import numpy as np
import pytest

from robotaxi_stack.sim import perception_dataset as pds
from robotaxi_stack.sim.lidar import LIDAR_POINT_DTYPE, LidarConfig
from robotaxi_stack.sim.scene import LABEL_COLOUR_RGB, SurfaceLabel
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle

SMALL_LIDAR = pds.lidar_config(channels=32, points_per_revolution=900)
VALID_LABELS = {pds.LABEL_UNKNOWN, pds.LABEL_CAR, pds.LABEL_TRUCK, pds.LABEL_BUS,
                pds.LABEL_BICYCLE, pds.LABEL_PEDESTRIAN}


@pytest.fixture(scope='module')
def samples():
    """Full-resolution samples of both splits (default 64-beam LiDAR and camera)."""
    return [pds.generate_sample(seed, split=split) for split in pds.SPLITS for seed in (0, 1, 2)]


@pytest.fixture(scope='module')
def debris_sample():
    return pds.generate_sample(11, debris_ahead_m=30.0, camera=False)


def footprint_grid(box, count=9):
    """(count^2, 2) points spread over a box's BEV footprint, edges included."""
    x, y, _, length, width, _, yaw = box
    u, v = np.meshgrid(np.linspace(-0.5, 0.5, count), np.linspace(-0.5, 0.5, count))
    local = np.column_stack((u.ravel() * length, v.ravel() * width))
    c, s = math.cos(yaw), math.sin(yaw)
    return np.column_stack((x + c * local[:, 0] - s * local[:, 1],
                            y + s * local[:, 0] + c * local[:, 1]))


def inside_footprint(points_xy, box, tolerance_m=0.0):
    x, y, _, length, width, _, yaw = box
    d = points_xy - np.array([x, y])
    c, s = math.cos(yaw), math.sin(yaw)
    along = c * d[:, 0] + s * d[:, 1]
    across = -s * d[:, 0] + c * d[:, 1]
    return (np.abs(along) <= 0.5 * length + tolerance_m) \
        & (np.abs(across) <= 0.5 * width + tolerance_m)


def same_points(a, b):
    """Field-wise equality (the 2 padding bytes of each point are not data)."""
    return a.shape == b.shape and all(np.array_equal(a[k], b[k]) for k in a.dtype.names)


def points_in_base(sample):
    xyz = np.column_stack([sample.points[k].astype(np.float64) for k in 'xyz'])
    t = sample.base_from_lidar
    return xyz @ t[:3, :3].T + t[:3, 3]


# ------------------------------------------------------------------- determinism, splits

def test_same_arguments_give_identical_samples(samples):
    again = pds.generate_sample(1, split='train')
    first = samples[1]
    assert same_points(again.points, first.points)
    np.testing.assert_array_equal(again.boxes_base, first.boxes_base)
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_array_equal(again.point_actor_index, first.point_actor_index)
    np.testing.assert_array_equal(again.image, first.image)
    np.testing.assert_array_equal(again.image_boxes, first.image_boxes)


def test_different_seeds_and_splits_give_different_samples(samples):
    train0, train1 = samples[0], samples[1]
    heldout0 = samples[3]
    assert train0.boxes_base.shape != train1.boxes_base.shape \
        or not np.allclose(train0.boxes_base, train1.boxes_base)
    assert train0.boxes_base.shape != heldout0.boxes_base.shape \
        or not np.allclose(train0.boxes_base, heldout0.boxes_base)
    assert not same_points(train0.points, heldout0.points)


def test_held_out_towns_are_never_training_towns():
    train = {pds._pool_params(pds._SPLIT_SPECS['train'], i)
             for i in range(pds._SPLIT_SPECS['train'].town_pool_size)}
    heldout = {pds._pool_params(pds._SPLIT_SPECS['heldout'], i)
               for i in range(pds._SPLIT_SPECS['heldout'].town_pool_size)}
    assert len(train) == pds._SPLIT_SPECS['train'].town_pool_size
    assert not train & heldout


def test_camera_setting_does_not_change_layout_or_scan():
    with_camera = pds.generate_sample(4, lidar=SMALL_LIDAR, camera=True)
    without = pds.generate_sample(4, lidar=SMALL_LIDAR, camera=False)
    assert without.image is None and with_camera.image is not None
    assert same_points(without.points, with_camera.points)
    np.testing.assert_array_equal(without.boxes_base, with_camera.boxes_base)
    assert np.all(np.isnan(without.image_boxes)) and not np.any(without.image_visible_px)


# ------------------------------------------------------------------------ placement

def test_sample_arrays_have_documented_shapes_and_types(samples):
    for sample in samples:
        count = len(sample.boxes_base)
        assert sample.points.dtype == LIDAR_POINT_DTYPE
        assert sample.point_actor_index.shape == sample.points.shape
        assert sample.point_actor_index.dtype == np.int64
        assert sample.boxes_base.shape == (count, 7) and sample.labels.dtype == np.uint8
        assert sample.image.shape == (sample.image_size[1], sample.image_size[0], 3)
        assert sample.image.dtype == np.uint8
        assert sample.image_boxes.shape == (count, 4)
        assert sample.camera_matrix.shape == (3, 3) and sample.camera_from_base.shape == (4, 4)
        # The default sensor sweeps ~115k rays; most of them hit something within 80 m.
        assert 60_000 < len(sample.points) <= 115_200


def test_actor_mix_labels_and_ranges_are_valid(samples):
    labels = np.concatenate([s.labels for s in samples])
    assert set(labels.tolist()) <= VALID_LABELS
    for label in (pds.LABEL_CAR, pds.LABEL_PEDESTRIAN):
        assert np.sum(labels == label) >= 3 * len(samples)
    for sample in samples:
        range_m = np.hypot(sample.boxes_base[:, 0], sample.boxes_base[:, 1])
        assert np.all(range_m <= pds.PLACEMENT_RADIUS_M + 1.0)
        assert np.all(sample.boxes_base[:, 3:6] > 0.0)
        # Boxes stand on the road (z = 0) or on a kerb-level sidewalk (< 0.25 m).
        bottom = sample.boxes_base[:, 2] - 0.5 * sample.boxes_base[:, 5]
        assert np.all((bottom >= -1e-9) & (bottom <= 0.25))
        # Most actors within 80 m are seen by the LiDAR.
        near = range_m < 80.0
        assert np.mean(sample.lidar_point_counts[near] > 0) > 0.3


def test_debris_is_unknown_and_small(samples):
    for sample in samples:
        debris = sample.boxes_base[sample.labels == pds.LABEL_UNKNOWN]
        assert np.all((debris[:, 3:6] >= 0.3 - 1e-9) & (debris[:, 3:6] <= 1.0 + 1e-9))


def test_boxes_overlap_neither_each_other_nor_the_ego(samples):
    vehicle = load_vehicle('bmw_320i')
    ego = np.array([vehicle.box_centre_offset_m, 0.0, 0.7, vehicle.length_m, vehicle.width_m,
                    1.4, 0.0])
    for sample in samples:
        boxes = np.vstack((sample.boxes_base, ego))
        for i, box in enumerate(boxes):
            grid = footprint_grid(box)
            for j, other in enumerate(boxes):
                if i != j:
                    assert not np.any(inside_footprint(grid, other)), (sample.seed, i, j)


# ---------------------------------------------------------------------------- LiDAR

def test_lidar_points_on_actors_lie_inside_their_boxes(samples):
    for sample in samples:
        xyz = points_in_base(sample)
        on_actor = sample.point_actor_index >= 0
        boxes = sample.boxes_base[sample.point_actor_index[on_actor]]
        d = xyz[on_actor] - boxes[:, :3]
        c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
        local = np.column_stack((c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1],
                                 d[:, 2]))
        # Range noise is 0.02 m sigma: 0.12 m is six sigma.
        assert np.all(np.abs(local) <= 0.5 * boxes[:, 3:6] + 0.12)
        # Static returns are not inside any actor box (beyond noise).
        static = xyz[~on_actor][::50]
        for box in sample.boxes_base:
            inside = inside_footprint(static[:, :2], box, -0.15) \
                & (np.abs(static[:, 2] - box[2]) < 0.5 * box[5] - 0.15)
            assert not np.any(inside)


def test_point_counts_match_point_actor_index(samples):
    for sample in samples:
        counts = np.bincount(sample.point_actor_index[sample.point_actor_index >= 0],
                             minlength=len(sample.boxes_base))
        np.testing.assert_array_equal(counts, sample.lidar_point_counts)
        assert sample.point_actor_index.min() >= -1
        assert sample.point_actor_index.max() < len(sample.boxes_base)


def test_lidar_config_defaults_and_overrides():
    config = pds.lidar_config()
    assert config.rays_per_scan == 64 * 1800 and config.range_m == 80.0
    assert config.dropout == pytest.approx(0.01) and config.noise_m == pytest.approx(0.02)
    small = pds.lidar_config(32, 900, range_m=60.0)
    assert (small.channels, small.points_per_revolution, small.range_m) == (32, 900, 60.0)
    with pytest.raises(ValueError, match='no_such_field'):
        pds.lidar_config(no_such_field=1.0)


def test_smaller_lidar_gives_fewer_points_of_the_same_scene():
    small = pds.generate_sample(0, lidar=SMALL_LIDAR, camera=False)
    full = pds.generate_sample(0, camera=False)
    np.testing.assert_array_equal(small.boxes_base, full.boxes_base)
    assert len(small.points) < 0.3 * len(full.points)
    assert np.all(np.hypot(small.points['x'], small.points['y']) <= 80.5)


# --------------------------------------------------------------------------- camera

def test_image_boxes_contain_projected_centres_of_well_visible_boxes(samples):
    checked = 0
    for sample in samples:
        width, height = sample.image_size
        k = sample.camera_matrix
        for box, pixel_box, pixels in zip(sample.boxes_base, sample.image_boxes,
                                          sample.image_visible_px):
            if pixels == 0:
                assert np.all(np.isnan(pixel_box))
                continue
            assert pixel_box[0] < pixel_box[2] and pixel_box[1] < pixel_box[3]
            assert (pixel_box[2] - pixel_box[0]) * (pixel_box[3] - pixel_box[1]) >= pixels
            corners = np.array([[sx * box[3] / 2, sy * box[4] / 2, sz * box[5] / 2]
                                for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
            c, s = math.cos(box[6]), math.sin(box[6])
            corners = corners @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + box[:3]
            points = np.vstack((box[:3], corners))
            cam = points @ sample.camera_from_base[:3, :3].T + sample.camera_from_base[:3, 3]
            if np.any(cam[:, 0] <= 0.5):
                continue
            u = k[0, 0] * -cam[:, 1] / cam[:, 0] + k[0, 2]
            v = k[1, 1] * -cam[:, 2] / cam[:, 0] + k[1, 2]
            full_area = (u[1:].max() - u[1:].min()) * (v[1:].max() - v[1:].min())
            on_image = (u[1:].min() >= 0 and u[1:].max() < width and v[1:].min() >= 0
                        and v[1:].max() < height)
            # Mostly unoccluded and wholly in the image: its pixels span the projected box.
            if on_image and pixels >= 100 and pixels >= 0.5 * full_area:
                assert pixel_box[0] <= u[0] <= pixel_box[2]
                assert pixel_box[1] <= v[0] <= pixel_box[3]
                assert pixel_box[0] >= u[1:].min() - 1.5 and pixel_box[2] <= u[1:].max() + 1.5
                checked += 1
    assert checked >= 5


def test_image_box_of_an_actor_holds_pixels_of_its_class_colour(samples):
    surface = {pds.LABEL_UNKNOWN: SurfaceLabel.STATIC_OBJECT, pds.LABEL_CAR: SurfaceLabel.CAR,
               pds.LABEL_TRUCK: SurfaceLabel.TRUCK, pds.LABEL_BUS: SurfaceLabel.BUS,
               pds.LABEL_BICYCLE: SurfaceLabel.BICYCLE,
               pds.LABEL_PEDESTRIAN: SurfaceLabel.PEDESTRIAN}
    checked = 0
    for sample in samples:
        for index in np.flatnonzero(sample.image_visible_px > 50):
            x0, y0, x1, y1 = sample.image_boxes[index]
            patch = sample.image[int(y0 + 0.5):int(y1 + 0.5), int(x0 + 0.5):int(x1 + 0.5)]
            albedo = LABEL_COLOUR_RGB[surface[int(sample.labels[index])]].astype(np.float64)
            # Shading scales the albedo: some pixel is (albedo x brightness), rounded.
            pixels = patch.reshape(-1, 3).astype(np.float64)
            scale = pixels[:, np.argmax(albedo)] / albedo.max()
            assert np.any(np.all(np.abs(pixels - scale[:, None] * albedo) <= 2.0, axis=1))
            checked += 1
    assert checked >= 5


# ------------------------------------------------------------------------ debris ahead

def test_debris_ahead_is_last_box_in_the_ego_lane(debris_sample):
    box = debris_sample.boxes_base[-1]
    assert debris_sample.labels[-1] == pds.LABEL_UNKNOWN
    np.testing.assert_allclose(box[3:6], [0.5, 0.5, 0.5])
    assert box[2] == pytest.approx(0.25)
    assert math.hypot(box[0], box[1]) == pytest.approx(30.0, abs=0.4)
    assert box[0] > 29.0
    assert debris_sample.lidar_point_counts[-1] > 0


@pytest.mark.parametrize('seed', [11, 12, 13, 14])
def test_nothing_is_placed_between_the_ego_and_the_debris_in_its_lane(seed):
    sample = pds.generate_sample(seed, debris_ahead_m=30.0, camera=False, lidar=SMALL_LIDAR)
    box = sample.boxes_base[-1]
    assert sample.labels[-1] == pds.LABEL_UNKNOWN
    c, s = math.cos(box[6]), math.sin(box[6])
    for other in sample.boxes_base[:-1]:
        # Every footprint point, in the lane frame (origin: debris centre, x along the lane).
        d = footprint_grid(other) - box[:2]
        along, across = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        assert not np.any((np.abs(across) < 1.5) & (along >= -30.0) & (along <= 0.0)), other


def test_debris_ahead_is_deterministic_and_changes_only_that_frame(debris_sample):
    again = pds.generate_sample(11, debris_ahead_m=30.0, camera=False)
    np.testing.assert_array_equal(again.boxes_base, debris_sample.boxes_base)
    plain = pds.generate_sample(11, camera=False)
    assert pds.LABEL_UNKNOWN not in plain.labels[-1:] or len(plain.boxes_base) != \
        len(debris_sample.boxes_base) or not np.allclose(plain.boxes_base[-1],
                                                         debris_sample.boxes_base[-1])


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize('kwargs, name', [
    (dict(seed=0, split='test'), 'split'),
    (dict(seed=-1), 'seed'),
    (dict(seed=1.5), 'seed'),
    (dict(seed=True), 'seed'),
    (dict(seed=0, debris_ahead_m=0.0), 'debris_ahead_m'),
    (dict(seed=0, debris_ahead_m=-5.0), 'debris_ahead_m'),
    (dict(seed=0, debris_ahead_m=math.nan), 'debris_ahead_m'),
    (dict(seed=0, debris_ahead_m=2.0), 'debris_ahead_m'),
    (dict(seed=0, debris_ahead_m=500.0), 'debris_ahead_m'),
    (dict(seed=0, lidar={'channels': 64}), 'lidar'),
    (dict(seed=0, camera='yes'), 'camera'),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        pds.generate_sample(**kwargs)


def test_unknown_vehicle_is_an_error():
    with pytest.raises(ValueError, match='no_such_car'):
        pds.generate_sample(0, vehicle='no_such_car')


def test_train_class_indices_map_object_classes():
    labels = np.array([0, 1, 2, 3, 4, 5, 6], dtype=np.uint8)
    np.testing.assert_array_equal(pds.train_class_indices(labels), [-1, 0, 1, 1, 2, -1, 3])
    assert pds.TRAIN_CLASSES[pds.train_class_indices(np.array([6]))[0]] == 'pedestrian'
    with pytest.raises(ValueError, match='labels'):
        pds.train_class_indices(np.array([9]))
    assert isinstance(pds.lidar_config(), LidarConfig)
