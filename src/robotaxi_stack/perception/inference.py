"""onnxruntime session owner for the perception models (ARCHITECTURE.md section 7).

`InferenceSession` opens a model with the first available execution providers of the
configured order (default TensorRT, CUDA, CPU), checks the model's input/output signature
against the configuration (`ModelSignatureError` names the tensor, expected and actual), warms
up with zero inputs, and runs with per-call timing. On CUDA/TensorRT it runs through IO binding
(outputs allocated on the device once per call by onnxruntime, no intermediate host copies;
inputs may already be device `OrtValue`s); on CPU a plain `run`, which reads C-contiguous numpy
inputs in place.

Pre/post-processing are not here: they are pure numpy functions next to each model's node.
"""

from __future__ import annotations

import collections
import math
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider',
                     'CPUExecutionProvider')
DEVICE_PROVIDERS = ('TensorrtExecutionProvider', 'CUDAExecutionProvider')
# onnxruntime NodeArg.type strings -> numpy dtypes.
ORT_TYPES = {
    'tensor(float)': np.dtype(np.float32), 'tensor(float16)': np.dtype(np.float16),
    'tensor(double)': np.dtype(np.float64), 'tensor(int8)': np.dtype(np.int8),
    'tensor(uint8)': np.dtype(np.uint8), 'tensor(int16)': np.dtype(np.int16),
    'tensor(uint16)': np.dtype(np.uint16), 'tensor(int32)': np.dtype(np.int32),
    'tensor(uint32)': np.dtype(np.uint32), 'tensor(int64)': np.dtype(np.int64),
    'tensor(uint64)': np.dtype(np.uint64), 'tensor(bool)': np.dtype(np.bool_),
}


class InferenceError(RuntimeError):
    """Base of the errors of this module."""


class ModelLoadError(InferenceError):
    """The model file is missing, unreadable or not a valid ONNX model, or no provider fits."""


class ModelSignatureError(InferenceError):
    """The model's inputs/outputs differ from the configuration (message names the tensor)."""


class InferenceInputError(InferenceError):
    """Inputs given to `run` are missing, unknown, or of the wrong dtype/shape."""


Dim = int | str | None


@dataclass(frozen=True)
class TensorSpec:
    """Expected tensor: name, numpy dtype name and shape.

    A shape entry is an int (fixed), or a str/None (symbolic: any size; the model may fix it).
    warmup_shape: concrete shape for the warm-up zeros; default: symbolic dims take the model's
    fixed size where it has one, else 1.
    """

    name: str
    dtype: str = 'float32'
    shape: tuple[Dim, ...] = ()
    warmup_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'tensor name must be a non-empty string, got {self.name!r}')
        try:
            dtype = np.dtype(self.dtype)
        except TypeError:
            raise ValueError(f'tensor {self.name!r}: unknown dtype {self.dtype!r}') from None
        if dtype not in ORT_TYPES.values():
            raise ValueError(f'tensor {self.name!r}: dtype {dtype} is not an ONNX tensor type')
        object.__setattr__(self, 'dtype', dtype.name)
        shape = tuple(self.shape)
        for dim in shape:
            if not (dim is None or isinstance(dim, str)
                    or (isinstance(dim, (int, np.integer)) and not isinstance(dim, bool)
                        and dim >= 0)):
                raise ValueError(f'tensor {self.name!r}: shape entry {dim!r} must be an int '
                                 '>= 0, a symbolic name or None')
        object.__setattr__(self, 'shape', tuple(int(d) if isinstance(d, (int, np.integer))
                                                else d for d in shape))
        if self.warmup_shape is not None:
            warmup = tuple(int(d) for d in self.warmup_shape)
            if len(warmup) != len(shape) or any(
                    isinstance(e, int) and e != w for e, w in zip(self.shape, warmup)):
                raise ValueError(f'tensor {self.name!r}: warmup_shape {warmup} does not fit '
                                 f'shape {self.shape}')
            object.__setattr__(self, 'warmup_shape', warmup)


@dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """How to open and check one model.

    providers: preference order; the session uses those of them that this onnxruntime build
    offers (onnxruntime.get_available_providers()). trt_engine_cache_dir: TensorRT engine and
    timing cache directory ('' disables caching; first start then rebuilds engines, minutes on
    Orin). fp16: TensorRT may build FP16 kernels. intra_op_threads: 0 lets onnxruntime decide.
    inputs/outputs: expected signature; empty skips that check (warm-up then uses the model's
    own declarations). warmup_runs: zero-input runs at start (TensorRT builds or loads its
    engine in the first). timing_window: calls kept for the median/p99 statistics.
    """

    model_path: str
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    trt_engine_cache_dir: str = ''
    fp16: bool = False
    intra_op_threads: int = 0
    device_id: int = 0
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    warmup_runs: int = 2
    timing_window: int = 1000

    def __post_init__(self) -> None:
        if not isinstance(self.model_path, (str, os.PathLike)) or not str(self.model_path):
            raise ValueError(f'model_path must be a non-empty path, got {self.model_path!r}')
        object.__setattr__(self, 'model_path', str(self.model_path))
        providers = (self.providers,) if isinstance(self.providers, str) else \
            tuple(self.providers)
        if not providers or not all(isinstance(p, str) and p for p in providers):
            raise ValueError(f'providers must be a non-empty list of names, got {providers!r}')
        object.__setattr__(self, 'providers', providers)
        for name in ('intra_op_threads', 'device_id', 'warmup_runs'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f'{name} must be an int >= 0, got {value!r}')
        if isinstance(self.timing_window, bool) or not isinstance(self.timing_window, int) \
                or self.timing_window < 1:
            raise ValueError(f'timing_window must be an int >= 1, got {self.timing_window!r}')
        for kind in ('inputs', 'outputs'):
            specs = tuple(getattr(self, kind))
            if not all(isinstance(s, TensorSpec) for s in specs):
                raise ValueError(f'{kind} must hold TensorSpec items')
            names = [s.name for s in specs]
            if len(set(names)) != len(names):
                raise ValueError(f'{kind} name a tensor twice: {names}')
            object.__setattr__(self, kind, specs)


@dataclass(frozen=True)
class InferenceTiming:
    """Wall time of `run` calls (ms) over the last `timing_window` calls; warm-up excluded."""

    calls: int
    last_ms: float
    median_ms: float
    p99_ms: float
    max_ms: float
    warmup_ms: tuple[float, ...] = field(default=())


def select_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The requested providers that are available, in the requested order."""
    return [p for p in requested if p in available]


def _provider_options(config: InferenceConfig, provider: str) -> dict[str, Any]:
    if provider == 'TensorrtExecutionProvider':
        options: dict[str, Any] = {'device_id': config.device_id,
                                   'trt_fp16_enable': config.fp16}
        if config.trt_engine_cache_dir:
            options.update(trt_engine_cache_enable=True,
                           trt_engine_cache_path=config.trt_engine_cache_dir,
                           trt_timing_cache_enable=True,
                           trt_timing_cache_path=config.trt_engine_cache_dir)
        return options
    if provider == 'CUDAExecutionProvider':
        return {'device_id': config.device_id}
    return {}


def _check_signature(kind: str, expected: Sequence[TensorSpec], actual) -> None:
    """Raise ModelSignatureError naming the first tensor that differs."""
    if not expected:
        return
    actual_by_name = {arg.name: arg for arg in actual}
    missing = [s.name for s in expected if s.name not in actual_by_name]
    if missing:
        raise ModelSignatureError(
            f'model {kind[:-1]} {missing[0]!r}: expected by the configuration, but the model '
            f'has {kind} {sorted(actual_by_name)}')
    extra = sorted(set(actual_by_name) - {s.name for s in expected})
    if extra:
        raise ModelSignatureError(
            f'model {kind[:-1]} {extra[0]!r}: present in the model but not configured '
            f'(configured {kind}: {[s.name for s in expected]})')
    for spec in expected:
        arg = actual_by_name[spec.name]
        dtype = ORT_TYPES.get(arg.type)
        if dtype is None or dtype.name != spec.dtype:
            raise ModelSignatureError(f'model {kind[:-1]} {spec.name!r}: expected dtype '
                                      f'{spec.dtype}, model has {arg.type}')
        shape = list(arg.shape) if arg.shape is not None else None
        if shape is None or len(shape) != len(spec.shape):
            raise ModelSignatureError(f'model {kind[:-1]} {spec.name!r}: expected shape '
                                      f'{list(spec.shape)}, model has {shape}')
        for axis, (want, have) in enumerate(zip(spec.shape, shape)):
            if isinstance(want, int) and isinstance(have, int) and want != have:
                raise ModelSignatureError(
                    f'model {kind[:-1]} {spec.name!r}: expected shape {list(spec.shape)}, '
                    f'model has {shape} (axis {axis}: {want} != {have})')


class InferenceSession:
    """One onnxruntime session with provider selection, signature check, warm-up and timing.

    Not thread-safe for `run` statistics; one session per processing thread.
    """

    def __init__(self, config: InferenceConfig) -> None:
        import onnxruntime as ort  # heavy import, and the only runtime dependency here

        if not isinstance(config, InferenceConfig):
            raise TypeError(f'config must be an InferenceConfig, got {type(config).__name__}')
        self._ort = ort
        self.config = config
        path = pathlib.Path(config.model_path)
        if not path.is_file():
            raise ModelLoadError(f'model file not found: {path}')
        available = ort.get_available_providers()
        chosen = select_providers(config.providers, available)
        if not chosen:
            raise ModelLoadError(f'none of the configured providers {list(config.providers)} '
                                 f'is available; this onnxruntime offers {available}')
        if 'TensorrtExecutionProvider' in chosen and config.trt_engine_cache_dir:
            try:
                os.makedirs(config.trt_engine_cache_dir, exist_ok=True)
            except OSError as error:
                raise ModelLoadError(f'cannot create trt_engine_cache_dir '
                                     f'{config.trt_engine_cache_dir}: {error}') from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=options, providers=chosen,
                provider_options=[_provider_options(config, p) for p in chosen])
        except Exception as error:  # onnxruntime raises its own pybind exception types
            raise ModelLoadError(f'cannot load model {path}: {type(error).__name__}: '
                                 f'{error}') from None
        self.requested_providers = tuple(chosen)
        _check_signature('inputs', config.inputs, self._session.get_inputs())
        _check_signature('outputs', config.outputs, self._session.get_outputs())
        self._input_specs = self._effective_specs(config.inputs, self._session.get_inputs())
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._use_binding = self.provider in DEVICE_PROVIDERS
        self._times_ms: collections.deque[float] = collections.deque(
            maxlen=config.timing_window)
        self._calls = 0
        self._warmup_ms: list[float] = []
        for _ in range(config.warmup_runs):
            start = time.perf_counter()
            self._execute(self.warmup_inputs())
            self._warmup_ms.append((time.perf_counter() - start) * 1e3)

    @staticmethod
    def _effective_specs(configured: Sequence[TensorSpec], actual) -> dict[str, TensorSpec]:
        """Input specs to check `run` against and to warm up with: the configured ones, or the
        model's own declarations when none are configured."""
        by_name = {arg.name: arg for arg in actual}
        specs = {}
        for arg in actual:
            spec = next((s for s in configured if s.name == arg.name), None)
            if spec is None:
                dtype = ORT_TYPES.get(arg.type)
                if dtype is None:
                    raise ModelSignatureError(f'model input {arg.name!r}: unsupported type '
                                              f'{arg.type}')
                spec = TensorSpec(arg.name, dtype.name, tuple(
                    d if isinstance(d, int) else None for d in (arg.shape or ())))
            model_shape = list(by_name[arg.name].shape or ())
            if spec.warmup_shape is None:
                warmup = tuple(
                    want if isinstance(want, int) else
                    (have if isinstance(have, int) and have > 0 else 1)
                    for want, have in zip(spec.shape, model_shape + [None] * len(spec.shape)))
                spec = TensorSpec(spec.name, spec.dtype, spec.shape, warmup)
            specs[arg.name] = spec
        return specs

    # ------------------------------------------------------------------------------------
    @property
    def providers(self) -> tuple[str, ...]:
        """Providers the session actually has, in priority order (onnxruntime may have fallen
        back from a requested one that failed to initialise)."""
        return tuple(self._session.get_providers())

    @property
    def provider(self) -> str:
        """The provider that runs the graph (the highest-priority one the session has)."""
        return self.providers[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self._input_specs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self._output_names)

    def warmup_inputs(self) -> dict[str, np.ndarray]:
        """Zero arrays of the warm-up shapes, one per model input."""
        return {name: np.zeros(spec.warmup_shape, dtype=spec.dtype)
                for name, spec in self._input_specs.items()}

    # ------------------------------------------------------------------------------------
    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(inputs, Mapping):
            raise InferenceInputError(f'inputs must be a mapping name -> array, got '
                                      f'{type(inputs).__name__}')
        missing = [n for n in self._input_specs if n not in inputs]
        if missing:
            raise InferenceInputError(f'input {missing[0]!r} is missing; the model needs '
                                      f'{list(self._input_specs)}')
        unknown = sorted(set(inputs) - set(self._input_specs))
        if unknown:
            raise InferenceInputError(f'input {unknown[0]!r} is not a model input; the model '
                                      f'needs {list(self._input_specs)}')
        feed = {}
        for name, spec in self._input_specs.items():
            value = inputs[name]
            if isinstance(value, self._ort.OrtValue):
                feed[name] = value  # already placed (e.g. on the GPU): checked by onnxruntime
                continue
            if not isinstance(value, np.ndarray):
                raise InferenceInputError(f'input {name!r}: expected a numpy array, got '
                                          f'{type(value).__name__}')
            if value.dtype.name != spec.dtype:
                raise InferenceInputError(f'input {name!r}: expected dtype {spec.dtype}, got '
                                          f'{value.dtype}')
            if value.ndim != len(spec.shape) or any(
                    isinstance(want, int) and want != have
                    for want, have in zip(spec.shape, value.shape)):
                raise InferenceInputError(f'input {name!r}: expected shape '
                                          f'{list(spec.shape)}, got {list(value.shape)}')
            # A no-op for C-contiguous arrays; onnxruntime needs contiguous buffers.
            feed[name] = np.ascontiguousarray(value)
        return feed

    def _execute(self, feed: Mapping[str, Any]) -> list[np.ndarray]:
        if not self._use_binding:
            return self._session.run(self._output_names, dict(feed))
        binding = self._session.io_binding()
        for name, value in feed.items():
            if isinstance(value, self._ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)
        for name in self._output_names:
            binding.bind_output(name, 'cuda', self.config.device_id)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model: {input name: array} -> {output name: array}, timed.

        Raises InferenceInputError for missing/unknown inputs or a dtype/shape that does not
        fit the signature, InferenceError when onnxruntime fails.
        """
        feed = self._check_inputs(inputs)
        start = time.perf_counter()
        try:
            outputs = self._execute(feed)
        except Exception as error:  # onnxruntime's pybind exceptions have no common base
            raise InferenceError(f'inference failed on {self.provider}: '
                                 f'{type(error).__name__}: {error}') from None
        elapsed_ms = (time.perf_counter() - start) * 1e3
        self._times_ms.append(elapsed_ms)
        self._calls += 1
        return dict(zip(self._output_names, outputs))

    def timing(self) -> InferenceTiming:
        """Timing of the recent `run` calls (NaN before the first call)."""
        warmup = tuple(round(t, 3) for t in self._warmup_ms)
        if not self._times_ms:
            return InferenceTiming(0, math.nan, math.nan, math.nan, math.nan, warmup)
        times = np.fromiter(self._times_ms, float)
        return InferenceTiming(calls=self._calls, last_ms=float(times[-1]),
                               median_ms=float(np.median(times)),
                               p99_ms=float(np.percentile(times, 99)),
                               max_ms=float(times.max()), warmup_ms=warmup)

    def describe(self) -> dict[str, Any]:
        """Diagnostics: model, providers (requested, actual), inputs, outputs, timing."""
        timing = self.timing()
        return {'model': self.config.model_path, 'provider': self.provider,
                'providers': list(self.providers),
                'requested_providers': list(self.requested_providers),
                'io_binding': self._use_binding, 'inputs': list(self.input_names),
                'outputs': list(self.output_names), 'calls': timing.calls,
                'last_ms': timing.last_ms, 'median_ms': timing.median_ms,
                'p99_ms': timing.p99_ms, 'warmup_ms': list(timing.warmup_ms)}
