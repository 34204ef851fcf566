"""Lanelet2 .osm input/output, and the numpy geometry of any Lanelet2 map.

Maps are projected with lanelet2's UtmProjector(Origin(lat, lon)): the `map` frame is metres
east/north of the origin in its UTM zone.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lanelet2
import numpy as np

from robotaxi_stack.sim.maps.errors import MapError, MapFormatError
from robotaxi_stack.sim.maps.town import (
    VEHICLE_KINDS, Crosswalk, LaneletGeometry, StopLine, Town, as_finite,
    centerline_from_bounds, line_station_on_polyline, polyline_arclength)

DEFAULT_ORIGIN_LATLON = (35.0, 139.0)
# A stop line referenced by a lanelet counts as that lanelet's when it passes this close to
# its centreline [m] (one regulatory element may list the stop lines of several lanes).
_STOP_LINE_REACH_M = 0.1


def _projector(origin_latlon: Any) -> Any:
    try:
        lat, lon = origin_latlon
    except (TypeError, ValueError) as exc:
        raise MapError(f'origin_latlon = {origin_latlon!r} must be (lat, lon) in '
                       f'degrees') from exc
    # UTM is defined from 80 S to 84 N.
    lat = as_finite(lat, 'origin_latlon[0] (latitude, deg)', -80.0, 84.0)
    lon = as_finite(lon, 'origin_latlon[1] (longitude, deg)', -180.0, 180.0)
    return lanelet2.projection.UtmProjector(lanelet2.io.Origin(lat, lon))


def vehicle_traffic_rules() -> Any:
    """Lanelet2's German traffic rules for vehicles (they read `speed_limit` in km/h)."""
    return lanelet2.traffic_rules.create(lanelet2.traffic_rules.Locations.Germany,
                                         lanelet2.traffic_rules.Participants.Vehicle)


def write_osm(town_or_map: Any, path: str | os.PathLike,
              origin_latlon: tuple[float, float] = DEFAULT_ORIGIN_LATLON) -> None:
    """Write a Town's (or a lanelet2 LaneletMap's) map to a Lanelet2 .osm file.

    Points also get Autoware's `local_x`/`local_y` tags (their `map` coordinates [m]), which
    Autoware's local projector reads; this adds those attributes to the map in memory.
    """
    lanelet_map = town_or_map.lanelet_map if isinstance(town_or_map, Town) else town_or_map
    if not isinstance(lanelet_map, lanelet2.core.LaneletMap):
        raise MapFormatError(f'town_or_map = {town_or_map!r} must be a Town or a '
                             f'lanelet2.core.LaneletMap')
    path = os.fspath(path)
    if not path.endswith('.osm'):
        raise MapFormatError(f'path = {path!r} must end in .osm')
    projector = _projector(origin_latlon)
    for point in lanelet_map.pointLayer:
        point.attributes['local_x'] = f'{point.x:.4f}'
        point.attributes['local_y'] = f'{point.y:.4f}'
    try:
        errors = lanelet2.io.writeRobust(path, lanelet_map, projector)
    except RuntimeError as exc:
        raise MapFormatError(f'cannot write {path!r}: {exc}') from exc
    if errors:
        raise MapFormatError(f'writing {path!r} failed: {"; ".join(errors[:5])}')


def load_osm(path: str | os.PathLike,
             origin_latlon: tuple[float, float] = DEFAULT_ORIGIN_LATLON) -> Town:
    """Load any Lanelet2 .osm file into a Town (numpy geometry derived from its lanelets).

    Raises MapFormatError when the file is missing, does not parse, reports parser errors or
    holds no lanelets.
    """
    path = os.fspath(path)
    projector = _projector(origin_latlon)
    if not os.path.isfile(path):
        raise MapFormatError(f'map file {path!r} does not exist')
    try:
        lanelet_map, errors = lanelet2.io.loadRobust(path, projector)
    except RuntimeError as exc:
        raise MapFormatError(f'cannot parse map file {path!r}: {exc}') from exc
    if errors:
        raise MapFormatError(f'map file {path!r} has {len(errors)} error(s): '
                             f'{"; ".join(errors[:5])}')
    if len(lanelet_map.laneletLayer) == 0:
        raise MapFormatError(f'map file {path!r} holds no lanelets')
    return town_from_lanelet_map(lanelet_map)


def _bound_xy(linestring: Any) -> np.ndarray:
    return np.array([(p.x, p.y) for p in linestring], dtype=np.float64).reshape(-1, 2)


def _kind(lanelet: Any, attrs: dict, rules: Any) -> str:
    if attrs.get('subtype') == 'crosswalk':
        return 'crosswalk'
    if not rules.canPass(lanelet):
        return 'other'
    return 'turn' if 'turn_direction' in attrs else 'road'


def town_from_lanelet_map(lanelet_map: Any) -> Town:
    """Derive a Town's numpy geometry from any lanelet2 LaneletMap (no surface rectangles).

    Speed limits are what lanelet2's German vehicle traffic rules read. Stop lines are the
    `ref_line` members of the lanelets' regulatory elements (traffic signs, traffic lights,
    right of way, all-way stop); where one element lists several, each lanelet keeps those
    that cross its centreline.
    """
    rules = vehicle_traffic_rules()
    geoms: dict[int, LaneletGeometry] = {}
    crosswalks: list[Crosswalk] = []
    stop_lines: list[StopLine] = []
    all_xy = []
    for lanelet in sorted(lanelet_map.laneletLayer, key=lambda ll: ll.id):
        attrs = {key: str(value) for key, value in lanelet.attributes.items()}
        left = _bound_xy(lanelet.leftBound)
        right = _bound_xy(lanelet.rightBound)
        if len(left) < 2 or len(right) < 2:
            raise MapFormatError(f'lanelet {lanelet.id} has a bound with fewer than 2 points')
        all_xy += [left, right]
        kind = _kind(lanelet, attrs, rules)
        centerline = centerline_from_bounds(left, right)
        if len(centerline) < 2:
            raise MapFormatError(f'lanelet {lanelet.id} has a zero-length centreline')
        # lanelet2's Python binding reports speed limits in km/h.
        speed_kph = (rules.speedLimit(lanelet).speedLimit if kind in VEHICLE_KINDS
                     else math.nan)
        geom = LaneletGeometry(lanelet.id, kind, centerline, left, right, speed_kph,
                               attrs.get('turn_direction', '') if kind == 'turn' else '')
        geoms[lanelet.id] = geom
        if kind == 'crosswalk':
            crosswalks.append(Crosswalk(lanelet.id, np.concatenate((left, right[::-1]))))
        elif kind in VEHICLE_KINDS:
            stop_lines += _stop_lines_of(lanelet, geom)
    points = np.concatenate(all_xy)
    extent = np.concatenate((points.min(axis=0), points.max(axis=0)))
    empty = np.zeros((0, 4))
    return Town(lanelet_map=lanelet_map, lanelets=geoms, stop_lines=tuple(stop_lines),
                crosswalks=tuple(crosswalks), road_rects=empty, block_rects=empty,
                block_ids=np.zeros(0, dtype=np.int64), building_rects=empty, extent=extent)


def _stop_lines_of(lanelet: Any, geom: LaneletGeometry) -> list[StopLine]:
    out = []
    for regelem in lanelet.regulatoryElements:
        parameters = regelem.parameters
        if 'ref_line' not in parameters.keys():
            continue
        candidates = []
        for line in parameters['ref_line']:
            xy = _bound_xy(line)
            if len(xy) < 2:
                continue
            segment = np.array([xy[0], xy[-1]])
            candidates.append((_distance_to_polyline(segment, geom.centerline), line.id,
                               segment))
        if not candidates:
            continue
        close = [c for c in candidates if c[0] <= _STOP_LINE_REACH_M]
        # A lone stop line drawn short of the centreline still belongs to its lanelet.
        for _, line_id, segment in close or [min(candidates, key=lambda c: c[0])]:
            out.append(StopLine(line_id, geom.lanelet_id, segment,
                                line_station_on_polyline(geom.centerline, segment)))
    return out


def _distance_to_polyline(segment: np.ndarray, polyline: np.ndarray) -> float:
    """Smallest distance [m] between a segment (2, 2) and a polyline (N, 2) (0 if crossing)."""
    station = line_station_on_polyline(polyline, segment)
    s = polyline_arclength(polyline)
    foot = np.array([np.interp(station, s, polyline[:, 0]),
                     np.interp(station, s, polyline[:, 1])])
    d = segment[1] - segment[0]
    t = np.clip(np.dot(foot - segment[0], d) / max(np.dot(d, d), 1e-18), 0.0, 1.0)
    return float(np.linalg.norm(segment[0] + t * d - foot))
