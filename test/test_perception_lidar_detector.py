"""ONNX LiDAR detector core (perception/lidar_detector.py): BEV features against a hand
computation, frame handling and rotation symmetry of the encoder, decode and rotated NMS on
hand-made heatmaps, truck/bus split, the merge with obstacle clusters, bad inputs, parameter
and metadata checks, and the committed model detecting a car in a generated frame."""

import json
import math
import shutil

import numpy as np
import pytest

from robotaxi_stack.perception import lidar_detector as ld
from robotaxi_stack.perception.lidar_detector import (
    BevEncoder, BevGrid, DetectorResult, LidarDetector, LidarDetectorError, LidarDetectorParams,
    class_labels, decode_detections, empty_result, merge_with_clusters, rotated_nms)
from robotaxi_stack.perception.obstacles import ObstacleCluster

GRID = BevGrid(range_m=10.0, cell_m=0.5, min_z_m=-2.0, max_z_m=4.0, output_stride=2)
NAMES = ld.FEATURE_NAMES


def channel(features, name):
    return features[0, NAMES.index(name)]


def cell_of(x, y, grid=GRID, centre=(0.0, 0.0)):
    return (int((x - centre[0] + grid.range_m) // grid.cell_m),
            int((y - centre[1] + grid.range_m) // grid.cell_m))


# ----------------------------------------------------------------------------- features

def test_cell_features_match_a_hand_computation():
    points = np.array([[1.1, 2.2, 0.5, 100.0],     # three points in one cell
                       [1.3, 2.4, 1.5, 20.0],
                       [1.2, 2.3, -0.5, 300.0],    # intensity above full scale clips to 1
                       [-3.9, 0.1, 2.0, 51.0],     # alone in its cell
                       [0.0, 0.0, 5.0, 10.0],      # above max_z: ignored
                       [12.0, 0.0, 0.0, 10.0]])    # outside the grid: ignored
    features, stats, problem = BevEncoder(GRID).encode(points)
    assert problem == '' and features.shape == (1, len(NAMES), 40, 40)
    assert stats.input_points == 6 and stats.outside_grid_points == 2
    assert stats.occupied_cells == 2
    i, j = cell_of(1.1, 2.2)
    assert (i, j) == (22, 24)
    z = (np.array([0.5, 1.5, -0.5]) + 2.0) / 6.0
    intensity = np.array([100.0, 20.0, 255.0]) / 255.0
    expected = {'occupancy': 1.0, 'log_count': math.log1p(3) / math.log1p(255),
                'max_z': z.max(), 'min_z': z.min(), 'mean_z': z.mean(),
                'max_intensity': intensity.max(), 'mean_intensity': intensity.mean(),
                'range': math.hypot(1.25, 2.25) / 10.0}
    for name, value in expected.items():
        assert channel(features, name)[i, j] == pytest.approx(value, abs=1e-6), name
    k, m = cell_of(-3.9, 0.1)
    assert channel(features, 'max_z')[k, m] == pytest.approx(4.0 / 6.0)
    assert channel(features, 'min_z')[k, m] == pytest.approx(4.0 / 6.0)
    assert channel(features, 'mean_intensity')[k, m] == pytest.approx(0.2)
    # Every other cell is empty in all point channels; range is everywhere.
    point_channels = features[0, :NAMES.index('range')].copy()
    point_channels[:, [i, k], [j, m]] = 0.0
    assert not point_channels.any()
    assert channel(features, 'range')[0, 0] == pytest.approx(math.hypot(9.75, 9.75) / 10.0)


def test_buffer_is_reset_between_frames():
    encoder = BevEncoder(GRID)
    encoder.encode(np.array([[1.0, 1.0, 0.0, 50.0]]))
    features, _, _ = encoder.encode(np.array([[-5.0, -5.0, 0.0, 50.0]]))
    assert channel(features, 'occupancy').sum() == 1.0
    assert channel(features, 'occupancy')[cell_of(-5.0, -5.0)] == 1.0


def test_sensor_frame_points_are_moved_into_base_link_and_the_grid_follows_the_sensor():
    extrinsic = np.eye(4)
    extrinsic[:3, 3] = (1.2, 0.0, 1.6)
    rng = np.random.default_rng(1)
    sensor_points = np.column_stack([rng.uniform(-9, 9, (500, 2)), rng.uniform(-3, 1, 500),
                                     rng.uniform(0, 255, 500)]).astype(np.float32)
    base_points = sensor_points.copy()
    base_points[:, :3] += extrinsic[:3, 3]
    encoder = BevEncoder(GRID, extrinsic)
    from_sensor = encoder.encode(sensor_points, sensor_frame=True)[0].copy()
    from_base = encoder.encode(base_points)[0]
    np.testing.assert_allclose(from_sensor, from_base, atol=1e-6)
    # A point at the sensor's (x, y) lands in a centre cell of the grid.
    features, _, _ = encoder.encode(np.array([[1.2, 0.0, 0.0, 0.0]]))
    assert channel(features, 'occupancy')[20, 20] == 1.0


def test_structured_points_without_intensity_read_as_zero_intensity():
    points = np.zeros(3, np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4')]))
    points['x'] = [1.0, 2.0, 3.0]
    features, stats, problem = BevEncoder(GRID).encode(points)
    assert problem == '' and stats.occupied_cells == 3
    assert channel(features, 'max_intensity').max() == 0.0


def test_features_rotate_with_the_points():
    """The trainer's 90-degree augmentation relies on this symmetry of the grid."""
    rng = np.random.default_rng(2)
    # Cell-centred coordinates so no point sits on a cell edge after the rotation.
    cells = rng.integers(0, 40, (300, 2))
    xy = (cells + 0.5) * GRID.cell_m - GRID.range_m
    z = rng.uniform(-1.0, 3.0, 300)
    intensity = rng.uniform(0, 255, 300)
    encoder = BevEncoder(GRID)
    original = encoder.encode(np.column_stack([xy, z, intensity]))[0].copy()
    rotated = encoder.encode(np.column_stack([-xy[:, 1], xy[:, 0], z, intensity]))[0]
    np.testing.assert_allclose(rotated[0], np.rot90(original[0], 1, axes=(1, 2)), atol=1e-6)


@pytest.mark.parametrize('points, reason', [
    (np.zeros((0, 4), np.float32), 'empty cloud'),
    (np.full((100, 4), np.nan, np.float32), 'no finite points'),
    (np.full((10, 4), 50.0, np.float32), 'no points inside the grid'),
    (np.zeros((10, 2), np.float32), 'bad input: points must have shape (N, >=3)'),
    (np.zeros((2, 3, 4), np.float32), 'bad input: points must have shape (N, >=3)'),
    (np.array([['a', 'b', 'c']]), 'bad input: points must be numeric'),
    ([[1.0, 'x', None]], 'bad input: points are not numeric'),
    (np.zeros(4, np.dtype([('a', '<f4'), ('b', '<f4')])), 'bad input: structured points lack'),
])
def test_bad_points_give_no_features_and_a_reason(points, reason):
    features, stats, problem = BevEncoder(GRID).encode(points)
    assert features is None
    assert problem.startswith(reason)


def test_non_finite_points_are_dropped_and_counted():
    points = np.array([[1.0, 1.0, 0.0, 10.0], [np.nan, 1.0, 0.0, 10.0],
                       [1.0, np.inf, 0.0, 10.0], [2.0, 2.0, 0.0, np.nan]], np.float32)
    features, stats, problem = BevEncoder(GRID).encode(points)
    assert problem == '' and stats.non_finite_points == 2 and stats.occupied_cells == 2
    # A NaN intensity reads as 0 rather than poisoning the cell.
    assert channel(features, 'max_intensity')[cell_of(2.0, 2.0)] == 0.0


# ----------------------------------------------------------------------- decode and NMS

def _maps(m=20):
    return (np.zeros((len(ld.CLASS_NAMES), m, m), np.float32),
            np.zeros((len(ld.REGRESSION_NAMES), m, m), np.float32))


def _put(regression, i, j, offset, z, size, yaw):
    regression[:, i, j] = (offset[0], offset[1], z, *np.log(size), math.sin(yaw),
                           math.cos(yaw))


def test_decode_turns_peaks_into_boxes_in_base_link():
    heat, reg = _maps()
    heat[0, 12, 7] = 0.9     # car
    heat[3, 3, 15] = 0.6     # pedestrian
    heat[1, 18, 18] = 0.2    # below the threshold
    _put(reg, 12, 7, (0.25, 0.75), 0.8, (4.5, 1.9, 1.6), 0.3)
    _put(reg, 3, 15, (0.5, 0.5), 0.9, (0.6, 0.6, 1.8), -2.0)
    boxes, scores, classes = decode_detections(heat, reg, GRID, centre_xy=(1.2, -0.5),
                                               score_threshold=0.3)
    assert classes.tolist() == [0, 3]
    np.testing.assert_allclose(scores, [0.9, 0.6], rtol=1e-6)
    # Output cells are 1 m (stride 2 of 0.5 m); cell 12 + 0.25 -> 12.25 m from the corner.
    np.testing.assert_allclose(boxes[0], [1.2 - 10 + 12.25, -0.5 - 10 + 7.75, 0.8, 4.5, 1.9,
                                          1.6, 0.3], atol=1e-5)
    np.testing.assert_allclose(boxes[1], [1.2 - 10 + 3.5, -0.5 - 10 + 15.5, 0.9, 0.6, 0.6,
                                          1.8, -2.0], atol=1e-5)


def test_decode_keeps_the_highest_peaks_up_to_max_detections():
    heat, reg = _maps()
    reg[3:6] = 0.0  # 1 m boxes
    for k, score in enumerate([0.5, 0.9, 0.7, 0.4]):
        heat[0, 2 + 4 * k, 2] = score
    _, scores, _ = decode_detections(heat, reg, GRID, score_threshold=0.1, max_detections=2)
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)


def test_decode_drops_non_finite_outputs_and_checks_shapes():
    heat, reg = _maps()
    heat[0, 5, 5] = heat[0, 9, 9] = 0.8
    reg[2, 9, 9] = np.nan
    boxes, _, _ = decode_detections(heat, reg, GRID)
    assert len(boxes) == 1
    with pytest.raises(ValueError, match='regression'):
        decode_detections(heat, reg[:, :10], GRID)


def test_rotated_nms_suppresses_overlaps_within_a_class_only():
    boxes = np.array([[0.0, 0.0, 0.8, 4.5, 1.9, 1.5, 0.0],
                      [0.3, 0.1, 0.8, 4.4, 1.9, 1.5, 0.1],    # duplicate of 0, lower score
                      [0.2, 0.0, 0.8, 4.5, 1.9, 1.5, 0.0],    # same place, other class
                      [0.0, 2.5, 0.8, 4.5, 1.9, 1.5, 0.0],    # neighbour, no overlap
                      [0.0, 0.0, 0.8, 4.5, 1.9, 1.5, 1.5708]])  # crossing: IoU 0.27
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    groups = np.array([0, 0, 1, 0, 0])
    assert rotated_nms(boxes, scores, 0.2, groups).tolist() == [0, 2, 3]
    assert rotated_nms(boxes, scores, 0.3, groups).tolist() == [0, 2, 3, 4]
    assert rotated_nms(boxes, scores, 0.2).tolist() == [0, 3]
    assert rotated_nms(np.zeros((0, 7)), np.zeros(0), 0.2).tolist() == []


def test_truck_bus_boxes_split_by_length():
    labels = class_labels(np.array([0, 1, 1, 2, 3]), np.array([4.5, 7.0, 12.0, 1.8, 0.6]))
    assert labels.tolist() == [ld.LABEL_CAR, ld.LABEL_TRUCK, ld.LABEL_BUS, ld.LABEL_BICYCLE,
                               ld.LABEL_PEDESTRIAN]


# ------------------------------------------------------------------------------- merge

def _detections(rows, labels):
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 7)
    return DetectorResult(boxes=boxes, scores=np.full(len(boxes), 0.8),
                          labels=np.array(labels, np.uint8),
                          class_index=np.zeros(len(boxes), np.int64), processed=True)


def _cluster(x, y, length=0.5, width=0.5, yaw=0.0, points=20, height=1.2):
    return ObstacleCluster(x, y, 0.5 * height, yaw, length, width, height, points)


def test_merge_drops_clusters_a_detection_explains_and_keeps_the_rest_as_unknown():
    detections = _detections([[20.0, 0.0, 0.8, 4.5, 1.9, 1.5, 0.0],
                              [10.0, 5.0, 0.9, 0.6, 0.6, 1.8, 0.0]],
                             [ld.LABEL_CAR, ld.LABEL_PEDESTRIAN])
    clusters = [
        _cluster(19.0, 0.6, 3.0, 1.0),            # the car's visible side: centre inside
        _cluster(10.0, 5.7, 0.4, 0.4),            # 0.4 m beside the pedestrian: in the margin
        _cluster(30.0, 0.0, 0.5, 0.5, points=5),  # debris ahead: kept
        _cluster(17.0, 0.0, 8.0, 1.0, 0.0),       # long cluster holding the car's centre
        _cluster(10.0, 7.0, 0.4, 0.4),            # 2 m from the pedestrian: kept
        _cluster(17.9, 0.0, 0.5, 0.5, points=8, height=0.3),  # low debris at the car's rear
    ]
    merged = merge_with_clusters(detections, clusters, margin_m=0.5, min_height_ratio=0.4)
    assert merged.labels.tolist() == [ld.LABEL_CAR, ld.LABEL_PEDESTRIAN, 0, 0, 0]
    assert merged.from_detector.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(merged.boxes[2], [30.0, 0.0, 0.6, 0.5, 0.5, 1.2, 0.0])
    np.testing.assert_allclose(merged.boxes[3, :2], [10.0, 7.0])
    np.testing.assert_allclose(merged.boxes[4, :2], [17.9, 0.0])
    assert merged.point_counts.tolist() == [-1, -1, 5, 20, 8]
    np.testing.assert_allclose(merged.scores, [0.8, 0.8, 5 / 15, 20 / 30, 8 / 18])
    # Without the height test the debris counts as part of the car.
    assert len(merge_with_clusters(detections, clusters, min_height_ratio=0.0)) == 4


def test_merge_without_detections_keeps_every_cluster():
    merged = merge_with_clusters(empty_result('no detections above score_threshold',
                                              processed=True),
                                 [_cluster(5.0, 0.0, points=1000)], max_cluster_score=0.9)
    assert merged.labels.tolist() == [0] and merged.scores.tolist() == [0.9]
    assert len(merge_with_clusters(empty_result('empty cloud'), [])) == 0


# ------------------------------------------------------------------------ params, model

def test_params_reject_inconsistent_values():
    with pytest.raises(LidarDetectorError, match='bev_min_z_m'):
        LidarDetectorParams(bev_min_z_m=3.0, bev_max_z_m=2.0)
    with pytest.raises(LidarDetectorError, match='bev_cell_m'):
        LidarDetectorParams(bev_cell_m=0.3)
    with pytest.raises(LidarDetectorError, match='score_threshold'):
        LidarDetectorParams(score_threshold=1.5)
    with pytest.raises(LidarDetectorError, match='providers'):
        LidarDetectorParams(providers=())


@pytest.fixture(scope='module')
def detector():
    vehicle_extrinsic = np.eye(4)
    vehicle_extrinsic[:3, 3] = (1.2, 0.0, 1.6)
    return LidarDetector(LidarDetectorParams(providers=('CPUExecutionProvider',)),
                         vehicle_extrinsic)


def test_metadata_mismatch_names_the_parameter(tmp_path):
    model = ld.default_model_path()
    shutil.copy(model, tmp_path / 'm.onnx')
    meta = json.loads(ld.metadata_path(model).read_text())
    meta['grid']['cell_m'] = 0.25
    (tmp_path / 'm.json').write_text(json.dumps(meta))
    with pytest.raises(LidarDetectorError, match=r'bev_cell_m = 0.5 does not match .*0\.25'):
        LidarDetector(LidarDetectorParams(model_path=str(tmp_path / 'm.onnx'),
                                          providers=('CPUExecutionProvider',)))
    meta['grid']['cell_m'] = 0.5
    meta['feature_version'] = ld.FEATURE_VERSION + 1
    (tmp_path / 'm.json').write_text(json.dumps(meta))
    with pytest.raises(LidarDetectorError, match='feature_version'):
        LidarDetector(LidarDetectorParams(model_path=str(tmp_path / 'm.onnx'),
                                          providers=('CPUExecutionProvider',)))
    (tmp_path / 'm.json').unlink()
    with pytest.raises(LidarDetectorError, match='cannot read model metadata'):
        LidarDetector(LidarDetectorParams(model_path=str(tmp_path / 'm.onnx'),
                                          providers=('CPUExecutionProvider',)))


def test_committed_model_matches_its_metadata(detector):
    meta = detector.metadata
    assert meta['grid']['cells'] == detector.grid.cells == 320
    assert detector.session.input_names == (ld.INPUT_NAME,)
    assert detector.session.output_names == ld.OUTPUT_NAMES
    assert ld.default_model_path().stat().st_size < 10_000_000
    assert meta['flops'] > 0 and meta['parameters'] > 0


@pytest.fixture(scope='module')
def car_frame():
    """Held-out frame (seed fixed) and its best-seen car about 20 m from base_link."""
    from robotaxi_stack.sim import perception_dataset as pds

    sample = pds.generate_sample(7, split='heldout', camera=False)
    distance = np.hypot(sample.boxes_base[:, 0], sample.boxes_base[:, 1])
    cars = np.flatnonzero((sample.labels == ld.LABEL_CAR) & (np.abs(distance - 20.0) < 3.0)
                          & (sample.lidar_point_counts >= 100))
    assert len(cars), 'the fixed frame must hold a well-seen car at about 20 m'
    return sample, cars[np.argmax(sample.lidar_point_counts[cars])]


def test_committed_model_detects_a_car_at_20_m(detector, car_frame):
    sample, car = car_frame
    result = detector.detect(sample.points, sensor_frame=True)
    assert result.processed and result.reason == ''
    gap = np.hypot(result.boxes[:, 0] - sample.boxes_base[car, 0],
                   result.boxes[:, 1] - sample.boxes_base[car, 1])
    best = int(np.argmin(gap))
    assert gap[best] < 1.0
    assert result.labels[best] == ld.LABEL_CAR and result.scores[best] > 0.5
    np.testing.assert_allclose(result.boxes[best, 3:5], sample.boxes_base[car, 3:5], atol=0.6)
    assert abs(math.remainder(result.boxes[best, 6] - sample.boxes_base[car, 6], math.pi)) \
        < math.radians(10.0)
    assert set(result.stage_ms) == {'pre', 'inference', 'post', 'total'}
    # The same cloud in base_link gives the same boxes.
    xyz = np.column_stack([sample.points[n] for n in 'xyz']).astype(np.float64)
    moved = xyz @ sample.base_from_lidar[:3, :3].T + sample.base_from_lidar[:3, 3]
    again = detector.detect(np.column_stack([moved, sample.points['intensity']]))
    np.testing.assert_allclose(again.boxes, result.boxes, atol=1e-3)


def test_detector_handles_bad_and_huge_clouds(detector, car_frame):
    empty = detector.detect(np.zeros((0, 4), np.float32))
    assert not empty.processed and empty.reason == 'empty cloud' and len(empty) == 0
    assert empty.boxes.shape == (0, 7) and 'total' in empty.stage_ms
    nan = detector.detect(np.full((1000, 4), np.nan, np.float32))
    assert nan.reason == 'no finite points' and len(nan) == 0
    wrong = detector.detect(np.zeros((10, 2)))
    assert wrong.reason.startswith('bad input') and len(wrong) == 0
    sample, car = car_frame
    points = sample.points.copy()
    points['x'][::7] = np.nan
    some_nan = detector.detect(points, sensor_frame=True)
    assert some_nan.processed and some_nan.stats.non_finite_points == len(points[::7])
    # 3M points (the frame tiled with jitter): processed, same car found.
    rng = np.random.default_rng(0)
    xyz = np.column_stack([sample.points[n] for n in 'xyz'] + [sample.points['intensity']])
    big = np.tile(xyz, (-(-3_000_000 // len(xyz)), 1))[:3_000_000].astype(np.float32)
    big[:, :3] += rng.normal(0.0, 0.02, (len(big), 3)).astype(np.float32)
    result = detector.detect(big, sensor_frame=True)
    assert result.processed and result.stats.input_points == 3_000_000
    gap = np.hypot(result.boxes[:, 0] - sample.boxes_base[car, 0],
                   result.boxes[:, 1] - sample.boxes_base[car, 1])
    assert gap.min() < 1.5
