"""Evaluation metrics, result.json and summary.png on hand-built series (robotaxi_stack.replay)."""

import json
import math

import numpy as np
import pytest

from robotaxi_stack.replay.metrics import (
    MISSION_ALIGHTING, MISSION_BOARDING, MISSION_COMPLETED, DetectionFrame, MetricsError,
    MotFrame, bev_iou, box_corners, boxes_overlap, build_result, clear_mot,
    collisions_and_clearance, convex_distance, convex_intersection_area, detection_ap,
    ego_footprint, future_positions, jerk_and_lat_accel, latency_percentiles,
    longitudinal_profiles, mrm_events, perception_summary, prediction_errors,
    recall_at_precision, rides_completed, stop_errors)
from robotaxi_stack.replay.summary import SummaryError, draw_summary
from robotaxi_stack.sim.scenario import Expect

TO_PICKUP, TO_DROPOFF = 1, 3


# ------------------------------------------------------------------------------ geometry

def test_box_corners_rotate_counter_clockwise_about_the_centre():
    corners = box_corners(1.0, 2.0, math.pi / 2, 4.0, 2.0)
    # Rear-right, front-right, front-left, rear-left of a box heading +y.
    np.testing.assert_allclose(corners, [[2.0, 0.0], [2.0, 4.0], [0.0, 4.0], [0.0, 0.0]],
                               atol=1e-12)
    assert box_corners(np.zeros(5), 0.0, 0.0, 4.0, 2.0).shape == (5, 4, 2)


def test_ego_footprint_centre_is_ahead_of_base_link():
    corners = ego_footprint(10.0, 0.0, 0.0, length_m=4.6, width_m=1.8, center_offset_m=1.4)
    np.testing.assert_allclose(corners.mean(axis=0), [11.4, 0.0])
    np.testing.assert_allclose(corners[:, 0].max(), 11.4 + 2.3)


def test_box_corners_reject_bad_sizes_and_nan():
    with pytest.raises(MetricsError, match='length and width'):
        box_corners(0.0, 0.0, 0.0, 0.0, 1.0)
    with pytest.raises(MetricsError, match='yaw: non-finite'):
        box_corners(0.0, 0.0, float('nan'), 1.0, 1.0)


def test_convex_distance_matches_hand_computed_gaps():
    unit = box_corners(0.0, 0.0, 0.0, 2.0, 2.0)
    side = box_corners(3.5, 0.0, 0.0, 2.0, 2.0)             # faces 1.5 m apart
    diagonal = box_corners(4.0, 5.0, 0.0, 2.0, 2.0)         # corner (1,1) to corner (3,4)
    diamond = box_corners(1.0 + 0.5 + math.sqrt(2), 0.0, math.pi / 4, 2.0, 2.0)  # tip 0.5 m
    overlapping = box_corners(1.0, 1.0, 0.3, 2.0, 2.0)
    touching = box_corners(2.0, 0.0, 0.0, 2.0, 2.0)
    others = np.stack([side, diagonal, diamond, overlapping, touching])
    dist = convex_distance(np.repeat(unit[None], 5, axis=0), others)
    np.testing.assert_allclose(dist, [1.5, math.hypot(2.0, 3.0), 0.5, 0.0, 0.0], atol=1e-9)


def test_overlap_and_distance_agree_with_area_and_boundary_sampling():
    rng = np.random.default_rng(11)
    k = 400
    a = box_corners(0.0, 0.0, rng.uniform(-3, 3, k), rng.uniform(1, 6, k),
                    rng.uniform(0.5, 3, k))
    b = box_corners(rng.uniform(-8, 8, k), rng.uniform(-8, 8, k), rng.uniform(-3, 3, k),
                    rng.uniform(1, 6, k), rng.uniform(0.5, 3, k))
    overlap = boxes_overlap(a, b)
    dist = convex_distance(a, b)
    assert 20 < overlap.sum() < k - 20  # both cases are exercised
    np.testing.assert_array_equal(overlap, convex_intersection_area(a, b) > 1e-9)
    assert np.all(dist[overlap] == 0.0) and np.all(dist[~overlap] > 0.0)

    # Brute force: boundaries sampled every <= 3 cm bound the exact distance from above.
    def boundary(poly):
        s = np.linspace(0.0, 1.0, 200, endpoint=False)[None, :, None]
        edges = (np.roll(poly, -1, axis=0) - poly)[:, None, :]
        return (poly[:, None, :] + s * edges).reshape(-1, 2)
    for i in np.flatnonzero(~overlap)[:25]:
        pa, pb = boundary(a[i]), boundary(b[i])
        sampled = np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1))
        assert dist[i] <= sampled + 1e-9
        assert dist[i] >= sampled - 0.04


def _drive_past(times, actor_y):
    """Ego driving +x at 10 m/s past a parked 4 m x 2 m actor centred at (50, actor_y)."""
    ego = box_corners(10.0 * times, 0.0, 0.0, 4.5, 2.0)
    actor = box_corners(np.full(times.size, 50.0), actor_y, 0.0, 4.0, 2.0)
    return ego, actor


def test_collision_reported_at_first_overlap_with_the_right_actor():
    times = np.round(np.arange(0.0, 8.0, 0.1), 10)
    ego, van = _drive_past(times, 0.0)
    _, far = _drive_past(times, 10.0)
    actors = np.stack([far, van], axis=1)
    events, clearance = collisions_and_clearance(times, ego, actors,
                                                 np.ones((times.size, 2), bool), ['far', 'van'])
    # Front 10 t + 2.25 passes the van's rear (48) after 4.575 s; rear 10 t - 2.25 clears its
    # front (52) after 5.425 s.
    assert len(events) == 1
    assert events[0].actor_id == 'van'
    assert events[0].t_s == pytest.approx(4.6) and events[0].end_t_s == pytest.approx(5.4)
    assert clearance == 0.0


def test_clearance_of_a_passing_actor_and_invalid_samples_ignored():
    times = np.arange(0.0, 8.0, 0.1)
    ego, beside = _drive_past(times, 3.5)     # 3.5 m lane offset, both 2 m wide: 1.5 m gap
    _, ghost = _drive_past(times, 0.0)        # on the ego's path, but never valid
    valid = np.zeros((times.size, 2), bool)
    valid[:, 0] = True
    events, clearance = collisions_and_clearance(
        times, ego, np.stack([beside, ghost], axis=1), valid, ['car', 'ghost'])
    assert events == []
    assert clearance == pytest.approx(1.5)


def test_two_separate_contacts_give_two_events():
    times = np.arange(6, dtype=float)
    ego = box_corners(np.zeros(6), 0.0, 0.0, 2.0, 2.0)
    actor = box_corners(np.array([0.5, 0.5, 5.0, 5.0, 0.5, 5.0]), 0.0, 0.0, 2.0, 2.0)
    events, _ = collisions_and_clearance(times, ego, actor[:, None], np.ones((6, 1), bool),
                                         ['a'])
    assert [(e.t_s, e.end_t_s) for e in events] == [(0.0, 1.0), (4.0, 4.0)]


def test_no_valid_actor_gives_no_clearance_and_shapes_are_checked():
    times = np.arange(3.0)
    ego = box_corners(np.zeros(3), 0.0, 0.0, 2.0, 2.0)
    actors = np.full((3, 1, 4, 2), np.nan)
    assert collisions_and_clearance(times, ego, actors, np.zeros((3, 1), bool), ['x']) == \
        ([], None)
    with pytest.raises(MetricsError, match='non-finite corners'):
        collisions_and_clearance(times, ego, actors, np.ones((3, 1), bool), ['x'])
    with pytest.raises(MetricsError, match='increase strictly'):
        collisions_and_clearance(np.array([0.0, 1.0, 1.0]), ego, actors,
                                 np.zeros((3, 1), bool), ['x'])


# ------------------------------------------------------------------------------ rides

def _ride_log():
    """Ego stops 0.2 m short of the pickup at x=180 and 0.1 m left of the dropoff."""
    times = np.arange(0.0, 40.0, 0.02)
    x = np.interp(times, [0.0, 10.0, 15.0, 25.0, 30.0, 40.0],
                  [0.0, 179.8, 179.8, 241.75, 241.75, 241.75])
    y = np.where(times >= 25.0, 60.0, -1.75)
    x = np.where(times >= 25.0, 241.75 - 0.1, x)
    speed = np.gradient(x, times)
    speed[times >= 25.0] = 0.0
    speed[times >= 30.0] = 2.0        # leaves after alighting
    status = [(0.0, TO_PICKUP), (10.5, MISSION_BOARDING), (11.5, MISSION_BOARDING),
              (12.5, MISSION_BOARDING), (14.5, TO_DROPOFF), (26.0, MISSION_ALIGHTING),
              (29.0, MISSION_COMPLETED)]
    return times, np.stack([x, y], axis=1), speed, status


def test_stop_error_measures_the_standing_base_link_offset():
    times, xy, speed, status = _ride_log()
    stops = stop_errors(times, xy, speed, [t for t, _ in status], ['r1'] * len(status),
                        [s for _, s in status], {'r1': ((180.0, -1.75), (241.75, 60.0))})
    assert [(s.stop, s.standing) for s in stops] == [('pickup', True), ('dropoff', True)]
    assert stops[0].error_m == pytest.approx(0.2)
    assert stops[1].error_m == pytest.approx(0.1)
    assert (stops[0].t_start_s, stops[0].t_end_s) == (10.5, 14.5)  # repeats extend the period


def test_stop_error_without_standstill_takes_the_worst_sample():
    times, xy, speed, status = _ride_log()
    creeping = (times >= 10.5) & (times < 14.5)
    xy[creeping, 0] = 179.8 + 0.2 * (times[creeping] - 10.5)  # creeps 0.2 m/s past the stop
    speed[creeping] = 0.5                                       # above the standstill limit
    stops = stop_errors(times, xy, speed, [t for t, _ in status], ['r1'] * len(status),
                        [s for _, s in status], {'r1': ((180.0, -1.75), (241.75, 60.0))})
    assert stops[0].standing is False
    assert stops[0].error_m == pytest.approx(179.8 + 0.2 * (14.48 - 10.5) - 180.0)


def test_stop_error_needs_a_requested_stop_for_each_ride():
    times, xy, speed, status = _ride_log()
    with pytest.raises(MetricsError, match="no stop for ride 'r1'"):
        stop_errors(times, xy, speed, [t for t, _ in status], ['r1'] * len(status),
                    [s for _, s in status], {})


def test_rides_completed_counts_distinct_rides():
    assert rides_completed(['r1', 'r1', 'r2', 'r2', 'r3'],
                           [MISSION_COMPLETED, MISSION_COMPLETED, TO_PICKUP,
                            MISSION_COMPLETED, TO_DROPOFF]) == 2


def test_mrm_events_one_per_episode_and_escalation():
    events = mrm_events([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], [0, 1, 1, 1, 2, 0],
                        [0, 1, 1, 2, 2, 0], ['', 'tracking down', '', 'timeout', '', ''])
    assert [(e['t_s'], e['behavior'], e['reason']) for e in events] == [
        (1.0, 'comfortable_stop', 'tracking down'), (3.0, 'emergency_stop', 'timeout')]
    assert mrm_events([], [], []) == []
    with pytest.raises(MetricsError, match='unknown code'):
        mrm_events([0.0], [7], [0])


# ------------------------------------------------------------------------------ comfort

def _accel_profile(t):
    """0.5 m/s^3 from 1 to 3 s up to 1 m/s^2, held, -0.5 m/s^3 from 6 to 8 s back to 0."""
    return np.clip(0.5 * (t - 1.0), 0.0, 1.0) - np.clip(0.5 * (t - 6.0), 0.0, 1.0)


def _speed_profile(t):
    fine = np.linspace(0.0, t[-1], 200001)
    accel = _accel_profile(fine)
    speed = 5.0 + np.concatenate(([0.0], np.cumsum(0.5 * (accel[1:] + accel[:-1])
                                                   * np.diff(fine))))
    return np.interp(t, fine, speed)


def test_jerk_of_a_known_profile_from_speed_and_from_accel_channel():
    t = np.arange(0.0, 10.0, 0.02)
    speed = _speed_profile(t)
    from_speed = jerk_and_lat_accel(t, speed, yaw_rate_rps=np.zeros(t.size))
    from_accel = jerk_and_lat_accel(t, speed, accel_mps2=_accel_profile(t),
                                    yaw_rate_rps=np.zeros(t.size))
    for metrics in (from_speed, from_accel):
        assert metrics.max_abs_jerk_mps3 == pytest.approx(0.5, rel=0.02)
        assert metrics.max_abs_accel_mps2 == pytest.approx(1.0, rel=0.02)
    accel, jerk = longitudinal_profiles(t, speed)
    assert jerk[np.searchsorted(t, 2.0)] == pytest.approx(0.5, abs=1e-6)
    assert jerk[np.searchsorted(t, 4.5)] == pytest.approx(0.0, abs=1e-6)


def test_jerk_filter_suppresses_odometry_noise():
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 10.0, 0.02)
    speed = 10.0 + rng.normal(0.0, 0.005, t.size)  # 5 mm/s ripple at constant speed
    naive = np.max(np.abs(np.diff(speed, 2))) / 0.02 ** 2
    metrics = jerk_and_lat_accel(t, speed, yaw_rate_rps=np.zeros(t.size))
    assert naive > 50.0
    assert metrics.max_abs_jerk_mps3 < 1.0


def test_lateral_accel_from_yaw_rate_or_wrapped_yaw():
    t = np.arange(0.0, 40.0, 0.02)
    speed = np.full(t.size, 10.0)
    by_rate = jerk_and_lat_accel(t, speed, yaw_rate_rps=np.full(t.size, 0.2))
    by_yaw = jerk_and_lat_accel(t, speed, yaw_rad=np.angle(np.exp(0.2j * t)))  # wraps at pi
    assert by_rate.max_abs_lat_accel_mps2 == pytest.approx(2.0)
    assert by_yaw.max_abs_lat_accel_mps2 == pytest.approx(2.0, rel=1e-6)


def test_comfort_inputs_are_checked():
    t = np.arange(0.0, 1.0, 0.02)
    with pytest.raises(MetricsError, match='yaw_rate_rps or yaw_rad'):
        jerk_and_lat_accel(t, np.ones(t.size))
    with pytest.raises(MetricsError, match='speed_mps: non-finite'):
        jerk_and_lat_accel(t, np.full(t.size, np.inf), yaw_rate_rps=np.zeros(t.size))
    with pytest.raises(MetricsError, match='at least 5 samples'):
        longitudinal_profiles([0.0, 0.1, 0.2], [1.0, 1.0, 1.0])


# ------------------------------------------------------------------------------ latency

def test_latency_percentiles_in_milliseconds():
    stamps = np.arange(100) * 0.1
    pairs = np.stack([stamps + np.arange(1, 101) * 1e-3, stamps], axis=1)
    result = latency_percentiles(pairs)
    assert result == {'p50': pytest.approx(50.5), 'p99': pytest.approx(99.01)}


def test_latency_rejects_empty_and_negative():
    with pytest.raises(MetricsError, match='no samples'):
        latency_percentiles(np.zeros((0, 2)))
    with pytest.raises(MetricsError, match=r'pairs\[1\]: received 5.000 ms before'):
        latency_percentiles([[1.0, 0.9], [1.0, 1.005]])


# ------------------------------------------------------------------------------ tracking

def test_mota_with_one_id_switch_and_one_miss():
    gt = np.array([[0.0, 0.0], [10.0, 0.0]])
    frames = [
        MotFrame(['A', 'B'], gt, [1, 2], gt + 0.1),
        MotFrame(['A', 'B'], gt, [1], gt[:1] + 0.1),              # B missed
        MotFrame(['A', 'B'], gt, [1, 3], gt + 0.1),               # B now track 3: switch
        MotFrame(['A', 'B'], gt, [1, 3], gt + 0.1),
    ]
    result = clear_mot(frames)
    assert (result.id_switches, result.misses, result.false_positives) == (1, 1, 0)
    assert result.num_gt == 8 and result.num_matches == 7
    assert result.mota == pytest.approx(1.0 - 2.0 / 8.0)
    assert result.motp_m == pytest.approx(math.hypot(0.1, 0.1))


def test_mota_keeps_correspondences_and_gates_far_tracks():
    # Track 2 drifts onto A's position but A keeps its track 1 (previous correspondence wins);
    # a track 5 m away from everything is a false positive, not a match.
    frames = [MotFrame(['A'], [[0.0, 0.0]], [1], [[1.5, 0.0]]),
              MotFrame(['A'], [[0.0, 0.0]], [1, 2], [[1.5, 0.0], [0.0, 0.1]]),
              MotFrame(['A'], [[0.0, 0.0]], [9], [[5.0, 0.0]])]
    result = clear_mot(frames)
    assert (result.id_switches, result.misses, result.false_positives) == (0, 1, 2)
    assert clear_mot([]).mota is None


# ------------------------------------------------------------------------------ detection

def test_ap_of_perfect_detections_is_one():
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(5):
        xy = rng.uniform(-50.0, 50.0, (6, 2))
        labels = ['car', 'car', 'car', 'pedestrian', 'pedestrian', 'truck']
        frames.append(DetectionFrame(xy, labels, xy + 0.3, labels, rng.uniform(0.5, 1.0, 6)))
    result = detection_ap(frames)
    assert set(result) == {'car', 'pedestrian', 'truck'}
    assert all(r.ap == pytest.approx(1.0) for r in result.values())
    summary = perception_summary(result)
    assert summary['ap_car'] == pytest.approx(1.0) and summary['recall_ped'] == 1.0


def test_ap_with_a_confident_false_positive():
    gt = np.array([[0.0, 0.0], [20.0, 0.0]])
    det = np.array([[40.0, 0.0], [0.5, 0.0], [20.0, 1.0]])
    frame = DetectionFrame(gt, ['car', 'car'], det, ['car'] * 3, [0.9, 0.8, 0.7])
    result = detection_ap([frame])['car']
    np.testing.assert_allclose(result.precision, [0.0, 0.5, 2.0 / 3.0])
    np.testing.assert_allclose(result.recall, [0.0, 0.5, 1.0])
    assert result.ap == pytest.approx(2.0 / 3.0)
    assert recall_at_precision(result.precision, result.recall, 0.6) == 1.0
    assert recall_at_precision(result.precision, result.recall, 0.9) == 0.0


def test_ap_matching_is_per_class_and_gated_at_2m():
    frame = DetectionFrame([[0.0, 0.0]], ['car'], [[0.0, 0.0], [2.5, 0.0]],
                           ['pedestrian', 'car'], [0.9, 0.8])
    result = detection_ap([frame], labels=['car', 'pedestrian'])
    assert result['car'].ap == 0.0
    assert result['pedestrian'].ap is None and result['pedestrian'].num_det == 1


def test_bev_iou_of_known_overlaps():
    base = np.array([0.0, 0.0, 0.0, 4.0, 2.0])
    shifted = np.array([2.0, 0.0, 0.0, 4.0, 2.0])       # half overlap: 4 / (8 + 8 - 4)
    turned = np.array([0.0, 0.0, math.pi / 2, 4.0, 2.0])  # 2x2 cross: 4 / 12
    apart = np.array([10.0, 0.0, 0.3, 4.0, 2.0])
    iou = bev_iou(np.tile(base, (4, 1)), np.stack([base, shifted, turned, apart]))
    np.testing.assert_allclose(iou, [1.0, 1.0 / 3.0, 1.0 / 3.0, 0.0], atol=1e-9)
    square = box_corners(0.0, 0.0, 0.0, 2.0, 2.0)[None]
    diamond = box_corners(0.0, 0.0, math.pi / 4, 2.0, 2.0)[None]
    # Regular octagon of the two squares: 8 (sqrt 2 - 1) for unit half-size.
    assert convex_intersection_area(square, diamond)[0] == pytest.approx(8 * (math.sqrt(2) - 1))


def test_ap_with_iou_matching():
    boxes = np.array([[0.0, 0.0, 0.0, 4.0, 2.0], [10.0, 5.0, 1.0, 4.0, 2.0]])
    det = boxes.copy()
    det[1, 0] += 2.0                                   # IoU 1/3 < 0.5: a false positive
    frame = DetectionFrame(boxes[:, :2], ['car', 'car'], det[:, :2], ['car', 'car'],
                           [0.9, 0.8], gt_boxes=boxes, det_boxes=det)
    assert detection_ap([frame], match='iou')['car'].ap == pytest.approx(0.5)
    with pytest.raises(MetricsError, match='needs gt_boxes'):
        detection_ap([DetectionFrame(boxes[:, :2], ['car'] * 2, det[:, :2], ['car'] * 2,
                                     [0.9, 0.8])], match='iou')


# ------------------------------------------------------------------------------ prediction

def test_ade_fde_of_a_known_offset_over_top_k_modes():
    horizon = np.arange(0.0, 5.01, 0.5)
    gt = np.stack([10.0 * horizon, np.zeros_like(horizon)], axis=-1)[None]  # (1, S, 2)
    good = gt[0] + [0.0, 0.5]
    bad = gt[0] + [3.0, 0.0]
    pred = np.stack([bad, good])[None]                                     # (1, 2, S, 2)
    conf = np.array([[0.7, 0.3]])
    valid = np.ones((1, horizon.size), bool)
    top2 = prediction_errors(pred, conf, gt, valid, horizon, top_k=2)
    assert (top2.ade_3s_m, top2.fde_3s_m, top2.miss_rate) == (pytest.approx(0.5),
                                                              pytest.approx(0.5), 0.0)
    top1 = prediction_errors(pred, conf, gt, valid, horizon, top_k=1)
    assert (top1.ade_3s_m, top1.fde_3s_m, top1.miss_rate) == (pytest.approx(3.0),
                                                              pytest.approx(3.0), 1.0)


def test_prediction_skips_objects_without_ground_truth_to_3s():
    horizon = np.arange(0.5, 3.01, 0.5)
    pred = np.zeros((2, 1, horizon.size, 2))
    gt = np.zeros((2, horizon.size, 2))
    gt[0, :, 0] = 1.0
    valid = np.ones((2, horizon.size), bool)
    valid[1, -1] = False
    result = prediction_errors(pred, np.ones((2, 1)), gt, valid, horizon)
    assert (result.num_objects, result.num_skipped, result.ade_3s_m) == (1, 1, 1.0)
    with pytest.raises(MetricsError, match='no step at 3.0'):
        prediction_errors(pred, np.ones((2, 1)), gt, valid, horizon * 0.9)


def test_future_positions_interpolates_and_flags_beyond_the_track():
    xy, valid = future_positions([0.0, 1.0, 2.0], [[0.0, 0.0], [1.0, 0.0], [2.0, 2.0]], 0.5,
                                 [0.0, 1.0, 2.0])
    np.testing.assert_allclose(xy[:2], [[0.5, 0.0], [1.5, 1.0]])
    assert valid.tolist() == [True, True, False]


# ------------------------------------------------------------------------------ result.json

def _metrics(**overrides):
    metrics = {
        'collisions': 0, 'min_clearance_m': 1.9, 'rides_completed': 1,
        'stop_error_m': [0.12, 0.08], 'max_abs_jerk_mps3': 1.7, 'max_abs_lat_accel_mps2': 1.9,
        'e2e_latency_ms': {'p50': 48.0, 'p99': 91.0}, 'mrm_events': [],
        'perception': {'ap_car': 0.93, 'recall_ped': 0.9},
        'tracking': {'mota': 0.9, 'id_switches': 1},
        'prediction': {'ade_3s_m': 0.8, 'fde_3s_m': 1.6}}
    metrics.update(overrides)
    return metrics


def test_result_passes_when_all_expectations_hold():
    expect = Expect(rides_completed=1, no_collision=True, stop_error_m=0.3, mrm='none',
                    max_abs_jerk_mps3=2.0, max_e2e_latency_p99_ms=100.0, min_mota=0.8,
                    min_perception=(('ap_car', 0.9),))
    result = build_result('pickup', _metrics(max_abs_jerk_mps3=np.float32(1.7)), expect)
    assert result['passed'] is True and result['failures'] == []
    assert json.loads(json.dumps(result)) == result
    assert set(result) == {'scenario', 'passed', 'failures', 'metrics'}


def test_result_failures_name_expectation_and_measured_value():
    expect = Expect(rides_completed=1, no_collision=True, stop_error_m=0.3, mrm='none',
                    max_abs_jerk_mps3=1.5, max_ade_3s_m=0.5, min_perception=(('ap_bus', 0.5),))
    metrics = _metrics(
        collisions=1, collision_events=[{'t_s': 12.3, 'actor_id': 'van', 'end_t_s': 12.5}],
        rides_completed=0, stop_error_m=[0.41],
        mrm_events=[{'t_s': 61.0, 'state': 'MRM_OPERATING', 'behavior': 'comfortable_stop',
                     'reason': 'tracking down'}])
    failures = build_result('pickup', metrics, expect)['failures']
    assert failures == [
        'rides_completed: expected >= 1, measured 0',
        'no_collision: expected no collision, measured 1 collision(s) (first at t=12.30 s '
        + "with actor 'van')",
        'stop_error_m: expected every stop within 0.3 m, measured 0.410 m at stop 1 of 1',
        'mrm: expected none, measured comfortable_stop at t=61.00 s (tracking down)',
        'max_abs_jerk_mps3: expected max_abs_jerk_mps3 <= 1.5, measured 1.7',
        'max_ade_3s_m: expected prediction.ade_3s_m <= 0.5, measured 0.8',
        'min_perception.ap_bus: expected perception.ap_bus >= 0.5, not measured',
    ]


def test_result_mrm_behavior_expectation():
    events = [{'t_s': 61.0, 'state': 'MRM_OPERATING', 'behavior': 'comfortable_stop',
               'reason': ''}]
    assert build_result('f', _metrics(mrm_events=events), Expect(mrm='comfortable_stop'))[
        'passed']
    assert build_result('f', _metrics(mrm_events=events), Expect(mrm='any'))['passed']
    assert build_result('f', _metrics(), Expect(mrm='any'))['failures'] == [
        'mrm: expected an MRM, measured none']
    assert build_result('f', _metrics(mrm_events=events), Expect(mrm='pull_over'))[
        'failures'] == ['mrm: expected pull_over, measured comfortable_stop']


def test_result_rejects_nan_metrics():
    with pytest.raises(MetricsError, match=r'metrics\.e2e_latency_ms\.p99: non-finite'):
        build_result('x', _metrics(e2e_latency_ms={'p50': 1.0, 'p99': float('nan')}), Expect())


# ------------------------------------------------------------------------------ summary.png

def test_summary_png_is_written(tmp_path):
    times = np.arange(0.0, 60.0, 0.02)
    ego = np.stack([5.0 * times, np.full(times.size, -1.75)], axis=1)
    roads = [np.array([[0.0, y], [360.0, y]]) for y in (-3.5, 0.0, 3.5)]
    tracks = {'van': np.array([[150.0, -1.75]]),
              'ped1': np.array([[110.0, -9.0], [110.0, 9.0]])}
    path = draw_summary(tmp_path / 'summary.png', roads, ego, tracks, times,
                        np.full(times.size, 5.0), np.zeros(times.size), np.zeros(times.size),
                        events=[(20.0, 'kill tracking')], title='demo',
                        stops_xy={'pickup r1': (180.0, -1.75)})
    data = (tmp_path / 'summary.png').read_bytes()
    assert path == str(tmp_path / 'summary.png')
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10000


def test_summary_checks_series_lengths(tmp_path):
    with pytest.raises(SummaryError, match='speed_mps: expected 3 samples'):
        draw_summary(tmp_path / 's.png', [], np.zeros((3, 2)), {}, np.arange(3.0),
                     np.zeros(2), np.zeros(3), np.zeros(3))


# ------------------------------------------------------------------------------ ride time ratio

def _legs(*ratios):
    return [{'ride_id': 'r1', 'leg': leg, 'time_s': 20.0 * ratio if ratio else 20.0,
             'free_flow_s': 20.0 if ratio else None, 'ratio': ratio}
            for leg, ratio in zip(('to_pickup', 'to_dropoff'), ratios)]


def test_ride_time_ratio_passes_within_the_limit():
    metrics = _metrics(ride_legs=_legs(1.1, 1.29), max_ride_time_ratio=1.29)
    result = build_result('r', metrics, Expect(max_ride_time_ratio=1.3))
    assert result['passed'] and result['failures'] == []
    # Not set: a slow ride is not checked.
    slow = _metrics(ride_legs=_legs(1.1, 2.0), max_ride_time_ratio=2.0)
    assert build_result('r', slow, Expect())['passed']


def test_ride_time_ratio_above_the_limit_fails_naming_the_leg():
    metrics = _metrics(ride_legs=_legs(1.1, 1.45), max_ride_time_ratio=1.45)
    assert build_result('r', metrics, Expect(max_ride_time_ratio=1.3))['failures'] == [
        'max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, measured 1.45 for '
        'r1 to_dropoff (29.0 s vs 20.0 s free flow)']


def test_ride_time_ratio_not_measured_fails_with_the_reason():
    expect = Expect(max_ride_time_ratio=1.3)
    failures = build_result('r', _metrics(), expect)['failures']
    assert failures == ['max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, '
                        'not measured (no completed ride leg)']
    metrics = _metrics(ride_legs=[], max_ride_time_ratio=None,
                       ride_time_error='map.file: cannot read maps/x.osm')
    assert build_result('r', metrics, expect)['failures'] == [
        'max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, not measured '
        '(map.file: cannot read maps/x.osm)']
    legs = _legs(1.1, None)
    legs[1]['error'] = 'no route'
    assert build_result('r', _metrics(ride_legs=legs, max_ride_time_ratio=1.1), expect)[
        'failures'] == ['max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, '
                        'not measured for r1 to_dropoff (no route)']
    # Only the summary value (hand-built metrics): it is still checked.
    assert build_result('r', _metrics(max_ride_time_ratio=1.4), expect)['failures'] == [
        'max_ride_time_ratio: expected ride time <= 1.3 x free-flow time, measured 1.40']
