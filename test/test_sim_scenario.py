"""Scenario file parsing and validation (robotaxi_stack.sim.scenario, ARCHITECTURE.md 6)."""

import copy
import math

import numpy as np
import pytest
import yaml

from robotaxi_stack.sim.actors import DEFAULT_SIZES_M, ActorType
from robotaxi_stack.sim.camera import CameraConfig
from robotaxi_stack.sim.lidar import LidarConfig
from robotaxi_stack.sim.maps import GridTownParams, generate_grid_town, is_on_road
from robotaxi_stack.sim.scenario import (
    DelayTopicFault, DropTopicFault, FreezeSensorFault, KillNodeFault, LaneFollowBehavior,
    ParkedBehavior, ScenarioError, WaypointsBehavior, load_scenario, parse_scenario,
    scenario_to_dict, validate_positions)

# The example of ARCHITECTURE.md section 6, verbatim.
EXAMPLE_YAML = """\
format: robotaxi-scenario/1
name: pickup_behind_parked_van
seed: 7
duration_s: 120
map: {generator: grid_town, params: {blocks_x: 3, blocks_y: 2, block_m: 120, speed_limit_kph: 40}}
#  or map: {file: maps/town.osm, origin: {lat: 35.0, lon: 139.0}}
ego: {vehicle: bmw_320i, start: {x: 0.0, y: -1.75, yaw: 0.0, speed: 0.0}}
rides:
  - {at_s: 0, ride_id: r1, pickup: {x: 180, y: -1.75, yaw: 0}, dropoff: {x: 241.75, y: 60, yaw: 1.5708}}
actors:
  - {id: van, type: truck, start: {x: 150, y: -1.75, yaw: 0}, behavior: {kind: parked}}
  - {id: car1, type: car, start: {x: 40, y: -1.75, yaw: 0, speed: 8}, behavior: {kind: lane_follow, target_speed: 9}}
  - {id: ped1, type: pedestrian, behavior: {kind: waypoints, points: [[5, 110, -9], [15, 110, 9]]}}  # [t, x, y]
sensors: {lidar: {channels: 64, hz: 10, range_m: 100, noise_m: 0.02, dropout: 0.01}, camera: {hz: 10}}
faults:
  - {at_s: 60, kind: kill_node, node: tracking}
  - {at_s: 70, kind: drop_topic, topic: /sensing/lidar/points, duration_s: 2}
expect: {rides_completed: 1, no_collision: true, stop_error_m: 0.3, mrm: none}
"""  # noqa: E501

GRID_BOUNDS = (-20.0, -20.0, 380.0, 260.0)


def example_dict():
    return yaml.safe_load(EXAMPLE_YAML)


def grid_on_road(xy):
    """Vectorised on-road test of the example's grid_town: 7 m wide roads on x=i*120, y=j*120."""
    near_x = np.abs(xy[:, 0:1] - 120.0 * np.arange(4)) <= 3.5
    near_y = np.abs(xy[:, 1:2] - 120.0 * np.arange(3)) <= 3.5
    inside = (xy[:, 0] >= -3.5) & (xy[:, 0] <= 363.5) & (xy[:, 1] >= -3.5) & (xy[:, 1] <= 243.5)
    return inside & (near_x.any(axis=1) | near_y.any(axis=1))


def expect_error(data, key_path, fragment=''):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data)
    assert info.value.key_path == key_path, str(info.value)
    assert str(info.value).startswith(f'{key_path}: ') if key_path else True
    assert fragment in str(info.value)
    return str(info.value)


def test_architecture_example_parses_into_typed_values(tmp_path):
    path = tmp_path / 'example.yaml'
    path.write_text(EXAMPLE_YAML)
    scenario = load_scenario(path)
    assert scenario.name == 'pickup_behind_parked_van'
    assert scenario.seed == 7 and scenario.duration_s == 120.0
    assert scenario.map.generator == 'grid_town'
    assert scenario.map.params.blocks_x == 3 and scenario.map.params.block_m == 120.0
    assert scenario.map.params.lane_width_m == 3.5  # contract default
    assert scenario.map.params == GridTownParams(blocks_x=3, blocks_y=2, block_m=120.0,
                                                 speed_limit_kph=40.0)
    assert scenario.ego.vehicle == 'bmw_320i' and scenario.ego.start.y == -1.75
    assert scenario.rides[0].dropoff.yaw == pytest.approx(1.5708)
    van, car, ped = scenario.actors
    assert isinstance(van.behavior, ParkedBehavior) and van.start.speed == 0.0
    assert isinstance(car.behavior, LaneFollowBehavior) and car.behavior.target_speed == 9.0
    assert isinstance(ped.behavior, WaypointsBehavior) and ped.start is None
    assert ped.behavior.points == ((5.0, 110.0, -9.0), (15.0, 110.0, 9.0))
    assert scenario.sensors.lidar == LidarConfig(channels=64, hz=10.0, range_m=100.0,
                                                 noise_m=0.02, dropout=0.01)
    assert scenario.sensors.camera == CameraConfig(hz=10.0)
    assert scenario.faults == (KillNodeFault(60.0, 'tracking'),
                               DropTopicFault(70.0, '/sensing/lidar/points', 2.0))
    assert scenario.expect.rides_completed == 1 and scenario.expect.mrm == 'none'
    assert scenario.expect.max_abs_jerk_mps3 is None  # not set: not checked
    assert scenario.sim.perception == 'lidar_camera'  # sensors.lidar given


def test_scenario_is_frozen_and_hashable():
    scenario = parse_scenario(example_dict())
    with pytest.raises(AttributeError):
        scenario.seed = 8
    assert hash(scenario) == hash(parse_scenario(example_dict()))


def test_scenario_to_dict_round_trips_through_yaml():
    data = example_dict()
    data['actors'][0]['size'] = [5.5, 2.1, 2.4]
    data['actors'][1]['behavior'].update(route='random', stop_at_stop_lines=True, time_gap_s=2)
    data['map']['params']['sidewalk_width_m'] = 4.0
    data['faults'] += [
        {'at_s': 80, 'kind': 'delay_topic', 'topic': '/perception/objects', 'delay_s': 0.3,
         'duration_s': 5},
        {'at_s': 90, 'kind': 'freeze_sensor', 'sensor': 'camera', 'duration_s': 1}]
    data['expect'].update(min_perception={'recall_ped': 0.9, 'ap_car': 0.8}, min_mota=0.5)
    data['sim'] = {'step_hz': 100, 'real_time_factor': 2.0}
    scenario = parse_scenario(data)
    assert scenario.actors[1].behavior == LaneFollowBehavior(
        9.0, stop_at_stop_lines=True, route='random', time_gap_s=2.0)
    assert scenario.actors[1].behavior.min_gap_m is None  # the actor model's default applies
    assert scenario.faults[2] == DelayTopicFault(80.0, '/perception/objects', 0.3, 5.0)
    assert scenario.faults[3] == FreezeSensorFault(90.0, 'camera', 1.0)
    assert scenario.expect.min_perception == (('ap_car', 0.8), ('recall_ped', 0.9))
    dumped = yaml.safe_dump(scenario_to_dict(scenario))
    assert parse_scenario(yaml.safe_load(dumped)) == scenario


def test_map_file_variant_needs_an_origin():
    data = example_dict()
    data['map'] = {'file': 'maps/town.osm', 'origin': {'lat': 35.0, 'lon': 139.0}}
    scenario = parse_scenario(data)
    assert scenario.map.file == 'maps/town.osm' and scenario.map.origin.lat == 35.0
    del data['map']['origin']
    expect_error(data, 'map.origin', 'missing required key')
    data['map'] = {'file': 'maps/town.osm', 'origin': {'lat': 95.0, 'lon': 139.0}}
    expect_error(data, 'map.origin.lat', '<= 90')


def test_wrong_type_names_full_key_path_and_value():
    data = example_dict()
    data['actors'][1]['behavior']['target_speed'] = 'fast'
    message = expect_error(data, 'actors[1].behavior.target_speed')
    assert message == "actors[1].behavior.target_speed: expected number, got 'fast'"


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _delete(data, path):
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


@pytest.mark.parametrize('path, value, key_path, fragment', [
    (('format',), 'robotaxi-scenario/2', 'format', "expected 'robotaxi-scenario/1'"),
    (('colour',), 'red', 'colour', 'unknown key'),
    (('actors', 1, 'behavior', 'speed'), 3, 'actors[1].behavior.speed', 'unknown key'),
    (('map', 'params', 'blocks'), 3, 'map.params.blocks', 'unknown key'),
    (('duration_s',), float('nan'), 'duration_s', 'finite'),
    (('rides', 0, 'pickup', 'x'), float('inf'), 'rides[0].pickup.x', 'finite'),
    (('duration_s',), -5, 'duration_s', '> 0'),
    (('faults', 1, 'duration_s'), -2, 'faults[1].duration_s', '> 0'),
    (('faults', 0, 'at_s'), 130, 'faults[0].at_s', 'beyond the end'),
    (('rides', 0, 'at_s'), 120, 'rides[0].at_s', 'duration_s'),
    (('actors', 2, 'id'), 'van', 'actors[2].id', "duplicate id 'van'"),
    (('seed',), True, 'seed', 'expected integer'),
    (('seed',), 7.5, 'seed', 'expected integer'),
    (('seed',), -1, 'seed', '>= 0'),
    (('actors', 0, 'type'), 'tank', 'actors[0].type', 'expected one of'),
    (('actors', 0, 'size'), [4.0, 2.0], 'actors[0].size', 'list of 3 numbers'),
    (('actors', 0, 'size'), [4.0, 0.0, 2.0], 'actors[0].size[1]', '> 0'),
    (('actors', 1, 'start', 'speed'), -1.0, 'actors[1].start.speed', '>= 0'),
    (('actors', 2, 'behavior', 'points'), [[5, 110, -9], [5, 110, 9]],
     'actors[2].behavior.points[1][0]', 'increase strictly'),
    (('actors', 2, 'behavior', 'points'), [], 'actors[2].behavior.points', 'at least one'),
    (('actors', 2, 'behavior', 'kind'), 'teleport', 'actors[2].behavior.kind', 'one of'),
    (('actors', 1, 'behavior', 'route'), 'left', 'actors[1].behavior.route', 'one of'),
    (('actors', 1, 'behavior', 'target_speed'), 0, 'actors[1].behavior.target_speed', '> 0'),
    (('sensors', 'lidar', 'dropout'), 1.5, 'sensors.lidar.dropout', 'out of range'),
    (('sensors', 'lidar', 'channels'), 64.0, 'sensors.lidar.channels', 'expected int'),
    (('sensors', 'lidar', 'noise_m'), float('nan'), 'sensors.lidar.noise_m', 'finite'),
    (('sensors', 'lidar', 'beams'), 64, 'sensors.lidar.beams', 'unknown key'),
    (('sensors', 'camera', 'width'), 100, 'sensors.camera.width', 'out of range'),
    (('sensors', 'radar'), {'hz': 10}, 'sensors.radar', 'unknown key'),
    (('faults', 1, 'topic'), '/sensing/lidar/pts', 'faults[1].topic', 'not a contract topic'),
    (('faults', 0, 'node'), 'track ing', 'faults[0].node', 'does not match'),
    (('faults', 0, 'kind'), 'reboot', 'faults[0].kind', 'one of'),
    (('expect', 'rides_completed'), 2, 'expect.rides_completed', 'exceeds the 1 ride'),
    (('expect', 'mrm'), 'panic', 'expect.mrm', 'one of'),
    (('expect', 'no_collision'), 'yes please', 'expect.no_collision', 'true or false'),
    (('expect', 'min_perception'), {'ap_tank': 0.5}, 'expect.min_perception.ap_tank',
     'unknown key'),
    (('expect', 'min_perception'), {'ap_car': 1.5}, 'expect.min_perception.ap_car', '<= 1'),
    (('map', 'params', 'block_m'), 10, 'map.params.block_m', 'out of range'),
    (('map', 'params', 'sidewalk_width_m'), 20.0, 'map.params.sidewalk_width_m',
     'out of range'),
    (('map', 'params', 'lanes_per_direction'), 1.5, 'map.params.lanes_per_direction',
     'expected integer'),
    (('map', 'params', 'block_m'), float('nan'), 'map.params.block_m', 'finite'),
    (('map', 'generator'), 'spiral_town', 'map.generator', 'one of'),
    (('ego', 'vehicle'), '', 'ego.vehicle', 'non-empty'),
    (('sim',), {'perception': 'radar'}, 'sim.perception', 'one of'),
    (('rides', 0, 'ride_id'), 5, 'rides[0].ride_id', 'expected string'),
    (('actors',), {'van': 1}, 'actors', 'expected list'),
])
def test_invalid_value_error_names_its_key(path, value, key_path, fragment):
    data = example_dict()
    _set(data, path, value)
    expect_error(data, key_path, fragment)


@pytest.mark.parametrize('path, key_path', [
    (('ego', 'start', 'x'), 'ego.start.x'),
    (('ego', 'start', 'yaw'), 'ego.start.yaw'),
    (('seed',), 'seed'),
    (('expect',), 'expect'),
    (('actors', 1, 'behavior', 'target_speed'), 'actors[1].behavior.target_speed'),
    (('actors', 0, 'start'), 'actors[0].start'),
    (('actors', 0, 'behavior', 'kind'), 'actors[0].behavior.kind'),
    (('faults', 1, 'duration_s'), 'faults[1].duration_s'),
    (('faults', 0, 'node'), 'faults[0].node'),
    (('rides', 0, 'dropoff'), 'rides[0].dropoff'),
])
def test_missing_required_key_is_named(path, key_path):
    data = example_dict()
    _delete(data, path)
    expect_error(data, key_path, 'missing required key')


def test_duplicate_ride_ids_are_rejected():
    data = example_dict()
    data['rides'].append(copy.deepcopy(data['rides'][0]))
    data['expect']['rides_completed'] = 2
    expect_error(data, 'rides[1].ride_id', "duplicate id 'r1' (also rides[0].ride_id)")


def test_pedestrian_cannot_lane_follow():
    data = example_dict()
    data['actors'][2] = {'id': 'ped1', 'type': 'pedestrian', 'start': {'x': 110, 'y': -9},
                         'behavior': {'kind': 'lane_follow', 'target_speed': 1.4}}
    expect_error(data, 'actors[2].behavior.kind', 'for vehicles')


def test_lidar_camera_perception_needs_a_lidar_and_freeze_needs_the_sensor():
    data = example_dict()
    del data['sensors']['lidar']
    data['sim'] = {'perception': 'lidar_camera'}
    expect_error(data, 'sim.perception', 'needs sensors.lidar')
    data = example_dict()
    del data['sensors']['camera']
    data['faults'].append({'at_s': 5, 'kind': 'freeze_sensor', 'sensor': 'camera',
                           'duration_s': 1})
    expect_error(data, 'faults[2].sensor', 'not configured')


def test_map_needs_generator_or_file():
    data = example_dict()
    data['map'] = {'params': {'blocks_x': 1}}
    expect_error(data, 'map', 'generator')


def test_grid_town_params_default_to_the_map_module():
    data = example_dict()
    data['map'] = {'generator': 'grid_town'}
    assert parse_scenario(data).map.params == GridTownParams()


def test_root_must_be_a_mapping():
    with pytest.raises(ScenarioError, match='expected mapping'):
        parse_scenario(['format', 'robotaxi-scenario/1'])


def test_duplicate_yaml_key_is_an_error_with_its_line(tmp_path):
    path = tmp_path / 'dup.yaml'
    path.write_text(EXAMPLE_YAML + 'seed: 8\n')
    with pytest.raises(ScenarioError, match=r"duplicate key 'seed' at line 19 \(first at line 3"):
        load_scenario(path)


def test_yaml_nan_and_exponent_floats(tmp_path):
    path = tmp_path / 'nan.yaml'
    path.write_text(EXAMPLE_YAML.replace('noise_m: 0.02', 'noise_m: .nan'))
    with pytest.raises(ScenarioError, match=r'^sensors\.lidar\.noise_m: .*finite'):
        load_scenario(path)
    path.write_text(EXAMPLE_YAML.replace('noise_m: 0.02', 'noise_m: 2e-2'))
    assert load_scenario(path).sensors.lidar.noise_m == pytest.approx(0.02)


def test_unreadable_or_malformed_files_raise_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match='cannot read'):
        load_scenario(tmp_path / 'missing.yaml')
    path = tmp_path / 'bad.yaml'
    path.write_text('format: [unclosed\n')
    with pytest.raises(ScenarioError, match='invalid YAML'):
        load_scenario(path)


def test_actor_defaults_size_and_waypoint_initial_state():
    scenario = parse_scenario(example_dict())
    van, car, ped = scenario.actors
    assert van.size_m == DEFAULT_SIZES_M[ActorType.TRUCK]
    state = ped.initial_state
    assert (state.x, state.y, state.speed) == (110.0, -9.0, 0.0)
    assert state.yaw == pytest.approx(math.pi / 2)
    assert car.initial_state == car.start


def test_positions_on_the_map_pass_validation():
    validate_positions(parse_scenario(example_dict()), grid_on_road, GRID_BOUNDS)


def test_vehicle_off_road_is_named():
    data = example_dict()
    data['actors'][1]['start']['y'] = 20.0
    with pytest.raises(ScenarioError) as info:
        validate_positions(parse_scenario(data), grid_on_road, GRID_BOUNDS)
    assert info.value.key_path == 'actors[1].start'
    assert 'off the road' in str(info.value)


def test_pedestrian_may_be_off_road_but_not_outside_bounds():
    data = example_dict()
    data['actors'][2]['behavior']['points'][1] = [15, 110, 400]
    with pytest.raises(ScenarioError) as info:
        validate_positions(parse_scenario(data), grid_on_road, GRID_BOUNDS)
    assert info.value.key_path == 'actors[2].behavior.points[1]'
    assert 'outside the map bounds' in str(info.value)


def test_all_offending_positions_are_listed():
    data = example_dict()
    data['ego']['start'].update(x=50.0, y=30.0)
    data['rides'][0]['dropoff']['x'] = 200.0
    with pytest.raises(ScenarioError) as info:
        validate_positions(parse_scenario(data), grid_on_road, GRID_BOUNDS)
    assert info.value.key_path == 'ego.start'
    assert str(info.value).startswith('ego.start: position (50, 30) is off the road; ')
    assert 'rides[0].dropoff: position (200, 60) is off the road' in str(info.value)


def test_validate_positions_checks_its_inputs():
    scenario = parse_scenario(example_dict())
    with pytest.raises(ScenarioError, match='bool array'):
        validate_positions(scenario, lambda xy: np.ones(2, dtype=bool), GRID_BOUNDS)
    with pytest.raises(ScenarioError, match='map bounds'):
        validate_positions(scenario, grid_on_road, (0.0, 0.0, -1.0, 10.0))


def test_example_positions_fit_the_generated_grid_town():
    scenario = parse_scenario(example_dict())
    town = generate_grid_town(scenario.map.params)
    validate_positions(scenario, lambda xy: is_on_road(town, xy), tuple(town.extent))
    data = example_dict()
    data['actors'][0]['start']['y'] = -9.0  # the van on the sidewalk
    with pytest.raises(ScenarioError) as info:
        validate_positions(parse_scenario(data), lambda xy: is_on_road(town, xy),
                           tuple(town.extent))
    assert info.value.key_path == 'actors[0].start'


# ------------------------------------------------------------------------------ ride time ratio

def test_max_ride_time_ratio_parses_and_round_trips():
    data = example_dict()
    assert parse_scenario(data).expect.max_ride_time_ratio is None  # not set: not checked
    data['expect']['max_ride_time_ratio'] = 1.3
    scenario = parse_scenario(data)
    assert scenario.expect.max_ride_time_ratio == 1.3
    data['expect']['max_ride_time_ratio'] = 2  # an integer is a number
    assert parse_scenario(data).expect.max_ride_time_ratio == 2.0
    assert parse_scenario(yaml.safe_load(yaml.safe_dump(scenario_to_dict(scenario)))) == scenario


@pytest.mark.parametrize('value, fragment', [
    ('fast', "expected number, got 'fast'"),
    (True, 'expected number, got True'),
    (None, 'expected number, got None'),
    (float('nan'), 'expected a finite number'),
    (1.0, 'expected > 1, got 1.0'),
    (0.8, 'expected > 1, got 0.8'),
    (-2, 'expected > 1, got -2'),
])
def test_max_ride_time_ratio_must_be_a_number_above_one(value, fragment):
    data = example_dict()
    data['expect']['max_ride_time_ratio'] = value
    expect_error(data, 'expect.max_ride_time_ratio', fragment)


def test_shipped_scenarios_ask_for_ride_time_ratios_above_one():
    import pathlib
    folder = pathlib.Path(__file__).resolve().parents[1] / 'scenarios'
    ratios = {path.stem: load_scenario(path).expect.max_ride_time_ratio
              for path in sorted(folder.glob('*.yaml'))}
    assert ratios['plain_ride'] == 1.3
    assert all(ratio is None or 1.0 < ratio <= 2.0 for ratio in ratios.values())
