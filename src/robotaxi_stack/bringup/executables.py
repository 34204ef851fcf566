"""Executable name -> module with `main()`: the one list setup.py and bringup both read.

setup.py turns each into a console script in lib/robotaxi_stack (found by `ros2 run` and
`ros2 launch`); `robotaxi bringup` starts the module with this venv's interpreter.
"""

NODE_EXECUTABLES = {
    'camera_detector_node': 'robotaxi_stack.perception.camera_detector_node',
    'fusion_node': 'robotaxi_stack.perception.fusion_node',
    'health_monitor_node': 'robotaxi_stack.system.health_monitor_node',
    'lidar_detector_node': 'robotaxi_stack.perception.lidar_detector_node',
    'lidar_obstacle_node': 'robotaxi_stack.perception.lidar_obstacle_node',
    'simulator_node': 'robotaxi_stack.sim.simulator_node',
    'mission_node': 'robotaxi_stack.planning.mission_node',
    'mpc_planner_node': 'robotaxi_stack.planning.mpc_planner_node',
    'prediction_node': 'robotaxi_stack.prediction.prediction_node',
    'tracking_node': 'robotaxi_stack.tracking.tracking_node',
    'vehicle_interface_node': 'robotaxi_stack.vehicle.vehicle_interface_node',
}
