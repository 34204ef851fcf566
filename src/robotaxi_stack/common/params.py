"""Node parameters as frozen, validated dataclasses (ARCHITECTURE.md section 4).

A node's parameters are one frozen dataclass whose fields carry a `param(...)` spec (range,
choices, description). The pure core `params_from_dict` turns a plain mapping (e.g. the
`ros__parameters` of a param file) into that dataclass; a missing, unknown, mistyped or
out-of-range value raises ParameterError naming the parameter, its value and what is allowed.
`declare_node_parameters` (rclpy, imported lazily) declares every field on a node with a
descriptor, so `ros2 param describe` shows ranges, and runs the same validation at start-up.

Example (kw_only, so required parameters may follow ones with defaults)::

    @dataclass(frozen=True, kw_only=True)
    class PlannerParams:
        max_accel_mps2: float = param(1.5, min=0.1, max=5.0, description='comfort limit')
        update_rate_hz: float = param(10.0, min=1.0, max=100.0)
        mode: str = param('mpc', choices=('mpc', 'stop'))
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import typing
from typing import Any, Callable, Mapping

import yaml

_SPEC_KEY = 'robotaxi_param'
_SUPPORTED_TYPES = (bool, int, float, str, tuple)


class ParameterError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """Allowed values of one parameter; `dynamic` ones may change while the node runs."""

    description: str = ''
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    dynamic: bool = False
    required: bool = False


def param(default: Any = dataclasses.MISSING, *, min: float | None = None,
          max: float | None = None, choices: tuple | None = None, description: str = '',
          dynamic: bool = False) -> Any:
    """Dataclass field with a parameter spec. Without a default the parameter is required."""
    if isinstance(default, list):
        default = tuple(default)
    spec = ParamSpec(description=description, min=min, max=max,
                     choices=tuple(choices) if choices is not None else None,
                     dynamic=dynamic, required=default is dataclasses.MISSING)
    return dataclasses.field(default=default, metadata={_SPEC_KEY: spec})


def param_specs(cls: type) -> dict[str, tuple[type, ParamSpec, Any]]:
    """name -> (python type, spec, default or MISSING) for every field of a params dataclass."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f'{cls!r} is not a dataclass')
    hints = typing.get_type_hints(cls)
    specs = {}
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(_SPEC_KEY, ParamSpec(required=field.default
                                                        is dataclasses.MISSING))
        ftype = typing.get_origin(hints[field.name]) or hints[field.name]
        if ftype not in _SUPPORTED_TYPES:
            raise TypeError(f'{cls.__name__}.{field.name}: unsupported parameter type {ftype}')
        specs[field.name] = (ftype, spec, field.default)
    return specs


def _coerce(name: str, ftype: type, value: Any) -> Any:
    """Convert a YAML/ROS value to the field type without ever losing information."""
    if ftype is bool:
        if isinstance(value, bool):
            return value
    elif ftype is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif ftype is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if not math.isfinite(value):
                raise ParameterError(f'parameter {name!r} = {value!r}: must be a finite number')
            return value
    elif ftype is str:
        if isinstance(value, str):
            return value
    elif ftype is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    raise ParameterError(f'parameter {name!r} = {value!r}: expected {ftype.__name__}, '
                         f'got {type(value).__name__}')


def check_value(name: str, ftype: type, spec: ParamSpec, value: Any) -> Any:
    """Return the coerced value or raise ParameterError naming parameter, value and range."""
    value = _coerce(name, ftype, value)
    if spec.min is not None and value < spec.min or spec.max is not None and value > spec.max:
        low = '-inf' if spec.min is None else spec.min
        high = 'inf' if spec.max is None else spec.max
        raise ParameterError(f'parameter {name!r} = {value!r} is out of range [{low}, {high}]')
    if spec.choices is not None and value not in spec.choices:
        raise ParameterError(f'parameter {name!r} = {value!r} is not one of {list(spec.choices)}')
    return value


def check_fields(instance: Any, error_type: type[Exception] = ParameterError,
                 prefix: str = '') -> None:
    """Validate and coerce every param() field of a frozen dataclass instance in place (for
    its __post_init__); a bad value raises `error_type` with `prefix` and the message of
    check_value."""
    for name, (ftype, spec, _) in param_specs(type(instance)).items():
        try:
            object.__setattr__(instance, name, check_value(name, ftype, spec,
                                                           getattr(instance, name)))
        except ParameterError as error:
            raise error_type(f'{prefix}{error}') from None


def params_from_dict(cls: type, values: Mapping[str, Any], *, context: str = '') -> Any:
    """Build the frozen params dataclass `cls` from a mapping, validating every value.

    Raises ParameterError for unknown names, missing required values, wrong types and values
    outside their range or choices; `context` (e.g. the node name) prefixes the message.
    """
    prefix = f'{context}: ' if context else ''
    specs = param_specs(cls)
    unknown = sorted(set(values) - set(specs) - {'use_sim_time'})
    if unknown:
        raise ParameterError(f'{prefix}unknown parameter(s) {unknown}; '
                             f'allowed: {sorted(specs)}')
    kwargs = {}
    for name, (ftype, spec, default) in specs.items():
        if name in values:
            try:
                kwargs[name] = check_value(name, ftype, spec, values[name])
            except ParameterError as error:
                raise ParameterError(prefix + str(error)) from None
        elif default is dataclasses.MISSING:
            raise ParameterError(f'{prefix}required parameter {name!r} is missing')
    return cls(**kwargs)


def load_param_file(path: str | pathlib.Path, node_name: str) -> dict[str, Any]:
    """The `ros__parameters` of `node_name` (or `/**`) in a ROS 2 param file; later wins."""
    path = pathlib.Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ParameterError(f'cannot read parameter file {path}: {error}') from None
    if not isinstance(document, dict):
        raise ParameterError(f'parameter file {path}: expected a mapping of node names')
    merged: dict[str, Any] = {}
    for key in ('/**', node_name, '/' + node_name.lstrip('/')):
        section = document.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or not isinstance(section.get('ros__parameters'), dict):
            raise ParameterError(f'parameter file {path}: {key!r} needs a ros__parameters mapping')
        merged.update(section['ros__parameters'])
    return merged


def _array_type(default: Any) -> Any:
    """ROS array parameter type matching a tuple default (strings when empty)."""
    from rclpy.parameter import Parameter
    sample = default[0] if isinstance(default, tuple) and default else ''
    if isinstance(sample, bool):
        return Parameter.Type.BOOL_ARRAY
    if isinstance(sample, int):
        return Parameter.Type.INTEGER_ARRAY
    if isinstance(sample, float):
        return Parameter.Type.DOUBLE_ARRAY
    return Parameter.Type.STRING_ARRAY


def declare_node_parameters(node: Any, cls: type,
                            on_change: Callable[[Any], None] | None = None) -> Any:
    """Declare every field of `cls` on an rclpy node and return the validated dataclass.

    Static parameters are read-only after start-up; `dynamic` ones are validated by an
    on-set-parameters callback that rejects bad values with a reason, and `on_change` receives
    the new dataclass. Overrides that name no field are an error (a typo must not be ignored).
    """
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                    SetParametersResult)
    from rclpy.parameter import Parameter

    specs = param_specs(cls)
    # rclpy keeps the --params-file / -p overrides here; there is no public accessor.
    overrides = dict(getattr(node, '_parameter_overrides', {}))
    unknown = sorted(set(overrides) - set(specs) - {'use_sim_time'})
    if unknown:
        raise ParameterError(f'{node.get_name()}: unknown parameter(s) {unknown}; '
                             f'allowed: {sorted(specs)}')
    # Validate overrides first so the error names our range, not rclpy's descriptor check.
    params_from_dict(cls, {name: override.value for name, override in overrides.items()
                           if name in specs}
                     | {name: default for name, (_, _, default) in specs.items()
                        if name not in overrides and default is not dataclasses.MISSING},
                     context=node.get_name())
    values = {}
    for name, (ftype, spec, default) in specs.items():
        descriptor = ParameterDescriptor(description=spec.description,
                                         read_only=not spec.dynamic)
        # rclpy ranges are inclusive and need both ends; open ends use the type's extremes.
        if ftype is float and (spec.min is not None or spec.max is not None):
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.min if spec.min is not None else -1e300),
                to_value=float(spec.max if spec.max is not None else 1e300), step=0.0)]
        elif ftype is int and (spec.min is not None or spec.max is not None):
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.min if spec.min is not None else -2**63),
                to_value=int(spec.max if spec.max is not None else 2**63 - 1), step=0)]
        # Required parameters and arrays (whose element type an empty default cannot show)
        # are declared by type; the dataclass default then applies when no override is given.
        if default is dataclasses.MISSING or ftype is tuple:
            ptype = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER,
                     float: Parameter.Type.DOUBLE, str: Parameter.Type.STRING,
                     tuple: _array_type(default)}[ftype]
            declared_default = ptype
        else:
            declared_default = default
        try:
            declared = node.declare_parameter(name, declared_default, descriptor)
        except Exception as error:  # rclpy raises several types for bad overrides
            raise ParameterError(f'{node.get_name()}: parameter {name!r}: {error}') from None
        if declared.type_ != Parameter.Type.NOT_SET:
            values[name] = declared.value
    current = [params_from_dict(cls, values, context=node.get_name())]

    def validate(parameters: list) -> Any:
        changed = {}
        for parameter in parameters:
            if parameter.name not in specs:
                continue
            ftype, spec, _ = specs[parameter.name]
            try:
                changed[parameter.name] = check_value(parameter.name, ftype, spec,
                                                      parameter.value)
            except ParameterError as error:
                return SetParametersResult(successful=False, reason=str(error))
        if changed:
            current[0] = dataclasses.replace(current[0], **changed)
            if on_change is not None:
                on_change(current[0])
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)
    return current[0]
