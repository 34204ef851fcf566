"""The stack graph (config/stack.yaml): nodes, executables, parameter files, remaps, respawn.

One description serves both starters: `launch/robotaxi.launch.py` turns it into launch_ros
Node actions and `robotaxi bringup` into OS processes. This module is pure (no rclpy, no
launch): it validates the file and resolves it for a set of launch arguments into NodeSpecs.

stack.yaml::

    format: robotaxi-stack/1
    nodes:
      - name: simulator                # ROS node name (unique, or in exclusive `when`s)
        executable: simulator_node     # console script in lib/robotaxi_stack
        params: [simulator.param.yaml] # relative to the package's config/ directory
        remaps: {~/output/points: /sensing/lidar/points}
        when: {sim: true}              # started only when every launch argument matches
        respawn: false                 # restart after an exit
        respawn_delay_s: 1.0
        required: true                 # the stack stops when it exits for good
        pass_args: [vehicle]           # launch arguments given to the node as parameters
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import yaml

from robotaxi_stack.bringup.executables import NODE_EXECUTABLES

STACK_FORMAT = 'robotaxi-stack/1'
_NODE_KEYS = {'name', 'executable', 'params', 'remaps', 'when', 'respawn', 'respawn_delay_s',
              'required', 'description', 'pass_args'}
# Launch arguments of robotaxi.launch.py and `robotaxi bringup`, with their defaults.
LAUNCH_ARGUMENTS = {
    'sim': ('true', 'run the closed-loop simulator instead of vehicle drivers'),
    'vehicle': ('bmw_320i', 'vehicle description config/vehicle/<vehicle>.yaml'),
    'params_file': ('', 'extra ROS 2 parameter file applied after the per-node files'),
    'log_level': ('info', 'log level of every node'),
    'use_sim_time': ('', 'use /clock; empty means: same as sim'),
    'perception': ('ground_truth', 'ground_truth | lidar_camera'),
    'scenario': ('', 'scenario YAML the simulator runs; empty: the built-in default ride'),
}
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')


class GraphError(ValueError):
    """stack.yaml is malformed or a launch argument is invalid."""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the resolved graph, ready to start."""

    name: str
    executable: str
    module: str
    param_files: tuple[str, ...]
    remaps: tuple[tuple[str, str], ...]
    respawn: bool
    respawn_delay_s: float
    required: bool
    parameters: tuple[tuple[str, str], ...] = ()

    def ros_arguments(self, use_sim_time: bool, log_level: str) -> list[str]:
        """The `--ros-args ...` part of the command line (identical for both starters)."""
        args = ['--ros-args', '-r', f'__node:={self.name}', '--log-level', log_level]
        for param_file in self.param_files:
            args += ['--params-file', param_file]
        args += ['-p', f'use_sim_time:={"true" if use_sim_time else "false"}']
        for name, value in self.parameters:
            args += ['-p', f'{name}:={value}']
        for source, target in self.remaps:
            args += ['-r', f'{source}:={target}']
        return args


def _expect(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise GraphError(f'{where}: {message}')


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('true', '1', 'yes', 'on'):
        return True
    if text in ('false', '0', 'no', 'off'):
        return False
    raise GraphError(f'launch argument {name}:={value!r}: expected true or false')


def resolve_arguments(overrides: Mapping[str, str]) -> dict[str, str]:
    """Defaults of LAUNCH_ARGUMENTS updated by `overrides`; unknown names are errors."""
    unknown = sorted(set(overrides) - set(LAUNCH_ARGUMENTS))
    if unknown:
        raise GraphError(f'unknown launch argument(s) {unknown}; '
                         f'allowed: {sorted(LAUNCH_ARGUMENTS)}')
    args = {name: default for name, (default, _) in LAUNCH_ARGUMENTS.items()}
    args.update({k: str(v) for k, v in overrides.items()})
    parse_bool('sim', args['sim'])
    if args['use_sim_time'] == '':
        args['use_sim_time'] = args['sim']
    parse_bool('use_sim_time', args['use_sim_time'])
    if args['log_level'] not in LOG_LEVELS:
        raise GraphError(f'launch argument log_level:={args["log_level"]!r}: '
                         f'expected one of {list(LOG_LEVELS)}')
    return args


def load_graph(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """Read and validate stack.yaml; returns the node entries (plain dicts)."""
    path = pathlib.Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise GraphError(f'cannot read stack description {path}: {error}') from None
    _expect(isinstance(document, dict), str(path), 'expected a mapping')
    _expect(document.get('format') == STACK_FORMAT, f'{path}: format',
            f'expected {STACK_FORMAT!r}, got {document.get("format")!r}')
    unknown = sorted(set(document) - {'format', 'nodes'})
    _expect(not unknown, str(path), f'unknown key(s) {unknown}')
    nodes = document.get('nodes')
    _expect(isinstance(nodes, list) and nodes, f'{path}: nodes', 'expected a non-empty list')
    names: dict[str, list[dict]] = {}
    for index, entry in enumerate(nodes):
        where = f'{path}: nodes[{index}]'
        _expect(isinstance(entry, dict), where, 'expected a mapping')
        unknown = sorted(set(entry) - _NODE_KEYS)
        _expect(not unknown, where, f'unknown key(s) {unknown}')
        for key in ('name', 'executable'):
            _expect(isinstance(entry.get(key), str) and entry[key], f'{where}.{key}',
                    'expected a non-empty string')
        when = entry.get('when', {})
        _expect(isinstance(when, dict), f'{where}.when', 'expected a mapping')
        # One name may appear in variants that never run together (exclusive `when`s).
        _expect(all(_exclusive(when, other) for other in names.get(entry['name'], [])),
                f'{where}.name', f'duplicate {entry["name"]!r} (not in an exclusive `when`)')
        names.setdefault(entry['name'], []).append(when)
        _expect(entry['executable'] in NODE_EXECUTABLES, f'{where}.executable',
                f'{entry["executable"]!r} is not one of {sorted(NODE_EXECUTABLES)}')
        _expect(isinstance(entry.get('params', []), list)
                and all(isinstance(p, str) for p in entry.get('params', [])),
                f'{where}.params', 'expected a list of file names')
        remaps = entry.get('remaps', {})
        _expect(isinstance(remaps, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in remaps.items()),
                f'{where}.remaps', 'expected a mapping of topic names')
        unknown = sorted(set(when) - set(LAUNCH_ARGUMENTS))
        _expect(not unknown, f'{where}.when', f'unknown launch argument(s) {unknown}')
        pass_args = entry.get('pass_args', [])
        _expect(isinstance(pass_args, list) and set(pass_args) <= set(LAUNCH_ARGUMENTS),
                f'{where}.pass_args', f'expected a list of {sorted(LAUNCH_ARGUMENTS)}')
        for key in ('respawn', 'required'):
            _expect(isinstance(entry.get(key, False), bool), f'{where}.{key}', 'expected bool')
        delay = entry.get('respawn_delay_s', 1.0)
        _expect(isinstance(delay, (int, float)) and not isinstance(delay, bool)
                and 0.0 <= delay <= 60.0, f'{where}.respawn_delay_s',
                f'{delay!r} is not a number in [0, 60]')
    return nodes


def _when_values(expected: Any) -> set[str]:
    if isinstance(expected, bool):
        return {str(expected).lower()}
    if isinstance(expected, list):
        return {str(e) for e in expected}
    return {str(expected)}


def _exclusive(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """No set of launch arguments satisfies both `when` clauses."""
    return any(not _when_values(a[key]) & _when_values(b[key]) for key in set(a) & set(b))


def _matches(when: Mapping[str, Any], args: Mapping[str, str]) -> bool:
    for name, expected in when.items():
        actual = args[name]
        if isinstance(expected, bool):
            if parse_bool(name, actual) != expected:
                return False
        elif isinstance(expected, list):
            if actual not in [str(e) for e in expected]:
                return False
        elif str(expected) != actual:
            return False
    return True


def resolve_graph(nodes: list[dict[str, Any]], args: Mapping[str, str],
                  config_dir: str | pathlib.Path) -> list[NodeSpec]:
    """Node specs for the given (resolved) launch arguments; parameter files must exist."""
    config_dir = pathlib.Path(config_dir)
    specs = []
    for entry in nodes:
        if not _matches(entry.get('when', {}), args):
            continue
        param_files = []
        for name in entry.get('params', []):
            param_path = (config_dir / name).resolve()
            if not param_path.is_file():
                raise GraphError(f'node {entry["name"]}: parameter file {param_path} not found')
            param_files.append(str(param_path))
        if args.get('params_file'):
            extra = pathlib.Path(args['params_file']).resolve()
            if not extra.is_file():
                raise GraphError(f'launch argument params_file:={extra}: file not found')
            param_files.append(str(extra))
        specs.append(NodeSpec(
            name=entry['name'], executable=entry['executable'],
            module=NODE_EXECUTABLES[entry['executable']], param_files=tuple(param_files),
            remaps=tuple(entry.get('remaps', {}).items()),
            respawn=entry.get('respawn', False),
            respawn_delay_s=float(entry.get('respawn_delay_s', 1.0)),
            required=entry.get('required', False),
            # An empty argument (e.g. no scenario) leaves the node's default: `-p name:=` with
            # no value is a start-up error in rcl.
            parameters=tuple((name, args[name]) for name in entry.get('pass_args', [])
                             if args[name] != '')))
    if not specs:
        raise GraphError(f'no node matches the launch arguments {dict(args)}')
    return specs
