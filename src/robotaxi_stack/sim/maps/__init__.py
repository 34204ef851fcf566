"""Maps for the closed-loop simulator: generated grid towns and Lanelet2 .osm maps.

`generate_grid_town(GridTownParams(...))` builds the town of ARCHITECTURE.md section 6 as a
Town (Lanelet2 map + numpy geometry); `write_osm`/`load_osm` store and read any Lanelet2 map;
the queries match poses to lanes (heading aware), route, follow lanes and test the road
surface. Pure core: numpy and lanelet2 only.
"""

from robotaxi_stack.sim.maps.errors import (
    MapError, MapFormatError, MapParamError, OffMapError, RouteNotFoundError)
from robotaxi_stack.sim.maps.grid_town import GridTownParams, generate_grid_town
from robotaxi_stack.sim.maps.osm import (
    DEFAULT_ORIGIN_LATLON, load_osm, town_from_lanelet_map, vehicle_traffic_rules, write_osm)
from robotaxi_stack.sim.maps.query import (
    LaneletMatch, LanePath, build_routing_graph, is_on_road, lane_path, nearest_lanelet,
    shortest_route, successors)
from robotaxi_stack.sim.maps.town import (
    LANELET_KINDS, VEHICLE_KINDS, Crosswalk, LaneletGeometry, StopLine, Town)

__all__ = [
    'DEFAULT_ORIGIN_LATLON', 'LANELET_KINDS', 'VEHICLE_KINDS', 'Crosswalk', 'GridTownParams',
    'LaneletGeometry', 'LaneletMatch', 'LanePath', 'MapError', 'MapFormatError',
    'MapParamError', 'OffMapError', 'RouteNotFoundError', 'StopLine', 'Town',
    'build_routing_graph', 'generate_grid_town', 'is_on_road', 'lane_path', 'load_osm',
    'nearest_lanelet', 'shortest_route', 'successors', 'town_from_lanelet_map',
    'vehicle_traffic_rules', 'write_osm',
]
