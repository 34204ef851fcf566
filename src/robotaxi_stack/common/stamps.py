"""Time helpers: ROS stamps <-> integer nanoseconds, staleness and ordering checks.

Integer nanoseconds are the internal representation (exact, sortable, no float drift over a
7x24 day). Message helpers take any object with `sec`/`nanosec` (builtin_interfaces Time) and
import ROS types lazily, so cores can use the pure functions without rclpy.
Under sim time (`use_sim_time`, /clock published by the simulator or the player) the node clock
follows /clock; these helpers never read the wall clock themselves.
"""

from __future__ import annotations

import math
from typing import Any

NS_PER_S = 1_000_000_000


class StampError(ValueError):
    """A stamp is invalid, stale or out of order."""


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (or anything with sec, nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_sec_nanosec(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec) with 0 <= nanosec < 1e9 (floor division)."""
    return int(stamp_ns) // NS_PER_S, int(stamp_ns) % NS_PER_S


def ns_to_stamp(stamp_ns: int) -> Any:
    """Integer nanoseconds -> builtin_interfaces/Time."""
    from builtin_interfaces.msg import Time
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


def sec_to_ns(seconds: float) -> int:
    """Seconds (float) -> integer nanoseconds, rejecting NaN/inf."""
    if not math.isfinite(seconds):
        raise StampError(f'time {seconds!r} s is not finite')
    return int(round(seconds * NS_PER_S))


def ns_to_sec(stamp_ns: int) -> float:
    return stamp_ns / NS_PER_S


def duration_to_sec(duration: Any) -> float:
    """builtin_interfaces/Duration -> seconds."""
    return int(duration.sec) + int(duration.nanosec) / NS_PER_S


def sec_to_duration(seconds: float) -> Any:
    """Seconds -> builtin_interfaces/Duration."""
    from builtin_interfaces.msg import Duration
    sec, nanosec = ns_to_sec_nanosec(sec_to_ns(seconds))
    return Duration(sec=sec, nanosec=nanosec)


def age_s(stamp_ns: int, now_ns: int) -> float:
    """How old a stamp is at `now_ns` (negative when it lies in the future)."""
    return (now_ns - stamp_ns) / NS_PER_S


def check_fresh(stamp_ns: int, now_ns: int, max_age_s: float,
                max_future_s: float = 0.05) -> None:
    """Raise StampError when a stamp is zero, older than max_age_s or from the future."""
    if stamp_ns <= 0:
        raise StampError('stamp is zero: the sender did not set header.stamp')
    age = age_s(stamp_ns, now_ns)
    if age > max_age_s:
        raise StampError(f'stamp is stale: {age:.3f} s old, limit {max_age_s:.3f} s')
    if age < -max_future_s:
        raise StampError(f'stamp is {-age:.3f} s in the future, limit {max_future_s:.3f} s')


class MonotonicStampGuard:
    """Tracks the newest stamp of a stream and flags messages that go back in time.

    A clock jump backwards larger than `reset_after_backjump_s` (a replay loop, a restarted
    simulator) resets the guard instead of rejecting everything after it.
    """

    def __init__(self, reset_after_backjump_s: float = 5.0):
        self._last_ns: int | None = None
        self._reset_ns = sec_to_ns(reset_after_backjump_s)
        self.rejected = 0
        self.resets = 0

    def accept(self, stamp_ns: int) -> bool:
        """True for the first stamp and for every stamp newer than the last accepted one."""
        if self._last_ns is not None and stamp_ns <= self._last_ns:
            if self._last_ns - stamp_ns > self._reset_ns:
                self.resets += 1
            else:
                self.rejected += 1
                return False
        self._last_ns = stamp_ns
        return True

    @property
    def last_ns(self) -> int | None:
        return self._last_ns
