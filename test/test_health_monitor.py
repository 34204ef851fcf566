"""Health monitor: aggregation core and the node on real /diagnostics traffic."""

import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter

from robotaxi_stack.common.diagnostics import ERROR, OK, STALE, WARN
from robotaxi_stack.system.health_monitor import HealthMonitor, HealthMonitorParams
from robotaxi_stack.system.health_monitor_node import HealthMonitorNode

S = 1_000_000_000


def test_expected_node_that_never_reports_is_stale():
    monitor = HealthMonitor(HealthMonitorParams(expected_nodes=('planner',)))
    verdict = monitor.verdict(10 * S)
    assert verdict.level == STALE and verdict.nodes[0].message == 'never reported'


def test_worst_level_wins_and_silence_becomes_stale():
    monitor = HealthMonitor(HealthMonitorParams(stale_timeout_s=2.0))
    monitor.report('/a', OK, 'fine', 1 * S)
    monitor.report('/b', WARN, 'slow', 1 * S)
    assert monitor.verdict(2 * S).level == WARN
    monitor.report('/b', OK, 'fine', 4 * S)
    verdict = monitor.verdict(4 * S)
    assert verdict.level == STALE and 'a: STALE (silent for 3.0 s)' in verdict.summary


def test_garbled_level_counts_as_error():
    monitor = HealthMonitor(HealthMonitorParams())
    monitor.report('/a', 42, 'weird', 1 * S)
    assert monitor.verdict(1 * S).level == ERROR


def test_node_aggregates_diagnostics_into_health_topic():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = HealthMonitorNode(context=context, parameter_overrides=[
            Parameter('expected_nodes', value=['planner']),
            Parameter('publish_rate_hz', value=20.0)])
        peer = rclpy.create_node('peer', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(peer)
        health = []
        peer.create_subscription(DiagnosticArray, '/health_monitor/output/health', health.append,
                                 10)
        pub = peer.create_publisher(DiagnosticArray, '/diagnostics', 10)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not (health and health[-1].status[0].level
                                                   == bytes([ERROR])):
            pub.publish(DiagnosticArray(status=[
                DiagnosticStatus(level=bytes([OK]), name='/planner', message='ok'),
                DiagnosticStatus(level=bytes([ERROR]), name='/perception', message='no model')]))
            executor.spin_once(timeout_sec=0.05)
        overall = health[-1].status[0]
        assert overall.name == 'robotaxi/health' and overall.level == bytes([ERROR])
        assert 'perception: ERROR (no model)' in overall.message
        assert {s.name for s in health[-1].status[1:]} == {'planner', 'perception'}
    finally:
        rclpy.shutdown(context=context)
