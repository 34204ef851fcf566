"""Spinning multi-beam LiDAR model: rays cast into a SimScene, one sweep per call.

Sensor frame `lidar_top`: x forward, y left, z up. Azimuth is measured counter-clockwise from +x
(ROS convention). Ring r has elevation vertical_fov_min_deg + r * spacing, so ring 0 is the
lowest beam (as Velodyne drivers number them). The head spins clockwise seen from above, as
Velodyne and Hesai heads do: firing column k (k = 0 .. points_per_revolution - 1) points at
azimuth pi - k * resolution (the sweep starts and ends straight behind the sensor, where the
vehicle occludes most) and fires at time k / (points_per_revolution * hz) after the scan start.

The world is frozen for the sweep: `time` stamps each point but the sensor does not move during
it, so there is no motion distortion to undo downstream.

Each return: range along the ray with gaussian noise (sigma noise_m); returns closer than
min_range_m or beyond range_m are misses and are dropped; then each return is dropped with
probability `dropout`. Intensity (0..255) is 255 * reflectivity(label) * |cos(incidence)|, a
Lambertian return of the surface class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

import numpy as np

from robotaxi_stack.common.params import (ParameterError, check_fields, param,
                                          params_from_dict)
from robotaxi_stack.sim.scene import (LABEL_REFLECTIVITY, RayBuffer, SimScene,
                                      pose_to_rotation_translation)

# PointCloud2 layout of one point: 4-byte aligned fields, point_step 24 (2 padding bytes after
# ring keep `time` aligned for readers that map the buffer straight onto a struct).
LIDAR_POINT_DTYPE = np.dtype({
    'names': ['x', 'y', 'z', 'intensity', 'ring', 'time'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u2', '<f4'],
    'offsets': [0, 4, 8, 12, 16, 20],
    'itemsize': 24,
})


class LidarConfigError(ParameterError):
    """A LiDAR configuration value is unknown, mistyped or out of range (message names it)."""


@dataclass(frozen=True)
class LidarConfig:
    """Spinning LiDAR parameters; every value is validated at construction.

    Keys match the scenario's `sensors: lidar:` mapping (channels, hz, range_m, noise_m,
    dropout). `from_dict` also accepts `azimuth_resolution_deg` instead of
    `points_per_revolution`.
    """

    channels: int = param(64, min=16, max=128, description='beams (rings), spread evenly '
                          'over the vertical field of view')
    vertical_fov_min_deg: float = param(-25.0, min=-89.0, max=89.0,
                                        description='elevation of ring 0 (lowest beam)')
    vertical_fov_max_deg: float = param(15.0, min=-89.0, max=89.0,
                                        description='elevation of the highest beam')
    points_per_revolution: int = param(1800, min=90, max=36000,
                                       description='firing columns per 360 degree sweep')
    range_m: float = param(100.0, min=1.0, max=500.0, description='maximum return range')
    min_range_m: float = param(0.5, min=0.0, max=10.0, description='blind zone radius')
    noise_m: float = param(0.02, min=0.0, max=1.0, description='gaussian range noise sigma')
    dropout: float = param(0.0, min=0.0, max=1.0,
                           description='probability that a return is lost')
    hz: float = param(10.0, min=1.0, max=50.0, description='revolutions per second')

    def __post_init__(self) -> None:
        check_fields(self, LidarConfigError, 'lidar: ')
        if self.vertical_fov_max_deg <= self.vertical_fov_min_deg:
            raise LidarConfigError(
                f'lidar: parameter vertical_fov_max_deg = {self.vertical_fov_max_deg} must '
                f'be > vertical_fov_min_deg = {self.vertical_fov_min_deg}')
        if self.min_range_m >= self.range_m:
            raise LidarConfigError(f'lidar: parameter min_range_m = {self.min_range_m} '
                                   f'must be < range_m = {self.range_m}')

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LidarConfig:
        """Config from a mapping (scenario YAML, param file); unknown keys are errors."""
        values = dict(values)
        if 'azimuth_resolution_deg' in values:
            if 'points_per_revolution' in values:
                raise LidarConfigError('lidar: give azimuth_resolution_deg or '
                                       'points_per_revolution, not both')
            resolution = values.pop('azimuth_resolution_deg')
            if isinstance(resolution, bool) or not isinstance(resolution, (int, float)) \
                    or not math.isfinite(resolution) or not 0.01 <= resolution <= 4.0:
                raise LidarConfigError(f'lidar: parameter azimuth_resolution_deg = '
                                       f'{resolution!r} is out of range [0.01, 4.0]')
            values['points_per_revolution'] = round(360.0 / resolution)
        try:
            return params_from_dict(cls, values, context='lidar')
        except LidarConfigError:
            raise
        except ParameterError as error:
            raise LidarConfigError(str(error)) from None

    @property
    def azimuth_resolution_deg(self) -> float:
        """Angle between firing columns."""
        return 360.0 / self.points_per_revolution

    @property
    def rays_per_scan(self) -> int:
        """channels * points_per_revolution."""
        return self.channels * self.points_per_revolution

    def ring_elevations_rad(self) -> np.ndarray:
        """(channels,) beam elevation per ring, ring 0 lowest."""
        return np.deg2rad(np.linspace(self.vertical_fov_min_deg, self.vertical_fov_max_deg,
                                      self.channels))

    def column_azimuths_rad(self) -> np.ndarray:
        """(points_per_revolution,) azimuth of each firing column in firing order."""
        step = 2.0 * np.pi / self.points_per_revolution
        return np.pi - step * np.arange(self.points_per_revolution)


@dataclass(frozen=True)
class LidarScan:
    """One sweep: points (N,) of LIDAR_POINT_DTYPE in the sensor frame, in firing order, and the
    ground truth of each point: label (N,) uint8 SurfaceLabel values, actor_id (N,) int64
    (NO_ACTOR_ID for static surfaces)."""

    points: np.ndarray
    label: np.ndarray
    actor_id: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


class LidarModel:
    """Casts one sweep of `config` from a sensor pose; ray tables are built once here.

    Reuses one ray buffer between scans, so one model serves one thread.
    """

    def __init__(self, config: LidarConfig) -> None:
        if not isinstance(config, LidarConfig):
            raise TypeError(f'config must be a LidarConfig, got {type(config).__name__}')
        self._config = config
        elevation = config.ring_elevations_rad()
        azimuth = config.column_azimuths_rad()
        # Column-major over rings (all rings of column 0, then column 1, ...) = firing order.
        cos_el = np.cos(elevation)[None, :]
        directions = np.stack([
            np.cos(azimuth)[:, None] * cos_el,
            np.sin(azimuth)[:, None] * cos_el,
            np.broadcast_to(np.sin(elevation)[None, :], (len(azimuth), len(elevation))),
        ], axis=-1)
        self._directions_sensor = np.ascontiguousarray(directions.reshape(-1, 3),
                                                       dtype=np.float32)
        self._ray_buffer = RayBuffer(self._directions_sensor)
        # Per-axis contiguous copies: 1-D gathers are several times faster than row gathers.
        self._direction_columns = self._ray_buffer.direction_columns
        self._ring = np.tile(np.arange(config.channels, dtype=np.uint16),
                             config.points_per_revolution)
        column_period_s = 1.0 / (config.hz * config.points_per_revolution)
        self._time_s = np.repeat(
            (np.arange(config.points_per_revolution) * column_period_s).astype(np.float32),
            config.channels)

    @property
    def config(self) -> LidarConfig:
        """The validated configuration."""
        return self._config

    @property
    def directions_sensor(self) -> np.ndarray:
        """(channels * points_per_revolution, 3) float32 unit ray directions in firing order."""
        return self._directions_sensor

    def scan(self, scene: SimScene, sensor_pose_map, rng: np.random.Generator) -> LidarScan:
        """Cast one sweep.

        sensor_pose_map: (x, y, z, roll, pitch, yaw) of lidar_top in map, metres/radians.
        rng: source of range noise and dropout (seed it for reproducible scans).
        Returns points in the lidar_top frame (see module docstring for ring/time/intensity).
        """
        if not isinstance(scene, SimScene):
            raise TypeError(f'scene must be a SimScene, got {type(scene).__name__}')
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f'rng must be a numpy Generator, got {type(rng).__name__}')
        rotation, translation = pose_to_rotation_translation(sensor_pose_map)
        config = self._config
        rays = self._ray_buffer.fill(rotation, translation)
        true_range_m, normal_map, geometry_id, primitive_id = scene.cast_rays_raw(rays)
        index = np.flatnonzero((true_range_m >= config.min_range_m)
                               & (true_range_m <= config.range_m))
        if config.dropout > 0.0:
            index = index[rng.random(len(index)) >= config.dropout]
        range_m = true_range_m[index]
        if config.noise_m > 0.0:
            noise_m = rng.standard_normal(len(index), dtype=np.float32)
            noise_m *= np.float32(config.noise_m)
            range_m += noise_m
            np.maximum(range_m, 0.0, out=range_m)
        label, actor_id = scene.lookup(geometry_id[index], primitive_id[index])
        cos_incidence = np.einsum('ij,ij->i', normal_map, rays[:, 3:])[index]
        # Zeroed, not empty: the dtype's padding bytes go into the PointCloud2 as they are, and
        # the same scan must give the same bytes (reproducible recordings).
        points = np.zeros(len(index), dtype=LIDAR_POINT_DTYPE)
        for axis, name in enumerate('xyz'):
            points[name] = self._direction_columns[axis][index] * range_m
        points['intensity'] = np.minimum(
            np.float32(255.0) * LABEL_REFLECTIVITY[label] * np.abs(cos_incidence), 255.0)
        points['ring'] = self._ring[index]
        points['time'] = self._time_s[index]
        return LidarScan(points=points, label=label, actor_id=actor_id)
