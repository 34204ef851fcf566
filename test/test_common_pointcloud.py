"""Tests of robotaxi_stack.common.pointcloud: PointCloud2 <-> numpy without per-point work."""

import array
import struct

from builtin_interfaces.msg import Time
from hypothesis import given, HealthCheck, settings, strategies as st
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
import rclpy.time
from robotaxi_stack.common import pointcloud as pc
from robotaxi_stack.common.pointcloud import (
    array_to_pointcloud2, BigEndianCloudError, CloudLayout, dtype_to_fields, FieldLayoutError,
    fields_to_dtype, finite_points_mask, make_points_dtype, PointCloudError, PointFieldSpec,
    pointcloud2_to_array, points_from_buffer, points_to_buffer, PointsDtypeError,
    TruncatedCloudError, UnknownDatatypeError, xyz_view)
from sensor_msgs.msg import PointCloud2, PointField

_SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
_NUMPY_TYPE = {1: 'i1', 2: 'u1', 3: '<i2', 4: '<u2', 5: '<i4', 6: '<u4', 7: '<f4', 8: '<f8'}
# The independent per-point reference decoder reads raw bits (unsigned ints of the field's
# size): decoding floats through Python floats would quieten signalling NaNs.
_BITS_CHAR = {1: 'B', 2: 'H', 4: 'I', 8: 'Q'}

CONTRACT_FIELDS = ('x', 'y', 'z', 'intensity', 'ring', 'time')


def _bits(column):
    """Integer view of a numeric column, so NaN payloads compare bit for bit."""
    return column.view(np.dtype(f'<u{column.dtype.itemsize}'))


def _contract_points(n, seed=0):
    rng = np.random.default_rng(seed)
    points = np.zeros(n, make_points_dtype(CONTRACT_FIELDS))
    for name in ('x', 'y', 'z', 'intensity', 'time'):
        points[name] = rng.normal(size=n).astype(np.float32)
    points['ring'] = rng.integers(0, 64, n)
    return points


def _message(fields, point_step, width, height, row_step, data, is_bigendian=False):
    msg = PointCloud2()
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields]
    msg.point_step = point_step
    msg.width = width
    msg.height = height
    msg.row_step = row_step
    msg.is_bigendian = is_bigendian
    msg.data = bytes(data)
    return msg


def _reference_field(data, layout, spec, row, col):
    fmt = '<' + _BITS_CHAR[_SIZE[spec.datatype]] * spec.count
    start = row * layout.row_step + col * layout.point_step + spec.offset
    return struct.unpack_from(fmt, data, start)


def test_datatype_constants_match_pointfield():
    for name in ('INT8', 'UINT8', 'INT16', 'UINT16', 'INT32', 'UINT32', 'FLOAT32', 'FLOAT64'):
        assert getattr(pc, name) == getattr(PointField, name)


def test_fields_to_dtype_keeps_offsets_padding_and_order():
    dtype = fields_to_dtype([('intensity', 16, 7), ('x', 0, 7, 1), ('y', 4, 7), ('z', 8, 7)],
                            point_step=32)
    assert dtype.itemsize == 32
    assert list(dtype.names) == ['intensity', 'x', 'y', 'z']
    assert dtype.fields['intensity'][1] == 16
    assert dtype.fields['z'][0] == np.dtype('<f4')


def test_fields_to_dtype_accepts_pointfield_messages_and_vector_fields():
    fields = [PointField(name='x', offset=0, datatype=PointField.FLOAT64, count=1),
              PointField(name='rgb', offset=8, datatype=PointField.UINT8, count=3)]
    dtype = fields_to_dtype(fields, point_step=12)
    assert dtype.fields['x'][0] == np.dtype('<f8')
    assert dtype.fields['rgb'][0].subdtype == (np.dtype('u1'), (3,))


@pytest.mark.parametrize('fields, point_step, error, match', [
    ([('x', 0, 9)], 4, UnknownDatatypeError, 'unknown datatype 9'),
    ([('x', 0, 0)], 4, UnknownDatatypeError, 'unknown datatype 0'),
    ([('x', 0, 'float32')], 4, UnknownDatatypeError, "'float32'"),
    ([('x', 0, 7), ('y', 2, 7)], 8, FieldLayoutError, "'y' at offset 2 overlaps field 'x'"),
    ([('x', 0, 7), ('y', 4, 8)], 8, FieldLayoutError, 'ends at byte 12, past point_step 8'),
    ([('v', 0, 7, 3)], 8, FieldLayoutError, 'past point_step 8'),
    ([('x', 0, 7), ('x', 4, 7)], 8, FieldLayoutError, "duplicate field names \\['x'\\]"),
    ([('', 0, 7)], 4, FieldLayoutError, 'non-empty string'),
    ([('x', -4, 7)], 4, FieldLayoutError, 'offset must be an integer >= 0, got -4'),
    ([('x', 0, 7, 0)], 4, FieldLayoutError, 'count must be an integer >= 1, got 0'),
    ([], 4, FieldLayoutError, 'no fields'),
    ([('x', 0, 7)], 0, FieldLayoutError, 'point_step must be an integer >= 1, got 0'),
    ([('x', 0)], 4, FieldLayoutError, 'tuple must be'),
    (['x'], 4, FieldLayoutError, 'must be a tuple, PointFieldSpec or PointField'),
])
def test_fields_to_dtype_rejects_bad_field_layouts(fields, point_step, error, match):
    with pytest.raises(error, match=match):
        fields_to_dtype(fields, point_step)


def test_point_cloud_errors_are_value_errors():
    for error in (BigEndianCloudError, TruncatedCloudError, UnknownDatatypeError,
                  FieldLayoutError, PointsDtypeError):
        assert issubclass(error, PointCloudError)
        assert issubclass(error, ValueError)


def test_dtype_to_fields_maps_types_offsets_and_counts():
    dtype = np.dtype({'names': ['a', 'b', 'c'], 'formats': ['i1', ('<u2', (4,)), '<f8'],
                      'offsets': [0, 2, 16], 'itemsize': 32})
    assert dtype_to_fields(dtype) == (PointFieldSpec('a', 0, pc.INT8, 1),
                                      PointFieldSpec('b', 2, pc.UINT16, 4),
                                      PointFieldSpec('c', 16, pc.FLOAT64, 1))


@pytest.mark.parametrize('dtype, match', [
    (np.dtype('<f4'), 'structured'),
    (np.dtype([('flag', '?')]), "'flag' has dtype bool"),
    (np.dtype([('stamp', '<i8')]), "'stamp' has dtype int64"),
    (np.dtype([('m', '<f4', (2, 2))]), 'subarray shape'),
    (np.dtype([('inner', [('a', '<f4')])]), "'inner'"),
])
def test_dtype_to_fields_rejects_dtypes_pointcloud2_cannot_carry(dtype, match):
    with pytest.raises(PointsDtypeError, match=match):
        dtype_to_fields(dtype)


def test_points_from_buffer_reads_padded_points():
    # x, y, z float32, 4 pad bytes, intensity float32 at 16: the classic PCL XYZI layout.
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7), PointFieldSpec('y', 4, 7),
                                 PointFieldSpec('z', 8, 7), PointFieldSpec('intensity', 16, 7)),
                         point_step=32, row_step=64, width=2, height=1)
    data = bytearray(64)
    struct.pack_into('<fff', data, 0, 1.0, 2.0, 3.0)
    struct.pack_into('<f', data, 16, 7.5)
    struct.pack_into('<fff', data, 32, -1.0, -2.0, -3.0)
    struct.pack_into('<f', data, 48, 0.25)
    points = points_from_buffer(data, layout)
    assert points.shape == (2,)
    np.testing.assert_array_equal(points['x'], [1.0, -1.0])
    np.testing.assert_array_equal(points['z'], [3.0, -3.0])
    np.testing.assert_array_equal(points['intensity'], [7.5, 0.25])


def test_points_from_buffer_views_organised_cloud_with_row_padding():
    fields = (PointFieldSpec('x', 0, 7), PointFieldSpec('ring', 4, 4))
    layout = CloudLayout(fields=fields, point_step=8, row_step=8 * 3 + 5, width=3, height=2)
    data = bytearray(layout.row_step * 2)
    for row in range(2):
        for col in range(3):
            struct.pack_into('<fH', data, row * layout.row_step + col * 8, row * 10 + col, row)
    points = points_from_buffer(data, layout)
    assert points.shape == (2, 3)
    assert points.strides == (29, 8)
    np.testing.assert_array_equal(points['x'], [[0, 1, 2], [10, 11, 12]])
    np.testing.assert_array_equal(points['ring'], [[0, 0, 0], [1, 1, 1]])
    assert np.shares_memory(points, np.frombuffer(data, np.uint8))


def test_points_from_buffer_ignores_extra_trailing_bytes():
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=4,
                         width=1, height=1)
    points = points_from_buffer(struct.pack('<ff', 5.0, 99.0), layout)
    np.testing.assert_array_equal(points['x'], [5.0])


def test_points_from_buffer_accepts_numpy_and_read_only_buffers():
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=8,
                         width=2, height=1)
    source = np.array([1.5, 2.5], np.float32)
    from_numpy = points_from_buffer(source, layout)
    np.testing.assert_array_equal(from_numpy['x'], source)
    assert np.shares_memory(from_numpy, source)
    from_bytes = points_from_buffer(source.tobytes(), layout)
    assert not from_bytes.flags.writeable


@pytest.mark.parametrize('width, height, expected_shape', [(0, 1, (0,)), (4, 0, (0, 4)),
                                                           (0, 3, (3, 0))])
def test_points_from_buffer_handles_empty_clouds(width, height, expected_shape):
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=4 * width,
                         width=width, height=height)
    assert points_from_buffer(b'', layout).shape == expected_shape


def test_points_from_buffer_rejects_truncated_data():
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=40,
                         width=10, height=2)
    with pytest.raises(TruncatedCloudError, match='data has 79 bytes, less than row_step '
                                                  r'\* height = 40 \* 2 = 80'):
        points_from_buffer(bytes(79), layout)


def test_points_from_buffer_rejects_row_step_shorter_than_a_row():
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=36,
                         width=10, height=1)
    with pytest.raises(TruncatedCloudError, match='row_step 36 is less than width'):
        points_from_buffer(bytes(400), layout)


def test_points_from_buffer_rejects_big_endian_clouds():
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=4,
                         width=1, height=1, is_bigendian=True)
    with pytest.raises(BigEndianCloudError, match='big-endian'):
        points_from_buffer(bytes(4), layout)


def test_points_from_buffer_rejects_negative_sizes_and_non_buffers():
    fields = (PointFieldSpec('x', 0, 7),)
    with pytest.raises(FieldLayoutError, match='width must be an integer >= 0, got -1'):
        points_from_buffer(b'', CloudLayout(fields, 4, 4, -1, 1))
    with pytest.raises(PointCloudError, match='bytes-like buffer, got list'):
        points_from_buffer([0, 0, 0, 0], CloudLayout(fields, 4, 4, 1, 1))
    strided = memoryview(bytes(16))[::2]
    with pytest.raises(PointCloudError, match='not C-contiguous'):
        points_from_buffer(strided, CloudLayout(fields, 4, 4, 1, 1))


def test_pointcloud2_to_array_is_a_zero_copy_view_of_msg_data():
    msg = array_to_pointcloud2(_contract_points(50), 'lidar_top', Time(sec=1))
    points = pointcloud2_to_array(msg)
    assert np.shares_memory(points, np.frombuffer(msg.data, np.uint8))
    points['x'][3] = 123.0
    assert struct.unpack_from('<f', msg.data, 3 * msg.point_step)[0] == 123.0


def test_pointcloud2_to_array_zero_copy_for_organised_padded_message():
    data = np.arange(2 * 40, dtype=np.uint8).tobytes()
    msg = _message([('a', 0, 2, 1), ('b', 2, 3, 1)], point_step=4, width=9, height=2,
                   row_step=40, data=data)
    points = pointcloud2_to_array(msg)
    assert points.shape == (2, 9)
    assert np.shares_memory(points, np.frombuffer(msg.data, np.uint8))
    assert points['a'][1, 0] == 40 and points['a'][1, 8] == 72
    assert points['b'][0, 1] == struct.unpack_from('<h', data, 6)[0]


def test_pointcloud2_to_array_copy_returns_owned_packed_points():
    data = np.arange(2 * 40, dtype=np.uint8).tobytes()
    msg = _message([('a', 0, 2, 1), ('b', 2, 3, 1)], point_step=4, width=9, height=2,
                   row_step=40, data=data)
    view = pointcloud2_to_array(msg)
    owned = pointcloud2_to_array(msg, copy=True)
    assert owned.shape == (2, 9) and owned.dtype == view.dtype
    assert owned.flags.c_contiguous and owned.flags.writeable
    assert not np.shares_memory(owned, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(owned, view)
    owned['a'][0, 0] = 250
    assert msg.data[0] == 0


def test_points_from_buffer_copy_of_read_only_bytes_is_writable():
    layout = CloudLayout(fields=(PointFieldSpec('x', 0, 7),), point_step=4, row_step=8,
                         width=2, height=1)
    points = points_from_buffer(struct.pack('<ff', 1.0, 2.0), layout, copy=True)
    assert points.shape == (2,) and points.flags.writeable
    points['x'] += 1.0
    np.testing.assert_array_equal(points['x'], [2.0, 3.0])


def test_fields_to_dtype_reuses_cached_dtype_and_still_raises_for_bad_layouts():
    fields = [('x', 0, 7), ('y', 4, 7)]
    assert fields_to_dtype(fields, 8) is fields_to_dtype(
        [PointField(name='x', offset=0, datatype=7, count=1), PointFieldSpec('y', 4, 7)], 8)
    for _ in range(2):
        with pytest.raises(FieldLayoutError, match='overlaps'):
            fields_to_dtype([('x', 0, 7), ('y', 2, 7)], 8)
    with pytest.raises(FieldLayoutError, match=r"non-empty string, got \['x'\]"):
        fields_to_dtype([(['x'], 0, 7)], 4)


def test_pointcloud2_to_array_rejects_bad_messages_with_typed_errors():
    good = {'fields': [('x', 0, 7, 1)], 'point_step': 4, 'width': 2, 'height': 1, 'row_step': 8}
    with pytest.raises(TruncatedCloudError):
        pointcloud2_to_array(_message(**good, data=bytes(7)))
    with pytest.raises(BigEndianCloudError):
        pointcloud2_to_array(_message(**good, data=bytes(8), is_bigendian=True))
    with pytest.raises(UnknownDatatypeError):
        pointcloud2_to_array(_message(**{**good, 'fields': [('x', 0, 11, 1)]}, data=bytes(8)))
    with pytest.raises(FieldLayoutError, match='no fields'):
        pointcloud2_to_array(PointCloud2())


def test_array_to_pointcloud2_fills_header_layout_and_data():
    points = _contract_points(7)
    msg = array_to_pointcloud2(points, 'lidar_top', Time(sec=12, nanosec=34))
    assert msg.header.frame_id == 'lidar_top'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 34)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 7, 24, 168)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('intensity', 12, 7, 1),
        ('ring', 16, 4, 1), ('time', 20, 7, 1)]
    assert not msg.is_bigendian and msg.is_dense
    assert isinstance(msg.data, array.array) and msg.data.tobytes() == points.tobytes()


def test_array_to_pointcloud2_accepts_rclpy_time():
    msg = array_to_pointcloud2(_contract_points(1), 'lidar_top',
                               rclpy.time.Time(seconds=3, nanoseconds=5))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (3, 5)


def test_array_to_pointcloud2_survives_rclpy_serialization():
    points = _contract_points(100, seed=3)
    msg = array_to_pointcloud2(points, 'lidar_top', Time(sec=1))
    received = deserialize_message(serialize_message(msg), PointCloud2)
    back = pointcloud2_to_array(received)
    assert back.dtype == points.dtype
    np.testing.assert_array_equal(back, points)


def test_array_to_pointcloud2_sets_is_dense_from_finite_xyz():
    points = _contract_points(10)
    points['intensity'][0] = np.nan  # only x, y, z decide validity
    assert array_to_pointcloud2(points, 'f', Time()).is_dense
    points['y'][4] = np.inf
    assert not array_to_pointcloud2(points, 'f', Time()).is_dense
    assert array_to_pointcloud2(points, 'f', Time(), is_dense=True).is_dense


def test_array_to_pointcloud2_scans_every_chunk_for_non_finite_points(monkeypatch):
    monkeypatch.setattr(pc, '_SCAN_CHUNK_BYTES', 2 * 24)
    points = _contract_points(9)
    assert array_to_pointcloud2(points, 'f', Time()).is_dense
    points['z'][8] = np.nan
    assert not array_to_pointcloud2(points, 'f', Time()).is_dense


def test_array_to_pointcloud2_writes_organised_clouds_row_major():
    points = _contract_points(12).reshape(3, 4)
    msg = array_to_pointcloud2(points, 'f', Time())
    assert (msg.height, msg.width, msg.row_step) == (3, 4, 96)
    back = pointcloud2_to_array(msg)
    assert back.shape == (3, 4)
    np.testing.assert_array_equal(back, points)


def test_array_to_pointcloud2_packs_non_contiguous_and_big_endian_input():
    strided = _contract_points(20)[::3]
    back = pointcloud2_to_array(array_to_pointcloud2(strided, 'f', Time()))
    np.testing.assert_array_equal(back, strided)
    big = np.zeros(3, np.dtype([('x', '>f4'), ('y', '>f4'), ('z', '>f4'), ('n', '>u2')]))
    big['x'] = [1.0, 2.0, 3.0]
    big['n'] = [1, 256, 513]
    msg = array_to_pointcloud2(big, 'f', Time())
    assert not msg.is_bigendian
    back = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(back['x'], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(back['n'], [1, 256, 513])
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12]


def test_array_to_pointcloud2_rejects_unconvertible_arrays():
    with pytest.raises(PointsDtypeError, match='structured'):
        array_to_pointcloud2(np.zeros((5, 3), np.float32), 'f', Time())
    with pytest.raises(PointsDtypeError, match=r'shape \(N,\) or \(H, W\)'):
        array_to_pointcloud2(np.zeros((2, 2, 2), make_points_dtype()), 'f', Time())
    with pytest.raises(PointsDtypeError, match='numpy structured array'):
        array_to_pointcloud2([(1.0, 2.0, 3.0)], 'f', Time())
    overlapping = np.dtype({'names': ['x', 'x_bits'], 'formats': ['<f4', '<u4'],
                            'offsets': [0, 0], 'itemsize': 4})
    with pytest.raises(FieldLayoutError, match='overlaps'):
        array_to_pointcloud2(np.zeros(2, overlapping), 'f', Time())


def test_points_to_buffer_returns_input_itself_when_already_wire_ready():
    points = _contract_points(5)
    layout, contiguous = points_to_buffer(points, is_dense=True)
    assert contiguous is points
    assert layout.width == 5 and layout.height == 1 and layout.is_dense


def test_fill_uint8_sequence_replaces_existing_data():
    msg = PointCloud2()
    msg.data = b'old bytes'
    pc.fill_uint8_sequence(msg, 'data', np.arange(3, dtype=np.uint16))
    assert msg.data.tobytes() == np.arange(3, dtype=np.uint16).tobytes()
    fresh = PointCloud2()
    pc.fill_uint8_sequence(fresh, 'data', np.arange(3, dtype=np.uint16))
    assert fresh.data.tobytes() == msg.data.tobytes()


def test_make_points_dtype_builds_contract_layouts():
    dtype = make_points_dtype()
    assert list(dtype.names) == ['x', 'y', 'z', 'intensity']
    assert dtype.itemsize == 16
    full = make_points_dtype(CONTRACT_FIELDS)
    assert [full.fields[n][1] for n in CONTRACT_FIELDS] == [0, 4, 8, 12, 16, 20]
    assert full.fields['ring'][0] == np.dtype('<u2') and full.itemsize == 24
    packed = make_points_dtype(CONTRACT_FIELDS, align=False)
    assert packed.fields['time'][1] == 18 and packed.itemsize == 22


def test_make_points_dtype_appends_extra_fields_with_alignment():
    dtype = make_points_dtype(('x', 'y', 'z'), extra=(('label', np.uint8),
                                                      ('timestamp', np.float64),
                                                      ('rgb', np.uint8, 3)))
    assert dtype.fields['label'][1] == 12
    assert dtype.fields['timestamp'][1] == 16
    assert dtype.fields['rgb'][0].subdtype == (np.dtype('u1'), (3,))
    assert dtype.fields['rgb'][1] == 24 and dtype.itemsize == 32


@pytest.mark.parametrize('kwargs, match', [
    ({'fields': ('x', 'rgb')}, "unknown contract field 'rgb'"),
    ({'fields': ('x', 'x')}, 'duplicate field names'),
    ({'fields': ('x',), 'extra': (('x', np.float32),)}, 'duplicate field names'),
    ({'extra': (('flag', np.bool_),)}, "'flag' has dtype bool"),
    ({'extra': (('t', 'not-a-dtype'),)}, "'t' has invalid dtype"),
    ({'extra': (('v', np.float32, 0),)}, "'v' count must be >= 1, got 0"),
    ({'extra': ('v',)}, r'must be \(name, dtype\[, count\]\)'),
    ({'fields': ()}, 'at least one field'),
    ({'extra': ((3, np.float32),)}, 'name must be a non-empty string, got 3'),
])
def test_make_points_dtype_rejects_bad_requests(kwargs, match):
    with pytest.raises(PointsDtypeError, match=match):
        make_points_dtype(**kwargs)


def test_xyz_view_is_a_view_for_contract_layout():
    points = _contract_points(6)
    xyz = xyz_view(points)
    assert xyz.shape == (6, 3) and xyz.dtype == np.float32
    assert np.shares_memory(xyz, points)
    np.testing.assert_array_equal(xyz[:, 1], points['y'])
    xyz[2, 2] = 42.0
    assert points['z'][2] == 42.0


def test_xyz_view_is_a_view_on_received_organised_clouds():
    msg = array_to_pointcloud2(_contract_points(8).reshape(2, 4), 'f', Time())
    points = pointcloud2_to_array(msg)
    xyz = xyz_view(points)
    assert xyz.shape == (2, 4, 3)
    assert np.shares_memory(xyz, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('dtype', [
    np.dtype([('x', '<f8'), ('y', '<f8'), ('z', '<f8')]),
    np.dtype([('z', '<f4'), ('y', '<f4'), ('x', '<f4')]),
    np.dtype([('x', '<f4'), ('pad', '<f4'), ('y', '<f4'), ('z', '<f4')]),
    np.dtype([('x', '>f4'), ('y', '>f4'), ('z', '>f4')]),
    np.dtype([('x', '<i2'), ('y', '<i2'), ('z', '<i2')]),
])
def test_xyz_view_copies_other_layouts_to_float32(dtype):
    points = np.zeros(4, dtype)
    for i, name in enumerate('xyz'):
        points[name] = np.arange(4) + 10 * i
    xyz = xyz_view(points)
    assert xyz.dtype == np.float32 and xyz.shape == (4, 3)
    assert not np.shares_memory(xyz, points)
    np.testing.assert_array_equal(xyz, np.stack([np.arange(4) + 10 * i for i in range(3)], 1))


def test_xyz_view_rejects_missing_or_vector_coordinates():
    with pytest.raises(PointsDtypeError, match="no field 'z'"):
        xyz_view(np.zeros(2, [('x', '<f4'), ('y', '<f4')]))
    with pytest.raises(PointsDtypeError, match="'x' is a vector"):
        xyz_view(np.zeros(2, [('x', '<f4', (2,)), ('y', '<f4'), ('z', '<f4')]))
    with pytest.raises(PointsDtypeError, match='structured'):
        xyz_view(np.zeros((2, 3), np.float32))


def test_finite_points_mask_flags_nan_and_inf_points():
    points = _contract_points(6)
    points['x'][1] = np.nan
    points['z'][3] = -np.inf
    points['intensity'][4] = np.nan  # not a coordinate: the point stays valid
    mask = finite_points_mask(points)
    np.testing.assert_array_equal(mask, [True, False, True, False, True, True])
    assert len(points[mask]) == 4
    assert not finite_points_mask(points, fields=('intensity',))[4]


def test_finite_points_mask_handles_organised_integer_and_vector_fields():
    dtype = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('n', '<f4', (2,)),
                      ('ring', '<u2')])
    points = np.zeros((2, 3), dtype)
    points['y'][1, 2] = np.nan
    points['n'][0, 1, 1] = np.inf
    assert finite_points_mask(points).tolist() == [[True, True, True], [True, True, False]]
    assert finite_points_mask(points, ('n', 'ring')).tolist() == [[True, False, True],
                                                                  [True, True, True]]
    with pytest.raises(PointsDtypeError, match="no field 'q'"):
        finite_points_mask(points, ('q',))
    with pytest.raises(PointsDtypeError, match='structured'):
        finite_points_mask(np.zeros(3))


@st.composite
def _cloud_layouts(draw):
    n_fields = draw(st.integers(1, 5))
    specs = []
    offset = 0
    for i in range(n_fields):
        offset += draw(st.integers(0, 3))
        datatype = draw(st.integers(1, 8))
        count = draw(st.integers(1, 3))
        specs.append(PointFieldSpec(f'f{i}', offset, datatype, count))
        offset += _SIZE[datatype] * count
    point_step = offset + draw(st.integers(0, 5))
    width = draw(st.integers(0, 12))
    height = draw(st.integers(0, 4))
    row_step = width * point_step + draw(st.integers(0, 7))
    order = draw(st.permutations(range(n_fields)))
    layout = CloudLayout(fields=tuple(specs[i] for i in order), point_step=point_step,
                         row_step=row_step, width=width, height=height)
    size = row_step * height + draw(st.integers(0, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return layout, data


@settings(derandomize=True, max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_cloud_layouts())
def test_random_layouts_decode_like_struct_and_round_trip(case):
    layout, data = case
    points = points_from_buffer(data, layout)
    expected_shape = (layout.width,) if layout.height == 1 else (layout.height, layout.width)
    assert points.shape == expected_shape
    grid = points.reshape(layout.height, layout.width)
    for spec in layout.fields:
        field_dtype, offset = points.dtype.fields[spec.name][:2]
        assert offset == spec.offset
        assert field_dtype == (np.dtype(_NUMPY_TYPE[spec.datatype]) if spec.count == 1 else
                               np.dtype((_NUMPY_TYPE[spec.datatype], (spec.count,))))
        for row in range(layout.height):
            for col in range(layout.width):
                reference = _reference_field(data, layout, spec, row, col)
                got = np.atleast_1d(grid[spec.name][row, col])
                assert _bits(got).tolist() == list(reference)

    msg = array_to_pointcloud2(points, 'lidar_top', Time(sec=5))
    assert msg.point_step == layout.point_step
    assert msg.row_step == layout.width * layout.point_step
    assert sorted((f.name, f.offset, f.datatype, f.count) for f in msg.fields) == sorted(
        (s.name, s.offset, s.datatype, s.count) for s in layout.fields)
    back = pointcloud2_to_array(deserialize_message(serialize_message(msg), PointCloud2))
    owned = points_from_buffer(data, layout, copy=True)
    assert back.shape == points.shape and owned.shape == points.shape
    assert owned.flags.c_contiguous and not np.shares_memory(owned, points)
    for spec in layout.fields:
        np.testing.assert_array_equal(_bits(back[spec.name]), _bits(points[spec.name]))
        np.testing.assert_array_equal(_bits(owned[spec.name]), _bits(points[spec.name]))
