"""Processing time statistics, health state and the /diagnostics publisher."""

import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray

from robotaxi_stack.common.diagnostics import (ERROR, OK, WARN, HealthState, NodeDiagnostics,
                                               ProcessingTimer)


def test_timer_statistics_over_window():
    timer = ProcessingTimer(window=100)
    for value in range(1, 101):
        timer.add(float(value), latency_ms=2.0 * value)
    stats = timer.processing_stats()
    assert stats['max_ms'] == 100.0 and 50.0 <= stats['p50_ms'] <= 51.0
    assert timer.latency_stats()['max_ms'] == 200.0 and timer.cycles == 100
    timer.add(1000.0)
    assert timer.processing_stats()['max_ms'] == 1000.0  # window slid; oldest dropped


def test_timer_measure_records_elapsed_time():
    timer = ProcessingTimer()
    with timer.measure():
        time.sleep(0.01)
    assert timer.cycles == 1 and timer.last_ms >= 9.0


def test_empty_timer_reports_nan_not_zero():
    stats = ProcessingTimer().processing_stats()
    assert stats['p50_ms'] != stats['p50_ms']


def test_health_is_worst_condition_and_clears_by_name():
    health = HealthState()
    assert health.level == OK and health.message == 'OK'
    health.set('lidar', WARN, 'stale 0.3 s')
    health.set('model', ERROR, 'inference failed')
    assert health.level == ERROR and health.message.startswith('model: inference failed')
    health.set('model', OK, '')
    assert health.level == WARN and 'lidar' in health.message
    with pytest.raises(ValueError):
        health.set('x', 7, 'bad level')


def test_node_diagnostics_publishes_status_with_processing_time():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node('diag_test', context=context)
        listener = rclpy.create_node('listener', context=context)
        got = []
        listener.create_subscription(DiagnosticArray, '/diagnostics', got.append, 10)
        diagnostics = NodeDiagnostics(node, period_s=0.05)
        diagnostics.timer.add(4.0)
        diagnostics.health.set('input', WARN, 'no lidar')
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(listener)
        deadline = time.monotonic() + 5.0
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert got, 'no DiagnosticArray received'
        status = got[0].status[0]
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == bytes([WARN]) and 'no lidar' in status.message
        assert status.name == '/diag_test' and float(values['processing_max_ms']) == 4.0
    finally:
        rclpy.shutdown(context=context)
