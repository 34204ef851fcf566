"""health_monitor_node: /diagnostics of every node -> ~/output/health (DiagnosticArray).

The output carries one status per node plus an overall `robotaxi/health` status first; it is
published at `publish_rate_hz` and immediately when the overall level changes.
"""

from __future__ import annotations

import sys

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from robotaxi_stack.common.diagnostics import NodeDiagnostics
from robotaxi_stack.common.params import ParameterError, declare_node_parameters
from robotaxi_stack.common.qos import objects_qos
from robotaxi_stack.common.node_main import run_node
from robotaxi_stack.system.health_monitor import HealthMonitor, HealthMonitorParams


class HealthMonitorNode(Node):
    def __init__(self, **kwargs):
        super().__init__('health_monitor', **kwargs)
        self.params = declare_node_parameters(self, HealthMonitorParams)
        self.monitor = HealthMonitor(self.params)
        self.diagnostics = NodeDiagnostics(self)
        self._last_level = None
        self._publisher = self.create_publisher(DiagnosticArray, '~/output/health', objects_qos())
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                 objects_qos(depth=50))
        self.create_timer(1.0 / self.params.publish_rate_hz, self._publish)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        now_ns = self.get_clock().now().nanoseconds
        for status in msg.status:
            if status.name == self.get_fully_qualified_name():
                continue
            level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
            self.monitor.report(status.name, level, status.message, now_ns)
        if self.monitor.verdict(now_ns).level != self._last_level:
            self._publish()

    def _publish(self) -> None:
        with self.diagnostics.timer.measure():
            verdict = self.monitor.verdict(self.get_clock().now().nanoseconds)
            array = DiagnosticArray()
            array.header.stamp = self.get_clock().now().to_msg()
            array.status.append(DiagnosticStatus(
                level=bytes([verdict.level]), name='robotaxi/health', message=verdict.summary,
                values=[KeyValue(key='nodes', value=str(len(verdict.nodes)))]))
            for node in verdict.nodes:
                array.status.append(DiagnosticStatus(level=bytes([node.level]), name=node.name,
                                                     message=node.message))
            self._publisher.publish(array)
            self._last_level = verdict.level


def main(args=None) -> int:
    return run_node(HealthMonitorNode, 'health_monitor', (ParameterError,), args)


if __name__ == '__main__':
    sys.exit(main())
