"""sensor_msgs/PointCloud2 <-> numpy structured arrays without per-point Python work.

Two layers:

* A pure core (numpy only) that works on a cloud's layout description (`PointFieldSpec`,
  `CloudLayout`) and a bytes-like buffer: `fields_to_dtype`, `dtype_to_fields`,
  `points_from_buffer`, `points_to_buffer`, plus `make_points_dtype`, `xyz_view` and
  `finite_points_mask`.
* Thin message functions, `pointcloud2_to_array` and `array_to_pointcloud2`, which import
  sensor_msgs only when called, so the core stays importable without ROS.

Reading is zero-copy: the returned structured array is a view on `msg.data` whose dtype has the
message's explicit field offsets and `itemsize == point_step`, so padding inside a point and any
field order work; organised clouds with row padding (`row_step > width * point_step`) are a 2-D
view with strides `(row_step, point_step)`. The view is writable when the buffer is (an rclpy
message's `data` is an `array.array`): writing into it changes the message, and while the view
lives the message's buffer cannot be resized. `copy=True` gives an owned, packed array instead.

Writing copies once, straight into the message's array. For multi-megabyte clouds most of that
time is first-touch page faults on the message's fresh buffer (4 KiB pages): running the node
with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 backs it with huge pages and measured ~3x faster for
2M points (bench/pointcloud_conversion.py).

Shapes: a cloud with `height == 1` (unorganised, e.g. a spinning LiDAR scan) becomes shape
`(width,)`; any other height gives `(height, width)`. `array_to_pointcloud2` maps the shapes back
the same way, so a round trip keeps the shape.

The contract layout of /sensing/lidar/points (ARCHITECTURE.md section 3) is x, y, z [m, in
header.frame_id], intensity [sensor units] as float32, optionally ring (laser channel index,
uint16) and time (float32, s relative to header.stamp); `make_points_dtype` builds it.
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
import functools
from itertools import pairwise
from typing import Any, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; the core never imports ROS at run time
    from sensor_msgs.msg import PointCloud2

# sensor_msgs/PointField datatype constants (same values as the message definition).
INT8 = 1
UINT8 = 2
INT16 = 3
UINT16 = 4
INT32 = 5
UINT32 = 6
FLOAT32 = 7
FLOAT64 = 8

# Little-endian on the wire: big-endian clouds are rejected before these are used.
_DATATYPE_TO_DTYPE: dict[int, np.dtype] = {
    INT8: np.dtype('i1'),
    UINT8: np.dtype('u1'),
    INT16: np.dtype('<i2'),
    UINT16: np.dtype('<u2'),
    INT32: np.dtype('<i4'),
    UINT32: np.dtype('<u4'),
    FLOAT32: np.dtype('<f4'),
    FLOAT64: np.dtype('<f8'),
}
_KIND_SIZE_TO_DATATYPE = {(dt.kind, dt.itemsize): code for code, dt in _DATATYPE_TO_DTYPE.items()}

# Contract field names and their types; everything else goes through `extra`.
CONTRACT_FIELD_DTYPES: dict[str, np.dtype] = {
    'x': np.dtype('<f4'),
    'y': np.dtype('<f4'),
    'z': np.dtype('<f4'),
    'intensity': np.dtype('<f4'),
    'ring': np.dtype('<u2'),
    'time': np.dtype('<f4'),
}

_XYZ = ('x', 'y', 'z')


class PointCloudError(ValueError):
    """A point cloud or points array that cannot be converted; the message names the cause."""


class BigEndianCloudError(PointCloudError):
    """The cloud's data is big-endian (`is_bigendian` is true); only little-endian is read."""


class TruncatedCloudError(PointCloudError):
    """The data buffer or the row step is too short for the declared width/height/point step."""


class UnknownDatatypeError(PointCloudError):
    """A field's datatype is not one of the PointField constants INT8..FLOAT64."""


class FieldLayoutError(PointCloudError):
    """Fields overlap, run past point_step, repeat a name, or are otherwise malformed."""


class PointsDtypeError(PointCloudError):
    """A points array's dtype cannot be expressed as PointCloud2 fields, or lacks a field."""


@dataclass(frozen=True)
class PointFieldSpec:
    """One field of a point: like sensor_msgs/PointField, without ROS.

    offset is in bytes from the start of the point; datatype is a PointField constant;
    count > 1 makes the field a fixed-length vector (a numpy subarray of shape (count,)).
    """

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True)
class CloudLayout:
    """Everything of a PointCloud2 but the header and the data buffer.

    point_step and row_step are in bytes; width and height count points.
    """

    fields: tuple[PointFieldSpec, ...]
    point_step: int
    row_step: int
    width: int
    height: int
    is_bigendian: bool = False
    is_dense: bool = True


def as_field_spec(field: Any) -> PointFieldSpec:
    """Turn a (name, offset, datatype[, count]) tuple, a PointField or a spec into a spec.

    Raises FieldLayoutError for a bad name/offset/count, UnknownDatatypeError for a bad
    datatype.
    """
    if isinstance(field, PointFieldSpec):
        spec = field
    elif isinstance(field, (tuple, list)):
        if len(field) not in (3, 4):
            raise FieldLayoutError(
                f'field tuple must be (name, offset, datatype[, count]), got {field!r}')
        spec = PointFieldSpec(*field)
    else:
        try:
            spec = PointFieldSpec(field.name, field.offset, field.datatype, field.count)
        except AttributeError as exc:
            raise FieldLayoutError(
                f'field must be a tuple, PointFieldSpec or PointField, got {field!r}') from exc
    if not isinstance(spec.name, str) or not spec.name:
        raise FieldLayoutError(f'field name must be a non-empty string, got {spec.name!r}')
    if not _is_int(spec.offset) or spec.offset < 0:
        raise FieldLayoutError(
            f'field {spec.name!r} offset must be an integer >= 0, got {spec.offset!r}')
    if not _is_int(spec.datatype) or spec.datatype not in _DATATYPE_TO_DTYPE:
        raise UnknownDatatypeError(
            f'field {spec.name!r} has unknown datatype {spec.datatype!r} '
            f'(expected one of {sorted(_DATATYPE_TO_DTYPE)})')
    if not _is_int(spec.count) or spec.count < 1:
        raise FieldLayoutError(
            f'field {spec.name!r} count must be an integer >= 1, got {spec.count!r}')
    return PointFieldSpec(spec.name, int(spec.offset), int(spec.datatype), int(spec.count))


def fields_to_dtype(fields: Iterable[Any], point_step: int) -> np.dtype:
    """Numpy structured dtype for the given fields, with explicit offsets and itemsize.

    fields: (name, offset, datatype[, count]) tuples, PointFieldSpec or PointField objects,
    in any order; point_step [bytes] becomes the dtype's itemsize, so padding is kept.
    Raises FieldLayoutError for no fields, duplicate names, overlapping fields or fields that
    end past point_step; UnknownDatatypeError for a bad datatype.
    """
    key = tuple(_field_key(f) for f in fields)
    try:
        hash((key, point_step))
    except TypeError:  # e.g. a list as a name: the uncached path names the bad value
        return _build_dtype(key, point_step)
    return _cached_dtype(key, point_step)


def _field_key(field: Any) -> tuple:
    """(name, offset, datatype, count) of any accepted field form, unvalidated, cheap."""
    if isinstance(field, tuple) and len(field) == 4:
        return field
    if isinstance(field, (tuple, list)):
        return tuple(field) if len(field) != 3 else (*field, 1)
    try:  # PointFieldSpec and sensor_msgs/PointField: reading four attributes
        return (field.name, field.offset, field.datatype, field.count)
    except AttributeError:
        as_field_spec(field)  # raises, naming the bad value
        raise


# A node sees one or two layouts; caching skips validation and dtype construction per message.
@functools.lru_cache(maxsize=64)
def _cached_dtype(key: tuple, point_step: int) -> np.dtype:
    return _build_dtype(key, point_step)


def _build_dtype(key: tuple, point_step: int) -> np.dtype:
    specs = [as_field_spec(f) for f in key]
    if not specs:
        raise FieldLayoutError('cloud has no fields')
    if not _is_int(point_step) or point_step < 1:
        raise FieldLayoutError(f'point_step must be an integer >= 1, got {point_step!r}')
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise FieldLayoutError(f'duplicate field names {duplicates}')
    formats: list[Any] = []
    spans = []
    for spec in specs:
        base = _DATATYPE_TO_DTYPE[spec.datatype]
        end = spec.offset + base.itemsize * spec.count
        if end > point_step:
            raise FieldLayoutError(
                f'field {spec.name!r} (offset {spec.offset}, {spec.count} x {base.itemsize} '
                f'bytes) ends at byte {end}, past point_step {point_step}')
        spans.append((spec.offset, end, spec.name))
        formats.append(base if spec.count == 1 else (base, (spec.count,)))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in pairwise(spans):
        if start_b < end_a:
            raise FieldLayoutError(
                f'field {name_b!r} at offset {start_b} overlaps field {name_a!r} '
                f'which ends at byte {end_a}')
    return np.dtype({'names': names, 'formats': formats,
                     'offsets': [s.offset for s in specs], 'itemsize': int(point_step)})


def dtype_to_fields(dtype: np.dtype) -> tuple[PointFieldSpec, ...]:
    """PointCloud2 fields (in the dtype's field order) for a structured dtype.

    Scalar fields map to count 1, 1-D subarray fields to count = length. Byte order is not
    checked here (see `points_to_buffer`). Raises PointsDtypeError for a non-structured dtype,
    nested or multi-dimensional fields, or a base type PointCloud2 cannot carry (bool, int64,
    float16, complex, strings, objects).
    """
    dtype = np.dtype(dtype)
    if dtype.names is None:
        raise PointsDtypeError(f'points must be a structured array, got dtype {dtype}')
    if not dtype.names:
        raise PointsDtypeError('points dtype has no fields')
    specs = []
    for name in dtype.names:
        field_dtype, offset = _fields_of(dtype)[name]
        count = 1
        if field_dtype.subdtype is not None:
            field_dtype, shape = field_dtype.subdtype
            if len(shape) != 1 or shape[0] < 1:
                raise PointsDtypeError(
                    f'field {name!r} has subarray shape {shape}; only 1-D (count,) with '
                    f'count >= 1 is supported')
            count = int(shape[0])
        key = (field_dtype.kind, field_dtype.itemsize)
        if field_dtype.names is not None or key not in _KIND_SIZE_TO_DATATYPE:
            raise PointsDtypeError(
                f'field {name!r} has dtype {field_dtype}, which PointCloud2 cannot carry '
                f'(int8/16/32, uint8/16/32, float32/64)')
        specs.append(PointFieldSpec(name, int(offset), _KIND_SIZE_TO_DATATYPE[key], count))
    return tuple(specs)


def points_from_buffer(data: Any, layout: CloudLayout, copy: bool = False) -> np.ndarray:
    """Structured array of a cloud's points: a zero-copy view of data, or a packed copy.

    data: bytes-like (array.array, bytes, bytearray, memoryview, numpy array), C-contiguous,
    at least `layout.row_step * layout.height` bytes; extra trailing bytes are ignored.
    Returns shape (width,) when height == 1, else (height, width). With copy=False (default)
    nothing is copied: the result shares memory with `data`, with strides
    (row_step, point_step). copy=True returns an owned, writable, C-contiguous array (row
    padding dropped), copied byte-wise at memcpy speed.
    Raises BigEndianCloudError, TruncatedCloudError, UnknownDatatypeError, FieldLayoutError.
    """
    dtype = fields_to_dtype(layout.fields, layout.point_step)
    return _points_view(data, dtype, layout.width, layout.height, layout.point_step,
                        layout.row_step, layout.is_bigendian, copy)


def _points_view(data: Any, dtype: np.dtype, width: int, height: int, point_step: int,
                 row_step: int, is_bigendian: bool, copy: bool) -> np.ndarray:
    if is_bigendian:
        raise BigEndianCloudError('cloud is big-endian (is_bigendian=True); only little-endian '
                                  'clouds are supported')
    for key, value in (('width', width), ('height', height), ('row_step', row_step)):
        if not _is_int(value) or value < 0:
            raise FieldLayoutError(f'{key} must be an integer >= 0, got {value!r}')
    width, height, point_step, row_step = int(width), int(height), int(point_step), \
        int(row_step)
    if row_step < width * point_step:
        raise TruncatedCloudError(
            f'row_step {row_step} is less than width * point_step = {width} * {point_step} '
            f'= {width * point_step}')
    buffer = _contiguous_buffer(data)
    needed = row_step * height
    if buffer.nbytes < needed:
        raise TruncatedCloudError(
            f'data has {buffer.nbytes} bytes, less than row_step * height = '
            f'{row_step} * {height} = {needed}')
    if copy:
        # Copy rows as plain bytes (numpy copies padded structured dtypes field by field,
        # several times slower), then reinterpret each packed row as `width` points.
        rows = np.ndarray((height, width * point_step), dtype=np.uint8, buffer=buffer,
                          strides=(row_step, 1))
        points = np.array(rows).view(dtype)
        return points.reshape(width) if height == 1 else points
    if height == 1:
        return np.ndarray((width,), dtype=dtype, buffer=buffer)
    return np.ndarray((height, width), dtype=dtype, buffer=buffer,
                      strides=(row_step, point_step))


def points_to_buffer(points: np.ndarray,
                     is_dense: bool | None = None) -> tuple[CloudLayout, np.ndarray]:
    """Layout and a C-contiguous little-endian array whose raw bytes are the cloud's data.

    points: structured array of shape (N,) (-> height 1, width N) or (H, W). The returned
    array is `points` itself when it is already C-contiguous with little-endian fields;
    otherwise a packed copy (no per-point Python work either way). point_step is the dtype's
    itemsize, so its padding is kept; row_step is width * point_step.
    is_dense: None computes it (no non-finite x/y/z in any point); pass a bool to skip the scan.
    Raises PointsDtypeError, FieldLayoutError.
    """
    if not isinstance(points, np.ndarray):
        raise PointsDtypeError(f'points must be a numpy structured array, got {type(points)}')
    if points.ndim not in (1, 2):
        raise PointsDtypeError(f'points must have shape (N,) or (H, W), got {points.shape}')
    fields = dtype_to_fields(points.dtype)
    itemsize = points.dtype.itemsize
    # Validates overlaps (numpy allows overlapping fields in a view) and yields the
    # little-endian wire dtype; equal to points.dtype in the usual native-little-endian case.
    wire_dtype = fields_to_dtype(fields, itemsize)
    if points.dtype != wire_dtype:
        points = points.astype(wire_dtype)
    contiguous = points if points.flags.c_contiguous else _packed_copy(points)
    height, width = (1, points.shape[0]) if points.ndim == 1 else points.shape
    if is_dense is None:
        is_dense = _all_finite(contiguous)
    layout = CloudLayout(fields=fields, point_step=itemsize, row_step=width * itemsize,
                         width=int(width), height=int(height), is_bigendian=False,
                         is_dense=bool(is_dense))
    return layout, contiguous


def make_points_dtype(fields: Sequence[str] = ('x', 'y', 'z', 'intensity'),
                      extra: Sequence[tuple] = (), align: bool = True) -> np.dtype:
    """Structured dtype for the contract layout, optionally with more fields.

    fields: names from CONTRACT_FIELD_DTYPES (x, y, z, intensity, ring, time), in order.
    extra: further (name, dtype) or (name, dtype, count) entries appended after them.
    align: place each field at a multiple of its element size and round itemsize up to the
    largest one (C struct layout, e.g. x,y,z,intensity,ring,time -> ring at 16, time at 20,
    itemsize 24); False packs fields back to back (time at 18, itemsize 22).
    Raises PointsDtypeError for an unknown contract name, a duplicate name or a dtype that
    PointCloud2 cannot carry.
    """
    entries: list[tuple[str, np.dtype, int]] = []
    for name in fields:
        if name not in CONTRACT_FIELD_DTYPES:
            raise PointsDtypeError(
                f'unknown contract field {name!r} (known: {sorted(CONTRACT_FIELD_DTYPES)}); '
                f'pass other fields through extra=')
        entries.append((name, CONTRACT_FIELD_DTYPES[name], 1))
    for item in extra:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise PointsDtypeError(
                f'extra entries must be (name, dtype[, count]), got {item!r}')
        if not isinstance(item[0], str) or not item[0]:
            raise PointsDtypeError(f'extra field name must be a non-empty string, got {item[0]!r}')
        count = item[2] if len(item) == 3 else 1
        if not _is_int(count) or count < 1:
            raise PointsDtypeError(f'extra field {item[0]!r} count must be >= 1, got {count!r}')
        try:
            base = np.dtype(item[1])
        except TypeError as exc:
            raise PointsDtypeError(f'extra field {item[0]!r} has invalid dtype {item[1]!r}') \
                from exc
        entries.append((item[0], base.newbyteorder('<'), int(count)))
    offsets = []
    offset = 0
    max_align = 1
    for _, base, count in entries:
        if align:
            offset = -(-offset // base.itemsize) * base.itemsize
            max_align = max(max_align, base.itemsize)
        offsets.append(offset)
        offset += base.itemsize * count
    names = [e[0] for e in entries]
    if not names:
        raise PointsDtypeError('make_points_dtype needs at least one field')
    if len(set(names)) != len(names):
        raise PointsDtypeError(f'duplicate field names in {names}')
    dtype = np.dtype({
        'names': names,
        'formats': [e[1] if e[2] == 1 else (e[1], (e[2],)) for e in entries],
        'offsets': offsets,
        'itemsize': -(-offset // max_align) * max_align,
    })
    dtype_to_fields(dtype)  # rejects base types PointCloud2 cannot carry
    return dtype


def xyz_view(points: np.ndarray) -> np.ndarray:
    """Point positions as float32, shape points.shape + (3,): (N, 3), or (H, W, 3) organised.

    A view (no copy, writes go to `points`) when x, y, z are native float32 fields at
    consecutive offsets (x, x+4, x+8), as in the contract layout and every common driver
    layout. Otherwise a float32 copy is returned: float64 or integer coordinates, fields that
    are apart or out of order, or a non-native byte order. Raises PointsDtypeError when points
    is not structured or x, y or z is missing or a vector (count > 1).
    """
    offsets = _xyz_offsets(points)
    fields = _fields_of(points.dtype)
    if (all(fields[n][0] == np.dtype(np.float32) for n in _XYZ)
            and offsets[1] == offsets[0] + 4 and offsets[2] == offsets[0] + 8):
        view_dtype = np.dtype({'names': ['xyz'], 'formats': [(np.float32, (3,))],
                               'offsets': [offsets[0]], 'itemsize': points.dtype.itemsize})
        return points.view(view_dtype)['xyz']
    return np.stack([points[n] for n in _XYZ], axis=-1).astype(np.float32, copy=False)


def finite_points_mask(points: np.ndarray,
                       fields: Sequence[str] = _XYZ) -> np.ndarray:
    """Boolean mask of shape points.shape: True where every named field is finite.

    Use it on clouds with is_dense == False, whose invalid returns are NaN (or inf) in x/y/z:
    `points[finite_points_mask(points)]`. Integer fields are always finite; vector fields
    (count > 1) must be finite in every element. Raises PointsDtypeError for a missing field.
    """
    if not isinstance(points, np.ndarray) or points.dtype.names is None:
        raise PointsDtypeError('points must be a numpy structured array')
    mask = np.ones(points.shape, dtype=bool)
    for name in fields:
        if name not in points.dtype.names:
            raise PointsDtypeError(
                f'points have no field {name!r} (fields: {list(points.dtype.names)})')
        column = points[name]
        if column.dtype.kind not in 'fc':
            continue
        finite = np.isfinite(column)
        if finite.ndim > mask.ndim:
            finite = finite.all(axis=tuple(range(mask.ndim, finite.ndim)))
        mask &= finite
    return mask


def layout_of_pointcloud2(msg: PointCloud2) -> CloudLayout:
    """CloudLayout of a sensor_msgs/PointCloud2 message (header and data excluded)."""
    return CloudLayout(
        fields=tuple(as_field_spec(f) for f in msg.fields), point_step=msg.point_step,
        row_step=msg.row_step, width=msg.width, height=msg.height,
        is_bigendian=bool(msg.is_bigendian), is_dense=bool(msg.is_dense))


def pointcloud2_to_array(msg: PointCloud2, copy: bool = False) -> np.ndarray:
    """Structured array of a sensor_msgs/PointCloud2's points, zero-copy by default.

    Shape (width,) for height == 1, else (height, width); field names, types and offsets as
    in msg.fields. copy=False: a view on msg.data (see the module docstring); copy=True: an
    owned packed copy, for keeping points beyond the message or writing to them.
    Raises the PointCloudError subclasses of `points_from_buffer`.
    """
    dtype = fields_to_dtype(msg.fields, msg.point_step)
    return _points_view(msg.data, dtype, msg.width, msg.height, msg.point_step, msg.row_step,
                        msg.is_bigendian, copy)


def array_to_pointcloud2(points: np.ndarray, frame_id: str, stamp: Any,
                         is_dense: bool | None = None) -> PointCloud2:
    """sensor_msgs/PointCloud2 holding `points` (structured, shape (N,) or (H, W)).

    frame_id: the frame x/y/z are expressed in; stamp: builtin_interfaces/Time, or anything
    with `to_msg()` (rclpy.time.Time). Fields come from the dtype, including offsets and
    padding (point_step = itemsize). The data is copied once, straight into the message's
    array (assigning bytes costs a second copy, a memoryview makes rclpy iterate).
    is_dense: None scans x/y/z for non-finite values; pass a bool to skip the scan.
    Raises PointsDtypeError / FieldLayoutError for a dtype PointCloud2 cannot carry.
    """
    from sensor_msgs.msg import PointCloud2, PointField

    layout, contiguous = points_to_buffer(points, is_dense=is_dense)
    msg = PointCloud2()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp.to_msg() if hasattr(stamp, 'to_msg') else stamp
    msg.height = layout.height
    msg.width = layout.width
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in layout.fields]
    msg.is_bigendian = False
    msg.point_step = layout.point_step
    msg.row_step = layout.row_step
    msg.is_dense = layout.is_dense
    fill_uint8_sequence(msg, 'data', contiguous)
    return msg


def fill_uint8_sequence(msg: Any, attribute: str, contiguous: np.ndarray) -> None:
    """Set a message's uint8[] field to the raw bytes of a C-contiguous array, copying once.

    rclpy stores uint8[] as array.array('B'): extending a fresh message's empty array in place
    is a single memcpy, where `msg.data = arr.tobytes()` copies twice (tobytes, then the
    setter's array.array) and a memoryview is iterated element by element.
    """
    raw = contiguous.reshape(-1).view(np.uint8)
    current = getattr(msg, attribute)
    if isinstance(current, array.array) and current.typecode == 'B' and len(current) == 0:
        current.frombytes(raw.data)
    else:
        setattr(msg, attribute, raw.tobytes())


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _fields_of(dtype: np.dtype) -> Mapping[str, tuple[np.dtype, int]]:
    """name -> (field dtype, byte offset) of a structured dtype; empty for plain dtypes."""
    return {name: (value[0], int(value[1])) for name, value in (dtype.fields or {}).items()}


def _contiguous_buffer(data: Any) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise PointCloudError(
            f'data must be a bytes-like buffer, got {type(data).__name__}') from exc
    if not view.c_contiguous:
        raise PointCloudError('data buffer is not C-contiguous')
    # A flat byte view so nbytes and numpy's buffer offsets are in bytes whatever the format.
    return view.cast('B') if view.format != 'B' or view.ndim != 1 else view


def _xyz_offsets(points: np.ndarray) -> tuple[int, int, int]:
    if not isinstance(points, np.ndarray) or points.dtype.names is None:
        raise PointsDtypeError('points must be a numpy structured array')
    fields = _fields_of(points.dtype)
    for name in _XYZ:
        if name not in fields:
            raise PointsDtypeError(
                f'points have no field {name!r} (fields: {list(points.dtype.names)})')
        if fields[name][0].subdtype is not None:
            raise PointsDtypeError(
                f'field {name!r} is a vector ({fields[name][0]}); x, y, z must be scalars')
    return fields['x'][1], fields['y'][1], fields['z'][1]


def _packed_copy(points: np.ndarray) -> np.ndarray:
    """C-contiguous copy of a structured array, copied as raw bytes per point.

    numpy copies structured dtypes with padding field by field; viewing each point as
    `itemsize` bytes first makes it a plain byte copy, several times faster.
    """
    itemsize = points.dtype.itemsize
    raw_dtype = np.dtype({'names': ['raw'], 'formats': [(np.uint8, (itemsize,))],
                          'offsets': [0], 'itemsize': itemsize})
    packed = np.ascontiguousarray(points.view(raw_dtype)['raw'])
    return packed.view(points.dtype)[..., 0]


# Points per chunk of the density scan: about 512 KiB, so that the x, y and z passes over a
# chunk after the first read from cache rather than memory.
_SCAN_CHUNK_BYTES = 1 << 19


def _all_finite(points: np.ndarray) -> bool:
    """True when no point has a non-finite x, y or z (the PointCloud2 is_dense meaning).

    points: C-contiguous structured array.
    """
    fields = _fields_of(points.dtype)
    names = [n for n in _XYZ if n in fields and fields[n][0].kind in 'fc']
    if not names:
        return True
    flat = points.reshape(-1)
    chunk = max(1, _SCAN_CHUNK_BYTES // max(1, points.dtype.itemsize))
    for start in range(0, flat.shape[0], chunk):
        part = flat[start:start + chunk]
        for name in names:
            if not np.isfinite(part[name]).all():
                return False
    return True


__all__ = [
    'INT8', 'UINT8', 'INT16', 'UINT16', 'INT32', 'UINT32', 'FLOAT32', 'FLOAT64',
    'CONTRACT_FIELD_DTYPES', 'PointCloudError', 'BigEndianCloudError', 'TruncatedCloudError',
    'UnknownDatatypeError', 'FieldLayoutError', 'PointsDtypeError', 'PointFieldSpec',
    'CloudLayout', 'as_field_spec', 'fields_to_dtype', 'dtype_to_fields',
    'points_from_buffer', 'points_to_buffer', 'make_points_dtype', 'xyz_view',
    'finite_points_mask', 'layout_of_pointcloud2', 'pointcloud2_to_array',
    'array_to_pointcloud2', 'fill_uint8_sequence',
]
