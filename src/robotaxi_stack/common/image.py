"""sensor_msgs/Image <-> numpy arrays without copying on the way in.

A pure core (numpy only: `image_from_buffer`, `image_to_buffer`, `ENCODINGS`) and thin message
functions `image_to_array` / `array_to_image` that import sensor_msgs only when called.

Reading is zero-copy: the array is a strided view on `msg.data`, shape (H, W) for one-channel
encodings and (H, W, C) otherwise, with strides (step, C * element size, element size), so rows
padded past width * bytes-per-pixel (`step` larger than needed) need no copy. The view is
writable when the buffer is (rclpy's array.array), and writing into it changes the message.

Supported encodings (sensor_msgs/image_encodings names): rgb8, bgr8, rgba8, bgra8, mono8, 8UC1,
8UC3 (uint8); mono16, 16UC1 (uint16, e.g. depth in mm); 32FC1 (float32, e.g. depth in m).
Multi-byte encodings must be little-endian (is_bigendian false).
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only; the core never imports ROS at run time
    from sensor_msgs.msg import Image


@dataclass(frozen=True)
class EncodingInfo:
    """Element type (little-endian on the wire) and channel count of an image encoding."""

    dtype: np.dtype
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


ENCODINGS = {
    'rgb8': EncodingInfo(np.dtype('u1'), 3),
    'bgr8': EncodingInfo(np.dtype('u1'), 3),
    'rgba8': EncodingInfo(np.dtype('u1'), 4),
    'bgra8': EncodingInfo(np.dtype('u1'), 4),
    'mono8': EncodingInfo(np.dtype('u1'), 1),
    '8UC1': EncodingInfo(np.dtype('u1'), 1),
    '8UC3': EncodingInfo(np.dtype('u1'), 3),
    'mono16': EncodingInfo(np.dtype('<u2'), 1),
    '16UC1': EncodingInfo(np.dtype('<u2'), 1),
    '32FC1': EncodingInfo(np.dtype('<f4'), 1),
}


class ImageError(ValueError):
    """An image message or array that cannot be converted; the message names the cause."""


class UnsupportedEncodingError(ImageError):
    """The encoding is not one of ENCODINGS."""


class BigEndianImageError(ImageError):
    """A multi-byte encoding with is_bigendian set; only little-endian data is read."""


class TruncatedImageError(ImageError):
    """The data is shorter than step * height, or step is shorter than one row of pixels."""


class ImageArrayError(ImageError):
    """An array whose shape or dtype does not fit the requested encoding."""


def encoding_info(encoding: str) -> EncodingInfo:
    """EncodingInfo of a supported encoding; UnsupportedEncodingError otherwise."""
    info = ENCODINGS.get(encoding) if isinstance(encoding, str) else None
    if info is None:
        raise UnsupportedEncodingError(
            f'unsupported image encoding {encoding!r} (supported: {sorted(ENCODINGS)})')
    return info


def image_shape(height: int, width: int, encoding: str) -> tuple[int, ...]:
    """Array shape of an image: (height, width) for 1 channel, else (height, width, C)."""
    channels = encoding_info(encoding).channels
    return (height, width) if channels == 1 else (height, width, channels)


def image_from_buffer(data: Any, encoding: str, height: int, width: int, step: int,
                      is_bigendian: bool = False) -> np.ndarray:
    """Zero-copy view of an image buffer.

    data: bytes-like (array.array, bytes, bytearray, memoryview, numpy), C-contiguous, at least
    step * height bytes; step [bytes per row] >= width * bytes per pixel, padding skipped.
    Returns shape `image_shape(height, width, encoding)` sharing memory with data.
    Raises UnsupportedEncodingError, BigEndianImageError, TruncatedImageError, ImageError.
    """
    info = encoding_info(encoding)
    if is_bigendian and info.dtype.itemsize > 1:
        raise BigEndianImageError(
            f'{encoding} image is big-endian (is_bigendian=True); only little-endian is read')
    for key, value in (('height', height), ('width', width), ('step', step)):
        if not _is_int(value) or value < 0:
            raise ImageError(f'{key} must be an integer >= 0, got {value!r}')
    row_bytes = width * info.bytes_per_pixel
    if step < row_bytes:
        raise TruncatedImageError(
            f'step {step} is less than width * bytes per pixel = {width} * '
            f'{info.bytes_per_pixel} = {row_bytes} for {encoding}')
    buffer = _contiguous_buffer(data)
    needed = step * height
    if buffer.nbytes < needed:
        raise TruncatedImageError(
            f'data has {buffer.nbytes} bytes, less than step * height = {step} * {height} '
            f'= {needed}')
    element = info.dtype.itemsize
    strides: tuple[int, ...] = (step, info.bytes_per_pixel, element)
    if info.channels == 1:
        strides = strides[:2]
    return np.ndarray(image_shape(height, width, encoding), dtype=info.dtype, buffer=buffer,
                      strides=strides)


def image_to_buffer(image: np.ndarray, encoding: str) -> tuple[int, int, int, np.ndarray]:
    """(height, width, step, C-contiguous little-endian array) for an image array.

    image: (H, W) or (H, W, 1) for one-channel encodings, (H, W, C) otherwise, with the
    encoding's element type (any byte order). The returned array is `image` itself when it is
    already C-contiguous and little-endian, else a packed copy; step = W * bytes per pixel.
    Raises UnsupportedEncodingError, ImageArrayError.
    """
    info = encoding_info(encoding)
    if not isinstance(image, np.ndarray):
        raise ImageArrayError(f'image must be a numpy array, got {type(image).__name__}')
    expected = 'an (H, W) or (H, W, 1)' if info.channels == 1 else f'an (H, W, {info.channels})'
    shape_ok = (image.ndim == 3 and image.shape[2] == info.channels) or (
        image.ndim == 2 and info.channels == 1)
    if not shape_ok:
        raise ImageArrayError(
            f'{encoding} needs {expected} array, got shape {image.shape}')
    if (image.dtype.kind, image.dtype.itemsize) != (info.dtype.kind, info.dtype.itemsize) \
            or image.dtype.names is not None:
        raise ImageArrayError(
            f'{encoding} needs dtype {info.dtype.name}, got {image.dtype}')
    if image.dtype != info.dtype:  # same type, other byte order
        image = image.astype(info.dtype)
    contiguous = np.ascontiguousarray(image)
    height, width = contiguous.shape[:2]
    return int(height), int(width), int(width) * info.bytes_per_pixel, contiguous


def image_to_array(msg: Image) -> np.ndarray:
    """Zero-copy array of a sensor_msgs/Image: (H, W, C) uint8 for rgb8/bgr8, (H, W) uint8
    for mono8, (H, W) float32 for 32FC1 (see ENCODINGS for the rest).

    Raises the ImageError subclasses of `image_from_buffer`.
    """
    return image_from_buffer(msg.data, msg.encoding, msg.height, msg.width, msg.step,
                             bool(msg.is_bigendian))


def array_to_image(image: np.ndarray, encoding: str, frame_id: str, stamp: Any) -> Image:
    """sensor_msgs/Image holding `image` in `encoding`, in frame frame_id (camera optical).

    stamp: builtin_interfaces/Time, or anything with `to_msg()` (rclpy.time.Time). The pixels
    are copied once, straight into the message's array. Raises UnsupportedEncodingError or
    ImageArrayError when the array's shape or dtype does not fit the encoding.
    """
    from sensor_msgs.msg import Image

    height, width, step, contiguous = image_to_buffer(image, encoding)
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp = stamp.to_msg() if hasattr(stamp, 'to_msg') else stamp
    msg.height = height
    msg.width = width
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    raw = contiguous.reshape(-1).view(np.uint8)
    # One memcpy into rclpy's array.array('B'); bytes would be copied twice and a memoryview
    # iterated element by element by the setter.
    if isinstance(msg.data, array.array) and msg.data.typecode == 'B' and not msg.data:
        msg.data.frombytes(raw.data)
    else:
        msg.data = raw.tobytes()
    return msg


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _contiguous_buffer(data: Any) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError as exc:
        raise ImageError(
            f'data must be a bytes-like buffer, got {type(data).__name__}') from exc
    if not view.c_contiguous:
        raise ImageError('data buffer is not C-contiguous')
    return view.cast('B') if view.format != 'B' or view.ndim != 1 else view


__all__ = [
    'ENCODINGS', 'EncodingInfo', 'ImageError', 'UnsupportedEncodingError',
    'BigEndianImageError', 'TruncatedImageError', 'ImageArrayError', 'encoding_info',
    'image_shape', 'image_from_buffer', 'image_to_buffer', 'image_to_array', 'array_to_image',
]
