"""Benchmark: the planner's CasADi MPC (robotaxi_stack.planning.mpc) in a rolling closed loop.

Usage: python bench/mpc_solve.py [--quick]

Scenario (deterministic, seed 3): a two-lane road (straight 80 m, a 90 degree left arc of 60 m
radius, straight on), the ego in the right lane (reference = its lane centre) at 8 m/s with a
speed reference of 12 m/s, lowered to 2 m/s^2 of lateral acceleration in the arc and by a
braking profile to a stop line that comes and goes (30 s cycle: present for 12 s). Lateral
bounds: own lane, plus the left lane when no oncoming car is within 60 m (so parked cars can be
nudged around, otherwise the MPC follows or stops). Objects, predicted at constant speed along
the path: oncoming cars in the left lane, slower cars ahead in the own lane, cars parked half in
the lane, pedestrians walking along the kerb; an object that falls 30 m behind or 150 m ahead
is respawned 40-120 m ahead, so the count stays fixed. Closed loop: after each solve the state
advances to the plan's state at t = step_s plus noise (1 cm, 2 cm/s, 2 mrad, ...), so every
solve is warm-started from the shifted previous solution as on the vehicle.

Measured: wall time of MpcPlanner.solve (input checks, warm start, parameters, NLP, result)
with 0, 10 and 30 objects (max_objects = 30 for the last: the planner node keeps the nearest
max_objects = 10, so 30 shows how the solve scales if that cap is raised). The first, cold
solve of each run is reported separately and excluded from the percentiles.

Baseline, measured on requests recorded from the same closed loops: the same optimal control
problem written the way a first CasADi user writes it, `naive_opti_solve`: casadi.Opti with MX
symbols, rebuilt on every call, IPOPT with default options (no expand, no warm start), every
obstacle as an ellipse constraint, the stop as a per-step constraint, v_ref as given. Its
median and p99 over the sampled requests, and the speedups (baseline / MPC) are reported, plus
how far the baseline's plan is from the MPC's (max |dd| and |dv| over the horizon; they differ
where the MPC shapes v_ref itself: before stop lines and behind cars it cannot pass).

The last stdout line is the JSON result.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import math
import os
import pathlib
import platform
import sys
import time

import casadi as ca
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'src'))

from robotaxi_stack.planning.mpc import (  # noqa: E402
    MpcParams, MpcPlanner, MpcRequest, MpcResult, MpcState, ReferenceProfile)

WHEELBASE_M = 2.579
LANE_WIDTH_M = 3.5
CRUISE_MPS = 12.0
REF_LAT_ACCEL_MPS2 = 2.0
STOP_DECEL_MPS2 = 1.5
STOP_CYCLE_S = 30.0
STOP_PRESENT_S = 12.0
TARGET_MEDIAN_MS = 5.0
TARGET_P99_MS = 15.0
SEED = 3


def make_reference() -> ReferenceProfile:
    """Right-lane centre line: 80 m straight, 90 deg left arc of radius 60 m, 600 m straight."""
    radius, straight = 60.0, 80.0
    arc = 0.5 * math.pi * radius
    s = np.arange(0.0, straight + arc + 600.0, 0.5)
    kappa = np.where((s >= straight) & (s < straight + arc), 1.0 / radius, 0.0)
    yaw = np.r_[0.0, np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * np.diff(s))]
    x = np.r_[0.0, np.cumsum(0.5 * (np.cos(yaw[1:]) + np.cos(yaw[:-1])) * np.diff(s))]
    y = np.r_[0.0, np.cumsum(0.5 * (np.sin(yaw[1:]) + np.sin(yaw[:-1])) * np.diff(s))]
    return ReferenceProfile(s_m=s, x_m=x, y_m=y, yaw_rad=yaw, kappa_1pm=kappa)


@dataclasses.dataclass
class Agent:
    kind: str
    s_m: float
    d_m: float
    v_mps: float           # along the path (negative: oncoming)
    half_length_m: float   # inflated by the ego's half length and a margin
    half_width_m: float    # inflated by the ego's half width and a margin


class World:
    """Objects around the ego in the path frame, respawned ahead to keep the count fixed."""

    EGO_HALF_LENGTH_M = 2.3
    EGO_HALF_WIDTH_M = 0.9
    MARGIN_M = 0.3

    def __init__(self, count: int, rng: np.random.Generator):
        self.rng = rng
        self.stop_line: dict[int, float] = {}  # stop-cycle index -> station of its stop line
        self.agents = [self._spawn(15.0 + 12.0 * i, i) for i in range(count)]

    def _spawn(self, s_m: float, index: int) -> Agent:
        kind = ('oncoming', 'leading', 'parked', 'pedestrian')[index % 4]
        rng = self.rng
        if kind == 'oncoming':
            size, d, v = (4.6, 1.9), LANE_WIDTH_M + rng.uniform(-0.2, 0.2), -rng.uniform(6, 12)
        elif kind == 'leading':
            size, d, v = (4.6, 1.9), rng.uniform(-0.2, 0.2), rng.uniform(5.0, 10.0)
        elif kind == 'parked':
            size, d, v = (4.6, 1.9), -2.6 + rng.uniform(-0.3, 0.3), 0.0
        else:
            size, d, v = (0.6, 0.6), -3.2 + rng.uniform(-0.3, 0.3), rng.uniform(-1.5, 1.5)
        return Agent(kind, s_m, d, v, 0.5 * size[0] + self.EGO_HALF_LENGTH_M + self.MARGIN_M,
                     0.5 * size[1] + self.EGO_HALF_WIDTH_M + self.MARGIN_M)

    def step(self, ego_s_m: float, dt_s: float) -> None:
        for i, agent in enumerate(self.agents):
            agent.s_m += agent.v_mps * dt_s
            if agent.kind == 'leading' and agent.s_m - ego_s_m < 12.0:
                # A car that the ego closes in on turns off (keeps the road moving).
                agent.s_m = ego_s_m - 100.0
            if agent.s_m < ego_s_m - 30.0 or agent.s_m > ego_s_m + 150.0:
                self.agents[i] = self._spawn(ego_s_m + self.rng.uniform(40.0, 120.0), i)

    def predictions(self, steps: int, dt_s: float) -> np.ndarray:
        """(K, steps+1, 4) constant-speed predictions: s, d, half length, half width."""
        t = np.arange(steps + 1) * dt_s
        out = np.empty((len(self.agents), steps + 1, 4))
        for j, agent in enumerate(self.agents):
            out[j, :, 0] = agent.s_m + agent.v_mps * t
            out[j, :, 1] = agent.d_m
            out[j, :, 2] = agent.half_length_m
            out[j, :, 3] = agent.half_width_m
        return out


def make_request(state: MpcState, plan: MpcResult | None, world: World, reference, time_s,
                 params: MpcParams) -> MpcRequest:
    """What the planner node would send: v_ref from curvature and the stop, lane bounds."""
    n, dt = params.horizon_steps, params.step_s
    if plan is None:
        s_pred = state.s_m + state.v_mps * np.arange(n + 1) * dt
    else:  # the previous plan's stations, shifted one step and re-anchored
        s_pred = np.r_[plan.s_m[1:], 2.0 * plan.s_m[-1] - plan.s_m[-2]]
        s_pred += state.s_m - s_pred[0]
    kappa = np.abs(reference.kappa_at(s_pred))
    v_ref = np.minimum(CRUISE_MPS, np.sqrt(REF_LAT_ACCEL_MPS2 / np.maximum(kappa, 1e-6)))
    s_stop = math.inf
    if time_s % STOP_CYCLE_S >= STOP_CYCLE_S - STOP_PRESENT_S - 8.0:
        # A stop line 60 m ahead appears 8 s before the stopped phase; it moves with the cycle.
        cycle = math.floor(time_s / STOP_CYCLE_S)
        s_stop = world.stop_line.setdefault(cycle, state.s_m + 60.0)
        if time_s % STOP_CYCLE_S >= STOP_CYCLE_S - 0.5:
            s_stop = math.inf
    if math.isfinite(s_stop):
        v_ref = np.minimum(v_ref, np.sqrt(2.0 * STOP_DECEL_MPS2 * np.maximum(s_stop - s_pred,
                                                                              0.0)))
    oncoming_near = any(a.kind == 'oncoming' and -10.0 < a.s_m - state.s_m < 60.0
                        for a in world.agents)
    d_min = np.full(n + 1, -0.5 * LANE_WIDTH_M + World.EGO_HALF_WIDTH_M)
    d_max = np.full(n + 1, (0.5 if oncoming_near else 1.5) * LANE_WIDTH_M
                    - World.EGO_HALF_WIDTH_M)
    obstacles = world.predictions(n, dt)
    return MpcRequest(state=state, v_ref_mps=v_ref, d_ref_m=np.zeros(n + 1), d_min_m=d_min,
                      d_max_m=d_max, s_stop_m=s_stop, obstacles=obstacles, stamp_s=time_s)


def closed_loop(objects: int, steps: int, record_every: int):
    """Run the loop; returns solve times (ms), results and the recorded (request, result)."""
    params = MpcParams(max_objects=max(objects, 10))
    planner = MpcPlanner(params, WHEELBASE_M)
    reference = make_reference()
    rng = np.random.default_rng(SEED)
    world = World(objects, rng)
    state = MpcState(s_m=0.0, d_m=0.0, epsi_rad=0.0, v_mps=8.0, steer_rad=0.0, accel_mps2=0.0)
    dt = params.step_s
    noise = np.array([0.01, 0.01, 0.002, 0.02, 0.001, 0.02])
    times_ms, results, recorded = [], [], []
    plan = None
    gc.collect()
    gc.disable()
    try:
        for k in range(steps):
            request = make_request(state, plan, world, reference, k * dt, params)
            start = time.perf_counter()
            plan = planner.solve(request, reference)
            times_ms.append((time.perf_counter() - start) * 1e3)
            results.append(plan)
            if k % record_every == record_every // 2:
                recorded.append((request, plan))
            x = plan.states()[1] + rng.normal(0.0, 1.0, 6) * noise
            x[3] = max(x[3], 0.0)
            state = MpcState(*map(float, x))
            world.step(state.s_m, dt)
    finally:
        gc.enable()
    return times_ms, results, recorded, params


def naive_opti_solve(params: MpcParams, wheelbase_m: float, request: MpcRequest,
                     reference: ReferenceProfile):
    """The baseline: the MPC's optimal control problem in casadi.Opti, rebuilt per call.

    Same dynamics (RK4), costs, limits and soft constraints as the task spec describes them
    (hard jerk limit, slacks with L1 + 0.01 L2 penalties like the MPC); obstacles all as
    ellipse constraints with one slack per object and step, the stop as s_k <= s_stop at every
    step, v_ref as given (none of the MPC's blocking/standstill handling); IPOPT defaults.
    Returns (states (N+1, 6), inputs (N, 2), IPOPT return status).
    """
    n, dt, wb, p = params.horizon_steps, params.step_s, wheelbase_m, params
    st = request.state
    v0 = max(st.v_mps, 0.0)
    # The same clipping of the measured state as the MPC (limits, and a deceleration the
    # jerk limit can release before standstill), or the problem can be infeasible.
    x0 = np.array([st.s_m, st.d_m, st.epsi_rad, v0,
                   min(max(st.steer_rad, -p.max_steer_rad), p.max_steer_rad),
                   max(min(max(st.accel_mps2, p.min_accel_mps2), p.max_accel_mps2),
                       -math.sqrt(2.0 * p.max_jerk_mps3 * v0))])
    s_guess = x0[0] + x0[3] * np.arange(n + 1) * dt
    kappa = reference.kappa_at(s_guess)
    opti = ca.Opti()
    X = opti.variable(6, n + 1)
    U = opti.variable(2, n)
    obstacles = np.asarray(request.obstacles, dtype=float).reshape(-1, n + 1, 4)
    slack_obs = opti.variable(max(len(obstacles), 1), n + 1)
    slack = opti.variable(3, n + 1)  # road, stop, lat accel

    def rhs(x, u, k):
        s_dot = x[3] * ca.cos(x[2]) / (1 - x[1] * k)
        return ca.vertcat(s_dot, x[3] * ca.sin(x[2]), x[3] * ca.tan(x[4]) / wb - k * s_dot,
                          x[5], u[0], u[1])

    opti.subject_to(X[:, 0] == x0)
    cost = 0
    for k in range(n):
        x, u = X[:, k], U[:, k]
        k1 = rhs(x, u, kappa[k])
        k2 = rhs(x + dt / 2 * k1, u, kappa[k])
        k3 = rhs(x + dt / 2 * k2, u, kappa[k])
        k4 = rhs(x + dt * k3, u, kappa[k])
        opti.subject_to(X[:, k + 1] == x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
        cost += p.weight_jerk * u[1] ** 2 + p.weight_steer_rate * u[0] ** 2
        opti.subject_to(opti.bounded(-p.max_steer_rate_rps, u[0], p.max_steer_rate_rps))
        opti.subject_to(opti.bounded(-p.max_jerk_mps3, u[1], p.max_jerk_mps3))
    for k in range(1, n + 1):
        x = X[:, k]
        factor = p.terminal_weight_factor if k == n else 1.0
        cost += factor * (p.weight_lateral * (x[1] - request.d_ref_m[k]) ** 2
                          + p.weight_heading * x[2] ** 2
                          + p.weight_speed * (x[3] - request.v_ref_mps[k]) ** 2)
        cost += p.weight_accel * x[5] ** 2
        cost += p.weight_steer * (x[4] - math.atan(wb * kappa[k])) ** 2
        opti.subject_to(opti.bounded(-p.max_steer_rad, x[4], p.max_steer_rad))
        opti.subject_to(opti.bounded(p.min_accel_mps2, x[5], p.max_accel_mps2))
        opti.subject_to(x[3] >= 0)
        lat = x[3] ** 2 * ca.tan(x[4]) / wb
        opti.subject_to(opti.bounded(-p.max_lat_accel_mps2 - slack[2, k], lat,
                                     p.max_lat_accel_mps2 + slack[2, k]))
        opti.subject_to(opti.bounded(request.d_min_m[k] - slack[0, k], x[1],
                                     request.d_max_m[k] + slack[0, k]))
        if math.isfinite(request.s_stop_m):
            opti.subject_to(x[0] <= request.s_stop_m + slack[1, k])
        for j, obstacle in enumerate(obstacles):
            s_j, d_j, a_j, b_j = obstacle[k]
            opti.subject_to(((x[0] - s_j) / a_j) ** 2 + ((x[1] - d_j) / b_j) ** 2
                            >= 1 - slack_obs[j, k])
    weights = [p.weight_slack_road, p.weight_slack_stop, p.weight_slack_lat_accel]
    for i, weight in enumerate(weights):
        cost += weight * ca.sum2(slack[i, :] + 0.01 * slack[i, :] ** 2)
    cost += p.weight_slack_obstacle * ca.sum1(ca.sum2(slack_obs + 0.01 * slack_obs ** 2))
    opti.subject_to(ca.vec(slack) >= 0)
    opti.subject_to(ca.vec(slack_obs) >= 0)
    opti.minimize(cost)
    guess = np.tile(x0[:, None], (1, n + 1))
    guess[0] = s_guess
    opti.set_initial(X, guess)
    opti.solver('ipopt', {'print_time': False, 'error_on_fail': False},
                {'print_level': 0, 'sb': 'yes'})
    solution = opti.solve()
    status = opti.stats()['return_status']
    return np.asarray(solution.value(X)).T, np.asarray(solution.value(U)).T, status


def percentiles(samples_ms) -> dict:
    samples = np.asarray(samples_ms)
    return {'median_ms': round(float(np.median(samples)), 3),
            'p90_ms': round(float(np.percentile(samples, 90)), 3),
            'p99_ms': round(float(np.percentile(samples, 99)), 3),
            'max_ms': round(float(np.max(samples)), 3), 'samples': int(len(samples))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='shorter loops, fewer baselines')
    args = parser.parse_args()
    steps = 200 if args.quick else 900
    baseline_samples = 5 if args.quick else 20
    metrics, baseline, ratio = {}, {}, {}
    below_targets = []
    recorded_by_count = {}
    for objects in (0, 10, 30):
        record_every = max(steps // baseline_samples, 1)
        times_ms, results, recorded, params = closed_loop(objects, steps, record_every)
        recorded_by_count[objects] = (recorded, params)
        statuses = collections.Counter(r.status for r in results)
        warm = percentiles(times_ms[1:])
        metrics[f'objects_{objects}'] = warm | {
            'cold_first_solve_ms': round(times_ms[0], 3),
            'mean_iterations': round(float(np.mean([r.iterations for r in results])), 2),
            'statuses': dict(statuses),
            'osqp_rescues': sum('rescue' in r.message for r in results),
            'max_obstacle_violation': round(max(r.soft_violation.get('obstacle', 0.0)
                                                for r in results), 4),
            'max_objects': params.max_objects}
        print(f'{objects:>2} objects: median {warm["median_ms"]:.2f} ms, p99 '
              f'{warm["p99_ms"]:.2f} ms, max {warm["max_ms"]:.2f} ms (cold first solve '
              f'{times_ms[0]:.1f} ms) over {len(times_ms) - 1} warm solves; {dict(statuses)}')
        if objects == 10:
            if warm['median_ms'] > TARGET_MEDIAN_MS:
                below_targets.append(f'objects_10.median_ms={warm["median_ms"]}')
            if warm['p99_ms'] > TARGET_P99_MS:
                below_targets.append(f'objects_10.p99_ms={warm["p99_ms"]}')

    reference = make_reference()
    for objects in (0, 10):
        recorded, params = recorded_by_count[objects]
        times_ms, statuses, dd, dv = [], collections.Counter(), [], []
        for request, result in recorded:
            start = time.perf_counter()
            states, _, status = naive_opti_solve(params, WHEELBASE_M, request, reference)
            times_ms.append((time.perf_counter() - start) * 1e3)
            statuses[status] += 1
            dd.append(float(np.max(np.abs(states[:, 1] - result.d_m))))
            dv.append(float(np.max(np.abs(states[:, 3] - result.v_mps))))
        key = f'opti_ipopt_objects_{objects}'
        baseline[key] = percentiles(times_ms) | {
            'statuses': dict(statuses), 'max_abs_dd_vs_mpc_m': round(max(dd), 3),
            'median_abs_dd_vs_mpc_m': round(float(np.median(dd)), 4),
            'max_abs_dv_vs_mpc_mps': round(max(dv), 3),
            'median_abs_dv_vs_mpc_mps': round(float(np.median(dv)), 4)}
        ours = metrics[f'objects_{objects}']
        ratio[f'objects_{objects}'] = {
            'median_speedup': round(baseline[key]['median_ms'] / ours['median_ms'], 1),
            'p99_speedup': round(baseline[key]['p99_ms'] / ours['p99_ms'], 1)}
        print(f'baseline Opti+IPOPT rebuilt per call, {objects} objects: median '
              f'{baseline[key]["median_ms"]:.1f} ms, p99 {baseline[key]["p99_ms"]:.1f} ms over '
              f'{len(times_ms)} requests ({dict(statuses)}); speedup '
              f'{ratio[f"objects_{objects}"]["median_speedup"]}x median')

    result = {
        'benchmark': 'mpc_solve',
        'metrics': metrics,
        'baseline': baseline,
        'ratio': ratio,
        'targets': {'objects_10_median_ms': TARGET_MEDIAN_MS, 'objects_10_p99_ms': TARGET_P99_MS,
                    'met': not below_targets, 'below': below_targets},
        'config': {'quick': args.quick, 'closed_loop_steps': steps,
                   'horizon_steps': MpcParams().horizon_steps, 'step_s': MpcParams().step_s,
                   'solver': 'sqpmethod+qrqp (RTI, Gauss-Newton)', 'seed': SEED,
                   'python': platform.python_version(), 'casadi': ca.__version__,
                   'numpy': np.__version__, 'cpus': os.cpu_count()},
    }
    print(json.dumps(result))


if __name__ == '__main__':
    main()
