"""Frenet MPC core: tracking, stopping, limits, obstacles, fallbacks, warm start, geometry."""

import dataclasses
import math

import numpy as np
import pytest

from robotaxi_stack.common.params import param_specs, params_from_dict
from robotaxi_stack.planning import mpc
from robotaxi_stack.planning.mpc import (
    MpcInputError, MpcParams, MpcPlanner, MpcRequest, MpcState, ReferenceProfile)

WHEELBASE_M = 2.579
DT_S = 0.1
N = MpcParams().horizon_steps
# Generous CPU deadlines keep the tests deterministic on a loaded machine: the iteration
# caps bound the work, the wall clock never decides an outcome (the default deadlines are
# exercised by the benchmark, and test_a_tiny_cpu_budget_produces_a_fallback).
TEST_PARAMS = MpcParams(max_cpu_time_s=2.0, max_cpu_time_cold_s=2.0, max_cpu_time_rescue_s=2.0)


def straight_reference(length_m=400.0):
    s = np.arange(0.0, length_m, 1.0)
    return ReferenceProfile(s_m=s, x_m=s.copy(), y_m=np.zeros_like(s), yaw_rad=np.zeros_like(s),
                            kappa_1pm=np.zeros_like(s))


def arc_reference(radius_m, length_m=400.0, spacing_m=2.0):
    """Counter-clockwise circle arc from the origin heading +x (kappa = 1 / radius)."""
    s = np.arange(0.0, length_m, spacing_m)
    return ReferenceProfile(s_m=s, x_m=radius_m * np.sin(s / radius_m),
                            y_m=radius_m * (1.0 - np.cos(s / radius_m)), yaw_rad=s / radius_m,
                            kappa_1pm=np.full_like(s, 1.0 / radius_m))


def state(s=0.0, d=0.0, epsi=0.0, v=8.0, steer=0.0, accel=0.0):
    return MpcState(s_m=s, d_m=d, epsi_rad=epsi, v_mps=v, steer_rad=steer, accel_mps2=accel)


def request(st, v_ref=10.0, d_ref=0.0, d_min=-1.5, d_max=1.5, s_stop=math.inf,
            obstacles=None, stamp=None):
    def per_step(value):
        return np.broadcast_to(np.asarray(value, dtype=float), (N + 1,)).copy()
    return MpcRequest(state=st, v_ref_mps=per_step(v_ref), d_ref_m=per_step(d_ref),
                      d_min_m=per_step(d_min), d_max_m=per_step(d_max), s_stop_m=s_stop,
                      obstacles=np.zeros((0, N + 1, 4)) if obstacles is None else obstacles,
                      stamp_s=stamp)


def static_obstacle(s_m, d_m, half_length_m, half_width_m):
    obstacle = np.empty((1, N + 1, 4))
    obstacle[0] = [s_m, d_m, half_length_m, half_width_m]
    return obstacle


class KinematicPlant:
    """Cartesian kinematic bicycle (rear axle) driven by the MPC's first inputs.

    Independent of the MPC's Frenet model: the state is projected onto the reference each
    cycle. At standstill the brakes hold: no rolling back, and a plan that asks for speed 0
    at the next step while crawling below 0.1 m/s is held (the velocity command's job).
    """

    def __init__(self, reference, st):
        x, y, yaw = reference.to_xy(st.s_m, st.d_m)
        self.reference = reference
        self.x = np.array([float(x), float(y), float(yaw) + st.epsi_rad, st.v_mps,
                           st.steer_rad, st.accel_mps2])

    def step(self, steer_rate, jerk, hold=False, dt=DT_S, substeps=20):
        if hold and self.x[3] < 0.1:
            self.x[3], self.x[5] = 0.0, 0.0
            return
        h = dt / substeps
        for _ in range(substeps):
            x, y, yaw, v, steer, accel = self.x
            self.x = self.x + h * np.array([v * math.cos(yaw), v * math.sin(yaw),
                                            v * math.tan(steer) / WHEELBASE_M, accel,
                                            steer_rate, jerk])
            if self.x[3] < 0.0:
                self.x[3], self.x[5] = 0.0, max(self.x[5], 0.0)

    def state(self):
        s, d = self.reference.project(self.x[None, :2])
        s, d = float(s[0]), float(d[0])
        epsi = (self.x[2] - float(self.reference.yaw_at(s)) + math.pi) % (2 * math.pi) - math.pi
        return state(s, d, epsi, self.x[3], self.x[4], self.x[5])


def closed_loop(planner, reference, st, seconds, make_request):
    """Run plant + MPC; returns [(state, result)] per cycle."""
    plant = KinematicPlant(reference, st)
    log, previous = [], None
    for k in range(int(round(seconds / DT_S))):
        st = plant.state()
        result = planner.solve(make_request(st, previous, k), reference)
        log.append((st, result))
        previous = result
        plant.step(result.steer_rate_rps[0], result.jerk_mps3[0], hold=result.v_mps[1] == 0.0)
    return log


def braking_profile(s_stop, cruise, decel=1.5):
    """v_ref as the planner node builds it: sqrt(2 a (s_stop - s)) at the last plan's stations."""
    def make(st, previous, k):
        if previous is None:
            s_pred = st.s_m + st.v_mps * DT_S * np.arange(N + 1)
        else:
            s_pred = np.r_[previous.s_m[1:], 2 * previous.s_m[-1] - previous.s_m[-2]]
            s_pred += st.s_m - s_pred[0]
        v_ref = np.minimum(cruise, np.sqrt(2 * decel * np.maximum(s_stop - s_pred, 0.0)))
        return request(st, v_ref=v_ref, s_stop=s_stop)
    return make


def ellipse(s, d, obstacle_row):
    s_j, d_j, a_j, b_j = obstacle_row
    return ((np.asarray(s) - s_j) / a_j) ** 2 + ((np.asarray(d) - d_j) / b_j) ** 2


@pytest.fixture(scope='module')
def planner():
    return MpcPlanner(TEST_PARAMS, WHEELBASE_M)


@pytest.fixture
def fresh(planner):
    planner.reset()
    return planner


# ---------------------------------------------------------------- reference geometry
def test_reference_round_trip_on_arc():
    reference = arc_reference(40.0, length_m=200.0, spacing_m=2.0)
    rng = np.random.default_rng(0)
    s = rng.uniform(5.0, 190.0, 50)
    d = rng.uniform(-3.0, 3.0, 50)
    x, y, yaw = reference.to_xy(s, d)
    # Exact circle geometry: the Hermite interpolation must be centimetre-accurate or better.
    radius = 40.0 - d
    assert np.allclose(x, radius * np.sin(s / 40.0), atol=2e-3)
    assert np.allclose(y, 40.0 - radius * np.cos(s / 40.0), atol=2e-3)
    assert np.allclose(yaw, s / 40.0, atol=1e-9)
    s_back, d_back = reference.project(np.stack([x, y], axis=-1))
    assert np.allclose(s_back, s, atol=1e-6)
    assert np.allclose(d_back, d, atol=1e-6)


def test_reference_extends_straight_beyond_its_ends():
    reference = straight_reference(50.0)
    x, y, _ = reference.to_xy(np.array([-5.0, 60.0]), np.array([1.0, -2.0]))
    assert np.allclose(x, [-5.0, 60.0]) and np.allclose(y, [1.0, -2.0])


def test_reference_from_polyline_recovers_curvature():
    angles = np.linspace(0.0, math.pi, 400)
    xy = np.stack([30.0 * np.sin(angles), 30.0 * (1.0 - np.cos(angles))], axis=-1)
    reference = ReferenceProfile.from_polyline(xy, spacing_m=0.5)
    inner = (reference.s_m > 5.0) & (reference.s_m < reference.s_m[-1] - 5.0)
    assert np.allclose(reference.kappa_1pm[inner], 1.0 / 30.0, rtol=0.02)
    assert reference.s_m[-1] == pytest.approx(30.0 * math.pi, rel=1e-3)


@pytest.mark.parametrize('field', ['x_m', 'kappa_1pm'])
def test_reference_rejects_non_finite_values_naming_the_field(field):
    s = np.arange(10.0)
    arrays = dict(s_m=s, x_m=s.copy(), y_m=0 * s, yaw_rad=0 * s, kappa_1pm=0 * s)
    arrays[field] = arrays[field].copy()
    arrays[field][3] = np.nan
    with pytest.raises(MpcInputError, match=field):
        ReferenceProfile(**arrays)


def test_reference_rejects_unsorted_stations():
    s = np.array([0.0, 1.0, 1.0, 2.0])
    with pytest.raises(MpcInputError, match='ascending'):
        ReferenceProfile(s_m=s, x_m=s, y_m=0 * s, yaw_rad=0 * s, kappa_1pm=0 * s)


# ---------------------------------------------------------------- tracking
def test_converges_to_the_straight_reference(fresh):
    log = closed_loop(fresh, straight_reference(), state(d=0.5, epsi=0.05, v=8.0), 10.0,
                      lambda st, previous, k: request(st, v_ref=10.0))
    final = log[-1][0]
    assert abs(final.d_m) < 0.05
    assert abs(final.epsi_rad) < 0.01
    assert final.v_mps == pytest.approx(10.0, abs=0.1)
    assert all(not result.fallback for _, result in log)


def test_closed_loop_tracks_an_arc(fresh):
    reference = arc_reference(50.0)
    start = state(v=8.0, steer=math.atan(WHEELBASE_M / 50.0))
    log = closed_loop(fresh, reference, start, 10.0, lambda st, previous, k: request(st, 8.0))
    errors = np.array([abs(st.d_m) for st, _ in log])
    assert errors.max() < 0.3
    assert errors[-20:].max() < 0.05
    assert log[-1][0].v_mps == pytest.approx(8.0, abs=0.1)
    # Steady state on the arc: the steering holds the curvature feed-forward.
    assert log[-1][0].steer_rad == pytest.approx(math.atan(WHEELBASE_M / 50.0), abs=0.01)


def test_stops_at_the_stop_point_with_a_braking_reference(fresh):
    s_stop = 60.0
    log = closed_loop(fresh, straight_reference(), state(v=10.0), 20.0,
                      braking_profile(s_stop, cruise=10.0))
    final = log[-1][0]
    assert s_stop - 0.1 <= final.s_m <= s_stop + 1e-3
    assert final.v_mps < 0.01
    assert max(st.s_m for st, _ in log) <= s_stop + 1e-3
    assert log[-1][1].status == 'optimal'


def test_infeasible_stop_brakes_as_hard_as_allowed(fresh):
    params = fresh.params
    result = fresh.solve(request(state(v=15.0), v_ref=15.0, s_stop=10.0),
                         straight_reference())
    # 15 m/s cannot stop in 10 m: the plan ramps the braking at the jerk limit to the
    # deceleration limit and keeps it.
    assert not result.fallback
    assert result.accel_mps2.min() == pytest.approx(params.min_accel_mps2, abs=1e-3)
    ramp = int(round(-params.min_accel_mps2 / params.max_jerk_mps3 / DT_S))
    assert np.allclose(result.jerk_mps3[:ramp], -params.max_jerk_mps3, atol=1e-3)
    assert result.soft_violation['stop_m'] > 0.0
    assert np.all(np.diff(result.v_mps) <= 1e-6)


def test_plans_respect_the_steering_acceleration_and_jerk_limits(fresh):
    params = fresh.params

    stop = {}

    def make(st, previous, k):
        # Lane changes across the lane on a curve while accelerating, then a stop line that
        # appears 30 m ahead (tighter than the 1.5 m/s^2 profile): the limits get exercised.
        if k >= 60:
            stop.setdefault('s', st.s_m + 30.0)
        return request(st, v_ref=15.0, d_ref=1.0 if k < 40 else -1.0, d_min=-1.5, d_max=1.5,
                       s_stop=stop.get('s', math.inf))
    log = closed_loop(fresh, arc_reference(60.0), state(d=-1.0, v=3.0), 12.0, make)
    tolerance = 1e-6
    # Lateral acceleration is a soft limit: while braking for the stop line on the curve
    # the plan may trade a little of it, and says so in soft_violation.
    lat_tolerance = 0.15
    for _, result in log:
        assert not result.fallback
        assert np.all(np.abs(result.steer_rad) <= params.max_steer_rad + tolerance)
        assert np.all(np.abs(result.steer_rate_rps) <= params.max_steer_rate_rps + tolerance)
        assert np.all(result.accel_mps2 <= params.max_accel_mps2 + tolerance)
        assert np.all(result.accel_mps2 >= params.min_accel_mps2 - tolerance)
        assert np.all(np.abs(result.jerk_mps3) <= params.max_jerk_mps3 + tolerance)
        assert np.all(result.v_mps >= -tolerance)
        lat = result.v_mps ** 2 * np.tan(result.steer_rad) / WHEELBASE_M
        assert np.all(np.abs(lat) <= params.max_lat_accel_mps2 + lat_tolerance)
        excess = max(np.abs(lat[1:]).max() - params.max_lat_accel_mps2, 0.0)
        assert result.soft_violation['lat_accel_mps2'] == pytest.approx(excess, abs=1e-9)
    # The limits were actually reached, so the checks above are not vacuous.
    steer_rates = np.concatenate([r.steer_rate_rps for _, r in log])
    accels = np.concatenate([r.accel_mps2 for _, r in log])
    jerks = np.concatenate([r.jerk_mps3 for _, r in log])
    assert np.abs(steer_rates).max() > 0.99 * params.max_steer_rate_rps
    assert accels.min() < params.min_accel_mps2 + 1e-3
    assert np.abs(jerks).max() > 0.99 * params.max_jerk_mps3


# ---------------------------------------------------------------- obstacles
def test_nudges_around_a_static_obstacle_when_the_bounds_allow(fresh):
    # A parked car reaching 1.6 - 0.9 m into the lane; half sizes inflated by ego + margin.
    obstacle = static_obstacle(40.0, -1.6, 5.0, 2.2)
    log = closed_loop(fresh, straight_reference(), state(v=8.0), 10.0,
                      lambda st, previous, k: request(st, v_ref=8.0, d_max=1.5,
                                                      obstacles=obstacle))
    s = np.array([st.s_m for st, _ in log])
    d = np.array([st.d_m for st, _ in log])
    assert ellipse(s, d, obstacle[0, 0]).min() >= 1.0 - 0.02
    for _, result in log:
        assert ellipse(result.s_m, result.d_m, obstacle[0, 0]).min() >= 1.0 - 0.02
    assert s[-1] > 40.0 + 5.0                 # it went past
    assert d.max() > 0.5                      # by moving left
    assert abs(d[-1]) < 0.2                   # and came back
    assert all(not result.fallback for _, result in log)


def test_stops_behind_a_static_obstacle_when_the_bounds_block(fresh):
    obstacle = static_obstacle(40.0, -1.6, 5.0, 2.2)
    log = closed_loop(fresh, straight_reference(), state(v=8.0), 12.0,
                      lambda st, previous, k: request(st, v_ref=8.0, d_max=0.3,
                                                      obstacles=obstacle))
    s = np.array([st.s_m for st, _ in log])
    d = np.array([st.d_m for st, _ in log])
    assert ellipse(s, d, obstacle[0, 0]).min() >= 1.0 - 0.02
    assert s.max() <= 40.0 - 5.0 + 0.01       # never past the obstacle's inflated rear
    assert log[-1][0].v_mps < 0.05
    assert log[-1][0].s_m > 40.0 - 5.0 - 1.0  # and stopped close behind, not far away
    assert all(not result.fallback for _, result in log)


def test_follows_a_slower_car_it_cannot_pass(fresh):
    def make(st, previous, k):
        obstacle = np.empty((1, N + 1, 4))
        t = (k + np.arange(N + 1)) * DT_S
        obstacle[0, :, 0] = 30.0 + 5.0 * t
        obstacle[0, :, 1] = 0.0
        obstacle[0, :, 2:] = [4.8, 2.2]
        return request(st, v_ref=12.0, d_max=0.5, obstacles=obstacle)
    log = closed_loop(fresh, straight_reference(600.0), state(v=10.0), 15.0, make)
    gaps = np.array([30.0 + 5.0 * k * DT_S - 4.8 - st.s_m for k, (st, _) in enumerate(log)])
    assert gaps.min() >= -0.05
    assert log[-1][0].v_mps == pytest.approx(5.0, abs=0.3)


def test_an_empty_obstacle_array_is_inert():
    reference = arc_reference(80.0)
    with_slots = MpcPlanner(TEST_PARAMS, WHEELBASE_M)
    without_slots = MpcPlanner(dataclasses.replace(TEST_PARAMS, max_objects=0), WHEELBASE_M)
    st = state(d=0.3, epsi=-0.02, v=7.0)
    empty = with_slots.solve(request(st, obstacles=np.zeros((0, N + 1, 4))), reference)
    baseline = without_slots.solve(request(st, obstacles=np.zeros((0, N + 1, 4))), reference)
    with_slots.reset()
    as_list = with_slots.solve(request(st, obstacles=[]), reference)
    for result in (empty, as_list):
        assert result.status == 'optimal'
        assert np.allclose(result.states(), baseline.states(), atol=1e-6)
        assert result.soft_violation['obstacle'] == 0.0


# ---------------------------------------------------------------- input validation
@pytest.mark.parametrize('field', ['s_m', 'd_m', 'epsi_rad', 'v_mps', 'steer_rad',
                                   'accel_mps2'])
def test_non_finite_state_raises_an_input_error_naming_the_field(fresh, field):
    st = dataclasses.replace(state(), **{field: math.nan})
    with pytest.raises(MpcInputError, match=f'state.{field}'):
        fresh.solve(request(st), straight_reference())


def test_malformed_requests_raise_input_errors(fresh):
    reference = straight_reference()
    bad_obstacles = static_obstacle(20.0, 0.0, 3.0, 1.5)
    bad_obstacles[0, 5, 1] = math.inf
    cases = {
        'v_ref_mps': dataclasses.replace(request(state()), v_ref_mps=np.full(N, 10.0)),
        'd_ref_m': dataclasses.replace(request(state()), d_ref_m=np.full(N + 1, math.nan)),
        'obstacles contains': request(state(), obstacles=bad_obstacles),
        'max_objects': request(state(), obstacles=np.ones((11, N + 1, 4))),
        'd_min_m must be <= d_max_m': request(state(), d_min=1.0, d_max=-1.0),
        's_stop_m': request(state(), s_stop=math.nan),
        'must be >= 0': request(state(), v_ref=-1.0),
    }
    assert issubclass(MpcInputError, ValueError)
    for message, bad in cases.items():
        with pytest.raises(MpcInputError, match=message):
            fresh.solve(bad, reference)


def test_params_are_declarable_and_validated():
    specs = param_specs(MpcParams)
    for name, (_, spec, _) in specs.items():
        assert spec.description, name
        assert spec.min is not None and spec.max is not None, name
    assert params_from_dict(MpcParams, {'max_objects': 30}).max_objects == 30
    with pytest.raises(ValueError, match='fallback_decel_mps2'):
        MpcParams(fallback_decel_mps2=5.0)
    with pytest.raises(ValueError, match='wheelbase_m'):
        MpcPlanner(MpcParams(), -1.0)


# ---------------------------------------------------------------- fallbacks
def _fail_solver(planner, monkeypatch):
    """Make every NLP solve end on NaN, as a diverged solver would."""
    for name, (buffer, trigger) in list(planner._buffers.items()):
        def diverged(trigger=trigger):
            trigger()
            planner._res['x'][::7] = np.nan
        monkeypatch.setitem(planner._buffers, name, (buffer, diverged))


def _assert_safe_stop_profile(result, params, v0):
    assert result.status == 'comfortable_stop' and result.fallback
    assert 'MPC failed' in result.message
    assert result.v_mps[0] == pytest.approx(v0)
    assert np.all(np.diff(result.v_mps) <= 1e-9)          # monotone deceleration
    assert np.all(result.v_mps >= 0.0)
    assert np.all(result.accel_mps2 <= 1e-9)
    assert np.all(result.accel_mps2 >= -params.fallback_decel_mps2 - 1e-9)
    assert np.all(np.diff(result.s_m) >= -1e-9)           # never backwards


def test_solver_failure_without_a_previous_plan_stops_comfortably(monkeypatch):
    planner = MpcPlanner(TEST_PARAMS, WHEELBASE_M)
    _fail_solver(planner, monkeypatch)
    result = planner.solve(request(state(v=5.0, steer=0.02, accel=0.5)), straight_reference())
    _assert_safe_stop_profile(result, planner.params, 5.0)
    assert result.v_mps[-1] == 0.0                        # 5 m/s stops within the horizon
    assert np.all(result.steer_rad == 0.02)               # steering held
    assert 'non-finite' in result.message


def test_solver_failure_after_a_good_plan_reuses_it_shifted(monkeypatch):
    planner = MpcPlanner(TEST_PARAMS, WHEELBASE_M)
    reference = straight_reference()
    good = planner.solve(request(state(v=8.0), stamp=0.0), reference)
    assert not good.fallback
    _fail_solver(planner, monkeypatch)
    shifted = planner.solve(request(state(s=good.s_m[1], v=good.v_mps[1]), stamp=0.1),
                            reference)
    assert shifted.status == 'shifted_previous' and shifted.fallback
    assert np.allclose(shifted.s_m[:-1], good.s_m[1:])
    assert np.allclose(shifted.v_mps[:-1], good.v_mps[1:])
    # Too old to reuse: the comfortable stop takes over.
    late = planner.solve(request(state(s=good.s_m[20], v=good.v_mps[20]), stamp=2.0),
                         reference)
    _assert_safe_stop_profile(late, planner.params, good.v_mps[20])


def test_a_tiny_cpu_budget_produces_a_fallback():
    params = MpcParams(max_cpu_time_s=1e-4, max_cpu_time_cold_s=1e-4, max_cpu_time_rescue_s=1e-4)
    planner = MpcPlanner(params, WHEELBASE_M)
    # The first guess drives straight through the obstacle; with no time to solve, that
    # infeasible guess must not be returned as a plan.
    obstacle = static_obstacle(15.0, 0.0, 4.0, 1.8)
    result = planner.solve(request(state(v=6.0), obstacles=obstacle, d_max=4.0),
                           straight_reference())
    _assert_safe_stop_profile(result, params, 6.0)
    assert 'User_Requested_Stop' in result.message


def test_a_solver_exception_produces_a_fallback(monkeypatch):
    planner = MpcPlanner(TEST_PARAMS, WHEELBASE_M)

    def explode():
        raise RuntimeError('qrqp: something went wrong')
    for name, (buffer, _) in list(planner._buffers.items()):
        monkeypatch.setitem(planner._buffers, name, (buffer, explode))
    result = planner.solve(request(state(v=4.0)), straight_reference())
    _assert_safe_stop_profile(result, planner.params, 4.0)
    assert 'something went wrong' in result.message


# ---------------------------------------------------------------- warm start
def test_warm_start_gives_the_cold_start_answer():
    reference = arc_reference(70.0)
    obstacle = static_obstacle(45.0, -1.7, 5.0, 2.2)
    warm = MpcPlanner(TEST_PARAMS, WHEELBASE_M)
    log = closed_loop(warm, reference, state(d=0.2, v=7.0), 2.0,
                      lambda st, previous, k: request(st, v_ref=9.0, obstacles=obstacle,
                                                      stamp=k * DT_S))
    st = log[-1][0]
    final_request = request(st, v_ref=9.0, obstacles=obstacle, stamp=len(log) * DT_S)
    warm_result = warm.solve(final_request, reference)
    cold = MpcPlanner(dataclasses.replace(TEST_PARAMS, max_iterations_cold=50), WHEELBASE_M)
    cold_result = cold.solve(final_request, reference)
    assert warm_result.status == 'optimal' and cold_result.status == 'optimal'
    assert np.allclose(warm_result.s_m, cold_result.s_m, atol=0.02)
    assert np.allclose(warm_result.d_m, cold_result.d_m, atol=0.02)
    assert np.allclose(warm_result.v_mps, cold_result.v_mps, atol=0.02)
    assert np.allclose(warm_result.steer_rad, cold_result.steer_rad, atol=2e-3)


def test_standing_at_the_stop_point_holds_without_solving(fresh):
    result = fresh.solve(request(state(s=59.98, v=0.0), v_ref=0.0, s_stop=60.0),
                         straight_reference())
    assert result.status == 'optimal' and result.iterations == 0
    assert np.all(result.v_mps == 0.0) and np.all(result.s_m == 59.98)


def test_model_rollout_matches_the_plan(fresh):
    reference = arc_reference(60.0)
    result = fresh.solve(request(state(d=0.4, v=6.0)), reference)
    inputs = np.stack([result.steer_rate_rps, result.jerk_mps3], axis=-1)
    rollout = mpc.simulate_frenet(result.states()[0], inputs, reference.kappa_at, DT_S,
                                  WHEELBASE_M)
    # The plan is dynamically consistent: re-integrating its inputs reproduces its states.
    assert np.allclose(rollout[:, :2], result.states()[:, :2], atol=0.02)
    assert np.allclose(rollout[:, 3], result.v_mps, atol=1e-3)


def test_an_ego_beside_a_blocking_obstacle_brakes_without_steering_into_it(fresh):
    # Behavior called a pass off with the ego already beside the van: the corridor is back to
    # the lane (no room), the lateral reference is the lane centre, the stop bound lies behind.
    obstacle = static_obstacle(40.0, 0.0, 8.0, 2.7)
    log = closed_loop(fresh, straight_reference(), state(s=35.0, d=2.9, epsi=-0.15, v=2.0),
                      4.0, lambda st, previous, k: request(st, v_ref=5.0, d_max=1.5,
                                                           obstacles=obstacle))
    s = np.array([st.s_m for st, _ in log])
    d = np.array([st.d_m for st, _ in log])
    assert log[-1][0].v_mps < 0.05                       # it stopped
    assert ellipse(s, d, obstacle[0, 0]).min() >= 1.0 - 0.05  # without closing in
    assert all(not result.fallback for _, result in log)
