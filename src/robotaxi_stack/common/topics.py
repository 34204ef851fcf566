"""The contract topics of ARCHITECTURE.md section 3: name -> ROS type name.

One table serves bringup (remaps), the recorder (what to record) and the scenario runner.
"""

CONTRACT_TOPICS = {
    '/sensing/lidar/points': 'sensor_msgs/msg/PointCloud2',
    '/sensing/camera/front/image_raw': 'sensor_msgs/msg/Image',
    '/sensing/camera/front/camera_info': 'sensor_msgs/msg/CameraInfo',
    '/localization/kinematic_state': 'nav_msgs/msg/Odometry',
    '/vehicle/status': 'robotaxi_msgs/msg/VehicleStatus',
    '/perception/lidar/objects': 'robotaxi_msgs/msg/DetectedObjects',
    '/perception/objects': 'robotaxi_msgs/msg/DetectedObjects',
    '/perception/camera/detections': 'robotaxi_msgs/msg/Detections2D',
    '/perception/tracked_objects': 'robotaxi_msgs/msg/TrackedObjects',
    '/prediction/objects': 'robotaxi_msgs/msg/PredictedObjects',
    '/planning/ride_request': 'robotaxi_msgs/msg/RideRequest',
    '/planning/mission_status': 'robotaxi_msgs/msg/MissionStatus',
    '/planning/trajectory': 'robotaxi_msgs/msg/Trajectory',
    '/control/command': 'robotaxi_msgs/msg/ControlCommand',
    '/vehicle/command': 'robotaxi_msgs/msg/ControlCommand',
    '/system/mrm_state': 'robotaxi_msgs/msg/MrmState',
    '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
    '/sim/ground_truth/objects': 'robotaxi_msgs/msg/TrackedObjects',
    '/clock': 'rosgraph_msgs/msg/Clock',
}
