"""Stamp conversions, staleness and ordering."""

import pytest
from builtin_interfaces.msg import Duration, Time
from hypothesis import given
from hypothesis import strategies as st

from robotaxi_stack.common import stamps


@given(st.integers(min_value=0, max_value=2**62))
def test_stamp_ns_round_trip_is_exact(stamp_ns):
    msg = stamps.ns_to_stamp(stamp_ns)
    assert 0 <= msg.nanosec < 1_000_000_000
    assert stamps.stamp_to_ns(msg) == stamp_ns


def test_seconds_and_durations():
    assert stamps.sec_to_ns(1.5) == 1_500_000_000
    assert stamps.duration_to_sec(Duration(sec=2, nanosec=500_000_000)) == 2.5
    assert stamps.duration_to_sec(stamps.sec_to_duration(0.25)) == 0.25
    with pytest.raises(stamps.StampError):
        stamps.sec_to_ns(float('nan'))


def test_check_fresh_rejects_zero_stale_and_future_stamps():
    now = stamps.stamp_to_ns(Time(sec=100))
    stamps.check_fresh(now - 50_000_000, now, max_age_s=0.1)
    with pytest.raises(stamps.StampError, match='zero'):
        stamps.check_fresh(0, now, 0.1)
    with pytest.raises(stamps.StampError, match='stale'):
        stamps.check_fresh(now - 200_000_000, now, 0.1)
    with pytest.raises(stamps.StampError, match='future'):
        stamps.check_fresh(now + 1_000_000_000, now, 0.1)


def test_monotonic_guard_rejects_out_of_order_and_resets_on_big_jump():
    guard = stamps.MonotonicStampGuard(reset_after_backjump_s=5.0)
    assert guard.accept(10_000_000_000)
    assert not guard.accept(9_900_000_000)
    assert not guard.accept(10_000_000_000)
    assert guard.accept(10_100_000_000)
    assert guard.accept(1_000_000_000)  # replay looped: 9 s back
    assert guard.rejected == 2 and guard.resets == 1 and guard.last_ns == 1_000_000_000
