"""Ego vehicle dynamics for the closed-loop simulator (pure core: numpy + commonroad models).

Model
-----
The body follows the single-track (ST) model of commonroad-vehicle-models 3.0.2
(`vehiclemodels.vehicle_dynamics_st`, Althoff & Wuersching, "CommonRoad: Vehicle Models", 2020)
with a real parameter set (1 Ford Escort, 2 BMW 320i, 3 VW Vanagon), called as published. Its
state is referenced to the centre of gravity (CoG)::

    x = [sx, sy, delta, v, psi, psi_dot, beta]   (CoG position m, front wheel angle rad,
                                                  CoG speed m/s, yaw rad, yaw rate rad/s,
                                                  slip angle at the CoG rad)
    u = [steering velocity rad/s, longitudinal acceleration m/s^2]

The stack's pose reference is base_link = rear-axle centre (on the ground, x forward, z up), which
lies `b` (CoG to rear axle, from the parameter set) behind the CoG along the body x axis, so
`base_link = CoG - b * (cos psi, sin psi)`; base_link's velocity in its own frame is
`(v cos beta, v sin beta - psi_dot * b)`.

Actuators are first-order lags on top of the model: the front wheel angle follows the commanded
angle with time constant `steer_time_constant_s`, the longitudinal acceleration follows the
command with `accel_time_constant_s`. Each lag is discretised exactly over an integration
sub-step (zero-order hold of the command), and the resulting piecewise-constant steering velocity
and mean acceleration are the model's inputs `u`, so the commonroad input convention is kept.
Steering angle and rate limits and the acceleration limits (|a| <= a_max, the power limit
a_max * v_switch / v above v_switch, v_min <= v <= v_max) come from the parameter set; the vehicle
YAML may only narrow the steering limits.

Integration
-----------
Fixed-step classic Runge-Kutta 4 with at most `MAX_SUBSTEP_S` = 10 ms per sub-step (>= 100 Hz);
a sim step is split into equal sub-steps (re-planned after each one). The ST model's lateral dynamics get stiff at low speed:
both lateral eigenvalues grow like mu * C_S * g / v (about 215 / v 1/s for the BMW), and RK4 is
only stable for |h * lambda| < 2.78, so below roughly 1 m/s the sub-step is shortened further to
keep |h * lambda| <= 2 (the eigenvalues of the 2x2 lateral Jacobian are computed in closed form).
The sub-step sequence depends only on the state and dt, so stepping is deterministic.

Low speed and reverse
---------------------
The ST model is singular at v = 0 (terms in 1/v). Like commonroad's own `vehicle_dynamics_st`,
which switches to the kinematic model below |v| = 0.1 m/s, a sub-step that starts below
`KINEMATIC_SWITCH_SPEED_MPS` = 0.1 m/s is integrated with commonroad's kinematic single-track
model referenced at the CoG (`vehicle_dynamics_ks_cog`), and the yaw rate and slip angle are set
to their kinematic values (beta = atan(tan(delta) * b / l), psi_dot = v cos(beta) tan(delta) / l),
so the ST model starts from a consistent state when the speed rises again. Reverse motion always
uses the kinematic model: the ST tyre model is unstable for v < 0 (its 1/v terms change sign),
and reversing happens at parking speeds where slip is negligible.

Gears and the sign convention: speeds and accelerations are signed along base_link x (negative
when reversing), for the command too. DRIVE: the speed never goes below 0 (braking to a stop holds
the vehicle, it never rolls backwards). REVERSE: the speed never goes above 0. NEUTRAL: no
propulsion, only the braking part of the command (the part opposing the motion) acts. PARK: the
vehicle is held at standstill. Gear changes are only accepted at standstill. Steering works in
every gear.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import os
import pathlib
from typing import Any, Mapping

import numpy as np
import yaml
from vehiclemodels.utils.vehicle_dynamics_ks_cog import vehicle_dynamics_ks_cog
from vehiclemodels.vehicle_dynamics_st import vehicle_dynamics_st
from vehiclemodels.vehicle_parameters import setup_vehicle_parameters

KINEMATIC_SWITCH_SPEED_MPS = 0.1
"""Below this CoG speed the kinematic model is used (commonroad's own switch speed)."""

MAX_SUBSTEP_S = 0.01
"""Longest integration sub-step (100 Hz)."""

STANDSTILL_SPEED_MPS = 1e-3
"""|speed| below which the vehicle counts as standing (gear changes, PARK)."""

MAX_STEP_S = 1.0
"""Longest accepted sim step; longer steps hide dynamics the caller should see."""

_RK4_STABLE_H_LAMBDA = 2.0  # RK4's real-axis stability limit is 2.785: keep a margin
_GRAVITY_MPS2 = 9.81  # the value commonroad's models use
_VEHICLE_FORMAT = 'robotaxi-vehicle/1'
_WHEELBASE_TOLERANCE_M = 5e-3


class VehicleConfigError(ValueError):
    """A vehicle YAML file is missing, malformed or inconsistent with its parameter set."""


class VehicleCommandError(ValueError):
    """A command, time step, gear or initial state is not finite or out of range."""


class Gear(enum.IntEnum):
    """Transmission state; values equal robotaxi_msgs/VehicleStatus GEAR_* constants."""

    NEUTRAL = 0
    DRIVE = 1
    REVERSE = 2
    PARK = 3


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class SensorMount:
    """Pose of a sensor frame in base_link: metres and radians (URDF roll-pitch-yaw order)."""

    x_m: float
    y_m: float
    z_m: float
    roll_rad: float = 0.0
    pitch_rad: float = 0.0
    yaw_rad: float = 0.0

    def transform(self) -> np.ndarray:
        """4x4 base_link_T_sensor: maps points in the sensor frame to base_link."""
        return _transform_from_xyzrpy(self.x_m, self.y_m, self.z_m,
                                      self.roll_rad, self.pitch_rad, self.yaw_rad)


# Optical frame (x right, y down, z forward, REP 103 `_optical`) expressed in a camera's body
# frame (x forward, y left, z up): columns are the optical axes.
CAMERA_BODY_R_OPTICAL = np.array([[0.0, 0.0, 1.0],
                                  [-1.0, 0.0, 0.0],
                                  [0.0, -1.0, 0.0]])
CAMERA_BODY_R_OPTICAL.setflags(write=False)


@dataclasses.dataclass(frozen=True)
class CameraConfig:
    """Front camera: mount of its body frame (x forward, y left, z up) plus pinhole intrinsics.

    Projection uses the optical frame (x right, y down, z forward) derived from the body frame
    by `CAMERA_BODY_R_OPTICAL`, as ROS does for `<camera>_optical_frame`.
    """

    mount: SensorMount
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    width_px: int
    height_px: int

    def intrinsic_matrix(self) -> np.ndarray:
        """3x3 K mapping optical-frame rays to pixel coordinates."""
        return np.array([[self.fx_px, 0.0, self.cx_px],
                         [0.0, self.fy_px, self.cy_px],
                         [0.0, 0.0, 1.0]])

    def optical_transform(self) -> np.ndarray:
        """4x4 base_link_T_optical: maps optical-frame points to base_link."""
        optical = np.eye(4)
        optical[:3, :3] = CAMERA_BODY_R_OPTICAL
        return self.mount.transform() @ optical


@dataclasses.dataclass(frozen=True)
class VehicleParams:
    """One vehicle: body, steering, actuators, sensors and its commonroad dynamics set.

    Geometry is in base_link (rear-axle centre on the ground). Fields after `camera_front` are
    copied from the commonroad parameter set for consumers such as planners; `commonroad` is the
    full `vehiclemodels` parameter object that the dynamics use.
    """

    name: str
    commonroad_parameter_set: int
    length_m: float
    width_m: float
    height_m: float
    wheelbase_m: float
    rear_overhang_m: float
    max_steer_angle_rad: float
    max_steer_rate_rps: float
    steer_time_constant_s: float
    accel_time_constant_s: float
    lidar_top: SensorMount
    camera_front: CameraConfig
    cog_to_front_axle_m: float
    cog_to_rear_axle_m: float
    mass_kg: float
    yaw_inertia_kgm2: float
    max_accel_mps2: float
    accel_power_switch_speed_mps: float
    max_speed_mps: float
    max_reverse_speed_mps: float
    commonroad: Any = dataclasses.field(repr=False, compare=False)

    @property
    def front_overhang_m(self) -> float:
        """Front axle to front bumper."""
        return self.length_m - self.wheelbase_m - self.rear_overhang_m

    @property
    def box_centre_offset_m(self) -> float:
        """Body box centre ahead of base_link along base_link x."""
        return 0.5 * self.length_m - self.rear_overhang_m

    def footprint_local(self) -> np.ndarray:
        """(4, 2) body corners in base_link, counter-clockwise from rear right."""
        rear = -self.rear_overhang_m
        front = self.length_m - self.rear_overhang_m
        half_width = 0.5 * self.width_m
        return np.array([[rear, -half_width], [front, -half_width],
                         [front, half_width], [rear, half_width]])


@functools.lru_cache(maxsize=8)
def _commonroad_parameters(parameter_set: int) -> Any:
    # OmegaConf parsing takes ~30 ms; the object is treated as read-only.
    return setup_vehicle_parameters(vehicle_id=parameter_set)


def vehicle_config_dirs() -> list[pathlib.Path]:
    """Folders searched for `<name>.yaml`: the source tree, then installed share folders."""
    here = pathlib.Path(__file__).resolve()
    dirs = [here.parents[3] / 'config' / 'vehicle']
    if len(here.parents) > 5:
        # install/<pkg>/lib/pythonX.Y/site-packages/robotaxi_stack/sim -> install/<pkg>/share
        dirs.append(here.parents[5] / 'share' / 'robotaxi_stack' / 'config' / 'vehicle')
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            dirs.append(pathlib.Path(prefix) / 'share' / 'robotaxi_stack' / 'config' / 'vehicle')
    unique = []
    for folder in dirs:
        if folder not in unique:
            unique.append(folder)
    return unique


def available_vehicles() -> list[str]:
    """Names of the vehicle YAML files found in `vehicle_config_dirs()`."""
    names = set()
    for folder in vehicle_config_dirs():
        if folder.is_dir():
            names.update(p.stem for p in folder.glob('*.yaml'))
    return sorted(names)


def _resolve_vehicle_path(name_or_path: str | os.PathLike) -> pathlib.Path:
    text = os.fspath(name_or_path)
    if not text:
        raise VehicleConfigError('vehicle name is empty')
    candidate = pathlib.Path(text)
    if candidate.suffix in ('.yaml', '.yml') or os.sep in text:
        if candidate.is_file():
            return candidate
        raise VehicleConfigError(f'vehicle file {text!r} does not exist')
    for folder in vehicle_config_dirs():
        path = folder / f'{text}.yaml'
        if path.is_file():
            return path
    raise VehicleConfigError(f'unknown vehicle {text!r}; available: {available_vehicles()}')


def _take(section: Mapping[str, Any], context: str, keys: Mapping[str, type]) -> dict:
    """Exactly `keys` from a mapping, typed; names the offending key on any mismatch."""
    if not isinstance(section, Mapping):
        raise VehicleConfigError(f'{context}: expected a mapping, got {type(section).__name__}')
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise VehicleConfigError(f'{context}: unknown key(s) {unknown}; allowed: {sorted(keys)}')
    values = {}
    for key, kind in keys.items():
        if key not in section:
            raise VehicleConfigError(f'{context}.{key} is missing')
        value = section[key]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise VehicleConfigError(f'{context}.{key} = {value!r}: expected a number')
            value = float(value)
            if not math.isfinite(value):
                raise VehicleConfigError(f'{context}.{key} = {value!r}: must be finite')
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise VehicleConfigError(f'{context}.{key} = {value!r}: expected an integer')
        elif kind is str:
            if not isinstance(value, str):
                raise VehicleConfigError(f'{context}.{key} = {value!r}: expected a string')
        values[key] = value
    return values


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise VehicleConfigError(message)


_MOUNT_KEYS = {'x': float, 'y': float, 'z': float, 'roll': float, 'pitch': float, 'yaw': float}
_INTRINSIC_KEYS = {'fx': float, 'fy': float, 'cx': float, 'cy': float, 'width': int,
                   'height': int}


def _mount(values: Mapping[str, float], context: str) -> SensorMount:
    for key in ('roll', 'pitch', 'yaw'):
        _require(abs(values[key]) <= 2.0 * math.pi,
                 f'{context}.{key} = {values[key]} rad is outside [-2 pi, 2 pi]')
    return SensorMount(values['x'], values['y'], values['z'], values['roll'], values['pitch'],
                       values['yaw'])


def vehicle_params_from_dict(document: Mapping[str, Any], source: str = '<dict>') -> VehicleParams:
    """Validate a parsed vehicle YAML document and combine it with its commonroad set."""
    top = _take(document, source, {'format': str, 'name': str, 'commonroad_parameter_set': int,
                                   'dimensions': dict, 'steering': dict, 'actuators': dict,
                                   'sensors': dict})
    _require(top['format'] == _VEHICLE_FORMAT,
             f'{source}.format = {top["format"]!r}: expected {_VEHICLE_FORMAT!r}')
    set_id = top['commonroad_parameter_set']
    _require(set_id in (1, 2, 3), f'{source}.commonroad_parameter_set = {set_id}: expected one '
             'of [1, 2, 3] (Ford Escort, BMW 320i, VW Vanagon)')
    cr = _commonroad_parameters(set_id)
    dims = _take(top['dimensions'], f'{source}.dimensions',
                 {'length_m': float, 'width_m': float, 'height_m': float, 'wheelbase_m': float,
                  'rear_overhang_m': float})
    for key, value in dims.items():
        _require(value > 0.0, f'{source}.dimensions.{key} = {value}: must be > 0')
    wheelbase_cr = cr.a + cr.b
    _require(abs(dims['wheelbase_m'] - wheelbase_cr) <= _WHEELBASE_TOLERANCE_M,
             f'{source}.dimensions.wheelbase_m = {dims["wheelbase_m"]}: commonroad set {set_id} '
             f'has a + b = {wheelbase_cr:.4f} m')
    _require(dims['length_m'] > dims['wheelbase_m'] + dims['rear_overhang_m'],
             f'{source}.dimensions: length_m = {dims["length_m"]} leaves no front overhang '
             f'(wheelbase_m + rear_overhang_m = '
             f'{dims["wheelbase_m"] + dims["rear_overhang_m"]})')
    steering = _take(top['steering'], f'{source}.steering',
                     {'max_angle_rad': float, 'max_rate_rps': float})
    _require(0.0 < steering['max_angle_rad'] <= cr.steering.max,
             f'{source}.steering.max_angle_rad = {steering["max_angle_rad"]}: allowed '
             f'(0, {cr.steering.max}] by commonroad set {set_id}')
    _require(0.0 < steering['max_rate_rps'] <= cr.steering.v_max,
             f'{source}.steering.max_rate_rps = {steering["max_rate_rps"]}: allowed '
             f'(0, {cr.steering.v_max}] by commonroad set {set_id}')
    actuators = _take(top['actuators'], f'{source}.actuators',
                      {'steer_time_constant_s': float, 'accel_time_constant_s': float})
    for key, value in actuators.items():
        _require(0.0 <= value <= 5.0, f'{source}.actuators.{key} = {value}: allowed [0, 5] s')
    sensors = _take(top['sensors'], f'{source}.sensors', {'lidar_top': dict,
                                                          'camera_front': dict})
    lidar = _mount(_take(sensors['lidar_top'], f'{source}.sensors.lidar_top', _MOUNT_KEYS),
                   f'{source}.sensors.lidar_top')
    camera_context = f'{source}.sensors.camera_front'
    camera_values = _take(sensors['camera_front'], camera_context,
                          {**_MOUNT_KEYS, **_INTRINSIC_KEYS})
    for key in ('fx', 'fy', 'width', 'height'):
        _require(camera_values[key] > 0, f'{camera_context}.{key} = {camera_values[key]}: '
                 'must be > 0')
    for key, size in (('cx', 'width'), ('cy', 'height')):
        _require(0.0 <= camera_values[key] <= camera_values[size],
                 f'{camera_context}.{key} = {camera_values[key]}: allowed '
                 f'[0, {size} = {camera_values[size]}]')
    camera = CameraConfig(_mount(camera_values, camera_context), camera_values['fx'],
                          camera_values['fy'], camera_values['cx'], camera_values['cy'],
                          camera_values['width'], camera_values['height'])
    return VehicleParams(
        name=top['name'], commonroad_parameter_set=set_id,
        length_m=dims['length_m'], width_m=dims['width_m'], height_m=dims['height_m'],
        wheelbase_m=dims['wheelbase_m'], rear_overhang_m=dims['rear_overhang_m'],
        max_steer_angle_rad=steering['max_angle_rad'],
        max_steer_rate_rps=steering['max_rate_rps'],
        steer_time_constant_s=actuators['steer_time_constant_s'],
        accel_time_constant_s=actuators['accel_time_constant_s'],
        lidar_top=lidar, camera_front=camera,
        cog_to_front_axle_m=float(cr.a), cog_to_rear_axle_m=float(cr.b), mass_kg=float(cr.m),
        yaw_inertia_kgm2=float(cr.I_z), max_accel_mps2=float(cr.longitudinal.a_max),
        accel_power_switch_speed_mps=float(cr.longitudinal.v_switch),
        max_speed_mps=float(cr.longitudinal.v_max),
        max_reverse_speed_mps=float(-cr.longitudinal.v_min), commonroad=cr)


def load_vehicle(name_or_path: str | os.PathLike) -> VehicleParams:
    """Load `config/vehicle/<name>.yaml` (or a YAML file path) into a validated VehicleParams."""
    path = _resolve_vehicle_path(name_or_path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise VehicleConfigError(f'cannot read vehicle file {path}: {error}') from None
    return vehicle_params_from_dict(document, source=str(path))


# ---------------------------------------------------------------------------------------------
# State and stepping


@dataclasses.dataclass(frozen=True)
class EgoState:
    """Ego state with base_link (rear-axle centre) as pose reference, in the map frame.

    speed_mps and lateral_speed_mps are base_link's velocity in base_link (x forward, y left);
    accel_mps2 is the tangential acceleration of the CoG (signed like speed); slip_angle_rad is
    the commonroad slip angle at the CoG; steer_rad is the front wheel angle (left positive).
    """

    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    lateral_speed_mps: float
    steer_rad: float
    steer_rate_rps: float
    accel_mps2: float
    yaw_rate_rps: float
    slip_angle_rad: float
    gear: Gear

    def velocity_xy_mps(self) -> np.ndarray:
        """(2,) base_link velocity in the map frame."""
        cos_yaw, sin_yaw = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return np.array([cos_yaw * self.speed_mps - sin_yaw * self.lateral_speed_mps,
                         sin_yaw * self.speed_mps + cos_yaw * self.lateral_speed_mps])


def footprint(params: VehicleParams, state: EgoState) -> np.ndarray:
    """(4, 2) body corners in the map frame for a base_link pose, counter-clockwise from rear
    right (usable on recorded states without an EgoVehicle)."""
    cos_yaw, sin_yaw = math.cos(state.yaw_rad), math.sin(state.yaw_rad)
    rotation = np.array([[cos_yaw, -sin_yaw], [sin_yaw, cos_yaw]])
    return params.footprint_local() @ rotation.T + np.array([state.x_m, state.y_m])


def _finite_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VehicleCommandError(f'{name} = {value!r} is not a number') from None
    if not math.isfinite(number):
        raise VehicleCommandError(f'{name} = {number!r} is not finite')
    return number


def _wrap(angle_rad: float) -> float:
    return (angle_rad + math.pi) % (2.0 * math.pi) - math.pi


def _rk4(rhs, x: list[float], u: list[float], p: Any, h: float) -> list[float]:
    k1 = rhs(x, u, p)
    k2 = rhs([xi + 0.5 * h * ki for xi, ki in zip(x, k1)], u, p)
    k3 = rhs([xi + 0.5 * h * ki for xi, ki in zip(x, k2)], u, p)
    k4 = rhs([xi + h * ki for xi, ki in zip(x, k3)], u, p)
    return [xi + h / 6.0 * (a + 2.0 * b + 2.0 * c + d)
            for xi, a, b, c, d in zip(x, k1, k2, k3, k4)]


class EgoVehicle:
    """The simulated ego: commonroad ST dynamics + actuator lags + gear logic, stepped in place.

    `step((steer_cmd_rad, accel_cmd_mps2), dt_s)` advances the state by dt_s and returns the new
    EgoState. Commands outside the steering angle / acceleration limits saturate; non-finite or
    malformed commands raise VehicleCommandError and leave the state untouched.
    """

    def __init__(self, params: VehicleParams, x_m: float = 0.0, y_m: float = 0.0,
                 yaw_rad: float = 0.0, speed_mps: float = 0.0, steer_rad: float = 0.0,
                 gear: Gear | None = None):
        """Start at a base_link pose (map frame) with a kinematically consistent state.

        gear defaults to DRIVE, or REVERSE for a negative start speed.
        """
        self.params = params
        self._p = params.commonroad
        self._lr = params.cog_to_rear_axle_m
        self._wheelbase = params.cog_to_front_axle_m + params.cog_to_rear_axle_m
        self._init_lateral_constants()
        self.reset(x_m, y_m, yaw_rad, speed_mps, steer_rad, gear)

    def _init_lateral_constants(self) -> None:
        p = self._p
        self._mu = float(p.tire.p_dy1)
        self._cornering = float(-p.tire.p_ky1 / p.tire.p_dy1)
        self._h_cog = float(p.h_s)

    def reset(self, x_m: float, y_m: float, yaw_rad: float, speed_mps: float = 0.0,
              steer_rad: float = 0.0, gear: Gear | None = None) -> EgoState:
        """Place the vehicle (base_link pose, map frame) with zero acceleration; time to 0."""
        x_m = _finite_float(x_m, 'x_m')
        y_m = _finite_float(y_m, 'y_m')
        yaw_rad = _finite_float(yaw_rad, 'yaw_rad')
        speed_mps = _finite_float(speed_mps, 'speed_mps')
        steer_rad = _finite_float(steer_rad, 'steer_rad')
        if gear is None:
            gear = Gear.REVERSE if speed_mps < 0.0 else Gear.DRIVE
        gear = self._parse_gear(gear)
        params = self.params
        if not -params.max_reverse_speed_mps <= speed_mps <= params.max_speed_mps:
            raise VehicleCommandError(
                f'speed_mps = {speed_mps} outside [{-params.max_reverse_speed_mps}, '
                f'{params.max_speed_mps}]')
        if abs(steer_rad) > params.max_steer_angle_rad:
            raise VehicleCommandError(f'steer_rad = {steer_rad} exceeds +-'
                                      f'{params.max_steer_angle_rad}')
        allowed = {Gear.DRIVE: speed_mps >= 0.0, Gear.REVERSE: speed_mps <= 0.0,
                   Gear.PARK: abs(speed_mps) < STANDSTILL_SPEED_MPS, Gear.NEUTRAL: True}
        if not allowed[gear]:
            raise VehicleCommandError(f'start speed_mps = {speed_mps} contradicts gear '
                                      f'{gear.name}')
        if gear is Gear.PARK:
            speed_mps = 0.0
        beta = math.atan(math.tan(steer_rad) * self._lr / self._wheelbase)
        cog_speed = speed_mps / math.cos(beta)
        self._x = [x_m + self._lr * math.cos(yaw_rad), y_m + self._lr * math.sin(yaw_rad),
                   steer_rad, cog_speed, yaw_rad, speed_mps * math.tan(steer_rad) /
                   self._wheelbase, beta]
        self._accel_actuator = 0.0
        self._steer_rate = 0.0
        self._gear = gear
        self._time_s = 0.0
        return self.state

    # -- public API -------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        """Simulated time since the last reset."""
        return self._time_s

    @property
    def gear(self) -> Gear:
        """Current gear."""
        return self._gear

    def set_gear(self, gear: Gear | int) -> None:
        """Shift; only at standstill (|speed| < STANDSTILL_SPEED_MPS), like a DBW gear lever."""
        gear = self._parse_gear(gear)
        if gear is self._gear:
            return
        speed = self._x[3] * math.cos(self._x[6])
        if abs(speed) >= STANDSTILL_SPEED_MPS:
            raise VehicleCommandError(f'gear change {self._gear.name} -> {gear.name} refused at '
                                      f'speed {speed:.3f} m/s (standstill required)')
        self._x[3] = 0.0
        self._gear = gear

    @property
    def state(self) -> EgoState:
        """Current EgoState (base_link in the map frame)."""
        sx, sy, delta, v, psi, psi_dot, beta = self._x
        return EgoState(
            x_m=sx - self._lr * math.cos(psi), y_m=sy - self._lr * math.sin(psi),
            yaw_rad=_wrap(psi), speed_mps=v * math.cos(beta),
            lateral_speed_mps=v * math.sin(beta) - psi_dot * self._lr,
            steer_rad=delta, steer_rate_rps=self._steer_rate,
            accel_mps2=self._realised_accel(self._accel_actuator, v),
            yaw_rate_rps=psi_dot, slip_angle_rad=beta, gear=self._gear)

    def cog_state(self) -> np.ndarray:
        """(7,) commonroad ST state [sx, sy, delta, v, psi, psi_dot, beta] at the CoG."""
        return np.array(self._x)

    def footprint(self, state: EgoState | None = None) -> np.ndarray:
        """(4, 2) body corners in the map frame, counter-clockwise from rear right."""
        return footprint(self.params, self.state if state is None else state)

    def box(self, state: EgoState | None = None) -> np.ndarray:
        """(7,) body box [cx, cy, cz, yaw, length, width, height] in the map frame (metres)."""
        state = self.state if state is None else state
        offset = self.params.box_centre_offset_m
        return np.array([state.x_m + offset * math.cos(state.yaw_rad),
                         state.y_m + offset * math.sin(state.yaw_rad), 0.5 * self.params.height_m,
                         state.yaw_rad, self.params.length_m, self.params.width_m,
                         self.params.height_m])

    def step(self, command, dt_s: float) -> EgoState:
        """Advance by dt_s (0 < dt_s <= MAX_STEP_S) under (steer_cmd_rad, accel_cmd_mps2).

        The command is held over the step (zero-order hold). Raises VehicleCommandError for a
        malformed or non-finite command or dt_s; the state is then unchanged.
        """
        try:
            steer_value, accel_value = command
        except (TypeError, ValueError):
            raise VehicleCommandError(f'command = {command!r}: expected (steer_cmd_rad, '
                                      'accel_cmd_mps2)') from None
        steer_cmd = _finite_float(steer_value, 'steer_cmd_rad')
        accel_cmd = _finite_float(accel_value, 'accel_cmd_mps2')
        dt_s = _finite_float(dt_s, 'dt_s')
        if not 0.0 < dt_s <= MAX_STEP_S:
            raise VehicleCommandError(f'dt_s = {dt_s} outside (0, {MAX_STEP_S}]')
        limit = self.params.max_steer_angle_rad
        steer_target = min(max(steer_cmd, -limit), limit)
        a_max = self.params.max_accel_mps2
        accel_target = min(max(accel_cmd, -a_max), a_max)
        remaining = dt_s
        while remaining > 0.0:
            h_limit = min(MAX_SUBSTEP_S, self._stable_substep_s())
            count = math.ceil(remaining / h_limit - 1e-9)
            h = remaining if count <= 1 else remaining / count
            self._substep(h, steer_target, accel_target)
            remaining = 0.0 if count <= 1 else remaining - h
        self._time_s += dt_s
        return self.state

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _parse_gear(gear: Gear | int) -> Gear:
        try:
            return Gear(gear)
        except ValueError:
            raise VehicleCommandError(f'gear = {gear!r}: expected one of '
                                      f'{[g.name for g in Gear]}') from None

    def _realised_accel(self, accel: float, v: float) -> float:
        """Acceleration that acts at speed v: gear hold, then the commonroad limits."""
        accel = self._gear_accel(accel, v)
        longitudinal = self._p.longitudinal
        if accel > 0.0 and v > longitudinal.v_switch:
            accel = min(accel, longitudinal.a_max * longitudinal.v_switch / v)
        if (v <= longitudinal.v_min and accel <= 0.0) or (v >= longitudinal.v_max
                                                          and accel >= 0.0):
            accel = 0.0
        return accel

    def _gear_accel(self, accel: float, v: float) -> float:
        """Longitudinal input allowed by the gear at CoG speed v (signed along x)."""
        gear = self._gear
        if gear is Gear.PARK:
            return 0.0
        if gear is Gear.DRIVE:
            return 0.0 if v <= 0.0 and accel <= 0.0 else accel
        if gear is Gear.REVERSE:
            return 0.0 if v >= 0.0 and accel >= 0.0 else accel
        # NEUTRAL: brakes only, acting against the motion.
        if v > 0.0:
            return min(accel, 0.0)
        if v < 0.0:
            return max(accel, 0.0)
        return 0.0

    def _lateral_stiffness_1ps(self, v: float, accel: float) -> float:
        """Largest |eigenvalue| of the ST model's (psi_dot, beta) Jacobian at speed v > 0."""
        p = self._p
        lf, lr, mass, inertia = p.a, p.b, p.m, p.I_z
        length = lf + lr
        mu, cornering, g = self._mu, self._cornering, _GRAVITY_MPS2
        front = cornering * (g * lr - accel * self._h_cog)
        rear = cornering * (g * lf + accel * self._h_cog)
        a11 = -mu * mass / (v * inertia * length) * (lf * lf * front + lr * lr * rear)
        a12 = mu * mass / (inertia * length) * (lr * rear - lf * front)
        a21 = mu / (v * v * length) * (rear * lr - front * lf) - 1.0
        a22 = -mu / (v * length) * (rear + front)
        half_trace = 0.5 * (a11 + a22)
        det = a11 * a22 - a12 * a21
        disc = half_trace * half_trace - det
        if disc >= 0.0:
            root = math.sqrt(disc)
            return max(abs(half_trace + root), abs(half_trace - root))
        return math.sqrt(det)

    def _stable_substep_s(self) -> float:
        v = self._x[3]
        if v < KINEMATIC_SWITCH_SPEED_MPS:
            return MAX_SUBSTEP_S
        # The speed may fall by up to a_max * h within the sub-step; size for the lowest.
        v_low = max(KINEMATIC_SWITCH_SPEED_MPS, v - self.params.max_accel_mps2 * MAX_SUBSTEP_S)
        a_max = self.params.max_accel_mps2
        stiffness = max(self._lateral_stiffness_1ps(v_low, a) for a in (-a_max, 0.0, a_max))
        return min(MAX_SUBSTEP_S, _RK4_STABLE_H_LAMBDA / stiffness)

    def _set_kinematic_lateral(self) -> None:
        _, _, delta, v, _, _, _ = self._x
        beta = math.atan(math.tan(delta) * self._lr / self._wheelbase)
        self._x[6] = beta
        self._x[5] = v * math.cos(beta) * math.tan(delta) / self._wheelbase

    def _hold(self, steer_rate: float, h: float) -> None:
        """Standstill for h: only the steering moves (as the kinematic model has it at v = 0)."""
        limit = self.params.max_steer_angle_rad
        self._x[3] = 0.0
        self._x[2] = min(max(self._x[2] + steer_rate * h, -limit), limit)
        self._set_kinematic_lateral()

    def _integrate(self, h: float, u: list[float]) -> None:
        if self._x[3] >= KINEMATIC_SWITCH_SPEED_MPS:
            self._x = _rk4(vehicle_dynamics_st, self._x, u, self._p, h)
        else:
            self._x[:5] = _rk4(vehicle_dynamics_ks_cog, self._x[:5], u, self._p, h)
            self._set_kinematic_lateral()

    def _substep(self, h: float, steer_target: float, accel_target: float) -> None:
        delta, v = self._x[2], self._x[3]
        # Exact first-order lag over h, realised as a constant steering velocity.
        tau_s = self.params.steer_time_constant_s
        delta_end = steer_target if tau_s <= 0.0 else (
            steer_target + (delta - steer_target) * math.exp(-h / tau_s))
        rate_limit = self.params.max_steer_rate_rps
        steer_rate = min(max((delta_end - delta) / h, -rate_limit), rate_limit)
        # Acceleration lag: its mean over h drives the speed, its end value is the new state.
        tau_a = self.params.accel_time_constant_s
        accel = self._accel_actuator
        if tau_a <= 0.0:
            accel_mean = accel_end = accel_target
        else:
            decay = math.exp(-h / tau_a)
            accel_end = accel_target + (accel - accel_target) * decay
            accel_mean = accel_target + (accel - accel_target) * tau_a / h * (1.0 - decay)
        self._accel_actuator = accel_end
        self._steer_rate = steer_rate
        u_accel = self._realised_accel(accel_mean, v)
        v_end = v + u_accel * h  # dv/dt = u_accel exactly in both models
        stops = (self._gear is not Gear.REVERSE and v > 0.0 and v_end < 0.0) or (
            self._gear is not Gear.DRIVE and v < 0.0 and v_end > 0.0)
        if stops:
            # The vehicle reaches standstill inside the sub-step: integrate to that instant,
            # then hold, so that it never rolls the other way.
            h_stop = -v / u_accel
            if h_stop > 0.0:
                self._integrate(h_stop, [steer_rate, u_accel])
            self._hold(steer_rate, h - max(h_stop, 0.0))
        elif v == 0.0 and u_accel == 0.0:
            self._hold(steer_rate, h)
        else:
            self._integrate(h, [steer_rate, u_accel])


def _transform_from_xyzrpy(x: float, y: float, z: float, roll: float, pitch: float,
                           yaw: float) -> np.ndarray:
    """4x4 transform with R = Rz(yaw) Ry(pitch) Rx(roll) (URDF fixed-axis order)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    transform = np.eye(4)
    transform[:3, :3] = [[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                         [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                         [-sp, cp * sr, cp * cr]]
    transform[:3, 3] = (x, y, z)
    return transform
