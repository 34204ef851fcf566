"""The simulated world of one scenario: map, ego, actors, ray-cast sensors (pure core).

`SimWorld` owns everything the simulator node publishes and advances it in fixed steps. It has
no ROS types and no wall clock: the same scenario and seed give the same states, scans and
images, which is what makes closed-loop runs reproducible. The node decides when to step and
what to publish.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np

from robotaxi_stack.common.geometry import transform_from_xyzrpy
from robotaxi_stack.sim import actors as act
from robotaxi_stack.sim import maps
from robotaxi_stack.sim.camera import CameraConfig, CameraModel
from robotaxi_stack.sim.lidar import LidarModel, LidarScan
from robotaxi_stack.sim.scenario import (LaneFollowBehavior, ParkedBehavior, Scenario,
                                         ScenarioError, WaypointsBehavior, validate_positions)
from robotaxi_stack.sim.scene import ActorBox, SimScene, StaticBox, SurfaceLabel
from robotaxi_stack.sim.vehicle_dynamics import EgoState, EgoVehicle, VehicleParams, load_vehicle

# Actor paths are generated this far ahead; scenarios are minutes long at urban speeds.
ACTOR_PATH_LENGTH_M = 2000.0
# Ego localisation noise defaults (1 sigma): a good RTK/lidar-map localiser.
DEFAULT_POSITION_NOISE_M = 0.0
DEFAULT_YAW_NOISE_RAD = 0.0
_TYPE_TO_SURFACE = {
    'car': SurfaceLabel.CAR, 'truck': SurfaceLabel.TRUCK, 'bus': SurfaceLabel.BUS,
    'bicycle': SurfaceLabel.BICYCLE, 'pedestrian': SurfaceLabel.PEDESTRIAN,
    'static': SurfaceLabel.STATIC_OBJECT,
}


def build_town(scenario: Scenario, base_dir: str | pathlib.Path = '.') -> maps.Town:
    """The scenario's map: a generated grid town or a Lanelet2 .osm relative to base_dir."""
    spec = scenario.map
    if spec.generator is not None:
        if spec.generator != 'grid_town':
            raise ScenarioError('map.generator', f'unknown generator {spec.generator!r}')
        return maps.generate_grid_town(spec.params)
    path = pathlib.Path(spec.file)
    if not path.is_absolute():
        path = pathlib.Path(base_dir) / path
    origin = (spec.origin.lat, spec.origin.lon) if spec.origin else maps.DEFAULT_ORIGIN_LATLON
    try:
        return maps.load_osm(path, origin)
    except maps.MapError as error:
        raise ScenarioError('map.file', str(error)) from None


def static_boxes(town: maps.Town) -> list[StaticBox]:
    """Kerb-level blocks (sidewalks) and buildings of a generated town as ray-castable boxes."""
    boxes = [StaticBox(*rect, label=SurfaceLabel.SIDEWALK, height_m=town.kerb_height_m)
             for rect in town.block_rects if town.kerb_height_m > 0.0]
    boxes += [StaticBox(*rect, label=SurfaceLabel.BUILDING, height_m=town.building_height_m,
                        z_min_m=town.kerb_height_m)
              for rect in town.building_rects if town.building_height_m > 0.0]
    return boxes


def _actor_spec(spec, town: maps.Town, index: int,
                rng: np.random.Generator) -> act.ActorSpec:
    start = spec.initial_state
    behavior = spec.behavior
    if isinstance(behavior, ParkedBehavior):
        core = act.ParkedBehavior()
    elif isinstance(behavior, WaypointsBehavior):
        core = act.WaypointsBehavior(points=behavior.as_array())
    elif isinstance(behavior, LaneFollowBehavior):
        try:
            lane = maps.lane_path(town, (start.x, start.y), start.yaw, ACTOR_PATH_LENGTH_M,
                                  choose=behavior.route, rng=rng)
        except maps.MapError as error:
            raise ScenarioError(f'actors[{index}].start', f'no lane to follow: {error}') from None
        idm = {name: getattr(behavior, name) for name in
               ('time_gap_s', 'min_gap_m', 'max_accel_mps2', 'comfort_decel_mps2')
               if getattr(behavior, name) is not None}
        core = act.LaneFollowBehavior(
            path_xy=lane.path_xy, target_speed_mps=behavior.target_speed,
            stop_lines_s_m=tuple(lane.stop_s) if behavior.stop_at_stop_lines else (), **idm)
    else:
        raise ScenarioError(f'actors[{index}].behavior', f'unsupported behavior {behavior!r}')
    return act.ActorSpec(actor_id=spec.id, actor_type=spec.type, behavior=core,
                         x_m=start.x, y_m=start.y, yaw_rad=start.yaw, speed_mps=start.speed,
                         size_m=spec.size)


_CAMERA_GEOMETRY = ('width', 'height', 'fx', 'fy', 'cx', 'cy')


def camera_config(vehicle: VehicleParams, scenario_camera: CameraConfig) -> CameraConfig:
    """The vehicle's calibrated front camera at the scenario's rate and render resolution.

    Camera geometry belongs to the vehicle (config/vehicle/<name>.yaml), so a scenario that
    sets it is an error rather than a silent second source of truth.
    """
    defaults = CameraConfig()
    changed = [k for k in _CAMERA_GEOMETRY
               if getattr(scenario_camera, k) != getattr(defaults, k)]
    if changed:
        raise ScenarioError('sensors.camera', f'{changed} are the vehicle camera calibration: '
                            f'set them in config/vehicle/{vehicle.name}.yaml')
    cam = vehicle.camera_front
    return CameraConfig.from_dict({
        'width': cam.width_px, 'height': cam.height_px, 'fx': cam.fx_px, 'fy': cam.fy_px,
        'cx': cam.cx_px, 'cy': cam.cy_px, 'hz': scenario_camera.hz,
        'render_downsample': scenario_camera.render_downsample})


@dataclasses.dataclass(frozen=True)
class Odometry:
    """What the localisation output reports: base_link pose and twist in map / base_link."""

    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    lateral_speed_mps: float
    yaw_rate_rps: float
    accel_mps2: float
    position_sigma_m: float
    yaw_sigma_rad: float


class SimWorld:
    """Map + ego + actors + sensors of one scenario, stepped deterministically.

    step(steer_cmd_rad, accel_cmd_mps2, dt_s) advances physics; lidar_scan() and
    camera_image() render the current instant; ground_truth() lists the actors.
    """

    def __init__(self, scenario: Scenario, *, base_dir: str | pathlib.Path = '.',
                 vehicle: VehicleParams | None = None,
                 position_noise_m: float = DEFAULT_POSITION_NOISE_M,
                 yaw_noise_rad: float = DEFAULT_YAW_NOISE_RAD):
        self.scenario = scenario
        self.town = build_town(scenario, base_dir)
        bounds = tuple(float(v) for v in self.town.extent)
        validate_positions(scenario, lambda xy: maps.is_on_road(self.town, xy), bounds)
        self.vehicle = vehicle or load_vehicle(scenario.ego.vehicle)
        start = scenario.ego.start
        self.ego = EgoVehicle(self.vehicle, x_m=start.x, y_m=start.y, yaw_rad=start.yaw,
                              speed_mps=start.speed)
        # Separate streams, so enabling the camera does not change the LiDAR noise sequence.
        seeds = np.random.SeedSequence(scenario.seed).spawn(3)
        route_rng = np.random.default_rng(seeds[2])
        self.actors = act.ActorWorld([_actor_spec(a, self.town, i, route_rng)
                                      for i, a in enumerate(scenario.actors)])
        self._actor_surface = np.array([_TYPE_TO_SURFACE[a.type] for a in scenario.actors],
                                       dtype=np.uint8)
        margin_m = 50.0
        x0, y0, x1, y1 = self.town.extent
        self.scene = SimScene((x0 - margin_m, y0 - margin_m, x1 + margin_m, y1 + margin_m),
                              static_boxes(self.town))
        sensors = scenario.sensors
        self.lidar = LidarModel(sensors.lidar) if sensors.lidar is not None else None
        self.camera = None
        if sensors.camera is not None:
            self.camera = CameraModel(camera_config(self.vehicle, sensors.camera))
        self._lidar_rng = np.random.default_rng(seeds[0])
        self._odometry_rng = np.random.default_rng(seeds[1])
        self.position_noise_m = float(position_noise_m)
        self.yaw_noise_rad = float(yaw_noise_rad)
        self.time_s = 0.0
        self._scene_time_s = -math.inf

    # -- physics ---------------------------------------------------------------------------
    def step(self, steer_cmd_rad: float, accel_cmd_mps2: float, dt_s: float) -> EgoState:
        """Advance ego and actors by dt_s. Actors see the ego footprint at the step start."""
        self.actors.step(dt_s, ego_footprint_xy=self.ego.footprint(),
                         ego_velocity_xy_mps=self.ego.state.velocity_xy_mps())
        state = self.ego.step((steer_cmd_rad, accel_cmd_mps2), dt_s)
        self.time_s += dt_s
        return state

    def odometry(self) -> Odometry:
        state = self.ego.state
        dx, dy = (self._odometry_rng.normal(0.0, self.position_noise_m, 2)
                  if self.position_noise_m > 0.0 else (0.0, 0.0))
        dyaw = (self._odometry_rng.normal(0.0, self.yaw_noise_rad)
                if self.yaw_noise_rad > 0.0 else 0.0)
        return Odometry(state.x_m + dx, state.y_m + dy, state.yaw_rad + dyaw, state.speed_mps,
                        state.lateral_speed_mps, state.yaw_rate_rps, state.accel_mps2,
                        self.position_noise_m, self.yaw_noise_rad)

    def ground_truth(self) -> act.ActorSnapshot:
        return self.actors.snapshot()

    # -- sensors ---------------------------------------------------------------------------
    def _update_scene(self) -> None:
        if self._scene_time_s == self.time_s:
            return
        snap = self.actors.snapshot()
        if len(snap.ids):
            boxes = snap.boxes
            self.scene.set_actor_arrays(boxes[:, 0:3], boxes[:, 3], boxes[:, 4:7],
                                        self._actor_surface, np.arange(len(snap.ids)))
        self._scene_time_s = self.time_s

    def _mount_pose_map(self, mount) -> tuple[float, ...]:
        """(x, y, z, roll, pitch, yaw) of a base_link-mounted sensor in map (flat ground)."""
        state = self.ego.state
        base = transform_from_xyzrpy(state.x_m, state.y_m, 0.0, 0.0, 0.0, state.yaw_rad)
        sensor = base @ mount.transform()
        yaw = math.atan2(sensor[1, 0], sensor[0, 0])
        pitch = math.asin(-max(-1.0, min(1.0, sensor[2, 0])))
        roll = math.atan2(sensor[2, 1], sensor[2, 2])
        return (sensor[0, 3], sensor[1, 3], sensor[2, 3], roll, pitch, yaw)

    def lidar_scan(self) -> LidarScan:
        """One LiDAR sweep at the current instant, points in the lidar_top frame."""
        if self.lidar is None:
            raise RuntimeError('the scenario has no lidar')
        self._update_scene()
        return self.lidar.scan(self.scene, self._mount_pose_map(self.vehicle.lidar_top),
                               self._lidar_rng)

    def camera_image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of camera_front at the current instant."""
        if self.camera is None:
            raise RuntimeError('the scenario has no camera')
        self._update_scene()
        return self.camera.render(self.scene,
                                  self._mount_pose_map(self.vehicle.camera_front.mount))
