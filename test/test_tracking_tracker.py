"""Tracker core without ROS: filter convergence, association, lifecycle, time handling, bad
input and ego-motion compensation."""

import dataclasses
import math

import numpy as np
import pytest

from robotaxi_stack.common.params import ParameterError
from robotaxi_stack.tracking.tracker import (Detections, PoseHistory, Tracker, TrackerParams,
                                             class_probs_from_labels, detections_to_map)

CAR, PEDESTRIAN = 1, 6
CAR_DIMS = (4.6, 1.9, 1.5)
PED_DIMS = (0.5, 0.6, 1.75)


def _dets(xy, yaw, labels, sigma_m=0.2, frame_id='map', yaw_sigma=0.05, dims=None):
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    n = len(xy)
    labels = np.broadcast_to(labels, (n,))
    if dims is None:
        dims = [CAR_DIMS if label != PEDESTRIAN else PED_DIMS for label in labels]
    cov = np.tile(np.diag([sigma_m ** 2, sigma_m ** 2, yaw_sigma ** 2]), (n, 1, 1))
    return Detections(frame_id, xy, np.full(n, 0.75), np.broadcast_to(yaw, (n,)).astype(float),
                      np.asarray(dims, dtype=float).reshape(n, 3),
                      class_probs_from_labels(labels, np.full(n, 0.9)), cov, np.ones(n))


def _by_id(tracks):
    return {t.track_id: t for t in tracks.tracks()}


def test_constant_velocity_pedestrian_converges_to_true_velocity():
    rng = np.random.default_rng(1)
    tracker = Tracker()
    velocity = np.array([1.2, -0.6])
    estimates = []
    for k in range(80):
        t = 0.1 * k
        xy = np.array([3.0, 4.0]) + velocity * t + rng.normal(0.0, 0.15, 2)
        result = tracker.update(t, _dets(xy, rng.uniform(-3, 3), PEDESTRIAN, sigma_m=0.15))
        if k >= 40:
            estimates.append(result.tracks.velocity_map_mps[0])
    (track,) = result.tracks.tracks()
    assert track.label == PEDESTRIAN
    errors = np.hypot(*(np.array(estimates) - velocity).T)
    assert np.sqrt(np.mean(errors ** 2)) < 0.2 and errors.max() < 0.4
    # A walking pedestrian faces where it walks, whatever its (noisy) box yaw says.
    assert track.yaw_rad == pytest.approx(math.atan2(-0.6, 1.2), abs=0.3)
    assert track.velocity_object_mps[1] == pytest.approx(0.0, abs=1e-9)


def test_pedestrian_is_not_tied_to_its_heading():
    """A side-stepping pedestrian (box yaw 0, walking along y) gets its real velocity."""
    tracker = Tracker()
    for k in range(40):
        result = tracker.update(0.1 * k, _dets([0.0, 1.0 * 0.1 * k], 0.0, PEDESTRIAN, 0.05))
    assert np.allclose(result.tracks.velocity_map_mps[0], [0.0, 1.0], atol=0.1)


def test_turning_car_converges_to_true_speed_and_yaw_rate():
    rng = np.random.default_rng(2)
    tracker = Tracker()
    radius_m, speed_mps = 20.0, 8.0
    rate = speed_mps / radius_m
    speeds, rates = [], []
    for k in range(80):
        t = 0.1 * k
        angle = rate * t
        xy = radius_m * np.array([math.sin(angle), 1.0 - math.cos(angle)])
        result = tracker.update(t, _dets(xy + rng.normal(0, 0.2, 2),
                                         angle + rng.normal(0, 0.05), CAR))
        if k >= 40:
            (track,) = result.tracks.tracks()
            speeds.append(track.velocity_object_mps[0])
            rates.append(track.yaw_rate_rps)
    assert track.label == CAR
    assert np.mean(speeds) == pytest.approx(speed_mps, abs=0.2)
    assert np.max(np.abs(np.array(speeds) - speed_mps)) < 0.6
    assert np.mean(rates) == pytest.approx(rate, abs=0.05)
    assert abs(np.angle(np.exp(1j * (track.yaw_rad - rate * 7.9)))) < 0.1


def test_flipped_box_yaw_keeps_heading_and_forward_speed():
    tracker = Tracker()
    for k in range(40):
        yaw = math.pi if k % 4 == 2 else 0.0  # every fourth box points backwards
        result = tracker.update(0.1 * k, _dets([10.0 * 0.1 * k, 0.0], yaw, CAR, 0.1))
    (track,) = result.tracks.tracks()
    assert track.yaw_rad == pytest.approx(0.0, abs=0.05)
    assert track.velocity_object_mps[0] == pytest.approx(10.0, abs=0.3)


def test_crossing_targets_keep_their_ids():
    rng = np.random.default_rng(3)
    tracker = Tracker()
    before = after = None
    for k in range(60):
        t = 0.1 * k
        east = np.array([-30.0 + 10.0 * t, 0.0])    # crosses the origin at t = 3 s
        north = np.array([0.0, -24.0 + 8.0 * t])    # ... at the same time
        xy = np.stack([east, north]) + rng.normal(0, 0.2, (2, 2))
        tracks = tracker.update(t, _dets(xy, [0.0, math.pi / 2], CAR)).tracks
        if k in (20, 59):
            assert len(tracks) == 2
            # Which id is where: the track near each truth.
            ids = tuple(int(tracks.ids[np.argmin(np.hypot(*(tracks.xyz_m[:, :2] - p).T))])
                        for p in (east, north))
            if k == 20:
                before = ids
            else:
                after = ids
    assert before[0] != before[1]
    assert after == before


def test_isolated_false_positives_are_never_confirmed():
    rng = np.random.default_rng(4)
    tracker = Tracker()
    for k in range(100):
        # One ghost per frame, somewhere in a 100 m square: never twice in the same place.
        result = tracker.update(0.1 * k, _dets(rng.uniform(-50, 50, 2), 0.0, CAR))
        assert len(result.tracks) == 0
    assert tracker.num_tracks <= 2  # tentative ghosts are deleted, not collected


def test_a_second_box_inside_a_tracked_object_starts_no_track_but_a_neighbour_does():
    # The ONNX detector split a parked van into two overlapping boxes, the second 0.9 m to the
    # side with a flipped heading: it must not become a second (slow, "oncoming") vehicle.
    van = (7.5, 2.5, 2.8)
    tracker = Tracker()
    for k in range(10):
        tracker.update(0.1 * k, _dets([[50.0, 0.0]], 0.0, CAR, dims=[van]))
    (van_id,) = _by_id(tracker.output())
    for k in range(10, 30):
        result = tracker.update(0.1 * k, _dets([[50.0, 0.0], [49.6, 0.9], [50.0, 3.5]],
                                               [0.0, math.pi, 0.0], CAR,
                                               dims=[van, van, CAR_DIMS]))
    tracks = _by_id(result.tracks)
    assert len(tracks) == 2 and van_id in tracks           # the van, and the car beside it
    (other,) = set(tracks) - {van_id}
    assert tracks[other].y_m == pytest.approx(3.5, abs=0.2)


def test_missed_object_coasts_then_is_deleted():
    params = TrackerParams()
    tracker = Tracker(params)
    for k in range(20):
        result = tracker.update(0.1 * k, _dets([5.0 * 0.1 * k, 0.0], 0.0, CAR, 0.1))
    (track,) = result.tracks.tracks()
    last_x = track.x_m
    coasted = []
    for k in range(20, 60):
        result = tracker.update(0.1 * k, Detections.empty())
        coasted.append(len(result.tracks))
    assert coasted[0] == 1 and coasted[3] == 1  # coasts through a few misses ...
    assert coasted[-1] == 0                     # ... and is deleted
    assert sum(coasted) * 0.1 <= params.max_coast_confirmed_s + 1e-9
    # While coasting it was predicted forward.
    tracker2 = Tracker(params)
    for k in range(20):
        tracker2.update(0.1 * k, _dets([5.0 * 0.1 * k, 0.0], 0.0, CAR, 0.1))
    coast = tracker2.update(2.2, Detections.empty()).tracks.tracks()[0]
    assert coast.x_m == pytest.approx(last_x + 5.0 * 0.3, abs=0.3)
    assert tracker2.update(2.3, Detections.empty()).tracks.ids[0] == track.track_id


def _scene(k, rng):
    t = 0.1 * k
    xy = np.array([[10.0 * t, -1.75], [30.0 - 8.0 * t, 1.75], [5.0, 8.0 + 1.2 * t]])
    return _dets(xy + rng.normal(0, 0.2, (3, 2)), [0.0, math.pi, math.pi / 2],
                 [CAR, CAR, PEDESTRIAN])


def test_out_of_order_frames_give_the_in_order_result():
    rng = np.random.default_rng(5)
    frames = [(0.1 * k, _scene(k, rng)) for k in range(30)]
    in_order = Tracker()
    for t, dets in frames:
        expected = in_order.update(t, dets)
    shuffled = Tracker()
    order = list(range(30))
    order[20], order[21], order[22] = 22, 20, 21  # 20 and 21 arrive after 22
    late_results = []
    for k in order:
        result = shuffled.update(*frames[k])
        assert result.accepted
        late_results.append(result.is_latest)
    assert late_results.count(False) == 2
    assert shuffled.stats.late_inserted == 2
    got = shuffled.output()
    assert list(got.ids) == list(expected.tracks.ids)
    assert np.allclose(got.xyz_m, expected.tracks.xyz_m)
    assert np.allclose(got.velocity_map_mps, expected.tracks.velocity_map_mps)
    assert np.allclose(got.existence, expected.tracks.existence)


def test_too_late_and_duplicate_frames_are_rejected_and_counted():
    rng = np.random.default_rng(6)
    tracker = Tracker(TrackerParams(max_out_of_order_s=0.25))
    for k in range(10):
        tracker.update(0.1 * k, _scene(k, rng))
    before = tracker.output()
    too_late = tracker.update(0.5, _scene(5, rng))  # 0.4 s older than the newest
    assert not too_late.accepted and 'older than the newest' in too_late.reason
    duplicate = tracker.update(0.9, _scene(9, rng))
    assert not duplicate.accepted and 'duplicate' in duplicate.reason
    assert tracker.stats.late_dropped == 1 and tracker.stats.duplicate_stamps == 1
    after = tracker.output()
    assert np.array_equal(before.ids, after.ids) and np.allclose(before.xyz_m, after.xyz_m)
    nan_stamp = tracker.update(float('nan'), _scene(10, rng))
    assert not nan_stamp.accepted and tracker.stats.rejected_frames == 1


def test_non_finite_detections_are_dropped_and_covariances_defaulted():
    tracker = Tracker()
    for k in range(10):
        dets = _dets([[10.0, 0.0], [20.0, 5.0], [30.0, 0.0], [40.0, 0.0]], 0.0, CAR)
        xy, dims, cov = dets.xy_m.copy(), dets.dims_m.copy(), dets.covariance.copy()
        xy[1, 0] = np.nan         # dropped
        dims[2, 1] = np.inf       # dropped
        cov[3, 0, 0] = np.nan     # kept with the default covariance
        dets = dataclasses.replace(dets, xy_m=xy, dims_m=dims, covariance=cov)
        result = tracker.update(0.1 * k, dets)
        assert result.dropped_detections == 2 and result.defaulted_covariances == 1
    assert tracker.stats.nonfinite_detections == 20
    assert tracker.stats.default_covariances == 10
    assert sorted(np.round(result.tracks.xyz_m[:, 0])) == [10.0, 40.0]
    assert np.all(np.isfinite(result.tracks.pose_covariance))
    # All-NaN class probabilities become a uniform vote, not a crash.
    dets = _dets([[10.0, 0.0]], 0.0, CAR)
    dets = dataclasses.replace(dets, class_probs=np.full((1, 7), np.nan))
    assert tracker.update(1.0, dets).accepted
    assert tracker.stats.default_class_probs == 1


def test_malformed_detections_raise():
    with pytest.raises(ValueError, match='covariance'):
        Detections('map', np.zeros((2, 2)), np.zeros(2), np.zeros(2), np.ones((2, 3)),
                   np.ones((2, 7)) / 7, np.zeros((3, 3, 3)), np.ones(2))


def test_base_link_detections_are_compensated_with_the_ego_pose():
    tracker = Tracker()
    obstacle = np.array([50.0, 10.0])
    speed_mps, yaw0 = 10.0, 0.3
    for k in range(40):
        t = 0.1 * k
        ego = np.array([speed_mps * t * math.cos(yaw0), speed_mps * t * math.sin(yaw0), yaw0])
        # Odometry at 50 Hz: the detection stamp falls between two poses.
        for j in range(5):
            te = t - 0.02 * j + 0.01
            tracker.add_ego_pose(te, speed_mps * te * math.cos(yaw0),
                                 speed_mps * te * math.sin(yaw0), yaw0)
        c, s = math.cos(yaw0), math.sin(yaw0)
        rel = obstacle - ego[:2]
        local = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1]])
        result = tracker.update(t, _dets(local, -yaw0, CAR, frame_id='base_link'))
        assert result.accepted, result.reason
    (track,) = result.tracks.tracks()
    assert (track.x_m, track.y_m) == pytest.approx(tuple(obstacle), abs=0.05)
    assert track.speed_mps == pytest.approx(0.0, abs=0.1)
    assert track.yaw_rad == pytest.approx(0.0, abs=0.02)


def test_unknown_frame_and_missing_pose_are_rejected_with_a_reason():
    tracker = Tracker()
    result = tracker.update(0.0, _dets([1.0, 2.0], 0.0, CAR, frame_id='lidar_top'))
    assert not result.accepted and 'lidar_top' in result.reason
    result = tracker.update(0.1, _dets([1.0, 2.0], 0.0, CAR, frame_id='base_link'))
    assert not result.accepted and 'no ego pose' in result.reason
    assert tracker.stats.rejected_frames == 2
    # An empty base_link frame needs no pose.
    assert tracker.update(0.2, Detections.empty('base_link')).accepted


def test_pose_history_interpolates_across_the_yaw_wrap():
    history = PoseHistory(keep_s=1.0, max_extrapolation_s=0.05)
    assert history.add(1_000_000_000, 0.0, 0.0, math.pi - 0.1)
    assert history.add(1_100_000_000, 1.0, 2.0, -math.pi + 0.1)
    assert not history.add(1_200_000_000, float('nan'), 0.0, 0.0)
    x, y, yaw = history.at(1_050_000_000)
    assert (x, y) == pytest.approx((0.5, 1.0))
    assert abs(abs(yaw) - math.pi) < 1e-9
    assert history.at(1_140_000_000) is not None   # within the extrapolation limit
    assert history.at(1_200_000_000) is None
    assert history.at(900_000_000) is None


def test_detections_to_map_rotates_positions_yaws_and_covariances():
    dets = _dets([[1.0, 0.0]], 0.0, CAR)
    cov = np.diag([1.0, 0.01, 0.1])[None]
    dets = dataclasses.replace(dets, covariance=cov)
    out = detections_to_map(dets, (10.0, 5.0, math.pi / 2))
    assert out.frame_id == 'map'
    assert out.xy_m[0] == pytest.approx([10.0, 6.0])
    assert out.yaw_rad[0] == pytest.approx(math.pi / 2)
    assert np.diag(out.covariance[0]) == pytest.approx([0.01, 1.0, 0.1])


def test_ids_are_never_reused():
    tracker = Tracker()
    seen = []
    for episode in range(3):
        for k in range(10):
            t = episode * 5.0 + 0.1 * k
            result = tracker.update(t, _dets([episode * 100.0 + k, 0.0], 0.0, CAR))
        seen.append(set(int(i) for i in result.tracks.ids))
        for k in range(30):
            tracker.update(episode * 5.0 + 1.0 + 0.1 * k, Detections.empty())
    assert all(len(s) == 1 for s in seen)
    assert len(set.union(*seen)) == 3


def test_inconsistent_confirmation_parameters_are_rejected():
    with pytest.raises(ParameterError, match='confirm_hits'):
        TrackerParams(confirm_hits=5, confirm_window=3)
