"""Vehicle command gate and minimal-risk maneuvers (pure core: no rclpy, no *_msgs).

The gate is the last safety net between the planner and the drive-by-wire: it never shapes
comfort (the planner does that, within |jerk| <= 2.5 m/s^3 and |lat accel| <= 3 m/s^2), it only
keeps commands inside what is safe for the vehicle, so its default limits sit a bit outside the
planner's envelope and a clamp is worth a warning.

Limits applied to every command (`CommandGate.limit`), in this order:
1. steering angle |delta| <= min(max_steer_angle_rad, the vehicle file's limit);
2. lateral acceleration v^2 tan(delta) / L <= max_lat_accel_mps2 (v: measured speed from
   /vehicle/status, else the command's own velocity), i.e. |delta| <= atan(a_lat L / v^2);
3. steering rate: |delta - delta_prev| <= max_steer_rate_rps * dt;
4. acceleration min_accel_mps2 <= a <= max_accel_mps2;
5. jerk: |a - a_prev| <= max_jerk_mps3 * dt.
The rate limits act last, so the output never jumps even when a static limit shrinks (speed
rises, a re-seed from a manual drive sits outside the envelope): it then moves towards the
limit at the allowed rate. dt is the difference of command stamps (header.stamp), capped at
command_timeout_s, so a gap never unlocks an arbitrarily large step. The output keeps the
input's stamp; steering_rate_rps and jerk_mps3 are the finite differences of the gated output
over dt (what the gate really did), or, for the first command, the input's values clipped to
the limits.

Minimal-risk maneuvers (`VehicleInterfaceCore`): a stale command stream of the active source
(age of its newest accepted stamp > command_timeout_s, ROS time) starts a COMFORTABLE_STOP; an
external emergency stop starts an EMERGENCY_STOP (and escalates a running comfortable stop;
an MRM is never downgraded while it runs). The stop profile holds the steering wheel and moves
the acceleration towards -decel at the behavior's jerk limit; braking already stronger than
that is kept (a planner braking hard for an obstacle must not be eased off by the MRM). State
MRM_OPERATING while |v| >= 0.1 m/s, then MRM_SUCCEEDED with the brake held. Back to NORMAL only
when the e-stop is released and fresh valid commands of the active source have flowed without
a gap for recovery_time_s, counted from the later of the e-stop release and the flow's start.

Modes (VehicleStatus.control_mode): AUTONOMOUS gates the planner's commands, REMOTE the remote
operator's (same gate, same staleness rule); MANUAL and DISENGAGED forward nothing and seed the
rate limiters from the measured steering angle and an acceleration estimated from the speed, so
re-engaging continues from where the driver left the vehicle. Without any vehicle status the
vehicle counts as AUTONOMOUS.

Time: integer nanoseconds of ROS time throughout (sim time under use_sim_time); the caller
passes `now_ns` from the node clock. Speeds and accelerations are signed along base_link x
(negative in reverse), angles are front-wheel angles in rad, left positive.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from robotaxi_stack.common.params import ParameterError, param
from robotaxi_stack.common.stamps import NS_PER_S, MonotonicStampGuard, sec_to_ns
from robotaxi_stack.vehicle.adapters import ADAPTER_NAMES

STOPPED_SPEED_MPS = 0.1
"""|v| below which a minimal-risk maneuver has succeeded (the vehicle stands)."""

TICK_HZ = 50.0
"""Rate of the node's staleness check and of MRM commands while no control command arrives;
the contract's control rate, so a lock-stepped simulator gets one command per control tick."""

TICK_PERIOD_NS = int(round(NS_PER_S / TICK_HZ))

ACCEL_ESTIMATE_TAU_S = 0.1
"""Low-pass time constant of the acceleration estimated from measured speeds (manual seed)."""

BACKJUMP_RESET_S = 5.0
"""A command stamp this far behind the newest one is a restarted clock (replay loop, new
simulation), not a reordered message: the gate's time state starts over."""

GEAR_REVERSE = 2
"""robotaxi_msgs/VehicleStatus.GEAR_REVERSE: braking then pushes towards +x."""


class CommandGateError(ValueError):
    """An input the gate cannot use; the node reports it and treats it as no input."""


class NonFiniteCommandError(CommandGateError):
    """A control command has a NaN or infinite field."""


class OutOfOrderCommandError(CommandGateError):
    """A control command's stamp is not newer than the previous one of its source."""


class VehicleStatusError(CommandGateError):
    """A vehicle status is non-finite or goes back in time."""


class ControlMode(enum.IntEnum):
    """Who drives; values equal robotaxi_msgs/VehicleStatus MODE_* constants."""

    MANUAL = 0
    AUTONOMOUS = 1
    REMOTE = 2
    DISENGAGED = 3


class MrmStateCode(enum.IntEnum):
    """Values equal robotaxi_msgs/MrmState state constants."""

    NORMAL = 0
    MRM_OPERATING = 1
    MRM_SUCCEEDED = 2
    MRM_FAILED = 3


class MrmBehavior(enum.IntEnum):
    """Values equal robotaxi_msgs/MrmState behavior constants."""

    NONE = 0
    COMFORTABLE_STOP = 1
    EMERGENCY_STOP = 2
    PULL_OVER = 3


class CommandSource(enum.Enum):
    """Where a control command comes from; the mode decides which one drives."""

    PLANNER = 'planner'
    REMOTE = 'remote'


_MODE_SOURCE = {ControlMode.AUTONOMOUS: CommandSource.PLANNER,
                ControlMode.REMOTE: CommandSource.REMOTE}


@dataclasses.dataclass(frozen=True, kw_only=True)
class VehicleInterfaceParams:
    """Parameters of the vehicle interface node (config/vehicle_interface.param.yaml)."""

    vehicle: str = param('bmw_320i', description='config/vehicle/<name>.yaml: wheelbase and '
                         'steering angle limit')
    max_steer_angle_rad: float = param(0.7, min=0.05, max=1.5,
                                       description='front wheel angle limit; the vehicle '
                                       "file's limit applies when smaller")
    max_steer_rate_rps: float = param(0.6, min=0.05, max=5.0,
                                      description='front wheel angle rate limit')
    min_accel_mps2: float = param(-6.0, min=-15.0, max=-0.5,
                                  description='strongest braking the gate passes')
    max_accel_mps2: float = param(3.0, min=0.1, max=10.0,
                                  description='strongest acceleration the gate passes')
    max_jerk_mps3: float = param(5.0, min=0.5, max=100.0,
                                 description='acceleration change rate limit (normal driving)')
    max_lat_accel_mps2: float = param(3.0, min=0.5, max=15.0,
                                      description='limit of v^2 tan(steer) / wheelbase')
    command_timeout_s: float = param(0.3, min=0.05, max=5.0,
                                     description='older newest command: comfortable stop')
    comfortable_stop_decel_mps2: float = param(2.5, min=0.5, max=10.0,
                                               description='comfortable stop deceleration')
    comfortable_stop_jerk_mps3: float = param(2.0, min=0.1, max=50.0,
                                              description='jerk limit of the comfortable stop')
    emergency_stop_decel_mps2: float = param(6.0, min=1.0, max=15.0,
                                             description='emergency stop deceleration')
    emergency_stop_jerk_mps3: float = param(15.0, min=0.5, max=100.0,
                                            description='jerk limit of the emergency stop')
    recovery_time_s: float = param(1.0, min=0.0, max=60.0,
                                   description='valid commands must flow this long to end '
                                   'an MRM')
    mrm_rate_hz: float = param(10.0, min=1.0, max=100.0,
                               description='MrmState publication rate (also sent on change)')
    adapter: str = param('topic', choices=ADAPTER_NAMES,
                         description='drive-by-wire adapter the gated command goes to')
    reliable_inputs: bool = param(False, description='subscribe the vehicle status reliable '
                                  '(the scenario runner\'s reliable simulator topics)')
    sync_vehicle_status: bool = param(False, description='gate a planner command once the '
                                      'vehicle status of its stamp is in (scenario runner: '
                                      'the same measured state every run)')

    def __post_init__(self):
        if self.comfortable_stop_decel_mps2 > self.emergency_stop_decel_mps2:
            raise ParameterError(
                f'parameter comfortable_stop_decel_mps2 = {self.comfortable_stop_decel_mps2} '
                f'exceeds emergency_stop_decel_mps2 = {self.emergency_stop_decel_mps2}: an '
                'emergency stop must brake at least as hard')
        if self.comfortable_stop_jerk_mps3 > self.emergency_stop_jerk_mps3:
            raise ParameterError(
                f'parameter comfortable_stop_jerk_mps3 = {self.comfortable_stop_jerk_mps3} '
                f'exceeds emergency_stop_jerk_mps3 = {self.emergency_stop_jerk_mps3}: an '
                'emergency stop must brake at least as fast')
        if self.emergency_stop_decel_mps2 > -self.min_accel_mps2:
            raise ParameterError(
                f'parameter emergency_stop_decel_mps2 = {self.emergency_stop_decel_mps2} '
                f'exceeds -min_accel_mps2 = {-self.min_accel_mps2}: the gate would clip its '
                'own emergency stop')


@dataclasses.dataclass(frozen=True)
class GateLimits:
    """The limits the gate enforces: parameters combined with the vehicle's own limits."""

    max_steer_angle_rad: float
    max_steer_rate_rps: float
    min_accel_mps2: float
    max_accel_mps2: float
    max_jerk_mps3: float
    max_lat_accel_mps2: float
    wheelbase_m: float
    max_dt_s: float

    @classmethod
    def from_params(cls, params: VehicleInterfaceParams, wheelbase_m: float,
                    vehicle_max_steer_angle_rad: float) -> 'GateLimits':
        """Effective limits; the steering angle limit is the smaller of parameter and vehicle."""
        for name, value in (('wheelbase_m', wheelbase_m),
                            ('vehicle_max_steer_angle_rad', vehicle_max_steer_angle_rad)):
            if not (math.isfinite(value) and value > 0.0):
                raise ParameterError(f'vehicle {params.vehicle!r}: {name} = {value!r} must be '
                                     'a positive number')
        return cls(max_steer_angle_rad=min(params.max_steer_angle_rad,
                                           vehicle_max_steer_angle_rad),
                   max_steer_rate_rps=params.max_steer_rate_rps,
                   min_accel_mps2=params.min_accel_mps2,
                   max_accel_mps2=params.max_accel_mps2,
                   max_jerk_mps3=params.max_jerk_mps3,
                   max_lat_accel_mps2=params.max_lat_accel_mps2,
                   wheelbase_m=wheelbase_m,
                   max_dt_s=params.command_timeout_s)

    def lat_accel_steer_limit_rad(self, speed_mps: float) -> float:
        """Largest |front wheel angle| with v^2 tan(delta) / L <= max_lat_accel_mps2."""
        v2 = speed_mps * speed_mps
        if v2 <= 0.0:
            return 0.5 * math.pi
        return math.atan(self.max_lat_accel_mps2 * self.wheelbase_m / v2)


@dataclasses.dataclass(frozen=True)
class ControlInput:
    """A control command as the gate sees it (robotaxi_msgs/ControlCommand without header).

    stamp_ns: header.stamp (ROS time); angles in rad (front wheel, left positive); speed,
    acceleration and jerk signed along base_link x.
    """

    stamp_ns: int
    steering_angle_rad: float
    steering_rate_rps: float = 0.0
    velocity_mps: float = 0.0
    acceleration_mps2: float = 0.0
    jerk_mps3: float = 0.0

    def non_finite_fields(self) -> list[str]:
        return [name for name in ('steering_angle_rad', 'steering_rate_rps', 'velocity_mps',
                                  'acceleration_mps2', 'jerk_mps3')
                if not math.isfinite(getattr(self, name))]


@dataclasses.dataclass(frozen=True)
class GatedCommand:
    """The command that goes to the drive-by-wire adapter; units as in ControlInput.

    `behavior` says what produced it: NONE for a gated control command, else the MRM.
    """

    stamp_ns: int
    steering_angle_rad: float
    steering_rate_rps: float
    velocity_mps: float
    acceleration_mps2: float
    jerk_mps3: float
    behavior: MrmBehavior = MrmBehavior.NONE


@dataclasses.dataclass(frozen=True)
class GateResult:
    """A gated command and the names of the limits that changed it (empty: passed as is).

    Limit names: steer_angle, lat_accel, steer_rate, accel, jerk.
    """

    command: GatedCommand
    clamps: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class VehicleState:
    """One robotaxi_msgs/VehicleStatus: measured speed (m/s, signed) and front wheel angle."""

    stamp_ns: int
    velocity_mps: float
    steering_angle_rad: float
    control_mode: ControlMode = ControlMode.AUTONOMOUS
    gear: int = 1


@dataclasses.dataclass(frozen=True)
class MrmStatus:
    """What robotaxi_msgs/MrmState carries: state, behavior and why."""

    state: MrmStateCode = MrmStateCode.NORMAL
    behavior: MrmBehavior = MrmBehavior.NONE
    reason: str = ''


_LIMIT_NAMES = ('steer_angle', 'lat_accel', 'steer_rate', 'accel', 'jerk')


def _toward(previous: float, target: float, max_step: float) -> tuple[float, bool]:
    """Move from previous towards target by at most max_step; True when the step was cut."""
    step = target - previous
    # Relative slack: float noise in planner outputs that sit exactly on the limit is no clamp.
    if abs(step) <= max_step * (1.0 + 1e-9) + 1e-12:
        return target, False
    return previous + math.copysign(max_step, step), True


class CommandGate:
    """Static limits plus rate limiters that remember the previous output.

    Rate limits need a previous output: after `seed` (measured state) or a first command.
    Without one, the first command only gets the static limits.
    """

    def __init__(self, limits: GateLimits):
        self.limits = limits
        self._steer_rad: float | None = None
        self._accel_mps2: float | None = None
        self._stamp_ns: int | None = None

    @property
    def seeded(self) -> bool:
        return self._steer_rad is not None

    @property
    def steering_angle_rad(self) -> float | None:
        """Previous output (or seed) front wheel angle."""
        return self._steer_rad

    @property
    def acceleration_mps2(self) -> float | None:
        """Previous output (or seed) acceleration."""
        return self._accel_mps2

    def seed(self, steering_angle_rad: float, acceleration_mps2: float, stamp_ns: int) -> None:
        """Continue the rate limiters from this state (measured vehicle state at stamp_ns)."""
        self._steer_rad = float(steering_angle_rad)
        self._accel_mps2 = float(acceleration_mps2)
        self._stamp_ns = int(stamp_ns)

    def forget_stamp(self) -> None:
        """The clock restarted: keep the state, but the next dt is unknown."""
        self._stamp_ns = None

    def dt_s(self, stamp_ns: int) -> float | None:
        """Seconds since the previous output, in [0, max_dt_s]; None without a previous one.

        0 when the previous output's time is unknown (clock restart): no change is allowed
        until the next command brings a usable dt, so a restart never causes a jump.
        """
        if self._steer_rad is None:
            return None
        if self._stamp_ns is None:
            return 0.0
        dt = (stamp_ns - self._stamp_ns) / NS_PER_S
        return min(max(dt, 0.0), self.limits.max_dt_s)

    def _limit_steering(self, target: float, feedforward_rps: float, dt: float | None,
                        speed_mps: float, clamps: list[str]) -> tuple[float, float]:
        limits = self.limits
        if abs(target) > limits.max_steer_angle_rad:
            target = math.copysign(limits.max_steer_angle_rad, target)
            clamps.append('steer_angle')
        lat_limit = limits.lat_accel_steer_limit_rad(speed_mps)
        if abs(target) > lat_limit:
            target = math.copysign(lat_limit, target)
            clamps.append('lat_accel')
        max_rate = limits.max_steer_rate_rps
        if dt is None or self._steer_rad is None:
            return target, min(max(feedforward_rps, -max_rate), max_rate)
        steer, cut = _toward(self._steer_rad, target, max_rate * dt)
        if cut:
            clamps.append('steer_rate')
        return steer, (steer - self._steer_rad) / dt if dt > 0.0 else 0.0

    def _limit_accel(self, target: float, feedforward_mps3: float, max_jerk: float,
                     dt: float | None, clamps: list[str]) -> tuple[float, float]:
        limits = self.limits
        if not limits.min_accel_mps2 <= target <= limits.max_accel_mps2:
            target = min(max(target, limits.min_accel_mps2), limits.max_accel_mps2)
            clamps.append('accel')
        if dt is None or self._accel_mps2 is None:
            return target, min(max(feedforward_mps3, -max_jerk), max_jerk)
        accel, cut = _toward(self._accel_mps2, target, max_jerk * dt)
        if cut:
            clamps.append('jerk')
        return accel, (accel - self._accel_mps2) / dt if dt > 0.0 else 0.0

    def limit(self, command: ControlInput, speed_mps: float) -> GateResult:
        """Gate one finite command; `speed_mps` is the vehicle speed for the lateral limit."""
        clamps: list[str] = []
        dt = self.dt_s(command.stamp_ns)
        steer, steer_rate = self._limit_steering(command.steering_angle_rad,
                                                 command.steering_rate_rps, dt, speed_mps,
                                                 clamps)
        accel, jerk = self._limit_accel(command.acceleration_mps2, command.jerk_mps3,
                                        self.limits.max_jerk_mps3, dt, clamps)
        self.seed(steer, accel, command.stamp_ns)
        return GateResult(GatedCommand(stamp_ns=command.stamp_ns, steering_angle_rad=steer,
                                       steering_rate_rps=steer_rate,
                                       velocity_mps=command.velocity_mps,
                                       acceleration_mps2=accel, jerk_mps3=jerk),
                          tuple(clamps))

    def stop_step(self, stamp_ns: int, behavior: MrmBehavior, decel_mps2: float,
                  jerk_mps3: float, speed_mps: float, direction: float) -> GatedCommand:
        """One command of a stop profile: steering held, acceleration towards -decel.

        The jerk limit applies over the time since the previous output, at most one tick
        (TICK_PERIOD_NS). `direction` (+1 forward, -1 reverse) is the travel direction that
        braking opposes; the command's velocity_mps is the current speed estimate `speed_mps`.
        Needs a seed.
        """
        if self._steer_rad is None or self._accel_mps2 is None:
            raise RuntimeError('stop_step needs a seeded gate')
        dt = self.dt_s(stamp_ns)
        if dt is not None:
            # The first step after a silent gap starts the ramp from where the actuators
            # are (holding the last command), not with the gap's worth of change at once.
            dt = min(dt, TICK_PERIOD_NS / NS_PER_S)
        previous = self._accel_mps2
        target = -direction * decel_mps2
        if direction * previous < target * direction:
            target = previous  # already braking harder: keep it
        unused: list[str] = []
        steer, steer_rate = self._limit_steering(self._steer_rad, 0.0, dt, speed_mps, unused)
        accel, jerk = self._limit_accel(target, 0.0, jerk_mps3, dt, unused)
        self.seed(steer, accel, stamp_ns)
        return GatedCommand(stamp_ns=stamp_ns, steering_angle_rad=steer,
                            steering_rate_rps=steer_rate, velocity_mps=speed_mps,
                            acceleration_mps2=accel, jerk_mps3=jerk, behavior=behavior)


class _CommandStream:
    """Newest accepted stamp of one command source and when its current gap-free flow began."""

    def __init__(self, timeout_ns: int):
        self.guard = MonotonicStampGuard(BACKJUMP_RESET_S)
        self._timeout_ns = timeout_ns
        self.last_ns: int | None = None
        self.flow_start_ns: int | None = None

    def accept(self, stamp_ns: int) -> bool:
        """Record a valid command; False (nothing recorded) when it is out of order.

        A restarted clock (a back jump larger than BACKJUMP_RESET_S) is accepted and starts a
        new flow.
        """
        resets = self.guard.resets
        if not self.guard.accept(stamp_ns):
            return False
        if (self.guard.resets != resets or self.flow_start_ns is None or self.last_ns is None
                or stamp_ns - self.last_ns > self._timeout_ns):
            self.flow_start_ns = stamp_ns
        self.last_ns = stamp_ns
        return True

    def break_flow(self) -> None:
        """An invalid command interrupts the flow that recovery waits for."""
        self.flow_start_ns = None

    def age_s(self, now_ns: int) -> float | None:
        return None if self.last_ns is None else (now_ns - self.last_ns) / NS_PER_S

    def flow_s(self) -> float:
        if self.last_ns is None or self.flow_start_ns is None:
            return -math.inf
        return (self.last_ns - self.flow_start_ns) / NS_PER_S


class VehicleInterfaceCore:
    """Modes, command staleness, minimal-risk maneuvers and the gate, without ROS.

    Feed it `on_vehicle_status`, `on_emergency_stop`, `on_command` (each control command of
    either source) and `on_tick` (50 Hz on the node clock). `on_command` and `on_tick` return
    what to send to the adapter (None: nothing); `mrm` is the current MrmState content.
    Output stamps strictly increase: nothing is returned twice for one stamp.
    """

    def __init__(self, params: VehicleInterfaceParams, limits: GateLimits):
        self.params = params
        self.gate = CommandGate(limits)
        self._timeout_ns = sec_to_ns(params.command_timeout_s)
        self._streams = {source: _CommandStream(self._timeout_ns) for source in CommandSource}
        self._vehicle: VehicleState | None = None
        self._accel_estimate_mps2 = 0.0
        self._speed_estimate_mps = 0.0  # used only while no vehicle status has arrived
        self._direction = 1.0
        self._estop = False
        self._estop_released_ns: int | None = None
        self._mrm = MrmStatus()
        self._last_output_ns: int | None = None
        self.counters: dict[str, int] = {name: 0 for name in _LIMIT_NAMES}
        self.counters.update(non_finite=0, out_of_order=0, bad_vehicle_status=0,
                             comfortable_stops=0, emergency_stops=0)

    # -- state -----------------------------------------------------------------------------
    @property
    def mode(self) -> ControlMode:
        """The vehicle's control mode; AUTONOMOUS until a vehicle status says otherwise."""
        return self._vehicle.control_mode if self._vehicle is not None else ControlMode.AUTONOMOUS

    @property
    def active_source(self) -> CommandSource | None:
        """The source whose commands drive now (None in MANUAL/DISENGAGED)."""
        return _MODE_SOURCE.get(self.mode)

    @property
    def mrm(self) -> MrmStatus:
        return self._mrm

    @property
    def emergency_stop(self) -> bool:
        return self._estop

    @property
    def speed_mps(self) -> float:
        """Measured speed, or the estimate from commands while no vehicle status exists."""
        if self._vehicle is not None:
            return self._vehicle.velocity_mps
        return self._speed_estimate_mps

    @property
    def vehicle(self) -> VehicleState | None:
        return self._vehicle

    # -- inputs ----------------------------------------------------------------------------
    def on_vehicle_status(self, state: VehicleState, now_ns: int) -> None:
        """Take a measured state; in MANUAL/DISENGAGED it re-seeds the rate limiters.

        Raises VehicleStatusError (state ignored) for non-finite values or a stamp older than
        the previous status (unless the clock restarted).
        """
        if not (math.isfinite(state.velocity_mps) and math.isfinite(state.steering_angle_rad)):
            self.counters['bad_vehicle_status'] += 1
            raise VehicleStatusError(f'vehicle status has a non-finite value: v = '
                                     f'{state.velocity_mps!r}, steer = '
                                     f'{state.steering_angle_rad!r}')
        previous = self._vehicle
        if previous is not None:
            dt_ns = state.stamp_ns - previous.stamp_ns
            if -sec_to_ns(BACKJUMP_RESET_S) <= dt_ns < 0:
                self.counters['bad_vehicle_status'] += 1
                raise VehicleStatusError(f'vehicle status stamp went back '
                                         f'{-dt_ns / NS_PER_S:.3f} s')
            if dt_ns > 0:
                dt = dt_ns / NS_PER_S
                measured = (state.velocity_mps - previous.velocity_mps) / dt
                self._accel_estimate_mps2 += (dt / (ACCEL_ESTIMATE_TAU_S + dt)
                                              * (measured - self._accel_estimate_mps2))
        self._vehicle = state
        if state.gear == GEAR_REVERSE:
            self._direction = -1.0
        elif abs(state.velocity_mps) >= STOPPED_SPEED_MPS:
            self._direction = math.copysign(1.0, state.velocity_mps)
        else:
            self._direction = 1.0  # standing in a forward gear: holding brakes towards -x
        if self.active_source is None or not self.gate.seeded:
            # A driver is in control (or nothing was sent yet): continue from the vehicle.
            self.gate.seed(state.steering_angle_rad, self._accel_estimate_mps2, state.stamp_ns)
        self._update_mrm(now_ns)

    def on_emergency_stop(self, engaged: bool, now_ns: int) -> None:
        """External emergency stop (remote operations, safety button); False releases it."""
        if not engaged and self._estop:
            self._estop_released_ns = now_ns
        self._estop = bool(engaged)
        self._update_mrm(now_ns)

    def on_command(self, source: CommandSource, command: ControlInput,
                   now_ns: int) -> GateResult | None:
        """Validate one control command; return what to send (None: nothing to send).

        In NORMAL the active source's command is gated; during an MRM it is answered with the
        MRM command carrying its stamp (a lock-stepped simulator waits for that stamp).
        Raises NonFiniteCommandError or OutOfOrderCommandError; both count as no command.
        """
        stream = self._streams[source]
        bad = command.non_finite_fields()
        if bad:
            stream.break_flow()
            self.counters['non_finite'] += 1
            self._update_mrm(now_ns)
            raise NonFiniteCommandError(f'{source.value} command at {command.stamp_ns} ns has '
                                        f'non-finite {", ".join(bad)}')
        resets = stream.guard.resets
        if not stream.accept(command.stamp_ns):
            self.counters['out_of_order'] += 1
            raise OutOfOrderCommandError(
                f'{source.value} command stamp {command.stamp_ns} ns is not after the previous '
                f'{stream.guard.last_ns} ns')
        if stream.guard.resets != resets:
            self._restart_clock()
        active = source is self.active_source
        if active and self._vehicle is None:
            self._speed_estimate_mps = command.velocity_mps
            if abs(command.velocity_mps) >= STOPPED_SPEED_MPS:
                self._direction = math.copysign(1.0, command.velocity_mps)
        self._update_mrm(now_ns)
        if not active or not self._stamp_is_new(command.stamp_ns):
            return None
        self._last_output_ns = command.stamp_ns
        if self._mrm.behavior is not MrmBehavior.NONE:
            return GateResult(self._stop_command(command.stamp_ns))
        result = self.gate.limit(command, self.speed_mps)
        for name in result.clamps:
            self.counters[name] += 1
        return result

    def on_tick(self, now_ns: int) -> GatedCommand | None:
        """The 50 Hz check: staleness, and an MRM command stamped now_ns when one is due.

        During an MRM a command is due once per TICK_PERIOD_NS grid cell of ROS time (so a
        lock-stepped simulator's 50 Hz control ticks each get one) unless a control command
        already got its answer in that cell.
        """
        if (self._last_output_ns is not None
                and now_ns < self._last_output_ns - sec_to_ns(BACKJUMP_RESET_S)):
            self._restart_clock()
        self._update_mrm(now_ns)
        if self._mrm.behavior is MrmBehavior.NONE or self.active_source is None:
            return None
        if (self._last_output_ns is not None
                and now_ns // TICK_PERIOD_NS <= self._last_output_ns // TICK_PERIOD_NS):
            return None
        self._last_output_ns = now_ns
        return self._stop_command(now_ns)

    # -- internals -------------------------------------------------------------------------
    def _stamp_is_new(self, stamp_ns: int) -> bool:
        return self._last_output_ns is None or stamp_ns > self._last_output_ns

    def _restart_clock(self) -> None:
        self._last_output_ns = None
        self.gate.forget_stamp()
        if self._estop_released_ns is not None:
            self._estop_released_ns = None  # released "long ago" on the old clock

    def _stop_command(self, stamp_ns: int) -> GatedCommand:
        if not self.gate.seeded:
            steer = self._vehicle.steering_angle_rad if self._vehicle is not None else 0.0
            self.gate.seed(steer, self._accel_estimate_mps2, stamp_ns)
        if self._vehicle is None:
            # No measurement: integrate the commanded braking since the previous output.
            dt = self.gate.dt_s(stamp_ns) or 0.0
            braking = max(0.0, -self._direction * (self.gate.acceleration_mps2 or 0.0))
            magnitude = max(0.0, abs(self._speed_estimate_mps) - braking * dt)
            self._speed_estimate_mps = math.copysign(magnitude, self._speed_estimate_mps)
        params = self.params
        if self._mrm.behavior is MrmBehavior.EMERGENCY_STOP:
            decel, jerk = params.emergency_stop_decel_mps2, params.emergency_stop_jerk_mps3
        else:
            decel, jerk = params.comfortable_stop_decel_mps2, params.comfortable_stop_jerk_mps3
        return self.gate.stop_step(stamp_ns, self._mrm.behavior, decel, jerk, self.speed_mps,
                                   self._direction)

    def _trigger(self, source: CommandSource, now_ns: int) -> tuple[MrmBehavior, str] | None:
        if self._estop:
            return MrmBehavior.EMERGENCY_STOP, 'external emergency stop'
        age = self._streams[source].age_s(now_ns)
        if age is None:
            # Before the first command a standing car is simply not yet engaged (it stays
            # braked by the DBW); one that rolls without a planner must be stopped.
            if abs(self.speed_mps) < STOPPED_SPEED_MPS:
                return None
            return MrmBehavior.COMFORTABLE_STOP, f'no {source.value} control command received'
        if age > self.params.command_timeout_s:
            return (MrmBehavior.COMFORTABLE_STOP, f'control command stale: {age:.2f} s > '
                    f'{self.params.command_timeout_s:.2f} s')
        return None

    def _recovered(self, source: CommandSource, now_ns: int) -> bool:
        """E-stop released and fresh valid commands flowing for recovery_time_s."""
        if self._estop:
            return False
        flow_s = self._streams[source].flow_s()
        since_release_s = (math.inf if self._estop_released_ns is None
                           else (now_ns - self._estop_released_ns) / NS_PER_S)
        return min(flow_s, since_release_s) >= self.params.recovery_time_s

    def _update_mrm(self, now_ns: int) -> None:
        source = self.active_source
        if source is None:
            self._mrm = MrmStatus(reason=f'driver in control ({self.mode.name.lower()} mode)')
            return
        current = self._mrm
        trigger = self._trigger(source, now_ns)
        behavior, reason = current.behavior, current.reason
        if trigger is not None:
            starts = behavior is MrmBehavior.NONE
            escalates = (behavior is MrmBehavior.COMFORTABLE_STOP
                         and trigger[0] is MrmBehavior.EMERGENCY_STOP)
            if starts or escalates:
                behavior, reason = trigger
                self.counters['emergency_stops' if behavior is MrmBehavior.EMERGENCY_STOP
                              else 'comfortable_stops'] += 1
        elif behavior is not MrmBehavior.NONE and self._recovered(source, now_ns):
            behavior, reason = MrmBehavior.NONE, ''
        if behavior is MrmBehavior.NONE:
            self._mrm = MrmStatus(reason=reason)
        elif abs(self.speed_mps) < STOPPED_SPEED_MPS:
            self._mrm = MrmStatus(MrmStateCode.MRM_SUCCEEDED, behavior, reason)
        else:
            self._mrm = MrmStatus(MrmStateCode.MRM_OPERATING, behavior, reason)
