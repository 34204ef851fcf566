"""Write tiny ONNX models without the `onnx` package (it is not a project dependency).

The ONNX file format is a protobuf `ModelProto`; the few messages a small graph needs are
encoded here by hand from the field numbers of onnx/onnx.proto (wire format: varint tags,
length-delimited sub-messages). Used by the tests of perception/inference.py to build models
in memory, and by hand to make a placeholder model:

    .venv/bin/python tools/make_test_onnx.py out/affine.onnx --inputs 4 --outputs 2
"""

from __future__ import annotations

import argparse
import pathlib
import struct
from collections.abc import Sequence

import numpy as np

# onnx.TensorProto.DataType values.
ONNX_DTYPES = {
    np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3,
    np.dtype(np.uint16): 4, np.dtype(np.int16): 5, np.dtype(np.int32): 6,
    np.dtype(np.int64): 7, np.dtype(np.bool_): 9, np.dtype(np.float16): 10,
    np.dtype(np.float64): 11,
}
IR_VERSION = 8  # ONNX 1.10+: understood by every onnxruntime >= 1.10
DEFAULT_OPSET = 17

_VARINT, _LEN, _FIXED32 = 0, 2, 5


def _varint(value: int) -> bytes:
    # Negative int64 values are encoded as 10-byte two's complement, as protobuf does.
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _int(field: int, value: int) -> bytes:
    return _tag(field, _VARINT) + _varint(int(value))


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _tag(field, _LEN) + _varint(len(data)) + data


def _float(field: int, value: float) -> bytes:
    return _tag(field, _FIXED32) + struct.pack('<f', value)


def tensor_proto(name: str, array: np.ndarray) -> bytes:
    """TensorProto (initializer) holding `array` as raw little-endian data."""
    array = np.ascontiguousarray(array)
    if array.dtype not in ONNX_DTYPES:
        raise ValueError(f'tensor {name!r}: unsupported dtype {array.dtype}')
    body = b''.join(_int(1, d) for d in array.shape)          # dims
    body += _int(2, ONNX_DTYPES[array.dtype])                 # data_type
    body += _bytes(8, name)                                   # name
    body += _bytes(9, array.astype(array.dtype.newbyteorder('<'), copy=False).tobytes())
    return body


def value_info(name: str, dtype, shape: Sequence[int | str | None]) -> bytes:
    """ValueInfoProto: a graph input/output with element type and (symbolic) shape."""
    dims = b''
    for dim in shape:
        if isinstance(dim, str):
            dims += _bytes(1, _bytes(2, dim))                 # Dimension.dim_param
        elif dim is None:
            dims += _bytes(1, b'')                            # unknown dimension
        else:
            dims += _bytes(1, _int(1, dim))                   # Dimension.dim_value
    tensor_type = _int(1, ONNX_DTYPES[np.dtype(dtype)]) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def node_proto(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = '',
               **attributes: int | float | Sequence[int]) -> bytes:
    """NodeProto with INT, FLOAT or INTS attributes."""
    body = b''.join(_bytes(1, i) for i in inputs) + b''.join(_bytes(2, o) for o in outputs)
    body += _bytes(3, name or f'{op_type}_{outputs[0]}') + _bytes(4, op_type)
    for key, value in attributes.items():
        if isinstance(value, bool) or isinstance(value, int):
            attribute = _bytes(1, key) + _int(20, 2) + _int(3, int(value))
        elif isinstance(value, float):
            attribute = _bytes(1, key) + _int(20, 1) + _float(2, value)
        else:
            attribute = _bytes(1, key) + _int(20, 7) + b''.join(_int(8, v) for v in value)
        body += _bytes(5, attribute)
    return body


def model_proto(nodes: Sequence[bytes], inputs: Sequence[bytes], outputs: Sequence[bytes],
                initializers: Sequence[bytes] = (), *, graph_name: str = 'graph',
                opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ModelProto of one graph in the default ONNX domain."""
    graph = b''.join(_bytes(1, n) for n in nodes) + _bytes(2, graph_name)
    graph += b''.join(_bytes(5, t) for t in initializers)
    graph += b''.join(_bytes(11, i) for i in inputs) + b''.join(_bytes(12, o) for o in outputs)
    model = _int(1, IR_VERSION) + _bytes(2, 'robotaxi_stack/tools/make_test_onnx')
    model += _bytes(7, graph)
    model += _bytes(8, _bytes(1, '') + _int(2, opset))       # opset_import
    return model


def affine_model(in_features: int = 4, out_features: int = 2, *, seed: int = 0,
                 batch_dim: int | str = 'N', input_name: str = 'points',
                 output_name: str = 'scores') -> tuple[bytes, np.ndarray, np.ndarray]:
    """y = x @ W + b on float32 x of shape (batch_dim, in_features), plus a second output
    `<output_name>_max` = ReduceMax(y, axis 1) of shape (batch_dim,).

    Returns (model bytes, W (in, out), b (out,)) so a test can compute the expected output.
    """
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(in_features, out_features)).astype(np.float32)
    bias = rng.normal(size=out_features).astype(np.float32)
    nodes = [node_proto('MatMul', [input_name, 'W'], ['xw']),
             node_proto('Add', ['xw', 'b'], [output_name]),
             node_proto('ReduceMax', [output_name], [f'{output_name}_max'], axes=[1],
                        keepdims=0)]
    model = model_proto(
        nodes,
        [value_info(input_name, np.float32, (batch_dim, in_features))],
        [value_info(output_name, np.float32, (batch_dim, out_features)),
         value_info(f'{output_name}_max', np.float32, (batch_dim,))],
        [tensor_proto('W', weight), tensor_proto('b', bias)], opset=13)
    return model, weight, bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('path', type=pathlib.Path, help='output .onnx file')
    parser.add_argument('--inputs', type=int, default=4, help='input features')
    parser.add_argument('--outputs', type=int, default=2, help='output features')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    model, _, _ = affine_model(args.inputs, args.outputs, seed=args.seed)
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_bytes(model)
    print(f'wrote {args.path} ({len(model)} bytes)')


if __name__ == '__main__':
    main()
