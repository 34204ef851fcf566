"""Start the stack graph as OS processes where the ROS 2 launch package is absent.

Each node runs as `python -m <module> --ros-args ...` with this interpreter (same venv, same
command-line arguments as launch_ros would give it). The runner prefixes every output line with
`[name]`, forwards SIGINT/SIGTERM to all nodes, restarts nodes whose respawn policy says so,
and stops the whole graph when a `required` node exits for good. A node that dies during
start-up makes `run()` return non-zero with a message naming it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence, TextIO

from robotaxi_stack.bringup.graph import NodeSpec

# A node that exits within this time of being started is a start-up failure, not a crash.
STARTUP_GRACE_S = 3.0
STOP_TIMEOUT_S = 10.0


class ManagedProcess:
    """One node process with its respawn state and a thread that copies its output."""

    def __init__(self, spec: NodeSpec, argv: list[str], env: dict[str, str],
                 out: TextIO, out_lock: threading.Lock):
        self.spec = spec
        self.argv = argv
        self.env = env
        self.out = out
        self.out_lock = out_lock
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.exit_code: int | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        # A new session per node: a terminal's Ctrl-C reaches only the runner, which then stops
        # the nodes in order instead of every process racing to exit on its own.
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, bufsize=1, text=True,
            errors='replace')
        self.started_at = time.monotonic()
        self.exit_code = None
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        prefix = f'[{self.spec.name}] '
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self.out_lock:
                self.out.write(prefix + line if line.endswith('\n') else prefix + line + '\n')
                self.out.flush()

    def poll(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None and self._reader is not None:
            self._reader.join(timeout=1.0)
        return code

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signum)
            except ProcessLookupError:
                pass


def node_argv(spec: NodeSpec, use_sim_time: bool, log_level: str,
              python: str = sys.executable) -> list[str]:
    """Command line of one node: the module under this interpreter plus its ROS arguments."""
    return [python, '-m', spec.module, *spec.ros_arguments(use_sim_time, log_level)]


class GraphRunner:
    """Runs a resolved graph until a signal, a required node's exit or `stop()`."""

    def __init__(self, specs: Sequence[NodeSpec], use_sim_time: bool, log_level: str = 'info',
                 out: TextIO | None = None, env: dict[str, str] | None = None,
                 argv_for: Callable[[NodeSpec], list[str]] | None = None):
        self._out = out or sys.stdout
        self._lock = threading.Lock()
        base_env = dict(os.environ if env is None else env)
        # Line-buffered child output keeps the prefixed log readable and in order.
        base_env['PYTHONUNBUFFERED'] = '1'
        base_env.setdefault('RCUTILS_LOGGING_BUFFERED_STREAM', '0')
        # Large point clouds fill 3x faster on huge pages (bench/pointcloud_conversion.py).
        base_env.setdefault('GLIBC_TUNABLES', 'glibc.malloc.hugetlb=1')
        argv_for = argv_for or (lambda s: node_argv(s, use_sim_time, log_level))
        self.processes = [ManagedProcess(s, argv_for(s), base_env, self._out, self._lock)
                          for s in specs]
        self._stop = threading.Event()
        self.failure: str | None = None

    def log(self, message: str) -> None:
        with self._lock:
            self._out.write(f'[bringup] {message}\n')
            self._out.flush()

    def stop(self) -> None:
        self._stop.set()

    def _on_exit(self, managed: ManagedProcess, code: int, now: float) -> bool:
        """Handle one node's exit; returns False when the whole graph must stop."""
        name = managed.spec.name
        uptime = now - managed.started_at
        if uptime < STARTUP_GRACE_S and managed.restarts == 0 and code != 0:
            self.failure = f'node {name!r} failed to start (exit code {code})'
            return False
        if managed.spec.respawn:
            self.log(f'node {name!r} exited with code {code} after {uptime:.1f} s; '
                     f'respawning in {managed.spec.respawn_delay_s:.1f} s')
            if self._stop.wait(managed.spec.respawn_delay_s):
                return False
            managed.restarts += 1
            managed.start()
            return True
        managed.exit_code = code
        if managed.spec.required:
            # A required node that ends cleanly (the simulator at the end of its scenario)
            # stops the graph normally; launch's on_exit Shutdown does the same.
            if code != 0:
                self.failure = f'required node {name!r} exited with code {code}'
            else:
                self.log(f'required node {name!r} finished; stopping the graph')
            return False
        self.log(f'node {name!r} exited with code {code} (not respawned)')
        return True

    def run(self, duration_s: float | None = None) -> int:
        """Start every node and supervise them. Returns 0 after a clean stop, 1 on failure."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: self._stop.set())
        try:
            for managed in self.processes:
                self.log(f'starting {managed.spec.name} ({managed.spec.executable})')
                managed.start()
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                for managed in self.processes:
                    if managed.exit_code is not None:
                        continue
                    code = managed.poll()
                    if code is not None and not self._on_exit(managed, code, now):
                        self._stop.set()
                        break
                if all(m.exit_code is not None for m in self.processes):
                    break
                self._stop.wait(0.1)
        finally:
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self.failure:
            self.log(f'FAILED: {self.failure}')
            return 1
        return 0

    def _shutdown(self) -> None:
        """SIGINT every node (rclpy shuts down cleanly), then SIGTERM, then SIGKILL."""
        for signum, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 3.0),
                               (signal.SIGKILL, 3.0)):
            running = [m for m in self.processes if m.poll() is None]
            if not running:
                return
            for managed in running:
                managed.signal(signum)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(m.poll() is None for m in running):
                time.sleep(0.05)
            if signum == signal.SIGKILL:
                for managed in running:
                    if managed.poll() is None:
                        self.log(f'node {managed.spec.name!r} did not exit')
