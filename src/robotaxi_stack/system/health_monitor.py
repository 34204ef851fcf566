"""Health monitor core: aggregates every node's /diagnostics status into one verdict.

A node that has not reported within `stale_timeout_s` is STALE; an expected node that never
reported is STALE as well, so a crashed process is noticed even though it cannot say so.
The overall level is the worst of all nodes; the MRM handler and the remote-operations bridge
consume that verdict.
"""

from __future__ import annotations

import dataclasses

from robotaxi_stack.common.diagnostics import ERROR, LEVEL_NAMES, OK, STALE
from robotaxi_stack.common.params import param
from robotaxi_stack.common.stamps import NS_PER_S


@dataclasses.dataclass(frozen=True)
class HealthMonitorParams:
    expected_nodes: tuple = param((), description='node names that must report (no leading /)')
    stale_timeout_s: float = param(3.0, min=0.1, max=60.0,
                                   description='a node silent this long is STALE')
    publish_rate_hz: float = param(1.0, min=0.1, max=50.0)


@dataclasses.dataclass(frozen=True)
class NodeHealth:
    name: str
    level: int
    message: str
    last_report_ns: int | None


@dataclasses.dataclass(frozen=True)
class HealthVerdict:
    level: int
    nodes: tuple[NodeHealth, ...]

    @property
    def summary(self) -> str:
        bad = [f'{n.name}: {LEVEL_NAMES[n.level]} ({n.message})' for n in self.nodes
               if n.level != OK]
        return '; '.join(bad) if bad else 'all nodes OK'


class HealthMonitor:
    """Latest status per node name; `verdict(now_ns)` applies the staleness rule."""

    def __init__(self, params: HealthMonitorParams):
        self._params = params
        self._latest: dict[str, tuple[int, str, int]] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.lstrip('/')

    def report(self, name: str, level: int, message: str, received_ns: int) -> None:
        """Record one status. Unknown levels count as ERROR: a garbled report is not OK."""
        if level not in LEVEL_NAMES:
            level, message = ERROR, f'invalid diagnostic level {level!r}: {message}'
        self._latest[self._key(name)] = (level, message, received_ns)

    def verdict(self, now_ns: int) -> HealthVerdict:
        timeout_ns = int(self._params.stale_timeout_s * NS_PER_S)
        names = sorted(set(self._latest) | {self._key(n) for n in self._params.expected_nodes})
        nodes = []
        for name in names:
            if name not in self._latest:
                nodes.append(NodeHealth(name, STALE, 'never reported', None))
                continue
            level, message, received_ns = self._latest[name]
            if now_ns - received_ns > timeout_ns:
                age_s = (now_ns - received_ns) / NS_PER_S
                nodes.append(NodeHealth(name, STALE, f'silent for {age_s:.1f} s', received_ns))
            else:
                nodes.append(NodeHealth(name, level, message, received_ns))
        return HealthVerdict(max((n.level for n in nodes), default=OK), tuple(nodes))
