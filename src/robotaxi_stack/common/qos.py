"""QoS profiles of the topic contract (ARCHITECTURE.md section 3).

sensor data: best effort, keep last 5 (a late frame is worthless, a blocked sender is worse);
objects/trajectory: reliable, keep last 5; control command: reliable, keep last 1 with a
deadline, so the vehicle interface is told when commands stop arriving; map and ride state:
reliable, transient local, so late joiners get the last value.
"""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

SENSOR_DEPTH = 5
OBJECTS_DEPTH = 5
DEFAULT_COMMAND_DEADLINE_S = 0.1


def sensor_qos(depth: int = SENSOR_DEPTH) -> QoSProfile:
    """Point clouds, images, odometry and vehicle status."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def sensor_input_qos(reliable: bool, depth: int = 50) -> QoSProfile:
    """Subscription to sensor-rate inputs: best effort as on a vehicle, or reliable for the
    simulator's recording mode, where a lock-stepped consumer must not miss a tick (a reliable
    subscription only matches reliable publishers)."""
    if not reliable:
        return sensor_qos()
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def objects_qos(depth: int = OBJECTS_DEPTH) -> QoSProfile:
    """Objects, tracks, predictions, trajectories and diagnostics."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def command_qos(deadline_s: float = DEFAULT_COMMAND_DEADLINE_S) -> QoSProfile:
    """Control commands: only the newest matters, and its absence must be noticed."""
    if not deadline_s > 0.0:
        raise ValueError(f'command deadline_s = {deadline_s!r}: must be > 0')
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE,
                      deadline=Duration(nanoseconds=int(deadline_s * 1e9)))


def state_qos(depth: int = 1) -> QoSProfile:
    """Map, ride requests and mission state: late joiners receive the last value."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def clock_qos() -> QoSProfile:
    """/clock as rclpy's TimeSource subscribes to it (reliable would also match)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


# Contract topic -> QoS factory, used by the recorder, the player and bringup checks.
TOPIC_QOS = {
    '/sensing/lidar/points': sensor_qos,
    '/sensing/camera/front/image_raw': sensor_qos,
    '/sensing/camera/front/camera_info': sensor_qos,
    '/localization/kinematic_state': sensor_qos,
    '/vehicle/status': sensor_qos,
    '/perception/lidar/objects': objects_qos,
    '/perception/objects': objects_qos,
    '/perception/camera/detections': objects_qos,
    '/perception/tracked_objects': objects_qos,
    '/prediction/objects': objects_qos,
    '/planning/ride_request': state_qos,
    '/planning/mission_status': state_qos,
    '/planning/trajectory': objects_qos,
    '/control/command': command_qos,
    '/vehicle/command': command_qos,
    '/system/mrm_state': objects_qos,
    '/diagnostics': objects_qos,
    '/sim/ground_truth/objects': objects_qos,
    '/clock': clock_qos,
}


def qos_for_topic(topic: str) -> QoSProfile:
    """The contract QoS of a topic; reliable keep-last 5 for topics outside the contract."""
    return TOPIC_QOS.get(topic, objects_qos)()
