"""The lane map the planning nodes plan on: the same Town the simulator drives (pure core).

`load_planning_town` resolves, in this order: an explicit Lanelet2 .osm (`map_file`, projected
about `map_origin_lat`/`map_origin_lon`), else the map of the scenario YAML (`scenario`, built
exactly as the simulator builds it: `robotaxi_stack.sim.world.build_town` with the package
share directory as base for relative map files), else the map of the default scenario
`scenarios/plain_ride.yaml`. The mission and planner nodes both call it with the same
parameters, so they always plan on the map the simulator runs.
"""

from __future__ import annotations

import os
import pathlib

from robotaxi_stack.common.paths import data_path
from robotaxi_stack.sim import maps

#: The scenario whose map is used when neither a map file nor a scenario is configured; the
#: simulator runs the same default.
DEFAULT_SCENARIO = 'scenarios/plain_ride.yaml'


def _resolve(path: str) -> pathlib.Path:
    """A path as given when it exists (relative to the working directory), else below the
    package share directory (config-relative names such as `maps/town.osm`)."""
    given = pathlib.Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    shared = data_path(path)
    return shared if shared.exists() else given


def load_planning_town(map_file: str, scenario: str,
                       map_origin_lat: float = maps.DEFAULT_ORIGIN_LATLON[0],
                       map_origin_lon: float = maps.DEFAULT_ORIGIN_LATLON[1]) -> maps.Town:
    """The Town to plan on (see the module docstring for the order of sources).

    map_file: Lanelet2 .osm path ('' for none); map_origin_lat/lon [deg]: its projection
    origin (UTM about that point gives the `map` frame). scenario: scenario YAML path ('' for
    none). Raises MapError (MapFormatError for unreadable maps) or ScenarioError (a
    ValueError naming the bad key) when the chosen source cannot be loaded; it never falls
    back to another source after a failure, so a typo cannot silently change the map.
    """
    if map_file:
        return maps.load_osm(_resolve(map_file), (map_origin_lat, map_origin_lon))
    # Imported here: the simulator's world module pulls in its sensor models (open3d, ~4 s),
    # which a map file does not need.
    from robotaxi_stack.sim.scenario import load_scenario
    from robotaxi_stack.sim.world import build_town
    path = _resolve(scenario) if scenario else data_path(DEFAULT_SCENARIO)
    return build_town(load_scenario(os.fspath(path)), base_dir=str(data_path()))
