"""Vehicle command gate core: limits, bad input, minimal-risk maneuvers, modes (no ROS)."""

import dataclasses
import math
import pathlib

import pytest

from robotaxi_stack.common.params import (ParameterError, load_param_file, params_from_dict)
from robotaxi_stack.vehicle.adapters import ADAPTER_NAMES, DriveByWireAdapter
from robotaxi_stack.vehicle.command_gate import (CommandGate, CommandSource, ControlInput,
                                                 ControlMode, GateLimits, GatedCommand,
                                                 MrmBehavior, MrmStateCode,
                                                 NonFiniteCommandError,
                                                 OutOfOrderCommandError, VehicleInterfaceCore,
                                                 VehicleInterfaceParams, VehicleState,
                                                 VehicleStatusError)

S = 1_000_000_000
TICK_NS = 20_000_000
WHEELBASE_M = 2.579
VEHICLE_STEER_RAD = 1.066
EPS = 1e-9


def ns(t_s):
    return int(round(t_s * S))


def make_limits(**overrides):
    params = VehicleInterfaceParams(**overrides)
    return GateLimits.from_params(params, WHEELBASE_M, VEHICLE_STEER_RAD)


def make_core(**overrides):
    params = VehicleInterfaceParams(**overrides)
    return VehicleInterfaceCore(params, GateLimits.from_params(params, WHEELBASE_M,
                                                               VEHICLE_STEER_RAD))


def cmd(t_s, steer=0.0, accel=0.0, velocity=0.0, steer_rate=0.0, jerk=0.0):
    return ControlInput(stamp_ns=ns(t_s), steering_angle_rad=steer, steering_rate_rps=steer_rate,
                        velocity_mps=velocity, acceleration_mps2=accel, jerk_mps3=jerk)


def status(t_s, v, steer=0.0, mode=ControlMode.AUTONOMOUS, gear=1):
    return VehicleState(stamp_ns=ns(t_s), velocity_mps=v, steering_angle_rad=steer,
                        control_mode=mode, gear=gear)


class PointMass:
    """Speed follows the commanded acceleration exactly; never reverses in DRIVE."""

    def __init__(self, v):
        self.v = v
        self.accel = 0.0

    def step(self, dt):
        self.v = max(0.0, self.v + self.accel * dt)


def run_loop(core, vehicle, t_start, t_end, *, send_commands, outputs, command=None,
             source=CommandSource.PLANNER):
    """50 Hz closed loop: status, optional planner command, tick; collects sent commands."""
    for k in range(round((t_end - t_start) * 50)):
        t = t_start + k * 0.02
        core.on_vehicle_status(status(t, vehicle.v), ns(t))
        if send_commands:
            result = core.on_command(source, command(t) if command else
                                     cmd(t, velocity=vehicle.v), ns(t))
            if result is not None:
                outputs.append(result.command)
                vehicle.accel = result.command.acceleration_mps2
        out = core.on_tick(ns(t))
        if out is not None:
            outputs.append(out)
            vehicle.accel = out.acceleration_mps2
        vehicle.step(0.02)


# -- limits ---------------------------------------------------------------------------------

def test_steering_angle_is_clamped_to_the_smaller_of_parameter_and_vehicle_limit():
    assert make_limits(max_steer_angle_rad=0.7).max_steer_angle_rad == 0.7
    limits = GateLimits.from_params(VehicleInterfaceParams(max_steer_angle_rad=0.7),
                                    WHEELBASE_M, 0.5)
    assert limits.max_steer_angle_rad == 0.5
    gate = CommandGate(limits)
    result = gate.limit(cmd(1.0, steer=0.9), speed_mps=0.0)
    assert result.command.steering_angle_rad == 0.5 and 'steer_angle' in result.clamps
    gate = CommandGate(limits)
    assert gate.limit(cmd(1.0, steer=-0.9), speed_mps=0.0).command.steering_angle_rad == -0.5


def test_steering_rate_is_limited_by_the_command_stamp_interval():
    gate = CommandGate(make_limits(max_steer_rate_rps=0.6))
    gate.limit(cmd(1.0, steer=0.0), 0.0)
    result = gate.limit(cmd(1.02, steer=0.3), 0.0)
    assert result.command.steering_angle_rad == pytest.approx(0.012)
    assert result.command.steering_rate_rps == pytest.approx(0.6)
    assert result.clamps == ('steer_rate',)
    result = gate.limit(cmd(1.1, steer=0.3), 0.0)  # dt 0.08 s allows 0.048 rad more
    assert result.command.steering_angle_rad == pytest.approx(0.06)
    result = gate.limit(cmd(1.2, steer=0.08), 0.0)  # within 0.06 rad of 0.06: passes
    assert result.command.steering_angle_rad == pytest.approx(0.08) and result.clamps == ()
    assert result.command.steering_rate_rps == pytest.approx(0.2)


def test_acceleration_is_clamped_to_its_range():
    gate = CommandGate(make_limits(min_accel_mps2=-6.0, max_accel_mps2=3.0))
    result = gate.limit(cmd(1.0, accel=5.0), 0.0)
    assert result.command.acceleration_mps2 == 3.0 and result.clamps == ('accel',)
    gate = CommandGate(make_limits(min_accel_mps2=-6.0, max_accel_mps2=3.0))
    assert gate.limit(cmd(1.0, accel=-9.0), 0.0).command.acceleration_mps2 == -6.0


def test_jerk_limits_the_acceleration_change_per_stamp_interval():
    gate = CommandGate(make_limits(max_jerk_mps3=5.0))
    gate.limit(cmd(1.0, accel=0.0), 0.0)
    result = gate.limit(cmd(1.02, accel=2.0, jerk=100.0), 0.0)
    assert result.command.acceleration_mps2 == pytest.approx(0.1)
    assert result.command.jerk_mps3 == pytest.approx(5.0) and result.clamps == ('jerk',)
    result = gate.limit(cmd(1.04, accel=-2.0), 0.0)
    assert result.command.acceleration_mps2 == pytest.approx(0.0)
    assert result.command.jerk_mps3 == pytest.approx(-5.0)


def test_steering_is_limited_by_lateral_acceleration_at_the_measured_speed():
    limits = make_limits(max_lat_accel_mps2=3.0)
    gate = CommandGate(limits)
    result = gate.limit(cmd(1.0, steer=0.3), speed_mps=10.0)
    steer = result.command.steering_angle_rad
    assert result.clamps == ('lat_accel',)
    assert 10.0 ** 2 * math.tan(steer) / WHEELBASE_M == pytest.approx(3.0)
    gate = CommandGate(limits)
    result = gate.limit(cmd(1.0, steer=-0.3), speed_mps=-10.0)  # reversing: same limit
    assert 100.0 * math.tan(-result.command.steering_angle_rad) / WHEELBASE_M \
        == pytest.approx(3.0)
    gate = CommandGate(limits)
    slow = gate.limit(cmd(1.0, steer=0.3), speed_mps=2.0)
    assert slow.command.steering_angle_rad == 0.3 and slow.clamps == ()


def test_commands_inside_the_limits_pass_unchanged_with_consistent_rates():
    gate = CommandGate(make_limits())
    outputs = []
    for k in range(50):
        t = 1.0 + 0.02 * k
        result = gate.limit(cmd(t, steer=0.2 * math.sin(t), accel=1.0 * math.sin(0.5 * t),
                                velocity=5.0, steer_rate=0.2 * math.cos(t)), speed_mps=5.0)
        assert result.clamps == ()
        assert result.command.steering_angle_rad == pytest.approx(0.2 * math.sin(t))
        assert result.command.acceleration_mps2 == pytest.approx(math.sin(0.5 * t))
        assert result.command.stamp_ns == ns(t) and result.command.velocity_mps == 5.0
        outputs.append(result.command)
    for before, after in zip(outputs, outputs[1:]):
        assert after.steering_rate_rps == pytest.approx(
            (after.steering_angle_rad - before.steering_angle_rad) / 0.02)
        assert after.jerk_mps3 == pytest.approx(
            (after.acceleration_mps2 - before.acceleration_mps2) / 0.02)


def test_core_counts_every_clamp():
    core = make_core(recovery_time_s=0.0)
    core.on_command(CommandSource.PLANNER, cmd(1.0, velocity=1.0), ns(1.0))
    result = core.on_command(CommandSource.PLANNER, cmd(1.02, steer=2.0, accel=9.0,
                                                        velocity=1.0), ns(1.02))
    assert result.command.behavior is MrmBehavior.NONE
    assert set(result.clamps) == {'steer_angle', 'steer_rate', 'accel', 'jerk'}
    assert all(core.counters[name] == 1 for name in result.clamps)
    assert core.counters['lat_accel'] == 0


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize('field', ['steering_angle_rad', 'steering_rate_rps', 'velocity_mps',
                                   'acceleration_mps2', 'jerk_mps3'])
@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf])
def test_non_finite_command_is_rejected_and_counts_as_no_command(field, bad):
    core = make_core(recovery_time_s=0.0)
    assert core.on_command(CommandSource.PLANNER, cmd(1.0), ns(1.0)) is not None
    command = dataclasses.replace(cmd(1.02), **{field: bad})
    with pytest.raises(NonFiniteCommandError, match=field):
        core.on_command(CommandSource.PLANNER, command, ns(1.02))
    assert core.counters['non_finite'] == 1
    # Only the command at 1.0 s counts: 0.31 s later the stream is stale.
    assert core.on_tick(ns(1.28)) is None
    out = core.on_tick(ns(1.31))
    assert out is not None and out.behavior is MrmBehavior.COMFORTABLE_STOP
    assert math.isfinite(out.acceleration_mps2) and math.isfinite(out.steering_angle_rad)


def test_out_of_order_and_duplicate_stamps_are_rejected():
    core = make_core(recovery_time_s=0.0)
    core.on_command(CommandSource.PLANNER, cmd(2.0), ns(2.0))
    with pytest.raises(OutOfOrderCommandError):
        core.on_command(CommandSource.PLANNER, cmd(2.0, steer=0.1), ns(2.0))
    with pytest.raises(OutOfOrderCommandError):
        core.on_command(CommandSource.PLANNER, cmd(1.98, steer=0.1), ns(2.0))
    assert core.counters['out_of_order'] == 2
    result = core.on_command(CommandSource.PLANNER, cmd(2.02, steer=0.01), ns(2.02))
    assert result.command.steering_angle_rad == pytest.approx(0.01)


def test_restarted_clock_is_accepted_without_a_jump():
    core = make_core(recovery_time_s=0.0)
    for k in range(10):
        core.on_command(CommandSource.PLANNER, cmd(100.0 + 0.02 * k, accel=1.0), ns(100.0))
    # A replay loop / new simulation: time starts again near zero.
    result = core.on_command(CommandSource.PLANNER, cmd(0.0, accel=-3.0), ns(0.0))
    assert result is not None and result.command.stamp_ns == 0
    # The interval to the last output is unknown: hold, then continue jerk-limited.
    assert result.command.acceleration_mps2 == pytest.approx(1.0)
    result = core.on_command(CommandSource.PLANNER, cmd(0.02, accel=-3.0), ns(0.02))
    assert result.command.acceleration_mps2 == pytest.approx(1.0 - 5.0 * 0.02)


def test_bad_vehicle_status_is_rejected():
    core = make_core()
    core.on_vehicle_status(status(1.0, 5.0), ns(1.0))
    with pytest.raises(VehicleStatusError):
        core.on_vehicle_status(status(1.02, math.nan), ns(1.02))
    with pytest.raises(VehicleStatusError):
        core.on_vehicle_status(status(0.9, 5.0), ns(1.02))
    assert core.speed_mps == 5.0 and core.counters['bad_vehicle_status'] == 2


# -- minimal-risk maneuvers -----------------------------------------------------------------

def test_stale_command_starts_a_jerk_limited_comfortable_stop_that_succeeds():
    core = make_core(comfortable_stop_decel_mps2=2.5, comfortable_stop_jerk_mps3=2.0,
                     command_timeout_s=0.3, recovery_time_s=0.5)
    vehicle = PointMass(10.0)
    outputs = []
    run_loop(core, vehicle, 0.0, 1.0, send_commands=True, outputs=outputs,
             command=lambda t: cmd(t, steer=0.02, velocity=10.0))
    assert core.mrm.behavior is MrmBehavior.NONE and core.mrm.state is MrmStateCode.NORMAL
    normal = len(outputs)
    assert outputs[-1].steering_angle_rad == pytest.approx(0.02)
    states = []
    t = 1.0
    while t < 12.0:
        run_loop(core, vehicle, t, t + 0.02, send_commands=False, outputs=outputs)
        states.append((t, core.mrm))
        t += 0.02
    stops = outputs[normal:]
    assert outputs[normal - 1].behavior is MrmBehavior.NONE
    first_mrm = next(t for t, mrm in states if mrm.behavior is not MrmBehavior.NONE)
    assert first_mrm - 0.98 > 0.3 - EPS  # the last command was stamped 0.98 s
    mrm = states[-1][1]
    assert mrm.behavior is MrmBehavior.COMFORTABLE_STOP
    assert mrm.reason.startswith('control command stale:') and '> 0.30 s' in mrm.reason
    assert all(c.behavior is MrmBehavior.COMFORTABLE_STOP for c in stops)
    accels = [c.acceleration_mps2 for c in stops]
    # From the last normal command on, and never more than one tick's worth at once.
    for before, after in zip(outputs[normal - 1:], stops):
        dt = (after.stamp_ns - before.stamp_ns) / S
        assert dt > 0.0
        assert abs(after.acceleration_mps2 - before.acceleration_mps2) \
            <= 2.0 * min(dt, 0.02) + EPS
        assert after.steering_angle_rad == before.steering_angle_rad
    assert min(accels) == pytest.approx(-2.5) and min(accels) >= -2.5 - EPS
    assert vehicle.v < 0.1
    assert mrm.state is MrmStateCode.MRM_SUCCEEDED
    operating = [m.state for _, m in states if m.behavior is not MrmBehavior.NONE]
    assert operating[0] is MrmStateCode.MRM_OPERATING
    # Braking at 2.5 m/s^2 from 10 m/s after a 1.25 s jerk ramp stops within ~5.5 s.
    succeeded_at = next(t for t, m in states if m.state is MrmStateCode.MRM_SUCCEEDED)
    assert succeeded_at - first_mrm < 6.0
    assert stops[-1].acceleration_mps2 == pytest.approx(-2.5)  # brake held at standstill


def test_emergency_stop_brakes_harder_and_faster_than_a_comfortable_stop():
    core = make_core(recovery_time_s=0.0)
    vehicle = PointMass(15.0)
    outputs = []
    run_loop(core, vehicle, 0.0, 0.5, send_commands=True, outputs=outputs,
             command=lambda t: cmd(t, velocity=15.0))
    core.on_emergency_stop(True, ns(0.5))
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP
    assert core.mrm.reason == 'external emergency stop'
    assert core.mrm.state is MrmStateCode.MRM_OPERATING
    start = len(outputs)
    run_loop(core, vehicle, 0.5, 5.0, send_commands=True, outputs=outputs,
             command=lambda t: cmd(t, velocity=15.0, accel=1.0))
    stops = outputs[start:]
    assert all(c.behavior is MrmBehavior.EMERGENCY_STOP for c in stops)
    accels = [c.acceleration_mps2 for c in stops]
    assert min(accels) == pytest.approx(-6.0)
    reached = next(i for i, a in enumerate(accels) if a <= -6.0 + EPS)
    assert reached * 0.02 <= 6.0 / 15.0 + 0.02 + EPS  # jerk 15 m/s^3: 0.4 s to full braking
    for before, after in zip(stops, stops[1:]):
        assert abs(after.acceleration_mps2 - before.acceleration_mps2) <= 15.0 * 0.02 + EPS
    assert vehicle.v < 0.1 and core.mrm.state is MrmStateCode.MRM_SUCCEEDED
    # Still engaged: commands keep flowing but the vehicle stays braked.
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP


def test_emergency_stop_escalates_a_running_comfortable_stop_and_is_never_downgraded():
    core = make_core(recovery_time_s=0.0)
    core.on_vehicle_status(status(0.0, 8.0), ns(0.0))
    assert core.mrm.behavior is MrmBehavior.COMFORTABLE_STOP  # nothing received yet
    assert core.mrm.reason == 'no planner control command received'
    core.on_emergency_stop(True, ns(0.1))
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP
    core.on_emergency_stop(False, ns(0.2))  # released, but commands are still missing
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP
    assert core.counters['comfortable_stops'] == 1 and core.counters['emergency_stops'] == 1


def test_mrm_keeps_stronger_braking_already_in_progress():
    core = make_core(recovery_time_s=0.0)
    vehicle = PointMass(20.0)
    outputs = []
    run_loop(core, vehicle, 0.0, 2.0, send_commands=True, outputs=outputs,
             command=lambda t: cmd(t, accel=-4.0, velocity=20.0))
    assert outputs[-1].acceleration_mps2 == pytest.approx(-4.0)
    run_loop(core, vehicle, 2.0, 2.6, send_commands=False, outputs=outputs)
    assert core.mrm.behavior is MrmBehavior.COMFORTABLE_STOP
    assert outputs[-1].behavior is MrmBehavior.COMFORTABLE_STOP
    assert outputs[-1].acceleration_mps2 == pytest.approx(-4.0)


def test_recovery_needs_released_estop_and_commands_flowing_for_recovery_time():
    core = make_core(recovery_time_s=1.0, command_timeout_s=0.3)
    core.on_vehicle_status(status(0.0, 0.0), ns(0.0))
    core.on_emergency_stop(True, ns(0.0))
    for k in range(150):  # 3 s of valid commands while the e-stop is engaged
        t = 0.02 * k
        core.on_command(CommandSource.PLANNER, cmd(t), ns(t))
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP
    core.on_emergency_stop(False, ns(3.0))
    t = 3.0
    while t < 3.98 - EPS:  # the release restarts the count even though commands flowed
        core.on_command(CommandSource.PLANNER, cmd(t), ns(t))
        assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP, t
        t += 0.02
    core.on_command(CommandSource.PLANNER, cmd(4.0), ns(4.0))
    assert core.mrm.behavior is MrmBehavior.NONE and core.mrm.state is MrmStateCode.NORMAL

    # A gap longer than the timeout: MRM, and the flow only counts from the resumption.
    core.on_tick(ns(4.35))
    assert core.mrm.behavior is MrmBehavior.COMFORTABLE_STOP
    for k in range(50):
        t = 5.0 + 0.02 * k
        core.on_command(CommandSource.PLANNER, cmd(t), ns(t))
    assert core.mrm.behavior is MrmBehavior.COMFORTABLE_STOP  # 0.98 s of flow
    # A non-finite command breaks the flow too.
    with pytest.raises(NonFiniteCommandError):
        core.on_command(CommandSource.PLANNER, cmd(6.0, steer=math.nan), ns(6.0))
    for k in range(1, 51):
        t = 6.0 + 0.02 * k
        core.on_command(CommandSource.PLANNER, cmd(t), ns(t))
    assert core.mrm.behavior is MrmBehavior.COMFORTABLE_STOP  # 0.98 s since the NaN
    core.on_command(CommandSource.PLANNER, cmd(7.04), ns(7.04))
    assert core.mrm.behavior is MrmBehavior.NONE


def test_mrm_answers_each_command_with_its_stamp_and_never_twice_per_stamp():
    core = make_core(recovery_time_s=10.0)
    core.on_vehicle_status(status(0.0, 5.0), ns(0.0))
    stamps = []
    for k in range(1, 30):
        t = 0.02 * k
        result = core.on_command(CommandSource.PLANNER, cmd(t, accel=1.0), ns(t))
        assert result is not None and result.command.stamp_ns == ns(t)
        assert result.command.behavior is MrmBehavior.COMFORTABLE_STOP
        stamps.append(result.command.stamp_ns)
        assert core.on_tick(ns(t)) is None  # this control tick already got its command
    # Commands stop: the tick publishes once per 20 ms cell, stamped with the current time.
    ticks = [core.on_tick(ns(0.6 + 0.01 * k)) for k in range(10)]
    sent = [c for c in ticks if c is not None]
    assert [c.stamp_ns for c in sent] == [ns(0.6), ns(0.62), ns(0.64), ns(0.66), ns(0.68)]
    stamps += [c.stamp_ns for c in sent]
    assert stamps == sorted(set(stamps))


def test_manual_mode_forwards_nothing_and_reengaging_continues_from_the_vehicle_state():
    core = make_core(recovery_time_s=0.0, max_steer_rate_rps=0.6, max_jerk_mps3=5.0)
    v, t = 12.0, 0.0
    for k in range(100):  # a driver brakes at 2 m/s^2 with 0.3 rad of steering
        t = 0.02 * k
        core.on_vehicle_status(status(t, v, steer=0.3, mode=ControlMode.MANUAL), ns(t))
        assert core.on_command(CommandSource.PLANNER, cmd(t, velocity=v), ns(t)) is None
        assert core.on_tick(ns(t)) is None
        assert core.mrm.state is MrmStateCode.NORMAL and 'driver' in core.mrm.reason
        v -= 2.0 * 0.02
    assert core.gate.steering_angle_rad == pytest.approx(0.3)
    assert core.gate.acceleration_mps2 == pytest.approx(-2.0, abs=0.05)
    t += 0.02
    core.on_vehicle_status(status(t, v, steer=0.3), ns(t))  # engaged
    result = core.on_command(CommandSource.PLANNER, cmd(t + 0.02, steer=0.0, accel=0.0,
                                                        velocity=v), ns(t + 0.02))
    assert result.command.behavior is MrmBehavior.NONE
    assert result.command.steering_angle_rad == pytest.approx(0.3 - 0.6 * 0.04)
    assert result.command.acceleration_mps2 == pytest.approx(-2.0 + 5.0 * 0.04, abs=0.05)


def test_disengaged_vehicle_ends_an_mrm_and_reengaging_with_estop_restarts_it():
    core = make_core()
    core.on_vehicle_status(status(0.0, 3.0), ns(0.0))
    core.on_emergency_stop(True, ns(0.0))
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP
    core.on_vehicle_status(status(0.02, 3.0, mode=ControlMode.DISENGAGED), ns(0.02))
    assert core.mrm.behavior is MrmBehavior.NONE and core.on_tick(ns(0.04)) is None
    core.on_vehicle_status(status(0.06, 3.0), ns(0.06))
    assert core.mrm.behavior is MrmBehavior.EMERGENCY_STOP
    assert core.on_tick(ns(0.06)).behavior is MrmBehavior.EMERGENCY_STOP


def test_remote_mode_gates_the_remote_source_with_the_same_rules():
    core = make_core(recovery_time_s=0.0)
    core.on_vehicle_status(status(0.0, 1.0, mode=ControlMode.REMOTE), ns(0.0))
    assert core.mrm.reason == 'no remote control command received'
    assert core.on_command(CommandSource.PLANNER, cmd(0.02, steer=0.01), ns(0.02)) is None
    result = core.on_command(CommandSource.REMOTE, cmd(0.02, steer=0.005), ns(0.02))
    assert result.command.behavior is MrmBehavior.NONE
    assert result.command.steering_angle_rad == pytest.approx(0.005)
    limited = core.on_command(CommandSource.REMOTE, cmd(0.04, steer=0.5), ns(0.04))
    assert limited.clamps == ('steer_rate',)
    # The planner keeps publishing, but a silent remote operator still means a stop.
    for k in range(3, 30):
        core.on_command(CommandSource.PLANNER, cmd(0.02 * k), ns(0.02 * k))
    assert core.mrm.behavior is MrmBehavior.COMFORTABLE_STOP
    assert core.mrm.reason.startswith('control command stale')


def test_without_vehicle_status_the_command_velocity_sets_the_lateral_limit():
    core = make_core(recovery_time_s=0.0, max_steer_rate_rps=5.0)
    core.on_command(CommandSource.PLANNER, cmd(1.0, velocity=15.0), ns(1.0))
    core.on_command(CommandSource.PLANNER, cmd(1.02, velocity=15.0), ns(1.02))
    assert core.mode is ControlMode.AUTONOMOUS
    result = core.on_command(CommandSource.PLANNER, cmd(1.04, steer=0.05, velocity=15.0),
                             ns(1.04))
    steer = result.command.steering_angle_rad
    assert result.clamps == ('lat_accel',)
    assert 15.0 ** 2 * math.tan(steer) / WHEELBASE_M == pytest.approx(3.0)


def test_without_vehicle_status_the_stop_integrates_its_own_speed_estimate():
    core = make_core(recovery_time_s=0.0)
    for k in range(10):
        core.on_command(CommandSource.PLANNER, cmd(0.02 * k, velocity=5.0), ns(0.02 * k))
    t = 0.2
    while t < 8.0 and core.mrm.state is not MrmStateCode.MRM_SUCCEEDED:
        core.on_tick(ns(t))
        t += 0.02
    # 5 m/s, 1.25 s jerk ramp (1.56 m/s) then 2.5 m/s^2: about 2.6 s after the trigger.
    assert core.mrm.state is MrmStateCode.MRM_SUCCEEDED and 2.5 < t < 4.0


# -- parameters and adapters ----------------------------------------------------------------

def test_parameter_defaults_match_the_param_file_and_sit_outside_the_planner_envelope():
    values = load_param_file(pathlib.Path(__file__).parents[1] / 'config'
                             / 'vehicle_interface.param.yaml', 'vehicle_interface')
    params = params_from_dict(VehicleInterfaceParams, values)
    assert params == VehicleInterfaceParams()
    assert params.max_jerk_mps3 > 2.5 and params.max_lat_accel_mps2 >= 3.0
    assert params.emergency_stop_decel_mps2 > params.comfortable_stop_decel_mps2


@pytest.mark.parametrize('values, match', [
    ({'emergency_stop_decel_mps2': 7.0}, 'min_accel_mps2'),
    ({'comfortable_stop_decel_mps2': 7.0}, 'emergency_stop_decel_mps2'),
    ({'comfortable_stop_jerk_mps3': 20.0}, 'emergency_stop_jerk_mps3'),
    ({'adapter': 'can'}, 'adapter'),
    ({'command_timeout_s': 0.0}, 'command_timeout_s'),
    ({'max_accel_mps2': -1.0}, 'max_accel_mps2'),
])
def test_inconsistent_or_out_of_range_parameters_are_rejected(values, match):
    with pytest.raises(ParameterError, match=match):
        params_from_dict(VehicleInterfaceParams, values)


def test_adapter_interface_requires_send_and_name():
    class Incomplete(DriveByWireAdapter):
        name = 'incomplete'

    with pytest.raises(TypeError):
        Incomplete()

    class Recording(DriveByWireAdapter):
        name = 'recording'

        def __init__(self):
            self.sent = []

        def send(self, command):
            self.sent.append(command)

    adapter = Recording()
    command = GatedCommand(stamp_ns=1, steering_angle_rad=0.0, steering_rate_rps=0.0,
                           velocity_mps=0.0, acceleration_mps2=-1.0, jerk_mps3=0.0)
    adapter.send(command)
    adapter.close()
    assert adapter.sent == [command] and adapter.name == 'recording'
    assert ADAPTER_NAMES == ('topic',)


def test_standing_car_without_any_command_yet_is_not_an_mrm_but_a_rolling_one_is():
    core = make_core()
    core.on_vehicle_status(status(0.0, 0.0), ns(0.0))
    assert core.on_tick(ns(0.02)) is None
    assert core.mrm.state is MrmStateCode.NORMAL
    core.on_vehicle_status(status(0.04, 2.0), ns(0.04))
    assert core.on_tick(ns(0.06)).behavior is MrmBehavior.COMFORTABLE_STOP
    assert core.mrm.reason == 'no planner control command received'
