"""LiDAR-camera fusion core (perception/fusion.py): projection against hand-computed pixels and
the simulator's camera model, near-plane clipping, matching with class refinement, UNKNOWN
clusters taking the camera class, the camera pedestrian boost, pass-through of objects out of
view, no duplicates, gating, bad input."""

import math

import numpy as np
import pytest

from robotaxi_stack.common.params import load_param_file, params_from_dict
from robotaxi_stack.perception.fusion import (
    LABEL_BICYCLE, LABEL_CAR, LABEL_PEDESTRIAN, LABEL_TRUCK, LABEL_UNKNOWN, NO_CAMERA_REASON,
    CameraCalibration, CameraDetections, FusionInputError, FusionParamError, FusionParams,
    LidarObjects, box_iou, fuse, pool_classes, project_boxes)
from robotaxi_stack.sim.camera import CameraConfig, CameraModel
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle

# bmw_320i camera_front: body frame at (1.55, 0, 1.3) in base_link, no rotation;
# fx = fy = 457, cx = 320, cy = 192, 640 x 384.
CAMERA_X_M, CAMERA_Z_M, F_PX, CX_PX, CY_PX = 1.55, 1.3, 457.0, 320.0, 192.0


@pytest.fixture(scope='module')
def calibration():
    return CameraCalibration.from_camera_config(load_vehicle('bmw_320i').camera_front)


def lidar(*rows):
    """rows: (box [x, y, z, l, w, h, yaw], label, class probability, existence)."""
    boxes = np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 7)
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    return LidarObjects(boxes, labels, np.array([r[2] for r in rows], dtype=np.float64),
                        np.array([r[3] for r in rows], dtype=np.float64),
                        labels == LABEL_UNKNOWN)


def camera(*rows):
    """rows: (box [x0, y0, x1, y1], label, score)."""
    return CameraDetections(np.array([r[0] for r in rows], dtype=np.float64).reshape(-1, 4),
                            np.array([r[1] for r in rows], dtype=np.int64),
                            np.array([r[2] for r in rows], dtype=np.float64))


def image_box(box, calibration):
    boxes, in_view = project_boxes(np.array([box], dtype=np.float64), calibration)
    assert in_view[0]
    return boxes[0]


# Objects in front of the camera (base_link): a car 15 m ahead turned a little, a 1.75 m
# pedestrian 20 m ahead on the right.
CAR = [16.5, 0.8, 0.75, 4.6, 1.9, 1.5, 0.2]
PEDESTRIAN = [21.55, -2.0, 0.875, 0.5, 0.6, 1.75, 0.0]


# ----------------------------------------------------------------------------- projection

def test_projection_of_a_box_ahead_matches_hand_computed_pixels(calibration):
    # A 2 m cube centred 10 m ahead of the camera at its height: its near face (depth 9 m)
    # spans +-1 m, so u = 320 -+ 457 / 9 and v = 192 -+ 457 / 9.
    box = [CAMERA_X_M + 10.0, 0.0, CAMERA_Z_M, 2.0, 2.0, 2.0, 0.0]
    half_px = F_PX / 9.0
    np.testing.assert_allclose(image_box(box, calibration),
                               [CX_PX - half_px, CY_PX - half_px, CX_PX + half_px,
                                CY_PX + half_px], atol=1e-9)
    # 2 m to the left (+y) moves it left in the image: u = 320 - 457 * (2 +- 1) / depth.
    left = [CAMERA_X_M + 10.0, 2.0, CAMERA_Z_M, 2.0, 2.0, 2.0, 0.0]
    x0, _, x1, _ = image_box(left, calibration)
    assert x0 == pytest.approx(CX_PX - F_PX * 3.0 / 9.0)
    assert x1 == pytest.approx(CX_PX - F_PX * 1.0 / 11.0)


def test_projection_agrees_with_the_simulator_camera_model(calibration):
    model = CameraModel(CameraConfig(fx=F_PX, fy=F_PX, cx=CX_PX, cy=CY_PX))
    c, s = math.cos(CAR[6]), math.sin(CAR[6])
    corners = []
    for sx in (-0.5, 0.5):
        for sy in (-0.5, 0.5):
            for sz in (-0.5, 0.5):
                dx, dy = sx * CAR[3], sy * CAR[4]
                corners.append((CAR[0] + c * dx - s * dy - CAMERA_X_M,
                                CAR[1] + s * dx + c * dy, CAR[2] + sz * CAR[5] - CAMERA_Z_M))
    uv, valid = model.project_points(np.array(corners))
    assert valid.all()
    np.testing.assert_allclose(image_box(CAR, calibration),
                               [*uv.min(axis=0), *uv.max(axis=0)], atol=1e-9)


def test_box_beside_the_camera_is_clipped_at_the_near_plane(calibration):
    # 6 m long, from 3 m behind to 3 m ahead of the camera, 1..2 m to the left, at camera
    # height: the visible part ends 3 m ahead at its inner edge, u = 320 - 457 * 1 / 3; the
    # clipped part reaches the left and the top and bottom image edges.
    box = [CAMERA_X_M, 1.5, CAMERA_Z_M, 6.0, 1.0, 1.0, 0.0]
    np.testing.assert_allclose(image_box(box, calibration),
                               [-0.5, -0.5, CX_PX - F_PX / 3.0, 383.5], atol=1e-9)


def test_boxes_behind_or_beside_the_view_are_out_of_view(calibration):
    boxes = np.array([[-5.0, 0.0, 0.75, 4.6, 1.9, 1.5, 0.0],    # behind
                      [5.0, 12.0, 0.75, 4.6, 1.9, 1.5, 0.0],    # far left of the view
                      [2.5, 0.0, 0.1, 0.2, 0.2, 0.2, 0.0],      # below it, at the bumper
                      [CAMERA_X_M + 70.0, -4.0, 0.6, 0.1, 0.1, 1.0, 0.0]])  # under a pixel
    image_boxes, in_view = project_boxes(boxes, calibration)
    assert in_view.tolist() == [False, False, False, True]
    assert np.isnan(image_boxes[:3]).all()
    x0, y0, x1, y1 = image_boxes[3]
    assert 0.0 < x1 - x0 < 1.0 and y1 - y0 == pytest.approx(F_PX * 1.0 / 69.95, rel=0.01)


def test_box_iou_of_known_rectangles():
    iou = box_iou(np.array([[0.0, 0.0, 10.0, 10.0]]),
                  np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0],
                            [0.0, 0.0, 10.0, 10.0]]))
    np.testing.assert_allclose(iou, [[50.0 / 150.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- matching

def test_matched_car_is_confirmed_with_higher_probability_and_existence(calibration):
    box = image_box(CAR, calibration) + [3.0, -2.0, 2.0, 4.0]  # a detector's jitter
    result = fuse(lidar((CAR, LABEL_CAR, 0.7, 0.7)), camera((box, LABEL_CAR, 0.8)),
                  calibration)
    assert result.reason == ''
    assert result.counts.matched == 1 and result.counts.refined == 0
    assert result.labels.tolist() == [LABEL_CAR]
    # Pool: 0.7 * 0.8 against 5 x (0.3 / 5) (0.2 / 5) -> 0.979.
    assert result.class_probability[0] == pytest.approx(0.56 / (0.56 + 5 * 0.06 * 0.04))
    assert result.existence[0] == pytest.approx(1.0 - 0.3 * (1.0 - 0.6 * 0.8))
    assert result.camera_index.tolist() == [0]
    assert result.camera_score[0] == pytest.approx(0.8)


def test_confident_camera_refines_an_unsure_lidar_class(calibration):
    result = fuse(lidar((CAR, LABEL_CAR, 0.6, 0.8)),
                  camera((image_box(CAR, calibration), LABEL_TRUCK, 0.9)), calibration)
    assert result.labels.tolist() == [LABEL_TRUCK]
    assert result.counts.refined == 1
    # TRUCK: 0.08 * 0.9, CAR: 0.6 * 0.02, four others 0.08 * 0.02.
    assert result.class_probability[0] == pytest.approx(
        0.072 / (0.072 + 0.012 + 4 * 0.0016))
    # ... but a more trusted LiDAR keeps its class.
    trusted = fuse(lidar((CAR, LABEL_CAR, 0.6, 0.8)),
                   camera((image_box(CAR, calibration), LABEL_TRUCK, 0.9)), calibration,
                   FusionParams(lidar_class_weight=3.0))
    assert trusted.labels.tolist() == [LABEL_CAR]


def test_pool_keeps_the_lidar_label_on_a_tie():
    labels, probability = pool_classes(np.array([LABEL_CAR]), np.array([0.8]),
                                       np.array([LABEL_TRUCK]), np.array([0.8]), 1.0, 1.0)
    assert labels.tolist() == [LABEL_CAR]
    # CAR and TRUCK: 0.8 * 0.04 each, four others 0.04 * 0.04.
    assert probability[0] == pytest.approx(0.032 / (2 * 0.032 + 4 * 0.0016))


def test_unknown_cluster_takes_a_confident_camera_class(calibration):
    box = image_box(PEDESTRIAN, calibration)
    result = fuse(lidar((PEDESTRIAN, LABEL_UNKNOWN, 1.0, 0.5)),
                  camera((box, LABEL_PEDESTRIAN, 0.8)), calibration)
    assert result.labels.tolist() == [LABEL_PEDESTRIAN]
    assert result.class_probability[0] == pytest.approx(0.8)
    assert result.counts.refined == 1 and result.is_cluster.tolist() == [True]
    assert result.existence[0] == pytest.approx(1.0 - 0.5 * (1.0 - 0.6 * 0.8))
    # An unsure camera (0.4 < cluster_min_camera_score) raises existence but not the class.
    unsure = fuse(lidar((PEDESTRIAN, LABEL_UNKNOWN, 1.0, 0.5)),
                  camera((box, LABEL_PEDESTRIAN, 0.4)), calibration)
    assert unsure.labels.tolist() == [LABEL_UNKNOWN]
    assert unsure.class_probability[0] == 1.0
    assert unsure.counts.matched == 1 and unsure.counts.refined == 0
    assert unsure.existence[0] == pytest.approx(1.0 - 0.5 * (1.0 - 0.6 * 0.4))


def test_camera_without_class_leaves_the_lidar_class(calibration):
    result = fuse(lidar((CAR, LABEL_CAR, 0.7, 0.7)),
                  camera((image_box(CAR, calibration), LABEL_UNKNOWN, 0.9)), calibration)
    assert result.counts.matched == 1
    assert result.labels.tolist() == [LABEL_CAR]
    assert result.class_probability[0] == pytest.approx(0.7)


def test_vehicle_never_matches_a_pedestrian_box(calibration):
    box = image_box(CAR, calibration)
    gated = fuse(lidar((CAR, LABEL_CAR, 0.7, 0.7)), camera((box, LABEL_PEDESTRIAN, 0.99)),
                 calibration)
    assert gated.counts.matched == 0 and gated.labels.tolist() == [LABEL_CAR]
    assert gated.counts.camera_only == 1
    ungated = fuse(lidar((CAR, LABEL_CAR, 0.7, 0.7)), camera((box, LABEL_PEDESTRIAN, 0.99)),
                   calibration, FusionParams(gate_vehicle_vulnerable=False))
    assert ungated.counts.matched == 1


def test_objects_beyond_the_match_range_are_not_matched(calibration):
    far = [CAMERA_X_M + 60.0, 0.0, 0.75, 4.6, 1.9, 1.5, 0.0]
    detections = camera((image_box(far, calibration), LABEL_TRUCK, 0.9))
    assert fuse(lidar((far, LABEL_CAR, 0.6, 0.7)), detections,
                calibration).counts.matched == 1
    result = fuse(lidar((far, LABEL_CAR, 0.6, 0.7)), detections, calibration,
                  FusionParams(max_match_range_m=50.0))
    assert result.counts.matched == 0 and result.labels.tolist() == [LABEL_CAR]
    assert result.existence[0] == pytest.approx(0.7)


def test_weak_camera_detections_are_ignored(calibration):
    result = fuse(lidar((CAR, LABEL_CAR, 0.6, 0.7)),
                  camera((image_box(CAR, calibration), LABEL_TRUCK, 0.2)), calibration)
    assert result.counts.camera_detections == 0 and result.counts.matched == 0
    assert result.labels.tolist() == [LABEL_CAR]


# ----------------------------------------------------------------------------- boost

# A pedestrian the detector missed; the clustering saw only its legs (few points, 0.7 m
# high, box bottom 0.2 m above the road), too small a projection to match the camera box.
LEGS = [21.55, -2.0, 0.55, 0.3, 0.3, 0.7, 0.0]


def test_unmatched_camera_pedestrian_boosts_the_cluster_it_covers(calibration):
    box = image_box(PEDESTRIAN, calibration)
    assert box_iou(image_box(LEGS, calibration)[None], box[None])[0, 0] < 0.3
    result = fuse(lidar((LEGS, LABEL_UNKNOWN, 1.0, 0.23)),
                  camera((box, LABEL_PEDESTRIAN, 0.9)), calibration)
    assert result.counts.matched == 0 and result.counts.boosted == 1
    assert result.counts.camera_only == 0
    assert result.boosted.tolist() == [True]
    assert result.existence[0] == pytest.approx(1.0 - 0.77 * (1.0 - 0.5 * 0.9))
    assert result.labels.tolist() == [LABEL_UNKNOWN]  # existence only, no class from a guess
    assert result.camera_index.tolist() == [-1] and result.camera_score[0] == 0.9


@pytest.mark.parametrize('case', ['car_class', 'far_behind', 'wall', 'weak', 'classified'])
def test_boost_needs_a_plausible_cluster_and_class(calibration, case):
    box = image_box(PEDESTRIAN, calibration)
    cluster, label, det_label, score = LEGS, LABEL_UNKNOWN, LABEL_PEDESTRIAN, 0.9
    if case == 'car_class':
        det_label = LABEL_CAR
    elif case == 'far_behind':
        # On the same ray, twice as far: the box would mean a 3.5 m tall person.
        # Its footprint centre lies on the ray through the legs' footprint centre.
        camera_m = np.array([CAMERA_X_M, 0.0, CAMERA_Z_M])
        footprint = np.array([LEGS[0], LEGS[1], LEGS[2] - 0.5 * LEGS[5]])
        far = camera_m + 2.0 * (footprint - camera_m) + [0.0, 0.0, 0.5 * LEGS[5]]
        cluster = [*far, 0.3, 0.3, 0.7, 0.0]
    elif case == 'wall':
        cluster = [21.55, -2.0, 1.0, 0.3, 6.0, 1.6, 0.0]  # 6 m of fence through the box
    elif case == 'weak':
        score = 0.45
    elif case == 'classified':
        label = LABEL_CAR  # detector objects are not clusters
    result = fuse(lidar((cluster, label, 1.0, 0.23)), camera((box, det_label, score)),
                  calibration)
    assert result.counts.boosted == 0 and result.counts.matched == 0
    assert result.existence[0] == pytest.approx(0.23)
    assert result.counts.camera_only == 1


def test_bicycle_boosts_too(calibration):
    result = fuse(lidar((LEGS, LABEL_UNKNOWN, 1.0, 0.23)),
                  camera((image_box(PEDESTRIAN, calibration), LABEL_BICYCLE, 0.9)),
                  calibration)
    assert result.counts.boosted == 1


def test_camera_only_detections_make_no_object_but_are_counted(calibration):
    result = fuse(lidar((CAR, LABEL_CAR, 0.7, 0.7)),
                  camera((image_box(CAR, calibration), LABEL_CAR, 0.9),
                         (image_box(PEDESTRIAN, calibration), LABEL_PEDESTRIAN, 0.9)),
                  calibration)
    assert len(result) == 1
    assert result.counts.matched == 1 and result.counts.camera_only == 1


# ----------------------------------------------------------------------------- pass-through

def test_objects_behind_the_camera_pass_through_unchanged(calibration):
    behind = [-8.0, 0.5, 0.75, 4.6, 1.9, 1.5, 3.0]
    objects = lidar((behind, LABEL_CAR, 0.55, 0.4), (CAR, LABEL_CAR, 0.6, 0.7))
    # A camera box where the mirrored car would be must not touch the car behind.
    mirrored = [2 * CAMERA_X_M - behind[0], behind[1], *behind[2:]]
    result = fuse(objects, camera((image_box(mirrored, calibration), LABEL_TRUCK, 0.99)),
                  calibration)
    assert result.in_view.tolist() == [False, True]
    np.testing.assert_array_equal(result.boxes, objects.boxes)
    assert result.labels[0] == LABEL_CAR and result.class_probability[0] == 0.55
    assert result.existence[0] == 0.4 and result.camera_index[0] == -1
    assert np.isnan(result.image_boxes[0]).all()


def test_no_duplicates_one_camera_box_per_object(calibration):
    # Two objects side by side and one camera box over both: one match, two objects out.
    left = [16.5, 1.2, 0.75, 4.6, 1.9, 1.5, 0.0]
    right = [16.5, -1.2, 0.75, 4.6, 1.9, 1.5, 0.0]
    l_box, r_box = image_box(left, calibration), image_box(right, calibration)
    both = [min(l_box[0], r_box[0]), l_box[1], max(l_box[2], r_box[2]), l_box[3]]
    objects = lidar((left, LABEL_CAR, 0.6, 0.5), (right, LABEL_CAR, 0.6, 0.5))
    result = fuse(objects, camera((both, LABEL_CAR, 0.9)), calibration,
                  FusionParams(match_iou_threshold=0.2))
    assert len(result) == 2 and result.counts.matched == 1
    assert sorted(result.camera_index.tolist()) == [-1, 0]
    # Two boxes, two objects, crossed order: the assignment pairs each with its own.
    result = fuse(objects, camera((r_box, LABEL_CAR, 0.9), (l_box, LABEL_TRUCK, 0.95)),
                  calibration)
    assert result.camera_index.tolist() == [1, 0]
    assert result.labels.tolist() == [LABEL_TRUCK, LABEL_CAR]
    assert result.lidar_index.tolist() == [0, 1]


def test_no_camera_frame_passes_everything_through(calibration):
    objects = lidar((CAR, LABEL_CAR, 0.6, 0.7), (LEGS, LABEL_UNKNOWN, 1.0, 0.23))
    result = fuse(objects, None, calibration)
    assert result.reason == NO_CAMERA_REASON
    np.testing.assert_array_equal(result.labels, objects.labels)
    np.testing.assert_array_equal(result.existence, objects.existence)
    assert result.counts.matched == result.counts.boosted == 0
    empty = fuse(objects, CameraDetections.empty(), calibration)  # a frame with nothing
    assert empty.reason == '' and len(empty) == 2 and empty.counts.camera_only == 0


def test_stage_times_and_counts_are_reported(calibration):
    result = fuse(lidar((CAR, LABEL_CAR, 0.7, 0.7)),
                  camera((image_box(CAR, calibration), LABEL_CAR, 0.8)), calibration)
    assert set(result.stage_ms) == {'project', 'match', 'boost'}
    assert result.time_ms >= sum(result.stage_ms.values()) > 0.0
    assert result.counts.lidar_objects == 1 and result.counts.in_view == 1


# ----------------------------------------------------------------------------- bad input

def test_non_finite_and_invalid_rows_are_dropped_and_counted(calibration):
    nan_box = [math.nan, 0.0, 0.75, 4.6, 1.9, 1.5, 0.0]
    flat_box = [10.0, 0.0, 0.75, 4.6, 0.0, 1.5, 0.0]
    objects = LidarObjects(np.array([nan_box, CAR, flat_box, CAR]),
                           np.array([LABEL_CAR, LABEL_CAR, LABEL_CAR, 9]),
                           np.array([0.6, 0.6, 0.6, 0.6]), np.array([0.7, 0.7, 0.7, 0.7]),
                           np.zeros(4, bool))
    detections = camera((image_box(CAR, calibration), LABEL_CAR, 0.8),
                        ([math.nan, 0.0, 10.0, 10.0], LABEL_CAR, 0.9),
                        ([50.0, 50.0, 40.0, 60.0], LABEL_CAR, 0.9),  # x1 < x0
                        ([0.0, 0.0, 10.0, 10.0], LABEL_CAR, math.inf))
    result = fuse(objects, detections, calibration)
    assert result.lidar_index.tolist() == [1]
    assert result.counts.dropped_lidar == 3 and result.counts.dropped_camera == 3
    assert result.counts.matched == 1
    assert '3 lidar objects' in result.reason and '3 camera detections' in result.reason


@pytest.mark.parametrize('bad, text', [
    (dict(boxes=np.zeros((2, 6))), 'lidar boxes must have shape (N, 7)'),
    (dict(labels=np.zeros(3)), 'lidar arrays differ in length'),
    (dict(existence='high'), 'lidar existence is not numeric'),
])
def test_malformed_lidar_arrays_give_an_empty_result_and_a_reason(calibration, bad, text):
    fields = dict(boxes=np.array([CAR, CAR]), labels=np.array([1, 1]),
                  class_probability=np.array([0.6, 0.6]), existence=np.array([0.7, 0.7]),
                  is_cluster=np.zeros(2, bool))
    fields.update(bad)
    result = fuse(LidarObjects(**fields), camera(), calibration)
    assert len(result) == 0 and text in result.reason
    assert result.boxes.shape == (0, 7) and result.image_boxes.shape == (0, 4)


def test_malformed_camera_arrays_pass_lidar_through_with_a_reason(calibration):
    detections = CameraDetections(np.zeros((2, 3)), np.array([1, 1]), np.array([0.9, 0.9]))
    result = fuse(lidar((CAR, LABEL_CAR, 0.6, 0.7)), detections, calibration)
    assert len(result) == 1 and result.counts.matched == 0
    assert 'bad camera input: camera boxes must have shape (N, 4)' in result.reason


def test_empty_lidar_counts_camera_only_detections(calibration):
    result = fuse(LidarObjects.empty(),
                  camera((image_box(CAR, calibration), LABEL_CAR, 0.8)), calibration)
    assert len(result) == 0 and result.reason == ''
    assert result.counts.camera_only == 1


@pytest.mark.parametrize('kwargs, text', [
    (dict(boost_labels=(6, 9)), 'boost_labels'),
    (dict(boost_labels=(0,)), 'boost_labels'),
    (dict(boost_min_height_m=2.0, boost_max_height_m=1.0), 'boost_min_height_m'),
    (dict(match_iou_threshold=0.0), "'match_iou_threshold' = 0.0 is out of range"),
])
def test_bad_parameters_name_the_parameter(kwargs, text):
    with pytest.raises(FusionParamError, match=text):
        FusionParams(**kwargs)


def test_parameter_file_holds_valid_fusion_parameters():
    import pathlib
    path = pathlib.Path(__file__).parents[1] / 'config' / 'fusion.param.yaml'
    values = load_param_file(path, 'fusion')
    core = {k: v for k, v in values.items() if k in FusionParams.__dataclass_fields__}
    assert params_from_dict(FusionParams, core) == FusionParams()


@pytest.mark.parametrize('intrinsic, transform, size, text', [
    (np.eye(3) * [[0.0], [1.0], [1.0]], np.eye(4), (640, 384), 'pinhole'),
    (np.full((3, 3), np.nan), np.eye(4), (640, 384), 'finite 3x3'),
    (np.eye(3), np.diag([2.0, 1.0, 1.0, 1.0]), (640, 384), 'rigid'),
    (np.eye(3), np.eye(3), (640, 384), 'finite 4x4'),
    (np.eye(3), np.eye(4), (0, 384), 'width_px'),
])
def test_bad_calibration_is_rejected(intrinsic, transform, size, text):
    with pytest.raises(FusionInputError, match=text):
        CameraCalibration(intrinsic, transform, *size)
