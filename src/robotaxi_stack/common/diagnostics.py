"""Processing-time measurement and health reporting that every node uses.

`ProcessingTimer` (pure) keeps a rolling window of per-cycle processing times and sensor-to-
output latencies; `HealthState` (pure) holds the node's level and message plus key values;
`NodeDiagnostics` (rclpy, imported lazily) publishes both to /diagnostics at a fixed period,
the way Autoware nodes report processing time and health.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: 'OK', WARN: 'WARN', ERROR: 'ERROR', STALE: 'STALE'}


class ProcessingTimer:
    """Rolling statistics of processing time (wall clock) and latency (stamp to output).

    Use as `with timer.measure(): ...` around one cycle, or call `add(ms)` directly.
    """

    def __init__(self, window: int = 200):
        if window < 1:
            raise ValueError(f'window = {window}: must be >= 1')
        self._processing_ms: collections.deque[float] = collections.deque(maxlen=window)
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.cycles = 0
        self.last_ms = float('nan')

    def add(self, processing_ms: float, latency_ms: float | None = None) -> None:
        self._processing_ms.append(float(processing_ms))
        if latency_ms is not None:
            self._latency_ms.append(float(latency_ms))
        self.cycles += 1
        self.last_ms = float(processing_ms)

    class _Measurement:
        def __init__(self, timer: 'ProcessingTimer'):
            self._timer = timer

        def __enter__(self):
            self._start = time.perf_counter()
            return self

        def __exit__(self, *exc):
            self._timer.add((time.perf_counter() - self._start) * 1e3)
            return False

    def measure(self) -> '_Measurement':
        return ProcessingTimer._Measurement(self)

    @staticmethod
    def _stats(values) -> dict[str, float]:
        if not values:
            return {'p50_ms': float('nan'), 'p99_ms': float('nan'), 'max_ms': float('nan')}
        array = np.fromiter(values, dtype=np.float64)
        p50, p99 = np.percentile(array, [50.0, 99.0])
        return {'p50_ms': float(p50), 'p99_ms': float(p99), 'max_ms': float(array.max())}

    def processing_stats(self) -> dict[str, float]:
        return self._stats(self._processing_ms)

    def latency_stats(self) -> dict[str, float]:
        return self._stats(self._latency_ms)


class HealthState:
    """The node's current health: worst level of the named conditions it reports.

    Conditions are set and cleared by name (`set('input', WARN, 'lidar stale')`), so a recovered
    input clears its own warning without hiding another one.
    """

    def __init__(self):
        self._conditions: dict[str, tuple[int, str]] = {}
        self.values: dict[str, str] = {}

    def set(self, name: str, level: int, message: str) -> None:
        if level not in LEVEL_NAMES:
            raise ValueError(f'diagnostic level {level!r} is not one of {list(LEVEL_NAMES)}')
        if level == OK:
            self._conditions.pop(name, None)
        else:
            self._conditions[name] = (level, message)

    def clear(self, name: str) -> None:
        self._conditions.pop(name, None)

    @property
    def level(self) -> int:
        return max((level for level, _ in self._conditions.values()), default=OK)

    @property
    def message(self) -> str:
        if not self._conditions:
            return 'OK'
        return '; '.join(f'{name}: {message}' for name, (_, message)
                         in sorted(self._conditions.items(), key=lambda kv: -kv[1][0]))


class NodeDiagnostics:
    """Publishes a node's health and processing time to /diagnostics every `period_s`."""

    def __init__(self, node: Any, period_s: float = 1.0, hardware_id: str = 'robotaxi'):
        from diagnostic_msgs.msg import DiagnosticArray

        from robotaxi_stack.common.qos import objects_qos
        self._node = node
        self._hardware_id = hardware_id
        self.timer = ProcessingTimer()
        self.health = HealthState()
        self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', objects_qos())
        self._timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        status = DiagnosticStatus(level=bytes([self.health.level]),
                                  name=self._node.get_fully_qualified_name(),
                                  message=self.health.message, hardware_id=self._hardware_id)
        values = {'cycles': str(self.timer.cycles)}
        for key, value in self.timer.processing_stats().items():
            values[f'processing_{key}'] = f'{value:.3f}'
        for key, value in self.timer.latency_stats().items():
            values[f'latency_{key}'] = f'{value:.3f}'
        values.update(self.health.values)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)
