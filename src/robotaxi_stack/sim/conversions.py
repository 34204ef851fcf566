"""Simulator state <-> ROS messages (the only sim module that imports *_msgs)."""

from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Quaternion
from nav_msgs.msg import Odometry as OdometryMsg
from sensor_msgs.msg import CameraInfo

from robotaxi_msgs.msg import ObjectClass, TrackedObject, TrackedObjects, VehicleStatus
from robotaxi_stack.sim.actors import ActorSnapshot
from robotaxi_stack.sim.vehicle_dynamics import EgoState, Gear
from robotaxi_stack.sim.world import Odometry

_GEAR = {Gear.DRIVE: VehicleStatus.GEAR_DRIVE, Gear.REVERSE: VehicleStatus.GEAR_REVERSE,
         Gear.PARK: VehicleStatus.GEAR_PARK, Gear.NEUTRAL: VehicleStatus.GEAR_NEUTRAL}


def yaw_quaternion(yaw_rad: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(0.5 * yaw_rad), w=math.cos(0.5 * yaw_rad))


def odometry_msg(odom: Odometry, stamp) -> OdometryMsg:
    """Localisation output: pose of base_link in map, twist in base_link."""
    msg = OdometryMsg()
    msg.header.stamp = stamp
    msg.header.frame_id = 'map'
    msg.child_frame_id = 'base_link'
    msg.pose.pose.position.x = odom.x_m
    msg.pose.pose.position.y = odom.y_m
    msg.pose.pose.orientation = yaw_quaternion(odom.yaw_rad)
    position_var = max(odom.position_sigma_m, 1e-3) ** 2
    yaw_var = max(odom.yaw_sigma_rad, 1e-4) ** 2
    covariance = np.zeros(36)
    covariance[[0, 7]] = position_var
    covariance[[14, 21, 28]] = 1e-4
    covariance[35] = yaw_var
    msg.pose.covariance = covariance
    msg.twist.twist.linear.x = odom.speed_mps
    msg.twist.twist.linear.y = odom.lateral_speed_mps
    msg.twist.twist.angular.z = odom.yaw_rate_rps
    twist_covariance = np.zeros(36)
    twist_covariance[[0, 7, 14, 21, 28, 35]] = 1e-4
    msg.twist.covariance = twist_covariance
    return msg


def vehicle_status_msg(state: EgoState, stamp, control_mode: int) -> VehicleStatus:
    msg = VehicleStatus(velocity_mps=float(state.speed_mps),
                        steering_angle_rad=float(state.steer_rad),
                        gear=_GEAR.get(state.gear, VehicleStatus.GEAR_NEUTRAL),
                        control_mode=control_mode)
    msg.header.stamp = stamp
    msg.header.frame_id = 'base_link'
    return msg


def ground_truth_msg(snapshot: ActorSnapshot, stamp) -> TrackedObjects:
    """Every actor as a TrackedObject (id = index + 1, stable for the run), map frame."""
    msg = TrackedObjects()
    msg.header.stamp = stamp
    msg.header.frame_id = 'map'
    for index, box in enumerate(snapshot.boxes):
        obj = TrackedObject(object_id=index + 1, existence_probability=1.0, has_twist=True)
        obj.classification.append(ObjectClass(label=int(snapshot.labels[index]),
                                              probability=1.0))
        obj.pose.pose.position.x = float(box[0])
        obj.pose.pose.position.y = float(box[1])
        obj.pose.pose.position.z = float(box[2])
        obj.pose.pose.orientation = yaw_quaternion(float(box[3]))
        obj.dimensions.x, obj.dimensions.y, obj.dimensions.z = (float(v) for v in box[4:7])
        # Twist in the object frame (x along its heading), as Autoware's objects carry it.
        vx, vy = snapshot.velocities_mps[index]
        cos_yaw, sin_yaw = math.cos(box[3]), math.sin(box[3])
        obj.twist.twist.linear.x = float(cos_yaw * vx + sin_yaw * vy)
        obj.twist.twist.linear.y = float(-sin_yaw * vx + cos_yaw * vy)
        msg.objects.append(obj)
    return msg


def camera_info_msg(info: dict, stamp, frame_id: str) -> CameraInfo:
    msg = CameraInfo(**info)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg
