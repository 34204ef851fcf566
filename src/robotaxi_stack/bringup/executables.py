"""Executable name -> module with `main()`: the one list setup.py and bringup both read.

setup.py turns each into a console script in lib/robotaxi_stack (found by `ros2 run` and
`ros2 launch`); `robotaxi bringup` starts the module with this venv's interpreter.
"""

NODE_EXECUTABLES = {
    'health_monitor_node': 'robotaxi_stack.system.health_monitor_node',
    'simulator_node': 'robotaxi_stack.sim.simulator_node',
}
