"""Map-based motion prediction (pure core: numpy and the lane map, no rclpy, no messages).

Input: tracked objects in the `map` frame as an (N, 10) or (N, 12) float array, one row per
object, columns OBJECT_COLUMNS (+ OPTIONAL_COLUMNS: yaw rate and acceleration, NaN = unknown).
Output: per object up to `max_modes` paths of poses (x, y, yaw) at t = k * time_step_s,
k = 1..horizon_s / time_step_s, each with a confidence; an object's confidences sum to 1.

Vehicles (cars, trucks, buses, motorcycles, bicycles on the road) follow the lanes: candidate
lanelets near the object (heading aware, a vectorised search over all centreline segments
through a sparse grid), their successor sequences through intersections (straight and turns)
and the adjacent same-direction lanes (a lane change is a candidate whose centreline the
lateral offset or lateral velocity points to). A mode's path starts at the object's pose and
converges onto the centreline along a cubic in the lateral offset. Mode probabilities combine
the predicted lateral offset (offset + lateral velocity * lateral_lookahead_s), the heading
error, the yaw rate against the lane's curvature (when known), fork priors and whether a turn
can be taken at the speed the vehicle would reach it with. The speed along a mode comes from
the Intelligent Driver Model (Treiber et al. 2000), integrated for all modes of all objects at
once: free road towards a desired speed inferred from the object's speed history, stopping at
the stop lines on the path (every grid_town intersection is an all-way stop) for
`stop_dwell_s`, and following the leader ahead on the same lanelets (the other objects, moving
with their own most likely mode). Vehicles off every lane or reversing get one constant turn
rate and velocity (CTRV) mode. Successor sequences are built once per start lanelet and
length bucket and kept in one padded table, so the hypotheses of all candidates of a cycle are
formed, merged and ranked with a fixed number of array operations, not Python work per
candidate and sequence.

Pedestrians (and bicycles off the road) move at constant velocity; near a crosswalk they get a
mode that turns onto it (walking towards its end), modes that cross and then turn either way
along the far kerb (walking on it), or, standing at its edge, a mode that starts crossing.

The predictor keeps a short history per object id (fed by `predict`/`observe` with a stamp) to
estimate acceleration, yaw rate, cruise speed and how long an object has been standing; without
stamps those estimates are simply unknown.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Sequence

import numpy as np

from robotaxi_stack.common.params import ParameterError, param
from robotaxi_stack.sim.maps import Town, build_routing_graph, is_on_road, successors
from robotaxi_stack.sim.maps.town import VEHICLE_KINDS, polyline_arclength

OBJECT_COLUMNS = ('object_id', 'label', 'x_m', 'y_m', 'yaw_rad', 'speed_mps', 'vx_mps',
                  'vy_mps', 'length_m', 'width_m')
"""Required input columns: id, ObjectClass label, box centre and heading (map frame), signed
speed along the heading (negative = reversing), velocity in the map frame, box size."""
OPTIONAL_COLUMNS = ('yaw_rate_rps', 'accel_mps2')
"""Optional columns (NaN = unknown, then estimated from the history)."""

# robotaxi_msgs/ObjectClass labels.
UNKNOWN, CAR, TRUCK, BUS, BICYCLE, MOTORCYCLE, PEDESTRIAN = range(7)
VEHICLE_LABELS = (CAR, TRUCK, BUS, MOTORCYCLE)

MODE_LANE = 'lane'
MODE_CTRV = 'ctrv'
MODE_CONSTANT_VELOCITY = 'constant_velocity'
MODE_TURN_ONTO_CROSSWALK = 'turn_onto_crosswalk'
MODE_CROSS_THEN_LEFT = 'cross_then_left'
MODE_CROSS_THEN_RIGHT = 'cross_then_right'
MODE_START_CROSSING = 'start_crossing'
MODE_STAND = 'stand'

_GRID_CELL_M = 8.0          # cell of the sparse segment grid used by the lane search
_PACK_GAP_M = 1.0           # gap between packed lanelets so no interpolation spans two
_SNAP_DISTANCE_M = 0.3      # front bumper this close to a stop line ...
_SNAP_SPEED_MPS = 0.25      # ... and slower than this: standing at the line
_LINE_PASSED_M = 1.0        # a stop line this far behind the front bumper was passed
_DEDUP_TAIL_M = 1.0         # a candidate this close to its lanelet's end is its successors'
_MAX_SEQUENCES = 27         # successor sequences per start lanelet (3 forks of 3)
_MAX_ACCEL_RATIO = 0.97     # accel / max_accel above this says nothing more about v0
_CONFIDENCE = operator.itemgetter(0)  # of a (confidence, kind, lanelets, path) mode
_GROUP_BUCKETS = 1 << 40    # 20 m length buckets per start lanelet (codes stay in int64)


class PredictionInputError(ValueError):
    """The objects array has the wrong shape (a caller bug, not bad sensor values)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictorParams:
    """Parameters of the prediction core (config/prediction.param.yaml)."""

    horizon_s: float = param(8.0, min=0.5, max=20.0, description='prediction horizon')
    time_step_s: float = param(0.5, min=0.05, max=2.0,
                               description='time between predicted poses')
    integration_step_s: float = param(0.5, min=0.02, max=0.5,
                                      description='step of the longitudinal (IDM) integration')
    max_modes: int = param(6, min=1, max=20, description='most paths per object')
    min_mode_probability: float = param(0.01, min=0.0, max=0.5,
                                        description='modes below this are dropped')
    # lane association and mode probabilities
    candidate_radius_m: float = param(4.0, min=0.5, max=10.0,
                                      description='lane centrelines within this are candidates')
    max_heading_error_rad: float = param(0.8, min=0.1, max=1.57,
                                         description='candidate lanes within this heading')
    lateral_scale_m: float = param(0.8, min=0.05, max=5.0,
                                   description='sigma of the predicted lateral offset')
    heading_scale_rad: float = param(0.35, min=0.01, max=3.0,
                                     description='sigma of the heading error')
    yaw_rate_scale_rps: float = param(0.12, min=0.01, max=2.0,
                                      description='sigma of yaw rate minus speed*curvature')
    lateral_lookahead_s: float = param(2.0, min=0.0, max=5.0,
                                       description='lateral velocity extrapolated this long')
    turn_prior: float = param(0.8, min=0.01, max=10.0,
                              description='prior weight of a turn at a fork (straight: 1)')
    max_branch_forks: int = param(1, min=0, max=3,
                                  description='forks that branch; later ones go straight')
    max_turn_lat_accel_mps2: float = param(3.0, min=0.5, max=10.0,
                                           description='turns needing more are implausible')
    turn_lat_accel_scale_mps2: float = param(1.0, min=0.1, max=10.0,
                                             description='decay of turn plausibility above it')
    convergence_time_s: float = param(2.0, min=0.1, max=10.0,
                                      description='time to converge onto the own lane')
    lane_change_time_s: float = param(4.0, min=0.5, max=15.0,
                                      description='time of a lane change')
    lane_change_offset_m: float = param(1.0, min=0.1, max=5.0,
                                        description='beyond this offset a mode is a lane change')
    min_convergence_m: float = param(6.0, min=0.5, max=100.0)
    max_convergence_m: float = param(60.0, min=1.0, max=300.0)
    # longitudinal model (IDM)
    max_accel_mps2: float = param(1.5, min=0.1, max=5.0, description='IDM acceleration')
    comfort_decel_mps2: float = param(2.0, min=0.1, max=8.0, description='IDM deceleration')
    max_decel_mps2: float = param(8.0, min=0.5, max=12.0, description='hardest braking')
    time_gap_s: float = param(1.5, min=0.0, max=5.0, description='IDM time gap')
    min_gap_m: float = param(2.0, min=0.0, max=10.0, description='IDM jam distance')
    stop_dwell_s: float = param(2.0, min=0.0, max=30.0,
                                description='wait at a stop line before going on')
    speed_limit_factor: float = param(1.1, min=0.5, max=2.0,
                                      description='desired speed at most limit * this')
    start_speed_ratio: float = param(0.8, min=0.0, max=1.5,
                                     description='desired speed (x limit) of a vehicle first '
                                                 'seen standing at a stop line')
    stopped_speed_mps: float = param(0.25, min=0.0, max=2.0, description='standing below this')
    reverse_speed_mps: float = param(0.5, min=0.0, max=5.0,
                                     description='speed below -this is reversing (CTRV)')
    leader_lateral_margin_m: float = param(0.5, min=0.0, max=3.0,
                                           description='corridor margin for leaders')
    # history
    accel_filter_time_s: float = param(0.4, min=0.0, max=5.0,
                                       description='time constant of accel/yaw-rate filters')
    cruise_memory_decay_mps2: float = param(0.3, min=0.0, max=10.0,
                                            description='decay of the remembered cruise speed')
    history_timeout_s: float = param(2.0, min=0.1, max=60.0,
                                     description='forget an object not seen this long')
    drop_offroad_unknown: bool = param(True, description='drop UNKNOWN objects whose footprint '
                                       'lies wholly off the road surface (walls, kerbs, '
                                       'sidewalk clutter the clustering reports)')
    # pedestrians
    walk_speed_mps: float = param(1.4, min=0.3, max=4.0,
                                  description='speed of a pedestrian starting to cross')
    crosswalk_approach_m: float = param(15.0, min=0.0, max=50.0,
                                        description='turn onto a crosswalk reached within this')
    crosswalk_edge_m: float = param(3.0, min=0.0, max=10.0,
                                    description='beyond the kerb, still at the crosswalk')
    kerb_walk_offset_m: float = param(1.5, min=0.0, max=5.0,
                                      description='after crossing, turn this past the kerb')
    cross_turn_weight: float = param(0.8, min=0.0, max=10.0,
                                     description='weight of turning onto a crosswalk (CV: 1)')
    cross_then_turn_weight: float = param(0.6, min=0.0, max=10.0,
                                          description='weight of each turn after crossing')
    start_crossing_probability: float = param(0.3, min=0.0, max=1.0,
                                              description='standing at a crosswalk edge')

    def __post_init__(self) -> None:
        steps = self.horizon_s / self.time_step_s
        if abs(steps - round(steps)) > 1e-6:
            raise ParameterError(f'horizon_s = {self.horizon_s} must be a multiple of '
                             f'time_step_s = {self.time_step_s}')
        if self.max_convergence_m < self.min_convergence_m:
            raise ParameterError(f'max_convergence_m = {self.max_convergence_m} is below '
                             f'min_convergence_m = {self.min_convergence_m}')
        if self.max_decel_mps2 < self.comfort_decel_mps2:
            raise ParameterError(f'max_decel_mps2 = {self.max_decel_mps2} is below '
                             f'comfort_decel_mps2 = {self.comfort_decel_mps2}')

    @property
    def steps(self) -> int:
        return int(round(self.horizon_s / self.time_step_s))


@dataclasses.dataclass(frozen=True, eq=False)
class ObjectPrediction:
    """The modes of one object.

    paths (K, S, 3): [x_m, y_m, yaw_rad] in map at t = (1..S) * time_step_s; confidences (K,)
    sum to 1, most confident first; kinds (K,) MODE_* names; lanelet_ids (K,) the lanelets a
    lane mode follows (empty for other modes).
    """

    object_id: int
    label: int
    paths: np.ndarray
    confidences: np.ndarray
    kinds: tuple[str, ...]
    lanelet_ids: tuple[tuple[int, ...], ...]


@dataclasses.dataclass(frozen=True, eq=False)
class PredictionOutput:
    """Predictions of one cycle, in input order (dropped rows omitted).

    times_s (S,): the times of the path poses; dropped_nonfinite / dropped_duplicate: rows
    dropped for NaN/inf values or a repeated id (the later row); off_lane: vehicles predicted
    without a lane (CTRV); stamp_rejected: the stamp was not newer than the previous one
    (history not updated).
    """

    objects: list[ObjectPrediction]
    times_s: np.ndarray
    dropped_nonfinite: int = 0
    dropped_duplicate: int = 0
    off_lane: int = 0
    stamp_rejected: bool = False
    dropped_offroad_unknown: int = 0


@dataclasses.dataclass
class _Track:
    """What the history says about one object id."""

    t_s: float
    speed_mps: float
    yaw_rad: float
    accel_mps2: float = 0.0
    yaw_rate_rps: float = 0.0
    cruise_mps: float = 0.0
    stand_s: float = 0.0
    samples: int = 1


class _SequenceTable:
    """Every successor sequence computed so far (kept across cycles), one padded row each, so
    the sequences of all candidates of a cycle are gathered with one index array.

    Per row: lanes (W,) internal lanelet indices, padded with the last one; starts_m (W,) the
    station of each lanelet's start from the first one's start (inf padded); num_lanes;
    stops_m (S,) stop line stations (inf padded, at least one inf); num_stops; length_m;
    dead_end; weight (product of the fork priors); per turning lanelet (T, padding: entry
    -1 m, curvature 0) turn_entry_m, turn_kappa (|curvature|) and turn_stop_m (the last stop
    line at or before the entry, -inf: none); keys / tail_keys (W + 1,): ids of the lanelet
    tuples lanes[:c] and lanes[1:c] (-1: none), equal tuples having equal ids in all rows.
    The arrays have spare rows beyond len(self) (capacity doubles) and widen when a longer
    row arrives, so adding a row costs the same however many there are.
    """

    # name -> (padding, columns: 'lanes' W, 'keys' W + 1, 'stops' S, 'turns' T or None)
    _COLUMNS = {'lanes': (None, 'lanes'), 'starts_m': (math.inf, 'lanes'),
                'keys': (-1, 'keys'), 'tail_keys': (-1, 'keys'),
                'stops_m': (math.inf, 'stops'), 'turn_entry_m': (-1.0, 'turns'),
                'turn_kappa': (0.0, 'turns'), 'turn_stop_m': (-math.inf, 'turns'),
                'num_lanes': (0, None), 'num_stops': (0, None), 'length_m': (0.0, None),
                'dead_end': (False, None), 'weight': (0.0, None)}
    _INTEGER = ('lanes', 'keys', 'tail_keys', 'num_lanes', 'num_stops')

    def __init__(self, capacity: int = 256) -> None:
        self.key_ids: dict[tuple[int, ...], int] = {}
        self._count = 0
        self._width = {'lanes': 8, 'keys': 9, 'stops': 4, 'turns': 4}
        for name, (fill, cols) in self._COLUMNS.items():
            dtype = bool if name == 'dead_end' else np.int64 if name in self._INTEGER \
                else np.float64
            shape = (capacity,) if cols is None else (capacity, self._width[cols])
            setattr(self, name, np.full(shape, 0 if fill is None else fill, dtype=dtype))

    def __len__(self) -> int:
        return self._count

    def add(self, lanes: tuple[int, ...], starts_m: list[float], length_m: float,
            dead_end: bool, weight: float, turns: list[tuple[float, float, float]],
            stops_m: list[float]) -> None:
        """Append a sequence as row len(self); turns: (entry station, |curvature|, last stop
        line at or before the entry)."""
        self._reserve(self._count + 1, lanes=len(lanes), keys=len(lanes) + 1,
                      stops=len(stops_m) + 1, turns=len(turns))
        i, n = self._count, len(lanes)
        self._count += 1
        self.lanes[i] = lanes[-1]
        self.lanes[i, :n] = lanes
        self.starts_m[i, :n] = starts_m
        self.keys[i, 1:n + 1] = [self._key_id(lanes[:c]) for c in range(1, n + 1)]
        self.tail_keys[i, 2:n + 1] = [self._key_id(lanes[1:c]) for c in range(2, n + 1)]
        self.stops_m[i, :len(stops_m)] = stops_m
        for j, (entry_m, kappa, stop_m) in enumerate(turns):
            self.turn_entry_m[i, j], self.turn_kappa[i, j], self.turn_stop_m[i, j] = \
                entry_m, kappa, stop_m
        self.num_lanes[i], self.num_stops[i], self.length_m[i] = n, len(stops_m), length_m
        self.dead_end[i], self.weight[i] = dead_end, weight

    def _key_id(self, lanes: tuple[int, ...]) -> int:
        return self.key_ids.setdefault(lanes, len(self.key_ids))

    def _reserve(self, rows: int, **widths: int) -> None:
        capacity = len(self.num_lanes)
        grow_rows = capacity * 2 if rows > capacity else capacity
        if grow_rows == capacity and all(widths[k] <= self._width[k] for k in widths):
            return
        for key, width in widths.items():
            self._width[key] = max(self._width[key], width)
        for name, (fill, cols) in self._COLUMNS.items():
            old = getattr(self, name)
            shape = (grow_rows,) if cols is None else (grow_rows, self._width[cols])
            new = np.full(shape, 0 if fill is None else fill, dtype=old.dtype)
            if cols is None:
                new[:capacity] = old
            else:
                new[:capacity, :old.shape[1]] = old
                if fill is None:  # lanes: pad with each row's last lanelet
                    new[:capacity, old.shape[1]:] = old[:, -1:]
            setattr(self, name, new)


def _group_by(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of equal codes (N,), numbered in the order they first appear: (index of each
    group's first element (G,) ascending, group of each element (N,))."""
    order = np.argsort(codes, kind='stable')
    new = _run_starts(codes[order])
    if new.all():  # all distinct (the common case)
        index = np.arange(len(codes))
        return index, index
    by_code = np.cumsum(new) - 1
    first = order[new]
    renumber = np.empty(len(first), dtype=np.int64)
    renumber[np.argsort(first)] = np.arange(len(first))
    group = np.empty(len(codes), dtype=np.int64)
    group[order] = renumber[by_code]
    return np.sort(first), group


def _first_per_group(group: np.ndarray, num_groups: int, cost: np.ndarray) -> np.ndarray:
    """Index of the lowest-cost element of each group 0..num_groups-1 (the first of equal
    costs)."""
    if num_groups == len(group):  # one element each
        return np.argsort(group)
    order = np.lexsort((cost, group))
    return order[_run_starts(group[order])]


def _unknown_to_zero(values: np.ndarray) -> np.ndarray:
    """NaN (unknown) -> 0 in values that are finite otherwise (np.nan_to_num costs more)."""
    return np.where(np.isnan(values), 0.0, values)


def _label_in(label: np.ndarray, labels: tuple[int, ...]) -> np.ndarray:
    """np.isin(label, labels) for a handful of labels, at a fraction of its cost."""
    found = label == labels[0]
    for value in labels[1:]:
        found |= label == value
    return found


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """(N,) True where a run of equal (key_1, key_2, ...) starts in the arrays (N,)."""
    start = np.empty(len(keys[0]), dtype=bool)
    start[:1] = True
    np.not_equal(keys[0][1:], keys[0][:-1], out=start[1:])
    for key in keys[1:]:
        start[1:] |= key[1:] != key[:-1]
    return start


def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


class Predictor:
    """Map-based multi-modal prediction on one Town; see the module docstring."""

    def __init__(self, town: Town, params: PredictorParams | None = None):
        self.town = town
        self.params = params or PredictorParams()
        self._tracks: dict[int, _Track] = {}
        self._last_stamp_s: float | None = None
        self._sequences = _SequenceTable()
        self._build_lanes()
        # Sequence groups by (start lanelet, 20 m length bucket): sorted codes
        # lanelet * _GROUP_BUCKETS + bucket (the last one a sentinel above all codes), and
        # each group's first sequence table row and number of rows.
        self._group_code = np.array([np.iinfo(np.int64).max])
        self._group_first = np.zeros(1, dtype=np.int64)
        self._group_count = np.zeros(1, dtype=np.int64)
        self._build_crosswalks()

    # ------------------------------------------------------------------------------------
    # Map caches

    def _build_lanes(self) -> None:
        """Pack every vehicle lanelet's centreline, headings and curvature end to end, index
        their segments in a sparse grid, and cache successors and stop lines."""
        town = self.town
        geoms = [g for g in town.lanelets.values() if g.kind in VEHICLE_KINDS]
        self._lane_ids = np.array([g.lanelet_id for g in geoms], dtype=np.int64)
        self._lane_index = {int(g.lanelet_id): i for i, g in enumerate(geoms)}
        count = len(geoms)
        self._lane_len = np.zeros(count)
        self._lane_off = np.zeros(count)
        self._lane_limit_mps = np.full(count, np.inf)
        self._lane_turn = [''] * count
        knots_s, knots_x, knots_y, head_s, head_v, curv_v = [], [], [], [], [], []
        seg_start, seg_dir, seg_s0, seg_owner = [], [], [], []
        offset = 0.0
        for i, g in enumerate(geoms):
            cl = g.centerline
            s = polyline_arclength(cl)
            vec = np.diff(cl, axis=0)
            seg_len = np.linalg.norm(vec, axis=1)
            yaw = np.unwrap(np.arctan2(vec[:, 1], vec[:, 0]))
            mids = s[:-1] + 0.5 * seg_len
            # Curvature between consecutive segments, at the shared vertex.
            kappa_vertex = np.zeros(len(cl))
            if len(yaw) > 1:
                kappa_vertex[1:-1] = np.diff(yaw) / np.maximum(0.5 * (seg_len[1:] + seg_len[:-1]),
                                                               1e-6)
                kappa_vertex[0], kappa_vertex[-1] = kappa_vertex[1], kappa_vertex[-2]
            self._lane_len[i] = s[-1]
            self._lane_off[i] = offset
            if math.isfinite(g.speed_limit_kph) and g.speed_limit_kph > 0.0:
                self._lane_limit_mps[i] = g.speed_limit_kph / 3.6
            self._lane_turn[i] = self._turn_kind(g.turn_direction, yaw)
            knots_s.append(s + offset)
            knots_x.append(cl[:, 0])
            knots_y.append(cl[:, 1])
            head_s.append(np.concatenate([[0.0], mids, [s[-1]]]) + offset)
            head_v.append(np.concatenate([[yaw[0]], yaw, [yaw[-1]]]))
            curv_v.append(kappa_vertex)
            seg_start.append(cl[:-1])
            seg_dir.append(vec)
            seg_s0.append(s[:-1])
            seg_owner.append(np.full(len(vec), i, dtype=np.int64))
            offset += s[-1] + _PACK_GAP_M
        self._pk_s = np.concatenate(knots_s)
        self._pk_x = np.concatenate(knots_x)
        self._pk_y = np.concatenate(knots_y)
        self._pk_hs = np.concatenate(head_s)
        self._pk_h = np.concatenate(head_v)
        self._pk_k = np.concatenate(curv_v)
        self._seg_start = np.concatenate(seg_start)
        self._seg_dir = np.concatenate(seg_dir)
        self._seg_len2 = np.maximum(np.einsum('ij,ij->i', self._seg_dir, self._seg_dir), 1e-12)
        self._seg_heading = np.arctan2(self._seg_dir[:, 1], self._seg_dir[:, 0])
        self._seg_s0 = np.concatenate(seg_s0)
        self._seg_owner = np.concatenate(seg_owner)
        self._end_heading = np.array([h[-1] for h in head_v])
        self._build_segment_grid(self.params.candidate_radius_m)
        build_routing_graph(town)
        self._succ = [tuple(self._lane_index[s] for s in successors(town, int(g.lanelet_id))
                            if int(s) in self._lane_index) for g in geoms]
        self._stops = [tuple(line.station_m for line in town.stop_lines_on(int(g.lanelet_id)))
                       for g in geoms]
        # |curvature| of each lanelet (largest), for turn plausibility.
        self._lane_abs_kappa = np.array([float(np.max(np.abs(k))) for k in curv_v])

    @staticmethod
    def _turn_kind(tagged: str, yaw: np.ndarray) -> str:
        if tagged in ('left', 'right', 'straight'):
            return tagged
        change = float(yaw[-1] - yaw[0])
        if abs(change) < 0.3:
            return 'straight'
        return 'left' if change > 0 else 'right'

    def _build_segment_grid(self, radius_m: float) -> None:
        """Register every segment in each grid cell its bounding box (inflated by the search
        radius) touches; a point's cell then lists every segment that can be within radius."""
        start, end = self._seg_start, self._seg_start + self._seg_dir
        low = np.floor((np.minimum(start, end) - radius_m) / _GRID_CELL_M).astype(np.int64)
        high = np.floor((np.maximum(start, end) + radius_m) / _GRID_CELL_M).astype(np.int64)
        self._grid_origin = low.min(axis=0)
        self._grid_ny = int(high[:, 1].max() - self._grid_origin[1] + 1)
        nx = high[:, 0] - low[:, 0] + 1
        ny = high[:, 1] - low[:, 1] + 1
        per_seg = nx * ny
        seg = np.repeat(np.arange(len(start)), per_seg)
        local = np.arange(per_seg.sum()) - np.repeat(np.cumsum(per_seg) - per_seg, per_seg)
        cx = low[seg, 0] + local // ny[seg]
        cy = low[seg, 1] + local % ny[seg]
        keys = self._cell_key(cx, cy)
        order = np.argsort(keys, kind='stable')
        keys, seg = keys[order], seg[order]
        self._grid_keys, first = np.unique(keys, return_index=True)
        self._grid_first = first
        self._grid_count = np.diff(np.append(first, len(keys)))
        self._grid_segs = seg

    def _cell_key(self, cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
        return (cx - self._grid_origin[0]) * self._grid_ny + (cy - self._grid_origin[1])

    def _build_crosswalks(self) -> None:
        """Crosswalk axis frames: centre, crossing direction (unit), half length across the
        road, half width along it."""
        centres, axes, half_len, half_wid = [], [], [], []
        for crosswalk in self.town.crosswalks:
            geom = self.town.lanelets.get(crosswalk.lanelet_id)
            if geom is not None and len(geom.centerline) >= 2:
                a, b = geom.centerline[0], geom.centerline[-1]
            else:  # only a polygon: its longer principal direction is the crossing
                poly = crosswalk.polygon
                centred = poly - poly.mean(axis=0)
                _, _, vt = np.linalg.svd(centred, full_matrices=False)
                u = centred @ vt[0]
                a = poly.mean(axis=0) + vt[0] * u.min()
                b = poly.mean(axis=0) + vt[0] * u.max()
            axis = b - a
            length = float(np.linalg.norm(axis))
            if length < 1e-6:
                continue
            axis = axis / length
            normal = np.array([-axis[1], axis[0]])
            centre = 0.5 * (a + b)
            width = float(np.ptp((crosswalk.polygon - centre) @ normal))
            centres.append(centre)
            axes.append(axis)
            half_len.append(0.5 * length)
            half_wid.append(0.5 * width)
        self._cw_centre = np.array(centres).reshape(-1, 2)
        self._cw_axis = np.array(axes).reshape(-1, 2)
        self._cw_normal = np.column_stack([-self._cw_axis[:, 1], self._cw_axis[:, 0]])
        self._cw_half_len = np.array(half_len)
        self._cw_half_wid = np.array(half_wid)
        # Bounds how far any crosswalk extends from its centre (largest half length + half
        # width).
        self._cw_extent_m = float(np.max(half_len) + np.max(half_wid)) if centres else 0.0

    # ------------------------------------------------------------------------------------
    # Public API

    @property
    def times_s(self) -> np.ndarray:
        """(S,) times of the predicted poses [s]."""
        p = self.params
        return np.arange(1, p.steps + 1) * p.time_step_s

    def reset(self) -> None:
        """Forget the object history."""
        self._tracks.clear()
        self._last_stamp_s = None

    def observe(self, objects: Any, stamp_s: float | None = None) -> tuple[np.ndarray, int, int,
                                                                            bool]:
        """Validate objects and update the per-id history (without predicting).

        Returns (clean (M, 12) rows, dropped non-finite, dropped duplicate, stamp rejected).
        """
        table, nonfinite, duplicate = self._clean(objects)
        rejected = False
        if stamp_s is not None:
            if not math.isfinite(stamp_s):
                rejected = True
            elif self._last_stamp_s is not None and stamp_s <= self._last_stamp_s:
                rejected = True
            else:
                self._update_history(table, float(stamp_s))
                self._last_stamp_s = float(stamp_s)
        return table, nonfinite, duplicate, rejected

    def predict(self, objects: Any, stamp_s: float | None = None) -> PredictionOutput:
        """Predict every object of `objects` ((N, 10) or (N, 12), OBJECT_COLUMNS [+
        OPTIONAL_COLUMNS], map frame). `stamp_s` (the objects' time) feeds the history.

        Rows with NaN/inf in a required column and repeated ids (the later row) are dropped
        and counted; an empty input gives an empty output.
        """
        table, nonfinite, duplicate, rejected = self.observe(objects, stamp_s)
        times = self.times_s
        offroad = 0
        if self.params.drop_offroad_unknown and len(table):
            keep = self._not_offroad_unknown(table)
            offroad = int((~keep).sum())
            table = table[keep]
        if len(table) == 0:
            return PredictionOutput([], times, nonfinite, duplicate, 0, rejected, offroad)
        results: list[list[tuple[float, str, tuple[int, ...], np.ndarray]]] = [
            [] for _ in range(len(table))]
        off_lane = self._predict_all(table, results)
        out = []
        max_modes = self.params.max_modes
        for object_id, label, modes in zip(table[:, 0].tolist(), table[:, 1].tolist(),
                                           results):
            # Most confident first; a stable sort keeps equals in the order they were made.
            modes.sort(key=_CONFIDENCE, reverse=True)
            confidences, kinds, lanelet_ids, paths = zip(*modes[:max_modes])
            conf = np.array(confidences)
            conf /= np.add.reduce(conf)
            # np.array copies the (S, 3) paths into one (K, S, 3) block like np.stack, at a
            # third of its per-call cost (this runs once per object).
            out.append(ObjectPrediction(
                object_id=int(object_id), label=int(label), paths=np.array(paths),
                confidences=conf, kinds=kinds, lanelet_ids=lanelet_ids))
        return PredictionOutput(out, times, nonfinite, duplicate, off_lane, rejected, offroad)

    def _not_offroad_unknown(self, table: np.ndarray) -> np.ndarray:
        """(N,) bool: False for UNKNOWN objects with no footprint corner and not the centre on
        the road. LiDAR clusters of walls and kerb edges are such objects; their centroids
        jitter, so a tracker gives them speeds (20 m/s seen) that would cross the ego's path
        in prediction. Debris on the road, and anything reaching onto it, stays."""
        unknown = np.flatnonzero(table[:, 1] == UNKNOWN)
        keep = np.ones(len(table), dtype=bool)
        if len(unknown) == 0:
            return keep
        rows = table[unknown]
        cos, sin = np.cos(rows[:, 4]), np.sin(rows[:, 4])
        half_l, half_w = 0.5 * rows[:, 8], 0.5 * rows[:, 9]
        points = [rows[:, 2:4]]
        for sl, sw in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            points.append(np.stack([rows[:, 2] + sl * half_l * cos - sw * half_w * sin,
                                    rows[:, 3] + sl * half_l * sin + sw * half_w * cos], axis=1))
        on_road = is_on_road(self.town, np.concatenate(points)).reshape(5, -1).any(axis=0)
        keep[unknown] = on_road
        return keep

    # ------------------------------------------------------------------------------------
    # Input and history

    def _clean(self, objects: Any) -> tuple[np.ndarray, int, int]:
        try:
            table = np.array(objects, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise PredictionInputError(f'objects are not numeric: {error}') from None
        if table.size == 0:
            return np.zeros((0, 12)), 0, 0
        if table.ndim != 2 or table.shape[1] not in (10, 12):
            raise PredictionInputError(f'objects must have shape (N, 10) or (N, 12), got '
                                       f'{table.shape}')
        if table.shape[1] == 10:
            table = np.concatenate([table, np.full((len(table), 2), np.nan)], axis=1)
        required = table[:, :10]
        finite = np.all(np.isfinite(required), axis=1)
        finite &= (required[:, 0] >= 0) & (required[:, 0] == np.round(required[:, 0]))
        finite &= (required[:, 8] > 0) & (required[:, 9] > 0)
        nonfinite = int((~finite).sum())
        table = table[finite]
        # Optional columns: anything not finite is unknown.
        table[:, 10:][~np.isfinite(table[:, 10:])] = np.nan
        keep = np.zeros(len(table), dtype=bool)
        keep[_group_by(table[:, 0])[0]] = True
        duplicate = int((~keep).sum())
        return table[keep], nonfinite, duplicate

    def _update_history(self, table: np.ndarray, stamp_s: float) -> None:
        p = self.params
        seen = set()
        # Plain Python floats (exactly the table's values): iterating numpy rows is slow.
        for id_value, yaw, speed in zip(table[:, 0].tolist(), table[:, 4].tolist(),
                                        table[:, 5].tolist()):
            object_id = int(id_value)
            seen.add(object_id)
            track = self._tracks.get(object_id)
            if track is None or stamp_s - track.t_s > p.history_timeout_s:
                self._tracks[object_id] = _Track(stamp_s, speed, yaw, cruise_mps=max(speed, 0.0))
                continue
            dt = stamp_s - track.t_s
            alpha = dt / (p.accel_filter_time_s + dt)
            track.accel_mps2 += alpha * ((speed - track.speed_mps) / dt - track.accel_mps2)
            # Scalar form of _wrap (Python's float % matches numpy's remainder exactly);
            # a numpy call per object costs more than the arithmetic.
            yaw_rate = ((yaw - track.yaw_rad + math.pi) % (2.0 * math.pi) - math.pi) / dt
            track.yaw_rate_rps += alpha * (yaw_rate - track.yaw_rate_rps)
            track.cruise_mps = max(speed, track.cruise_mps - p.cruise_memory_decay_mps2 * dt)
            track.stand_s = track.stand_s + dt if abs(speed) < p.stopped_speed_mps else 0.0
            track.t_s, track.speed_mps, track.yaw_rad = stamp_s, speed, yaw
            track.samples += 1
        stale = [k for k, t in self._tracks.items()
                 if k not in seen and stamp_s - t.t_s > p.history_timeout_s]
        for key in stale:
            del self._tracks[key]

    def _history(self, table: np.ndarray) -> dict[str, np.ndarray]:
        """Per row: accel, yaw rate (NaN unknown), cruise speed, standing time."""
        # Plain Python floats: numpy calls per object would cost more than the work.
        accel, yaw_rate = table[:, 11].tolist(), table[:, 10].tolist()
        cruise = np.maximum(table[:, 5], 0.0).tolist()
        stand = [0.0] * len(table)
        for i, id_value in enumerate(table[:, 0].tolist()):
            track = self._tracks.get(int(id_value))
            if track is None or track.samples < 2:
                continue
            if math.isnan(accel[i]):
                accel[i] = track.accel_mps2
            if math.isnan(yaw_rate[i]):
                yaw_rate[i] = track.yaw_rate_rps
            cruise[i] = max(cruise[i], track.cruise_mps)
            stand[i] = track.stand_s
        return {'accel': np.array(accel), 'yaw_rate': np.array(yaw_rate),
                'cruise': np.array(cruise), 'stand': np.array(stand)}

    # ------------------------------------------------------------------------------------
    # Lane search

    def _lane_matches(self, xy: np.ndarray) -> dict[str, np.ndarray]:
        """For every (object, lanelet) pair within candidate_radius_m: the closest point.

        Returns arrays obj, lane, arc_m (station on the lanelet), lateral_m (+ left),
        heading_rad (lane heading there), dist_m.
        """
        radius = self.params.candidate_radius_m
        cell = np.floor(xy / _GRID_CELL_M).astype(np.int64)
        keys = self._cell_key(cell[:, 0], cell[:, 1])
        pos = np.searchsorted(self._grid_keys, keys)
        pos_c = np.minimum(pos, len(self._grid_keys) - 1)
        inside = (cell[:, 0] >= self._grid_origin[0]) & (cell[:, 1] >= self._grid_origin[1]) \
            & (cell[:, 1] - self._grid_origin[1] < self._grid_ny)
        hit = inside & (pos < len(self._grid_keys)) & (self._grid_keys[pos_c] == keys)
        counts = np.where(hit, self._grid_count[pos_c], 0)
        total = int(counts.sum())
        empty = {k: np.zeros(0, dtype=np.int64 if k in ('obj', 'lane') else np.float64)
                 for k in ('obj', 'lane', 'arc_m', 'lateral_m', 'heading_rad', 'dist_m')}
        if total == 0:
            return empty
        obj = np.repeat(np.arange(len(xy)), counts)
        first = np.repeat(self._grid_first[pos_c] - (np.cumsum(counts) - counts), counts)
        seg = self._grid_segs[first + np.arange(total)]
        rel = xy[obj] - self._seg_start[seg]
        direction = self._seg_dir[seg]
        t = np.clip(np.einsum('ij,ij->i', rel, direction) / self._seg_len2[seg], 0.0, 1.0)
        off = rel - t[:, None] * direction
        dist = np.hypot(off[:, 0], off[:, 1])
        ok = dist <= radius
        if not ok.any():  # cells with lanes, but none within the radius
            return empty
        obj, seg, t, dist, rel, direction = obj[ok], seg[ok], t[ok], dist[ok], rel[ok], \
            direction[ok]
        lane = self._seg_owner[seg]
        # Keep the closest segment of each (object, lanelet).
        order = np.lexsort((dist, lane, obj))
        obj, lane, seg, t, dist, rel, direction = (a[order] for a in
                                                   (obj, lane, seg, t, dist, rel, direction))
        sel = np.flatnonzero(_run_starts(obj, lane))
        obj, lane, seg, t, dist, rel, direction = (a[sel] for a in
                                                   (obj, lane, seg, t, dist, rel, direction))
        seg_len = np.sqrt(self._seg_len2[seg])
        cross = direction[:, 0] * rel[:, 1] - direction[:, 1] * rel[:, 0]
        lateral = cross / seg_len
        arc = self._seg_s0[seg] + t * seg_len
        return {'obj': obj, 'lane': lane, 'arc_m': arc, 'lateral_m': lateral,
                'heading_rad': self._seg_heading[seg], 'dist_m': dist}

    def _candidate_sequences(self, lane: np.ndarray,
                             bucket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Successor sequences of candidates starting on `lane` that must reach bucket * 20 m:
        (sequence table rows, candidate index), candidate by candidate in table order. Groups
        not seen before are built now and kept."""
        code = lane * _GROUP_BUCKETS + bucket
        pos = np.searchsorted(self._group_code, code)
        missing = self._group_code[pos] != code  # (the sentinel keeps pos in range)
        if missing.any():
            built = [(c, *self._build_sequences(*divmod(c, _GROUP_BUCKETS)))
                     for c in dict.fromkeys(code[missing].tolist())]
            codes, firsts, counts = (np.array(column, dtype=np.int64)
                                     for column in zip(*built))
            codes = np.concatenate([self._group_code, codes])
            order = np.argsort(codes)
            self._group_code = codes[order]
            self._group_first = np.concatenate([self._group_first, firsts])[order]
            self._group_count = np.concatenate([self._group_count, counts])[order]
            pos = np.searchsorted(self._group_code, code)
        counts = self._group_count[pos]
        offset = np.repeat(self._group_first[pos] - (np.cumsum(counts) - counts), counts)
        return offset + np.arange(int(counts.sum())), np.repeat(np.arange(len(lane)), counts)

    def _build_sequences(self, lane: int, bucket: int) -> tuple[int, int]:
        """Successor sequences from the start of `lane` at least bucket * 20 m long, added to
        the sequence table; (first row, number of rows)."""
        need = bucket * 20.0
        p = self.params
        first = len(self._sequences)
        done = 0
        stack = [((lane,), self._lane_len[lane], 0, 1.0)]
        while stack:
            lanes, length, forks, weight = stack.pop()
            last = lanes[-1]
            options = self._succ[last]
            if length >= need or not options or done + len(stack) >= _MAX_SEQUENCES:
                self._add_sequence(lanes, weight, dead_end=not options)
                done += 1
                continue
            if len(options) == 1 or forks >= p.max_branch_forks:
                choice = self._straightest(options)
                stack.append((lanes + (choice,), length + self._lane_len[choice], forks, weight))
                continue
            priors = np.array([1.0 if self._lane_turn[o] == 'straight' else p.turn_prior
                               for o in options])
            priors = priors / priors.sum()
            for option, prior in zip(options, priors):
                stack.append((lanes + (option,), length + self._lane_len[option], forks + 1,
                              weight * float(prior)))
        return first, done

    def _straightest(self, options: Sequence[int]) -> int:
        straight = [o for o in options if self._lane_turn[o] == 'straight']
        if straight:
            return min(straight)
        return min(options, key=lambda o: (self._lane_abs_kappa[o], o))

    def _add_sequence(self, lanes: tuple[int, ...], weight: float, dead_end: bool) -> None:
        lengths = self._lane_len[list(lanes)]
        starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        stops = [float(starts[k] + s) for k, lane in enumerate(lanes) for s in self._stops[lane]]
        turns = []
        for k, lane in enumerate(lanes):
            if self._lane_turn[lane] != 'straight':
                entry_m = float(starts[k])
                last_stop_m = max((s for s in stops if s <= entry_m + 1e-6), default=-math.inf)
                turns.append((entry_m, float(self._lane_abs_kappa[lane]), last_stop_m))
        self._sequences.add(lanes, starts.tolist(), float(lengths.sum()), dead_end, weight,
                            turns, stops)

    # ------------------------------------------------------------------------------------
    # Prediction

    def _predict_all(self, table: np.ndarray, results: list) -> int:
        p = self.params
        n = len(table)
        label = table[:, 1].astype(np.int64)
        xy = table[:, 2:4]
        speed = table[:, 5]
        history = self._history(table)
        matches = self._lane_matches(xy) if len(self._lane_ids) else None
        lane_capable = _label_in(label, VEHICLE_LABELS + (BICYCLE,)) & \
            (speed >= -p.reverse_speed_mps)
        bicycle = np.flatnonzero(label == BICYCLE)
        if len(bicycle):
            # Bicycles follow lanes only on the road; on a sidewalk they move like pedestrians.
            lane_capable[bicycle] &= is_on_road(self.town, xy[bicycle])
        modes = self._lane_modes(table, history, matches, lane_capable)
        has_lane = np.zeros(n, dtype=bool)
        if modes is not None:
            has_lane[modes['obj']] = True
            self._integrate_and_emit(table, history, matches, modes, results)
        vehicle = _label_in(label, VEHICLE_LABELS)
        off_lane = int((vehicle & ~has_lane).sum())
        pedestrian_like = ~has_lane & ((label == PEDESTRIAN) | (label == BICYCLE))
        ctrv = ~has_lane & ~pedestrian_like
        if ctrv.any():
            self._emit_ctrv(table, history, np.flatnonzero(ctrv), results)
        if pedestrian_like.any():
            self._emit_pedestrians(table, np.flatnonzero(pedestrian_like), results)
        return off_lane

    def _lane_modes(self, table, history, matches, lane_capable) -> dict | None:
        """Mode hypotheses of lane-following objects: sequences, offsets and probabilities."""
        if matches is None or not len(matches['obj']):
            return None
        p = self.params
        obj = matches['obj']
        heading_err = _wrap(table[obj, 4] - matches['heading_rad'])
        ok = lane_capable[obj] & (np.abs(heading_err) <= p.max_heading_error_rad)
        if not ok.any():
            return None
        idx = np.flatnonzero(ok)
        obj, lane = obj[idx], matches['lane'][idx]
        arc, lat, head = matches['arc_m'][idx], matches['lateral_m'][idx], \
            matches['heading_rad'][idx]
        heading_err = heading_err[idx]
        vx, vy = table[obj, 6], table[obj, 7]
        cos_h, sin_h = np.cos(head), np.sin(head)
        v_lon = np.maximum(vx * cos_h + vy * sin_h, 0.0)
        v_lat = -vx * sin_h + vy * cos_h
        # Candidate log-likelihood: predicted lateral offset, heading, yaw rate vs curvature.
        d_pred = lat + v_lat * p.lateral_lookahead_s
        logp = -0.5 * ((d_pred / p.lateral_scale_m) ** 2
                       + (heading_err / p.heading_scale_rad) ** 2)
        yaw_rate = history['yaw_rate'][obj]
        kappa = np.interp(self._lane_off[lane] + arc, self._pk_s, self._pk_k)
        known = ~np.isnan(yaw_rate)
        logp = logp - 0.5 * np.where(known, ((yaw_rate - v_lon * kappa)
                                             / p.yaw_rate_scale_rps) ** 2, 0.0)
        # Far enough for the fastest the vehicle may go within the horizon.
        limit = np.where(np.isfinite(self._lane_limit_mps[lane]),
                         self._lane_limit_mps[lane] * p.speed_limit_factor, 0.0)
        need = arc + np.maximum(v_lon, limit) * p.horizon_s + 10.0
        cand, seq, prob = self._hypotheses(obj, lane, arc, need, v_lon, logp,
                                           0.5 * table[obj, 8])
        # Pad the sequences into (M, K) arrays, stations from the candidate's position.
        seqs = self._sequences
        width = int(seqs.num_lanes[seq].max())
        stops_w = max(int(seqs.num_stops[seq].max()), 1) + 1
        arc_c = arc[cand][:, None]
        return {'obj': obj[cand], 'prob': prob, 'seq_lane': seqs.lanes[seq, :width],
                'seq_start': seqs.starts_m[seq, :width] - arc_c,
                'stops': seqs.stops_m[seq, :stops_w] - arc_c,
                'total': seqs.length_m[seq] - arc[cand], 'dead_end': seqs.dead_end[seq],
                'lat': lat[cand], 'heading_err': heading_err[cand], 'v_lon': v_lon[cand],
                'v_lat': v_lat[cand], 'first_lane': lane[cand], 'arc': arc[cand]}

    def _hypotheses(self, obj: np.ndarray, lane: np.ndarray, arc_m: np.ndarray,
                    need_m: np.ndarray, v_mps: np.ndarray, logp: np.ndarray,
                    half_length_m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The modes of lane candidates (C,): object obj (sorted), lanelet lane (internal
        index), station arc_m on it, the distance need_m to cover, speed along it v_mps,
        log-likelihood logp, the object's half length -> (M,) the candidate, the sequence
        table row and the probability of each mode, object by object, most likely first.

        All candidates x their successor sequences at once (P pairs). A pair's hypothesis is
        the lanelets its sequence reaches within need_m; hypotheses of one candidate that reach
        the same lanelets merge, the best candidate of an object per hypothesis stays, and each
        object keeps its max_modes most likely ones. Ties keep the first in candidate and
        sequence order.
        """
        p = self.params
        # Every candidate with each of its successor sequences: P pairs, candidate by candidate.
        # (fmin: a NaN or absurd need takes the largest bucket, longer than any map.)
        bucket = np.fmin(np.ceil(np.maximum(need_m, 1.0) / 20.0),
                         _GROUP_BUCKETS - 1).astype(np.int64)
        q, pk = self._candidate_sequences(lane, bucket)
        seqs = self._sequences
        # A pair's hypothesis is the lanelets its sequence reaches within need_m; a
        # candidate this close to its lanelet's end has its successors' future, the same as
        # seen from their start: key it without the first lanelet.
        reach = np.count_nonzero(seqs.starts_m[q] < need_m[pk, None], axis=1)
        near_end = self._lane_len[lane] - arc_m < _DEDUP_TAIL_M
        key = np.where(near_end[pk] & (reach > 1), seqs.tail_keys[q, reach], seqs.keys[q, reach])
        weight = seqs.weight[q] * self._turn_plausibility(q, arc_m[pk], v_mps[pk],
                                                          half_length_m[pk])
        # Sequences of a candidate that only differ beyond the horizon's reach are one
        # hypothesis: their fork weights add up (in sequence order), the likeliest one (the
        # first of equals) carries the geometry. Hypotheses keep the order they first appear.
        num_keys = len(seqs.key_ids)
        first, group = _group_by(pk * num_keys + key)
        h_weight = np.zeros(len(first))
        np.add.at(h_weight, group, weight)
        h_cand, h_key = pk[first], key[first]
        h_seq = q[_first_per_group(group, len(first), -seqs.weight[q])]
        h_score = logp[h_cand] + np.array(
            [math.log(w) for w in np.maximum(h_weight, 1e-12).tolist()])
        # The same hypothesis from two candidates of an object (the end of a lanelet and the
        # start of its successor): the better scored candidate (the first of equals) stays.
        h_obj = obj[h_cand]
        first, group = _group_by(h_obj * num_keys + h_key)
        best = _first_per_group(group, len(first), -h_score)
        r_obj, r_cand, r_seq, r_score = h_obj[best], h_cand[best], h_seq[best], h_score[best]
        # Normalise per object; keep the most likely max_modes above min_mode_probability (at
        # least the most likely). Objects keep the order they first appear, their modes are
        # ranked by weight (ties: first appearance). Lane matches come sorted by object and
        # every step above keeps that order, so an object's modes are one run.
        group = np.cumsum(_run_starts(r_obj)) - 1
        count = np.bincount(group)
        top = np.full(len(count), -np.inf)
        np.maximum.at(top, group, r_score)
        # math.exp and math.log (not their numpy versions) keep results independent of the
        # SIMD code numpy picks for the CPU.
        mode_weight = np.array([math.exp(x) for x in (r_score - top[group]).tolist()])
        total_weight = np.zeros(len(count))
        np.add.at(total_weight, group, mode_weight)
        ranked = np.lexsort((-mode_weight, group))
        run_start = np.cumsum(count) - count
        rank = np.arange(len(ranked)) - np.repeat(run_start, count)
        prob = mode_weight[ranked] / total_weight[group[ranked]]
        keep = (rank < p.max_modes) & (prob >= p.min_mode_probability)
        keep[run_start] |= ~np.logical_or.reduceat(keep, run_start)
        chosen = ranked[keep]
        return r_cand[chosen], r_seq[chosen], prob[keep]

    def _turn_plausibility(self, seq: np.ndarray, arc_m: np.ndarray, v_mps: np.ndarray,
                           half_length_m: np.ndarray) -> np.ndarray:
        """(P,) factors for sequence table rows `seq` seen from stations arc_m at speeds v_mps:
        1 unless a turn on the sequence must be taken faster than max_turn_lat_accel_mps2
        (after comfortable braking, or from standstill when a stop line still to be served
        comes first)."""
        p = self.params
        seqs = self._sequences
        distance = seqs.turn_entry_m[seq] - arc_m[:, None]
        kappa = seqs.turn_kappa[seq]
        # Turns already entered (the heading and yaw rate terms decide) and turns behind a
        # stop line not yet passed are plausible.
        stop_first = seqs.turn_stop_m[seq] - arc_m[:, None] - half_length_m[:, None] > \
            -_LINE_PASSED_M
        v2 = np.maximum(v_mps[:, None] * v_mps[:, None]
                        - 2.0 * p.comfort_decel_mps2 * distance, 0.0)
        excess = v2 * kappa - p.max_turn_lat_accel_mps2
        too_fast = (distance >= 0.0) & (kappa > 0.0) & ~stop_first & (excess > 0.0)
        factor = np.ones(len(seq))
        # Few turns are too fast: a scalar product in turn order.
        for row, col in zip(*np.nonzero(too_fast)):
            factor[row] *= math.exp(-excess[row, col] / p.turn_lat_accel_scale_mps2)
        return factor

    def _leaders(self, table, matches, modes) -> tuple[np.ndarray, np.ndarray]:
        """Nearest object ahead on each mode's lanelets: (station of its centre, index)."""
        p = self.params
        m = len(modes['obj'])
        lead_s = np.full(m, np.inf)
        lead_obj = np.full(m, -1, dtype=np.int64)
        obj = matches['obj']
        if not len(obj):
            return lead_s, lead_obj
        width = table[:, 9]
        heading_err = _wrap(table[obj, 4] - matches['heading_rad'])
        standing = np.abs(table[obj, 5]) < p.stopped_speed_mps
        # Following traffic, anything standing in the lane and pedestrians on it (vehicles
        # yield to them); crossing vehicles clear the lane by themselves.
        usable = (np.abs(heading_err) < 0.5 * np.pi) | standing | \
            (table[obj, 1] == PEDESTRIAN)
        idx = np.flatnonzero(usable)
        if not len(idx):
            return lead_s, lead_obj
        m_lane, m_obj = matches['lane'][idx], obj[idx]
        m_arc, m_lat = matches['arc_m'][idx], matches['lateral_m'][idx]
        order = np.argsort(m_lane, kind='stable')
        m_lane, m_obj, m_arc, m_lat = m_lane[order], m_obj[order], m_arc[order], m_lat[order]
        k_width = modes['seq_lane'].shape[1]
        pair_mode = np.repeat(np.arange(m), k_width)
        pair_lane = modes['seq_lane'].reshape(-1)
        pair_start = modes['seq_start'].reshape(-1)
        valid = np.isfinite(pair_start)
        pair_mode, pair_lane, pair_start = pair_mode[valid], pair_lane[valid], pair_start[valid]
        lo = np.searchsorted(m_lane, pair_lane, side='left')
        hi = np.searchsorted(m_lane, pair_lane, side='right')
        counts = hi - lo
        if counts.sum() == 0:
            return lead_s, lead_obj
        rep = np.repeat(np.arange(len(pair_mode)), counts)
        j = np.repeat(lo - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        mode = pair_mode[rep]
        other = m_obj[j]
        station = pair_start[rep] + m_arc[j]
        owner = modes['obj'][mode]
        band = 0.5 * (width[owner] + width[other]) + p.leader_lateral_margin_m
        ok = (other != owner) & (station > 0.0) & (np.abs(m_lat[j]) <= band)
        mode, other, station = mode[ok], other[ok], station[ok]
        if not len(mode):
            return lead_s, lead_obj
        order = np.lexsort((station, mode))
        mode, other, station = mode[order], other[order], station[order]
        first = _run_starts(mode)
        lead_s[mode[first]] = station[first]
        lead_obj[mode[first]] = other[first]
        return lead_s, lead_obj

    def _desired_speed(self, table, history, modes) -> np.ndarray:
        """IDM desired speed per mode: the highest of current speed, remembered cruise speed
        and the speed the observed acceleration points to, at most the lane's limit."""
        p = self.params
        o = modes['obj']
        v = modes['v_lon']
        accel = _unknown_to_zero(history['accel'][o])
        # IDM free road a = a_max (1 - (v/v0)^4) solved for v0 (capped: at full acceleration
        # the desired speed is unobservable; the lane limit bounds it below).
        ratio = np.clip(accel / p.max_accel_mps2, 0.0, _MAX_ACCEL_RATIO)
        v_inverse = v / (1.0 - ratio) ** 0.25
        v0 = np.maximum.reduce([v, history['cruise'][o], v_inverse])
        limit = self._lane_limit_mps[modes['first_lane']]
        limit = np.where(np.isfinite(limit), limit, np.inf)
        # A vehicle first seen standing at a stop line will go on after its wait.
        near_line = (modes['stops'][:, 0] - 0.5 * table[o, 8] < 3.0) & \
            (modes['stops'][:, 0] - 0.5 * table[o, 8] > -_LINE_PASSED_M)
        start = np.where(np.isfinite(limit), p.start_speed_ratio * limit, 0.0)
        v0 = np.where((v0 < p.stopped_speed_mps) & near_line, start, v0)
        return np.minimum(v0, p.speed_limit_factor * limit)

    def _integrate_and_emit(self, table, history, matches, modes, results) -> None:
        p = self.params
        m = len(modes['obj'])
        o = modes['obj']
        half_len = 0.5 * table[o, 8]
        v0 = self._desired_speed(table, history, modes)
        lead_s0, lead_obj = self._leaders(table, matches, modes)
        # The leader moves with its most likely mode; leaders without a lane mode (standing
        # objects) hold their place.
        top_mode = np.full(len(table), -1, dtype=np.int64)
        order = np.lexsort((-modes['prob'], o))
        first = order[_run_starts(o[order])]
        top_mode[o[first]] = first
        lead_mode = np.where(lead_obj >= 0, top_mode[np.maximum(lead_obj, 0)], -1)
        has_lead = lead_obj >= 0
        lead_half = np.where(has_lead, 0.5 * table[np.maximum(lead_obj, 0), 8], 0.0)

        dt = p.integration_step_s
        steps = int(math.ceil(p.horizon_s / dt - 1e-9))
        # Stations and speeds carry a trailing zero: a mode without a moving leader reads
        # that, so the leader's station and speed are one gather each.
        s_hist = np.zeros((steps + 1, m + 1))  # station per step (row) and mode
        v_ext = np.zeros(m + 1)
        v_ext[:m] = modes['v_lon']
        v = v_ext[:m]
        lead_at = np.where(lead_mode >= 0, lead_mode, m)
        stops = modes['stops']
        last_stop = stops.shape[1] - 1
        rows = np.arange(m)
        # Stop lines behind the front bumper, or closer than the hardest braking allows, are
        # not served (a driver runs a line they cannot stop at).
        next_stop = np.zeros(m, dtype=np.int64)
        for _ in range(last_stop):
            to_line = stops[rows, next_stop] - half_len
            skip = np.isfinite(to_line) & ((to_line < -_LINE_PASSED_M) | (
                v * v > 2.0 * p.max_decel_mps2 * np.maximum(to_line, 1e-3)))
            if not skip.any():
                break
            next_stop = np.minimum(next_stop + skip, last_stop)
        dwell = np.full(m, np.nan)
        # Standing at its stop line already: only the rest of the wait remains.
        to_line = stops[rows, next_stop] - half_len
        at_line = (v < _SNAP_SPEED_MPS) & (np.abs(to_line) < 1.0)
        dwell[at_line] = np.maximum(p.stop_dwell_s - history['stand'][o[at_line]], 0.0)
        end_base = np.where(modes['dead_end'], modes['total'], np.inf) + p.min_gap_m
        sqrt_ab = 2.0 * math.sqrt(p.max_accel_mps2 * p.comfort_decel_mps2)
        v0_safe = np.maximum(v0, 1e-3)
        stand_target = v0 <= 1e-3
        any_stand_target = bool(stand_target.any())
        lead_base = np.where(has_lead, lead_s0 - lead_half, np.inf)
        brake_2 = 2.0 * p.max_decel_mps2
        # The step runs once per integration step for all modes of all objects at once, so
        # its cost is the number of numpy calls: state that only changes at events (the
        # next stop line, who is dwelling) is kept between steps, work whose inputs did not
        # change is skipped, and the two obstacles of the IDM interaction term (row 0: the
        # stop line or dead end, row 1: the leader; none: an infinite gap) are one (2, M)
        # array. Every per-mode value is computed with the same operations in the same order
        # as the plain IDM formulas, so the results are bit for bit the same.
        gaps = np.empty((2, m))
        obstacle_v = np.zeros((2, m))  # row 0: the line and the dead end stand still
        line = stops[rows, next_stop]
        dwelling = ~np.isnan(dwell)
        any_dwelling = np.count_nonzero(dwelling) > 0
        not_dwelling = ~dwelling
        with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
            for step in range(steps):
                s_ext = s_hist[step]
                s = s_ext[:m]
                front = s + half_len
                v2 = v * v
                to_line = line - front
                # (A line at inf never compares greater, so no finiteness test is needed.)
                skip = v2 > brake_2 * np.maximum(to_line, 1e-3)
                skip &= not_dwelling
                if np.count_nonzero(skip):
                    next_stop = np.minimum(next_stop + skip, last_stop)
                    line = stops[rows, next_stop]
                    to_line = line - front
                # IDM interaction term: max over the obstacles of (desired gap / gap)^2; all
                # ratios are >= 0, so the max can be taken before squaring, and the stop
                # line and the dead end share the desired gap (both stand still), so only
                # the nearer of them matters.
                v_gap = v * p.time_gap_s
                np.minimum(to_line + p.min_gap_m, end_base - front, out=gaps[0])
                np.subtract(lead_base + s_ext[lead_at], front, out=gaps[1])
                np.take(v_ext, lead_at, out=obstacle_v[1])
                desired = p.min_gap_m + np.maximum(0.0, v_gap + v * (v - obstacle_v) / sqrt_ab)
                ratio = np.maximum.reduce(desired / np.maximum(gaps, 1e-3))
                static_gap = np.minimum.reduce(gaps)
                free = 1.0 - (v / v0_safe) ** 4
                if any_stand_target:
                    free[stand_target] = -1.0
                accel = p.max_accel_mps2 * (free - ratio * ratio)
                # One step covers at most the free distance: no overshoot of a standing
                # target with finite steps.
                free_m = np.maximum(static_gap - p.min_gap_m, 0.0)
                v_dt = v * dt
                neg_v2 = -v2
                # (Scaling by 2 or 0.5 is exact: 2 max(f, 1e-9) = max(2 f, 2e-9) and
                # 0.5 a dt dt = 0.5 (a dt) dt, bit for bit.)
                free_2 = 2.0 * free_m
                cap = np.where(v_dt > free_2, neg_v2 / np.maximum(free_2, 2e-9),
                               2.0 * (free_m - v_dt) / (dt * dt))
                # (accel <= max_accel_mps2 already: free <= 1.)
                np.minimum(accel, cap, out=accel)
                np.maximum(accel, -p.max_decel_mps2, out=accel)
                if any_dwelling:
                    np.minimum(accel, 0.0, out=accel, where=dwelling)
                a_dt = accel * dt
                v_new = v + a_dt
                ds = v_dt + 0.5 * a_dt * dt
                stopping = v_new < 0.0
                if np.count_nonzero(stopping):  # standstill within the step: that distance
                    ds = np.where(stopping, neg_v2 / (2.0 * np.minimum(accel, -1e-9)), ds)
                s = np.add(s, np.maximum(ds, 0.0), out=s_hist[step + 1, :m])
                np.maximum(v_new, 0.0, out=v)
                arrived = v < _SNAP_SPEED_MPS
                arrived &= not_dwelling
                any_arrived = np.count_nonzero(arrived) > 0
                if any_arrived:
                    arrived &= np.abs(line - s - half_len) < _SNAP_DISTANCE_M
                    any_arrived = np.count_nonzero(arrived) > 0
                if any_dwelling:
                    np.subtract(dwell, dt, out=dwell, where=dwelling)
                    released = dwelling & (dwell <= 1e-9)
                    if np.count_nonzero(released):
                        next_stop = np.minimum(next_stop + released, last_stop)
                        line = stops[rows, next_stop]
                        dwell[released] = np.nan
                        dwelling &= ~released
                if any_arrived:
                    v[arrived] = 0.0
                    dwell[arrived] = p.stop_dwell_s
                    dwelling |= arrived
                if any_dwelling or any_arrived:
                    np.logical_not(dwelling, out=not_dwelling)
                    any_dwelling = np.count_nonzero(dwelling) > 0
        # Stations at the output times.
        pos = self.times_s / dt
        lo = np.minimum(np.floor(pos).astype(np.int64), steps)
        hi = np.minimum(lo + 1, steps)
        frac = pos - lo
        stations = s_hist[lo, :m].T * (1.0 - frac) + s_hist[hi, :m].T * frac
        paths = self._lane_geometry(modes, stations)
        counts = np.isfinite(modes['seq_start']).sum(axis=1).tolist()
        ids = self._lane_ids[modes['seq_lane']].tolist()
        for owner, prob, lanes, count, path in zip(o.tolist(), modes['prob'].tolist(), ids,
                                                   counts, paths):
            results[owner].append((prob, MODE_LANE, tuple(lanes[:count]), path))

    def _lane_geometry(self, modes, stations: np.ndarray) -> np.ndarray:
        """(M, S) stations along each mode -> (M, S, 3) poses: centreline + converging lateral
        offset (cubic Hermite: offset and slope of the object at 0, zero at the end)."""
        p = self.params
        seq_start = modes['seq_start']
        seq_lane = modes['seq_lane']
        m, s_count = stations.shape
        k = np.sum(stations[:, :, None] >= seq_start[:, None, 1:], axis=-1)
        rows = np.arange(m)[:, None]
        lane = seq_lane[rows, k]
        local = stations - seq_start[rows, k]
        length = self._lane_len[lane]
        beyond = np.maximum(local - length, 0.0)
        packed = self._lane_off[lane] + np.clip(local, 0.0, length)
        x = np.interp(packed, self._pk_s, self._pk_x)
        y = np.interp(packed, self._pk_s, self._pk_y)
        heading = np.interp(packed, self._pk_hs, self._pk_h)
        cos_h, sin_h = np.cos(heading), np.sin(heading)
        x = x + beyond * cos_h
        y = y + beyond * sin_h
        d0 = modes['lat'][:, None]
        slope0 = np.tan(np.clip(modes['heading_err'], -0.5, 0.5))[:, None]
        speed = np.maximum(modes['v_lon'], 2.0)
        time_conv = np.where(np.abs(modes['lat']) > p.lane_change_offset_m,
                             p.lane_change_time_s, p.convergence_time_s)
        conv = np.clip(speed * time_conv, p.min_convergence_m, p.max_convergence_m)[:, None]
        u = np.clip(stations / conv, 0.0, 1.0)
        u2, u3 = u ** 2, u ** 3
        h00 = 2 * u3 - 3 * u2 + 1
        h10 = u3 - 2 * u2 + u
        d = d0 * h00 + slope0 * conv * h10
        d_slope = (d0 * (6 * u2 - 6 * u) / conv + slope0 * (3 * u2 - 4 * u + 1))
        d_slope = np.where(u < 1.0, d_slope, 0.0)
        poses = np.empty((m, s_count, 3))
        np.subtract(x, d * sin_h, out=poses[..., 0])
        np.add(y, d * cos_h, out=poses[..., 1])
        poses[..., 2] = _wrap(heading + np.arctan(d_slope))
        return poses

    def _emit_ctrv(self, table, history, rows: np.ndarray, results) -> None:
        """Constant turn rate and velocity along the heading (signed speed: reversing)."""
        t = self.times_s[None, :]
        x0, y0, yaw0 = table[rows, 2:3], table[rows, 3:4], table[rows, 4:5]
        speed = table[rows, 5:6]
        omega = _unknown_to_zero(history['yaw_rate'][rows])[:, None]
        omega = np.where(np.abs(speed) < self.params.stopped_speed_mps, 0.0, omega)
        yaw = yaw0 + omega * t
        small = np.abs(omega) < 1e-4
        safe = np.where(small, 1.0, omega)
        x = np.where(small, x0 + speed * np.cos(yaw0) * t,
                     x0 + speed / safe * (np.sin(yaw) - np.sin(yaw0)))
        y = np.where(small, y0 + speed * np.sin(yaw0) * t,
                     y0 - speed / safe * (np.cos(yaw) - np.cos(yaw0)))
        paths = np.stack([x, y, _wrap(yaw)], axis=-1)
        for i, row in enumerate(rows):
            results[int(row)].append((1.0, MODE_CTRV, (), paths[i]))

    # ------------------------------------------------------------------------------------
    # Pedestrians

    def _emit_pedestrians(self, table, rows: np.ndarray, results) -> None:
        p = self.params
        t = self.times_s
        xy = table[rows, 2:4]
        vel = table[rows, 6:8]
        speed = np.hypot(vel[:, 0], vel[:, 1])
        moving = speed >= p.stopped_speed_mps
        yaw_move = np.where(moving, np.arctan2(vel[:, 1], vel[:, 0]), table[rows, 4])
        cv = xy[:, None, :] + vel[:, None, :] * t[None, :, None]
        cv_yaw = np.broadcast_to(yaw_move[:, None], cv.shape[:2])
        cv_paths = np.concatenate([cv, cv_yaw[..., None]], axis=-1)
        modes: list[list] = [[(1.0, MODE_CONSTANT_VELOCITY if moving[i] else MODE_STAND,
                               cv_paths[i])] for i in range(len(rows))]
        if len(self._cw_centre):
            self._crosswalk_modes(xy, vel, speed, moving, modes)
        for i, row in enumerate(rows):
            for weight, kind, path in modes[i]:
                if weight > 0.0:
                    results[int(row)].append((weight, kind, (), path))

    def _crosswalk_modes(self, xy, vel, speed, moving, modes) -> None:
        """Add crosswalk modes (weights relative to constant velocity = 1), all pedestrians
        against all nearby crosswalks at once in each crosswalk's axis frame (u across the
        road from its centre, w along the road)."""
        p = self.params
        # Only crosswalks a pedestrian could reach matter (keeps (P, C) small in big towns).
        reach_m = p.crosswalk_approach_m + p.crosswalk_edge_m + self._cw_extent_m
        near = np.all((self._cw_centre >= xy.min(axis=0) - reach_m)
                      & (self._cw_centre <= xy.max(axis=0) + reach_m), axis=1)
        if not near.any():
            return
        centre, axis, normal = self._cw_centre[near], self._cw_axis[near], self._cw_normal[near]
        half_len, half_wid = self._cw_half_len[near][None, :], self._cw_half_wid[near][None, :]
        rel = xy[:, None, :] - centre[None, :, :]
        u = np.einsum('pcj,cj->pc', rel, axis)
        w = np.einsum('pcj,cj->pc', rel, normal)
        dir_xy = vel / np.maximum(speed, 1e-9)[:, None]
        du = dir_xy @ axis.T
        dw = dir_xy @ normal.T
        edge = half_len + p.crosswalk_edge_m
        walking = moving[:, None]
        pedestrians = np.arange(len(xy))
        # (pedestrian, start, corner, direction after the corner, speed, weight, kind)
        legs: list[tuple] = []

        def pick(mask: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            best = np.argmin(np.where(mask, cost, np.inf), axis=1)
            return pedestrians[mask.any(axis=1)], best[mask.any(axis=1)]

        with np.errstate(divide='ignore', invalid='ignore'):
            # 1. Walking along the kerb towards a crosswalk's axis: turn onto it there.
            reach = -w / dw
            u_cross = u + reach * du
            ok = walking & (np.abs(dw) > 0.5) & (reach > 0.0) & \
                (reach <= p.crosswalk_approach_m) & (np.abs(u_cross) >= half_len - 0.5) & \
                (np.abs(u_cross) <= edge)
        # 2. Crossing (on it or at its kerb end, walking across): turn along the far kerb.
        sign = np.sign(du)
        turn_u = sign * (half_len + p.kerb_walk_offset_m)
        along = walking & (np.abs(du) > math.cos(math.pi / 4.0)) & \
            (np.abs(w) <= half_wid + 1.0) & (np.abs(u) <= edge) & ((turn_u - u) * sign > 0.0)
        # Someone out on the road crossing it is not about to turn onto another crosswalk.
        ok &= ~(along & (np.abs(u) < half_len)).any(axis=1)[:, None]
        for i, c in zip(*pick(ok, reach)):
            corner = xy[i] + dir_xy[i] * reach[i, c]
            legs.append((i, corner, -np.sign(u_cross[i, c]) * axis[c], speed[i],
                         p.cross_turn_weight, MODE_TURN_ONTO_CROSSWALK))
        for i, c in zip(*pick(along, np.abs(w))):
            corner = centre[c] + axis[c] * turn_u[i, c] + normal[c] * w[i, c]
            heading = axis[c] * sign[i, c]
            left = np.array([-heading[1], heading[0]])
            legs.append((i, corner, left, speed[i], p.cross_then_turn_weight,
                         MODE_CROSS_THEN_LEFT))
            legs.append((i, corner, -left, speed[i], p.cross_then_turn_weight,
                         MODE_CROSS_THEN_RIGHT))
        # 3. Standing at a crosswalk's end: may start crossing now.
        at_edge = ~walking & (np.abs(u) >= half_len - 1.0) & (np.abs(u) <= edge) & \
            (np.abs(w) <= half_wid + 1.0)
        if p.start_crossing_probability > 0.0:
            q = p.start_crossing_probability
            for i, c in zip(*pick(at_edge, np.abs(w))):
                modes[i][0] = (1.0 - q, MODE_STAND, modes[i][0][2])
                legs.append((i, xy[i], -np.sign(u[i, c]) * axis[c], p.walk_speed_mps, q,
                             MODE_START_CROSSING))
        if not legs:
            return
        start = xy[[leg[0] for leg in legs]]
        corner = np.array([leg[1] for leg in legs])
        after = np.array([leg[2] for leg in legs])
        walk = np.array([leg[3] for leg in legs])
        paths = self._two_leg_paths(start, corner, after, walk)
        for leg, path in zip(legs, paths):
            modes[leg[0]].append((leg[4], leg[5], path))

    def _two_leg_paths(self, start: np.ndarray, corner: np.ndarray, after: np.ndarray,
                       speed_mps: np.ndarray) -> np.ndarray:
        """(Q, S, 3) poses walking at constant speed from start (Q, 2) to corner (Q, 2), then
        on along the unit direction after (Q, 2)."""
        first = corner - start
        first_len = np.hypot(first[:, 0], first[:, 1])
        first_dir = first / np.maximum(first_len, 1e-9)[:, None]
        dist = speed_mps[:, None] * self.times_s[None, :]
        on_first = np.minimum(dist, first_len[:, None])
        beyond = dist - on_first
        xy = start[:, None, :] + first_dir[:, None, :] * on_first[..., None] + \
            after[:, None, :] * beyond[..., None]
        yaw_first = np.arctan2(first_dir[:, 1], first_dir[:, 0])
        yaw_after = np.arctan2(after[:, 1], after[:, 0])
        yaw = np.where((beyond > 0.0) | (first_len[:, None] < 1e-9), yaw_after[:, None],
                       yaw_first[:, None])
        return np.concatenate([xy, yaw[..., None]], axis=-1)
