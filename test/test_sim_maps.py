"""Tests of robotaxi_stack.sim.maps: grid_town geometry (ARCHITECTURE.md section 6), Lanelet2
attributes and traffic rules, .osm round trip, routing, lane matching and lane paths."""

import math

import lanelet2
import numpy as np
import pytest

from robotaxi_stack.sim.maps import (
    GridTownParams, MapError, MapFormatError, MapParamError, OffMapError, RouteNotFoundError,
    build_routing_graph, generate_grid_town, is_on_road, lane_path, load_osm, nearest_lanelet,
    shortest_route, successors, vehicle_traffic_rules, write_osm)

BLOCK_M = 120.0


@pytest.fixture(scope='module')
def town():
    return generate_grid_town(GridTownParams(blocks_x=3, blocks_y=2, block_m=BLOCK_M))


@pytest.fixture(scope='module')
def town_two_lanes():
    return generate_grid_town(GridTownParams(blocks_x=2, blocks_y=1, block_m=BLOCK_M,
                                             lanes_per_direction=2))


@pytest.fixture(scope='module')
def loaded(town, tmp_path_factory):
    path = tmp_path_factory.mktemp('maps') / 'grid_town.osm'
    write_osm(town, path, origin_latlon=(35.0, 139.0))
    return path, load_osm(path, origin_latlon=(35.0, 139.0))


def _lane_at(town, xy, yaw):
    match = nearest_lanelet(town, xy, yaw)
    return town.lanelets[match.lanelet_id]


def _heading(polyline):
    d = polyline[-1] - polyline[0]
    return math.atan2(d[1], d[0])


def test_default_params_follow_the_contract():
    params = GridTownParams()
    assert params.lanes_per_direction == 1
    assert params.lane_width_m == 3.5
    assert params.speed_limit_kph == 40.0
    assert params.stop_line_offset_m == 4.0


@pytest.mark.parametrize('name, value', [
    ('blocks_x', 0), ('blocks_y', 51), ('blocks_x', 2.5), ('blocks_x', True),
    ('block_m', float('nan')), ('block_m', 19.0), ('lanes_per_direction', 0),
    ('lane_width_m', 1.0), ('lane_width_m', float('inf')), ('speed_limit_kph', 0.0),
    ('speed_limit_kph', '40'), ('sidewalk_width_m', -1.0), ('corner_cut_m', 3.5),
    ('edge_road_m', 10.0), ('crosswalk_width_m', 4.0), ('kerb_height_m', 2.0),
])
def test_invalid_params_raise_naming_parameter_and_value(name, value):
    with pytest.raises(MapParamError) as info:
        GridTownParams(**{name: value})
    assert f'GridTownParams.{name} = {value!r}' in str(info.value)


def test_out_of_range_param_error_states_allowed_range():
    with pytest.raises(MapParamError, match=r'allowed 1 <= blocks_x <= 50'):
        GridTownParams(blocks_x=0)
    # block_m must hold two boxes (2 x 3.5 m), two stop-line offsets (2 x 4 m) and 5 m of lane.
    with pytest.raises(MapParamError, match=r'allowed 20 <= block_m <= 2000'):
        GridTownParams(block_m=19.0)


def test_params_from_mapping_rejects_unknown_key():
    assert GridTownParams.from_mapping({'blocks_x': 2}).blocks_x == 2
    with pytest.raises(MapParamError, match='lane_count'):
        GridTownParams.from_mapping({'lane_count': 2})


def test_eastbound_first_lane_on_y0_is_centred_at_minus_1_75_along_each_block(town):
    for i in range(3):
        lane = _lane_at(town, (i * BLOCK_M + 60.0, -1.75), 0.0)
        assert lane.kind == 'road'
        np.testing.assert_array_equal(lane.centerline[:, 1], -1.75)
        # The road lanelet runs from stop line to stop line: box half-width 3.5 + 4 m.
        assert lane.centerline[0, 0] == pytest.approx(i * BLOCK_M + 7.5, abs=1e-9)
        assert lane.centerline[-1, 0] == pytest.approx((i + 1) * BLOCK_M - 7.5, abs=1e-9)
        assert _heading(lane.centerline) == pytest.approx(0.0, abs=1e-12)


def test_westbound_first_lane_on_y0_is_centred_at_plus_1_75(town):
    lane = _lane_at(town, (60.0, 1.75), math.pi)
    np.testing.assert_array_equal(lane.centerline[:, 1], 1.75)
    assert abs(_heading(lane.centerline)) == pytest.approx(math.pi)


def test_northbound_first_lane_on_x240_is_centred_at_241_75(town):
    lane = _lane_at(town, (241.75, 60.0), math.pi / 2)
    np.testing.assert_array_equal(lane.centerline[:, 0], 241.75)
    assert lane.centerline[0, 1] == pytest.approx(7.5) and lane.centerline[-1, 1] == 112.5
    south = _lane_at(town, (238.25, 60.0), -math.pi / 2)
    np.testing.assert_array_equal(south.centerline[:, 0], 238.25)


def test_second_lane_with_two_lanes_per_direction_is_centred_at_minus_5_25(town_two_lanes):
    first = _lane_at(town_two_lanes, (60.0, -1.75), 0.0)
    second = _lane_at(town_two_lanes, (60.0, -5.25), 0.0)
    np.testing.assert_array_equal(first.centerline[:, 1], -1.75)
    np.testing.assert_array_equal(second.centerline[:, 1], -5.25)
    # Box half-width is now 7 m, so the lanes start 11 m past the grid point.
    assert second.centerline[0, 0] == pytest.approx(11.0)
    graph = build_routing_graph(town_two_lanes)
    layer = town_two_lanes.lanelet_map.laneletLayer
    assert graph.right(layer[first.lanelet_id]).id == second.lanelet_id  # dashed: may change
    assert graph.left(layer[first.lanelet_id]) is None  # solid centre line to oncoming lane


def test_stop_line_lies_4_m_before_the_intersection_box(town, town_two_lanes):
    lane = _lane_at(town, (60.0, -1.75), 0.0)
    (stop,) = town.stop_lines_on(lane.lanelet_id)
    np.testing.assert_allclose(stop.xy, [[112.5, 0.0], [112.5, -3.5]], atol=1e-12)
    assert stop.station_m == pytest.approx(lane.length_m)
    lane2 = _lane_at(town_two_lanes, (60.0, -5.25), 0.0)
    (stop2,) = town_two_lanes.stop_lines_on(lane2.lanelet_id)
    np.testing.assert_allclose(stop2.xy, [[109.0, -3.5], [109.0, -7.0]], atol=1e-12)
    # Every stop line of the town sits W + 4 m from a grid line, across one lane.
    for line in town.stop_lines:
        along = 0 if line.xy[0, 0] == line.xy[1, 0] else 1
        coord = line.xy[0, along]
        assert abs(coord - BLOCK_M * round(coord / BLOCK_M)) == pytest.approx(7.5)
        assert np.linalg.norm(line.xy[1] - line.xy[0]) == pytest.approx(3.5)
    # 12 grid points x 4 arms x 1 lane.
    assert len(town.stop_lines) == 48


def test_stop_lines_are_referenced_by_stop_sign_regulatory_elements(town):
    layer = town.lanelet_map.laneletLayer
    for line in town.stop_lines:
        regelems = layer[line.lanelet_id].regulatoryElements
        signs = [r for r in regelems if isinstance(r, lanelet2.core.TrafficSign)]
        assert len(signs) == 1
        assert [ls.id for ls in signs[0].refLines()] == [line.line_id]
        assert signs[0].type() == 'stop_sign'
        assert town.lanelet_map.lineStringLayer[line.line_id].attributes['type'] == 'stop_line'


def test_crosswalks_lie_between_stop_line_and_box_across_the_road(town):
    assert len(town.crosswalks) == 4 * 4 * 3
    polygons = {cw.lanelet_id: cw.polygon for cw in town.crosswalks}
    west_of_120 = [p for p in polygons.values()
                   if np.all(p[:, 0] < 120.0) and np.all(p[:, 0] > 110.0)
                   and np.all(np.abs(p[:, 1]) <= 3.5)]
    assert len(west_of_120) == 1
    p = west_of_120[0]
    np.testing.assert_allclose([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()],
                               [113.0, -3.5, 116.0, 3.5])
    rules = vehicle_traffic_rules()
    for lanelet_id in polygons:
        lanelet = town.lanelet_map.laneletLayer[lanelet_id]
        assert lanelet.attributes['subtype'] == 'crosswalk'
        assert lanelet.attributes['participant:pedestrian'] == 'yes'
        assert not rules.canPass(lanelet)
        assert town.lanelets[lanelet_id].kind == 'crosswalk'


def test_traffic_rules_read_the_configured_speed_limit():
    town = generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1, speed_limit_kph=30))
    rules = vehicle_traffic_rules()
    vehicle_ids = [i for i, g in town.lanelets.items() if g.kind in ('road', 'turn')]
    assert vehicle_ids
    for lanelet_id in vehicle_ids:
        limit = rules.speedLimit(town.lanelet_map.laneletLayer[lanelet_id])
        assert limit.speedLimit == pytest.approx(30.0)  # the Python binding reports km/h
        assert limit.isMandatory
        assert town.lanelets[lanelet_id].speed_limit_kph == 30.0


def test_vehicle_lanelets_carry_autoware_attributes_and_turn_directions(town):
    counts = {'left': 0, 'right': 0, 'straight': 0, '': 0}
    for lanelet in town.lanelet_map.laneletLayer:
        attrs = dict(lanelet.attributes)
        if attrs['subtype'] == 'crosswalk':
            continue
        assert {k: attrs[k] for k in ('subtype', 'location', 'one_way', 'participant:vehicle',
                                      'speed_limit')} == {
            'subtype': 'road', 'location': 'urban', 'one_way': 'yes',
            'participant:vehicle': 'yes', 'speed_limit': '40'}
        counts[attrs.get('turn_direction', '')] += 1
        assert town.lanelets[lanelet.id].turn_direction == attrs.get('turn_direction', '')
    grid_points = 4 * 3
    assert counts['left'] == counts['right'] == counts['straight'] == 4 * grid_points
    # Road stretches: 3 rows x (3 blocks + 2 edge stubs) + 4 columns x (2 + 2), both ways.
    assert counts[''] == 2 * (3 * 5 + 4 * 4)


def test_turn_lanelets_are_arcs_tangent_to_both_lanes(town):
    turns = {g.turn_direction: g for g in town.lanelets.values()
             if g.kind == 'turn' and np.allclose(g.centerline[0], [112.5, -1.75])}
    assert set(turns) == {'left', 'right', 'straight'}
    # Eastbound into grid point (120, 0): arcs centred 7.5 m back and 7.5 m to the side.
    right = turns['right'].centerline
    np.testing.assert_allclose(np.hypot(*(right - [112.5, -7.5]).T), 5.75, atol=1e-9)
    np.testing.assert_allclose(right[-1], [118.25, -7.5], atol=1e-12)
    left = turns['left'].centerline
    np.testing.assert_allclose(np.hypot(*(left - [112.5, 7.5]).T), 9.25, atol=1e-9)
    np.testing.assert_allclose(left[-1], [121.75, 7.5], atol=1e-12)
    np.testing.assert_allclose(turns['straight'].centerline[[0, -1]],
                               [[112.5, -1.75], [127.5, -1.75]])
    assert set(successors(town, _lane_at(town, (60.0, -1.75), 0.0).lanelet_id)) == {
        g.lanelet_id for g in turns.values()}


def test_vehicle_on_right_turn_clears_the_cut_kerb_corner():
    half_width_m = 0.9

    def inner_side(town):
        turn = next(g for g in town.lanelets.values() if g.turn_direction == 'right'
                    and np.allclose(g.centerline[0], [112.5, -1.75]))
        d = np.gradient(turn.centerline, axis=0)
        d /= np.linalg.norm(d, axis=1)[:, None]
        return turn.centerline + half_width_m * np.column_stack((d[:, 1], -d[:, 0]))

    cut = generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1))
    assert np.all(is_on_road(cut, inner_side(cut)))
    sharp = generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1, corner_cut_m=0.0))
    assert not np.all(is_on_road(sharp, inner_side(sharp)))


def test_road_and_block_rectangles_tile_the_extent(town):
    x0, y0, x1, y1 = town.extent
    np.testing.assert_allclose(town.extent, [-40.0, -40.0, 400.0, 280.0])
    rects = np.concatenate((town.road_rects, town.block_rects))
    area = np.prod(rects[:, 2:] - rects[:, :2], axis=1)
    assert area.sum() == pytest.approx((x1 - x0) * (y1 - y0))
    rng = np.random.default_rng(3)
    pts = rng.uniform([x0, y0], [x1, y1], size=(2000, 2))
    inside = ((pts[:, None, 0] > rects[None, :, 0]) & (pts[:, None, 0] < rects[None, :, 2])
              & (pts[:, None, 1] > rects[None, :, 1]) & (pts[:, None, 1] < rects[None, :, 3]))
    np.testing.assert_array_equal(inside.sum(axis=1), 1)
    # Buildings stand on blocks, set back from the kerb by sidewalk + setback (5 m).
    first_block = np.all((town.building_rects[:, :2] > 0) & (town.building_rects[:, 2:] < 120),
                         axis=1)
    np.testing.assert_allclose(town.building_rects[first_block], [[8.5, 8.5, 111.5, 111.5]])
    assert not np.any(is_on_road(town, 0.5 * (town.building_rects[:, :2]
                                              + town.building_rects[:, 2:])))
    assert town.kerb_height_m == 0.15 and len(np.unique(town.block_ids)) == 5 * 4


def test_is_on_road_classifies_lanes_blocks_and_outside(town):
    lanes = np.concatenate([g.centerline for g in town.lanelets.values()])
    assert np.all(is_on_road(town, lanes))
    pts = np.array([[60.0, 60.0], [60.0, -5.0], [-4.0, -4.0], [-6.0, -6.0], [500.0, 0.0],
                    [60.0, 3.4], [60.0, 3.5], [60.0, 3.51]])
    np.testing.assert_array_equal(is_on_road(town, pts),
                                  [False, False, True, False, False, True, True, False])
    assert is_on_road(town, np.zeros((0, 2))).shape == (0,)
    with pytest.raises(MapError, match='finite'):
        is_on_road(town, [[0.0, float('nan')]])
    with pytest.raises(MapError, match=r'shape \(N, 2\)'):
        is_on_road(town, [0.0, 1.0, 2.0])


def test_route_across_town_includes_a_left_turn(town):
    route = shortest_route(town, (10.0, -1.75), 0.0, (241.75, 60.0))
    assert route[0] == nearest_lanelet(town, (10.0, -1.75), 0.0).lanelet_id
    assert route[-1] == nearest_lanelet(town, (241.75, 60.0), math.pi / 2).lanelet_id
    assert 'left' in [town.lanelets[i].turn_direction for i in route]
    for a, b in zip(route, route[1:]):
        assert b in successors(town, a)


def test_route_to_goal_behind_start_goes_round_the_block(town):
    route = shortest_route(town, (60.0, -1.75), 0.0, (30.0, -1.75))
    assert route[0] == route[-1] and len(route) > 4
    turns = [town.lanelets[i].turn_direction for i in route]
    assert turns.count('left') + turns.count('right') >= 3
    assert shortest_route(town, (30.0, -1.75), 0.0, (60.0, -1.75)) == [route[0]]


def test_route_with_lane_change_reaches_the_outer_lane(town_two_lanes):
    route = shortest_route(town_two_lanes, (60.0, -5.25), 0.0, (125.25, 60.0))
    assert 'left' in [town_two_lanes.lanelets[i].turn_direction for i in route]
    graph = build_routing_graph(town_two_lanes)
    layer = town_two_lanes.lanelet_map.laneletLayer
    # The left turn starts from the inner lane, so the route changes lanes first.
    assert graph.left(layer[route[0]]).id == route[1]


def test_route_to_unreachable_lane_raises(town):
    # The westbound lane entering the town at its east edge has no predecessor.
    with pytest.raises(RouteNotFoundError, match='no drivable route'):
        shortest_route(town, (60.0, -1.75), 0.0, (390.0, 1.75), math.pi)


def test_nearest_lanelet_respects_heading(town):
    east = nearest_lanelet(town, (60.0, -1.0), 0.0)
    west = nearest_lanelet(town, (60.0, -1.0), math.pi)
    assert town.lanelets[east.lanelet_id].centerline[0, 1] == -1.75
    assert town.lanelets[west.lanelet_id].centerline[0, 1] == 1.75
    assert east.lateral_m == pytest.approx(0.75) and west.lateral_m == pytest.approx(2.75)
    assert east.arc_length_m == pytest.approx(52.5)
    assert nearest_lanelet(town, (60.0, -1.0)).lanelet_id == east.lanelet_id
    with pytest.raises(OffMapError, match='heading'):
        nearest_lanelet(town, (60.0, -1.0), math.pi / 2)
    # Inside the box the straight-through lanelet, not a turn, fits a pose heading east.
    box = nearest_lanelet(town, (121.0, -1.75), 0.0)
    assert town.lanelets[box.lanelet_id].turn_direction == 'straight'


def test_off_map_position_raises_off_map_error(town):
    with pytest.raises(OffMapError, match=r'xy = \[60.0, 60.0\] is off the map'):
        nearest_lanelet(town, (60.0, 60.0), 0.0)
    with pytest.raises(OffMapError):
        lane_path(town, (60.0, 60.0), 0.0, 50.0)
    with pytest.raises(MapError, match='finite'):
        nearest_lanelet(town, (float('nan'), 0.0))
    with pytest.raises(MapError, match='yaw'):
        nearest_lanelet(town, (60.0, -1.75), float('inf'))


def test_contract_example_poses_lie_on_lanes(town):
    for xy, yaw in (((0.0, -1.75), 0.0), ((180.0, -1.75), 0.0), ((241.75, 60.0), 1.5708)):
        match = nearest_lanelet(town, xy, yaw)
        assert match.distance_m == pytest.approx(0.0, abs=1e-9)


def test_osm_round_trip_preserves_coordinates_to_1_cm(town, loaded):
    _, town2 = loaded
    points = {p.id: (p.x, p.y) for p in town.lanelet_map.pointLayer}
    points2 = {p.id: (p.x, p.y) for p in town2.lanelet_map.pointLayer}
    assert points.keys() == points2.keys()
    ids = sorted(points)
    error = np.abs(np.array([points[i] for i in ids]) - np.array([points2[i] for i in ids]))
    assert error.max() < 0.01
    assert town2.lanelets.keys() == town.lanelets.keys()
    for lanelet_id, geom in town.lanelets.items():
        geom2 = town2.lanelets[lanelet_id]
        assert (geom2.kind, geom2.turn_direction) == (geom.kind, geom.turn_direction)
        np.testing.assert_allclose(geom2.centerline, geom.centerline, atol=0.01)
        if geom.kind != 'crosswalk':
            assert geom2.speed_limit_kph == pytest.approx(geom.speed_limit_kph)
    lines = {(s.lanelet_id, s.line_id): s for s in town.stop_lines}
    lines2 = {(s.lanelet_id, s.line_id): s for s in town2.stop_lines}
    assert lines.keys() == lines2.keys()
    for key, line in lines.items():
        np.testing.assert_allclose(lines2[key].xy, line.xy, atol=0.01)
        assert lines2[key].station_m == pytest.approx(line.station_m, abs=0.01)
    assert len(town2.crosswalks) == len(town.crosswalks)


def test_loaded_map_supports_the_same_queries(town, loaded):
    _, town2 = loaded
    a = lane_path(town, (10.0, -1.75), 0.0, 300.0)
    b = lane_path(town2, (10.0, -1.75), 0.0, 300.0)
    assert a.lanelet_ids == b.lanelet_ids
    np.testing.assert_allclose(b.path_xy, a.path_xy, atol=0.01)
    np.testing.assert_allclose(b.stop_s, a.stop_s, atol=0.01)
    assert shortest_route(town2, (10.0, -1.75), 0.0, (241.75, 60.0)) == shortest_route(
        town, (10.0, -1.75), 0.0, (241.75, 60.0))
    np.testing.assert_array_equal(
        is_on_road(town2, np.array([[60.0, -1.75], [60.0, 60.0], [114.5, 3.0]])),
        [True, False, True])
    assert len(town2.road_rects) == 0 and town2.params is None


def test_osm_io_rejects_bad_paths_files_and_origins(town, tmp_path):
    with pytest.raises(MapFormatError, match='does not exist'):
        load_osm(tmp_path / 'missing.osm')
    garbage = tmp_path / 'garbage.osm'
    garbage.write_text('this is not xml')
    with pytest.raises(MapFormatError, match='garbage.osm'):
        load_osm(garbage)
    empty = tmp_path / 'empty.osm'
    empty.write_text('<?xml version="1.0"?>\n<osm version="0.6" generator="test"></osm>\n')
    with pytest.raises(MapFormatError, match='no lanelets'):
        load_osm(empty)
    with pytest.raises(MapFormatError, match='.osm'):
        write_osm(town, tmp_path / 'town.xml')
    with pytest.raises(MapError, match='latitude'):
        write_osm(town, tmp_path / 'town.osm', origin_latlon=(95.0, 139.0))
    with pytest.raises(MapFormatError, match='LaneletMap'):
        write_osm('not a map', tmp_path / 'town.osm')


def test_lane_path_straight_follows_the_lane_and_reports_stop_lines(town):
    path = lane_path(town, (10.0, -1.6), 0.0, 300.0)
    np.testing.assert_allclose(path.path_xy[:, 1], -1.75)
    np.testing.assert_allclose(path.path_xy[[0, -1], 0], [10.0, 310.0])
    steps = np.linalg.norm(np.diff(path.path_xy, axis=0), axis=1)
    assert path.path_xy.dtype == np.float64 and steps.max() <= 0.5 + 1e-9
    assert path.stop_s == pytest.approx([102.5, 222.5])
    assert [town.lanelets[i].turn_direction for i in path.lanelet_ids] == [
        '', 'straight', '', 'straight', '']


def test_lane_path_random_is_reproducible_per_seed_and_varies(town):
    runs = {}
    for seed in range(8):
        a = lane_path(town, (10.0, -1.75), 0.0, 400.0, 'random', np.random.default_rng(seed))
        b = lane_path(town, (10.0, -1.75), 0.0, 400.0, 'random', np.random.default_rng(seed))
        assert a.lanelet_ids == b.lanelet_ids
        np.testing.assert_array_equal(a.path_xy, b.path_xy)
        steps = np.linalg.norm(np.diff(a.path_xy, axis=0), axis=1)
        assert steps.max() <= 0.5 + 1e-9  # no jumps between lanelets
        for x, y in zip(a.lanelet_ids, a.lanelet_ids[1:]):
            assert y in successors(town, x)
        runs[seed] = tuple(a.lanelet_ids)
    assert len(set(runs.values())) >= 3


def test_lane_path_ends_at_the_town_edge(town):
    path = lane_path(town, (380.0, -1.75), 0.0, 100.0)
    assert path.path_xy[-1] == pytest.approx([400.0, -1.75])
    assert len(path.lanelet_ids) == 1 and path.stop_s == []


def test_lane_path_rejects_bad_arguments(town):
    for kwargs, message in (({'length_m': 0.0}, 'length_m'),
                            ({'length_m': float('nan')}, 'length_m'),
                            ({'length_m': 10.0, 'choose': 'zigzag'}, 'choose'),
                            ({'length_m': 10.0, 'choose': 'random'}, 'rng')):
        with pytest.raises(MapError, match=message):
            lane_path(town, (10.0, -1.75), 0.0, **kwargs)


def test_generation_is_deterministic():
    a = generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1))
    b = generate_grid_town(GridTownParams(blocks_x=1, blocks_y=1))
    assert list(a.lanelets) == list(b.lanelets)
    for lanelet_id, geom in a.lanelets.items():
        np.testing.assert_array_equal(geom.centerline, b.lanelets[lanelet_id].centerline)
