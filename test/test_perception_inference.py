"""onnxruntime session owner (perception/inference.py): provider choice and fallback,
signature checks naming the tensor, warm-up, runs with input checks, timing, load errors.

Models are tiny graphs written by tools/make_test_onnx.py (hand-encoded protobuf: the `onnx`
package is not a dependency)."""

import importlib.util
import math
import pathlib

import numpy as np
import onnxruntime as ort
import pytest

from robotaxi_stack.perception import inference
from robotaxi_stack.perception.inference import (
    DEFAULT_PROVIDERS, InferenceConfig, InferenceError, InferenceInputError, InferenceSession,
    ModelLoadError, ModelSignatureError, TensorSpec, select_providers)

_TOOL = pathlib.Path(__file__).resolve().parents[1] / 'tools' / 'make_test_onnx.py'
_spec = importlib.util.spec_from_file_location('make_test_onnx', _TOOL)
make_test_onnx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_test_onnx)

INPUTS = (TensorSpec('points', 'float32', ('N', 4)),)
OUTPUTS = (TensorSpec('scores', 'float32', ('N', 2)), TensorSpec('scores_max', 'float32',
                                                                 ('N',)))


@pytest.fixture(scope='module')
def affine(tmp_path_factory):
    """(model path, W, b) of y = x @ W + b with x (N, 4) and a ReduceMax output."""
    model, weight, bias = make_test_onnx.affine_model(4, 2, seed=3)
    path = tmp_path_factory.mktemp('models') / 'affine.onnx'
    path.write_bytes(model)
    return path, weight, bias


def config(path, **overrides):
    values = dict(model_path=str(path), inputs=INPUTS, outputs=OUTPUTS,
                  providers=('CPUExecutionProvider',))
    values.update(overrides)
    return InferenceConfig(**values)


def test_run_returns_named_outputs_that_match_the_graph(affine):
    path, weight, bias = affine
    session = InferenceSession(config(path))
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    out = session.run({'points': x})
    assert set(out) == {'scores', 'scores_max'}
    np.testing.assert_allclose(out['scores'], x @ weight + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out['scores_max'], (x @ weight + bias).max(axis=1), rtol=1e-5,
                               atol=1e-5)


def test_default_provider_order_falls_back_to_cpu_and_says_so(affine):
    path, _, _ = affine
    session = InferenceSession(config(path, providers=DEFAULT_PROVIDERS))
    available = ort.get_available_providers()
    expected = [p for p in DEFAULT_PROVIDERS if p in available]
    assert list(session.requested_providers) == expected
    assert session.provider in session.providers
    if 'CUDAExecutionProvider' not in available:
        assert session.provider == 'CPUExecutionProvider'
        assert session.describe()['io_binding'] is False
    assert session.describe()['provider'] == session.provider


def test_providers_are_chosen_in_configured_order():
    available = ['CPUExecutionProvider', 'CUDAExecutionProvider', 'TensorrtExecutionProvider']
    assert select_providers(DEFAULT_PROVIDERS, available) == list(DEFAULT_PROVIDERS)
    assert select_providers(DEFAULT_PROVIDERS, ['CPUExecutionProvider']) == [
        'CPUExecutionProvider']
    assert select_providers(('CUDAExecutionProvider', 'CPUExecutionProvider'),
                            ['CUDAExecutionProvider', 'CPUExecutionProvider']) == [
        'CUDAExecutionProvider', 'CPUExecutionProvider']


def test_tensorrt_and_cuda_get_their_provider_options():
    cfg = InferenceConfig(model_path='m.onnx', trt_engine_cache_dir='/tmp/engines', fp16=True,
                          device_id=1)
    trt = inference._provider_options(cfg, 'TensorrtExecutionProvider')
    assert trt['trt_engine_cache_enable'] is True
    assert trt['trt_engine_cache_path'] == '/tmp/engines'
    assert trt['trt_fp16_enable'] is True and trt['device_id'] == 1
    assert inference._provider_options(cfg, 'CUDAExecutionProvider') == {'device_id': 1}
    no_cache = InferenceConfig(model_path='m.onnx')
    assert 'trt_engine_cache_enable' not in inference._provider_options(
        no_cache, 'TensorrtExecutionProvider')


def test_no_available_provider_is_a_load_error_naming_what_exists(affine):
    path, _, _ = affine
    with pytest.raises(ModelLoadError, match='TensorrtExecutionProvider.*CPUExecutionProvider'):
        InferenceSession(config(path, providers=('TensorrtExecutionProvider',)))


@pytest.mark.parametrize('inputs, outputs, match', [
    ((TensorSpec('pts', 'float32', ('N', 4)),), OUTPUTS, "'pts'"),
    ((TensorSpec('points', 'float64', ('N', 4)),), OUTPUTS, "'points'.*float64.*tensor\\(float"),
    ((TensorSpec('points', 'float32', ('N', 5)),), OUTPUTS, "'points'.*axis 1: 5 != 4"),
    ((TensorSpec('points', 'float32', ('N', 4, 1)),), OUTPUTS, "'points'.*shape"),
    (INPUTS, OUTPUTS[:1], "'scores_max'.*not configured"),
    (INPUTS, (OUTPUTS[0], TensorSpec('scores_max', 'int64', ('N',))), "'scores_max'.*int64"),
])
def test_signature_mismatch_names_the_tensor(affine, inputs, outputs, match):
    path, _, _ = affine
    with pytest.raises(ModelSignatureError, match=match):
        InferenceSession(config(path, inputs=inputs, outputs=outputs))


def test_fixed_sizes_in_the_config_fit_symbolic_model_dims(affine):
    path, _, _ = affine
    session = InferenceSession(config(path, inputs=(TensorSpec('points', 'float32', (16, 4)),)))
    assert session.warmup_inputs()['points'].shape == (16, 4)
    with pytest.raises(InferenceInputError, match="'points'.*shape"):
        session.run({'points': np.zeros((8, 4), np.float32)})


def test_warm_up_runs_zero_inputs_of_the_configured_shapes(affine):
    path, _, _ = affine
    session = InferenceSession(config(path, warmup_runs=3))
    assert session.warmup_inputs()['points'].shape == (1, 4)  # symbolic N -> 1
    timing = session.timing()
    assert len(timing.warmup_ms) == 3 and all(t > 0 for t in timing.warmup_ms)
    assert timing.calls == 0 and math.isnan(timing.median_ms)
    custom = InferenceSession(config(path, inputs=(
        TensorSpec('points', 'float32', ('N', 4), warmup_shape=(1000, 4)),)))
    assert custom.warmup_inputs()['points'].shape == (1000, 4)


def test_unconfigured_signature_uses_the_model_declarations(affine):
    path, _, _ = affine
    session = InferenceSession(InferenceConfig(model_path=str(path),
                                               providers=('CPUExecutionProvider',)))
    assert session.input_names == ('points',)
    assert session.output_names == ('scores', 'scores_max')
    assert session.run({'points': np.ones((2, 4), np.float32)})['scores'].shape == (2, 2)


def test_timing_statistics_cover_the_runs(affine):
    path, _, _ = affine
    session = InferenceSession(config(path, timing_window=10))
    x = np.zeros((32, 4), np.float32)
    for _ in range(25):
        session.run({'points': x})
    timing = session.timing()
    assert timing.calls == 25
    assert 0.0 < timing.median_ms <= timing.p99_ms <= timing.max_ms
    assert timing.last_ms > 0.0
    summary = session.describe()
    assert summary['calls'] == 25 and summary['median_ms'] == timing.median_ms


@pytest.mark.parametrize('inputs, match', [
    ({}, "'points' is missing"),
    ({'points': np.zeros((2, 4), np.float32), 'extra': np.zeros(1)}, "'extra' is not"),
    ({'points': np.zeros((2, 4), np.float64)}, "'points'.*float32.*float64"),
    ({'points': np.zeros((2, 3), np.float32)}, "'points'.*shape"),
    ({'points': np.zeros(4, np.float32)}, "'points'.*shape"),
    ({'points': [[0.0, 0.0, 0.0, 0.0]]}, "'points'.*numpy array"),
])
def test_bad_run_inputs_name_the_tensor(affine, inputs, match):
    path, _, _ = affine
    session = InferenceSession(config(path))
    with pytest.raises(InferenceInputError, match=match):
        session.run(inputs)
    assert session.timing().calls == 0


def test_non_contiguous_inputs_are_accepted(affine):
    path, weight, bias = affine
    session = InferenceSession(config(path))
    x = np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::2][:, :4].T.copy().T  # F-order
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(session.run({'points': x})['scores'], x @ weight + bias,
                               rtol=1e-5)


def test_missing_and_corrupt_model_files_are_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match='not found'):
        InferenceSession(config(tmp_path / 'absent.onnx'))
    corrupt = tmp_path / 'corrupt.onnx'
    corrupt.write_bytes(b'\x08\x07 this is not a protobuf model \xff\xfe')
    with pytest.raises(ModelLoadError, match='cannot load model'):
        InferenceSession(config(corrupt))
    truncated = tmp_path / 'truncated.onnx'
    truncated.write_bytes(make_test_onnx.affine_model()[0][:40])
    with pytest.raises(ModelLoadError, match=str(truncated)):
        InferenceSession(config(truncated))


def test_invalid_configurations_are_rejected():
    with pytest.raises(ValueError, match='model_path'):
        InferenceConfig(model_path='')
    with pytest.raises(ValueError, match='providers'):
        InferenceConfig(model_path='m.onnx', providers=())
    with pytest.raises(ValueError, match='intra_op_threads'):
        InferenceConfig(model_path='m.onnx', intra_op_threads=-1)
    with pytest.raises(ValueError, match='twice'):
        InferenceConfig(model_path='m.onnx', inputs=(INPUTS[0], INPUTS[0]))
    with pytest.raises(ValueError, match='dtype'):
        TensorSpec('x', 'complex128', (1,))
    with pytest.raises(ValueError, match='warmup_shape'):
        TensorSpec('x', 'float32', (3, 'N'), warmup_shape=(2, 5))
    assert InferenceConfig(model_path='m.onnx', providers='CPUExecutionProvider').providers == (
        'CPUExecutionProvider',)


def test_runtime_failures_are_inference_errors(tmp_path):
    # A Reshape to a fixed element count fails at run time for other input sizes.
    mk = make_test_onnx
    model = mk.model_proto(
        [mk.node_proto('Reshape', ['x', 'shape'], ['y'])],
        [mk.value_info('x', np.float32, ('N',))], [mk.value_info('y', np.float32, (2, 2))],
        [mk.tensor_proto('shape', np.array([2, 2], np.int64))])
    path = tmp_path / 'reshape.onnx'
    path.write_bytes(model)
    session = InferenceSession(InferenceConfig(
        model_path=str(path), providers=('CPUExecutionProvider',), warmup_runs=0))
    np.testing.assert_array_equal(session.run({'x': np.arange(4, dtype=np.float32)})['y'],
                                  [[0, 1], [2, 3]])
    with pytest.raises(InferenceError, match='CPUExecutionProvider'):
        session.run({'x': np.arange(5, dtype=np.float32)})
