"""Test-wide set-up: isolate each test process's DDS traffic (ARCHITECTURE.md section 8)."""

import os
import sys

# A domain id per test process and localhost-only discovery, so parallel runs never hear each
# other. Must be set before rclpy is imported anywhere. Domain ids 0..101 are valid with
# Fast DDS' default port mapping; pid-derived ids rarely collide, and never within one process.
os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')

# When run straight from a checkout (not through colcon test), import the source tree.
_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'src')
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
