"""Planning messages <-> numpy / dataclasses (the only planning module that knows msgs)."""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Duration

from robotaxi_msgs.msg import ControlCommand, Trajectory, TrajectoryPoint
from robotaxi_stack.common.geometry import yaw_to_quaternion
from robotaxi_stack.planning import behavior as bh
from robotaxi_stack.planning.planner import Command, EgoInput, PlanOutput


def quaternion_yaw(q) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def ego_from_odometry(odometry, steer_rad: float) -> EgoInput:
    pose = odometry.pose.pose
    return EgoInput(pose.position.x, pose.position.y, quaternion_yaw(pose.orientation),
                    odometry.twist.twist.linear.x, steer_rad)


def _label(obj) -> int:
    if not obj.classification:
        return bh.UNKNOWN
    best = max(obj.classification, key=lambda c: c.probability)
    return int(best.label)


def objects_from_tracked(msg, age_s: float, pred_t_s: np.ndarray) -> tuple[bh.Objects, int]:
    """TrackedObjects (ground truth or tracker) -> Objects predicted at constant velocity,
    advanced by `age_s` (message stamp to now). Returns (objects, rows dropped as non-finite)."""
    rows = [_object_row(obj, obj.has_twist) for obj in msg.objects]
    return _constant_velocity(rows, age_s, pred_t_s)


def _object_row(obj, has_twist: bool) -> tuple:
    """(id, label, x, y, yaw, vx, vy, length, width) in map; the message's twist is in the
    object frame (x along its heading)."""
    pose = obj.pose.pose
    yaw = quaternion_yaw(pose.orientation)
    vx_obj, vy_obj = (obj.twist.twist.linear.x, obj.twist.twist.linear.y) if has_twist \
        else (0.0, 0.0)
    c, s = math.cos(yaw), math.sin(yaw)
    return (obj.object_id, _label(obj), pose.position.x, pose.position.y, yaw,
            c * vx_obj - s * vy_obj, s * vx_obj + c * vy_obj, obj.dimensions.x,
            obj.dimensions.y)


def _constant_velocity(rows, age_s, pred_t_s):
    objects, kept = _constant_velocity_kept(rows, age_s, pred_t_s)
    return objects, len(rows) - len(kept)


def _constant_velocity_kept(rows, age_s, pred_t_s):
    """(Objects at constant velocity, indices of the rows kept: finite, positive size)."""
    if not rows:
        return bh.Objects.empty(pred_t_s), np.zeros(0, dtype=np.int64)
    table = np.array([r[2:] for r in rows], dtype=float)
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    labels = np.array([r[1] for r in rows], dtype=np.int64)
    finite = np.all(np.isfinite(table), axis=1) & (table[:, 5] > 0) & (table[:, 6] > 0)
    table, ids, labels = table[finite], ids[finite], labels[finite]
    xy = table[:, 0:2] + table[:, 3:5] * age_s
    objects = bh.constant_velocity_objects(ids, labels, xy, table[:, 2], table[:, 3:5],
                                           table[:, 5], table[:, 6], pred_t_s)
    return objects, np.flatnonzero(finite)


def objects_from_predicted(msg, age_s: float, pred_t_s: np.ndarray) -> tuple[bh.Objects, int]:
    """PredictedObjects -> Objects following each object's most likely path (sampled at
    pred_t_s + age_s; path[k] is at (k + 1) * time_step after the stamp, the object's pose at
    0); objects without paths hold their velocity. Non-finite rows dropped."""
    rows, paths = [], []
    for obj in msg.objects:
        rows.append(_object_row(obj, True))  # PredictedObject has no has_twist flag
        best = max(obj.paths, key=lambda p: p.confidence) if obj.paths else None
        if best is None or not best.path:
            paths.append(None)
            continue
        step = best.time_step.sec + best.time_step.nanosec * 1e-9
        xy = np.array([[p.position.x, p.position.y] for p in best.path], dtype=float)
        paths.append((step, xy))
    objects, kept = _constant_velocity_kept(rows, age_s, pred_t_s)
    dropped = len(rows) - len(kept)
    pred = objects.pred_xy_m.copy()
    for k, row in enumerate(kept):
        entry = paths[row]
        if entry is None or not entry[0] > 0.0 or not np.all(np.isfinite(entry[1])):
            continue
        step, xy = entry
        # path[k] is at (k + 1) * step; the object's own pose is the t = 0 point.
        xy = np.vstack((objects.xy_m[k] - objects.velocity_mps[k] * age_s, xy))
        t_path = np.arange(len(xy)) * step
        t = pred_t_s + age_s
        pred[k, :, 0] = np.interp(t, t_path, xy[:, 0])
        pred[k, :, 1] = np.interp(t, t_path, xy[:, 1])
    return bh.Objects(objects.ids, objects.labels, pred[:, 0, :].copy(), objects.yaw_rad,
                      objects.velocity_mps, objects.length_m, objects.width_m, pred_t_s,
                      pred), dropped


def _duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def trajectory_msg(plan: PlanOutput, stamp, frame_id: str = 'map') -> Trajectory:
    msg = Trajectory()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    q = yaw_to_quaternion(np.asarray(plan.yaw_rad))
    q = np.asarray(q).reshape(-1, 4)
    for k in range(len(plan.t_s)):
        point = TrajectoryPoint()
        point.time_from_start = _duration(float(plan.t_s[k]))
        point.pose.position.x = float(plan.x_m[k])
        point.pose.position.y = float(plan.y_m[k])
        point.pose.orientation.x, point.pose.orientation.y = float(q[k, 0]), float(q[k, 1])
        point.pose.orientation.z, point.pose.orientation.w = float(q[k, 2]), float(q[k, 3])
        point.longitudinal_velocity_mps = float(plan.v_mps[k])
        point.acceleration_mps2 = float(plan.accel_mps2[k])
        point.front_wheel_angle_rad = float(plan.steer_rad[k])
        point.heading_rate_rps = float(plan.yaw_rate_rps[k])
        msg.points.append(point)
    return msg


def command_msg(command: Command, stamp) -> ControlCommand:
    msg = ControlCommand()
    msg.header.stamp = stamp
    msg.header.frame_id = 'base_link'
    msg.steering_angle_rad = command.steering_angle_rad
    msg.steering_rate_rps = command.steering_rate_rps
    msg.velocity_mps = command.velocity_mps
    msg.acceleration_mps2 = command.acceleration_mps2
    msg.jerk_mps3 = command.jerk_mps3
    return msg
