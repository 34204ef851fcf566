"""Scenario files (ARCHITECTURE.md section 6): strict YAML -> frozen, validated dataclasses.

A scenario file is read with a YAML loader that rejects duplicate keys, then every key is checked
against the schema below. Any unknown key, missing required key, wrong type, NaN/inf, out-of-range
value, duplicate id or fault beyond the scenario's duration raises `ScenarioError` whose message
starts with the full key path, e.g. ``actors[2].behavior.target_speed: expected number, got
'fast'``. Nothing is silently dropped or coerced (an integer is accepted where a number is
expected; a float is not accepted where an integer is). Map generator and sensor parameters are
validated by the simulator's own config classes (GridTownParams, LidarConfig, CameraConfig), so
one definition of their names, defaults and ranges serves scenarios and the simulator.

`scenario_to_dict` writes a Scenario back as plain data (round trip); `validate_positions`
checks poses against the built map (on the road / within its bounds).

Poses: ``ego.start`` and ride pickup/dropoff are base_link (rear-axle centre) poses in the map
frame; actor poses are box centres. Positions in metres, yaw in radians (counter-clockwise from the
map x axis), speeds in m/s, times in seconds of sim time from the scenario start.

Schema (``?`` marks optional keys, with their default):

    format: robotaxi-scenario/1
    name: str                        description?: str
    seed: int >= 0                   duration_s: number > 0
    map: {generator: grid_town, params?: {blocks_x?, blocks_y?, block_m?, lanes_per_direction?,
              lane_width_m?, speed_limit_kph?, ...}}  (names, defaults and ranges:
              robotaxi_stack.sim.maps.GridTownParams)
       | {file: str (.osm), origin: {lat: [-90, 90], lon: [-180, 180]}}
    ego: {vehicle: str, start: {x, y, yaw, speed?: 0}}
    rides?: [{at_s: [0, duration_s), ride_id: str, pickup: {x, y, yaw}, dropoff: {x, y, yaw}}]
    actors?: [{id: str, type: car|truck|bus|bicycle|pedestrian|static,
               size?: [length_m, width_m, height_m] (default: sim.actors.DEFAULT_SIZES_M),
               start: {x, y, yaw?: 0, speed?: 0} (optional for waypoints only),
               behavior: {kind: parked}
                       | {kind: lane_follow, target_speed: > 0, stop_at_stop_lines?: false,
                          route?: straight|random, time_gap_s?: >= 0, min_gap_m?: >= 0,
                          max_accel_mps2?: > 0, comfort_decel_mps2?: > 0}
                          (IDM parameters left out take the actor model's defaults)
                       | {kind: waypoints, points: [[t, x, y], ...] (t >= 0, increasing)}}]
    sensors?: {lidar?: {channels?, hz?, range_m?, noise_m?, dropout?, ...}
                       (names, defaults, ranges: robotaxi_stack.sim.lidar.LidarConfig),
               camera?: {hz?, width?, height?, ...} (sim.camera.CameraConfig)}
    faults?: [{at_s: [0, duration_s), kind: kill_node, node: ros node name}
            | {at_s, kind: drop_topic, topic: contract topic, duration_s: > 0}
            | {at_s, kind: delay_topic, topic: contract topic, delay_s: > 0, duration_s: > 0}
            | {at_s, kind: freeze_sensor, sensor: lidar|camera, duration_s: > 0}]
    sim?: {step_hz?: 50, perception?: lidar_camera if sensors.lidar is given else ground_truth,
           real_time_factor?: none (as fast as possible) | > 0}
    expect: {rides_completed?: int >= 0, no_collision?: bool, stop_error_m?: > 0,
             mrm?: none|any|comfortable_stop|emergency_stop|pull_over,
             max_abs_jerk_mps3?: > 0, max_abs_lat_accel_mps2?: > 0, min_clearance_m?: >= 0,
             max_e2e_latency_p99_ms?: > 0, min_mota?: [-inf, 1], max_id_switches?: int >= 0,
             max_ade_3s_m?: > 0, max_fde_3s_m?: > 0,
             min_perception?: {ap_<cls>|recall_<cls>: [0, 1]},   (cls: PERCEPTION_CLASS_KEYS)
             max_ride_time_ratio?: > 1}

An expectation left out is not checked. ``mrm: none`` asks for no MRM at all, ``any`` for at
least one MRM of any behavior, a behavior name for at least one MRM with that behavior.
``max_ride_time_ratio`` bounds every completed ride leg (to the pickup, to the dropoff): its
measured time over its free-flow time on an empty road (replay/free_flow.py), e.g. 1.3.
``map.file`` is kept as written; the scenario runner resolves a relative path against the
scenario file's folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import yaml

from robotaxi_stack.common.topics import CONTRACT_TOPICS
from robotaxi_stack.sim.actors import DEFAULT_SIZES_M, ActorType
from robotaxi_stack.sim.camera import CameraConfig
from robotaxi_stack.sim.lidar import LidarConfig
from robotaxi_stack.sim.maps import GridTownParams

SCENARIO_FORMAT = 'robotaxi-scenario/1'
ACTOR_TYPES = tuple(actor_type.value for actor_type in ActorType)
# Actor types that may stand off the road (sidewalks, verges); the rest must start on the road.
OFF_ROAD_ACTOR_TYPES = ('pedestrian', 'static')
ROUTE_CHOICES = ('straight', 'random')
MRM_EXPECT_CHOICES = ('none', 'any', 'comfortable_stop', 'emergency_stop', 'pull_over')
PERCEPTION_MODES = ('ground_truth', 'lidar_camera')
SENSOR_NAMES = ('lidar', 'camera')
# Detection class label -> its short name in result.json perception keys (`ap_car`, `recall_ped`).
PERCEPTION_CLASS_KEYS = {'car': 'car', 'truck': 'truck', 'bus': 'bus', 'bicycle': 'bicycle',
                         'motorcycle': 'motorcycle', 'pedestrian': 'ped'}

_NODE_NAME_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_VEHICLE_NAME_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')
_PERCEPTION_KEY_RE = re.compile(
    r'^(ap|recall)_(' + '|'.join(PERCEPTION_CLASS_KEYS.values()) + r')$')


class ScenarioError(ValueError):
    """A scenario file or value is invalid; `key_path` names the offending key ('' for root)."""

    def __init__(self, key_path: str, problem: str):
        self.key_path = key_path
        super().__init__(f'{key_path}: {problem}' if key_path else problem)


# --------------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeoOrigin:
    """Origin of the map projection in WGS84 degrees."""

    lat: float
    lon: float


@dataclass(frozen=True)
class MapSpec:
    """Either a generated map (`generator` + `params`) or a Lanelet2 file with its origin."""

    generator: str | None = None
    params: GridTownParams | None = None
    file: str | None = None
    origin: GeoOrigin | None = None


@dataclass(frozen=True)
class Pose2D:
    """A planar pose in the map frame: metres and radians."""

    x: float
    y: float
    yaw: float


@dataclass(frozen=True)
class StartState:
    """An initial pose plus longitudinal speed (m/s, >= 0)."""

    x: float
    y: float
    yaw: float = 0.0
    speed: float = 0.0


@dataclass(frozen=True)
class EgoSpec:
    """The ego vehicle: parameter set name (config/vehicle/<vehicle>.yaml) and base_link start."""

    vehicle: str
    start: StartState


@dataclass(frozen=True)
class RideSpec:
    """A ride request sent at `at_s`; pickup/dropoff are requested base_link poses."""

    at_s: float
    ride_id: str
    pickup: Pose2D
    dropoff: Pose2D


@dataclass(frozen=True)
class ParkedBehavior:
    """The actor stands still at its start pose."""

    kind: ClassVar[str] = 'parked'


@dataclass(frozen=True)
class LaneFollowBehavior:
    """IDM car following along the lanes from the actor's start (sim.actors).

    route: at intersections go 'straight' where possible, or pick a 'random' successor (seeded
    by the scenario). IDM parameters that are None take the actor model's defaults.
    """

    target_speed: float
    stop_at_stop_lines: bool = False
    route: str = 'straight'
    time_gap_s: float | None = None
    min_gap_m: float | None = None
    max_accel_mps2: float | None = None
    comfort_decel_mps2: float | None = None
    kind: ClassVar[str] = 'lane_follow'


@dataclass(frozen=True)
class WaypointsBehavior:
    """Timed positions (t_s, x_m, y_m), linear between points; holds the first before its time
    and the last after its time."""

    points: tuple[tuple[float, float, float], ...]
    kind: ClassVar[str] = 'waypoints'

    def as_array(self) -> np.ndarray:
        """The points as an (N, 3) float array of [t_s, x_m, y_m]."""
        return np.asarray(self.points, dtype=float).reshape(-1, 3)


Behavior = ParkedBehavior | LaneFollowBehavior | WaypointsBehavior


@dataclass(frozen=True)
class ActorSpec:
    """A simulated road user or object; poses are box centres."""

    id: str
    type: str
    behavior: Behavior
    start: StartState | None = None
    size: tuple[float, float, float] | None = None

    @property
    def size_m(self) -> tuple[float, float, float]:
        """(length_m, width_m, height_m): the given size or the type's default."""
        return self.size if self.size is not None else DEFAULT_SIZES_M[ActorType(self.type)]

    @property
    def initial_state(self) -> StartState:
        """The state at t = 0: `start`, or for waypoints without `start` the first point, facing
        the next distinct point, at rest."""
        if self.start is not None:
            return self.start
        assert isinstance(self.behavior, WaypointsBehavior)  # guaranteed by the parser
        pts = self.behavior.as_array()
        step = pts[1:, 1:] - pts[0, 1:]
        moving = np.flatnonzero(np.hypot(step[:, 0], step[:, 1]) > 1e-9)
        yaw = float(np.arctan2(*step[moving[0], ::-1])) if moving.size else 0.0
        return StartState(float(pts[0, 1]), float(pts[0, 2]), yaw, 0.0)


@dataclass(frozen=True)
class SensorsSpec:
    """Simulated sensors; None means the sensor is not simulated."""

    lidar: LidarConfig | None = None
    camera: CameraConfig | None = None


@dataclass(frozen=True)
class KillNodeFault:
    """Kill a node of the graph (by its node name) at `at_s`."""

    at_s: float
    node: str
    kind: ClassVar[str] = 'kill_node'


@dataclass(frozen=True)
class DropTopicFault:
    """Drop every message on `topic` during [at_s, at_s + duration_s)."""

    at_s: float
    topic: str
    duration_s: float
    kind: ClassVar[str] = 'drop_topic'


@dataclass(frozen=True)
class DelayTopicFault:
    """Delay every message on `topic` by `delay_s` during [at_s, at_s + duration_s)."""

    at_s: float
    topic: str
    delay_s: float
    duration_s: float
    kind: ClassVar[str] = 'delay_topic'


@dataclass(frozen=True)
class FreezeSensorFault:
    """Republish the sensor's last frame (with fresh stamps) during [at_s, at_s + duration_s)."""

    at_s: float
    sensor: str
    duration_s: float
    kind: ClassVar[str] = 'freeze_sensor'


FaultSpec = KillNodeFault | DropTopicFault | DelayTopicFault | FreezeSensorFault


@dataclass(frozen=True)
class SimSpec:
    """Simulator options: physics step rate, perception source, pacing (None: unpaced)."""

    step_hz: float = 50.0
    perception: str = 'ground_truth'
    real_time_factor: float | None = None


@dataclass(frozen=True)
class Expect:
    """Pass criteria; None means not checked. See the module docstring for meanings."""

    rides_completed: int | None = None
    no_collision: bool | None = None
    stop_error_m: float | None = None
    mrm: str | None = None
    max_abs_jerk_mps3: float | None = None
    max_abs_lat_accel_mps2: float | None = None
    min_clearance_m: float | None = None
    max_e2e_latency_p99_ms: float | None = None
    min_mota: float | None = None
    max_id_switches: int | None = None
    max_ade_3s_m: float | None = None
    max_fde_3s_m: float | None = None
    # Sorted (metric key, minimum) pairs, e.g. (('ap_car', 0.8), ('recall_ped', 0.9)).
    min_perception: tuple[tuple[str, float], ...] = ()
    max_ride_time_ratio: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A whole scenario file."""

    name: str
    seed: int
    duration_s: float
    map: MapSpec
    ego: EgoSpec
    expect: Expect
    rides: tuple[RideSpec, ...] = ()
    actors: tuple[ActorSpec, ...] = ()
    sensors: SensorsSpec = field(default_factory=SensorsSpec)
    faults: tuple[FaultSpec, ...] = ()
    sim: SimSpec = field(default_factory=SimSpec)
    description: str = ''
    format: str = SCENARIO_FORMAT


# --------------------------------------------------------------------------------------------
# Strict YAML loading
# --------------------------------------------------------------------------------------------

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys and reads `1e-3` as a float."""


def _construct_mapping_no_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == 'tag:yaml.org,2002:merge':
            continue  # `<<: *anchor` merges are overridden by explicit keys, as YAML intends
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise ScenarioError(
                '', f'unhashable mapping key at line {key_node.start_mark.line + 1}')
        if key in seen:
            raise ScenarioError(
                '', f'duplicate key {key!r} at line {key_node.start_mark.line + 1} '
                f'(first at line {seen[key] + 1})')
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_no_duplicates)
# YAML 1.1 (PyYAML) needs a dot in a float, so `1e-3` would load as a string; accept it.
_StrictLoader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$'),
    list('-+0123456789'))


def load_scenario(path: str | os.PathLike) -> Scenario:
    """Read and validate a scenario YAML file; raises ScenarioError naming the bad key."""
    try:
        with open(path, encoding='utf-8') as stream:
            data = yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except OSError as exc:
        raise ScenarioError('', f'cannot read scenario file {os.fspath(path)!r}: {exc}') from exc
    except ScenarioError as exc:
        raise ScenarioError(exc.key_path, f'{os.fspath(path)}: {exc}') from exc
    except yaml.YAMLError as exc:
        raise ScenarioError('', f'{os.fspath(path)}: invalid YAML: {exc}') from exc
    return parse_scenario(data)


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------

_REQUIRED = object()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_number(value: Any, path: str, lo: float | None = None, hi: float | None = None,
                  lo_open: bool = False, hi_open: bool = False) -> float:
    if not _is_number(value):
        raise ScenarioError(path, f'expected number, got {_show(value)}')
    number = float(value)
    if not math.isfinite(number):
        raise ScenarioError(path, f'expected a finite number, got {_show(value)}')
    if lo is not None and (number < lo or (lo_open and number == lo)):
        relation = '>' if lo_open else '>='
        raise ScenarioError(path, f'expected {relation} {lo:g}, got {_show(value)}')
    if hi is not None and (number > hi or (hi_open and number == hi)):
        relation = '<' if hi_open else '<='
        raise ScenarioError(path, f'expected {relation} {hi:g}, got {_show(value)}')
    return number


def _check_int(value: Any, path: str, lo: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ScenarioError(path, f'expected integer, got {_show(value)}')
    if lo is not None and value < lo:
        raise ScenarioError(path, f'expected >= {lo}, got {value}')
    return value


def _check_str(value: Any, path: str, choices: Sequence[str] | None = None,
               pattern: re.Pattern | None = None) -> str:
    if not isinstance(value, str):
        raise ScenarioError(path, f'expected string, got {_show(value)}')
    if not value:
        raise ScenarioError(path, 'expected a non-empty string')
    if choices is not None and value not in choices:
        raise ScenarioError(path, f'expected one of {", ".join(choices)}, got {_show(value)}')
    if pattern is not None and not pattern.match(value):
        raise ScenarioError(path, f'{_show(value)} does not match {pattern.pattern}')
    return value


def _check_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(path, f'expected true or false, got {_show(value)}')
    return value


def _check_list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise ScenarioError(path, f'expected list, got {_show(value)}')
    return value


def _join(path: str, key: str) -> str:
    return f'{path}.{key}' if path else key


class _Fields:
    """One YAML mapping under validation: rejects unknown keys, reports missing ones."""

    def __init__(self, value: Any, path: str, required: Sequence[str],
                 optional: Sequence[str] = ()):
        if not isinstance(value, Mapping):
            raise ScenarioError(path, f'expected mapping, got {_show(value)}')
        allowed = tuple(required) + tuple(optional)
        for key in value:
            if not isinstance(key, str):
                raise ScenarioError(path, f'keys must be strings, got {_show(key)}')
            if key not in allowed:
                raise ScenarioError(
                    _join(path, key), f'unknown key (expected one of: {", ".join(allowed)})')
        for key in required:
            if key not in value:
                raise ScenarioError(_join(path, key), 'missing required key')
        self.value = value
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.value

    def at(self, key: str) -> tuple[Any, str]:
        return self.value[key], _join(self.path, key)

    def number(self, key: str, default: Any = _REQUIRED, **bounds) -> Any:
        if key not in self.value:
            return default
        return _check_number(*self.at(key), **bounds)

    def integer(self, key: str, default: Any = _REQUIRED, lo: int | None = None) -> Any:
        if key not in self.value:
            return default
        return _check_int(*self.at(key), lo=lo)

    def string(self, key: str, default: Any = _REQUIRED, **checks) -> Any:
        if key not in self.value:
            return default
        return _check_str(*self.at(key), **checks)

    def boolean(self, key: str, default: Any = _REQUIRED) -> Any:
        if key not in self.value:
            return default
        return _check_bool(*self.at(key))


def _number_list(value: Any, path: str, length: int, **bounds) -> Any:
    """A list of exactly `length` numbers as a tuple (typed by the caller's field)."""
    items = _check_list(value, path)
    if len(items) != length:
        raise ScenarioError(path, f'expected a list of {length} numbers, got {_show(value)}')
    return tuple(_check_number(item, f'{path}[{i}]', **bounds) for i, item in enumerate(items))


# --------------------------------------------------------------------------------------------
# Section parsers
# --------------------------------------------------------------------------------------------

_GRID_FIELDS = {f.name: f.type for f in dataclasses.fields(GridTownParams)}
# How the sim's own config classes name a bad parameter in their errors.
_PARAM_NAME_RE = re.compile(r"(?:GridTownParams\.|parameter '?)(\w+)")


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _build(factory: Callable[[dict], Any], value: Any, path: str,
           allowed: Sequence[str]) -> Any:
    """A sim config from its scenario mapping: unknown keys here (with their key path), types
    and ranges in the config class, whose error is re-raised under the key it names."""
    fields = _Fields(value, path, (), allowed)
    try:
        return factory(dict(fields.value))
    except ValueError as exc:
        named = _PARAM_NAME_RE.search(str(exc))
        raise ScenarioError(_join(path, named.group(1)) if named else path, str(exc)) from exc


def _parse_map(value: Any, path: str) -> MapSpec:
    if isinstance(value, Mapping) and 'file' in value:
        fields = _Fields(value, path, ('file', 'origin'))
        file = fields.string('file')
        if not file.endswith('.osm'):
            raise ScenarioError(_join(path, 'file'), f'expected a Lanelet2 .osm file, '
                                                     f'got {file!r}')
        origin = _Fields(*fields.at('origin'), ('lat', 'lon'))
        return MapSpec(file=file, origin=GeoOrigin(
            lat=origin.number('lat', lo=-90.0, hi=90.0),
            lon=origin.number('lon', lo=-180.0, hi=180.0)))
    if isinstance(value, Mapping) and 'generator' not in value:
        raise ScenarioError(path, 'expected either a `generator` or a `file` key')
    fields = _Fields(value, path, ('generator',), ('params',))
    fields.string('generator', choices=('grid_town',))
    params, params_path = fields.at('params') if fields.has('params') else \
        ({}, _join(path, 'params'))
    checked = _Fields(params, params_path, (), tuple(_GRID_FIELDS))
    # Strict types here (GridTownParams accepts 3.0 as an integer); ranges and geometric
    # consistency in GridTownParams itself.
    values = {name: (checked.integer(name) if _GRID_FIELDS[name] in ('int', int)
                     else checked.number(name))
              for name in checked.value}
    grid = _build(lambda kwargs: GridTownParams(**kwargs), values, params_path,
                  tuple(_GRID_FIELDS))
    return MapSpec(generator='grid_town', params=grid)


def _parse_start(value: Any, path: str, yaw_required: bool) -> StartState:
    required = ('x', 'y', 'yaw') if yaw_required else ('x', 'y')
    fields = _Fields(value, path, required, ('speed',) if yaw_required else ('yaw', 'speed'))
    return StartState(x=fields.number('x'), y=fields.number('y'), yaw=fields.number('yaw', 0.0),
                      speed=fields.number('speed', 0.0, lo=0.0))


def _parse_pose(value: Any, path: str) -> Pose2D:
    fields = _Fields(value, path, ('x', 'y', 'yaw'))
    return Pose2D(x=fields.number('x'), y=fields.number('y'), yaw=fields.number('yaw'))


def _parse_ride(value: Any, path: str, duration_s: float) -> RideSpec:
    fields = _Fields(value, path, ('at_s', 'ride_id', 'pickup', 'dropoff'))
    at_s = fields.number('at_s', lo=0.0)
    if at_s >= duration_s:
        raise ScenarioError(_join(path, 'at_s'),
                            f'{at_s:g} is not before the end of the scenario (duration_s '
                            f'{duration_s:g})')
    return RideSpec(at_s=at_s, ride_id=fields.string('ride_id'),
                    pickup=_parse_pose(*fields.at('pickup')),
                    dropoff=_parse_pose(*fields.at('dropoff')))


def _kind(value: Any, path: str, choices: Sequence[str]) -> str:
    """The `kind` of a tagged mapping, checked before its other keys (which depend on it)."""
    if not isinstance(value, Mapping):
        raise ScenarioError(path, f'expected mapping, got {_show(value)}')
    if 'kind' not in value:
        raise ScenarioError(_join(path, 'kind'), 'missing required key')
    return _check_str(value['kind'], _join(path, 'kind'), choices=choices)


def _parse_behavior(value: Any, path: str) -> Behavior:
    kind = _kind(value, path, ('parked', 'lane_follow', 'waypoints'))
    if kind == 'parked':
        _Fields(value, path, ('kind',))
        return ParkedBehavior()
    if kind == 'lane_follow':
        fields = _Fields(value, path, ('kind', 'target_speed'),
                         ('stop_at_stop_lines', 'route', 'time_gap_s', 'min_gap_m',
                          'max_accel_mps2', 'comfort_decel_mps2'))
        positive = {'lo': 0.0, 'lo_open': True}
        return LaneFollowBehavior(
            target_speed=fields.number('target_speed', **positive),
            stop_at_stop_lines=fields.boolean('stop_at_stop_lines', False),
            route=fields.string('route', 'straight', choices=ROUTE_CHOICES),
            time_gap_s=fields.number('time_gap_s', None, lo=0.0),
            min_gap_m=fields.number('min_gap_m', None, lo=0.0),
            max_accel_mps2=fields.number('max_accel_mps2', None, **positive),
            comfort_decel_mps2=fields.number('comfort_decel_mps2', None, **positive))
    fields = _Fields(value, path, ('kind', 'points'))
    items, points_path = fields.at('points')
    items = _check_list(items, points_path)
    if not items:
        raise ScenarioError(points_path, 'expected at least one [t, x, y] point')
    points = tuple(_number_list(point, f'{points_path}[{i}]', 3) for i, point in enumerate(items))
    for i, point in enumerate(points):
        if point[0] < 0.0:
            raise ScenarioError(f'{points_path}[{i}][0]', f'expected >= 0, got {point[0]:g}')
        if i and point[0] <= points[i - 1][0]:
            raise ScenarioError(f'{points_path}[{i}][0]',
                                f'times must increase strictly, got {point[0]:g} after '
                                f'{points[i - 1][0]:g}')
    return WaypointsBehavior(points=points)


def _parse_actor(value: Any, path: str) -> ActorSpec:
    fields = _Fields(value, path, ('id', 'type', 'behavior'), ('start', 'size'))
    behavior = _parse_behavior(*fields.at('behavior'))
    actor_type = fields.string('type', choices=ACTOR_TYPES)
    start = None
    if fields.has('start'):
        start = _parse_start(*fields.at('start'), yaw_required=False)
    elif not isinstance(behavior, WaypointsBehavior):
        raise ScenarioError(_join(path, 'start'),
                            'missing required key (only waypoints actors may omit it)')
    size = None
    if fields.has('size'):
        size = _number_list(*fields.at('size'), 3, lo=0.0, lo_open=True)
    if isinstance(behavior, LaneFollowBehavior) and actor_type in OFF_ROAD_ACTOR_TYPES:
        raise ScenarioError(_join(path, 'behavior.kind'),
                            f'lane_follow is for vehicles, not a {actor_type}')
    return ActorSpec(id=fields.string('id'), type=actor_type, behavior=behavior, start=start,
                     size=size)


def _parse_sensors(value: Any, path: str) -> SensorsSpec:
    fields = _Fields(value, path, (), SENSOR_NAMES)
    lidar = camera = None
    if fields.has('lidar'):
        lidar = _build(LidarConfig.from_dict, *fields.at('lidar'),
                       _field_names(LidarConfig) + ('azimuth_resolution_deg',))
    if fields.has('camera'):
        camera = _build(CameraConfig.from_dict, *fields.at('camera'),
                        _field_names(CameraConfig))
    return SensorsSpec(lidar=lidar, camera=camera)


def _parse_topic(fields: _Fields) -> str:
    topic, topic_path = fields.at('topic')
    _check_str(topic, topic_path)
    if topic not in CONTRACT_TOPICS:
        raise ScenarioError(topic_path, f'{topic!r} is not a contract topic '
                                        f'(one of: {", ".join(sorted(CONTRACT_TOPICS))})')
    return topic


def _parse_fault(value: Any, path: str, duration_s: float, sensors: SensorsSpec) -> FaultSpec:
    kind = _kind(value, path, ('kill_node', 'drop_topic', 'delay_topic', 'freeze_sensor'))
    extra = {'kill_node': ('node',), 'drop_topic': ('topic', 'duration_s'),
             'delay_topic': ('topic', 'delay_s', 'duration_s'),
             'freeze_sensor': ('sensor', 'duration_s')}[kind]
    fields = _Fields(value, path, ('at_s', 'kind') + extra)
    at_s = fields.number('at_s', lo=0.0)
    if at_s >= duration_s:
        raise ScenarioError(_join(path, 'at_s'),
                            f'{at_s:g} is beyond the end of the scenario (duration_s '
                            f'{duration_s:g})')
    if kind == 'kill_node':
        return KillNodeFault(at_s=at_s, node=fields.string('node', pattern=_NODE_NAME_RE))
    fault_duration_s = fields.number('duration_s', lo=0.0, lo_open=True)
    if kind == 'drop_topic':
        return DropTopicFault(at_s=at_s, topic=_parse_topic(fields), duration_s=fault_duration_s)
    if kind == 'delay_topic':
        return DelayTopicFault(at_s=at_s, topic=_parse_topic(fields),
                               delay_s=fields.number('delay_s', lo=0.0, lo_open=True),
                               duration_s=fault_duration_s)
    sensor = fields.string('sensor', choices=SENSOR_NAMES)
    if getattr(sensors, sensor) is None:
        raise ScenarioError(_join(path, 'sensor'), f'{sensor!r} is not configured in sensors')
    return FreezeSensorFault(at_s=at_s, sensor=sensor, duration_s=fault_duration_s)


def _parse_sim(value: Any, path: str, sensors: SensorsSpec) -> SimSpec:
    fields = _Fields(value, path, (), ('step_hz', 'perception', 'real_time_factor'))
    default_mode = 'lidar_camera' if sensors.lidar is not None else 'ground_truth'
    perception = fields.string('perception', default_mode, choices=PERCEPTION_MODES)
    if perception == 'lidar_camera' and sensors.lidar is None:
        raise ScenarioError(_join(path, 'perception'),
                            "'lidar_camera' needs sensors.lidar to be configured")
    return SimSpec(step_hz=fields.number('step_hz', 50.0, lo=0.0, lo_open=True, hi=10000.0),
                   perception=perception,
                   real_time_factor=fields.number('real_time_factor', None, lo=0.0,
                                                  lo_open=True))


_EXPECT_KEYS = ('rides_completed', 'no_collision', 'stop_error_m', 'mrm', 'max_abs_jerk_mps3',
                'max_abs_lat_accel_mps2', 'min_clearance_m', 'max_e2e_latency_p99_ms',
                'min_mota', 'max_id_switches', 'max_ade_3s_m', 'max_fde_3s_m', 'min_perception',
                'max_ride_time_ratio')


def _parse_expect(value: Any, path: str, n_rides: int) -> Expect:
    fields = _Fields(value, path, (), _EXPECT_KEYS)
    positive = {'lo': 0.0, 'lo_open': True}
    rides_completed = fields.integer('rides_completed', None, lo=0)
    if rides_completed is not None and rides_completed > n_rides:
        raise ScenarioError(_join(path, 'rides_completed'),
                            f'{rides_completed} exceeds the {n_rides} ride(s) in rides')
    min_perception: tuple[tuple[str, float], ...] = ()
    if fields.has('min_perception'):
        raw, raw_path = fields.at('min_perception')
        if not isinstance(raw, Mapping):
            raise ScenarioError(raw_path, f'expected mapping, got {_show(raw)}')
        pairs = []
        for key, threshold in raw.items():
            key_path = _join(raw_path, str(key))
            if not isinstance(key, str) or not _PERCEPTION_KEY_RE.match(key):
                raise ScenarioError(key_path, 'unknown key (expected ap_<cls> or recall_<cls>, '
                                              'cls one of: '
                                              f'{", ".join(PERCEPTION_CLASS_KEYS.values())})')
            pairs.append((key, _check_number(threshold, key_path, lo=0.0, hi=1.0)))
        min_perception = tuple(sorted(pairs))
    return Expect(
        rides_completed=rides_completed,
        no_collision=fields.boolean('no_collision', None),
        stop_error_m=fields.number('stop_error_m', None, **positive),
        mrm=fields.string('mrm', None, choices=MRM_EXPECT_CHOICES),
        max_abs_jerk_mps3=fields.number('max_abs_jerk_mps3', None, **positive),
        max_abs_lat_accel_mps2=fields.number('max_abs_lat_accel_mps2', None, **positive),
        min_clearance_m=fields.number('min_clearance_m', None, lo=0.0),
        max_e2e_latency_p99_ms=fields.number('max_e2e_latency_p99_ms', None, **positive),
        min_mota=fields.number('min_mota', None, hi=1.0),
        max_id_switches=fields.integer('max_id_switches', None, lo=0),
        max_ade_3s_m=fields.number('max_ade_3s_m', None, **positive),
        max_fde_3s_m=fields.number('max_fde_3s_m', None, **positive),
        min_perception=min_perception,
        # A ratio is measured over free flow, so only limits above 1 can ever pass.
        max_ride_time_ratio=fields.number('max_ride_time_ratio', None, lo=1.0, lo_open=True))


def _check_unique(items: Sequence[Any], attr: str, path: str, key: str) -> None:
    first_index: dict[str, int] = {}
    for i, item in enumerate(items):
        ident = getattr(item, attr)
        if ident in first_index:
            raise ScenarioError(f'{path}[{i}].{key}', f'duplicate id {ident!r} '
                                f'(also {path}[{first_index[ident]}].{key})')
        first_index[ident] = i


def parse_scenario(data: Any) -> Scenario:
    """Validate a scenario already loaded from YAML/JSON (plain dicts and lists)."""
    # The format is checked first: a file of another format version is reported as such, not
    # as a list of unknown keys.
    if isinstance(data, Mapping) and 'format' in data:
        if data['format'] != SCENARIO_FORMAT:
            raise ScenarioError('format', f'expected {SCENARIO_FORMAT!r}, '
                                          f'got {_show(data["format"])}')
    top = _Fields(data, '', ('format', 'name', 'seed', 'duration_s', 'map', 'ego', 'expect'),
                  ('description', 'rides', 'actors', 'sensors', 'faults', 'sim'))
    duration_s = top.number('duration_s', lo=0.0, lo_open=True)
    ego_fields = _Fields(*top.at('ego'), ('vehicle', 'start'))
    ego = EgoSpec(vehicle=ego_fields.string('vehicle', pattern=_VEHICLE_NAME_RE),
                  start=_parse_start(*ego_fields.at('start'), yaw_required=True))

    def sequence(key: str) -> list[tuple[Any, str]]:
        if not top.has(key):
            return []
        items, path = top.at(key)
        return [(item, f'{path}[{i}]') for i, item in enumerate(_check_list(items, path))]

    rides = tuple(_parse_ride(item, path, duration_s) for item, path in sequence('rides'))
    _check_unique(rides, 'ride_id', 'rides', 'ride_id')
    actors = tuple(_parse_actor(item, path) for item, path in sequence('actors'))
    _check_unique(actors, 'id', 'actors', 'id')
    sensors = _parse_sensors(*top.at('sensors')) if top.has('sensors') else SensorsSpec()
    faults = tuple(_parse_fault(item, path, duration_s, sensors)
                   for item, path in sequence('faults'))
    sim = _parse_sim(top.value.get('sim', {}), 'sim', sensors)
    return Scenario(
        format=SCENARIO_FORMAT,
        name=top.string('name'),
        description=top.string('description', ''),
        seed=top.integer('seed', lo=0),
        duration_s=duration_s,
        map=_parse_map(*top.at('map')),
        ego=ego,
        rides=rides,
        actors=actors,
        sensors=sensors,
        faults=faults,
        sim=sim,
        expect=_parse_expect(*top.at('expect'), n_rides=len(rides)))


# --------------------------------------------------------------------------------------------
# Serialisation and map checks
# --------------------------------------------------------------------------------------------

def _start_to_dict(start: StartState) -> dict:
    return {'x': start.x, 'y': start.y, 'yaw': start.yaw, 'speed': start.speed}


def _pose_to_dict(pose: Pose2D) -> dict:
    return {'x': pose.x, 'y': pose.y, 'yaw': pose.yaw}


def _behavior_to_dict(behavior: Behavior) -> dict:
    if isinstance(behavior, LaneFollowBehavior):
        out = {'kind': behavior.kind, 'target_speed': behavior.target_speed,
               'stop_at_stop_lines': behavior.stop_at_stop_lines, 'route': behavior.route}
        for key in ('time_gap_s', 'min_gap_m', 'max_accel_mps2', 'comfort_decel_mps2'):
            if getattr(behavior, key) is not None:
                out[key] = getattr(behavior, key)
        return out
    if isinstance(behavior, WaypointsBehavior):
        return {'kind': behavior.kind, 'points': [list(point) for point in behavior.points]}
    return {'kind': behavior.kind}


def _fault_to_dict(fault: FaultSpec) -> dict:
    out: dict[str, Any] = {'at_s': fault.at_s, 'kind': fault.kind}
    if isinstance(fault, KillNodeFault):
        out['node'] = fault.node
    elif isinstance(fault, FreezeSensorFault):
        out.update(sensor=fault.sensor, duration_s=fault.duration_s)
    else:
        out['topic'] = fault.topic
        if isinstance(fault, DelayTopicFault):
            out['delay_s'] = fault.delay_s
        out['duration_s'] = fault.duration_s
    return out


def scenario_to_dict(scenario: Scenario) -> dict:
    """Plain dicts/lists with every value explicit: parse_scenario(scenario_to_dict(s)) == s.

    Keys whose value is None (not set, not checked) are left out.
    """
    map_spec = scenario.map
    if map_spec.file is not None:
        assert map_spec.origin is not None
        map_dict: dict[str, Any] = {'file': map_spec.file, 'origin': {
            'lat': map_spec.origin.lat, 'lon': map_spec.origin.lon}}
    else:
        assert map_spec.params is not None
        map_dict = {'generator': map_spec.generator,
                    'params': dataclasses.asdict(map_spec.params)}
    actors = []
    for actor in scenario.actors:
        entry: dict[str, Any] = {'id': actor.id, 'type': actor.type}
        if actor.size is not None:
            entry['size'] = list(actor.size)
        if actor.start is not None:
            entry['start'] = _start_to_dict(actor.start)
        entry['behavior'] = _behavior_to_dict(actor.behavior)
        actors.append(entry)
    sensors = {name: dataclasses.asdict(getattr(scenario.sensors, name))
               for name in SENSOR_NAMES if getattr(scenario.sensors, name) is not None}
    sim: dict[str, Any] = {'step_hz': scenario.sim.step_hz,
                           'perception': scenario.sim.perception}
    if scenario.sim.real_time_factor is not None:
        sim['real_time_factor'] = scenario.sim.real_time_factor
    expect: dict[str, Any] = {}
    for key in _EXPECT_KEYS:
        value = getattr(scenario.expect, key)
        if key == 'min_perception':
            if value:
                expect[key] = dict(value)
        elif value is not None:
            expect[key] = value
    out: dict[str, Any] = {'format': scenario.format, 'name': scenario.name}
    if scenario.description:
        out['description'] = scenario.description
    out.update({
        'seed': scenario.seed,
        'duration_s': scenario.duration_s,
        'map': map_dict,
        'ego': {'vehicle': scenario.ego.vehicle, 'start': _start_to_dict(scenario.ego.start)},
        'rides': [{'at_s': ride.at_s, 'ride_id': ride.ride_id,
                   'pickup': _pose_to_dict(ride.pickup), 'dropoff': _pose_to_dict(ride.dropoff)}
                  for ride in scenario.rides],
        'actors': actors,
        'sensors': sensors,
        'faults': [_fault_to_dict(fault) for fault in scenario.faults],
        'sim': sim,
        'expect': expect,
    })
    return out


def validate_positions(scenario: Scenario,
                       on_road_fn: Callable[[np.ndarray], np.ndarray],
                       bounds_xy: tuple[float, float, float, float]) -> None:
    """Check every scenario position against the map; raise ScenarioError naming the keys.

    on_road_fn: vectorised, xy (N, 2) map-frame metres -> (N,) bool, true where a point lies on
        a drivable lanelet (the map module provides it); called once.
    bounds_xy: (min_x, min_y, max_x, max_y) of the map in metres.
    The ego start, ride pickups/dropoffs, and the start and waypoints of vehicle actors must be
    on the road; pedestrians and static objects only within the bounds. All positions must be
    within the bounds.
    """
    bounds = np.asarray(bounds_xy, dtype=float)
    if bounds.shape != (4,) or not np.all(np.isfinite(bounds)) or not (
            bounds[0] < bounds[2] and bounds[1] < bounds[3]):
        raise ScenarioError('', f'map bounds must be finite (min_x, min_y, max_x, max_y) with '
                                f'min < max, got {bounds_xy!r}')
    paths: list[str] = []
    points: list[tuple[float, float]] = []
    needs_road: list[bool] = []

    def add(path: str, x: float, y: float, road: bool) -> None:
        paths.append(path)
        points.append((x, y))
        needs_road.append(road)

    add('ego.start', scenario.ego.start.x, scenario.ego.start.y, True)
    for i, ride in enumerate(scenario.rides):
        add(f'rides[{i}].pickup', ride.pickup.x, ride.pickup.y, True)
        add(f'rides[{i}].dropoff', ride.dropoff.x, ride.dropoff.y, True)
    for i, actor in enumerate(scenario.actors):
        road = actor.type not in OFF_ROAD_ACTOR_TYPES
        if actor.start is not None:
            add(f'actors[{i}].start', actor.start.x, actor.start.y, road)
        if isinstance(actor.behavior, WaypointsBehavior):
            for j, (_, x, y) in enumerate(actor.behavior.points):
                add(f'actors[{i}].behavior.points[{j}]', x, y, road)
    xy = np.asarray(points, dtype=float).reshape(-1, 2)
    on_road = np.asarray(on_road_fn(xy))
    if on_road.shape != (len(points),) or on_road.dtype != bool:
        raise ScenarioError('', f'on_road_fn must return a ({len(points)},) bool array, got '
                                f'shape {on_road.shape} dtype {on_road.dtype}')
    inside = ((xy[:, 0] >= bounds[0]) & (xy[:, 0] <= bounds[2])
              & (xy[:, 1] >= bounds[1]) & (xy[:, 1] <= bounds[3]))
    road_ok = on_road | ~np.asarray(needs_road, dtype=bool)
    problems = []
    for k in np.flatnonzero(~(inside & road_ok)):
        where = 'outside the map bounds' if not inside[k] else 'off the road'
        problems.append((paths[k], f'position ({xy[k, 0]:g}, {xy[k, 1]:g}) is {where}'))
    if problems:
        # One error for all offending keys, so a scenario is fixed in one pass.
        others = ''.join(f'; {path}: {problem}' for path, problem in problems[1:])
        raise ScenarioError(problems[0][0], problems[0][1] + others)
