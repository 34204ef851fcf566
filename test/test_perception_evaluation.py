"""Detection metrics (robotaxi_stack.perception.evaluation): BEV IoU, matching, AP, recall at
precision, range bins, ignored ground truth, the debris detection rate and the summary."""

import json
import math

import numpy as np
import pytest

from robotaxi_stack.perception.evaluation import (
    EvaluationError, FrameDetections, average_precision, bev_iou, detection_rate,
    detection_summary, match_frame, precision_recall, recall_at_precision)

CAR, TRUCK, BUS, PEDESTRIAN, UNKNOWN = 1, 2, 3, 6, 0


def box(x, y, length=4.0, width=2.0, yaw=0.0):
    return [x, y, 0.75, length, width, 1.5, yaw]


def frame(pred=(), scores=(), pred_labels=(), gt=(), gt_labels=(), ignore=None):
    return FrameDetections(np.array(pred, dtype=float).reshape(-1, 7), np.array(scores, float),
                           np.array(pred_labels, dtype=np.int64),
                           np.array(gt, dtype=float).reshape(-1, 7),
                           np.array(gt_labels, dtype=np.int64),
                           None if ignore is None else np.array(ignore, dtype=bool))


# ------------------------------------------------------------------------------ IoU

def test_iou_of_identical_boxes_is_one():
    boxes = np.array([box(3, 4, yaw=0.3), box(-10, 2, 1.0, 0.5, 2.0)])
    np.testing.assert_allclose(np.diag(bev_iou(boxes, boxes)), [1.0, 1.0])


def test_iou_of_rotated_boxes_matches_hand_values():
    # 4 x 2 box turned 90 degrees about its centre: overlap 2 x 2 = 4, union 8 + 8 - 4.
    assert bev_iou([box(0, 0)], [box(0, 0, yaw=math.pi / 2)])[0, 0] == pytest.approx(1 / 3)
    # A square and itself turned 45 degrees: octagon 2 a^2 (sqrt 2 - 1), IoU = sqrt(2) / 2.
    square, turned = box(0, 0, 2.0, 2.0), box(0, 0, 2.0, 2.0, math.pi / 4)
    assert bev_iou([square], [turned])[0, 0] == pytest.approx(math.sqrt(2) / 2)
    # Half a length along x: overlap 2 x 2 = 4, union 12.
    assert bev_iou([box(0, 0)], [box(2, 0)])[0, 0] == pytest.approx(1 / 3)
    # Yaw by pi is the same footprint.
    assert bev_iou([box(0, 0, yaw=0.2)], [box(0, 0, yaw=0.2 + math.pi)])[0, 0] == \
        pytest.approx(1.0)


def test_iou_of_disjoint_and_touching_boxes_is_zero():
    iou = bev_iou([box(0, 0)], [box(10, 0), box(4, 0), box(0, 2.0)])
    np.testing.assert_allclose(iou, [[0.0, 0.0, 0.0]], atol=1e-12)


def test_iou_matrix_shape_and_symmetry():
    rng = np.random.default_rng(3)
    a = np.column_stack([rng.uniform(-4, 4, (7, 2)), np.zeros(7), rng.uniform(0.5, 5, (7, 3)),
                         rng.uniform(-3, 3, 7)])
    b = a[:5] + np.array([0.5, -0.3, 0, 0, 0, 0, 0.4])
    iou = bev_iou(a, b)
    assert iou.shape == (7, 5)
    np.testing.assert_allclose(iou, bev_iou(b, a).T, atol=1e-12)
    assert np.all((iou >= 0.0) & (iou <= 1.0))
    assert bev_iou(np.zeros((0, 7)), b).shape == (0, 5)


def test_iou_agrees_with_pixel_counting():
    a, b = box(0.3, -0.2, 4.5, 1.8, 0.4), box(1.1, 0.4, 3.0, 2.2, -0.7)
    grid = np.linspace(-5, 5, 1001)
    x, y = np.meshgrid(grid, grid)

    def inside(bx):
        c, s = math.cos(bx[6]), math.sin(bx[6])
        dx, dy = x - bx[0], y - bx[1]
        return (abs(c * dx + s * dy) <= bx[3] / 2) & (abs(-s * dx + c * dy) <= bx[4] / 2)

    counted = np.sum(inside(a) & inside(b)) / np.sum(inside(a) | inside(b))
    assert bev_iou([a], [b])[0, 0] == pytest.approx(counted, abs=5e-3)


@pytest.mark.parametrize('boxes_a, boxes_b, name', [
    (np.full((1, 7), np.nan), np.zeros((1, 7)) + 1, 'boxes_a'),
    (np.ones((1, 7)), np.ones((2, 6)), 'boxes_b'),
    (np.ones((1, 7)), [[0, 0, 0, 0, 1, 1, 0]], 'boxes_b'),
])
def test_iou_rejects_bad_boxes_naming_the_array(boxes_a, boxes_b, name):
    with pytest.raises(EvaluationError, match=name):
        bev_iou(boxes_a, boxes_b)


# ---------------------------------------------------------------------------- AP

def test_perfect_detections_give_ap_one():
    frames = [frame([box(10, 0), box(20, 3)], [0.9, 0.8], [CAR, CAR],
                    [box(10.2, 0), box(20, 3.1)], [CAR, CAR]),
              frame([box(5, 5)], [0.7], [CAR], [box(5, 5)], [CAR])]
    for criterion in ('center_distance', 'iou'):
        assert average_precision(frames, 'car', criterion) == pytest.approx(1.0)


def test_false_positive_ranked_above_the_true_positive_halves_ap():
    f = frame([box(30, 0), box(10, 0)], [0.9, 0.5], [CAR, CAR], [box(10, 0)], [CAR])
    # One point: recall 1 at precision 1/2; interpolated precision is 1/2 at every level.
    assert average_precision([f], 'car') == pytest.approx(0.5)
    # Ranked below the true positive, the false positive costs nothing.
    g = frame([box(30, 0), box(10, 0)], [0.5, 0.9], [CAR, CAR], [box(10, 0)], [CAR])
    assert average_precision([g], 'car') == pytest.approx(1.0)


def test_half_recall_gives_ap_of_the_covered_recall_levels():
    f = frame([box(10, 0)], [0.9], [CAR], [box(10, 0), box(20, 0)], [CAR, CAR])
    # Recall levels 0 .. 0.5 (51 of 101) at precision 1, the rest 0.
    assert average_precision([f], 'car') == pytest.approx(51 / 101)


def test_all_misses_give_ap_zero_and_no_ground_truth_gives_nan():
    misses = frame([box(40, 0)], [0.9], [CAR], [box(10, 0)], [CAR])
    assert average_precision([misses], 'car') == 0.0
    assert average_precision([frame(gt=[box(10, 0)], gt_labels=[CAR])], 'car') == 0.0
    assert math.isnan(average_precision([frame([box(1, 0)], [0.5], [CAR])], 'car'))


def test_criteria_differ_on_a_shifted_box():
    # 1.5 m off along x: within 2 m centre distance; IoU (4 - 1.5) * 2 / (16 - 5) < 0.5.
    f = frame([box(11.5, 0)], [0.9], [CAR], [box(10, 0)], [CAR])
    assert average_precision([f], 'car', 'center_distance') == pytest.approx(1.0)
    assert average_precision([f], 'car', 'iou') == 0.0
    assert average_precision([f], 'car', 'iou', threshold=0.3) == pytest.approx(1.0)
    assert average_precision([f], 'car', 'center_distance', threshold=1.0) == 0.0


def test_classes_must_agree_and_truck_bus_are_one_class():
    f = frame([box(10, 0), box(20, 0, 10.0, 2.5)], [0.9, 0.8], [PEDESTRIAN, TRUCK],
              [box(10, 0), box(20, 0, 11.0, 2.5)], [CAR, BUS])
    assert average_precision([f], 'car') == 0.0
    assert average_precision([f], 'truck_bus') == pytest.approx(1.0)


def test_each_ground_truth_matches_once_and_greedy_order_follows_score():
    f = frame([box(10, 0), box(10.5, 0)], [0.6, 0.9], [CAR, CAR], [box(10, 0)], [CAR])
    match = match_frame(f, 'car')
    np.testing.assert_array_equal(match.scores, [0.9, 0.6])
    np.testing.assert_array_equal(match.true_positive, [True, False])
    # The nearest unmatched ground truth wins, not the first one.
    g = frame([box(10.9, 0)], [0.9], [CAR], [box(10, 0), box(11, 0)], [CAR, CAR])
    np.testing.assert_array_equal(match_frame(g, 'car').gt_matched, [False, True])


def test_range_bins_filter_predictions_and_ground_truth_by_their_own_centres():
    f = frame([box(30, 0), box(60, 0), box(49.5, 0)], [0.9, 0.8, 0.7], [CAR, CAR, CAR],
              [box(30, 0), box(60, 0), box(50.5, 0)], [CAR, CAR, CAR])
    near = precision_recall([f], 'car', range_bin=(0, 50))
    far = precision_recall([f], 'car', range_bin=(50, 80))
    # The pair straddling 50 m splits: its prediction is an FP near, its truth a miss far.
    assert (near.num_gt, near.num_predictions) == (1, 2)
    assert (far.num_gt, far.num_predictions) == (2, 1)
    assert average_precision([f], 'car', range_bin=(0, 50)) == pytest.approx(1.0)
    assert average_precision([f], 'car', range_bin=(50, 80)) == pytest.approx(51 / 101)
    # Range from another origin (e.g. the LiDAR): the 60 m box is 50 m away from x = 10.
    shifted = precision_recall([f], 'car', range_bin=(0, 50), origin_xy=(10.0, 0.0))
    assert shifted.num_gt == 2


def test_ignored_ground_truth_is_neither_missed_nor_a_false_positive():
    f = frame([box(10, 0), box(20, 0)], [0.9, 0.95], [CAR, CAR],
              [box(10, 0), box(20, 0)], [CAR, CAR], ignore=[False, True])
    curve = precision_recall([f], 'car')
    assert curve.num_gt == 1 and curve.num_predictions == 1
    assert average_precision([f], 'car') == pytest.approx(1.0)
    # Unmatched ignored truth is not a miss.
    g = frame([box(10, 0)], [0.9], [CAR], [box(10, 0), box(30, 0)], [CAR, CAR],
              ignore=[False, True])
    assert average_precision([g], 'car') == pytest.approx(1.0)
    # A prediction that fits both takes the counted truth first.
    h = frame([box(10.5, 0)], [0.9], [CAR], [box(10, 0), box(11, 0)], [CAR, CAR],
              ignore=[True, False])
    assert match_frame(h, 'car').true_positive.tolist() == [True]


# ------------------------------------------------------------------ recall at precision

def test_recall_at_precision_picks_the_best_qualifying_threshold():
    gts = [box(10 * k, 0) for k in range(1, 6)]
    # Scores: TP .9, TP .8, FP .7, TP .6, FP .5, FP .4, TP .3 over 5 pedestrians.
    preds = [box(10, 0), box(20, 0), box(0, 20), box(30, 0), box(0, -20), box(-20, 0),
             box(40, 0)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    f = frame(preds, scores, [PEDESTRIAN] * 7, gts, [PEDESTRIAN] * 5)
    recall, precision, threshold = recall_at_precision([f], 'pedestrian', 0.7, (0, 100))
    # Threshold 0.6: 3 TP of 4 kept (0.75 >= 0.7), recall 3/5; lower ones fall below 0.7.
    assert (recall, precision, threshold) == pytest.approx((0.6, 0.75, 0.6))
    recall, precision, threshold = recall_at_precision([f], 'pedestrian', 0.55, (0, 100))
    assert (recall, precision, threshold) == pytest.approx((0.8, 4 / 7, 0.3))
    assert recall_at_precision([f], 'pedestrian', 1.0, (0, 100)) == pytest.approx(
        (0.4, 1.0, 0.8))


def test_recall_at_precision_without_a_qualifying_point_reports_nothing():
    f = frame([box(0, 20)], [0.9], [PEDESTRIAN], [box(10, 0)], [PEDESTRIAN])
    recall, precision, threshold = recall_at_precision([f], 'pedestrian', 0.8, (0, 30))
    assert recall == 0.0 and math.isnan(precision) and threshold == math.inf


def test_tied_scores_form_one_operating_point():
    f = frame([box(10, 0), box(0, 20)], [0.5, 0.5], [CAR, CAR], [box(10, 0)], [CAR])
    curve = precision_recall([f], 'car')
    np.testing.assert_allclose(curve.precision, [0.5])
    assert recall_at_precision([f], 'car', 0.8, (0, 30))[0] == 0.0


# -------------------------------------------------------------------- detection rate

def test_detection_rate_counts_any_class_within_the_distance():
    target = box(30, 0, 0.5, 0.5)
    frames = [
        (frame([box(30.5, 0.3, 0.6, 0.6)], [0.4], [UNKNOWN], [box(10, 0), target],
               [CAR, UNKNOWN]), 1),
        (frame([box(30.2, 0)], [0.9], [CAR], [target], [UNKNOWN]), 0),
        (frame([box(31.5, 0)], [0.9], [UNKNOWN], [target], [UNKNOWN]), 0),
        (frame(gt=[target], gt_labels=[UNKNOWN]), 0),
    ]
    assert detection_rate(frames) == pytest.approx(0.5)
    assert detection_rate(frames, max_distance_m=2.0) == pytest.approx(0.75)
    assert detection_rate(frames, min_score=0.5) == pytest.approx(0.25)
    with pytest.raises(EvaluationError, match='target_index'):
        detection_rate([(frames[0][0], 5)])
    with pytest.raises(EvaluationError, match='frames_with_target_index'):
        detection_rate([])


# --------------------------------------------------------------------------- summary

def test_summary_is_json_and_holds_the_issue_numbers():
    frames = [frame([box(10, 0), box(60, 0), box(5, 5, 0.5, 0.6)], [0.9, 0.8, 0.7],
                    [CAR, CAR, PEDESTRIAN],
                    [box(10, 0), box(60, 0), box(5, 5, 0.5, 0.6), box(20, 0, 1.8, 0.6)],
                    [CAR, CAR, PEDESTRIAN, 4])]
    debris = [(frame([box(30, 0, 0.5, 0.5)], [0.5], [UNKNOWN], [box(30, 0, 0.5, 0.5)],
                     [UNKNOWN]), 0)]
    summary = json.loads(json.dumps(detection_summary(frames, debris)))
    for criterion in ('center_distance', 'iou'):
        result = summary['criteria'][criterion]
        assert result['ap']['car_ap_0_50m'] == pytest.approx(1.0)
        assert result['ap']['car_ap_50_80m'] == pytest.approx(1.0)
        assert result['ap']['truck_bus_ap_0_50m'] is None      # no ground truth
        assert result['ap']['bicycle_ap_0_50m'] == 0.0
        assert result['ap']['pedestrian_ap_0_50m'] == pytest.approx(1.0)
        ped = result['pedestrian_recall_0_30m_at_precision_0.8']
        assert ped['recall'] == pytest.approx(1.0) and ped['score_threshold'] == 0.7
        assert result['num_gt']['car_0_50m'] == 1
        assert result['meets_targets'] == {
            'car_ap_0_50m': True, 'car_ap_50_80m': True,
            'pedestrian_recall_0_30m_at_precision_0.8': True}
    assert summary['criteria']['iou']['threshold'] == 0.5
    assert summary['criteria']['center_distance']['threshold'] == 2.0
    assert summary['unknown_debris_detection_rate'] == 1.0
    assert summary['unknown_debris_meets_target'] is True


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize('kwargs, name', [
    (dict(pred_boxes=[box(math.nan, 0)], pred_scores=[0.5], pred_labels=[1]), 'pred_boxes'),
    (dict(pred_boxes=np.zeros((1, 6)), pred_scores=[0.5], pred_labels=[1]), 'pred_boxes'),
    (dict(pred_boxes=[box(1, 0)], pred_scores=[math.inf], pred_labels=[1]), 'pred_scores'),
    (dict(pred_boxes=[box(1, 0)], pred_scores=[0.5, 0.4], pred_labels=[1]), 'pred_scores'),
    (dict(pred_boxes=[box(1, 0)], pred_scores=[0.5], pred_labels=[9]), 'pred_labels'),
    (dict(gt_boxes=[box(1, math.inf)], gt_labels=[1]), 'gt_boxes'),
    (dict(gt_boxes=[box(1, 0)], gt_labels=[1.5]), 'gt_labels'),
    (dict(gt_boxes=[box(1, 0)], gt_labels=[1], gt_ignore=[1]), 'gt_ignore'),
    (dict(gt_boxes=[box(1, 0)], gt_labels=[1], gt_ignore=[True, False]), 'gt_ignore'),
])
def test_bad_frames_raise_naming_the_array(kwargs, name):
    values = dict(pred_boxes=np.zeros((0, 7)), pred_scores=[], pred_labels=np.zeros(0, int),
                  gt_boxes=np.zeros((0, 7)), gt_labels=np.zeros(0, int))
    values.update(kwargs)
    values = {k: (np.array(v) if isinstance(v, list) else v) for k, v in values.items()}
    with pytest.raises(EvaluationError, match=name):
        FrameDetections(**values)


@pytest.mark.parametrize('kwargs, name', [
    (dict(class_name='tree'), 'class_name'),
    (dict(class_name='car', criterion='giou'), 'criterion'),
    (dict(class_name='car', criterion='iou', threshold=1.5), 'threshold'),
    (dict(class_name='car', range_bin=(50, 10)), 'range_bin'),
])
def test_bad_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(EvaluationError, match=name):
        average_precision([frame(gt=[box(1, 0)], gt_labels=[CAR])], **kwargs)


def test_frames_do_not_freeze_the_callers_arrays():
    boxes = np.array([box(1, 0)])
    frame(boxes, [0.5], [CAR])
    boxes[0, 0] = 2.0  # still writable
    assert frame(boxes, [0.5], [CAR]).pred_boxes[0, 0] == 2.0
