"""Planner core: mission goal -> route -> behavior -> MPC -> trajectory and 50 Hz commands.

Pure (numpy, CasADi through planning.mpc, Lanelet2 through planning.route): the node feeds
it odometry, objects and the mission goal and publishes what it returns.

Cycle: `plan()` at 10 Hz rebuilds the reference path when the goal changes or the car leaves
the path, asks the behavior layer for stops, speeds, corridor and obstacles, and solves the
MPC from the measured state. `command()` at 50 Hz samples the latest plan at the time since it
was solved, looking ahead by the actuator lags (steering and drive respond with first-order
lags, so a command sampled `lag` later in the plan arrives on time). A car standing at its stop
gets a brake-hold command instead.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from robotaxi_stack.common.params import param
from robotaxi_stack.planning import behavior as bh
from robotaxi_stack.planning import mpc
from robotaxi_stack.planning.route import (ReferencePath, build_reference_path, plan_route)
from robotaxi_stack.sim.maps import MapError


class PlannerInputError(ValueError):
    """Non-finite or otherwise unusable planner input (names the field)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlannerParams:
    off_path_replan_m: float = param(3.0, min=0.5, max=20.0,
                                     description='lateral distance that triggers a new path')
    steer_lookahead_s: float = param(0.1, min=0.0, max=1.0,
                                     description='steering command lead (actuator lag)')
    accel_lookahead_s: float = param(0.2, min=0.0, max=1.0,
                                     description='acceleration command lead (actuator lag)')
    hold_accel_mps2: float = param(-1.5, min=-5.0, max=0.0,
                                   description='brake command while standing at a stop')
    hold_distance_m: float = param(0.5, min=0.0, max=5.0,
                                   description='stop point this close and at rest: hold')
    prediction_step_s: float = param(0.5, min=0.05, max=2.0,
                                     description='step of constant-velocity predictions')
    prediction_horizon_s: float = param(8.0, min=1.0, max=15.0,
                                        description='horizon of constant-velocity predictions')


@dataclasses.dataclass(frozen=True)
class EgoInput:
    """Measured ego state, map frame: base_link x, y [m], yaw [rad], speed [m/s], front wheel
    angle [rad]."""

    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    steer_rad: float

    def check(self) -> None:
        for field in dataclasses.fields(self):
            if not math.isfinite(getattr(self, field.name)):
                raise PlannerInputError(f'ego.{field.name} = {getattr(self, field.name)}: '
                                        'must be finite')


@dataclasses.dataclass(frozen=True)
class Goal:
    """Where the current mission leg ends (base_link pose, map frame); active False = hold."""

    x_m: float
    y_m: float
    yaw_rad: float
    active: bool = True


@dataclasses.dataclass(frozen=True)
class PlanOutput:
    """One planning cycle: trajectory arrays over the horizon (t_s from the plan time; x, y,
    yaw in map; v, accel, steer, yaw_rate), the behavior decision and the MPC result."""

    t_s: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    yaw_rad: np.ndarray
    v_mps: np.ndarray
    accel_mps2: np.ndarray
    steer_rad: np.ndarray
    yaw_rate_rps: np.ndarray
    behavior: bh.BehaviorPlan | None
    result: mpc.MpcResult | None
    message: str = ''


@dataclasses.dataclass(frozen=True)
class Command:
    """One control command (ControlCommand fields)."""

    steering_angle_rad: float
    steering_rate_rps: float
    velocity_mps: float
    acceleration_mps2: float
    jerk_mps3: float


class PlannerCore:
    """Holds the route, the behavior memory and the MPC warm start between cycles."""

    def __init__(self, town, ego: bh.EgoGeometry, wheelbase_m: float,
                 params: PlannerParams, behavior_params: bh.BehaviorParams,
                 mpc_params: mpc.MpcParams):
        self.town = town
        self.ego = ego
        self.wheelbase_m = wheelbase_m
        self.params = params
        self.behavior_params = behavior_params
        self.mpc_params = mpc_params
        self.mpc = mpc.MpcPlanner(mpc_params, wheelbase_m)
        self.goal: Goal | None = None
        self.path: ReferencePath | None = None
        self.reference: mpc.ReferenceProfile | None = None
        self.memory = bh.BehaviorMemory()
        self.last_plan: PlanOutput | None = None
        self.last_plan_t_s = -math.inf
        self.last_s_m: float | None = None
        self.route_error = ''

    # -- inputs ----------------------------------------------------------------------------
    def set_goal(self, goal: Goal | None) -> None:
        """A new leg (different goal position) resets the route and the behavior memory."""
        if goal is not None and not all(math.isfinite(v) for v in (goal.x_m, goal.y_m,
                                                                     goal.yaw_rad)):
            raise PlannerInputError(f'goal {goal} holds non-finite values')
        same = (goal is not None and self.goal is not None
                and math.hypot(goal.x_m - self.goal.x_m, goal.y_m - self.goal.y_m) < 0.01)
        if not same and goal is not None and goal.active:
            self.path = None
            self.memory = bh.BehaviorMemory()
        self.goal = goal

    def prediction_times(self) -> np.ndarray:
        return np.arange(0.0, self.params.prediction_horizon_s + 1e-9,
                         self.params.prediction_step_s)

    # -- planning --------------------------------------------------------------------------
    def _ensure_path(self, ego: EgoInput) -> None:
        goal = self.goal
        if goal is None:
            return
        if self.path is not None and self.last_s_m is not None:
            s, d = self.path.project(np.array([ego.x_m, ego.y_m]), self.last_s_m)
            if abs(float(d)) <= self.params.off_path_replan_m and \
                    float(s) < self.path.length_m - 1.0:
                return
        route = plan_route(self.town, (ego.x_m, ego.y_m), ego.yaw_rad, (goal.x_m, goal.y_m),
                           goal.yaw_rad)
        path = build_reference_path(self.town, route, (ego.x_m, ego.y_m), ego.yaw_rad,
                                    (goal.x_m, goal.y_m))
        self.path = path
        self.reference = mpc.ReferenceProfile(path.s_m, path.xy_m[:, 0], path.xy_m[:, 1],
                                              path.yaw_rad, path.kappa_1pm)
        self.last_s_m = None
        self.mpc.reset()

    def plan(self, t_s: float, ego: EgoInput, objects: bh.Objects) -> PlanOutput:
        """One 10 Hz cycle. Raises PlannerInputError for non-finite ego input; a goal that
        cannot be routed gives a hold plan whose message says why."""
        ego.check()
        if not math.isfinite(t_s):
            raise PlannerInputError(f't_s = {t_s}: must be finite')
        try:
            self._ensure_path(ego)
            self.route_error = ''
        except MapError as error:
            self.route_error = str(error)
            self.path = None
        if self.path is None or self.reference is None:
            out = self.hold_plan(t_s, ego, self.route_error or 'no goal')
        else:
            out = self._mpc_plan(t_s, ego, objects)
        self.last_plan, self.last_plan_t_s = out, t_s
        return out

    def _mpc_plan(self, t_s: float, ego: EgoInput, objects: bh.Objects) -> PlanOutput:
        path, reference = self.path, self.reference
        s, d = path.project(np.array([ego.x_m, ego.y_m]), self.last_s_m)
        s, d = float(s), float(d)
        self.last_s_m = s
        path_yaw = float(np.interp(s, path.s_m, path.yaw_rad))
        epsi = math.remainder(ego.yaw_rad - path_yaw, math.tau)
        goal_active = self.goal is not None and self.goal.active
        n = self.mpc_params.horizon_steps
        plan = bh.plan_behavior(path, s, d, ego.speed_mps, t_s, objects, self.ego, self.memory,
                                self.behavior_params, steps=n, step_s=self.mpc_params.step_s,
                                goal_active=goal_active, max_objects=self.mpc_params.max_objects)
        accel = self._planned_accel(t_s)
        state = mpc.MpcState(s, d, epsi, max(0.0, ego.speed_mps), ego.steer_rad, accel)
        request = mpc.MpcRequest(state=state, v_ref_mps=plan.v_ref_mps, d_ref_m=plan.d_ref_m,
                                 d_min_m=plan.d_min_m, d_max_m=plan.d_max_m,
                                 s_stop_m=plan.s_stop_m, obstacles=plan.obstacles, stamp_s=t_s)
        result = self.mpc.solve(request, reference)
        x, y, yaw_path = reference.to_xy(result.s_m, result.d_m)
        yaw = np.asarray(yaw_path) + result.epsi_rad
        yaw_rate = result.v_mps * np.tan(result.steer_rad) / self.wheelbase_m
        return PlanOutput(result.t_s, np.asarray(x), np.asarray(y), yaw, result.v_mps,
                          result.accel_mps2, result.steer_rad, yaw_rate, plan, result,
                          result.message if result.fallback else '')

    def _planned_accel(self, t_s: float) -> float:
        """Acceleration the previous plan commands now (keeps the jerk continuous)."""
        last = self.last_plan
        if last is None or last.result is None:
            return 0.0
        return float(np.interp(t_s - self.last_plan_t_s, last.t_s, last.accel_mps2))

    def hold_plan(self, t_s: float, ego: EgoInput, message: str) -> PlanOutput:
        """Stand still (or brake comfortably to a stop) where the car is; it becomes the
        plan that command() samples."""
        n = self.mpc_params.horizon_steps
        t = np.arange(n + 1) * self.mpc_params.step_s
        decel = self.behavior_params.comfort_decel_mps2
        v = np.maximum(0.0, ego.speed_mps - decel * t)
        dist = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * np.diff(t))])
        x = ego.x_m + dist * math.cos(ego.yaw_rad)
        y = ego.y_m + dist * math.sin(ego.yaw_rad)
        accel = np.where(v > 0.0, -decel, self.params.hold_accel_mps2)
        self.mpc.reset()
        out = PlanOutput(t, x, y, np.full(n + 1, ego.yaw_rad), v, accel,
                         np.full(n + 1, ego.steer_rad), np.zeros(n + 1), None, None, message)
        self.last_plan, self.last_plan_t_s = out, t_s
        return out

    # -- 50 Hz commands --------------------------------------------------------------------
    def command(self, t_s: float, ego: EgoInput) -> Command:
        """The command for now from the latest plan (hold the brake at a reached stop)."""
        plan = self.last_plan
        if plan is None:
            return Command(ego.steer_rad, 0.0, 0.0, self.params.hold_accel_mps2, 0.0)
        elapsed = t_s - self.last_plan_t_s
        at_rest = ego.speed_mps < self.behavior_params.stopped_speed_mps
        stop = plan.behavior.s_stop_m if plan.behavior is not None else -math.inf
        s_now = self.last_s_m if self.last_s_m is not None else -math.inf
        if at_rest and (plan.behavior is None or stop - s_now < self.params.hold_distance_m):
            steer = float(np.interp(elapsed, plan.t_s, plan.steer_rad))
            return Command(steer, 0.0, 0.0, self.params.hold_accel_mps2, 0.0)
        steer = float(np.interp(elapsed + self.params.steer_lookahead_s, plan.t_s,
                                plan.steer_rad))
        accel = float(np.interp(elapsed + self.params.accel_lookahead_s, plan.t_s,
                                plan.accel_mps2))
        velocity = float(np.interp(elapsed, plan.t_s, plan.v_mps))
        if plan.result is not None:
            mid = plan.t_s[:-1]
            steer_rate = float(np.interp(elapsed, mid, plan.result.steer_rate_rps))
            jerk = float(np.interp(elapsed, mid, plan.result.jerk_mps3))
        else:
            steer_rate = jerk = 0.0
        return Command(steer, steer_rate, velocity, accel, jerk)
