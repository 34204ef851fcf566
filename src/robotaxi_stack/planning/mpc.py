"""Path-following MPC in Frenet coordinates along a reference path (pure core: numpy + CasADi).

Model
-----
Nonlinear kinematic bicycle referenced at the rear axle (base_link), in the curvilinear frame of a
reference path: station `s` along the path, lateral offset `d` (+ left), heading error
`epsi = yaw - ref_yaw(s)`::

    x = [s_m, d_m, epsi_rad, v_mps, steer_rad, accel_mps2],   u = [steer_rate_rps, jerk_mps3]
    s'    = v cos(epsi) / (1 - d kappa)        d' = v sin(epsi)
    epsi' = v tan(steer) / L - kappa s'        v' = accel,  steer' = steer_rate,  accel' = jerk

with L the wheelbase and kappa the path curvature. Steer and acceleration are states so that
their rates (steering rate, jerk) are the inputs and can be limited and penalised. Each step of
`step_s` is integrated with `rk4_substeps` classic RK4 sub-steps; kappa is constant per step
and sampled from the ReferenceProfile at the stations predicted by the warm start (the previous
solution shifted in time), as the curvature at the mid-station of each step.

Optimal control problem (multiple shooting, `horizon_steps` N steps)
------------------------------------------------------------------
Cost, summed over the predicted states k = 1..N and the inputs k = 0..N-1::

    w_lat (d_k - d_ref_k)^2 + w_head epsi_k^2 + w_speed (v_k - v_ref_k)^2 + w_accel accel_k^2
    + w_steer (steer_k - atan(L kappa_k))^2 + w_jerk jerk_k^2 + w_steer_rate steer_rate_k^2
    + slack penalties

with the lateral, heading and speed terms of the last state scaled by `terminal_weight_factor`,
plus, when a slow car (v <= `stop_reach_speed_mps`) has its stop within `stop_reach_distance_m`,
w_reach (s_N - s_stop)^2: near a stop v_ref is small, and a car standing 1.1 m short of its
dropoff with a 0.2 rad heading error found standing cheaper than driving on (its lateral and
heading cost grow before steering can act; at v = 0 steering has no first-order effect), so it
waited there for ever.
The steer term is relative to the curvature feed-forward so that following an arc costs
nothing (a plain steer^2 term would trade lateral offset for less steering on every curve).
Speed is tracked in time; stopping precisely relies on v_ref decelerating to 0 at s_stop (the
caller's profile, sampled at the previous plan's stations), and the MPC caps v_ref itself with
a `stop_decel_mps2` braking profile before every stop bound (below), so a cruise v_ref in front
of a stop neither pushes the whole horizon against the bound nor creeps up to it.

Hard constraints: |steer| <= max_steer_rad, |steer_rate| <= max_steer_rate_rps, |jerk| <=
max_jerk_mps3, min_accel_mps2 <= accel <= max_accel_mps2, v >= 0. The measured state is clipped
into these limits (and a near-standstill deceleration to what the jerk limit can release
before v = 0), so the hard constraints are always feasible. Soft constraints, each with one
slack per step and an exact (L1) penalty plus a small quadratic one, so that the problem stays
feasible and the least violating plan comes out when the world allows no clean one: lateral
acceleration |v^2 tan(steer) / L| <= max_lat_accel_mps2, the road bounds d_min_k <= d_k <=
d_max_k, the stop s_k <= s_stop_m (weighted so that an infeasible stop still returns the
strongest braking the hard limits allow: the deceleration ramps at the jerk limit to
min_accel_mps2) and collision avoidance, ((s_k - s_jk) / a_j)^2 + ((d_k - d_jk) / b_j)^2 >= 1
for every obstacle slot j. The obstacles enter as ONE row per step, a smooth minimum over the
slots (see _soft_min: qrqp's cost per iteration grows steeply with rows, 0.28 / 0.55 / 1.8 ms
per iteration for 0 / 10 / 30 ellipse rows per step); an unused slot gets a 1e6 offset on its
ellipse value, so it drops out of the minimum with neither a value nor a gradient that acts.
Every reported soft violation (MpcResult.soft_violation) is measured on the returned plan.

Blocking obstacles: the ellipse constraint is non-convex, and when the corridor leaves no room
to pass, a speed reference that pulls into the obstacle makes every predicted state slide along
its front (dozens of active constraints changing per iteration; qrqp then needs hundreds of ms).
So, per step k, an obstacle ahead of the ego (its centre s_j0 ahead of s_0) whose lateral band
[d_jk - b_j, d_jk + b_j] leaves no room inside [d_min_k, d_max_k] on either side is treated as
a stop: it drops out of the ellipse row and the stop bound becomes min(s_stop, s_jk - a_j) (a
linear, convex constraint; for a moving obstacle it is a following constraint). Passable
obstacles keep their ellipse, so the MPC nudges around them. An ego whose base_link is already
past s_j0 - a_j0 (beside the obstacle when behavior calls a pass off, or after a sudden
appearance) gets both: the stop bound behind it brakes as hard as the limits allow, and the
ellipse keeps the lateral reference from steering it into the obstacle (the parked-van pass
with the ONNX detector collided this way). Since v >= 0 makes s monotone,
a stop row is only kept where the running minimum of the bounds rises (one terminal row for a
static stop): rows at every step would be linearly dependent with the active v >= 0 bounds at
standstill, a degenerate active set.

Speed reference shaping inside the MPC: v_ref is capped by a `stop_decel_mps2` braking profile
before every stop bound (so a cruise v_ref in front of a stop neither pushes the whole horizon
against the bound nor creeps up to it) and by a comfortable speed-up from the current speed
(`speed_ref_rise_mps2`, jerk-limited), which keeps a departure from standstill from saturating
the acceleration bound at every step. A standing car with nothing to drive to (v_ref 0 over
the horizon, or every stop bound within `standstill_tolerance_m`) gets the standstill plan
without a solve (status 'optimal', 0 iterations): creeping the last centimetres is a degenerate
QP (mm/s speeds decide which v >= 0 bounds are active) that costs qrqp 20-60 ms for nothing.

Solver choice
-------------
The NLP is built once per planner (SX graph; every per-solve quantity is a parameter or a
constraint bound; inputs and outputs are bound to fixed numpy buffers, which saves ~1.3 ms of
conversion per call) and solved with CasADi's `sqpmethod` + `qrqp` in real-time-iteration
style: the shifted previous solution including its multipliers (hence qrqp's active set) is
the warm start, and a solve runs at most `max_iterations` SQP iterations of at most
`max_qp_iterations` active-set iterations each (`*_cold` without a warm start). All costs are
linear least squares and the nonlinearity sits in the constraints, so the Gauss-Newton Hessian
(the constant cost Hessian, plus a 1e-4 proximal diagonal) is supplied as `hess_lag`: positive
definite, no convexification, each SQP step a convex QP. A cold start uses a jerk-limited
rollout as the guess and seeds the slack bounds as active (one active-set change saved each).

Measured on the 2-core development machine in a closed loop with warm start (the prototype
at 40 steps and 10 obstacles; bench/mpc_solve.py has the final numbers): sqpmethod+qrqp
~3 ms median; fatrop (exact Hessian, structure detected, expand) ~12 ms at 5 iterations;
IPOPT (expand, warm start, MUMPS) ~22 ms; sqpmethod with OSQP ~20-35 ms, proxqp ~20-25 ms,
hpipm (OCP structure given) 6-12 ms, qpOASES or HiGHS 0.2-1 s per solve; daqp stalled and the
built-in ipqp failed. qrqp wins because a warm-started active set changes by a few constraints
per solve, each change one sparse QR of the ~1000-row KKT system.

qrqp's weak spot: on badly conditioned QPs (an infeasible stop on a curve, say) it can cycle
(a constraint enforced and dropped until its iteration limit) or report success on a point
that violates bounds by ~0.2. Hence the QP iteration caps, and the check of every result:
accepted when finite with its worst constraint and bound violation (multiple-shooting gaps
included) at most `max_model_gap`. A failed check triggers the rescue: the same SQP with OSQP
(ADMM, eps 1e-3, polished) from the same warm start within `max_cpu_time_rescue_s`; it is 5-10x
slower per QP but does not end on infeasible points. Its result passes the same check, and hard
bounds are projected onto (they hold to the QP tolerance).

Solve time is bounded by those caps and by CPU-time deadlines (`max_cpu_time_s`, cold and
rescue variants) that an iteration callback checks between SQP iterations: one solve takes at
most the deadline plus one QP, plus the rescue's deadline plus one QP when the fast path fails.
If the rescue fails too, the fallback chain applies: (1) the last accepted plan shifted by the
elapsed time, while it is at most `fallback_max_plan_age_s` old; (2) a comfortable stop from
the current state (the acceleration ramps at the jerk limit to -fallback_decel_mps2 and never
rises, the steering angle is held). The warm start is dropped after a fallback, so the next
solve starts cold.
"""

from __future__ import annotations

import dataclasses
import math
import time

import casadi as ca
import numpy as np

from robotaxi_stack.common.params import param

# Rows of the state vector and of the stage block of the decision vector.
S, D, EPSI, V, STEER, ACCEL = range(6)
N_STATE = 6
N_INPUT = 2
# Per stage k = 0..N-1 the decision vector holds [steer_rate_k, jerk_k, x_{k+1} (6),
# lat_slack, road_slack, stop_slack, obstacle_slack] (the slacks of x_{k+1}'s constraints).
_W_STEER_RATE, _W_JERK = 0, 1
_X0 = 2
_SL_LAT, _SL_ROAD, _SL_STOP, _SL_OBS = 8, 9, 10, 11
_STAGE = 12
# Per stage the constraint vector holds [gap (6), lat - slack, lat + slack, d - slack,
# d + slack, s - slack, soft-min of the obstacle ellipses + slack].
_G_GAP = 0
_G_LAT_HI, _G_LAT_LO = 6, 7
_G_ROAD_HI, _G_ROAD_LO = 8, 9
_G_STOP = 10
_G_OBS = 11
_STAGE_G = 12
# Obstacle parameters per slot and step: s, d, half length, half width, offset. The offset is
# added to the ellipse value: 0 for an obstacle that counts, _INERT_OFFSET for an unused slot
# or a blocking obstacle (then it vanishes from the soft minimum).
_OBSTACLE_PARAMS = 5
_INERT_OFFSET = 1e6
# Sharpness beta of the soft minimum -log(sum(exp(-beta e_j))) / beta over the ellipse values
# e_j: it is below the true minimum by at most log(m) / beta when m ellipses are equally
# close (0.07 for two at beta = 10), i.e. slightly conservative, and exact for one.
_SOFTMIN_SHARPNESS = 10.0
# Quadratic slack weight relative to the L1 weight (the weight_slack_* parameters).
_SLACK_QUADRATIC = 0.01
# Diagonal added to the Gauss-Newton Hessian of each QP (see _build).
_PROXIMAL_WEIGHT = 1e-4
# Below this speed (m/s) a car whose speed reference is 0 over the horizon is held, not solved.
_STANDSTILL_MPS = 0.05
_STATUS_OPTIMAL = 'optimal'
_STATUS_ITERATION_LIMIT = 'iteration_limit'
_STATUS_SHIFTED = 'shifted_previous'
_STATUS_STOP = 'comfortable_stop'


class MpcInputError(ValueError):
    """A request, state or reference is malformed (non-finite, wrong shape, out of range)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MpcParams:
    """MPC tuning and limits. Limits are the comfort envelope, not the vehicle's hard limits."""

    horizon_steps: int = param(40, min=5, max=200, description='prediction steps N')
    step_s: float = param(0.1, min=0.01, max=1.0, description='prediction step')
    rk4_substeps: int = param(1, min=1, max=10, description='RK4 sub-steps per step')
    max_steer_rad: float = param(0.6, min=0.01, max=1.5, description='|front wheel angle|')
    max_steer_rate_rps: float = param(0.5, min=0.01, max=5.0,
                                      description='|front wheel angle rate|')
    max_accel_mps2: float = param(2.0, min=0.1, max=10.0, description='acceleration limit')
    min_accel_mps2: float = param(-4.0, min=-15.0, max=-0.1,
                                  description='deceleration limit (negative)')
    max_jerk_mps3: float = param(2.0, min=0.1, max=50.0, description='|jerk|')
    max_lat_accel_mps2: float = param(2.5, min=0.1, max=15.0,
                                      description='|lateral acceleration| (soft)')
    weight_lateral: float = param(1.0, min=0.0, max=1e6,
                                  description='cost of (d - d_ref)^2 per step, 1/m^2')
    weight_heading: float = param(2.0, min=0.0, max=1e6,
                                  description='cost of heading error^2 per step, 1/rad^2')
    weight_speed: float = param(1.0, min=0.0, max=1e6,
                                description='cost of (v - v_ref)^2 per step, s^2/m^2')
    weight_accel: float = param(0.5, min=0.0, max=1e6,
                                description='cost of accel^2 per step, s^4/m^2')
    weight_jerk: float = param(1.0, min=0.0, max=1e6,
                               description='cost of jerk^2 per step, s^6/m^2')
    weight_steer: float = param(1.0, min=0.0, max=1e6,
                                description='cost of (steer - feed-forward)^2 per step')
    weight_steer_rate: float = param(10.0, min=0.0, max=1e6,
                                     description='cost of steer_rate^2 per step, s^2/rad^2')
    terminal_weight_factor: float = param(5.0, min=0.0, max=1e3,
                                          description='scales lateral/heading/speed at step N')
    weight_slack_road: float = param(1e3, min=1.0, max=1e8,
                                     description='L1 weight of road-bound violation, per m')
    weight_slack_obstacle: float = param(1e4, min=1.0, max=1e8,
                                         description='L1 weight of ellipse violation')
    weight_slack_stop: float = param(1e4, min=1.0, max=1e8,
                                     description='L1 weight of stop overrun, per m')
    weight_slack_lat_accel: float = param(1e2, min=1.0, max=1e8,
                                          description='L1 weight of lat. accel excess')
    max_objects: int = param(10, min=0, max=64, description='obstacle slots in the NLP')
    max_iterations: int = param(3, min=1, max=100,
                                description='SQP iterations per warm-started solve')
    max_iterations_cold: int = param(15, min=1, max=200,
                                     description='SQP iterations without a warm start')
    max_qp_iterations: int = param(25, min=1, max=100000,
                                   description='active-set iterations per warm-started QP')
    max_qp_iterations_cold: int = param(100, min=1, max=100000,
                                        description='active-set iterations per cold QP')
    max_cpu_time_s: float = param(0.03, min=1e-4, max=10.0,
                                  description='deadline of one solve, checked per iteration')
    max_cpu_time_cold_s: float = param(0.1, min=1e-4, max=10.0,
                                       description='deadline of a solve without warm start')
    max_iterations_rescue: int = param(3, min=1, max=100,
                                       description='SQP iterations of the OSQP rescue')
    max_cpu_time_rescue_s: float = param(0.05, min=0.0, max=10.0,
                                         description='deadline of the OSQP rescue after a '
                                         'failed solve; 0 disables it')
    max_model_gap: float = param(0.05, min=1e-6, max=10.0,
                                 description='largest accepted shooting gap / violation')
    speed_ref_rise_mps2: float = param(1.5, min=0.1, max=10.0,
                                       description='v_ref rises at most this fast above v')
    weight_stop_reach: float = param(20.0, min=0.0, max=1e6,
                                     description='cost of (s_N - s_stop)^2 near a stop, 1/m^2')
    stop_reach_distance_m: float = param(3.0, min=0.0, max=50.0,
                                         description='stop this close: its reach cost applies')
    stop_reach_speed_mps: float = param(1.0, min=0.0, max=20.0,
                                        description='and the car at most this fast')
    standstill_tolerance_m: float = param(0.05, min=0.0, max=1.0,
                                          description='a standing car this close to its '
                                          'stop point stays (no creeping)')
    stop_decel_mps2: float = param(1.5, min=0.1, max=10.0,
                                   description='braking profile that caps v_ref before stops')
    fallback_decel_mps2: float = param(2.5, min=0.1, max=10.0,
                                       description='deceleration of the comfortable stop')
    fallback_max_plan_age_s: float = param(1.0, min=0.0, max=10.0,
                                           description='oldest plan reused as a fallback')

    def __post_init__(self):
        if self.fallback_decel_mps2 > -self.min_accel_mps2:
            raise ValueError(f'fallback_decel_mps2 = {self.fallback_decel_mps2} exceeds '
                             f'-min_accel_mps2 = {-self.min_accel_mps2}')


def _finite_array(name: str, value, shape: tuple | None = None) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MpcInputError(f'{name}: not numeric ({error})') from None
    if shape is not None and array.shape != shape:
        raise MpcInputError(f'{name}: shape {array.shape}, expected {shape}')
    if not np.all(np.isfinite(array)):
        raise MpcInputError(f'{name} contains NaN or inf')
    return array


@dataclasses.dataclass(frozen=True)
class ReferenceProfile:
    """The reference path resampled along station (frame: map, metres, radians).

    s_m (M,) strictly ascending station, x_m and y_m (M,) positions, yaw_rad (M,) tangent
    direction (may be wrapped; it is unwrapped internally), kappa_1pm (M,) curvature, positive
    to the left. Between samples positions follow a cubic Hermite curve with the sampled
    tangents, so curved paths need no dense sampling for centimetre accuracy.
    `to_xy(s, d)` -> (x, y, yaw_of_path) vectorised; `project(xy (K, 2))` -> (s, d).
    """

    s_m: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    yaw_rad: np.ndarray
    kappa_1pm: np.ndarray

    def __post_init__(self):
        s = _finite_array('reference.s_m', self.s_m)
        if s.ndim != 1 or s.size < 2:
            raise MpcInputError(f'reference.s_m: expected (M,) with M >= 2, got {s.shape}')
        if not np.all(np.diff(s) > 0.0):
            raise MpcInputError('reference.s_m must be strictly ascending')
        arrays = {'s_m': s}
        for name in ('x_m', 'y_m', 'yaw_rad', 'kappa_1pm'):
            arrays[name] = _finite_array(f'reference.{name}', getattr(self, name), s.shape)
        for name, array in arrays.items():
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        yaw = np.unwrap(arrays['yaw_rad'])
        yaw.setflags(write=False)
        object.__setattr__(self, '_yaw_unwrapped', yaw)

    @classmethod
    def from_polyline(cls, xy, spacing_m: float = 0.5) -> 'ReferenceProfile':
        """Resample a (P, 2) polyline (map frame) every `spacing_m`; yaw and kappa by differences.

        Consecutive duplicate points are dropped. Curvature is the derivative of the unwrapped
        yaw over station (central differences), so a coarse polyline gives a noisy kappa.
        """
        points = _finite_array('polyline', xy)
        if points.ndim != 2 or points.shape[1] != 2:
            raise MpcInputError(f'polyline: expected (P, 2), got {points.shape}')
        if not (math.isfinite(spacing_m) and spacing_m > 0.0):
            raise MpcInputError(f'spacing_m = {spacing_m}: must be > 0')
        steps = np.hypot(*np.diff(points, axis=0).T)
        points = points[np.r_[True, steps > 1e-9]]
        if len(points) < 2:
            raise MpcInputError('polyline: needs two distinct points')
        station = np.r_[0.0, np.cumsum(np.hypot(*np.diff(points, axis=0).T))]
        count = max(int(math.ceil(station[-1] / spacing_m)), 2) + 1
        s = np.linspace(0.0, station[-1], count)
        x = np.interp(s, station, points[:, 0])
        y = np.interp(s, station, points[:, 1])
        yaw = np.unwrap(np.arctan2(np.gradient(y, s), np.gradient(x, s)))
        kappa = np.gradient(yaw, s)
        return cls(s_m=s, x_m=x, y_m=y, yaw_rad=yaw, kappa_1pm=kappa)

    def kappa_at(self, s_m) -> np.ndarray:
        """Curvature (1/m) at stations s_m (any shape), held constant beyond the ends."""
        return np.interp(s_m, self.s_m, self.kappa_1pm)

    def yaw_at(self, s_m) -> np.ndarray:
        """Path yaw (rad, unwrapped, not wrapped to [-pi, pi)) at stations s_m (any shape)."""
        return np.interp(s_m, self.s_m, self._yaw_unwrapped)

    def _centre(self, s):
        """Centre-line point (x, y) and unit tangent at stations s (1-D), Hermite inside."""
        s = np.asarray(s, dtype=np.float64)
        i = np.clip(np.searchsorted(self.s_m, s, side='right') - 1, 0, len(self.s_m) - 2)
        s0, s1 = self.s_m[i], self.s_m[i + 1]
        h = s1 - s0
        yaw = self.yaw_at(s)
        tangent = np.stack([np.cos(yaw), np.sin(yaw)], axis=-1)
        inside = (s >= self.s_m[0]) & (s <= self.s_m[-1])
        t = np.clip((s - s0) / h, 0.0, 1.0)
        t2, t3 = t * t, t * t * t
        h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + t, -2 * t3 + 3 * t2, t3 - t2
        p0 = np.stack([self.x_m[i], self.y_m[i]], axis=-1)
        p1 = np.stack([self.x_m[i + 1], self.y_m[i + 1]], axis=-1)
        m0 = np.stack([np.cos(self._yaw_unwrapped[i]), np.sin(self._yaw_unwrapped[i])], -1)
        m1 = np.stack([np.cos(self._yaw_unwrapped[i + 1]),
                       np.sin(self._yaw_unwrapped[i + 1])], -1)
        hermite = (h00[..., None] * p0 + (h10 * h)[..., None] * m0 + h01[..., None] * p1
                   + (h11 * h)[..., None] * m1)
        # Beyond the ends the path continues straight along the end tangent.
        end = np.where((s < self.s_m[0])[..., None],
                       np.stack([self.x_m[0], self.y_m[0]])
                       + (s - self.s_m[0])[..., None] * tangent,
                       np.stack([self.x_m[-1], self.y_m[-1]])
                       + (s - self.s_m[-1])[..., None] * tangent)
        return np.where(inside[..., None], hermite, end), tangent, yaw

    def to_xy(self, s_m, d_m):
        """Frenet (s, d) -> map (x, y) and the path yaw at s; broadcast, any matching shapes."""
        s, d = np.broadcast_arrays(np.asarray(s_m, np.float64), np.asarray(d_m, np.float64))
        shape = s.shape
        centre, tangent, yaw = self._centre(s.ravel())
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=-1)
        xy = centre + d.ravel()[:, None] * normal
        return xy[:, 0].reshape(shape), xy[:, 1].reshape(shape), yaw.reshape(shape)

    def project(self, xy):
        """Map points (K, 2) -> (s (K,), d (K,)): the nearest foot point on the path.

        The nearest sample seeds a Newton iteration on the Hermite curve, so the result is the
        local foot point near the globally nearest sample (paths that come back near
        themselves within the lateral offset are ambiguous by nature).
        """
        points = _finite_array('xy', xy)
        if points.ndim != 2 or points.shape[1] != 2:
            raise MpcInputError(f'xy: expected (K, 2), got {points.shape}')
        if len(points) == 0:
            return np.zeros(0), np.zeros(0)
        samples = np.stack([self.x_m, self.y_m], axis=-1)
        nearest = np.argmin(((points[:, None, :] - samples[None, :, :]) ** 2).sum(-1), axis=1)
        s = self.s_m[nearest].copy()
        for _ in range(6):
            centre, tangent, _ = self._centre(s)
            offset = points - centre
            along = (offset * tangent).sum(-1)
            across = offset[:, 0] * -tangent[:, 1] + offset[:, 1] * tangent[:, 0]
            # Newton step on (p - c(s)) . t(s) = 0; its derivative is -(1 - d kappa).
            scale = np.maximum(1.0 - across * self.kappa_at(s), 0.2)
            s = s + along / scale
            if np.max(np.abs(along)) < 1e-10:
                break
        centre, tangent, _ = self._centre(s)
        offset = points - centre
        d = offset[:, 0] * -tangent[:, 1] + offset[:, 1] * tangent[:, 0]
        return s, d


@dataclasses.dataclass(frozen=True)
class MpcState:
    """Ego state in the path frame: station, lateral offset (+ left), heading error, speed,
    front wheel angle and longitudinal acceleration (m, m, rad, m/s, rad, m/s^2)."""

    s_m: float
    d_m: float
    epsi_rad: float
    v_mps: float
    steer_rad: float
    accel_mps2: float


@dataclasses.dataclass(frozen=True)
class MpcRequest:
    """One planning problem; per-step arrays have N+1 entries for t = 0, step_s, ..., N step_s.

    v_ref_mps >= 0 (decelerating to 0 at s_stop_m when there is a stop), d_ref_m lateral target,
    d_min_m <= d_max_m bounds of the reference point's lateral offset (+-inf allowed),
    s_stop_m (inf when nothing to stop for), obstacles (K, N+1, 4) predicted path-frame
    centre s, d and half length/width already inflated by the ego size and margin, K <=
    max_objects. stamp_s: time of the state (any monotonic clock, seconds), used to shift the
    warm start and the fallback plan; None means one step_s since the previous call.
    """

    state: MpcState
    v_ref_mps: np.ndarray
    d_ref_m: np.ndarray
    d_min_m: np.ndarray
    d_max_m: np.ndarray
    s_stop_m: float
    obstacles: np.ndarray
    stamp_s: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MpcResult:
    """Planned trajectory at t_s = k step_s (k = 0..N; index 0 is the current state) and the
    inputs over each step (N,). status: 'optimal' | 'iteration_limit' (solver cut short by an
    iteration or time limit, result accepted) | 'shifted_previous' | 'comfortable_stop'
    (fallbacks, `fallback` True). soft_violation: the largest slack of each soft constraint
    ('road_m', 'obstacle', 'stop_m', 'lat_accel_mps2', 'jerk_mps3'); 0 when all are met."""

    t_s: np.ndarray
    s_m: np.ndarray
    d_m: np.ndarray
    epsi_rad: np.ndarray
    v_mps: np.ndarray
    steer_rad: np.ndarray
    accel_mps2: np.ndarray
    steer_rate_rps: np.ndarray
    jerk_mps3: np.ndarray
    status: str
    fallback: bool
    message: str
    solve_ms: float
    iterations: int
    soft_violation: dict = dataclasses.field(default_factory=dict)

    def states(self) -> np.ndarray:
        """(N+1, 6) [s, d, epsi, v, steer, accel]."""
        return np.stack([self.s_m, self.d_m, self.epsi_rad, self.v_mps, self.steer_rad,
                         self.accel_mps2], axis=-1)


def _frenet_rhs(x, u, kappa, wheelbase_m, cos, sin, tan, fmax):
    """Continuous kinematic bicycle in the path frame; works on CasADi and float operands."""
    s_dot = x[V] * cos(x[EPSI]) / fmax(1.0 - x[D] * kappa, 0.1)
    return [s_dot, x[V] * sin(x[EPSI]), x[V] * tan(x[STEER]) / wheelbase_m - kappa * s_dot,
            x[ACCEL], u[0], u[1]]


def _rk4_step(x, u, kappa, h, substeps, wheelbase_m, ops):
    """`substeps` RK4 steps of the Frenet model over h seconds (x, u: lists of scalars)."""
    dt = h / substeps
    for _ in range(substeps):
        k1 = _frenet_rhs(x, u, kappa, wheelbase_m, *ops)
        k2 = _frenet_rhs([a + 0.5 * dt * b for a, b in zip(x, k1)], u, kappa, wheelbase_m,
                         *ops)
        k3 = _frenet_rhs([a + 0.5 * dt * b for a, b in zip(x, k2)], u, kappa, wheelbase_m,
                         *ops)
        k4 = _frenet_rhs([a + dt * b for a, b in zip(x, k3)], u, kappa, wheelbase_m, *ops)
        x = [a + dt / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
             for a, b1, b2, b3, b4 in zip(x, k1, k2, k3, k4)]
    return x


_CASADI_OPS = (ca.cos, ca.sin, ca.tan, ca.fmax)
_FLOAT_OPS = (math.cos, math.sin, math.tan, max)


def simulate_frenet(state: np.ndarray, inputs: np.ndarray, kappa_of_s, step_s: float,
                    wheelbase_m: float, substeps: int = 1) -> np.ndarray:
    """Roll the MPC's model out: state (6,), inputs (N, 2) -> states (N+1, 6).

    kappa_of_s(s) gives the path curvature; it is sampled at each step's start station.
    """
    states = [list(map(float, state))]
    for u in np.asarray(inputs, dtype=np.float64):
        x = states[-1]
        states.append(_rk4_step(x, list(u), float(kappa_of_s(x[S])), step_s, substeps,
                                wheelbase_m, _FLOAT_OPS))
    return np.asarray(states)


def _soft_min(values: list):
    """Smooth lower bound of min(values) (CasADi scalars); see _SOFTMIN_SHARPNESS.

    One row per step for all obstacles: qrqp's cost per iteration grows steeply with the rows
    (0.28 / 0.55 / 1.8 ms per iteration for 0 / 10 / 30 ellipse rows per step, 40 steps).
    Shifted by the hard minimum for numerical range; its derivative cancels exactly.
    """
    if not values:
        return ca.SX(_INERT_OFFSET)
    if len(values) == 1:
        return values[0]
    smallest = values[0]
    for value in values[1:]:
        smallest = ca.fmin(smallest, value)
    total = 0
    for value in values:
        total += ca.exp(-_SOFTMIN_SHARPNESS * (value - smallest))
    return smallest - ca.log(total) / _SOFTMIN_SHARPNESS


class _Deadline(ca.Callback):
    """Iteration callback that stops the SQP once a wall-clock deadline has passed."""

    def __init__(self, nx: int, ng: int, np_: int):
        ca.Callback.__init__(self)
        self._sizes = {'x': nx, 'lam_x': nx, 'g': ng, 'lam_g': ng, 'lam_p': np_, 'f': 1}
        self.deadline = math.inf
        self.construct('mpc_deadline', {})

    def get_n_in(self):
        return ca.nlpsol_n_out()

    def get_n_out(self):
        return 1

    def get_name_in(self, i):
        return ca.nlpsol_out(i)

    def get_name_out(self, i):
        return 'stop'

    def get_sparsity_in(self, i):
        return ca.Sparsity.dense(self._sizes[ca.nlpsol_out(i)], 1)

    def get_sparsity_out(self, i):
        return ca.Sparsity.scalar()

    def has_eval_buffer(self):
        # The buffer interface skips converting x, g and the multipliers to DM on every
        # iteration (about 0.7 ms per call with the default `eval`).
        return True

    def eval_buffer(self, arg, res):
        result = memoryview(res[0]).cast('d')
        result[0] = 1.0 if time.perf_counter() > self.deadline else 0.0
        return 0


@dataclasses.dataclass
class _Plan:
    """An accepted solution, kept for the warm start and the shifted-plan fallback."""

    stamp_s: float
    states: np.ndarray      # (N+1, 6), index 0 = the state the plan started from
    stages: np.ndarray      # (N, 12) decision vector reshaped per stage
    lam_x: np.ndarray       # (N, 12)
    lam_g: np.ndarray       # (N, 12) constraint multipliers per stage


class MpcPlanner:
    """Builds the NLP once; `solve` is called per planning cycle (see the module docstring)."""

    def __init__(self, params: MpcParams, wheelbase_m: float):
        if not (math.isfinite(wheelbase_m) and wheelbase_m > 0.0):
            raise ValueError(f'wheelbase_m = {wheelbase_m}: must be a positive number')
        self.params = params
        self.wheelbase_m = float(wheelbase_m)
        self._n = params.horizon_steps
        self._n_obj = params.max_objects
        self._stage_g = _STAGE_G
        self._lat_accel_speed = math.sqrt(params.max_lat_accel_mps2 * self.wheelbase_m
                                          / math.tan(params.max_steer_rad))
        self._build()
        self._static_bounds()
        self._plan: _Plan | None = None        # last accepted solver plan (warm start)
        self._warm = False                     # False after a fallback or reset
        self._clock_s = 0.0                    # stamps assumed when requests carry none

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        p, n, n_obj, wb = self.params, self._n, self._n_obj, self.wheelbase_m
        stages = [ca.SX.sym(f'z{k}', _STAGE) for k in range(n)]
        x0 = ca.SX.sym('x0', N_STATE)
        kappa_step = ca.SX.sym('kappa_step', n)
        kappa_state = ca.SX.sym('kappa_state', n)
        v_ref = ca.SX.sym('v_ref', n)
        d_ref = ca.SX.sym('d_ref', n)
        obstacles = ca.SX.sym('obstacles', _OBSTACLE_PARAMS * n_obj * n)
        reach = ca.SX.sym('reach', 2)  # stop station, its weight (0: off)
        params = ca.vertcat(x0, kappa_step, kappa_state, v_ref, d_ref, obstacles, reach)
        slack_weights = {_SL_LAT: p.weight_slack_lat_accel, _SL_ROAD: p.weight_slack_road,
                         _SL_STOP: p.weight_slack_stop, _SL_OBS: p.weight_slack_obstacle}
        cost = 0
        constraints = []
        x_prev = [x0[i] for i in range(N_STATE)]
        for k in range(n):
            z = stages[k]
            x = [z[_X0 + i] for i in range(N_STATE)]
            u = [z[_W_STEER_RATE], z[_W_JERK]]
            x_pred = _rk4_step(x_prev, u, kappa_step[k], p.step_s, p.rk4_substeps, wb,
                               _CASADI_OPS)
            factor = p.terminal_weight_factor if k == n - 1 else 1.0
            steer_ff = ca.atan(wb * kappa_state[k])
            cost += (factor * (p.weight_lateral * (x[D] - d_ref[k]) ** 2
                               + p.weight_heading * x[EPSI] ** 2
                               + p.weight_speed * (x[V] - v_ref[k]) ** 2)
                     + p.weight_accel * x[ACCEL] ** 2
                     + p.weight_steer * (x[STEER] - steer_ff) ** 2
                     + p.weight_jerk * u[1] ** 2 + p.weight_steer_rate * u[0] ** 2)
            for index, weight in slack_weights.items():
                # Exact (L1) penalty, plus a small quadratic part for strict convexity that
                # spreads an unavoidable violation; a large quadratic weight would wreck the
                # QP's scaling (qrqp then stalls at a primal infeasibility it calls optimal).
                cost += weight * (z[index] + _SLACK_QUADRATIC * z[index] ** 2)
            lat_accel = x[V] ** 2 * ca.tan(x[STEER]) / wb
            row = [x[i] - x_pred[i] for i in range(N_STATE)]
            row += [lat_accel - z[_SL_LAT], lat_accel + z[_SL_LAT],
                    x[D] - z[_SL_ROAD], x[D] + z[_SL_ROAD], x[S] - z[_SL_STOP]]
            ellipses = []
            for j in range(n_obj):
                first = _OBSTACLE_PARAMS * (j * n + k)
                o = obstacles[first:first + _OBSTACLE_PARAMS]
                ellipses.append(((x[S] - o[0]) / o[2]) ** 2 + ((x[D] - o[1]) / o[3]) ** 2
                                + o[4])
            row.append(_soft_min(ellipses) + z[_SL_OBS])
            constraints += row
            x_prev = x
        cost += reach[1] * (x_prev[S] - reach[0]) ** 2
        decision = ca.vertcat(*stages)
        g = ca.vertcat(*constraints)
        hessian = ca.hessian(cost, decision)[0]
        # Gauss-Newton: the cost Hessian is constant; constraint curvature is left out.
        lam_f = ca.SX.sym('lam_f')
        lam_g = ca.SX.sym('lam_g', g.shape[0])
        # The proximal term keeps the QP strictly convex in the stations (which carry no cost
        # of their own); without it qrqp can stall on a constant dual infeasibility, cycling
        # one constraint in and out until its iteration limit. It vanishes at convergence.
        hess_lag = ca.Function('mpc_hess_lag', [decision, params, lam_f, lam_g],
                               [lam_f * hessian + _PROXIMAL_WEIGHT * ca.SX.eye(_STAGE * n)])
        self._nz, self._ng, self._np = decision.shape[0], g.shape[0], params.shape[0]
        self._deadline = _Deadline(self._nz, self._ng, self._np)
        options = {
            'qpsol': 'qrqp',
            'qpsol_options': {'print_iter': False, 'print_header': False, 'print_info': False,
                              'error_on_fail': False, 'constr_viol_tol': 1e-6,
                              'dual_inf_tol': 1e-6},
            'hess_lag': hess_lag,
            'iteration_callback': self._deadline,
            'print_iteration': False, 'print_header': False, 'print_status': False,
            'print_time': False, 'error_on_fail': False,
            'tol_pr': 1e-4, 'tol_du': 1e-3, 'min_step_size': 1e-10,
        }
        nlp = {'x': decision, 'p': params, 'f': cost, 'g': g}
        self._solvers = {}
        self._buffers = {}
        # Inputs and outputs live in fixed numpy arrays bound to the solvers' buffers: passing
        # numpy arrays to a casadi Function converts each element (about 1.3 ms per solve).
        self._args = {name: np.zeros(size) for name, size in (
            ('x0', self._nz), ('p', self._np), ('lbx', self._nz), ('ubx', self._nz),
            ('lbg', self._ng), ('ubg', self._ng), ('lam_x0', self._nz), ('lam_g0', self._ng))}
        self._res = {name: np.zeros(size) for name, size in (
            ('x', self._nz), ('f', 1), ('g', self._ng), ('lam_x', self._nz),
            ('lam_g', self._ng), ('lam_p', self._np))}
        # The rescue: OSQP (ADMM) is 5-10x slower per QP than qrqp but does not end a badly
        # conditioned QP on an infeasible point the way qrqp can (see the module docstring).
        rescue_qp = {'qpsol': 'osqp', 'qpsol_options': {
            'error_on_fail': False, 'osqp': {'verbose': False, 'eps_abs': 1e-3, 'eps_rel': 1e-3,
                                             'polish': True, 'max_iter': 4000}}}
        for name, iterations, qp_options in (
                ('warm', p.max_iterations,
                 {'qpsol_options': options['qpsol_options'] | {'max_iter': p.max_qp_iterations}}),
                ('cold', p.max_iterations_cold,
                 {'qpsol_options': options['qpsol_options']
                  | {'max_iter': p.max_qp_iterations_cold}}),
                ('rescue', p.max_iterations_rescue, rescue_qp)):
            solver = ca.nlpsol(f'mpc_{name}', 'sqpmethod', nlp,
                               options | {'max_iter': iterations} | qp_options)
            buffer, trigger = solver.buffer()
            for i, arg in enumerate(solver.name_in()):
                buffer.set_arg(i, memoryview(self._args[arg]))
            for i, res in enumerate(solver.name_out()):
                buffer.set_res(i, memoryview(self._res[res]))
            self._solvers[name] = solver
            self._buffers[name] = (buffer, trigger)
        self._slack_weights = slack_weights

    def _static_bounds(self) -> None:
        p, n = self.params, self._n
        lbx = np.full((n, _STAGE), -np.inf)
        ubx = np.full((n, _STAGE), np.inf)
        lbx[:, _W_STEER_RATE], ubx[:, _W_STEER_RATE] = -p.max_steer_rate_rps, p.max_steer_rate_rps
        lbx[:, _W_JERK], ubx[:, _W_JERK] = -p.max_jerk_mps3, p.max_jerk_mps3
        lbx[:, _X0 + V] = 0.0
        lbx[:, _X0 + STEER], ubx[:, _X0 + STEER] = -p.max_steer_rad, p.max_steer_rad
        lbx[:, _X0 + ACCEL], ubx[:, _X0 + ACCEL] = p.min_accel_mps2, p.max_accel_mps2
        for index in self._slack_weights:
            lbx[:, index] = 0.0
        self._lbx, self._ubx = lbx.ravel(), ubx.ravel()
        lbg = np.full((n, self._stage_g), -np.inf)
        ubg = np.full((n, self._stage_g), np.inf)
        lbg[:, _G_GAP:_G_GAP + N_STATE] = 0.0
        ubg[:, _G_GAP:_G_GAP + N_STATE] = 0.0
        ubg[:, _G_LAT_HI] = p.max_lat_accel_mps2
        lbg[:, _G_LAT_LO] = -p.max_lat_accel_mps2
        self._lbg_template, self._ubg_template = lbg, ubg
        # Cold multipliers: slacks at their lower bound (casadi: negative = lower bound active)
        # with the multiplier that their L1 weight implies when the constraint is slack.
        lam_x = np.zeros((n, _STAGE))
        for index, weight in self._slack_weights.items():
            lam_x[:, index] = -weight
        self._cold_lam_x = lam_x

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget the warm start and the last plan (new route or reference re-origin)."""
        self._plan = None
        self._warm = False

    def solve(self, request: MpcRequest, reference: ReferenceProfile) -> MpcResult:
        """Plan from request.state along `reference`; never raises for solver trouble.

        Raises MpcInputError for malformed input (naming the field); solver failures produce a
        fallback result instead (see the module docstring).
        """
        start = time.perf_counter()
        if not isinstance(reference, ReferenceProfile):
            raise MpcInputError(f'reference: expected ReferenceProfile, got {type(reference)}')
        x0, data = self._validate(request)
        data['stop_bound'], data['blocked'] = self._stop_bounds(x0, data)
        stamp = self._stamp(request)
        if self._standstill(x0, data):
            return self._hold(x0, data, stamp, start)
        guess, lam_x, lam_g, warm = self._initial_guess(x0, data, reference, stamp)
        p_vec, lbg, ubg, v_ref = self._parameters(x0, data, reference, guess)
        if warm:
            # Where the warm start rests and nothing asks to move, v >= 0 will stay active;
            # seeding it saves qrqp one active-set change per step (a standstill with a noisy
            # speed measurement otherwise costs ~40 of them).
            resting = ((guess[:, _X0 + V] <= 1e-4) & (v_ref <= _STANDSTILL_MPS)
                       & (lam_x[:, _X0 + V] == 0.0))
            lam_x[resting, _X0 + V] = -1e-6
        args = self._args
        args['x0'][:] = guess.ravel()
        args['p'][:] = p_vec
        args['lbx'][:] = self._lbx
        args['ubx'][:] = self._ubx
        args['lbg'][:] = lbg
        args['ubg'][:] = ubg
        args['lam_x0'][:] = lam_x.ravel()
        args['lam_g0'][:] = lam_g.ravel()
        budget = self.params.max_cpu_time_s if warm else self.params.max_cpu_time_cold_s
        attempt = self._run('warm' if warm else 'cold', start + budget, lbg, ubg)
        if attempt['verdict'] and self.params.max_cpu_time_rescue_s > 0.0:
            first = attempt
            attempt = self._run('rescue', time.perf_counter() + self.params.max_cpu_time_rescue_s,
                                lbg, ubg)
            attempt['iterations'] += first['iterations']
            attempt['note'] = f' by the OSQP rescue after qrqp failed ({first["reason"]})'
            if attempt['verdict']:
                attempt['reason'] = f'{first["reason"]}; rescue: {attempt["reason"]}'
        iterations = attempt['iterations']
        if not attempt['verdict']:
            z, stats = attempt['z'], attempt['stats']
            # Hard bounds hold to the QP tolerance (1e-3 for OSQP); project the last bit.
            stages = np.clip(z, self._lbx, self._ubx).reshape(self._n, _STAGE)
            states = np.vstack([x0, stages[:, _X0:_X0 + N_STATE]])
            self._plan = _Plan(stamp, states, stages,
                               attempt['lam_x'].reshape(self._n, _STAGE),
                               attempt['lam_g'].reshape(self._n, self._stage_g))
            self._warm = True
            note = attempt.get('note', '')
            if stats.get('success', False):
                status, message = _STATUS_OPTIMAL, f'converged in {iterations} iterations{note}'
            else:
                status = _STATUS_ITERATION_LIMIT
                message = (f'stopped after {iterations} iterations '
                           f'({stats.get("return_status")}){note}; result accepted')
            return self._result(states, stages[:, [_W_STEER_RATE, _W_JERK]], status, False,
                                message, start, iterations, self._violations(states, data))
        self._warm = False
        return self._fallback(x0, reference, stamp, attempt['reason'], start, iterations)

    def _run(self, name: str, deadline: float, lbg, ubg) -> dict:
        """Run solver `name` on the prepared arguments; the verdict is '' when usable."""
        for out in self._res.values():
            out.fill(np.nan)
        self._deadline.deadline = deadline
        buffer, trigger = self._buffers[name]
        error = ''
        try:
            trigger()
            stats = buffer.stats()
            if buffer.ret() != 0:
                error = f'solver returned code {buffer.ret()}'
        except RuntimeError as exc:  # an exception inside the solver (error_on_fail is off)
            stats = {}
            error = f'solver error: {exc}'.splitlines()[0]
        res = self._res
        attempt = {'z': res['x'].copy(), 'lam_x': res['lam_x'].copy(),
                   'lam_g': res['lam_g'].copy(), 'stats': stats,
                   'iterations': int(stats.get('iter_count', 0))}
        verdict = error or self._check(attempt['z'], res['g'], lbg, ubg, attempt['lam_x'],
                                       attempt['lam_g'])
        attempt['verdict'] = verdict
        attempt['reason'] = (verdict if error
                             else f'{stats.get("return_status", "error")}: {verdict}')
        return attempt

    # ------------------------------------------------------------------ helpers
    def _validate(self, request: MpcRequest):
        if not isinstance(request, MpcRequest):
            raise MpcInputError(f'request: expected MpcRequest, got {type(request)}')
        p, n = self.params, self._n
        state = request.state
        values = []
        for name in ('s_m', 'd_m', 'epsi_rad', 'v_mps', 'steer_rad', 'accel_mps2'):
            value = getattr(state, name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise MpcInputError(f'state.{name} = {value!r}: not a number') from None
            if not math.isfinite(value):
                raise MpcInputError(f'state.{name} = {value}: must be finite')
            values.append(value)
        x0 = np.array(values)
        # The model drives forwards only and its limits are hard: a measured state slightly
        # outside them (sensor noise, a manual override) is clipped so the QP stays feasible.
        x0[EPSI] = (x0[EPSI] + math.pi) % (2.0 * math.pi) - math.pi
        x0[V] = max(x0[V], 0.0)
        x0[STEER] = min(max(x0[STEER], -p.max_steer_rad), p.max_steer_rad)
        x0[ACCEL] = min(max(x0[ACCEL], p.min_accel_mps2), p.max_accel_mps2)
        # Near standstill a braking car stops and its brakes hold; the model, whose
        # deceleration can only be released at the jerk limit, would undershoot v = 0 from
        # any a0 < -sqrt(2 jerk v0) (infeasible with v >= 0 and |jerk| <= max hard). The
        # measured deceleration is therefore limited to what the model can release in time.
        x0[ACCEL] = max(x0[ACCEL], -math.sqrt(2.0 * p.max_jerk_mps3 * x0[V]))
        shape = (n + 1,)
        v_ref = _finite_array('v_ref_mps', request.v_ref_mps, shape)
        if np.any(v_ref < 0.0):
            raise MpcInputError('v_ref_mps must be >= 0 (the MPC does not reverse)')
        d_ref = _finite_array('d_ref_m', request.d_ref_m, shape)
        bounds = {}
        for name in ('d_min_m', 'd_max_m'):
            try:
                array = np.asarray(getattr(request, name), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise MpcInputError(f'{name}: not numeric ({exc})') from None
            if array.shape != shape:
                raise MpcInputError(f'{name}: shape {array.shape}, expected {shape}')
            if np.any(np.isnan(array)):
                raise MpcInputError(f'{name} contains NaN')
            bounds[name] = array
        if np.any(bounds['d_min_m'] > bounds['d_max_m']):
            raise MpcInputError('d_min_m must be <= d_max_m at every step')
        if np.any(bounds['d_min_m'] == np.inf) or np.any(bounds['d_max_m'] == -np.inf):
            raise MpcInputError('d_min_m may not be +inf nor d_max_m -inf')
        try:
            s_stop = float(request.s_stop_m)
        except (TypeError, ValueError):
            raise MpcInputError(f's_stop_m = {request.s_stop_m!r}: not a number') from None
        if math.isnan(s_stop) or s_stop == -math.inf:
            raise MpcInputError(f's_stop_m = {s_stop}: must be finite or +inf')
        try:
            obstacles = np.asarray(request.obstacles, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MpcInputError(f'obstacles: not numeric ({exc})') from None
        if obstacles.size == 0:
            obstacles = np.zeros((0, n + 1, 4))
        if obstacles.ndim != 3 or obstacles.shape[1:] != (n + 1, 4):
            raise MpcInputError(f'obstacles: shape {obstacles.shape}, expected (K, {n + 1}, 4)')
        if len(obstacles) > self._n_obj:
            raise MpcInputError(f'obstacles: {len(obstacles)} objects, at most max_objects = '
                                f'{self._n_obj} (keep the nearest)')
        if not np.all(np.isfinite(obstacles)):
            raise MpcInputError('obstacles contains NaN or inf')
        if np.any(obstacles[:, :, 2:] <= 0.0):
            raise MpcInputError('obstacles: half length and half width must be > 0')
        if request.stamp_s is not None:
            try:
                stamp = float(request.stamp_s)
            except (TypeError, ValueError):
                raise MpcInputError(f'stamp_s = {request.stamp_s!r}: not a number') from None
            if not math.isfinite(stamp):
                raise MpcInputError(f'stamp_s = {stamp}: must be finite')
        return x0, {'v_ref': v_ref, 'd_ref': d_ref, 'd_min': bounds['d_min_m'],
                    'd_max': bounds['d_max_m'], 's_stop': s_stop, 'obstacles': obstacles}

    def _stamp(self, request: MpcRequest) -> float:
        if request.stamp_s is None:
            self._clock_s += self.params.step_s
            return self._clock_s
        stamp = float(request.stamp_s)
        self._clock_s = stamp
        return stamp

    def _elapsed_steps(self, stamp: float, plan: _Plan) -> float | None:
        """Elapsed time since `plan` in steps, None when it cannot be shifted onto now."""
        steps = (stamp - plan.stamp_s) / self.params.step_s
        if not (0.0 <= steps < self._n):
            return None
        return steps

    def _shifted(self, plan: _Plan, steps: float):
        """plan's states (N+1, 6) and stages (N, 12) moved `steps` (may be fractional) ahead;
        beyond the horizon the last state coasts at its speed with zero inputs."""
        n, dt = self._n, self.params.step_s
        t_new = (np.arange(n + 1) + steps) * dt
        t_old = np.arange(n + 1) * dt
        shift = int(round(steps))
        if abs(steps - shift) < 1e-6:  # the usual case: whole steps, no interpolation
            states = plan.states[np.minimum(np.arange(n + 1) + shift, n)].copy()
        else:
            states = np.empty((n + 1, N_STATE))
            for i in range(N_STATE):
                states[:, i] = np.interp(t_new, t_old, plan.states[:, i])
        beyond = t_new > t_old[-1]
        states[beyond, S] += (t_new[beyond] - t_old[-1]) * plan.states[-1, V]
        states[beyond, ACCEL] = 0.0
        stages = np.roll(plan.stages, -shift, axis=0)
        lam_x = np.roll(plan.lam_x, -shift, axis=0)
        lam_g = np.roll(plan.lam_g, -shift, axis=0)
        if shift > 0:
            stages[-shift:] = plan.stages[-1]
            stages[-shift:, [_W_STEER_RATE, _W_JERK]] = 0.0
            lam_x[-shift:] = plan.lam_x[-1]
            lam_g[-shift:] = plan.lam_g[-1]
        stages[:, _X0:_X0 + N_STATE] = states[1:]
        return states, stages, lam_x, lam_g

    def _initial_guess(self, x0, data, reference, stamp):
        plan, steps = self._plan, None
        if self._warm and plan is not None:
            steps = self._elapsed_steps(stamp, plan)
        if steps is not None:
            states, stages, lam_x, lam_g = self._shifted(plan, steps)
            # Re-anchor on the measured state: the plan's shape is kept, its offset is not.
            stages[:, _X0 + S] += x0[S] - states[0, S]
            stages[:, _X0 + D] += (x0[D] - states[0, D]) * np.linspace(1.0, 0.0, self._n)
            return stages, lam_x, lam_g, True
        return self._cold_guess(x0, data, reference)

    def _cold_guess(self, x0, data, reference):
        """A dynamically consistent first guess: the longitudinal motion of a simple
        jerk-limited speed controller that tracks v_ref and brakes for the stop bounds, the
        lateral offset held, the heading error decaying, the steering at feed-forward.

        Multiple shooting accepts any guess, but gaps and a guess that runs through a stop
        bound make the first QPs large; a consistent guess keeps a cold solve near 10 ms.
        """
        p, n, dt = self.params, self._n, self.params.step_s
        bound = data['stop_bound']
        v_ref = data['v_ref'][1:]
        s, v, a = x0[S], x0[V], x0[ACCEL]
        longitudinal = np.empty((n, 3))
        for k in range(n):
            target = min(v_ref[k], math.sqrt(2.0 * p.stop_decel_mps2
                                             * max(bound[k] - s - v * dt, 0.0)))
            desired = min(max((target - v) / 1.0, p.min_accel_mps2), p.speed_ref_rise_mps2)
            a_next = a + min(max(desired - a, -p.max_jerk_mps3 * dt), p.max_jerk_mps3 * dt)
            a_next = max(a_next, -(v + 0.5 * a * dt) * 2.0 / dt)  # no reversing
            s += v * dt + (2.0 * a + a_next) * dt * dt / 6.0
            v = max(v + 0.5 * (a + a_next) * dt, 0.0)
            a = a_next if v > 0.0 else max(a_next, 0.0)
            longitudinal[k] = s, v, a
        t = np.arange(1, n + 1) * dt
        stages = np.zeros((n, _STAGE))
        stages[:, _X0 + S] = longitudinal[:, 0]
        stages[:, _X0 + V] = longitudinal[:, 1]
        stages[:, _X0 + ACCEL] = longitudinal[:, 2]
        stages[:, _W_JERK] = np.diff(np.r_[x0[ACCEL], longitudinal[:, 2]]) / dt
        stages[:, _X0 + D] = x0[D]
        stages[:, _X0 + EPSI] = x0[EPSI] * np.exp(-t)
        steer_ff = np.arctan(self.wheelbase_m * reference.kappa_at(longitudinal[:, 0]))
        stages[:, _X0 + STEER] = np.clip(steer_ff, -p.max_steer_rad, p.max_steer_rad)
        return stages, self._cold_lam_x.copy(), np.zeros((n, self._stage_g)), False

    def _stop_bounds(self, x0, data):
        """Per-step bound on s for steps 1..N (N,) and the (K, N) mask of blocking obstacles
        whose ellipse is dropped.

        See 'Blocking obstacles' in the module docstring.
        """
        bound = np.full(self._n, data['s_stop'])
        obstacles = data['obstacles'][:, 1:, :]
        if len(obstacles) == 0:
            return bound, np.zeros((0, self._n), dtype=bool)
        s_j, d_j, a_j, b_j = (obstacles[:, :, i] for i in range(4))
        # Ahead means the centre is ahead: an ego already at (or, after a sudden appearance,
        # past) the obstacle's rear bound must keep braking, not start sliding around it.
        ahead = data['obstacles'][:, 0, 0] > x0[S]
        room_left = data['d_max'][None, 1:] > d_j + b_j
        room_right = data['d_min'][None, 1:] < d_j - b_j
        blocked = ahead[:, None] & ~room_left & ~room_right
        rear = np.where(blocked, s_j - a_j, np.inf)
        # An ego already past the stop bound (beside the obstacle when a pass is called off)
        # brakes, and the ellipse stays: without it the lateral reference steers into it.
        past = x0[S] > data['obstacles'][:, 0, 0] - data['obstacles'][:, 0, 2]
        return np.minimum(bound, rear.min(axis=0)), blocked & ~past[:, None]

    @staticmethod
    def _stop_rows(bound):
        """Upper bounds of the stop rows (N,): inf where the row is implied by a later one.

        With v >= 0 the station never decreases, so s_k <= min_{i >= k} bound_i is all that
        the bounds require, and a row is needed only where that suffix minimum rises (and at
        the last step). A static stop thus becomes one terminal row: a row per step would, at
        standstill, be linearly dependent with the active v >= 0 bounds, and the degenerate
        active set makes qrqp take 10-30 ms per QP.
        """
        suffix = np.minimum.accumulate(bound[::-1])[::-1]
        needed = np.r_[suffix[:-1] < suffix[1:], True]
        return np.where(needed, suffix, np.inf)

    def _rise_profile(self, v0: float, a0: float) -> np.ndarray:
        """Speeds (N,) reached from v0 by an acceleration that ramps from max(a0, 0) at half
        the jerk limit up to speed_ref_rise_mps2: the fastest comfortable speed-up."""
        p, dt = self.params, self.params.step_s
        t = dt * np.arange(self._n + 1)
        start = min(max(a0, 0.0), p.speed_ref_rise_mps2)
        accel = np.minimum(start + 0.5 * p.max_jerk_mps3 * t, p.speed_ref_rise_mps2)
        return v0 + np.cumsum(0.5 * (accel[1:] + accel[:-1]) * dt)

    def _speed_reference(self, data, s_guess, v0=None, a0=0.0):
        """v_ref (N,) for steps 1..N, capped by a stop_decel_mps2 profile before the bounds
        and, when v0 is given, by the rise profile from (v0, a0).

        The rise limit keeps a large step of v_ref (departure, a cold start far below v_ref)
        from saturating the acceleration bound over many steps: each saturated bound is one
        more active-set change for qrqp, and a departure from standstill cost 300+ ms before.
        """
        dt = self.params.step_s
        v_ref = data['v_ref'][1:].copy()
        if v0 is not None:
            v_ref = np.minimum(v_ref, self._rise_profile(v0, a0))
        bound = data['stop_bound']
        finite = np.isfinite(bound)
        if not np.any(finite):
            return v_ref
        # A moving bound (an obstacle being followed) may be approached at its own speed.
        bound_speed = np.zeros(self._n)
        both = finite[1:] & finite[:-1]
        bound_speed[1:][both] = np.maximum(np.diff(bound)[both] / dt, 0.0)
        gap = np.where(finite, bound - s_guess, np.inf)
        cap = np.sqrt(bound_speed ** 2
                      + 2.0 * self.params.stop_decel_mps2 * np.maximum(gap, 0.0))
        return np.minimum(v_ref, cap)

    def _parameters(self, x0, data, reference, stages):
        n = self._n
        s_guess = np.r_[x0[S], stages[:, _X0 + S]]
        kappa_step = reference.kappa_at(0.5 * (s_guess[:-1] + s_guess[1:]))
        kappa_state = reference.kappa_at(s_guess[1:])
        v_ref = self._speed_reference(data, s_guess[1:], x0[V], x0[ACCEL])
        obstacles = np.zeros((self._n_obj, n, _OBSTACLE_PARAMS))
        obstacles[:, :, 2:4] = 1.0
        obstacles[:, :, 4] = _INERT_OFFSET
        count = len(data['obstacles'])
        obstacles[:count, :, :4] = data['obstacles'][:, 1:, :]
        obstacles[:count, :, 4] = np.where(data['blocked'], _INERT_OFFSET, 0.0)
        counted = ~data['blocked']
        p_vec = np.concatenate([x0, kappa_step, kappa_state, v_ref, data['d_ref'][1:],
                                obstacles.ravel(), self._reach(x0, data)])
        lbg = self._lbg_template.copy()
        ubg = self._ubg_template.copy()
        ubg[:, _G_ROAD_HI] = data['d_max'][1:]
        lbg[:, _G_ROAD_LO] = data['d_min'][1:]
        ubg[:, _G_STOP] = self._stop_rows(data['stop_bound'])
        lbg[:, _G_OBS] = np.where(counted.any(axis=0), 1.0, -np.inf)
        # The lateral-acceleration rows cannot bind below the speed at which full steering
        # reaches the limit; there their Jacobian (2 v tan(steer) / L, v^2 / L cos^2) vanishes
        # with v and qrqp wastes iterations enforcing and dropping them. They are switched off
        # where the warm start is well below that speed (the 2 m/s margin covers one SQP step).
        slow = np.maximum(stages[:, _X0 + V], v_ref) < self._lat_accel_speed - 2.0
        ubg[slow, _G_LAT_HI] = np.inf
        lbg[slow, _G_LAT_LO] = -np.inf
        return p_vec, lbg.ravel(), ubg.ravel(), v_ref

    def _reach(self, x0, data) -> np.ndarray:
        """(stop station, weight) of the terminal reach cost: the last stop bound when the
        car is slow and the stop near (see the module docstring), else weight 0."""
        p, stop = self.params, float(data['stop_bound'][-1])
        if (x0[V] <= p.stop_reach_speed_mps and math.isfinite(stop)
                and x0[S] < stop <= x0[S] + p.stop_reach_distance_m):
            return np.array([stop, p.weight_stop_reach])
        return np.zeros(2)

    def _standstill(self, x0, data) -> bool:
        """True when the car stands and has nowhere to go within the horizon: the speed
        reference is 0 throughout, or every stop bound is within standstill_tolerance_m.

        Creeping the last few cm to a stop point is a degenerate QP (speeds of mm/s decide
        which v >= 0 bounds are active) that costs qrqp 20-40 ms, for a gain below the stop
        accuracy; a standing car therefore stays when the stop point is that close.
        """
        if x0[V] > _STANDSTILL_MPS:
            return False
        if np.max(data['stop_bound']) <= x0[S] + self.params.standstill_tolerance_m:
            return True
        capped = self._speed_reference(data, np.full(self._n, x0[S]))
        return bool(np.max(capped) <= _STANDSTILL_MPS)

    def _hold(self, x0, data, stamp, start) -> MpcResult:
        """The standstill plan: speed 0 from the next step, the acceleration returning to 0
        at the jerk limit, steering held; the residual <= 5 cm/s is what the brakes' hold
        (velocity command 0) absorbs.

        It is the optimum up to the steering terms (steering at standstill moves nothing but
        the tyres, so it is not done), and solving for it is where the QP is worst: with
        every v >= 0 bound active and speeds of 1e-7 m/s deciding which, qrqp flips bounds one
        per iteration (10-60 ms). The plan is kept as the next warm start.
        """
        p, n, dt = self.params, self._n, self.params.step_s
        v0, a0 = x0[V], x0[ACCEL]
        states = np.repeat(x0[None, :], n + 1, axis=0)
        states[1:, S] = x0[S] + 0.5 * v0 * dt
        states[1:, V] = 0.0
        release = np.maximum(abs(a0) - p.max_jerk_mps3 * dt * np.arange(n + 1), 0.0)
        states[:, ACCEL] = math.copysign(1.0, a0) * release
        stages = np.zeros((n, _STAGE))
        stages[:, _X0:_X0 + N_STATE] = states[1:]
        stages[:, _W_JERK] = np.diff(states[:, ACCEL]) / dt
        # The next solve that is not a hold starts moving: v >= 0 is seeded inactive.
        self._plan = _Plan(stamp, states, stages, self._cold_lam_x.copy(),
                           np.zeros((n, self._stage_g)))
        self._warm = True
        return self._result(states, stages[:, [_W_STEER_RATE, _W_JERK]], _STATUS_OPTIMAL,
                            False, 'standstill: holding (no speed asked within the horizon)',
                            start, 0, self._violations(states, data))

    def _check(self, z, g, lbg, ubg, lam_x, lam_g) -> str:
        """'' when the solver output is usable, else why not."""
        for name, value in (('x', z), ('g', g), ('lam_x', lam_x), ('lam_g', lam_g)):
            if not np.isfinite(value.sum()):  # one reduction; NaN/inf propagate into it
                return f'non-finite {name} in the solver output'
        # g is finite here, so infinite bounds give -inf, never NaN. The variable bounds are
        # checked too: qrqp can end a badly conditioned QP on a bound-violating point.
        worst = max(float(np.max(lbg - g)), float(np.max(g - ubg)),
                    float(np.max(self._lbx - z)), float(np.max(z - self._ubx)), 0.0)
        if worst > self.params.max_model_gap:
            return (f'constraint violation {worst:.3g} > max_model_gap '
                    f'{self.params.max_model_gap}')
        return ''

    def _violations(self, states, data) -> dict:
        """How far the plan's steps 1..N exceed each soft constraint (0 when met), measured on
        the plan itself: road bounds (m), stop incl. blocking obstacles (m), obstacle ellipses
        (1 - smallest ellipse value of a passable obstacle) and lateral acceleration (m/s^2)."""
        x = states[1:]
        road = np.maximum(np.maximum(x[:, D] - data['d_max'][1:], data['d_min'][1:] - x[:, D]),
                          0.0)
        stop = np.maximum(x[:, S] - data['stop_bound'], 0.0)
        obstacle = 0.0
        obstacles = data['obstacles'][:, 1:, :]
        if len(obstacles):
            value = (((x[None, :, S] - obstacles[:, :, 0]) / obstacles[:, :, 2]) ** 2
                     + ((x[None, :, D] - obstacles[:, :, 1]) / obstacles[:, :, 3]) ** 2)
            value = np.where(data['blocked'], np.inf, value)
            obstacle = max(1.0 - float(np.min(value)), 0.0)
        lat = np.abs(x[:, V] ** 2 * np.tan(x[:, STEER]) / self.wheelbase_m)
        return {'road_m': float(np.max(road)), 'obstacle': obstacle,
                'stop_m': float(np.max(stop)),
                'lat_accel_mps2': max(float(np.max(lat)) - self.params.max_lat_accel_mps2, 0.0)}

    def _result(self, states, inputs, status, fallback, message, start, iterations,
                violations=None) -> MpcResult:
        n = self._n
        return MpcResult(
            t_s=np.arange(n + 1) * self.params.step_s, s_m=states[:, S].copy(),
            d_m=states[:, D].copy(), epsi_rad=states[:, EPSI].copy(),
            v_mps=states[:, V].copy(), steer_rad=states[:, STEER].copy(),
            accel_mps2=states[:, ACCEL].copy(), steer_rate_rps=inputs[:, 0].copy(),
            jerk_mps3=inputs[:, 1].copy(), status=status, fallback=fallback, message=message,
            solve_ms=(time.perf_counter() - start) * 1e3, iterations=iterations,
            soft_violation=violations or {})

    def _fallback(self, x0, reference, stamp, reason, start, iterations) -> MpcResult:
        plan = self._plan
        if plan is not None:
            steps = self._elapsed_steps(stamp, plan)
            age_s = (stamp - plan.stamp_s)
            if steps is not None and age_s <= self.params.fallback_max_plan_age_s:
                states, stages, _, _ = self._shifted(plan, steps)
                inputs = stages[:, [_W_STEER_RATE, _W_JERK]]
                return self._result(
                    states, inputs, _STATUS_SHIFTED, True,
                    f'MPC failed ({reason}); reusing the plan from {age_s:.2f} s ago',
                    start, iterations)
        states, inputs = self.comfortable_stop(x0, reference)
        return self._result(states, inputs, _STATUS_STOP, True,
                            f'MPC failed ({reason}); comfortable stop at '
                            f'{self.params.fallback_decel_mps2:.1f} m/s^2', start, iterations)

    def comfortable_stop(self, x0, reference: ReferenceProfile):
        """Stop profile from state x0 (6,): states (N+1, 6) and inputs (N, 2).

        The acceleration starts at min(accel, 0), ramps at the jerk limit to
        -fallback_decel_mps2 and stays there until standstill, so the speed never rises; the
        steering angle is held (rate 0). Positions follow the MPC's Frenet model.
        """
        p, n, dt = self.params, self._n, self.params.step_s
        accel = np.empty(n + 1)
        speed = np.empty(n + 1)
        accel[0] = min(float(x0[ACCEL]), 0.0)
        speed[0] = max(float(x0[V]), 0.0)
        for k in range(n):
            if speed[k] <= 0.0:
                speed[k + 1], accel[k] = 0.0, 0.0
                accel[k + 1] = 0.0
                continue
            target = max(accel[k] - p.max_jerk_mps3 * dt, -p.fallback_decel_mps2)
            accel[k + 1] = target
            # Exact speed under a linear accel ramp over the step, clipped at standstill.
            speed[k + 1] = max(speed[k] + 0.5 * (accel[k] + target) * dt, 0.0)
            if speed[k + 1] == 0.0:
                accel[k + 1] = 0.0
        states = np.empty((n + 1, N_STATE))
        states[0] = x0
        states[0, ACCEL] = accel[0]
        for k in range(n):
            x = list(states[k])
            kappa = float(reference.kappa_at(x[S]))
            # Speed and acceleration are prescribed; integrate the pose at the mean speed.
            x[V] = 0.5 * (speed[k] + speed[k + 1])
            x[ACCEL] = 0.0
            nxt = _rk4_step(x, [0.0, 0.0], kappa, dt, 1, self.wheelbase_m, _FLOAT_OPS)
            states[k + 1] = nxt
            states[k + 1, V] = speed[k + 1]
            states[k + 1, ACCEL] = accel[k + 1]
            states[k + 1, STEER] = x0[STEER]
        inputs = np.zeros((n, N_INPUT))
        inputs[:, 1] = np.diff(accel) / dt
        return states, inputs
