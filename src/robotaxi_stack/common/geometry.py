"""SE(2) and SE(3) helpers on numpy arrays (pure: no ROS types).

Conventions: right-handed frames, yaw about +z, angles in radians; quaternions are (x, y, z, w)
as in geometry_msgs; an SE(2) pose is (x_m, y_m, yaw_rad); SE(3) transforms are 4x4 matrices.
All functions are vectorised over leading dimensions where the docstring says (..., k).
"""

from __future__ import annotations

import numpy as np


class GeometryError(ValueError):
    """Non-finite or malformed geometric input."""


def _finite(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise GeometryError(f'{name} contains NaN or inf')
    return array


def wrap_angle(angle_rad):
    """Wrap angles to [-pi, pi). Works on scalars and arrays."""
    return (np.asarray(angle_rad) + np.pi) % (2.0 * np.pi) - np.pi


def yaw_to_quaternion(yaw_rad):
    """(...,) yaw -> (..., 4) quaternion (x, y, z, w) of a rotation about +z."""
    half = 0.5 * np.asarray(yaw_rad, dtype=np.float64)
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], axis=-1)


def quaternion_to_yaw(quaternion_xyzw):
    """(..., 4) quaternion (x, y, z, w) -> (...,) yaw in radians (z-y-x convention)."""
    q = _finite('quaternion', quaternion_xyzw)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def rpy_to_matrix(roll_rad: float, pitch_rad: float, yaw_rad: float) -> np.ndarray:
    """Rotation matrix R = Rz(yaw) Ry(pitch) Rx(roll) (the URDF/ROS fixed-axis convention)."""
    cr, sr = np.cos(roll_rad), np.sin(roll_rad)
    cp, sp = np.cos(pitch_rad), np.sin(pitch_rad)
    cy, sy = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def quaternion_to_matrix(quaternion_xyzw) -> np.ndarray:
    """(4,) quaternion (x, y, z, w), normalised here -> 3x3 rotation matrix."""
    q = _finite('quaternion', quaternion_xyzw)
    norm = np.linalg.norm(q)
    if norm < 1e-9:
        raise GeometryError('quaternion has zero norm')
    x, y, z, w = q / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> (4,) quaternion (x, y, z, w) with w >= 0."""
    r = _finite('rotation', rotation)
    trace = np.trace(r)
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s,
                      (r[1, 0] - r[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
        q[3] = (r[k, j] - r[j, k]) / s
    return q if q[3] >= 0.0 else -q


def transform_matrix(translation_m, rotation) -> np.ndarray:
    """4x4 homogeneous transform from a translation (3,) and a 3x3 rotation."""
    t = np.eye(4)
    t[:3, :3] = _finite('rotation', rotation)
    t[:3, 3] = _finite('translation', translation_m)
    return t


def transform_from_xyzrpy(x, y, z, roll, pitch, yaw) -> np.ndarray:
    """4x4 transform of a pose given as (x, y, z) metres and roll/pitch/yaw radians."""
    return transform_matrix((x, y, z), rpy_to_matrix(roll, pitch, yaw))


def invert_transform(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (uses R^T, no general matrix inverse)."""
    t = _finite('transform', transform)
    inverse = np.eye(4)
    inverse[:3, :3] = t[:3, :3].T
    inverse[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return inverse


def transform_points(transform: np.ndarray, points_m: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (N, 3) points; returns a new (N, 3) float64 array."""
    points = np.asarray(points_m)
    if points.ndim != 2 or points.shape[1] != 3:
        raise GeometryError(f'points must have shape (N, 3), got {points.shape}')
    t = np.asarray(transform, dtype=np.float64)
    return points @ t[:3, :3].T + t[:3, 3]


def se2_compose(a, b):
    """Pose composition a * b of (..., 3) SE(2) poses (x, y, yaw): b expressed in a's frame."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos_a, sin_a = np.cos(a[..., 2]), np.sin(a[..., 2])
    x = a[..., 0] + cos_a * b[..., 0] - sin_a * b[..., 1]
    y = a[..., 1] + sin_a * b[..., 0] + cos_a * b[..., 1]
    return np.stack([x, y, wrap_angle(a[..., 2] + b[..., 2])], axis=-1)


def se2_inverse(pose):
    """Inverse of (..., 3) SE(2) poses."""
    p = np.asarray(pose, dtype=np.float64)
    cos_p, sin_p = np.cos(p[..., 2]), np.sin(p[..., 2])
    x = -cos_p * p[..., 0] - sin_p * p[..., 1]
    y = sin_p * p[..., 0] - cos_p * p[..., 1]
    return np.stack([x, y, wrap_angle(-p[..., 2])], axis=-1)


def se2_transform_points(pose, points_xy: np.ndarray) -> np.ndarray:
    """Points (N, 2) given in the frame of `pose` (x, y, yaw) -> parent frame (N, 2)."""
    x, y, yaw = (float(v) for v in _finite('pose', pose))
    points = np.asarray(points_xy, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise GeometryError(f'points must have shape (N, 2), got {points.shape}')
    cos_y, sin_y = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[cos_y, -sin_y], [sin_y, cos_y]])
    return points @ rotation.T + np.array([x, y])


def points_in_bev_boxes(points_xy: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K, M) whether point k (K, 2) lies inside BEV box m (M, >=5 [x, y, yaw, length,
    width]); edges count as inside."""
    rel = points_xy[:, None, :] - boxes[None, :, :2]
    cos_m, sin_m = np.cos(boxes[:, 2]), np.sin(boxes[:, 2])
    along = rel[..., 0] * cos_m + rel[..., 1] * sin_m
    across = rel[..., 1] * cos_m - rel[..., 0] * sin_m
    return (np.abs(along) <= 0.5 * boxes[:, 3]) & (np.abs(across) <= 0.5 * boxes[:, 4])


def se2_to_matrix(pose) -> np.ndarray:
    """(x, y, yaw) -> 4x4 transform in the z = 0 plane."""
    x, y, yaw = (float(v) for v in _finite('pose', pose))
    return transform_from_xyzrpy(x, y, 0.0, 0.0, 0.0, yaw)
