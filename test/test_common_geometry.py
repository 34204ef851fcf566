"""SE(2)/SE(3) helpers."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robotaxi_stack.common import geometry as g

angles = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)
coords = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)


def test_wrap_angle_maps_into_half_open_interval():
    wrapped = g.wrap_angle(np.array([np.pi, -np.pi, 3 * np.pi, 0.5, -7.0]))
    assert np.all(wrapped >= -np.pi) and np.all(wrapped < np.pi)
    np.testing.assert_allclose(np.cos(wrapped), np.cos([np.pi, -np.pi, 3 * np.pi, 0.5, -7.0]))


@given(angles)
def test_yaw_quaternion_round_trip(yaw):
    back = g.quaternion_to_yaw(g.yaw_to_quaternion(yaw))
    assert abs(g.wrap_angle(back - yaw)) < 1e-9


@settings(max_examples=50)
@given(angles, st.floats(-1.5, 1.5), angles)
def test_matrix_quaternion_round_trip(roll, pitch, yaw):
    rotation = g.rpy_to_matrix(roll, pitch, yaw)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(g.quaternion_to_matrix(g.matrix_to_quaternion(rotation)),
                               rotation, atol=1e-9)


def test_yaw_only_quaternion_matches_rpy_matrix():
    np.testing.assert_allclose(g.quaternion_to_matrix(g.yaw_to_quaternion(0.7)),
                               g.rpy_to_matrix(0, 0, 0.7), atol=1e-12)


def test_transform_and_inverse_compose_to_identity():
    t = g.transform_from_xyzrpy(1.0, -2.0, 3.0, 0.1, -0.2, 1.3)
    np.testing.assert_allclose(t @ g.invert_transform(t), np.eye(4), atol=1e-12)
    points = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    moved = g.transform_points(g.transform_from_xyzrpy(1, 2, 3, 0, 0, np.pi / 2), points)
    np.testing.assert_allclose(moved, [[1.0, 3.0, 3.0], [1.0, 2.0, 3.0]], atol=1e-12)


@given(coords, coords, angles, coords, coords, angles)
def test_se2_compose_with_inverse_is_identity(x, y, yaw, bx, by, byaw):
    a = np.array([x, y, yaw])
    np.testing.assert_allclose(g.se2_compose(a, g.se2_inverse(a)), [0, 0, 0], atol=1e-6)
    composed = g.se2_compose(a, [bx, by, byaw])
    via_points = g.se2_transform_points(a, np.array([[bx, by]]))[0]
    np.testing.assert_allclose(composed[:2], via_points, atol=1e-6)


def test_se2_matches_se3_in_plane():
    pose = (3.0, -1.0, 0.4)
    p2 = g.se2_transform_points(pose, np.array([[1.0, 2.0]]))
    p3 = g.transform_points(g.se2_to_matrix(pose), np.array([[1.0, 2.0, 0.0]]))
    np.testing.assert_allclose(p2[0], p3[0, :2], atol=1e-12)


@pytest.mark.parametrize('call', [
    lambda: g.quaternion_to_yaw([0.0, 0.0, np.nan, 1.0]),
    lambda: g.quaternion_to_matrix([0.0, 0.0, 0.0, 0.0]),
    lambda: g.transform_points(np.eye(4), np.zeros((3, 2))),
    lambda: g.se2_transform_points((0.0, np.inf, 0.0), np.zeros((1, 2))),
    lambda: g.transform_matrix((0.0, 0.0, np.nan), np.eye(3)),
])
def test_bad_geometry_raises_geometry_error(call):
    with pytest.raises(g.GeometryError):
        call()


def test_points_in_bev_boxes_follows_the_box_yaw_and_counts_edges_as_inside():
    boxes = np.array([[10.0, 0.0, np.pi / 2, 4.0, 2.0],   # 4 m long along +y, 2 m wide
                      [0.0, 0.0, 0.0, 2.0, 2.0]])
    points = np.array([[10.0, 1.9], [11.1, 0.0], [10.0, 2.0], [1.0, 1.0], [5.0, 5.0]])
    assert g.points_in_bev_boxes(points, boxes).tolist() == [
        [True, False], [False, False], [True, False], [False, True], [False, False]]
    assert g.points_in_bev_boxes(np.zeros((0, 2)), boxes).shape == (0, 2)
    assert g.points_in_bev_boxes(points, np.zeros((0, 5))).shape == (5, 0)
