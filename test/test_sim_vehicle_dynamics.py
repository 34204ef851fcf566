"""Ego vehicle dynamics: commonroad ST fidelity, actuator lags, limits, gears, geometry, config."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import yaml
from scipy.integrate import solve_ivp
from vehiclemodels.vehicle_dynamics_st import vehicle_dynamics_st

from robotaxi_stack.sim.vehicle_dynamics import (
    EgoVehicle, Gear, VehicleCommandError, VehicleConfigError, available_vehicles, footprint,
    load_vehicle, vehicle_config_dirs, vehicle_params_from_dict)

DT_S = 0.01


@pytest.fixture(scope='module')
def bmw():
    return load_vehicle('bmw_320i')


@pytest.fixture(scope='module')
def bmw_no_lag(bmw):
    return dataclasses.replace(bmw, steer_time_constant_s=0.0, accel_time_constant_s=0.0)


def _bmw_document():
    path = vehicle_config_dirs()[0] / 'bmw_320i.yaml'
    return yaml.safe_load(path.read_text())


def _circle_radius(points_xy):
    """Least-squares (Kasa) circle fit: radius of the circle through (N, 2) points."""
    x, y = points_xy[:, 0], points_xy[:, 1]
    design = np.column_stack([x, y, np.ones_like(x)])
    solution, *_ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    cx, cy = 0.5 * solution[0], 0.5 * solution[1]
    return math.sqrt(solution[2] + cx * cx + cy * cy)


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize('name, parameter_set', [('ford_escort', 1), ('bmw_320i', 2),
                                                 ('vw_vanagon', 3)])
def test_vehicle_files_load_with_their_commonroad_set(name, parameter_set):
    params = load_vehicle(name)
    assert params.name == name
    assert params.commonroad_parameter_set == parameter_set
    assert params.wheelbase_m == pytest.approx(
        params.cog_to_front_axle_m + params.cog_to_rear_axle_m, abs=5e-3)
    assert params.front_overhang_m > 0.5
    assert params.max_steer_angle_rad <= params.commonroad.steering.max
    assert params.camera_front.width_px >= 640 and params.camera_front.height_px >= 384
    assert name in available_vehicles()


def test_load_vehicle_accepts_a_file_path():
    path = vehicle_config_dirs()[0] / 'vw_vanagon.yaml'
    assert load_vehicle(path).name == 'vw_vanagon'


def test_unknown_vehicle_error_lists_available_ones():
    with pytest.raises(VehicleConfigError, match="unknown vehicle 'tesla'.*bmw_320i"):
        load_vehicle('tesla')


def test_vehicle_yaml_unknown_key_is_named():
    document = _bmw_document()
    document['dimensions']['colour'] = 'red'
    with pytest.raises(VehicleConfigError, match='colour'):
        vehicle_params_from_dict(document)


def test_vehicle_yaml_missing_key_is_named():
    document = _bmw_document()
    del document['sensors']['camera_front']['fy']
    with pytest.raises(VehicleConfigError, match='camera_front.fy is missing'):
        vehicle_params_from_dict(document)


def test_vehicle_yaml_wheelbase_must_match_parameter_set():
    document = _bmw_document()
    document['dimensions']['wheelbase_m'] = 2.7
    with pytest.raises(VehicleConfigError, match='wheelbase_m = 2.7'):
        vehicle_params_from_dict(document)


def test_vehicle_yaml_steering_cannot_exceed_parameter_set():
    document = _bmw_document()
    document['steering']['max_rate_rps'] = 0.8
    with pytest.raises(VehicleConfigError, match='max_rate_rps = 0.8'):
        vehicle_params_from_dict(document)


def test_vehicle_yaml_rejects_non_finite_and_negative_values():
    document = _bmw_document()
    document['actuators']['steer_time_constant_s'] = float('nan')
    with pytest.raises(VehicleConfigError, match='steer_time_constant_s'):
        vehicle_params_from_dict(document)
    document = _bmw_document()
    document['dimensions']['height_m'] = -1.0
    with pytest.raises(VehicleConfigError, match='height_m = -1.0'):
        vehicle_params_from_dict(document)


def test_camera_optical_axis_looks_forward_from_its_mount(bmw):
    optical = bmw.camera_front.optical_transform()
    assert np.allclose(optical[:3, 2], [1.0, 0.0, 0.0])  # optical z = base_link x
    assert np.allclose(optical[:3, 0], [0.0, -1.0, 0.0])  # optical x = right
    mount = bmw.camera_front.mount
    assert np.allclose(optical[:3, 3], [mount.x_m, mount.y_m, mount.z_m])
    k = bmw.camera_front.intrinsic_matrix()
    pixel = k @ np.array([0.0, 0.0, 1.0])
    assert pixel[:2] == pytest.approx([bmw.camera_front.cx_px, bmw.camera_front.cy_px])
    assert bmw.lidar_top.z_m > bmw.height_m


# -- fidelity to commonroad ---------------------------------------------------------------------

# Piecewise-constant (steering velocity rad/s, acceleration m/s^2) over 1 s windows.
_PROFILE = [(0.2, 1.0), (0.0, 0.0), (-0.3, -2.0), (0.1, 0.5)]


def test_zero_lag_stepper_matches_commonroad_st_integrated_by_solve_ivp(bmw_no_lag):
    lr = bmw_no_lag.cog_to_rear_axle_m
    ego = EgoVehicle(bmw_no_lag, x_m=3.0, y_m=-1.0, yaw_rad=0.3, speed_mps=8.0)
    x_ref = list(ego.cog_state())
    ref_rows, ego_rows = [], []
    steps_per_window = round(1.0 / DT_S)
    for rate, accel in _PROFILE:
        solution = solve_ivp(lambda t, x: vehicle_dynamics_st(x, [rate, accel],
                                                               bmw_no_lag.commonroad),
                             (0.0, 1.0), x_ref, method='DOP853', rtol=1e-10, atol=1e-10,
                             t_eval=np.arange(1, steps_per_window + 1) * DT_S)
        ref_rows.append(solution.y.T)
        x_ref = list(solution.y[:, -1])
        for _ in range(steps_per_window):
            # With zero lag the wheel angle reaches the command in the step: a ramp command
            # produces exactly the steering velocity that the reference gets.
            target = ego.state.steer_rad + rate * DT_S
            ego.step((target, accel), DT_S)
            ego_rows.append([*ego.cog_state(), ego.state.x_m, ego.state.y_m])
    reference = np.vstack(ref_rows)
    stepped = np.array(ego_rows)
    assert stepped[:, 3].min() > 5.0  # stays in the dynamic (ST) regime
    assert np.abs(stepped[:, 2]).max() > 0.15  # the test steers noticeably
    assert np.abs(stepped[:, 6]).max() > 5e-3  # ... so that the body slips
    assert np.abs(stepped[:, :7] - reference).max() < 1e-5  # RK4 at 100 Hz vs DOP853
    base_link_ref = reference[:, :2] - lr * np.column_stack([np.cos(reference[:, 4]),
                                                             np.sin(reference[:, 4])])
    assert np.abs(stepped[:, 7:] - base_link_ref).max() < 1e-5


def test_steering_lag_reaches_63_percent_at_one_time_constant(bmw):
    ego = EgoVehicle(bmw, speed_mps=5.0)
    command = 0.02  # small enough that the 0.4 rad/s rate limit never binds
    for _ in range(round(bmw.steer_time_constant_s / DT_S)):
        ego.step((command, 0.0), DT_S)
    assert ego.state.steer_rad / command == pytest.approx(1.0 - math.exp(-1.0), abs=2e-3)


def test_acceleration_lag_reaches_63_percent_at_one_time_constant(bmw):
    ego = EgoVehicle(bmw)
    tau = bmw.accel_time_constant_s
    for _ in range(round(tau / DT_S)):
        state = ego.step((0.0, 1.0), DT_S)
    assert state.accel_mps2 == pytest.approx(1.0 - math.exp(-1.0), abs=2e-3)
    # Speed is the integral of the lagged acceleration: t - tau (1 - e^-t/tau) at t = tau.
    assert state.speed_mps == pytest.approx(tau * math.exp(-1.0), rel=1e-6)


def test_steering_rate_and_angle_limited_by_parameter_set(bmw):
    ego = EgoVehicle(bmw, speed_mps=3.0)
    for _ in range(50):
        state = ego.step((5.0, 0.0), DT_S)
    assert state.steer_rad == pytest.approx(0.5 * bmw.max_steer_rate_rps, rel=1e-6)
    for _ in range(400):
        state = ego.step((5.0, 0.0), DT_S)
    assert state.steer_rad == pytest.approx(bmw.max_steer_angle_rad)


def test_acceleration_limited_by_parameter_set_power_curve(bmw):
    ego = EgoVehicle(bmw, speed_mps=20.0)
    for _ in range(200):
        state = ego.step((0.0, 50.0), DT_S)
    v_switch = bmw.accel_power_switch_speed_mps
    assert state.accel_mps2 == pytest.approx(bmw.max_accel_mps2 * v_switch / state.speed_mps,
                                             rel=1e-3)
    assert state.accel_mps2 < 0.5 * bmw.max_accel_mps2


@pytest.mark.parametrize('speed_mps, steer_rad, tolerance', [(2.0, 0.1, 5e-3),
                                                             (0.08, 0.4, 1e-6)])
def test_steady_turning_radius_matches_wheelbase_over_tan_steer(bmw, speed_mps, steer_rad,
                                                                tolerance):
    # 2 m/s runs the dynamic ST model (about neutral steer with these tyres), 0.08 m/s the
    # kinematic one, where the rear axle follows l / tan(delta) exactly.
    ego = EgoVehicle(bmw, speed_mps=speed_mps, steer_rad=steer_rad)
    points = []
    steps = round(12.0 / DT_S) if speed_mps > 1.0 else round(40.0 / DT_S)
    for step in range(steps):
        state = ego.step((steer_rad, 0.0), DT_S)
        if step >= steps // 2:
            points.append((state.x_m, state.y_m))
    wheelbase_m = bmw.cog_to_front_axle_m + bmw.cog_to_rear_axle_m  # the model's own
    assert wheelbase_m == pytest.approx(bmw.wheelbase_m, abs=1e-3)
    expected = wheelbase_m / math.tan(steer_rad)
    assert _circle_radius(np.array(points)) == pytest.approx(expected, rel=tolerance)


def test_base_link_velocity_matches_differentiated_base_link_path(bmw):
    ego = EgoVehicle(bmw, speed_mps=10.0)
    states = [ego.step((0.08, 0.0), DT_S) for _ in range(300)]
    before, now, after = states[-3], states[-2], states[-1]
    velocity_map = np.array([after.x_m - before.x_m, after.y_m - before.y_m]) / (2 * DT_S)
    assert velocity_map == pytest.approx(now.velocity_xy_mps(), abs=1e-3)
    assert abs(now.lateral_speed_mps) > 0.01  # base_link slips sideways at speed
    cog = ego.cog_state()
    lr = bmw.cog_to_rear_axle_m
    assert cog[0] == pytest.approx(after.x_m + lr * math.cos(cog[4]))
    assert cog[1] == pytest.approx(after.y_m + lr * math.sin(cog[4]))


def test_low_speed_dynamic_regime_stays_stable(bmw):
    # The ST lateral dynamics are stiff here (|lambda| ~ 215 / v); adaptive sub-steps keep
    # fixed-step RK4 stable and the state close to the kinematic one.
    ego = EgoVehicle(bmw, speed_mps=0.3, steer_rad=0.1)
    for _ in range(200):
        state = ego.step((0.1, 0.0), DT_S)
    kinematic_yaw_rate = state.speed_mps * math.tan(0.1) / bmw.wheelbase_m
    assert state.yaw_rate_rps == pytest.approx(kinematic_yaw_rate, rel=0.02)


def test_starting_and_stopping_cross_the_kinematic_switch_smoothly(bmw):
    ego = EgoVehicle(bmw)
    yaw_rates = []
    for step in range(800):
        command = (0.15, 1.0) if step < 300 else (0.15, -1.5)
        yaw_rates.append(ego.step(command, DT_S).yaw_rate_rps)
    assert ego.state.speed_mps == 0.0
    assert np.abs(np.diff(yaw_rates)).max() < 0.01


# -- gears and stopping -------------------------------------------------------------------------

def test_braking_to_a_stop_in_drive_never_rolls_backwards(bmw):
    ego = EgoVehicle(bmw, speed_mps=5.0)
    xs, speeds = [], []
    for _ in range(500):
        state = ego.step((0.0, -4.0), DT_S)
        xs.append(state.x_m)
        speeds.append(state.speed_mps)
    assert min(speeds) >= 0.0
    assert speeds[-1] == 0.0
    assert np.all(np.diff(xs) >= 0.0)
    assert xs[-1] == xs[-200]  # standing, held by the brake command
    # Stop distance under a first-order-lagged deceleration A: v^2 / 2A + v tau - A tau^2 / 2.
    tau = bmw.accel_time_constant_s
    assert xs[-1] == pytest.approx(5.0 ** 2 / 8.0 + 5.0 * tau - 2.0 * tau ** 2, abs=2e-3)


def test_standing_in_drive_with_brake_command_does_not_move(bmw):
    ego = EgoVehicle(bmw, x_m=1.0, y_m=2.0, yaw_rad=0.5)
    for _ in range(100):
        state = ego.step((0.3, -3.0), DT_S)
    assert (state.x_m, state.y_m) == pytest.approx((1.0, 2.0), abs=1e-12)
    assert state.speed_mps == 0.0
    assert state.accel_mps2 == 0.0
    assert state.steer_rad > 0.2  # steering still works at standstill


def test_reverse_gear_drives_backwards_and_brakes_to_zero(bmw):
    ego = EgoVehicle(bmw)
    ego.set_gear(Gear.REVERSE)
    speeds = [ego.step((0.0, -1.0), DT_S).speed_mps for _ in range(200)]
    assert speeds[-1] < -1.0
    assert ego.state.x_m < -0.5
    speeds += [ego.step((0.0, 3.0), DT_S).speed_mps for _ in range(300)]
    assert max(speeds) <= 0.0
    assert speeds[-1] == 0.0


def test_reverse_with_steering_follows_kinematic_arc(bmw):
    ego = EgoVehicle(bmw, steer_rad=0.3, gear=Gear.REVERSE)
    for _ in range(300):
        state = ego.step((0.3, -0.5), DT_S)
    assert state.speed_mps < -0.5
    wheelbase_m = bmw.cog_to_front_axle_m + bmw.cog_to_rear_axle_m
    assert state.yaw_rate_rps == pytest.approx(state.speed_mps * math.tan(0.3) / wheelbase_m)
    assert abs(state.lateral_speed_mps) < 1e-9


def test_park_holds_the_vehicle_against_throttle(bmw):
    ego = EgoVehicle(bmw, gear=Gear.PARK)
    for _ in range(100):
        state = ego.step((0.0, 3.0), DT_S)
    assert (state.x_m, state.speed_mps, state.gear) == (0.0, 0.0, Gear.PARK)


def test_neutral_coasts_and_brakes_but_never_drives(bmw):
    ego = EgoVehicle(bmw, speed_mps=5.0, gear=Gear.NEUTRAL)
    assert ego.step((0.0, 3.0), DT_S).speed_mps == pytest.approx(5.0)
    for _ in range(400):
        state = ego.step((0.0, -3.0), DT_S)
    assert state.speed_mps == 0.0


def test_gear_change_is_refused_while_moving(bmw):
    ego = EgoVehicle(bmw, speed_mps=2.0)
    with pytest.raises(VehicleCommandError, match='DRIVE -> REVERSE refused at speed 2.000'):
        ego.set_gear(Gear.REVERSE)
    with pytest.raises(VehicleCommandError, match='gear'):
        ego.set_gear(7)


# -- bad inputs, geometry, determinism ----------------------------------------------------------

@pytest.mark.parametrize('command', [(float('nan'), 0.0), (0.0, float('inf')),
                                     (0.0, -float('inf')), ('left', 0.0), (0.1,), None,
                                     (0.1, 0.2, 0.3)])
def test_bad_commands_raise_typed_error_and_leave_state_untouched(bmw, command):
    ego = EgoVehicle(bmw, speed_mps=4.0)
    before = ego.state
    with pytest.raises(VehicleCommandError):
        ego.step(command, DT_S)
    assert ego.state == before
    assert issubclass(VehicleCommandError, ValueError)


@pytest.mark.parametrize('dt_s', [0.0, -0.01, float('nan'), 5.0])
def test_bad_time_steps_raise_typed_error(bmw, dt_s):
    with pytest.raises(VehicleCommandError, match='dt_s'):
        EgoVehicle(bmw).step((0.0, 0.0), dt_s)


def test_bad_initial_state_is_rejected(bmw):
    with pytest.raises(VehicleCommandError, match='speed_mps = 80.0'):
        EgoVehicle(bmw, speed_mps=80.0)
    with pytest.raises(VehicleCommandError, match='contradicts gear DRIVE'):
        EgoVehicle(bmw, speed_mps=-1.0, gear=Gear.DRIVE)
    with pytest.raises(VehicleCommandError, match='x_m'):
        EgoVehicle(bmw, x_m=float('nan'))


def test_footprint_corners_follow_base_link_pose(bmw):
    ego = EgoVehicle(bmw, x_m=10.0, y_m=5.0, yaw_rad=math.pi / 2)
    corners = ego.footprint()
    assert corners.shape == (4, 2)
    rear, front = -bmw.rear_overhang_m, bmw.length_m - bmw.rear_overhang_m
    half_width = 0.5 * bmw.width_m
    # Heading north: body x is map +y, body y (left) is map -x.
    expected = np.array([[10.0 + half_width, 5.0 + rear], [10.0 + half_width, 5.0 + front],
                         [10.0 - half_width, 5.0 + front], [10.0 - half_width, 5.0 + rear]])
    assert corners == pytest.approx(expected)
    assert np.array_equal(footprint(bmw, ego.state), corners)
    box = ego.box()
    assert box[:2] == pytest.approx(corners.mean(axis=0))
    assert box[2:] == pytest.approx([0.5 * bmw.height_m, math.pi / 2, bmw.length_m,
                                     bmw.width_m, bmw.height_m])


def test_stepping_is_deterministic_and_independent_of_step_splitting(bmw):
    rng = np.random.default_rng(3)
    commands = np.column_stack([rng.uniform(-0.3, 0.3, 100), rng.uniform(-2.0, 2.0, 100)])
    first, second, coarse = (EgoVehicle(bmw, speed_mps=6.0) for _ in range(3))
    for command in commands:
        a = first.step(tuple(command), 0.05)
        b = second.step(tuple(command), 0.05)
        assert a == b
        for _ in range(5):
            fine = coarse.step(tuple(command), 0.01)
    assert fine.x_m == pytest.approx(a.x_m, abs=1e-6)
    assert fine.yaw_rad == pytest.approx(a.yaw_rad, abs=1e-8)


def test_params_are_frozen(bmw):
    with pytest.raises(dataclasses.FrozenInstanceError):
        bmw.length_m = 3.0
    assert copy.copy(bmw) == bmw
