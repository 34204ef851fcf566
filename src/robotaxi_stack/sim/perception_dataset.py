"""Labelled perception frames from the simulator's own sensor models (pure core, no rclpy).

Generator API (what the detector trainers and the held-out evaluation call)::

    sample = generate_sample(seed, split='train', lidar=lidar_config(), camera=True)
    sample.points             (N,) LIDAR_POINT_DTYPE in lidar_top: what /sensing/lidar/points
                              carries; sample.base_from_lidar (4, 4) moves it into base_link
    sample.point_actor_index  (N,) int64 row of boxes_base each point hit, -1 for static surfaces
    sample.boxes_base         (M, 7) x, y, z (centre), length, width, height, yaw in base_link
    sample.labels             (M,) uint8 ObjectClass codes (debris is UNKNOWN = 0);
                              train_class_indices(labels) -> index into TRAIN_CLASSES or -1
    sample.lidar_point_counts (M,) returns on each box (0: not seen by the LiDAR)
    sample.image              (H, W, 3) uint8 RGB of camera_front (None with camera=False)
    sample.image_boxes        (M, 4) x0, y0, x1, y1 pixel edges of each box's visible pixels
    sample.camera_matrix, camera_from_base, image_size: the calibration to project with

Why generated rather than recorded: issue 5 trains the ONNX detectors on data the simulator
makes and evaluates them on held-out simulated data, so labels are exact (every LiDAR return
and pixel knows the actor it hit) and a seed regenerates any frame.

One sample: a grid town drawn from a per-split pool of GridTownParams (towns are expensive to
build, ~0.1-0.5 s, so each split uses a fixed pool of parameter sets drawn from that split's
ranges and caches the built towns; results do not depend on the cache), the ego on a random
lane pose, and actors placed within PLACEMENT_RADIUS_M of base_link without overlapping each
other or the ego:
- cars driving in both directions on any lane (intersections included) and parked at the kerb;
- trucks and buses on lanes; bicycles at the right edge of kerb lanes;
- pedestrians on sidewalks (standing on the kerb-level block), on crosswalks and on the road
  edge; UNKNOWN debris (SurfaceLabel.STATIC_OBJECT boxes 0.3-1.0 m) on lanes.
Sizes vary around the simulator's per-type sizes (actors.DEFAULT_SIZES_M). Then one LiDAR sweep
from vehicle.lidar_top and, optionally, one camera_front frame with per-pixel ground truth.

Splits: the 'train' and 'heldout' samples come from disjoint seed streams
(SeedSequence([split_index, 0, seed])), disjoint town pools drawn from different parameter
ranges (SeedSequence([split_index, 1, town_index])) and different actor mixes, so held-out
frames show towns, seeds and mixes the detectors never saw in training.

Frames and conventions: base_link is the ego's rear-axle centre on the ground (z = 0 is the road
surface); box z is the box centre; range of a box means the BEV distance of its centre from
base_link. Image boxes use the camera model's pixel convention (pixel centres at integer
coordinates), so x0 = u_min - 0.5 and x1 = u_max + 0.5 enclose whole pixels.

Not thread-safe across threads sharing the caches (generation holds a module lock); run
parallel generators as processes.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from robotaxi_stack.common.geometry import invert_transform, transform_from_xyzrpy, wrap_angle
from robotaxi_stack.sim import maps
from robotaxi_stack.sim.actors import DEFAULT_SIZES_M, ActorType, ObjectLabel
from robotaxi_stack.sim.camera import CameraConfig, CameraModel
from robotaxi_stack.sim.lidar import LidarConfig, LidarModel
from robotaxi_stack.sim.maps.town import polyline_arclength
from robotaxi_stack.sim.scene import NO_ACTOR_ID, SimScene, SurfaceLabel
from robotaxi_stack.sim.vehicle_dynamics import VehicleParams, load_vehicle
from robotaxi_stack.sim.world import camera_config, static_boxes

SPLITS = ('train', 'heldout')
TRAIN_CLASSES = ('car', 'truck_bus', 'bicycle', 'pedestrian')  # detector classes, index order
# ObjectLabel values equal the robotaxi_msgs/ObjectClass constants.
LABEL_UNKNOWN = int(ObjectLabel.UNKNOWN)
LABEL_CAR = int(ObjectLabel.CAR)
LABEL_TRUCK = int(ObjectLabel.TRUCK)
LABEL_BUS = int(ObjectLabel.BUS)
LABEL_BICYCLE = int(ObjectLabel.BICYCLE)
LABEL_MOTORCYCLE = int(ObjectLabel.MOTORCYCLE)
LABEL_PEDESTRIAN = int(ObjectLabel.PEDESTRIAN)
# ObjectClass code -> TRAIN_CLASSES index (-1: not a detector class, e.g. UNKNOWN debris).
TRAIN_CLASS_OF_LABEL = np.array([-1, 0, 1, 1, 2, -1, 3], dtype=np.int64)

# Actor centres lie within this BEV distance of base_link; a bit beyond the 80 m LiDAR range so
# that objects at the range limit are partly seen rather than absent.
PLACEMENT_RADIUS_M = 90.0
# Debris requested ahead must fit in front of the ego and within the placement radius.
MAX_DEBRIS_AHEAD_M = 85.0
DEBRIS_AHEAD_SIZE_M = 0.5
# Default sensor of the dataset: issue 5's ~115k-ray, 10 Hz, 80 m sweep.
DEFAULT_LIDAR = {'channels': 64, 'points_per_revolution': 1800, 'range_m': 80.0,
                 'noise_m': 0.02, 'dropout': 0.01, 'hz': 10.0}

# Clearance kept between actor footprints [m] (each box inflated by half of it).
_ACTOR_GAP_M = 0.3
# Clearance around the ego body: nothing touches the car the sensors are on.
_EGO_GAP_M = 1.0
_LANE_SAMPLE_SPACING_M = 1.0
_POSITION_ATTEMPTS = 25
_EGO_ATTEMPTS = 200
# Ego starts on a turn lanelet (inside an intersection) this often, for diverse headings.
_EGO_ON_TURN_PROBABILITY = 0.15
_EGO_LATERAL_JITTER_M = 0.3
_EGO_YAW_JITTER_RAD = 0.03
_SIDEWALK_CANDIDATES = 64
# Most actors are placed where the sensors can see them (in line of sight past the buildings):
# in a grid town most of the placement disc lies behind facades, and hidden actors teach a
# detector nothing. The rest keep occlusion realistic.
_VISIBLE_PLACEMENT_PROBABILITY = 0.8
# Keep sidewalk pedestrians this far inside the kerb-level block and away from facades.
_SIDEWALK_INSET_M = 0.4
_TOWN_CACHE_SIZE = 80
_MARGIN_AROUND_TOWN_M = 120.0


@dataclass(frozen=True)
class PerceptionSample:
    """One labelled frame; see the module docstring for frames and conventions.

    points (N,) LIDAR_POINT_DTYPE in lidar_top; point_actor_index (N,) int64 row of boxes_base
    (-1 for static surfaces); boxes_base (M, 7) float64 x, y, z (centre), length, width, height,
    yaw in base_link; labels (M,) uint8 ObjectClass codes; lidar_point_counts (M,) int64;
    base_from_lidar (4, 4); image (H, W, 3) uint8 or None; image_boxes (M, 4) float64 x0, y0,
    x1, y1 (NaN where no pixel is visible); image_visible_px (M,) int64; camera_matrix (3, 3) K
    of the optical frame; camera_from_base (4, 4) base_link -> camera body frame (x forward,
    z up), the frame CameraModel.project_points takes; image_size (width, height).
    """

    split: str
    seed: int
    points: np.ndarray
    point_actor_index: np.ndarray
    boxes_base: np.ndarray
    labels: np.ndarray
    lidar_point_counts: np.ndarray
    base_from_lidar: np.ndarray
    image: np.ndarray | None
    image_boxes: np.ndarray
    image_visible_px: np.ndarray
    camera_matrix: np.ndarray
    camera_from_base: np.ndarray
    image_size: tuple[int, int]


@dataclass(frozen=True)
class _SplitSpec:
    """Town parameter ranges (inclusive) and actor mix (count ranges, inclusive) of a split."""

    index: int
    town_pool_size: int
    blocks: tuple[int, int]
    block_m: tuple[float, float]
    two_lane_probability: float
    lane_width_m: tuple[float, float]
    sidewalk_width_m: tuple[float, float]
    kerb_height_m: tuple[float, float]
    building_setback_m: tuple[float, float]
    building_height_m: tuple[float, float]
    moving_cars: tuple[int, int]
    parked_cars: tuple[int, int]
    trucks_buses: tuple[int, int]
    bus_probability: float
    bicycles: tuple[int, int]
    pedestrians: tuple[int, int]
    debris: tuple[int, int]
    # Probabilities that a pedestrian stands on a sidewalk, a crosswalk, the road edge.
    pedestrian_places: tuple[float, float, float]


_SPLIT_SPECS = {
    'train': _SplitSpec(
        index=0, town_pool_size=64, blocks=(2, 3), block_m=(60.0, 110.0),
        two_lane_probability=0.5, lane_width_m=(3.0, 3.6), sidewalk_width_m=(2.0, 4.5),
        kerb_height_m=(0.1, 0.18), building_setback_m=(0.5, 4.0),
        building_height_m=(5.0, 25.0),
        moving_cars=(8, 26), parked_cars=(2, 10), trucks_buses=(0, 4), bus_probability=0.4,
        bicycles=(0, 4), pedestrians=(3, 15), debris=(0, 2),
        pedestrian_places=(0.6, 0.25, 0.15)),
    'heldout': _SplitSpec(
        index=1, town_pool_size=16, blocks=(2, 3), block_m=(75.0, 130.0),
        two_lane_probability=0.6, lane_width_m=(3.2, 3.8), sidewalk_width_m=(2.5, 5.5),
        kerb_height_m=(0.12, 0.2), building_setback_m=(1.0, 6.0),
        building_height_m=(8.0, 40.0),
        moving_cars=(10, 28), parked_cars=(0, 8), trucks_buses=(1, 5), bus_probability=0.5,
        bicycles=(1, 4), pedestrians=(5, 15), debris=(0, 2),
        pedestrian_places=(0.5, 0.3, 0.2)),
}

# Size variation: per type, (low, high) factors on DEFAULT_SIZES_M's length, width, height.
_SIZE_FACTORS = {
    ActorType.CAR: ((0.83, 1.1), (0.87, 1.05), (0.9, 1.25)),        # 3.8-5.1 m compacts..SUVs
    ActorType.TRUCK: ((0.73, 1.27), (0.84, 1.02), (0.75, 1.12)),    # 5.5-9.5 m vans..trucks
    ActorType.BUS: ((0.83, 1.08), (0.96, 1.02), (0.9, 1.06)),
    ActorType.BICYCLE: ((0.9, 1.08), (0.85, 1.25), (0.9, 1.1)),
    ActorType.PEDESTRIAN: ((0.7, 1.4), (0.75, 1.25), (0.83, 1.1)),
}
_CHILD_PROBABILITY = 0.1
_CHILD_HEIGHT_M = (1.0, 1.4)
_DEBRIS_SIZE_M = (0.3, 1.0)
_TYPE_LABEL = {ActorType.CAR: LABEL_CAR, ActorType.TRUCK: LABEL_TRUCK, ActorType.BUS: LABEL_BUS,
               ActorType.BICYCLE: LABEL_BICYCLE, ActorType.PEDESTRIAN: LABEL_PEDESTRIAN,
               ActorType.STATIC: LABEL_UNKNOWN}
_TYPE_SURFACE = {ActorType.CAR: SurfaceLabel.CAR, ActorType.TRUCK: SurfaceLabel.TRUCK,
                 ActorType.BUS: SurfaceLabel.BUS, ActorType.BICYCLE: SurfaceLabel.BICYCLE,
                 ActorType.PEDESTRIAN: SurfaceLabel.PEDESTRIAN,
                 ActorType.STATIC: SurfaceLabel.STATIC_OBJECT}

_LOCK = threading.Lock()


def lidar_config(channels: int = 64, points_per_revolution: int = 1800,
                 **overrides) -> LidarConfig:
    """The dataset's LiDAR (DEFAULT_LIDAR) with other beams/columns or any LidarConfig field.

    Unknown or out-of-range fields raise LidarConfigError (a ValueError) naming them.
    """
    values = dict(DEFAULT_LIDAR, channels=channels, points_per_revolution=points_per_revolution)
    values.update(overrides)
    return LidarConfig.from_dict(values)


def train_class_indices(labels: np.ndarray) -> np.ndarray:
    """(M,) ObjectClass codes -> (M,) int64 TRAIN_CLASSES index, -1 for UNKNOWN / MOTORCYCLE."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in 'iu' or np.any(labels < 0) \
            or np.any(labels >= len(TRAIN_CLASS_OF_LABEL)):
        raise ValueError(f'labels must be (M,) ObjectClass codes '
                         f'0..{len(TRAIN_CLASS_OF_LABEL) - 1}')
    return TRAIN_CLASS_OF_LABEL[labels.astype(np.int64)]


# --------------------------------------------------------------------------------- towns

@dataclass(frozen=True, eq=False)
class _TownAssets:
    """A built town, its ray-castable scene and the lane/sidewalk geometry placement samples.

    lane_xy (P, 2), lane_heading_rad (P,): lane centrelines every _LANE_SAMPLE_SPACING_M;
    lane_is_road (P,): on a road lanelet (not inside an intersection); lane_at_kerb (P,): a road
    lane whose right neighbour is the kerb (parking, bicycles, road-edge pedestrians).
    """

    town: maps.Town
    scene: SimScene
    lane_xy: np.ndarray
    lane_heading_rad: np.ndarray
    lane_is_road: np.ndarray
    lane_at_kerb: np.ndarray
    lane_width_m: float
    kerb_height_m: float
    sidewalk_rects: np.ndarray
    building_rects: np.ndarray
    crosswalk_rects: np.ndarray


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _pool_params(spec: _SplitSpec, town_index: int) -> maps.GridTownParams:
    """Town `town_index` of a split's pool; parameters rounded so printed values reproduce."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.index, 1, town_index]))
    sidewalk_m = round(_uniform(rng, spec.sidewalk_width_m), 2)
    return maps.GridTownParams(
        blocks_x=int(rng.integers(spec.blocks[0], spec.blocks[1] + 1)),
        blocks_y=int(rng.integers(spec.blocks[0], spec.blocks[1] + 1)),
        block_m=round(_uniform(rng, spec.block_m), 1),
        lanes_per_direction=2 if rng.random() < spec.two_lane_probability else 1,
        lane_width_m=round(_uniform(rng, spec.lane_width_m), 2),
        sidewalk_width_m=sidewalk_m,
        kerb_height_m=round(_uniform(rng, spec.kerb_height_m), 3),
        building_setback_m=round(_uniform(rng, spec.building_setback_m), 2),
        building_height_m=round(_uniform(rng, spec.building_height_m), 1),
        corner_cut_m=min(2.0, sidewalk_m))


def _lane_samples(town: maps.Town) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centreline points every _LANE_SAMPLE_SPACING_M of vehicle lanelets: xy, heading, is_road."""
    xy, heading, is_road = [], [], []
    for geom in town.lanelets.values():
        if geom.kind not in maps.VEHICLE_KINDS:
            continue
        line = geom.centerline
        s = polyline_arclength(line)
        count = max(1, int(s[-1] // _LANE_SAMPLE_SPACING_M))
        stations = (np.arange(count) + 0.5) * (s[-1] / count)
        segment = np.clip(np.searchsorted(s, stations) - 1, 0, len(line) - 2)
        direction = line[segment + 1] - line[segment]
        xy.append(np.column_stack((np.interp(stations, s, line[:, 0]),
                                   np.interp(stations, s, line[:, 1]))))
        heading.append(np.arctan2(direction[:, 1], direction[:, 0]))
        is_road.append(np.full(count, geom.kind == 'road'))
    return np.concatenate(xy), np.concatenate(heading), np.concatenate(is_road)


@functools.lru_cache(maxsize=_TOWN_CACHE_SIZE)
def _town_assets(params: maps.GridTownParams) -> _TownAssets:
    town = maps.generate_grid_town(params)
    x0, y0, x1, y1 = town.extent
    margin = _MARGIN_AROUND_TOWN_M
    scene = SimScene((x0 - margin, y0 - margin, x1 + margin, y1 + margin), static_boxes(town))
    lane_xy, heading, is_road = _lane_samples(town)
    right = np.column_stack((np.sin(heading), -np.cos(heading)))
    # A lane is at the kerb when the point half a lane (plus a little) to its right is off-road.
    beside = lane_xy + right * (0.5 * params.lane_width_m + 0.5)
    at_kerb = is_road & ~maps.is_on_road(town, beside)
    inset = np.array([_SIDEWALK_INSET_M, _SIDEWALK_INSET_M,
                      -_SIDEWALK_INSET_M, -_SIDEWALK_INSET_M])
    sidewalks = town.block_rects + inset
    sidewalks = sidewalks[np.all(sidewalks[:, 2:] > sidewalks[:, :2], axis=1)]
    # Grid-town crosswalks are axis-aligned rectangles: keep their bounds.
    crosswalks = np.array([np.concatenate((c.polygon.min(axis=0), c.polygon.max(axis=0)))
                           for c in town.crosswalks]).reshape(-1, 4)
    return _TownAssets(town=town, scene=scene, lane_xy=lane_xy, lane_heading_rad=heading,
                       lane_is_road=is_road, lane_at_kerb=at_kerb,
                       lane_width_m=params.lane_width_m, kerb_height_m=params.kerb_height_m,
                       sidewalk_rects=sidewalks, building_rects=town.building_rects,
                       crosswalk_rects=crosswalks)


@functools.lru_cache(maxsize=8)
def _vehicle(name: str) -> VehicleParams:
    return load_vehicle(name)


@functools.lru_cache(maxsize=8)
def _lidar_model(config: LidarConfig) -> LidarModel:
    return LidarModel(config)


@functools.lru_cache(maxsize=8)
def _camera_model(vehicle_name: str) -> CameraModel:
    return CameraModel(camera_config(_vehicle(vehicle_name), CameraConfig()))


# ----------------------------------------------------------------------------- placement

def _rect_corners(rects: np.ndarray) -> np.ndarray:
    """(K, 5) x, y, length, width, yaw -> (K, 4, 2) footprint corners."""
    cos, sin = np.cos(rects[:, 4]), np.sin(rects[:, 4])
    half_l, half_w = 0.5 * rects[:, 2], 0.5 * rects[:, 3]
    local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    dx = local[None, :, 0] * half_l[:, None]
    dy = local[None, :, 1] * half_w[:, None]
    return np.stack((rects[:, None, 0] + cos[:, None] * dx - sin[:, None] * dy,
                     rects[:, None, 1] + sin[:, None] * dx + cos[:, None] * dy), axis=-1)


def _overlaps_any(rect: np.ndarray, others: np.ndarray) -> bool:
    """Whether footprint `rect` (5,) overlaps any of `others` (K, 5) (separating-axis test)."""
    if len(others) == 0:
        return False
    a = _rect_corners(rect[None])            # (1, 4, 2)
    b = _rect_corners(others)                # (K, 4, 2)
    yaws = np.concatenate((np.full(len(others), rect[4]), others[:, 4]))
    axes = np.stack((np.cos(yaws), np.sin(yaws)), axis=-1)            # (2K, 2)
    axes = np.concatenate((axes, axes[:, ::-1] * np.array([-1.0, 1.0])))  # + normals
    axes = axes.reshape(4, len(others), 2).transpose(1, 0, 2)       # (K, 4 axes, 2)
    proj_a = np.einsum('kad,cd->kac', axes, a[0])                   # (K, 4, 4 corners)
    proj_b = np.einsum('kad,kcd->kac', axes, b)
    separated = (proj_a.max(-1) < proj_b.min(-1)) | (proj_b.max(-1) < proj_a.min(-1))
    return bool(np.any(~np.any(separated, axis=1)))


class _Placer:
    """Draws actor poses of one sample and keeps those that overlap nothing placed so far."""

    def __init__(self, assets: _TownAssets, ego_xy: np.ndarray, rng: np.random.Generator,
                 blockers: list[np.ndarray]) -> None:
        self.assets = assets
        self.ego_xy = ego_xy
        self.rng = rng
        buildings = assets.building_rects
        near = np.flatnonzero(np.hypot(*(assets.lane_xy - ego_xy).T) <= PLACEMENT_RADIUS_M)
        visible = _line_of_sight(ego_xy, assets.lane_xy[near], buildings)
        self.lanes = self._pools(near, visible)
        self.kerb_lanes = self._pools(near, visible, assets.lane_at_kerb[near])
        self.road_lanes = self._pools(near, visible, assets.lane_is_road[near])
        rects = assets.crosswalk_rects
        centres = 0.5 * (rects[:, :2] + rects[:, 2:])
        near = np.flatnonzero(np.hypot(*(centres - ego_xy).T) <= PLACEMENT_RADIUS_M - 3.0)
        self.crosswalks = self._pools(near, _line_of_sight(ego_xy, centres[near], buildings))
        self.footprints = list(blockers)   # (5,) rows: x, y, length, width, yaw
        self.boxes: list[tuple[float, ...]] = []   # x, y, z centre, l, w, h, yaw (map)
        self.types: list[ActorType] = []

    @staticmethod
    def _pools(index: np.ndarray, visible: np.ndarray,
               keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(all, in line of sight) subsets of `index`, optionally restricted to `keep`."""
        if keep is not None:
            index, visible = index[keep], visible[keep]
        return index, index[visible]

    def _pick(self, pools: tuple[np.ndarray, np.ndarray]) -> int | None:
        """An index from the visible pool (usually) or from all; None if both are empty."""
        every, visible = pools
        use_visible = len(visible) and self.rng.random() < _VISIBLE_PLACEMENT_PROBABILITY
        pool = visible if use_visible else every
        return int(pool[int(self.rng.integers(len(pool)))]) if len(pool) else None

    def _lane_pose(self, pools: tuple[np.ndarray, np.ndarray],
                   right_offset_m: float) -> tuple[float, float, float] | None:
        i = self._pick(pools)
        if i is None:
            return None
        heading = self.assets.lane_heading_rad[i]
        along = self.rng.uniform(-0.5, 0.5) * _LANE_SAMPLE_SPACING_M
        xy = self.assets.lane_xy[i] + along * np.array([math.cos(heading), math.sin(heading)]) \
            + right_offset_m * np.array([math.sin(heading), -math.cos(heading)])
        return float(xy[0]), float(xy[1]), float(heading)

    def _pose(self, place: str, width_m: float) -> tuple[float, float, float, float] | None:
        """(x, y, yaw, bottom z) of a new actor at a kind of place, or None if none is near."""
        rng, half_lane = self.rng, 0.5 * self.assets.lane_width_m
        if place == 'lane':
            offset = float(np.clip(rng.normal(0.0, 0.15), -0.4, 0.4))
            pose = self._lane_pose(self.lanes, offset)
            if pose is None:
                return None
            x, y, yaw = pose
            return x, y, yaw + float(rng.normal(0.0, 0.03)), 0.0
        if place in ('kerb', 'lane_edge', 'road_edge'):
            gap_m = {'kerb': (0.1, 0.4), 'lane_edge': (0.3, 0.7),
                     'road_edge': (0.3, 0.9)}[place]
            offset = half_lane - 0.5 * width_m - rng.uniform(*gap_m)
            pose = self._lane_pose(self.kerb_lanes, offset)
            if pose is None:
                return None
            x, y, yaw = pose
            if place == 'road_edge':
                yaw = rng.uniform(-math.pi, math.pi)
            return x, y, yaw + float(rng.normal(0.0, 0.02)), 0.0
        if place == 'debris':
            offset = rng.uniform(-1.0, 1.0) * max(0.0, half_lane - 0.5 * width_m)
            pose = self._lane_pose(self.road_lanes, offset)
            if pose is None:
                return None
            x, y, _ = pose
            return x, y, rng.uniform(-math.pi, math.pi), 0.0
        if place == 'crosswalk':
            i = self._pick(self.crosswalks)
            if i is None:
                return None
            rect = self.assets.crosswalk_rects[i]
            low = rect[:2] + 0.3
            high = np.maximum(rect[2:] - 0.3, low)
            x, y = rng.uniform(low, high)
            return float(x), float(y), rng.uniform(-math.pi, math.pi), 0.0
        # Sidewalk: uniform candidates in the placement disc, kept on a block, off buildings.
        radius = PLACEMENT_RADIUS_M * np.sqrt(rng.random(_SIDEWALK_CANDIDATES))
        angle = rng.uniform(-math.pi, math.pi, _SIDEWALK_CANDIDATES)
        xy = self.ego_xy + np.column_stack((radius * np.cos(angle), radius * np.sin(angle)))
        buildings = self.assets.building_rects
        on_walk = _inside_any(xy, self.assets.sidewalk_rects)
        on_walk &= ~_inside_any(xy, buildings + np.array([-1.0, -1.0, 1.0, 1.0])
                                * _SIDEWALK_INSET_M)
        ok = np.flatnonzero(on_walk)
        if rng.random() < _VISIBLE_PLACEMENT_PROBABILITY:
            seen = ok[_line_of_sight(self.ego_xy, xy[ok], buildings)]
            ok = seen if len(seen) else ok
        if not len(ok):
            return None
        return (float(xy[ok[0], 0]), float(xy[ok[0], 1]), rng.uniform(-math.pi, math.pi),
                self.assets.kerb_height_m)

    def place(self, actor_type: ActorType, size_m: np.ndarray, place: str) -> bool:
        """Try to place one actor of size (l, w, h); False when every attempt collided."""
        length, width, height = (float(v) for v in size_m)
        for _ in range(_POSITION_ATTEMPTS):
            pose = self._pose(place, width)
            if pose is None:
                return False
            x, y, yaw, bottom_z = pose
            footprint = np.array([x, y, length + _ACTOR_GAP_M, width + _ACTOR_GAP_M, yaw])
            if _overlaps_any(footprint, np.array(self.footprints).reshape(-1, 5)):
                continue
            self.footprints.append(footprint)
            self.boxes.append((x, y, bottom_z + 0.5 * height, length, width, height,
                               float(yaw)))
            self.types.append(actor_type)
            return True
        return False


def _inside_any(xy: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(C,) bool: points (C, 2) inside any of rects (R, 4) [x_min, y_min, x_max, y_max]."""
    if len(rects) == 0:
        return np.zeros(len(xy), dtype=bool)
    x, y = xy[:, 0:1], xy[:, 1:2]
    return np.any((x >= rects[:, 0]) & (x <= rects[:, 2]) & (y >= rects[:, 1])
                  & (y <= rects[:, 3]), axis=1)


def _line_of_sight(origin: np.ndarray, xy: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """(C,) bool: whether the segment origin (2,) -> xy (C, 2) misses every rect (R, 4).

    Slab test (Liang-Barsky) of all segments against all rectangles at once; buildings are
    the only map boxes tall enough to hide an actor from the roof sensors.
    """
    if len(rects) == 0 or len(xy) == 0:
        return np.ones(len(xy), dtype=bool)
    direction = (xy - origin)[:, None, :]                              # (C, 1, 2)
    with np.errstate(divide='ignore', invalid='ignore'):
        t_low = (rects[None, :, :2] - origin) / direction               # (C, R, 2)
        t_high = (rects[None, :, 2:] - origin) / direction
    # An axis the segment does not move along: inside the slab for all t, or never.
    still = np.broadcast_to(direction == 0.0, t_low.shape)
    inside = (origin >= rects[:, :2]) & (origin <= rects[:, 2:])       # (R, 2)
    inside = np.broadcast_to(inside[None], t_low.shape)
    enter = np.where(still, np.where(inside, -np.inf, np.inf), np.minimum(t_low, t_high))
    leave = np.where(still, np.where(inside, np.inf, -np.inf), np.maximum(t_low, t_high))
    t_enter, t_leave = enter.max(axis=-1), leave.min(axis=-1)
    blocked = (t_enter <= t_leave) & (t_leave >= 0.0) & (t_enter <= 1.0)
    return ~np.any(blocked, axis=1)


def _draw_size(actor_type: ActorType, rng: np.random.Generator) -> np.ndarray:
    if actor_type is ActorType.STATIC:
        return rng.uniform(*_DEBRIS_SIZE_M, size=3)
    factors = np.array(_SIZE_FACTORS[actor_type])
    size = np.array(DEFAULT_SIZES_M[actor_type]) * rng.uniform(factors[:, 0], factors[:, 1])
    if actor_type is ActorType.PEDESTRIAN and rng.random() < _CHILD_PROBABILITY:
        size[2] = rng.uniform(*_CHILD_HEIGHT_M)
    return size


def _count(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _draw_ego(assets: _TownAssets, rng: np.random.Generator, debris_ahead_m: float | None
              ) -> tuple[np.ndarray, float, maps.LanePath | None]:
    """Ego base_link (x, y), yaw on a lane; with debris, also the lane path ahead of it."""
    road = np.flatnonzero(assets.lane_is_road)
    turn = np.flatnonzero(~assets.lane_is_road)
    for _ in range(_EGO_ATTEMPTS):
        on_turn = (debris_ahead_m is None and len(turn)
                   and rng.random() < _EGO_ON_TURN_PROBABILITY)
        pool = turn if on_turn else road
        i = pool[int(rng.integers(len(pool)))]
        lane_xy, heading = assets.lane_xy[i], float(assets.lane_heading_rad[i])
        lateral = rng.uniform(-_EGO_LATERAL_JITTER_M, _EGO_LATERAL_JITTER_M)
        xy = lane_xy + lateral * np.array([-math.sin(heading), math.cos(heading)])
        yaw = heading + float(np.clip(rng.normal(0.0, _EGO_YAW_JITTER_RAD),
                                      -3 * _EGO_YAW_JITTER_RAD, 3 * _EGO_YAW_JITTER_RAD))
        if debris_ahead_m is None:
            return xy, yaw, None
        path = maps.lane_path(assets.town, lane_xy, heading, debris_ahead_m + 2.0,
                              spacing_m=0.25)
        if polyline_arclength(path.path_xy)[-1] >= debris_ahead_m + 1.0:
            return xy, yaw, path
    raise ValueError(f'debris_ahead_m = {debris_ahead_m} m: no ego lane with that much road '
                     f'ahead was found in {_EGO_ATTEMPTS} draws')


def _ego_footprint(vehicle: VehicleParams, xy: np.ndarray, yaw: float) -> np.ndarray:
    centre = xy + vehicle.box_centre_offset_m * np.array([math.cos(yaw), math.sin(yaw)])
    return np.array([centre[0], centre[1], vehicle.length_m + 2 * _EGO_GAP_M,
                     vehicle.width_m + 2 * _EGO_GAP_M, yaw])


def _ego_lane_corridor(path: maps.LanePath, end_s_m: float, lane_width_m: float
                       ) -> list[np.ndarray]:
    """Footprints covering the ego lane from its foot point to `end_s_m` along the path."""
    xy = path.path_xy
    s = polyline_arclength(xy)
    stations = np.arange(0.0, end_s_m, 1.0) + 0.5
    centre = np.column_stack((np.interp(stations, s, xy[:, 0]),
                              np.interp(stations, s, xy[:, 1])))
    ahead = np.column_stack((np.interp(stations + 0.25, s, xy[:, 0]),
                             np.interp(stations + 0.25, s, xy[:, 1]))) - centre
    yaw = np.arctan2(ahead[:, 1], ahead[:, 0])
    return [np.array([c[0], c[1], 1.2, lane_width_m, a]) for c, a in zip(centre, yaw)]


# ------------------------------------------------------------------------------ sensors

def _sensor_pose_map(ego_xy: np.ndarray, ego_yaw: float, mount) -> tuple[float, ...]:
    """(x, y, z, roll, pitch, yaw) in map of a base_link-mounted sensor (flat ground, z=0)."""
    sensor = transform_from_xyzrpy(ego_xy[0], ego_xy[1], 0.0, 0.0, 0.0, ego_yaw) \
        @ mount.transform()
    yaw = math.atan2(sensor[1, 0], sensor[0, 0])
    pitch = math.asin(-max(-1.0, min(1.0, sensor[2, 0])))
    roll = math.atan2(sensor[2, 1], sensor[2, 2])
    return (sensor[0, 3], sensor[1, 3], sensor[2, 3], roll, pitch, yaw)


def _image_boxes(actor_id: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per actor: pixel-edge bounds (count, 4) of its visible pixels and their number."""
    boxes = np.full((count, 4), np.nan)
    visible = actor_id[actor_id != NO_ACTOR_ID]
    pixels = np.bincount(visible, minlength=count).astype(np.int64)[:count]
    if count == 0:
        return boxes, pixels
    # find_objects gives each label's bounding slices in one C pass (label 0 = background).
    labelled = np.where(actor_id == NO_ACTOR_ID, 0, actor_id + 1)
    for index, found in enumerate(ndimage.find_objects(labelled, max_label=count)):
        if found is not None:
            rows, cols = found
            boxes[index] = (cols.start - 0.5, rows.start - 0.5, cols.stop - 0.5,
                            rows.stop - 0.5)
    return boxes, pixels


# ---------------------------------------------------------------------------- generator

def _check_args(seed, split, lidar, camera, vehicle, debris_ahead_m) -> None:
    if split not in SPLITS:
        raise ValueError(f'split = {split!r} must be one of {SPLITS}')
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f'seed = {seed!r} must be a non-negative integer')
    if lidar is not None and not isinstance(lidar, LidarConfig):
        raise ValueError(f'lidar = {lidar!r} must be a LidarConfig or None')
    if not isinstance(camera, bool):
        raise ValueError(f'camera = {camera!r} must be a bool')
    if not isinstance(vehicle, str) or not vehicle:
        raise ValueError(f'vehicle = {vehicle!r} must be a vehicle name')
    if debris_ahead_m is not None:
        if isinstance(debris_ahead_m, bool) or not isinstance(debris_ahead_m, numbers.Real) \
                or not math.isfinite(debris_ahead_m) or debris_ahead_m <= 0.0 \
                or debris_ahead_m > MAX_DEBRIS_AHEAD_M:
            raise ValueError(f'debris_ahead_m = {debris_ahead_m!r} must be a number in '
                             f'(0, {MAX_DEBRIS_AHEAD_M}] m')


def generate_sample(seed: int, *, split: str = 'train', lidar: LidarConfig | None = None,
                    camera: bool = True, vehicle: str = 'bmw_320i',
                    debris_ahead_m: float | None = None) -> PerceptionSample:
    """One labelled frame, deterministic in (split, seed, lidar, camera, vehicle, debris_ahead_m).

    lidar: the sensor (default lidar_config()); camera: render camera_front too; vehicle: the
    ego (config/vehicle/<name>.yaml: body for the no-overlap test, sensor mounts, camera
    calibration). debris_ahead_m: also place one 0.5 m UNKNOWN cube centred in the ego's lane
    whose centre is that far ahead of base_link's foot point along the lane; it is the last box
    and nothing else is placed in the ego lane between the ego and it. Bad arguments raise
    ValueError naming the argument. The layout does not depend on `lidar` or `camera`, and the
    LiDAR noise has its own stream, so the camera setting does not change the scan.
    """
    _check_args(seed, split, lidar, camera, vehicle, debris_ahead_m)
    spec = _SPLIT_SPECS[split]
    lidar = lidar if lidar is not None else lidar_config()
    vehicle_params = _vehicle(vehicle)
    if debris_ahead_m is not None:
        clearance_m = vehicle_params.length_m - vehicle_params.rear_overhang_m \
            + _EGO_GAP_M + 0.5 * DEBRIS_AHEAD_SIZE_M
        if debris_ahead_m < clearance_m:
            raise ValueError(f'debris_ahead_m = {debris_ahead_m} m must be >= {clearance_m:.2f} m'
                             f' to clear the front of {vehicle}')
    layout_seed, lidar_seed = np.random.SeedSequence([spec.index, 0, int(seed)]).spawn(2)
    rng = np.random.default_rng(layout_seed)
    with _LOCK:
        assets = _town_assets(_pool_params(spec, int(rng.integers(spec.town_pool_size))))
        ego_xy, ego_yaw, ego_path = _draw_ego(assets, rng, debris_ahead_m)
        blockers = [_ego_footprint(vehicle_params, ego_xy, ego_yaw)]
        debris_box = None
        if ego_path is not None:
            s = polyline_arclength(ego_path.path_xy)
            xy = ego_path.path_xy
            centre = np.array([np.interp(debris_ahead_m, s, xy[:, 0]),
                               np.interp(debris_ahead_m, s, xy[:, 1])])
            ahead = np.array([np.interp(debris_ahead_m + 0.25, s, xy[:, 0]),
                              np.interp(debris_ahead_m + 0.25, s, xy[:, 1])]) - centre
            yaw = math.atan2(ahead[1], ahead[0])
            size = DEBRIS_AHEAD_SIZE_M
            debris_box = (centre[0], centre[1], 0.5 * size, size, size, size, yaw)
            blockers += _ego_lane_corridor(ego_path, debris_ahead_m, assets.lane_width_m)
            blockers.append(np.array([centre[0], centre[1], size + 1.0, size + 1.0, yaw]))
        placer = _Placer(assets, ego_xy, rng, blockers)
        large = [ActorType.BUS if rng.random() < spec.bus_probability else ActorType.TRUCK
                 for _ in range(_count(rng, spec.trucks_buses))]
        plan = [(t, 'lane') for t in large]
        plan += [(ActorType.CAR, 'kerb')] * _count(rng, spec.parked_cars)
        plan += [(ActorType.CAR, 'lane')] * _count(rng, spec.moving_cars)
        plan += [(ActorType.BICYCLE, 'lane_edge')] * _count(rng, spec.bicycles)
        places = ('sidewalk', 'crosswalk', 'road_edge')
        plan += [(ActorType.PEDESTRIAN, places[int(rng.choice(3, p=spec.pedestrian_places))])
                 for _ in range(_count(rng, spec.pedestrians))]
        plan += [(ActorType.STATIC, 'debris')] * _count(rng, spec.debris)
        for actor_type, place in plan:
            placer.place(actor_type, _draw_size(actor_type, rng), place)
        boxes_map = np.array(placer.boxes, dtype=np.float64).reshape(-1, 7)
        types = list(placer.types)
        if debris_box is not None:
            boxes_map = np.vstack((boxes_map, np.array(debris_box)))
            types.append(ActorType.STATIC)
        count = len(boxes_map)
        surfaces = np.array([int(_TYPE_SURFACE[t]) for t in types], dtype=np.uint8)
        assets.scene.set_actor_arrays(boxes_map[:, 0:3], boxes_map[:, 6], boxes_map[:, 3:6],
                                      surfaces, np.arange(count, dtype=np.int64))
        scan = _lidar_model(lidar).scan(
            assets.scene, _sensor_pose_map(ego_xy, ego_yaw, vehicle_params.lidar_top),
            np.random.default_rng(lidar_seed))
        camera_model = _camera_model(vehicle)
        frame = None
        if camera:
            frame = camera_model.render_frame(assets.scene, _sensor_pose_map(
                ego_xy, ego_yaw, vehicle_params.camera_front.mount))
    cos_yaw, sin_yaw = math.cos(ego_yaw), math.sin(ego_yaw)
    dx, dy = boxes_map[:, 0] - ego_xy[0], boxes_map[:, 1] - ego_xy[1]
    boxes_base = boxes_map.copy()
    boxes_base[:, 0] = cos_yaw * dx + sin_yaw * dy
    boxes_base[:, 1] = -sin_yaw * dx + cos_yaw * dy
    boxes_base[:, 6] = wrap_angle(boxes_map[:, 6] - ego_yaw)
    point_actor_index = scan.actor_id.astype(np.int64)
    seen = point_actor_index[point_actor_index >= 0]
    if frame is not None:
        image_boxes, visible_px = _image_boxes(frame.actor_id, count)
    else:
        image_boxes, visible_px = np.full((count, 4), np.nan), np.zeros(count, np.int64)
    config = camera_model.config
    return PerceptionSample(
        split=split, seed=int(seed), points=scan.points, point_actor_index=point_actor_index,
        boxes_base=boxes_base, labels=np.array([_TYPE_LABEL[t] for t in types], dtype=np.uint8),
        lidar_point_counts=np.bincount(seen, minlength=count).astype(np.int64),
        base_from_lidar=vehicle_params.lidar_top.transform(),
        image=None if frame is None else frame.rgb, image_boxes=image_boxes,
        image_visible_px=visible_px, camera_matrix=config.intrinsic_matrix(),
        camera_from_base=invert_transform(vehicle_params.camera_front.mount.transform()),
        image_size=(config.width, config.height))
