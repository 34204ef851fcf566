"""Pinhole camera model: renders a SimScene by casting one ray per pixel (or per pixel block).

Frames. The camera pose passed to `render` is the pose in `map` of the camera's ROS body frame
(`camera_front`: x forward, y left, z up, like base_link). Images, K and P use the optical frame
(REP 103 `_optical` convention: z forward, x right, y down), related to the body frame by

    x_body = z_opt,   y_body = -x_opt,   z_body = -y_opt      (BODY_FROM_OPTICAL below)

Pixel (u, v) has its centre at integer coordinates, u to the right and v down, as in OpenCV
and CameraInfo: a point (x, y, z) of the optical frame with z > 0 lands at
u = fx x / z + cx, v = fy y / z + cy; the image covers -0.5 <= u < width - 0.5.

Shading: albedo of the surface label (LABEL_COLOUR_RGB) times ambient + diffuse sun light on the
outward triangle normal (256 brightness levels); rays that hit nothing show SKY_RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import numpy as np

from robotaxi_stack.common.params import (ParameterError, check_fields, param,
                                          params_from_dict)
from robotaxi_stack.sim.scene import (LABEL_COLOUR_RGB, RayBuffer, SimScene,
                                      pose_to_rotation_translation)

# Columns are the optical axes (x right, y down, z forward) expressed in the body frame.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])
SKY_RGB = np.array([135, 190, 235], dtype=np.uint8)
# Unit vector towards the sun in map: high, from the south-west, so that box faces of different
# orientation get different brightness.
SUN_DIRECTION_MAP = np.array([-0.35, -0.5, 0.79]) / np.linalg.norm([-0.35, -0.5, 0.79])
AMBIENT_LIGHT = 0.45
_SUN_DIRECTION_MAP_F32 = SUN_DIRECTION_MAP.astype(np.float32)
_SHADE_LEVELS = 256


def _shaded_rgb_table() -> np.ndarray:
    """(labels * _SHADE_LEVELS, 3) uint8: albedo x (ambient + diffuse x level); sky for NONE."""
    level = np.linspace(0.0, 1.0, _SHADE_LEVELS)
    shade = AMBIENT_LIGHT + (1.0 - AMBIENT_LIGHT) * level
    table = LABEL_COLOUR_RGB[:, None, :].astype(np.float64) * shade[None, :, None]
    table[0] = SKY_RGB
    return np.ascontiguousarray(np.round(table).reshape(-1, 3), dtype=np.uint8)


_SHADED_RGB_TABLE = _shaded_rgb_table()


class CameraConfigError(ParameterError):
    """A camera configuration value is unknown, mistyped or out of range (message names it)."""


class CameraInputError(ValueError):
    """Malformed input to the camera model, e.g. points that are not finite (N, 3)."""


@dataclass(frozen=True)
class CameraConfig:
    """Pinhole camera intrinsics (pixels) and rate; validated at construction.

    Defaults: 640 x 384 with fx = fy = 400 px (77 degree horizontal field of view) and the
    principal point at the image centre. `render_downsample` k > 1 casts one ray per k x k pixel
    block and repeats it (k must divide width and height).
    """

    width: int = param(640, min=640, max=7680, description='image width, pixels')
    height: int = param(384, min=384, max=4320, description='image height, pixels')
    fx: float = param(400.0, min=1.0, max=100000.0, description='focal length x, pixels')
    fy: float = param(400.0, min=1.0, max=100000.0, description='focal length y, pixels')
    cx: float = param(319.5, min=0.0, max=7680.0, description='principal point u, pixels')
    cy: float = param(191.5, min=0.0, max=4320.0, description='principal point v, pixels')
    hz: float = param(10.0, min=1.0, max=60.0, description='frame rate')
    render_downsample: int = param(1, min=1, max=8, description='pixels per cast ray along '
                                   'each image axis')

    def __post_init__(self) -> None:
        check_fields(self, CameraConfigError, 'camera: ')
        if self.cx > self.width - 1:
            raise CameraConfigError(f'camera: parameter cx = {self.cx} must lie inside the '
                                    f'image, [0, {self.width - 1}]')
        if self.cy > self.height - 1:
            raise CameraConfigError(f'camera: parameter cy = {self.cy} must lie inside the '
                                    f'image, [0, {self.height - 1}]')
        k = self.render_downsample
        if self.width % k or self.height % k:
            raise CameraConfigError(f'camera: parameter render_downsample = {k} must divide '
                                    f'width {self.width} and height {self.height}')

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CameraConfig:
        """Config from a mapping (scenario YAML, param file); unknown keys are errors."""
        try:
            return params_from_dict(cls, values, context='camera')
        except CameraConfigError:
            raise
        except ParameterError as error:
            raise CameraConfigError(str(error)) from None

    def intrinsic_matrix(self) -> np.ndarray:
        """3x3 K of the optical frame."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def camera_info_dict(self) -> dict[str, Any]:
        """sensor_msgs/CameraInfo fields (lower-case names as in the ROS 2 message).

        Ideal pinhole: plumb_bob with zero distortion, R identity (monocular), P = [K | 0].
        """
        k = self.intrinsic_matrix()
        projection = np.zeros((3, 4))
        projection[:, :3] = k
        return {
            'width': self.width,
            'height': self.height,
            'distortion_model': 'plumb_bob',
            'd': [0.0] * 5,
            'k': [float(v) for v in k.ravel()],
            'r': [float(v) for v in np.eye(3).ravel()],
            'p': [float(v) for v in projection.ravel()],
            'binning_x': 0,
            'binning_y': 0,
        }

    @property
    def horizontal_fov_deg(self) -> float:
        """Full horizontal field of view for a centred principal point."""
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fx))


@dataclass(frozen=True)
class CameraFrame:
    """A rendered frame and its per-pixel ground truth (all (H, W) leading shape).

    rgb (H, W, 3) uint8; label (H, W) uint8 SurfaceLabel values (NONE for sky); actor_id (H, W)
    int64 (NO_ACTOR_ID for static surfaces and sky); depth_m (H, W) float32 optical-axis depth,
    inf for sky.
    """

    rgb: np.ndarray
    label: np.ndarray
    actor_id: np.ndarray
    depth_m: np.ndarray


class CameraModel:
    """Renders images of `config` and projects points; ray tables are built once here."""

    def __init__(self, config: CameraConfig) -> None:
        if not isinstance(config, CameraConfig):
            raise TypeError(f'config must be a CameraConfig, got {type(config).__name__}')
        self._config = config
        k = config.render_downsample
        # Centres of k x k pixel blocks, in full-resolution pixel coordinates.
        u = k * np.arange(config.width // k) + 0.5 * (k - 1)
        v = k * np.arange(config.height // k) + 0.5 * (k - 1)
        grid_u, grid_v = np.meshgrid(u, v)
        # Body-frame directions with unit forward component, so the hit distance along a ray is
        # the optical-axis depth of the hit.
        self._ray_buffer = RayBuffer(np.stack([
            np.ones(grid_u.size),
            -(grid_u.ravel() - config.cx) / config.fx,
            -(grid_v.ravel() - config.cy) / config.fy,
        ], axis=1))

    @property
    def config(self) -> CameraConfig:
        """The validated configuration."""
        return self._config

    def camera_info_dict(self) -> dict[str, Any]:
        """CameraInfo fields of this camera (see CameraConfig.camera_info_dict)."""
        return self._config.camera_info_dict()

    def render(self, scene: SimScene, camera_pose_map) -> np.ndarray:
        """(H, W, 3) uint8 RGB image seen from camera_pose_map (x, y, z, roll, pitch, yaw of
        the camera body frame in map, metres/radians)."""
        return self._upsample(self._cast(scene, camera_pose_map)[0])

    def render_frame(self, scene: SimScene, camera_pose_map) -> CameraFrame:
        """Render with per-pixel ground truth (label, actor id, depth); see render."""
        rgb, label, actor_id, depth_m = (self._upsample(image)
                                         for image in self._cast(scene, camera_pose_map))
        return CameraFrame(rgb=rgb, label=label, actor_id=actor_id, depth_m=depth_m)

    def _cast(self, scene: SimScene, camera_pose_map):
        """Cast one ray per pixel block: (rgb, label, actor_id, depth_m) at block resolution."""
        if not isinstance(scene, SimScene):
            raise TypeError(f'scene must be a SimScene, got {type(scene).__name__}')
        rotation, translation = pose_to_rotation_translation(camera_pose_map)
        rays = self._ray_buffer.fill(rotation, translation)
        depth_m, normal_map, geometry_id, primitive_id = scene.cast_rays_raw(rays)
        label, actor_id = scene.lookup(geometry_id, primitive_id)
        # Normals point out of the solids by construction (scene.py), so the face seen from
        # outside is lit by the sun when its normal has a positive sun component.
        sun_side = np.einsum('ij,j->i', normal_map, _SUN_DIRECTION_MAP_F32)
        np.clip(sun_side, 0.0, 1.0, out=sun_side)
        sun_side *= np.float32(_SHADE_LEVELS - 1)
        # One gather from a (label, quantised brightness) -> RGB table; label NONE is the sky.
        table_index = label.astype(np.intp) * _SHADE_LEVELS + sun_side.astype(np.intp)
        rgb = np.take(_SHADED_RGB_TABLE, table_index, axis=0)
        k = self._config.render_downsample
        shape = (self._config.height // k, self._config.width // k)
        return (rgb.reshape(shape + (3,)), label.reshape(shape), actor_id.reshape(shape),
                depth_m.reshape(shape))

    def _upsample(self, image: np.ndarray) -> np.ndarray:
        """Repeat each block-resolution pixel render_downsample times along both axes."""
        k = self._config.render_downsample
        if k == 1:
            return image
        return np.repeat(np.repeat(image, k, axis=0), k, axis=1)

    def project_points(self, points_camera_body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pinhole projection of points given in the camera body frame (x forward, z up).

        points_camera_body (N, 3) metres -> (uv (N, 2) float64 pixel coordinates, valid (N,)
        bool). valid: in front of the camera (optical z > 0) and inside the image
        (-0.5 <= u < width - 0.5, likewise v); uv is NaN for points not in front.
        """
        points = np.asarray(points_camera_body, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3:
            raise CameraInputError(f'points must have shape (N, 3), got {points.shape}')
        if not np.all(np.isfinite(points)):
            raise CameraInputError('points contain NaN or inf')
        config = self._config
        depth = points[:, 0]
        in_front = depth > 0.0
        safe_depth = np.where(in_front, depth, 1.0)
        uv = np.empty((len(points), 2))
        uv[:, 0] = config.fx * (-points[:, 1]) / safe_depth + config.cx
        uv[:, 1] = config.fy * (-points[:, 2]) / safe_depth + config.cy
        uv[~in_front] = np.nan
        with np.errstate(invalid='ignore'):
            valid = (in_front & (uv[:, 0] >= -0.5) & (uv[:, 0] < config.width - 0.5)
                     & (uv[:, 1] >= -0.5) & (uv[:, 1] < config.height - 0.5))
        return uv, valid
