"""Tests of robotaxi_stack.common.image: sensor_msgs/Image <-> numpy, zero-copy on reading."""

import array

from builtin_interfaces.msg import Time
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
import rclpy.time
from robotaxi_stack.common.image import (
    array_to_image, BigEndianImageError, ENCODINGS, encoding_info, image_from_buffer,
    image_shape, image_to_array, image_to_buffer, ImageArrayError, ImageError,
    TruncatedImageError, UnsupportedEncodingError)
from sensor_msgs.msg import Image


def _message(encoding, height, width, step, data, is_bigendian=0):
    msg = Image()
    msg.encoding = encoding
    msg.height = height
    msg.width = width
    msg.step = step
    msg.is_bigendian = is_bigendian
    msg.data = bytes(data)
    return msg


def test_image_errors_are_value_errors():
    for error in (UnsupportedEncodingError, BigEndianImageError, TruncatedImageError,
                  ImageArrayError):
        assert issubclass(error, ImageError) and issubclass(error, ValueError)


@pytest.mark.parametrize('encoding, dtype, shape', [
    ('rgb8', np.uint8, (2, 3, 3)), ('bgr8', np.uint8, (2, 3, 3)), ('mono8', np.uint8, (2, 3)),
    ('32FC1', np.float32, (2, 3)), ('16UC1', np.uint16, (2, 3)), ('rgba8', np.uint8, (2, 3, 4)),
])
def test_image_to_array_gives_contract_shapes_and_types(encoding, dtype, shape):
    bpp = encoding_info(encoding).bytes_per_pixel
    msg = _message(encoding, 2, 3, 3 * bpp, bytes(2 * 3 * bpp))
    image = image_to_array(msg)
    assert image.shape == shape and image.dtype == dtype
    assert image_shape(2, 3, encoding) == shape


def test_image_to_array_is_zero_copy_and_writes_through():
    msg = array_to_image(np.zeros((4, 5, 3), np.uint8), 'rgb8', 'camera_front', Time())
    image = image_to_array(msg)
    assert np.shares_memory(image, np.frombuffer(msg.data, np.uint8))
    image[1, 2, 0] = 200
    assert msg.data[(1 * 5 + 2) * 3] == 200


def test_image_to_array_reads_rgb_channels_in_order():
    pixels = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    image = image_to_array(_message('rgb8', 2, 2, 6, pixels.tobytes()))
    np.testing.assert_array_equal(image, pixels)
    assert image[1, 0].tolist() == [6, 7, 8]


def test_image_to_array_skips_row_padding_without_copy():
    depth_m = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], np.float32)
    step = 3 * 4 + 4
    data = bytearray(step * 2)
    for row in range(2):
        data[row * step:row * step + 12] = depth_m[row].tobytes()
    msg = _message('32FC1', 2, 3, step, data)
    image = image_to_array(msg)
    assert image.strides == (16, 4)
    np.testing.assert_array_equal(image, depth_m)
    assert np.shares_memory(image, np.frombuffer(msg.data, np.uint8))


def test_image_to_array_handles_padded_rgb_and_odd_steps():
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    step = 5 * 3 + 1  # odd: rows start at unaligned offsets
    data = bytearray(step * 3)
    for row in range(3):
        data[row * step:row * step + 15] = pixels[row].tobytes()
    np.testing.assert_array_equal(image_to_array(_message('bgr8', 3, 5, step, data)), pixels)


def test_image_to_array_accepts_big_endian_flag_on_8_bit_encodings():
    image = image_to_array(_message('mono8', 1, 2, 2, b'\x01\x02', is_bigendian=1))
    assert image.tolist() == [[1, 2]]


def test_image_to_array_rejects_big_endian_float_images():
    with pytest.raises(BigEndianImageError, match='32FC1 image is big-endian'):
        image_to_array(_message('32FC1', 1, 1, 4, bytes(4), is_bigendian=1))


def test_image_to_array_rejects_short_data_and_short_step():
    with pytest.raises(TruncatedImageError, match=r'data has 17 bytes, less than step \* '
                                                  r'height = 6 \* 3 = 18'):
        image_to_array(_message('rgb8', 3, 2, 6, bytes(17)))
    with pytest.raises(TruncatedImageError, match=r'step 8 is less than width \* bytes per '
                                                  r'pixel = 3 \* 4 = 12 for 32FC1'):
        image_to_array(_message('32FC1', 1, 3, 8, bytes(12)))


def test_image_to_array_rejects_unsupported_encodings():
    with pytest.raises(UnsupportedEncodingError, match="unsupported image encoding 'yuv422'"):
        image_to_array(_message('yuv422', 1, 2, 4, bytes(4)))
    with pytest.raises(UnsupportedEncodingError, match="''"):
        image_to_array(Image())


def test_image_from_buffer_rejects_bad_sizes_and_buffers():
    with pytest.raises(ImageError, match='height must be an integer >= 0, got -1'):
        image_from_buffer(b'', 'mono8', -1, 1, 1)
    with pytest.raises(ImageError, match='bytes-like buffer, got list'):
        image_from_buffer([0], 'mono8', 1, 1, 1)
    with pytest.raises(ImageError, match='not C-contiguous'):
        image_from_buffer(memoryview(bytes(8))[::2], 'mono8', 2, 2, 2)


def test_image_from_buffer_handles_empty_images():
    assert image_from_buffer(b'', 'rgb8', 0, 4, 12).shape == (0, 4, 3)
    assert image_from_buffer(b'', 'mono8', 3, 0, 0).shape == (3, 0)


def test_array_to_image_fills_header_and_layout():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = array_to_image(gray, 'mono8', 'camera_front', Time(sec=7, nanosec=9))
    assert msg.header.frame_id == 'camera_front'
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (7, 9)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (3, 4, 4, 'mono8')
    assert msg.is_bigendian == 0
    assert isinstance(msg.data, array.array) and msg.data.tobytes() == gray.tobytes()


def test_array_to_image_accepts_rclpy_time_and_single_channel_axis():
    depth_m = np.full((2, 3, 1), 1.5, np.float32)
    msg = array_to_image(depth_m, '32FC1', 'camera_front', rclpy.time.Time(seconds=2))
    assert msg.header.stamp.sec == 2 and msg.step == 12
    np.testing.assert_array_equal(image_to_array(msg), depth_m[:, :, 0])


def test_array_to_image_packs_non_contiguous_and_byte_swapped_arrays():
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)[:, ::2]
    np.testing.assert_array_equal(image_to_array(array_to_image(rgb, 'rgb8', 'c', Time())), rgb)
    swapped = np.array([[1.0, -2.5]], dtype='>f4')
    back = image_to_array(array_to_image(swapped, '32FC1', 'c', Time()))
    np.testing.assert_array_equal(back, [[1.0, -2.5]])


@pytest.mark.parametrize('image, encoding, error, match', [
    (np.zeros((2, 3), np.uint8), 'rgb8', ImageArrayError,
     r'rgb8 needs an \(H, W, 3\) array, got shape \(2, 3\)'),
    (np.zeros((2, 3, 3), np.uint8), 'mono8', ImageArrayError, r'shape \(2, 3, 3\)'),
    (np.zeros((2, 3, 4), np.uint8), 'bgr8', ImageArrayError, r'\(2, 3, 4\)'),
    (np.zeros((2, 3), np.float64), '32FC1', ImageArrayError,
     'needs dtype float32, got float64'),
    (np.zeros((2, 3, 3), np.float32), 'rgb8', ImageArrayError, 'needs dtype uint8'),
    (np.zeros((2, 3), np.int16), '16UC1', ImageArrayError, 'needs dtype uint16, got int16'),
    (np.zeros(6, np.uint8), 'mono8', ImageArrayError, r'got shape \(6,\)'),
    ([[0, 1]], 'mono8', ImageArrayError, 'numpy array'),
    (np.zeros((2, 3), np.uint8), 'jpeg', UnsupportedEncodingError, "'jpeg'"),
])
def test_array_to_image_rejects_arrays_that_do_not_fit_the_encoding(image, encoding, error,
                                                                    match):
    with pytest.raises(error, match=match):
        array_to_image(image, encoding, 'camera_front', Time())


def test_image_to_buffer_returns_input_itself_when_wire_ready():
    rgb = np.zeros((2, 2, 3), np.uint8)
    assert image_to_buffer(rgb, 'rgb8')[3] is rgb


@st.composite
def _images(draw):
    encoding = draw(st.sampled_from(sorted(ENCODINGS)))
    info = ENCODINGS[encoding]
    height = draw(st.integers(0, 6))
    width = draw(st.integers(0, 7))
    step = width * info.bytes_per_pixel + draw(st.integers(0, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    size = step * height + draw(st.integers(0, 3))
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return encoding, height, width, step, data


@settings(derandomize=True, max_examples=150, deadline=None)
@given(_images())
def test_random_images_decode_row_by_row_and_round_trip(case):
    encoding, height, width, step, data = case
    info = ENCODINGS[encoding]
    msg = _message(encoding, height, width, step, data)
    image = image_to_array(msg)
    assert image.shape == image_shape(height, width, encoding)
    assert image.dtype == info.dtype
    row_bytes = width * info.bytes_per_pixel
    for row in range(height):
        assert image[row].tobytes() == data[row * step:row * step + row_bytes]

    sent = array_to_image(image, encoding, 'camera_front', Time(sec=1))
    assert sent.step == row_bytes
    received = deserialize_message(serialize_message(sent), Image)
    back = image_to_array(received)
    assert back.shape == image.shape
    # Byte comparison: float images hold random bits, including NaNs.
    assert back.tobytes() == np.ascontiguousarray(image).tobytes()
