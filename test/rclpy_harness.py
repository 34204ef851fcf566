"""Shared rclpy set-up for the in-process node tests: a node under test, a peer, an executor."""

import contextlib
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor


def spin_until(executor, condition, timeout_s=10.0, step_s=0.02):
    """Spin until condition() holds or timeout_s passes; return condition()."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition():
        # spin_once returns as soon as a callback ran: step_s only bounds an idle wait.
        executor.spin_once(timeout_sec=step_s)
    return condition()


@contextlib.contextmanager
def node_graph(make_node, peer_name='peer'):
    """Yield (node, peer, executor) in a context of their own, shut down on exit.

    make_node(context) builds the node under test; peer_name=None leaves out the peer (None).
    """
    # A context of its own, so no node, subscription or pending message outlives the test.
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = make_node(context)
        peer = None if peer_name is None else rclpy.create_node(peer_name, context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        if peer is not None:
            executor.add_node(peer)
        yield node, peer, executor
    finally:
        # Also when make_node or the test raised: a live context keeps its DDS threads.
        rclpy.shutdown(context=context)
