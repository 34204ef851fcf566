"""LiDAR obstacle path: crop, ground removal and BEV clustering into UNKNOWN boxes (pure core).

One sweep goes through these vectorised stages (no per-point Python anywhere):

1. Input: an (N, >=3) float array (x, y, z first) or a structured array with x, y, z fields.
   With `sensor_to_base_link` (4x4) the points are in the sensor frame and are moved into
   base_link first; without it they are in base_link already. Non-finite points are dropped and
   counted. All outputs are in base_link.
2. Crop: horizontal range from the sensor, a z band, and the ego body box.
3. Ground: a polar grid around the sensor (sector x range bin) keeps the lowest point of each
   cell. Walking outward along every sector (one loop over range bins, vectorised over
   sectors), a cell is ground when its lowest point lies within `ground_max_step_m` (kerbs)
   of the sector's previous ground cell, or - for flat cells only - within that step plus a
   slope allowance over the gap since it; and within a global slope band of the vehicle's
   ground height. Other cells keep the previous ground height. A rise that only the slope
   allowance explains must also show in the neighbouring sectors (a second walk checks it
   against the first walk's ground profile): terrain slopes do, a low object that a single
   ring hits (0.5 m debris at 30 m: one ring, 0.25 m up) does not. A point is ground when it
   is at most `ground_height_threshold_m` above the highest ground of its cell's 3 x 3
   neighbourhood (cells straddling a kerb hold sidewalk returns a kerb height above their
   road-level lowest point).
   Why polar: beyond ~20 m consecutive LiDAR rings hit the ground metres apart, so a Cartesian
   neighbourhood often has no ground return at all, while the previous ring in the same sector
   always gives the reference. The lowest point rather than a plane fit per cell keeps kerb
   steps sharp.
4. Clusters: the remaining points' BEV occupancy grid (`cluster_cell_m`), occupied cells grown
   to bridge `cluster_gap_cells` empty cells (sparse columns on surfaces seen at a grazing
   angle), labelled into connected components (scipy.ndimage.label).
5. Boxes: per cluster, an L-shape rectangle fit (closeness criterion of Zhang et al. 2017)
   over 3 degree orientations, refined to 0.5 and 0.1 degrees. Each cluster is first thinned
   to the extreme points of each BEV cell in 8 directions, which bounds the cost on dense
   clouds. The box bottom is the ground under the cluster, so its height is the object's
   height above ground.

Data problems (empty cloud, only NaN/inf, nothing left after cropping, wrong shape) return an
empty `ObstacleResult` whose `reason` says why; they never raise. `merge_with_detections`
drops clusters that a detector already explains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from robotaxi_stack.common.geometry import points_in_bev_boxes
from robotaxi_stack.common.params import ParameterError, check_fields, param

# robotaxi_msgs/ObjectClass.UNKNOWN (the core does not import message packages).
LABEL_UNKNOWN = 0
DEFAULT_MERGE_IOU = 0.1
# Coarse box orientations (degrees over [0, 90)) and the two refinement stages around the best.
_COARSE_STEP_DEG = 3.0
_REFINE_STAGES_DEG = ((0.5, 3), (0.1, 3))  # (step, count each side)
# Widest neighbourhood (sectors) of the shared-rise test; see _shared_rise.
_MAX_BUMP_SECTORS = 8
# Distances to the box edge below this count as this (the criterion's d0 in Zhang et al.).
_CLOSENESS_FLOOR_M = 0.01


class ObstacleParamError(ParameterError):
    """An obstacle-detection parameter is out of range or inconsistent (message names it)."""


@dataclass(frozen=True, kw_only=True)
class ObstacleParams:
    """Crop, ground and clustering parameters; lengths in base_link metres."""

    max_range_m: float = param(80.0, min=5.0, max=300.0,
                               description='horizontal range from the sensor kept')
    min_z_m: float = param(-3.0, min=-20.0, max=20.0,
                           description='points below this base_link z are dropped')
    max_z_m: float = param(4.5, min=-20.0, max=50.0,
                           description='points above this base_link z are dropped')
    ego_min_x_m: float = param(-1.3, min=-20.0, max=20.0,
                               description='ego body box (returns of our own car): rear')
    ego_max_x_m: float = param(3.7, min=-20.0, max=20.0,
                               description='ego body box: front')
    ego_half_width_m: float = param(1.1, min=0.0, max=10.0,
                                    description='ego body box: half width')
    ground_z_m: float = param(0.0, min=-10.0, max=10.0,
                              description='ground height at the vehicle in base_link')
    ground_sector_deg: float = param(1.0, min=0.1, max=10.0,
                                     description='azimuth width of a ground grid sector')
    ground_bin_m: float = param(0.5, min=0.05, max=5.0,
                                description='range length of a ground grid cell')
    ground_max_step_m: float = param(0.2, min=0.0, max=1.0,
                                     description='height step still ground (kerbs)')
    ground_max_slope_deg: float = param(6.0, min=0.0, max=30.0,
                                        description='rise between ground cells of a sector')
    ground_max_global_slope_deg: float = param(8.0, min=0.0, max=30.0,
                                               description='ground rise seen from the vehicle')
    ground_bump_width_m: float = param(2.0, min=0.1, max=20.0,
                                       description='a rise across a ring gap narrower than '
                                       'this (seen across sectors) is an object, not a slope')
    ground_height_threshold_m: float = param(0.2, min=0.02, max=1.0,
                                             description='points this close above the ground '
                                             'are ground')
    max_obstacle_height_m: float = param(3.5, min=0.5, max=20.0,
                                         description='points higher above ground (canopies, '
                                         'signs, bridges) are ignored')
    cluster_cell_m: float = param(0.3, min=0.05, max=2.0,
                                  description='BEV grid cell of the clustering')
    cluster_diagonal: bool = param(True, description='8-connected (else 4-connected) cells')
    cluster_gap_cells: int = param(1, min=0, max=5,
                                   description='empty cells bridged between occupied ones '
                                   '(sparse returns at range and on grazing surfaces)')
    min_cluster_points: int = param(3, min=1, max=100000,
                                    description='smaller clusters are noise')
    max_cluster_length_m: float = param(25.0, min=0.5, max=500.0,
                                        description='longer clusters (walls) are dropped')
    max_cluster_width_m: float = param(25.0, min=0.5, max=500.0,
                                       description='wider clusters are dropped')
    min_box_extent_m: float = param(0.1, min=0.01, max=2.0,
                                    description='least box length/width (single-face clusters)')
    max_clusters: int = param(500, min=1, max=100000,
                              description='nearest clusters kept per frame')

    def __post_init__(self) -> None:
        check_fields(self, ObstacleParamError, 'obstacles: ')
        for low, high in (('min_z_m', 'max_z_m'), ('ego_min_x_m', 'ego_max_x_m')):
            if getattr(self, low) >= getattr(self, high):
                raise ObstacleParamError(
                    f'obstacles: parameter {low} = {getattr(self, low)} must be < {high} = '
                    f'{getattr(self, high)}')


@dataclass(frozen=True)
class ObstacleCluster:
    """One obstacle: oriented box in base_link (centre, yaw about +z, l >= w, h), its points.

    yaw_rad is in [-pi/2, pi/2): a cluster has no heading, only an orientation.
    """

    x_m: float
    y_m: float
    z_m: float
    yaw_rad: float
    length_m: float
    width_m: float
    height_m: float
    point_count: int
    label: int = LABEL_UNKNOWN


@dataclass(frozen=True)
class ObstacleStats:
    """Point and cluster counts of one frame (for diagnostics)."""

    input_points: int = 0
    non_finite_points: int = 0
    cropped_points: int = 0
    ground_points: int = 0
    high_points: int = 0
    obstacle_points: int = 0
    components: int = 0
    clusters_too_small: int = 0
    clusters_too_large: int = 0
    clusters_over_limit: int = 0


@dataclass(frozen=True, eq=False)
class ObstacleResult:
    """Obstacles of one frame.

    clusters: the boxes, nearest first. boxes (K, 7) float64 [x, y, z, yaw, length, width,
    height] and point_counts (K,) hold the same. point_cluster (N,) int32: index into clusters
    of each input point, -1 for ground, cropped, non-finite, too-high and rejected points.
    ground_mask (N,) bool: points classified as ground. obstacle_mask (N,) bool: the points
    that were clustered (neither cropped, ground nor too high), kept or not. reason: '' when
    the frame was processed (with or without obstacles), else why the result is empty.
    stage_ms: wall time of the stages that ran ('crop', 'ground', 'cluster', 'boxes').
    """

    clusters: tuple[ObstacleCluster, ...]
    boxes: np.ndarray
    point_counts: np.ndarray
    point_cluster: np.ndarray
    ground_mask: np.ndarray
    obstacle_mask: np.ndarray
    stats: ObstacleStats = field(default_factory=ObstacleStats)
    reason: str = ''
    stage_ms: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clusters)


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _empty_result(point_count: int, reason: str, stats: ObstacleStats,
                  ground_mask: np.ndarray | None = None,
                  stage_ms: dict | None = None,
                  obstacle_mask: np.ndarray | None = None) -> ObstacleResult:
    return ObstacleResult(
        clusters=(), boxes=np.zeros((0, 7)), point_counts=np.zeros(0, np.int64),
        point_cluster=np.full(point_count, -1, np.int32),
        ground_mask=ground_mask if ground_mask is not None else np.zeros(point_count, bool),
        obstacle_mask=obstacle_mask if obstacle_mask is not None
        else np.zeros(point_count, bool),
        stats=stats, reason=reason, stage_ms=stage_ms or {})


def _xyz_of(points: Any) -> tuple[tuple[np.ndarray, ...] | None, int, str]:
    """Contiguous float32 (x, y, z) columns of the input and its point count, or None and why.

    Columns rather than an (N, 3) array: every later stage works per axis, and contiguous 1-D
    arrays make those passes several times faster than strided ones.
    """
    if not isinstance(points, np.ndarray):
        try:
            points = np.asarray(points, dtype=np.float32)
        except (TypeError, ValueError) as error:
            return None, 0, f'points are not numeric: {error}'
    if points.dtype.names is not None:
        if not {'x', 'y', 'z'} <= set(points.dtype.names):
            return None, 0, f'structured points lack x, y, z fields: {points.dtype.names}'
        flat = points.reshape(-1)
        return tuple(np.ascontiguousarray(flat[name], dtype=np.float32)
                     for name in 'xyz'), len(flat), ''
    if points.ndim != 2 or points.shape[1] < 3:
        return None, 0, f'points must have shape (N, >=3), got {points.shape}'
    if points.dtype.kind not in 'fiu':
        return None, len(points), f'points must be numeric, got dtype {points.dtype}'
    return tuple(np.ascontiguousarray(points[:, axis], dtype=np.float32)
                 for axis in range(3)), len(points), ''


class ObstacleDetector:
    """Ground removal + clustering for one LiDAR; grids are sized once here.

    sensor_to_base_link: 4x4 transform of the sensor frame in base_link (the LiDAR extrinsic),
    or None when points arrive in base_link. The polar ground grid is centred on the sensor.
    Not thread-safe (reuses buffers): one detector per processing thread.
    """

    def __init__(self, params: ObstacleParams | None = None,
                 sensor_to_base_link: np.ndarray | None = None) -> None:
        params = ObstacleParams() if params is None else params
        if not isinstance(params, ObstacleParams):
            raise TypeError(f'params must be ObstacleParams, got {type(params).__name__}')
        self.params = params
        if sensor_to_base_link is None:
            self._rotation = None
            self._translation = np.zeros(3, np.float32)
        else:
            transform = np.asarray(sensor_to_base_link, dtype=np.float64)
            if transform.shape != (4, 4) or not np.all(np.isfinite(transform)):
                raise ValueError('sensor_to_base_link must be a finite 4x4 transform, got '
                                 f'shape {transform.shape}')
            self._rotation = transform[:3, :3].astype(np.float32)
            self._translation = transform[:3, 3].astype(np.float32)
        p = params
        self._sensor_xy = self._translation[:2].astype(np.float64)
        self._sectors = max(1, int(math.ceil(360.0 / p.ground_sector_deg)))
        self._bins = int(math.ceil(p.max_range_m / p.ground_bin_m)) + 1
        self._bin_centres_m = (np.arange(self._bins) + 0.5) * p.ground_bin_m
        # A margin of grow cells keeps dilation offsets from wrapping across grid rows.
        self._grow = (p.cluster_gap_cells + 1) // 2
        self._cells_x = self._cells_y = int(math.ceil(2.0 * p.max_range_m / p.cluster_cell_m)) \
            + 1 + 2 * self._grow
        self._grid_origin = self._sensor_xy - p.max_range_m - self._grow * p.cluster_cell_m
        self._structure = ndimage.generate_binary_structure(2, 2 if p.cluster_diagonal else 1)
        offsets = np.argwhere(ndimage.iterate_structure(self._structure, max(self._grow, 1))) \
            - max(self._grow, 1)
        self._grow_offsets = offsets[:, 0] * self._cells_x + offsets[:, 1]  # used if grow > 0
        self._occupancy = np.zeros(self._cells_x * self._cells_y, bool)

    # ------------------------------------------------------------------------------------
    def detect(self, points: Any) -> ObstacleResult:
        """Obstacle clusters of one sweep; see the module docstring for input and stages."""
        start = time.perf_counter()
        columns, count, problem = _xyz_of(points)
        if columns is None:
            return _empty_result(count, f'bad input: {problem}', ObstacleStats(count))
        if count == 0:
            return _empty_result(0, 'empty cloud', ObstacleStats(0))
        p = self.params
        with np.errstate(invalid='ignore', over='ignore'):  # NaN/inf are counted below
            if self._rotation is not None:
                columns = _rigid_transform(columns, self._rotation, self._translation)
            x, y, z = columns
            finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
            non_finite = count - int(np.count_nonzero(finite))
            dx = x - np.float32(self._sensor_xy[0])
            dy = y - np.float32(self._sensor_xy[1])
            range2 = dx * dx
            range2 += dy * dy
            keep = finite & (range2 <= np.float32(p.max_range_m ** 2))
            keep &= (z >= p.min_z_m) & (z <= p.max_z_m)
            keep &= ~((x >= p.ego_min_x_m) & (x <= p.ego_max_x_m)
                      & (np.abs(y) <= p.ego_half_width_m))
        index = np.flatnonzero(keep)
        stats = dict(input_points=count, non_finite_points=non_finite,
                     cropped_points=count - non_finite - len(index))
        if len(index) == 0:
            reason = 'no finite points' if non_finite == count else 'no points inside the crop'
            return _empty_result(count, reason, ObstacleStats(**stats))
        x, y, z = x[index], y[index], z[index]
        dx, dy = dx[index], dy[index]
        range_m = np.sqrt(range2[index])
        stage_ms = {'crop': _elapsed_ms(start)}

        start = time.perf_counter()
        ground_height, ground_tolerance = self._ground_height(dx, dy, range_m, z)
        is_ground = z <= ground_tolerance + np.float32(p.ground_height_threshold_m)
        is_obstacle = ~is_ground & (z - ground_height <= p.max_obstacle_height_m)
        ground_mask = np.zeros(count, bool)
        ground_mask[index[is_ground]] = True
        stats.update(ground_points=int(np.count_nonzero(is_ground)),
                     obstacle_points=int(np.count_nonzero(is_obstacle)))
        stats['high_points'] = len(index) - stats['ground_points'] - stats['obstacle_points']
        obstacle = np.flatnonzero(is_obstacle)
        obstacle_mask = np.zeros(count, bool)
        obstacle_mask[index[obstacle]] = True
        stage_ms['ground'] = _elapsed_ms(start)
        if len(obstacle) == 0:
            return _empty_result(count, '', ObstacleStats(**stats), ground_mask, stage_ms,
                                 obstacle_mask)
        return self._cluster(index[obstacle], x[obstacle], y[obstacle], z[obstacle],
                             ground_height[obstacle], count, stats,
                             (ground_mask, obstacle_mask), stage_ms)

    # ------------------------------------------------------------------------------------
    def _ground_height(self, dx: np.ndarray, dy: np.ndarray, range_m: np.ndarray,
                       z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ground height (M,) under each point from the polar lowest-point walk, and the
        highest ground height of its cell's 3 x 3 neighbourhood (the ground test's base)."""
        p = self.params
        sectors, bins = self._sectors, self._bins
        sector = ((np.arctan2(dy, dx) + np.pi) * (sectors / (2.0 * np.pi))).astype(np.int32)
        np.clip(sector, 0, sectors - 1, out=sector)
        range_bin = (range_m * (1.0 / p.ground_bin_m)).astype(np.int32)
        np.clip(range_bin, 0, bins - 1, out=range_bin)
        # Grids are (bins, sectors): the walk below reads one contiguous row per range bin.
        cell = range_bin * np.int32(sectors) + sector
        lowest = np.full(sectors * bins, np.inf, np.float32)
        np.minimum.at(lowest, cell, z)
        highest = np.full(sectors * bins, -np.inf, np.float32)
        np.maximum.at(highest, cell, z)
        # Only flat cells (spread within a kerb step) may follow a slope across a gap: a cell
        # that holds just the side of an object must not lift the ground to its lowest hit.
        with np.errstate(invalid='ignore'):
            flat = (highest - lowest <= p.ground_max_step_m).reshape(bins, sectors)
        lowest = lowest.reshape(bins, sectors)

        # Pass 1 follows kerb steps and slopes; pass 2 repeats it but lets a rise that only
        # the slope allowance explains through where the neighbouring sectors' pass-1 ground
        # rises as well (see _shared_rise).
        _, accepted = self._walk(lowest, flat, None)
        ground, _ = self._walk(lowest, flat, self._shared_rise(lowest, accepted))
        # A cell that straddles a kerb holds road and sidewalk returns; its lowest point is the
        # road, so sidewalk returns sit a kerb height up, within noise of the threshold. Points
        # are therefore ground up to the highest ground of the neighbouring cells.
        tolerance = ndimage.maximum_filter(ground, size=3, mode=('nearest', 'wrap'))
        return ground.reshape(-1)[cell], tolerance.reshape(-1)[cell]

    def _walk(self, lowest: np.ndarray, flat: np.ndarray,
              shared_rise: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Outward walk over range bins, vectorised over sectors.

        lowest, flat: (bins, sectors) lowest point per cell (inf when empty) and whether the
        cell's points are within a kerb step of each other. shared_rise: (bins, sectors) where a
        slope-only rise is allowed, or None to allow it everywhere. Returns the ground height
        per cell (the last accepted cell's lowest point) and the accepted-cell mask.
        """
        p = self.params
        bins, sectors = lowest.shape
        step = np.float32(p.ground_max_step_m)
        tan_local = math.tan(math.radians(p.ground_max_slope_deg))
        slope_range = (tan_local * self._bin_centres_m).astype(np.float32)
        slope_allowance = step + slope_range
        global_band = p.ground_max_step_m + math.tan(
            math.radians(p.ground_max_global_slope_deg)) * self._bin_centres_m
        with np.errstate(invalid='ignore'):
            in_band = np.abs(lowest - p.ground_z_m) <= global_band[:, None]
        slope_gate = flat & in_band
        if shared_rise is not None:
            slope_gate &= shared_rise
        reference = np.full(sectors, p.ground_z_m, np.float32)
        reference_slope = np.zeros(sectors, np.float32)  # tan(slope) * range of reference
        rise = np.empty(sectors, np.float32)
        allowed = np.empty(sectors, np.float32)
        by_slope = np.empty(sectors, bool)
        ground = np.empty((bins, sectors), np.float32)
        accepted = np.empty((bins, sectors), bool)
        # The hot loop: preallocated buffers, since per-call overhead dominates at ~360 sectors.
        with np.errstate(invalid='ignore'):
            for b in range(bins):
                candidate, ok = lowest[b], accepted[b]
                np.subtract(candidate, reference, out=rise)
                np.abs(rise, out=rise)
                np.subtract(slope_allowance[b], reference_slope, out=allowed)
                np.less_equal(rise, allowed, out=by_slope)
                by_slope &= slope_gate[b]
                np.less_equal(rise, step, out=ok)
                ok &= in_band[b]
                ok |= by_slope
                np.copyto(reference, candidate, where=ok)
                np.copyto(reference_slope, slope_range[b], where=ok)
                ground[b] = reference
        return ground, accepted

    def _shared_rise(self, lowest: np.ndarray, accepted: np.ndarray) -> np.ndarray:
        """(bins, sectors): whether a cell's lowest point is at most ground_height_threshold_m
        above the ground of the neighbouring sectors on both sides (lowest pass-1 ground within
        ground_bump_width_m on each side, interpolated in range between accepted cells).

        A terrain slope rises in the neighbouring sectors too; a low object seen by a single
        ring (0.5 m debris at 30 m gives one ring 0.25 m up) does not.
        """
        p = self.params
        bins, sectors = lowest.shape
        rows = np.arange(bins)[:, None]
        columns = np.arange(sectors)[None, :]
        prev_bin = np.maximum.accumulate(np.where(accepted, rows, -1), axis=0)
        next_bin = np.minimum.accumulate(np.where(accepted, rows, bins)[::-1], axis=0)[::-1]
        has_prev, has_next = prev_bin >= 0, next_bin < bins
        prev_bin, next_bin = np.maximum(prev_bin, 0), np.minimum(next_bin, bins - 1)
        prev_z = np.where(has_prev, lowest[prev_bin, columns], np.float32(p.ground_z_m))
        next_z = np.where(has_next, lowest[next_bin, columns], prev_z)
        prev_r = np.where(has_prev, self._bin_centres_m[prev_bin], 0.0)
        next_r = self._bin_centres_m[next_bin]
        fraction = np.clip((self._bin_centres_m[:, None] - prev_r)
                           / np.maximum(next_r - prev_r, 1e-6), 0.0, 1.0)
        profile = prev_z + (next_z - prev_z) * np.where(has_next, fraction, 0.0)
        sector_rad = 2.0 * np.pi / sectors
        # Capped: at short range ring gaps are small, so slope-only rises hardly occur there.
        widths = np.clip(np.ceil(p.ground_bump_width_m / (self._bin_centres_m * sector_rad)),
                         1, min(_MAX_BUMP_SECTORS, max(1, sectors // 2))).astype(int)
        sides = np.empty_like(profile)
        for width in np.unique(widths):
            block = widths == width
            window = ndimage.minimum_filter1d(profile[block], size=int(width), axis=1,
                                              mode='wrap')
            sides[block] = np.maximum(np.roll(window, -(1 + width // 2), axis=1),
                                      np.roll(window, width - width // 2, axis=1))
        with np.errstate(invalid='ignore'):
            return lowest - sides <= p.ground_height_threshold_m

    # ------------------------------------------------------------------------------------
    def _cluster(self, source: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 ground_height: np.ndarray, count: int, stats: dict,
                 masks: tuple[np.ndarray, np.ndarray], stage_ms: dict) -> ObstacleResult:
        p = self.params
        ground_mask, obstacle_mask = masks
        start = time.perf_counter()
        inv_cell = 1.0 / p.cluster_cell_m
        ix = ((x - self._grid_origin[0]) * inv_cell).astype(np.int32)
        iy = ((y - self._grid_origin[1]) * inv_cell).astype(np.int32)
        np.clip(ix, 0, self._cells_x - 1, out=ix)
        np.clip(iy, 0, self._cells_y - 1, out=iy)
        cell = iy * np.int32(self._cells_x) + ix
        occupancy = self._occupancy
        occupancy[:] = False
        occupancy[cell] = True
        if self._grow:
            # Grow occupied cells by gap/2 (rounded up) so cells `gap` apart meet; points keep
            # the label of their own cell. Offsets on the occupied cells only: far cheaper than
            # a dilation of the whole grid.
            occupied = np.flatnonzero(occupancy)
            occupancy[(occupied[:, None] + self._grow_offsets[None, :]).reshape(-1)] = True
        labels, components = ndimage.label(occupancy.reshape(self._cells_y, self._cells_x),
                                           structure=self._structure)
        stats['components'] = int(components)
        label = labels.reshape(-1)[cell]  # 1..components
        counts = np.bincount(label, minlength=components + 1)
        top = np.full(components + 1, -np.inf)
        np.maximum.at(top, label, z)
        bottom = np.full(components + 1, np.inf)
        np.minimum.at(bottom, label, ground_height)

        small = counts < p.min_cluster_points
        small[0] = True
        stats['clusters_too_small'] = int(np.count_nonzero(small[1:]))
        # Any rectangle of length L has an axis-aligned extent of at most sqrt(2) L, so a
        # component whose grid extent (less the growth margin) exceeds sqrt(2) times the
        # length limit is too large for sure: drop walls before the costlier box fit.
        extent_cells = np.zeros(components + 1)
        for index, found in enumerate(ndimage.find_objects(labels), start=1):
            if found is not None:
                extent_cells[index] = max(found[0].stop - found[0].start,
                                          found[1].stop - found[1].start)
        certainly_large = (extent_cells - 2 * self._grow - 1) * p.cluster_cell_m \
            > math.sqrt(2.0) * p.max_cluster_length_m
        certainly_large &= ~small
        candidates = np.flatnonzero(~small & ~certainly_large)
        early_large = int(np.count_nonzero(certainly_large))
        stage_ms['cluster'] = _elapsed_ms(start)
        if len(candidates) == 0:
            stats['clusters_too_large'] = early_large
            return _empty_result(count, '', ObstacleStats(**stats), ground_mask, stage_ms,
                                 obstacle_mask)
        start = time.perf_counter()
        # Thin each cell to its extreme points in 8 directions before the box fit.
        keep_point = np.isin(label, candidates) if len(candidates) < components else (
            np.ones(len(label), bool))
        thin = np.flatnonzero(keep_point)
        thin = thin[_cell_extremes(x[thin], y[thin], cell[thin], len(occupancy))]
        boxes2d = _fit_rectangles(x[thin].astype(np.float64), y[thin].astype(np.float64),
                                  label[thin], components)
        boxes2d = boxes2d[candidates]
        length = np.maximum(boxes2d[:, 3], p.min_box_extent_m)
        width = np.maximum(boxes2d[:, 4], p.min_box_extent_m)
        too_large = (length > p.max_cluster_length_m) | (width > p.max_cluster_width_m)
        stats['clusters_too_large'] = early_large + int(np.count_nonzero(too_large))
        keep = ~too_large
        candidates, boxes2d = candidates[keep], boxes2d[keep]
        length, width = length[keep], width[keep]
        distance = np.hypot(boxes2d[:, 0] - self._sensor_xy[0],
                            boxes2d[:, 1] - self._sensor_xy[1])
        order = np.argsort(distance, kind='stable')
        stats['clusters_over_limit'] = max(0, len(order) - p.max_clusters)
        order = order[:p.max_clusters]
        candidates = candidates[order]
        z_bottom = bottom[candidates]
        z_top = top[candidates]
        boxes = np.column_stack([boxes2d[order, 0], boxes2d[order, 1], 0.5 * (z_top + z_bottom),
                                 boxes2d[order, 2], length[order], width[order],
                                 z_top - z_bottom])
        point_counts = counts[candidates].astype(np.int64)
        cluster_of_label = np.full(components + 1, -1, np.int32)
        cluster_of_label[candidates] = np.arange(len(candidates), dtype=np.int32)
        point_cluster = np.full(count, -1, np.int32)
        point_cluster[source] = cluster_of_label[label]
        clusters = tuple(ObstacleCluster(*map(float, row), int(n))
                         for row, n in zip(boxes, point_counts))
        stage_ms['boxes'] = _elapsed_ms(start)
        return ObstacleResult(clusters=clusters, boxes=boxes, point_counts=point_counts,
                              point_cluster=point_cluster, ground_mask=ground_mask,
                              obstacle_mask=obstacle_mask, stats=ObstacleStats(**stats),
                              stage_ms=stage_ms)


def _rigid_transform(columns: tuple[np.ndarray, ...], rotation: np.ndarray,
                     translation: np.ndarray) -> tuple[np.ndarray, ...]:
    """rotation @ p + translation on (x, y, z) float32 columns, one fused axis at a time: a
    BLAS (N, 3) @ (3, 3) product spins up OpenBLAS threads that starve other work on small
    CPUs (measured 80 ms for 110k points on a loaded 2-core machine)."""
    out = []
    scratch = np.empty_like(columns[0])
    for row in range(3):
        result = np.multiply(columns[0], rotation[row, 0])
        for axis in (1, 2):
            np.multiply(columns[axis], rotation[row, axis], out=scratch)
            result += scratch
        result += translation[row]
        out.append(result)
    return tuple(out)


def _cell_extremes(x: np.ndarray, y: np.ndarray, cell: np.ndarray, cells: int) -> np.ndarray:
    """Indices of the points that are extreme within their cell (0 <= cell < cells) along
    +-x, +-y, +-(x+y), +-(x-y): the cell's hull up to an octagon, a few centimetres for
    decimetre cells. Whole-grid tables avoid sorting the points by cell."""
    keep = np.zeros(len(x), bool)
    high = np.empty(cells, np.float32)
    low = np.empty(cells, np.float32)
    for projection in (x, y, x + y, x - y):
        high.fill(-np.inf)
        low.fill(np.inf)
        np.maximum.at(high, cell, projection)
        np.minimum.at(low, cell, projection)
        keep |= projection == high[cell]
        keep |= projection == low[cell]
    return np.flatnonzero(keep)


def _fit_rectangles(x: np.ndarray, y: np.ndarray, label: np.ndarray,
                    labels: int) -> np.ndarray:
    """(labels + 1, 5) [x, y, yaw, length, width] L-shape rectangle fit per label value.

    The orientation maximises the closeness criterion of Zhang et al., "Efficient L-Shape
    Fitting for Vehicle Detection Using Laser Scanners" (IV 2017): points near the rectangle's
    edges score 1/distance. Minimum area is ambiguous for the usual L of a car's front and
    side (a right triangle fits equally well along its hypotenuse). Rows of labels without
    points are NaN; length >= width, yaw in [-pi/2, pi/2).
    """
    order = np.argsort(label, kind='stable')
    x, y, label = x[order], y[order], label[order]
    present, starts = np.unique(label, return_index=True)
    row = np.searchsorted(present, label)
    # Centre each cluster first so float rounding of far coordinates does not matter.
    centre_x = np.add.reduceat(x, starts) / np.diff(np.r_[starts, len(x)])
    centre_y = np.add.reduceat(y, starts) / np.diff(np.r_[starts, len(x)])
    x, y = x - centre_x[row], y - centre_y[row]
    coarse = np.deg2rad(np.arange(0.0, 90.0, _COARSE_STEP_DEG))
    best = _best_orientation(x, y, row, starts,
                             np.broadcast_to(coarse, (len(present), len(coarse))))
    for step_deg, half_count in _REFINE_STAGES_DEG:
        offsets = np.deg2rad(step_deg * np.arange(-half_count, half_count + 1))
        best = _best_orientation(x, y, row, starts, best[:, None] + offsets[None, :])
    cos_b, sin_b = np.cos(best)[row], np.sin(best)[row]
    u, v = x * cos_b + y * sin_b, y * cos_b - x * sin_b
    low_u, high_u = np.minimum.reduceat(u, starts), np.maximum.reduceat(u, starts)
    low_v, high_v = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    centre_u, centre_v = 0.5 * (low_u + high_u), 0.5 * (low_v + high_v)
    size_u, size_v = high_u - low_u, high_v - low_v
    cos_b, sin_b = np.cos(best), np.sin(best)
    out = np.full((labels + 1, 5), np.nan)
    out[present, 0] = centre_x + centre_u * cos_b - centre_v * sin_b
    out[present, 1] = centre_y + centre_u * sin_b + centre_v * cos_b
    swap = size_v > size_u
    yaw = np.where(swap, best + 0.5 * np.pi, best)
    out[present, 2] = (yaw + 0.5 * np.pi) % np.pi - 0.5 * np.pi
    out[present, 3] = np.where(swap, size_v, size_u)
    out[present, 4] = np.where(swap, size_u, size_v)
    return out


def _best_orientation(x: np.ndarray, y: np.ndarray, row: np.ndarray, starts: np.ndarray,
                      angles: np.ndarray) -> np.ndarray:
    """Per cluster, the angle of `angles` (L, A) with the highest closeness score.

    x, y (M,) points sorted by cluster, row (M,) their cluster row, starts (L,) first index
    of each cluster.
    """
    point_angles = np.asarray(angles)[row]            # (M, A)
    cos_a, sin_a = np.cos(point_angles), np.sin(point_angles)
    u = x[:, None] * cos_a + y[:, None] * sin_a
    v = y[:, None] * cos_a - x[:, None] * sin_a
    du = np.minimum(u - np.minimum.reduceat(u, starts)[row],
                    np.maximum.reduceat(u, starts)[row] - u)
    dv = np.minimum(v - np.minimum.reduceat(v, starts)[row],
                    np.maximum.reduceat(v, starts)[row] - v)
    score = np.add.reduceat(1.0 / np.maximum(np.minimum(du, dv), _CLOSENESS_FLOOR_M), starts)
    choice = np.argmax(score, axis=1)[:, None]
    return np.take_along_axis(np.asarray(angles), choice, axis=1)[:, 0]


def detect_obstacles(points: Any, params: ObstacleParams | None = None,
                     sensor_to_base_link: np.ndarray | None = None) -> ObstacleResult:
    """One-shot `ObstacleDetector(params, sensor_to_base_link).detect(points)`."""
    return ObstacleDetector(params, sensor_to_base_link).detect(points)


# ----------------------------------------------------------------------------------------
# Detector fusion
# ----------------------------------------------------------------------------------------

def _detection_array(detections: Any) -> np.ndarray:
    """(M, 5) [x, y, yaw, length, width] from an array or objects with x_m, y_m, yaw_rad,
    length_m, width_m attributes."""
    if isinstance(detections, np.ndarray) or (
            isinstance(detections, Sequence) and detections
            and isinstance(detections[0], (Sequence, np.ndarray))):
        array = np.asarray(detections, dtype=np.float64)
        if array.size == 0:
            return np.zeros((0, 5))
        if array.ndim != 2 or array.shape[1] < 5:
            raise ValueError('detections must be (M, >=5) [x, y, yaw, length, width], got '
                             f'shape {array.shape}')
        return array[:, :5]
    rows = [(d.x_m, d.y_m, d.yaw_rad, d.length_m, d.width_m) for d in detections]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)


def merge_with_detections(clusters: Sequence[ObstacleCluster] | ObstacleResult,
                          detections: Any, *,
                          iou_threshold: float = DEFAULT_MERGE_IOU) -> tuple[ObstacleCluster,
                                                                              ...]:
    """Clusters that no detector box explains, as UNKNOWN obstacles.

    A cluster is dropped when its BEV IoU with a detection exceeds `iou_threshold`, or its
    centre lies inside a detection, or a detection's centre lies inside it. detections: (M,
    >=5) array [x_m, y_m, yaw_rad, length_m, width_m] or objects with those attributes, in
    the clusters' frame (base_link). Non-finite or non-positive detection boxes are ignored.
    """
    from robotaxi_stack.replay.metrics import bev_iou  # the project's one oriented-IoU

    if isinstance(clusters, ObstacleResult):
        clusters = clusters.clusters
    clusters = tuple(clusters)
    dets = _detection_array(detections)
    valid = np.all(np.isfinite(dets), axis=1) & (dets[:, 3] > 0.0) & (dets[:, 4] > 0.0)
    dets = dets[valid]
    if not clusters or len(dets) == 0:
        return tuple(ObstacleCluster(c.x_m, c.y_m, c.z_m, c.yaw_rad, c.length_m, c.width_m,
                                     c.height_m, c.point_count, LABEL_UNKNOWN)
                     for c in clusters)
    boxes = np.array([(c.x_m, c.y_m, c.yaw_rad, c.length_m, c.width_m) for c in clusters])
    explained = (points_in_bev_boxes(boxes[:, :2], dets)
                 | points_in_bev_boxes(dets[:, :2], boxes).T)
    # IoU only for pairs whose circumscribed circles meet (the rest cannot overlap).
    reach = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])[:, None] \
        + 0.5 * np.hypot(dets[:, 3], dets[:, 4])[None, :]
    gap = np.hypot(boxes[:, None, 0] - dets[None, :, 0], boxes[:, None, 1] - dets[None, :, 1])
    pair_k, pair_m = np.nonzero((gap < reach) & ~explained)
    if len(pair_k):
        iou = bev_iou(boxes[pair_k], dets[pair_m])
        explained[pair_k[iou > iou_threshold], pair_m[iou > iou_threshold]] = True
    keep = ~explained.any(axis=1)
    return tuple(ObstacleCluster(c.x_m, c.y_m, c.z_m, c.yaw_rad, c.length_m, c.width_m,
                                 c.height_m, c.point_count, LABEL_UNKNOWN)
                 for c, k in zip(clusters, keep) if k)
