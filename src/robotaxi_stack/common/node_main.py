"""The `main()` every spinning node shares: start, spin on one thread, shut down cleanly.

A start-up error of the expected kinds (a bad parameter, an unreadable map or vehicle file)
ends the process with exit code 2 and one message naming the node, as bringup expects.
"""

from __future__ import annotations

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def run_node(create: Callable[[], object], name: str,
             startup_errors: tuple[type[BaseException], ...], args=None) -> int:
    rclpy.init(args=args)
    try:
        node = create()
    except (KeyboardInterrupt, ExternalShutdownException):
        rclpy.try_shutdown()  # asked to stop while still starting: not an error
        return 0
    except startup_errors as error:
        message = str(error)
        print(message if message.startswith(f'{name}:') else f'{name}: {message}',
              file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
