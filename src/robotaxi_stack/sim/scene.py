"""Ray-castable simulation world: static map boxes, a ground plane and moving actor boxes.

The world lives in the `map` frame (metres, z up). It is made of triangle meshes cast against
with `open3d.t.geometry.RaycastingScene` (Embree):

* static geometry, given once: an optional ground quad (`ground_extent_m`) and axis-aligned
  boxes with a semantic label (kerbs, sidewalk slabs, buildings, ...), as the map module
  supplies them;
* dynamic actor boxes (centre, yaw, size, label, actor id), replaced every frame with
  `set_actors`.

Every cast returns, per ray, the hit distance, the triangle normal, a stable scene geometry id
(`STATIC_GEOMETRY_ID`, `ACTOR_GEOMETRY_ID` or `MISS_GEOMETRY_ID`), the triangle index, and from
those the semantic label and actor id of the surface that was hit.

Update strategy. A RaycastingScene cannot remove or move a mesh, so a frame with moved actors
needs either a fresh scene holding static + actor meshes (`strategy='rebuild'`: one Embree
build, then one cast) or a static scene built once plus a small actor scene, both cast and
merged by the nearest hit (`strategy='split'`: two casts). open3d's per-ray cost makes the
second cast of 115k LiDAR rays cost ~5 ms even against 20 boxes, while the rebuild grows with
the static mesh: ~2 ms for a 300-box town (3.6k triangles), ~12 ms for 1000 boxes, ~45 ms for
3000 (2-core development machine; bench/sim_sensors.py measures both). `strategy='auto'` (the
default) therefore rebuilds up to AUTO_SPLIT_MIN_STATIC_TRIANGLES static triangles and splits
above.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from robotaxi_stack.common.geometry import rpy_to_matrix


class SceneError(ValueError):
    """Malformed scene input: non-finite or empty boxes, unknown labels, bad ray arrays."""


class PoseError(ValueError):
    """A sensor pose that is not six finite numbers (x, y, z, roll, pitch, yaw)."""


class SurfaceLabel(enum.IntEnum):
    """Semantic class of a surface; stored as uint8 per triangle and per returned hit."""

    NONE = 0            # no hit
    ROAD = 1            # the ground plane
    KERB = 2
    SIDEWALK = 3
    BUILDING = 4
    CAR = 5
    TRUCK = 6
    BUS = 7
    BICYCLE = 8
    MOTORCYCLE = 9
    PEDESTRIAN = 10
    STATIC_OBJECT = 11  # scenario actor type 'static': debris, cones, any solid object

    @classmethod
    def parse(cls, value: SurfaceLabel | int | str) -> SurfaceLabel:
        """Label from an enum member, its int value or its (case-insensitive) name.

        'ground' is an alias of ROAD and 'static' (the scenario actor type) of STATIC_OBJECT.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().upper()
            key = _LABEL_ALIASES.get(key, key)
            if key in cls.__members__ and key != 'NONE':
                return cls[key]
            names = sorted(m.name.lower() for m in cls if m is not cls.NONE)
            raise SceneError(f'unknown surface label {value!r}; allowed: {names}')
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            try:
                label = cls(int(value))
            except ValueError:
                label = cls.NONE
            if label is not cls.NONE:
                return label
        raise SceneError(f'surface label {value!r} is not a SurfaceLabel, int value or name')


_LABEL_ALIASES = {'GROUND': 'ROAD', 'STATIC': 'STATIC_OBJECT', 'CURB': 'KERB'}

# Diffuse LiDAR reflectivity (0..1) per label, indexed by SurfaceLabel value: asphalt is dark,
# concrete and facades medium, painted car bodies (and their retro-reflective plates) bright.
LABEL_REFLECTIVITY = np.array(
    [0.0, 0.10, 0.35, 0.30, 0.45, 0.60, 0.60, 0.60, 0.40, 0.45, 0.30, 0.35], dtype=np.float32)

# Albedo RGB per label for the camera model, indexed by SurfaceLabel value.
LABEL_COLOUR_RGB = np.array([
    [0, 0, 0],          # NONE (never drawn: misses show the sky)
    [70, 70, 75],       # ROAD
    [170, 170, 160],    # KERB
    [150, 140, 130],    # SIDEWALK
    [180, 130, 100],    # BUILDING
    [200, 40, 40],      # CAR
    [40, 90, 200],      # TRUCK
    [230, 180, 30],     # BUS
    [40, 180, 60],      # BICYCLE
    [160, 60, 190],     # MOTORCYCLE
    [240, 120, 200],    # PEDESTRIAN
    [250, 140, 20],     # STATIC_OBJECT
], dtype=np.uint8)

# Default heights of map boxes whose height the map does not give.
DEFAULT_STATIC_HEIGHT_M = {
    SurfaceLabel.KERB: 0.15,
    SurfaceLabel.SIDEWALK: 0.15,
    SurfaceLabel.BUILDING: 12.0,
}

STATIC_GEOMETRY_ID = 0
ACTOR_GEOMETRY_ID = 1  # lookup() relies on these two values
MISS_GEOMETRY_ID = int(o3d.t.geometry.RaycastingScene.INVALID_ID)
NO_ACTOR_ID = -1
STRATEGIES = ('auto', 'rebuild', 'split')
# Static triangles (about 1000 boxes) above which 'auto' picks 'split'; see module docstring.
AUTO_SPLIT_MIN_STATIC_TRIANGLES = 12000

# Unit cube corners and 12 triangles wound counter-clockwise seen from outside, so open3d's
# triangle normals point out of the box.
_CUBE_CORNERS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                          [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]], dtype=np.float32)
_CUBE_TRIANGLES = np.array([[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7],
                            [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                            [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]], dtype=np.uint32)
TRIANGLES_PER_BOX = len(_CUBE_TRIANGLES)


@dataclass(frozen=True)
class StaticBox:
    """Axis-aligned map box in the map frame: x/y extent, bottom z, height, semantic label.

    `height_m=None` takes DEFAULT_STATIC_HEIGHT_M of the label (kerb and sidewalk 0.15 m).
    """

    x_min_m: float
    y_min_m: float
    x_max_m: float
    y_max_m: float
    label: SurfaceLabel | int | str
    height_m: float | None = None
    z_min_m: float = 0.0

    def __post_init__(self) -> None:
        label = SurfaceLabel.parse(self.label)
        object.__setattr__(self, 'label', label)
        if self.height_m is None:
            if label not in DEFAULT_STATIC_HEIGHT_M:
                raise SceneError(f'static box with label {label.name.lower()!r} needs height_m')
            object.__setattr__(self, 'height_m', DEFAULT_STATIC_HEIGHT_M[label])
        values = (self.x_min_m, self.y_min_m, self.x_max_m, self.y_max_m, self.height_m,
                  self.z_min_m)
        if not all(np.isfinite(float(v)) for v in values):
            raise SceneError(f'static box has a non-finite value: {self}')
        if self.x_max_m <= self.x_min_m or self.y_max_m <= self.y_min_m:
            raise SceneError(f'static box has an empty x/y extent: {self}')
        if self.height_m <= 0.0:
            raise SceneError(f'static box height_m = {self.height_m} must be > 0')


@dataclass(frozen=True)
class ActorBox:
    """Dynamic actor: box centre (map frame, metres), yaw about +z, size l x w x h, label, id.

    `actor_id` is the non-negative integer id reported for every hit on this box.
    """

    center_x_m: float
    center_y_m: float
    center_z_m: float
    yaw_rad: float
    length_m: float
    width_m: float
    height_m: float
    label: SurfaceLabel | int | str
    actor_id: int


@dataclass(frozen=True)
class RayHits:
    """First hits of N rays (all arrays have leading shape (N,), map frame).

    range_m: distance to the hit in units of the ray direction's length (metres for unit
        directions), inf for a miss. normal_map: (N, 3) unit triangle normal pointing out of
        the solid (zeros for a miss). geometry_id: STATIC_GEOMETRY_ID, ACTOR_GEOMETRY_ID or
        MISS_GEOMETRY_ID. primitive_id: triangle index within that geometry. label: SurfaceLabel
        values (uint8, NONE for a miss). actor_id: int64 actor id, NO_ACTOR_ID for static
        surfaces and misses.
    """

    range_m: np.ndarray
    normal_map: np.ndarray
    geometry_id: np.ndarray
    primitive_id: np.ndarray
    label: np.ndarray
    actor_id: np.ndarray


def pose_to_rotation_translation(pose_map) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z, roll, pitch, yaw) in metres/radians -> (3x3 rotation, (3,) translation).

    The rotation is Rz(yaw) Ry(pitch) Rx(roll) and maps vectors of the posed frame into map.
    """
    pose = np.asarray(pose_map, dtype=np.float64)
    if pose.shape != (6,):
        raise PoseError(f'pose must be (x, y, z, roll, pitch, yaw), got shape {pose.shape}')
    if not np.all(np.isfinite(pose)):
        raise PoseError(f'pose contains NaN or inf: {pose.tolist()}')
    return rpy_to_matrix(pose[3], pose[4], pose[5]), pose[:3].copy()


def box_meshes(centers_m: np.ndarray, sizes_m: np.ndarray,
               yaw_rad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangle meshes of N boxes merged into one: ((8N, 3) float32 vertices, (12N, 3) uint32).

    centers_m (N, 3) box centres, sizes_m (N, 3) extents along the box's own x, y, z,
    yaw_rad (N,) rotation about +z through the centre. Triangle 12 i + k belongs to box i.
    """
    centers = np.asarray(centers_m, dtype=np.float64).reshape(-1, 3)
    sizes = np.asarray(sizes_m, dtype=np.float64).reshape(-1, 3)
    yaw = np.asarray(yaw_rad, dtype=np.float64).reshape(-1)
    local = (_CUBE_CORNERS[None] - 0.5) * sizes[:, None, :]
    cos_yaw = np.cos(yaw)[:, None]
    sin_yaw = np.sin(yaw)[:, None]
    vertices = np.empty_like(local)
    vertices[..., 0] = cos_yaw * local[..., 0] - sin_yaw * local[..., 1]
    vertices[..., 1] = sin_yaw * local[..., 0] + cos_yaw * local[..., 1]
    vertices[..., 2] = local[..., 2]
    vertices += centers[:, None, :]
    offsets = (8 * np.arange(len(centers), dtype=np.uint32))[:, None, None]
    triangles = _CUBE_TRIANGLES[None] + offsets
    return (np.ascontiguousarray(vertices.reshape(-1, 3), dtype=np.float32),
            np.ascontiguousarray(triangles.reshape(-1, 3), dtype=np.uint32))


class RayBuffer:
    """Fixed sensor-frame ray directions and a reused (N, 6) float32 ray array for casting.

    `fill` rotates the directions into map with fused per-axis numpy ops into preallocated
    buffers: a BLAS (N, 3) @ (3, 3) product is as fast in isolation, but OpenBLAS worker threads
    and open3d's ray-casting threads starve each other on a 2-core machine (measured 0.4 ms
    alone, up to 24 ms between casts).
    """

    def __init__(self, directions_sensor: np.ndarray) -> None:
        """directions_sensor (N, 3) directions in the sensor frame (any length)."""
        directions = np.asarray(directions_sensor, dtype=np.float64)
        if directions.ndim != 2 or directions.shape[1] != 3 \
                or not np.all(np.isfinite(directions)):
            raise SceneError(f'ray directions must be finite (N, 3), got {directions.shape}')
        self._columns = np.ascontiguousarray(directions.T, dtype=np.float32)
        self._rays = np.empty((len(directions), 6), dtype=np.float32)
        self._column = np.empty(len(directions), dtype=np.float32)
        self._product = np.empty(len(directions), dtype=np.float32)

    @property
    def direction_columns(self) -> np.ndarray:
        """(3, N) float32 sensor-frame directions, one contiguous row per axis."""
        return self._columns

    def fill(self, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
        """(N, 6) rays: origin = translation, direction = rotation @ d, all in map.

        The returned array is this buffer's own and is overwritten by the next fill.
        """
        rotation = np.asarray(rotation, dtype=np.float32)
        rays, column, product = self._rays, self._column, self._product
        d_x, d_y, d_z = self._columns
        for row in range(3):
            rays[:, row] = translation[row]
            np.multiply(d_x, rotation[row, 0], out=column)
            np.multiply(d_y, rotation[row, 1], out=product)
            column += product
            np.multiply(d_z, rotation[row, 2], out=product)
            column += product
            rays[:, 3 + row] = column
        return rays


class SimScene:
    """The ray-castable world: static ground + map boxes (set once) and actor boxes (per frame).

    Not thread-safe: one owner sets actors and casts, e.g. the simulator's sensor step.
    """

    def __init__(self, ground_extent_m: Sequence[float] | None = None,
                 static_boxes: Sequence[StaticBox] = (), *, ground_z_m: float = 0.0,
                 strategy: str = 'auto') -> None:
        """Build the static mesh.

        ground_extent_m: (x_min, y_min, x_max, y_max) of the ROAD-labelled ground quad at
            height ground_z_m, or None for no ground.
        static_boxes: map boxes; each becomes 12 triangles of the one static geometry.
        strategy: 'rebuild' (one scene rebuilt when actors change), 'split' (static scene
            built once + actor scene; nearest hit of two casts) or 'auto' (by static size).
            See the module docstring.
        """
        if strategy not in STRATEGIES:
            raise SceneError(f'strategy {strategy!r} is not one of {list(STRATEGIES)}')
        vertices, triangles, labels = [], [], []
        if ground_extent_m is not None:
            extent = np.asarray(ground_extent_m, dtype=np.float64)
            if extent.shape != (4,) or not np.all(np.isfinite(extent)) \
                    or not np.isfinite(ground_z_m):
                raise SceneError(f'ground_extent_m must be 4 finite numbers (x_min, y_min, '
                                 f'x_max, y_max), got {ground_extent_m!r} at z {ground_z_m}')
            x0, y0, x1, y1 = extent
            if x1 <= x0 or y1 <= y0:
                raise SceneError(f'ground_extent_m {extent.tolist()} is empty')
            vertices.append(np.array([[x0, y0, ground_z_m], [x1, y0, ground_z_m],
                                      [x1, y1, ground_z_m], [x0, y1, ground_z_m]], np.float32))
            triangles.append(np.array([[0, 1, 2], [0, 2, 3]], dtype=np.uint32))
            labels.append(np.full(2, SurfaceLabel.ROAD, dtype=np.uint8))
        boxes = list(static_boxes)
        for box in boxes:
            if not isinstance(box, StaticBox):
                raise SceneError(f'static_boxes must hold StaticBox items, got {box!r}')
        if boxes:
            corner = np.array([[b.x_min_m, b.y_min_m, b.z_min_m] for b in boxes])
            size = np.array([[b.x_max_m - b.x_min_m, b.y_max_m - b.y_min_m, b.height_m]
                             for b in boxes])
            box_vertices, box_triangles = box_meshes(corner + 0.5 * size, size,
                                                     np.zeros(len(boxes)))
            base = sum(len(v) for v in vertices)
            vertices.append(box_vertices)
            triangles.append(box_triangles + np.uint32(base))
            labels.append(np.repeat(np.array([int(b.label) for b in boxes], dtype=np.uint8),
                                    TRIANGLES_PER_BOX))
        if vertices:
            self._static_vertices = np.ascontiguousarray(np.concatenate(vertices))
            self._static_triangles = np.ascontiguousarray(np.concatenate(triangles))
            self._static_labels = np.concatenate(labels)
        else:
            self._static_vertices = np.zeros((0, 3), np.float32)
            self._static_triangles = np.zeros((0, 3), np.uint32)
            self._static_labels = np.zeros(0, np.uint8)
        if strategy == 'auto':
            strategy = ('split' if len(self._static_triangles) > AUTO_SPLIT_MIN_STATIC_TRIANGLES
                        else 'rebuild')
        self._strategy = strategy
        self._static_tensors = (o3d.core.Tensor.from_numpy(self._static_vertices),
                                o3d.core.Tensor.from_numpy(self._static_triangles))
        self._actor_vertices = np.zeros((0, 3), np.float32)
        self._actor_triangles = np.zeros((0, 3), np.uint32)
        self._actor_labels = np.zeros(0, np.uint8)
        self._actor_ids = np.zeros(0, np.int64)
        self._scene: o3d.t.geometry.RaycastingScene | None = None
        self._static_scene: o3d.t.geometry.RaycastingScene | None = None
        # open3d geometry id -> our stable geometry id, for the scene(s) of the last build
        self._id_map: dict[int, int] = {}
        self._refresh_lookup()

    @property
    def strategy(self) -> str:
        """'rebuild' or 'split', as chosen (or resolved from 'auto') at construction."""
        return self._strategy

    @property
    def static_triangle_count(self) -> int:
        """Triangles in the static geometry (ground quad: 2, each box: 12)."""
        return len(self._static_triangles)

    @property
    def actor_count(self) -> int:
        """Number of actor boxes currently in the scene."""
        return len(self._actor_ids)

    def set_actors(self, actors: Sequence[ActorBox]) -> None:
        """Replace all actor boxes (validated; see set_actor_arrays)."""
        actors = list(actors)
        for actor in actors:
            if not isinstance(actor, ActorBox):
                raise SceneError(f'actors must hold ActorBox items, got {actor!r}')
        if not actors:
            self.set_actor_arrays(np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)), [], [])
            return
        self.set_actor_arrays(
            np.array([[a.center_x_m, a.center_y_m, a.center_z_m] for a in actors], np.float64),
            np.array([a.yaw_rad for a in actors], np.float64),
            np.array([[a.length_m, a.width_m, a.height_m] for a in actors], np.float64),
            [a.label for a in actors], [a.actor_id for a in actors])

    def set_actor_arrays(self, centers_m, yaw_rad, sizes_m, labels, actor_ids) -> None:
        """Replace all actor boxes from arrays (the vectorised form of set_actors).

        centers_m (N, 3) box centres in map; yaw_rad (N,); sizes_m (N, 3) length, width,
        height > 0; labels (N,) SurfaceLabel / int / name; actor_ids (N,) non-negative ints.
        The scene is rebuilt lazily at the next cast (or `commit`).
        """
        centers = np.asarray(centers_m, dtype=np.float64).reshape(-1, 3)
        count = len(centers)
        yaw = np.asarray(yaw_rad, dtype=np.float64).reshape(-1)
        sizes = np.asarray(sizes_m, dtype=np.float64).reshape(-1, 3)
        ids = np.asarray(actor_ids).reshape(-1)
        labels = list(labels) if not isinstance(labels, np.ndarray) else labels.tolist()
        if not (len(yaw) == len(sizes) == len(ids) == len(labels) == count):
            raise SceneError(f'actor arrays disagree in length: centers {count}, yaw {len(yaw)}, '
                             f'sizes {len(sizes)}, labels {len(labels)}, ids {len(ids)}')
        for name, array in (('centers_m', centers), ('yaw_rad', yaw), ('sizes_m', sizes)):
            if not np.all(np.isfinite(array)):
                raise SceneError(f'actor {name} contains NaN or inf')
        if np.any(sizes <= 0.0):
            raise SceneError(f'actor sizes_m must be > 0, got {sizes[np.any(sizes <= 0, 1)]}')
        if count and (ids.dtype.kind not in 'iu' or np.any(ids < 0)):
            raise SceneError(f'actor_ids must be non-negative integers, got {ids.tolist()}')
        label_values = np.array([int(SurfaceLabel.parse(label)) for label in labels],
                                dtype=np.uint8)
        self._actor_vertices, self._actor_triangles = box_meshes(centers, sizes, yaw)
        self._actor_labels = np.repeat(label_values, TRIANGLES_PER_BOX)
        self._actor_ids = ids.astype(np.int64)
        self._scene = None
        self._refresh_lookup()

    def _refresh_lookup(self) -> None:
        # One table over static triangles, then actor triangles, then a miss row, so a hit's
        # label and actor id are one gather with index primitive + offset of its geometry.
        self._lut_label = np.concatenate([self._static_labels, self._actor_labels,
                                          np.zeros(1, np.uint8)])
        self._lut_actor = np.concatenate([
            np.full(len(self._static_labels), NO_ACTOR_ID, np.int64),
            np.repeat(self._actor_ids, TRIANGLES_PER_BOX),
            np.full(1, NO_ACTOR_ID, np.int64)])

    @staticmethod
    def _new_scene() -> o3d.t.geometry.RaycastingScene:
        return o3d.t.geometry.RaycastingScene()

    def _build(self) -> None:
        """Create the open3d scene(s) for the current actors, if not already built."""
        actor_tensors = (o3d.core.Tensor.from_numpy(self._actor_vertices),
                         o3d.core.Tensor.from_numpy(self._actor_triangles))
        if self._strategy == 'rebuild':
            if self._scene is not None:
                return
            scene = self._new_scene()
            self._id_map = {}
            if len(self._static_triangles):
                self._id_map[scene.add_triangles(*self._static_tensors)] = STATIC_GEOMETRY_ID
            if len(self._actor_triangles):
                self._id_map[scene.add_triangles(*actor_tensors)] = ACTOR_GEOMETRY_ID
            self._scene = scene
            return
        if self._static_scene is None and len(self._static_triangles):
            self._static_scene = self._new_scene()
            self._static_scene.add_triangles(*self._static_tensors)
        if self._scene is None and len(self._actor_triangles):
            self._scene = self._new_scene()
            self._scene.add_triangles(*actor_tensors)

    def commit(self) -> None:
        """Build the acceleration structure now instead of inside the next cast.

        open3d builds Embree's BVH lazily on the first query and exposes no commit call, so a
        single ray is cast to trigger it; this lets a caller time or schedule the update.
        """
        self._build()
        probe = o3d.core.Tensor(np.array([[0, 0, 0, 0, 0, 1]], dtype=np.float32))
        for scene in (self._scene, self._static_scene):
            if scene is not None:
                scene.cast_rays(probe)

    def cast_rays(self, rays_map: np.ndarray) -> RayHits:
        """First hit of each ray: rays (N, 6) float32 (origin xyz, direction xyz) in map.

        Directions need not be unit length; range_m is then in units of their length.
        """
        rays = np.asarray(rays_map)
        if rays.ndim != 2 or rays.shape[1] != 6:
            raise SceneError(f'rays must have shape (N, 6), got {rays.shape}')
        rays = np.ascontiguousarray(rays, dtype=np.float32)
        if not np.all(np.isfinite(rays)):
            raise SceneError('rays contain NaN or inf')
        range_m, normal, geometry_id, primitive_id = self.cast_rays_raw(rays)
        label, actor_id = self.lookup(geometry_id, primitive_id)
        return RayHits(range_m=range_m, normal_map=normal, geometry_id=geometry_id,
                       primitive_id=primitive_id, label=label, actor_id=actor_id)

    def cast_rays_raw(
            self, rays_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hot-path cast without input checks or label lookup.

        rays_map must be a C-contiguous, finite float32 (N, 6) array. Returns (range_m (N,)
        float32, normal_map (N, 3) float32, geometry_id (N,) uint32, primitive_id (N,) uint32)
        as in RayHits; `lookup` turns the last two into labels and actor ids for the rays the
        caller keeps, so dropped rays cost no lookup.
        """
        count = len(rays_map)
        self._build()
        if count == 0 or (self._scene is None and self._static_scene is None):
            miss = _all_miss(count)
            return miss.range_m, miss.normal_map, miss.geometry_id, miss.primitive_id
        rays = o3d.core.Tensor.from_numpy(rays_map)
        if self._strategy == 'split':
            return self._cast_split(rays)
        assert self._scene is not None
        result = self._scene.cast_rays(rays)
        o3d_ids = result['geometry_ids'].numpy()
        if all(o3d_id == stable_id for o3d_id, stable_id in self._id_map.items()):
            geometry_id = o3d_ids
        else:
            geometry_id = np.full(count, MISS_GEOMETRY_ID, dtype=np.uint32)
            for o3d_id, stable_id in self._id_map.items():
                geometry_id[o3d_ids == o3d_id] = stable_id
        return (result['t_hit'].numpy(), result['primitive_normals'].numpy(), geometry_id,
                result['primitive_ids'].numpy())

    def lookup(self, geometry_id: np.ndarray,
               primitive_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label (M,) uint8, actor_id (M,) int64) of hits given by stable geometry/triangle ids.

        Misses (MISS_GEOMETRY_ID) give SurfaceLabel.NONE and NO_ACTOR_ID.
        """
        geometry_id = np.asarray(geometry_id)
        # Static triangles come first in the tables and ACTOR_GEOMETRY_ID is 1, so a hit's row
        # is primitive + geometry_id * static_triangles.
        lut_index = geometry_id.astype(np.int64)
        lut_index *= len(self._static_labels)
        lut_index += primitive_id
        lut_index[geometry_id == MISS_GEOMETRY_ID] = len(self._lut_label) - 1
        return self._lut_label[lut_index], self._lut_actor[lut_index]

    def _cast_split(self, rays: o3d.core.Tensor):
        results = []
        for scene, stable_id in ((self._static_scene, STATIC_GEOMETRY_ID),
                                 (self._scene, ACTOR_GEOMETRY_ID)):
            if scene is not None:
                results.append((scene.cast_rays(rays), stable_id))
        first, first_id = results[0]
        range_m = first['t_hit'].numpy()
        primitive_id = first['primitive_ids'].numpy()
        normal = first['primitive_normals'].numpy()
        geometry_id = np.where(np.isfinite(range_m), np.uint32(first_id),
                               np.uint32(MISS_GEOMETRY_ID))
        if len(results) == 2:
            second, second_id = results[1]
            second_range = second['t_hit'].numpy()
            nearer = second_range < range_m
            range_m = np.where(nearer, second_range, range_m)
            primitive_id = np.where(nearer, second['primitive_ids'].numpy(), primitive_id)
            normal = np.where(nearer[:, None], second['primitive_normals'].numpy(), normal)
            geometry_id[nearer] = second_id
        return range_m, normal, geometry_id, primitive_id


def _all_miss(count: int) -> RayHits:
    return RayHits(range_m=np.full(count, np.inf, np.float32),
                   normal_map=np.zeros((count, 3), np.float32),
                   geometry_id=np.full(count, MISS_GEOMETRY_ID, np.uint32),
                   primitive_id=np.full(count, MISS_GEOMETRY_ID, np.uint32),
                   label=np.zeros(count, np.uint8),
                   actor_id=np.full(count, NO_ACTOR_ID, np.int64))
