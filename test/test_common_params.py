"""Parameter dataclasses: validation in the pure core and declaration on a real rclpy node."""

import dataclasses

import pytest
import rclpy
from rclpy.parameter import Parameter

from robotaxi_stack.common.params import (ParameterError, declare_node_parameters,
                                          load_param_file, param, params_from_dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExampleParams:
    max_accel_mps2: float = param(1.5, min=0.1, max=5.0, description='comfort limit')
    horizon_steps: int = param(40, min=1, max=200)
    mode: str = param('mpc', choices=('mpc', 'stop'))
    enabled: bool = param(True)
    providers: tuple = param(('CUDA', 'CPU'))
    gain: float = param(0.5, min=0.0, max=1.0, dynamic=True)
    vehicle: str = param()


def test_defaults_and_required_value_build_frozen_dataclass():
    p = params_from_dict(ExampleParams, {'vehicle': 'bmw_320i'})
    assert p.max_accel_mps2 == 1.5 and p.vehicle == 'bmw_320i' and p.providers == ('CUDA', 'CPU')
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.max_accel_mps2 = 2.0


def test_integer_is_accepted_for_float_parameter():
    assert params_from_dict(ExampleParams, {'vehicle': 'x', 'max_accel_mps2': 2}).max_accel_mps2 == 2.0


@pytest.mark.parametrize('values, expected', [
    ({}, "required parameter 'vehicle' is missing"),
    ({'vehicle': 'x', 'max_acel_mps2': 1.0}, "unknown parameter(s) ['max_acel_mps2']"),
    ({'vehicle': 'x', 'max_accel_mps2': 9.0}, "'max_accel_mps2' = 9.0 is out of range [0.1, 5.0]"),
    ({'vehicle': 'x', 'horizon_steps': 0}, "'horizon_steps' = 0 is out of range [1, 200]"),
    ({'vehicle': 'x', 'horizon_steps': 2.5}, "'horizon_steps' = 2.5: expected int"),
    ({'vehicle': 'x', 'mode': 'fast'}, "'mode' = 'fast' is not one of ['mpc', 'stop']"),
    ({'vehicle': 'x', 'enabled': 'yes'}, "'enabled' = 'yes': expected bool"),
    ({'vehicle': 'x', 'max_accel_mps2': float('nan')}, 'must be a finite number'),
    ({'vehicle': 'x', 'max_accel_mps2': True}, 'expected float'),
])
def test_bad_values_name_parameter_value_and_range(values, expected):
    with pytest.raises(ParameterError) as error:
        params_from_dict(ExampleParams, values, context='planner')
    assert expected in str(error.value)
    assert str(error.value).startswith('planner: ')


def test_param_file_sections_merge_wildcard_then_node(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters: {a: 1, b: 2}\n'
                    'planner:\n  ros__parameters: {b: 3}\n')
    assert load_param_file(path, 'planner') == {'a': 1, 'b': 3}
    assert load_param_file(path, 'other') == {'a': 1, 'b': 2}


def test_malformed_param_file_is_a_clear_error(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('planner:\n  ros__parameters: [1, 2\n')
    with pytest.raises(ParameterError, match='cannot read parameter file'):
        load_param_file(path, 'planner')
    path.write_text('planner:\n  params: {a: 1}\n')
    with pytest.raises(ParameterError, match='needs a ros__parameters mapping'):
        load_param_file(path, 'planner')


@pytest.fixture
def ros_context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def make_node(context, overrides):
    return rclpy.create_node('example', context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in overrides.items()])


def test_node_declares_every_parameter_with_range_descriptor(ros_context):
    node = make_node(ros_context, {'vehicle': 'bmw_320i', 'max_accel_mps2': 2.5})
    p = declare_node_parameters(node, ExampleParams)
    assert p.max_accel_mps2 == 2.5 and p.vehicle == 'bmw_320i' and p.providers == ('CUDA', 'CPU')
    descriptor = node.describe_parameter('max_accel_mps2')
    assert descriptor.floating_point_range[0].to_value == 5.0
    assert descriptor.read_only
    node.destroy_node()


@pytest.mark.parametrize('overrides, expected', [
    ({}, "required parameter 'vehicle' is missing"),
    ({'vehicle': 'x', 'typo_param': 1}, "unknown parameter(s) ['typo_param']"),
    ({'vehicle': 'x', 'max_accel_mps2': 50.0}, "'max_accel_mps2' = 50.0 is out of range"),
])
def test_node_start_up_fails_naming_the_parameter(ros_context, overrides, expected):
    node = make_node(ros_context, overrides)
    with pytest.raises(ParameterError) as error:
        declare_node_parameters(node, ExampleParams)
    assert expected in str(error.value) and 'example' in str(error.value)
    node.destroy_node()


def test_runtime_change_is_validated_and_static_parameters_are_read_only(ros_context):
    node = make_node(ros_context, {'vehicle': 'x'})
    seen = []
    declare_node_parameters(node, ExampleParams, on_change=seen.append)
    bad = node.set_parameters([Parameter('gain', value=3.0)])[0]
    assert not bad.successful and 'out of range' in bad.reason
    good = node.set_parameters([Parameter('gain', value=0.25)])[0]
    assert good.successful and seen[-1].gain == 0.25
    static = node.set_parameters([Parameter('max_accel_mps2', value=1.0)])[0]
    assert not static.successful
    node.destroy_node()
