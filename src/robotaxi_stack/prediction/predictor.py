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
rate and velocity (CTRV) mode.

Pedestrians (and bicycles off the road) move at constant velocity; near a crosswalk they get a
mode that turns onto it (walking towards its end), modes that cross and then turn either way
along the far kerb (walking on it), or, standing at its edge, a mode that starts crossing.

The predictor keeps a short history per object id (fed by `predict`/`observe` with a stamp) to
estimate acceleration, yaw rate, cruise speed and how long an object has been standing; without
stamps those estimates are simply unknown.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
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


@dataclasses.dataclass
class _Sequence:
    """Lanelets (internal indices) from a start lanelet, with their start stations."""

    lanes: tuple[int, ...]
    starts_m: np.ndarray      # station of each lanelet's start from the first one's start
    starts: tuple[float, ...]  # the same as plain floats
    length_m: float           # total length
    dead_end: bool
    weight: float             # product of the fork priors
    turns: tuple[tuple[float, float], ...]  # (entry station, |curvature|) of turning lanelets
    stops_m: tuple[float, ...]


def _wrap(angle: np.ndarray | float) -> np.ndarray | float:
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


class Predictor:
    """Map-based multi-modal prediction on one Town; see the module docstring."""

    def __init__(self, town: Town, params: PredictorParams | None = None):
        self.town = town
        self.params = params or PredictorParams()
        self._tracks: dict[int, _Track] = {}
        self._last_stamp_s: float | None = None
        self._sequence_cache: dict[tuple[int, int], list[_Sequence]] = {}
        self._build_lanes()
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
        self._cw_half_len = np.array(half_len)
        self._cw_half_wid = np.array(half_wid)

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
        if len(table) == 0:
            return PredictionOutput([], times, nonfinite, duplicate, 0, rejected)
        results: list[list[tuple[float, str, tuple[int, ...], np.ndarray]]] = [
            [] for _ in range(len(table))]
        off_lane = self._predict_all(table, results)
        out = []
        for row, modes in zip(table, results):
            modes.sort(key=lambda m: -m[0])
            modes = modes[:self.params.max_modes]
            conf = np.array([m[0] for m in modes])
            conf /= conf.sum()
            # np.array copies the (S, 3) paths into one (K, S, 3) block like np.stack, at a
            # third of its per-call cost (this runs once per object).
            out.append(ObjectPrediction(
                object_id=int(row[0]), label=int(row[1]),
                paths=np.array([m[3] for m in modes]), confidences=conf,
                kinds=tuple(m[1] for m in modes), lanelet_ids=tuple(m[2] for m in modes)))
        return PredictionOutput(out, times, nonfinite, duplicate, off_lane, rejected)

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
            table = np.column_stack([table, np.full((len(table), 2), np.nan)])
        required = table[:, :10]
        finite = np.all(np.isfinite(required), axis=1)
        finite &= (required[:, 0] >= 0) & (required[:, 0] == np.round(required[:, 0]))
        finite &= (required[:, 8] > 0) & (required[:, 9] > 0)
        nonfinite = int((~finite).sum())
        table = table[finite]
        # Optional columns: anything not finite is unknown.
        table[:, 10:][~np.isfinite(table[:, 10:])] = np.nan
        _, first = np.unique(table[:, 0], return_index=True)
        keep = np.zeros(len(table), dtype=bool)
        keep[first] = True
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
        n = len(table)
        accel, yaw_rate = table[:, 11].copy(), table[:, 10].copy()
        cruise = np.maximum(table[:, 5], 0.0)
        stand = np.zeros(n)
        for i, id_value in enumerate(table[:, 0].tolist()):
            track = self._tracks.get(int(id_value))
            if track is None or track.samples < 2:
                continue
            if np.isnan(accel[i]):
                accel[i] = track.accel_mps2
            if np.isnan(yaw_rate[i]):
                yaw_rate[i] = track.yaw_rate_rps
            cruise[i] = max(cruise[i], track.cruise_mps)
            stand[i] = track.stand_s
        return {'accel': accel, 'yaw_rate': yaw_rate, 'cruise': cruise, 'stand': stand}

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
        first_of_pair = np.r_[True, (obj[1:] != obj[:-1]) | (lane[1:] != lane[:-1])]
        sel = np.flatnonzero(first_of_pair)
        obj, lane, seg, t, dist, rel, direction = (a[sel] for a in
                                                   (obj, lane, seg, t, dist, rel, direction))
        seg_len = np.sqrt(self._seg_len2[seg])
        cross = direction[:, 0] * rel[:, 1] - direction[:, 1] * rel[:, 0]
        lateral = cross / seg_len
        arc = self._seg_s0[seg] + t * seg_len
        return {'obj': obj, 'lane': lane, 'arc_m': arc, 'lateral_m': lateral,
                'heading_rad': self._seg_heading[seg], 'dist_m': dist}

    def _sequences(self, lane: int, need_m: float) -> list[_Sequence]:
        """Successor sequences from the start of `lane` at least need_m long (cached)."""
        bucket = int(math.ceil(max(need_m, 1.0) / 20.0))
        key = (lane, bucket)
        cached = self._sequence_cache.get(key)
        if cached is not None:
            return cached
        need = bucket * 20.0
        p = self.params
        done: list[_Sequence] = []
        stack = [((lane,), self._lane_len[lane], 0, 1.0)]
        while stack:
            lanes, length, forks, weight = stack.pop()
            last = lanes[-1]
            options = self._succ[last]
            if length >= need or not options or len(done) + len(stack) >= _MAX_SEQUENCES:
                done.append(self._make_sequence(lanes, weight, dead_end=not options))
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
        self._sequence_cache[key] = done
        return done

    def _straightest(self, options: Sequence[int]) -> int:
        straight = [o for o in options if self._lane_turn[o] == 'straight']
        if straight:
            return min(straight)
        return min(options, key=lambda o: (self._lane_abs_kappa[o], o))

    def _make_sequence(self, lanes: tuple[int, ...], weight: float,
                       dead_end: bool) -> _Sequence:
        lengths = self._lane_len[list(lanes)]
        starts = np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
        turns = tuple((float(starts[k]), float(self._lane_abs_kappa[lane]))
                      for k, lane in enumerate(lanes) if self._lane_turn[lane] != 'straight')
        stops = tuple(float(starts[k] + s) for k, lane in enumerate(lanes)
                      for s in self._stops[lane])
        return _Sequence(lanes, starts, tuple(starts.tolist()), float(lengths.sum()), dead_end,
                         weight, turns, stops)

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
        lane_capable = np.isin(label, VEHICLE_LABELS + (BICYCLE,)) & \
            (speed >= -p.reverse_speed_mps)
        bicycle = np.flatnonzero(label == BICYCLE)
        if len(bicycle):
            # Bicycles follow lanes only on the road; on a sidewalk they move like pedestrians.
            lane_capable[bicycle] &= is_on_road(self.town, xy[bicycle])
        modes = self._lane_modes(table, history, matches, lane_capable)
        has_lane = np.zeros(n, dtype=bool)
        if modes is not None:
            has_lane[np.unique(modes['obj'])] = True
            self._integrate_and_emit(table, history, matches, modes, results)
        vehicle = np.isin(label, VEHICLE_LABELS)
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
        logp = logp - 0.5 * np.where(known, ((np.nan_to_num(yaw_rate) - v_lon * kappa)
                                             / p.yaw_rate_scale_rps) ** 2, 0.0)
        # Far enough for the fastest the vehicle may go within the horizon.
        limit = np.where(np.isfinite(self._lane_limit_mps[lane]),
                         self._lane_limit_mps[lane] * p.speed_limit_factor, 0.0)
        need = arc + np.maximum(v_lon, limit) * p.horizon_s + 10.0

        rows: dict[tuple, list] = {}
        # Plain Python numbers: this loop touches a few candidates and sequences per object,
        # where numpy calls on tiny arrays would cost more than the work.
        obj_l, lane_l, arc_l = obj.tolist(), lane.tolist(), arc.tolist()
        need_l, v_l, logp_l = need.tolist(), v_lon.tolist(), logp.tolist()
        half_l = (0.5 * table[:, 8]).tolist()
        lane_len = self._lane_len.tolist()
        for k, (o, ln, arc_k) in enumerate(zip(obj_l, lane_l, arc_l)):
            skip_first = lane_len[ln] - arc_k < _DEDUP_TAIL_M
            horizon_end = need_l[k]
            # Sequences that only differ beyond the horizon's reach are one hypothesis: their
            # fork weights add up.
            merged: dict[tuple[int, ...], list] = {}
            for seq in self._sequences(ln, horizon_end):
                # The same future seen from two candidates (the end of a lanelet and the
                # start of its successor) is one mode too: key it by the lanelets it reaches.
                key_lanes = seq.lanes[:bisect.bisect_left(seq.starts, horizon_end)]
                if skip_first and len(key_lanes) > 1:
                    key_lanes = key_lanes[1:]
                weight = seq.weight
                if seq.turns:
                    weight *= self._turn_plausibility(seq, arc_k, v_l[k], half_l[o])
                entry = merged.get(key_lanes)
                if entry is None:
                    merged[key_lanes] = [weight, seq]
                else:
                    entry[0] += weight
                    if seq.weight > entry[1].weight:
                        entry[1] = seq  # the likeliest continuation carries the geometry
            for key_lanes, (weight, seq) in merged.items():
                score = logp_l[k] + math.log(max(weight, 1e-12))
                key = (o, key_lanes)
                best = rows.get(key)
                if best is None or score > best[0]:
                    rows[key] = [score, k, seq]
        if not rows:
            return None
        # Normalise per object; keep the most likely max_modes.
        per_obj: dict[int, list] = {}
        for (o, _), value in rows.items():
            per_obj.setdefault(o, []).append(value)
        chosen = []
        for o, values in per_obj.items():
            scores = [v[0] for v in values]
            top = max(scores)
            weights = [math.exp(x - top) for x in scores]
            total_w = sum(weights)
            ranked = sorted(range(len(values)), key=lambda i: -weights[i])[:p.max_modes]
            keep = [i for i in ranked if weights[i] / total_w >= p.min_mode_probability] \
                or ranked[:1]
            for i in keep:
                chosen.append((o, weights[i] / total_w, values[i][1], values[i][2]))
        # Pad the sequences into (M, K) arrays: built as lists, converted once.
        width = max(len(c[3].lanes) for c in chosen)
        stops_w = max(max(len(c[3].stops_m) for c in chosen), 1) + 1
        inf = math.inf
        lanes_rows, start_rows, stop_rows = [], [], []
        for o, _, k, seq in chosen:
            arc_k = arc_l[k]
            pad = width - len(seq.lanes)
            lanes_rows.append(seq.lanes + (seq.lanes[-1],) * pad)
            start_rows.append([x - arc_k for x in seq.starts] + [inf] * pad)
            stop_rows.append([x - arc_k for x in seq.stops_m]
                             + [inf] * (stops_w - len(seq.stops_m)))
        seq_lane = np.array(lanes_rows, dtype=np.int64)
        seq_start = np.array(start_rows)
        stops = np.array(stop_rows)
        cand = np.array([c[2] for c in chosen], dtype=np.int64)
        mobj = np.array([c[0] for c in chosen], dtype=np.int64)
        prob = np.array([c[1] for c in chosen])
        total = np.array([c[3].length_m for c in chosen]) - arc[cand]
        dead_end = np.array([c[3].dead_end for c in chosen], dtype=bool)
        return {'obj': mobj, 'prob': prob, 'seq_lane': seq_lane, 'seq_start': seq_start,
                'stops': stops, 'total': total, 'dead_end': dead_end, 'lat': lat[cand],
                'heading_err': heading_err[cand], 'v_lon': v_lon[cand], 'v_lat': v_lat[cand],
                'first_lane': lane[cand], 'arc': arc[cand]}

    def _turn_plausibility(self, seq: _Sequence, arc_m: float, v_mps: float,
                           half_length_m: float) -> float:
        """1 unless a turn on the sequence must be taken faster than max_turn_lat_accel_mps2
        (after comfortable braking, or from standstill when a stop line still to be served
        comes first)."""
        p = self.params
        factor = 1.0
        for entry_m, kappa in seq.turns:
            distance = entry_m - arc_m
            if distance < 0.0 or kappa <= 0.0:
                continue  # already turning: the heading and yaw rate terms decide
            if any(s - arc_m - half_length_m > -_LINE_PASSED_M and s <= entry_m + 1e-6
                   for s in seq.stops_m):
                continue
            v2 = max(v_mps * v_mps - 2.0 * p.comfort_decel_mps2 * distance, 0.0)
            excess = v2 * kappa - p.max_turn_lat_accel_mps2
            if excess > 0.0:
                factor *= math.exp(-excess / p.turn_lat_accel_scale_mps2)
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
        first = np.r_[True, mode[1:] != mode[:-1]]
        lead_s[mode[first]] = station[first]
        lead_obj[mode[first]] = other[first]
        return lead_s, lead_obj

    def _desired_speed(self, table, history, modes) -> np.ndarray:
        """IDM desired speed per mode: the highest of current speed, remembered cruise speed
        and the speed the observed acceleration points to, at most the lane's limit."""
        p = self.params
        o = modes['obj']
        v = modes['v_lon']
        accel = np.nan_to_num(history['accel'][o])
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
        first = order[np.r_[True, o[order][1:] != o[order][:-1]]]
        top_mode[o[first]] = first
        lead_mode = np.where(lead_obj >= 0, top_mode[np.maximum(lead_obj, 0)], -1)
        has_lead = lead_obj >= 0
        lead_half = np.where(has_lead, 0.5 * table[np.maximum(lead_obj, 0), 8], 0.0)

        dt = p.integration_step_s
        steps = int(math.ceil(p.horizon_s / dt - 1e-9))
        s = np.zeros(m)
        v = modes['v_lon'].copy()
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
        s_hist = np.zeros((m, steps + 1))
        sqrt_ab = 2.0 * math.sqrt(p.max_accel_mps2 * p.comfort_decel_mps2)
        v0_safe = np.maximum(v0, 1e-3)
        stand_target = v0 <= 1e-3
        any_stand_target = bool(stand_target.any())
        lead_index = np.maximum(lead_mode, 0)
        lead_moves = lead_mode >= 0
        lead_base = np.where(has_lead, lead_s0 - lead_half, np.inf)
        any_lead = bool(has_lead.any())
        brake_2 = 2.0 * p.max_decel_mps2
        # The step runs once per integration step for all modes of all objects at once, so
        # its cost is the number of numpy calls: state that only changes at events (the
        # next stop line, who is dwelling) is kept between steps, and work whose inputs did
        # not change is skipped. Every per-mode value is computed with the same operations in
        # the same order as the plain IDM formulas, so the results are bit for bit the same.
        line = stops[rows, next_stop]
        dwelling = ~np.isnan(dwell)
        any_dwelling = bool(dwelling.any())
        not_dwelling = ~dwelling
        with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
            for step in range(steps):
                front = s + half_len
                v2 = v * v
                to_line = line - front
                # (A line at inf never compares greater, so no finiteness test is needed.)
                skip = v2 > brake_2 * np.maximum(to_line, 1e-3)
                skip &= not_dwelling
                if skip.any():
                    next_stop = np.minimum(next_stop + skip, last_stop)
                    line = stops[rows, next_stop]
                    to_line = line - front
                # IDM interaction term max over the obstacles (leader, stop line, dead end)
                # of (desired gap / gap)^2: all ratios are >= 0, so the max can be taken
                # before squaring, and the stop line and the dead end share the desired gap
                # (both stand still), so only the nearer of them matters.
                v_gap = v * p.time_gap_s
                static_gap = np.minimum(to_line + p.min_gap_m, end_base - front)
                desired = p.min_gap_m + np.maximum(0.0, v_gap + v2 / sqrt_ab)
                ratio = desired / np.maximum(static_gap, 1e-3)
                if any_lead:
                    lead_v = np.where(lead_moves, v[lead_index], 0.0)
                    lead_gap = lead_base + np.where(lead_moves, s[lead_index], 0.0) - front
                    desired_lead = p.min_gap_m + np.maximum(
                        0.0, v_gap + v * (v - lead_v) / sqrt_ab)
                    np.maximum(ratio, desired_lead / np.maximum(lead_gap, 1e-3), out=ratio)
                    static_gap = np.minimum(static_gap, lead_gap)
                free = 1.0 - (v / v0_safe) ** 4
                if any_stand_target:
                    free[stand_target] = -1.0
                accel = p.max_accel_mps2 * (free - ratio * ratio)
                # One step covers at most the free distance: no overshoot of a standing
                # target with finite steps.
                free_m = np.maximum(static_gap - p.min_gap_m, 0.0)
                v_dt = v * dt
                neg_v2 = -v2
                cap = np.where(v_dt > 2.0 * free_m,
                               neg_v2 / (2.0 * np.maximum(free_m, 1e-9)),
                               2.0 * (free_m - v_dt) / (dt * dt))
                np.minimum(accel, cap, out=accel)
                np.maximum(accel, -p.max_decel_mps2, out=accel)
                np.minimum(accel, p.max_accel_mps2, out=accel)
                if any_dwelling:
                    np.minimum(accel, 0.0, out=accel, where=dwelling)
                v_new = v + accel * dt
                ds = np.where(v_new < 0.0, neg_v2 / (2.0 * np.minimum(accel, -1e-9)),
                              v_dt + 0.5 * accel * dt * dt)
                s = s + np.maximum(ds, 0.0)
                v = np.maximum(v_new, 0.0)
                arrived = v < _SNAP_SPEED_MPS
                arrived &= not_dwelling
                if arrived.any():
                    arrived &= np.abs(line - s - half_len) < _SNAP_DISTANCE_M
                if any_dwelling:
                    np.subtract(dwell, dt, out=dwell, where=dwelling)
                    released = dwelling & (dwell <= 1e-9)
                    if released.any():
                        next_stop = np.minimum(next_stop + released, last_stop)
                        line = stops[rows, next_stop]
                        dwell[released] = np.nan
                        dwelling &= ~released
                if arrived.any():
                    v[arrived] = 0.0
                    dwell[arrived] = p.stop_dwell_s
                    dwelling |= arrived
                if any_dwelling or arrived.any():
                    np.logical_not(dwelling, out=not_dwelling)
                    any_dwelling = bool(dwelling.any())
                s_hist[:, step + 1] = s
        # Stations at the output times.
        pos = self.times_s / dt
        lo = np.minimum(np.floor(pos).astype(np.int64), steps)
        hi = np.minimum(lo + 1, steps)
        frac = pos - lo
        stations = s_hist[:, lo] * (1.0 - frac) + s_hist[:, hi] * frac
        paths = self._lane_geometry(modes, stations)
        counts = np.isfinite(modes['seq_start']).sum(axis=1).tolist()
        ids = self._lane_ids[modes['seq_lane']].tolist()
        for i, (owner, prob) in enumerate(zip(o.tolist(), modes['prob'].tolist())):
            results[owner].append((prob, MODE_LANE, tuple(ids[i][:counts[i]]), paths[i]))

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
        x = x + beyond * np.cos(heading)
        y = y + beyond * np.sin(heading)
        d0 = modes['lat'][:, None]
        slope0 = np.tan(np.clip(modes['heading_err'], -0.5, 0.5))[:, None]
        speed = np.maximum(modes['v_lon'], 2.0)
        time_conv = np.where(np.abs(modes['lat']) > p.lane_change_offset_m,
                             p.lane_change_time_s, p.convergence_time_s)
        conv = np.clip(speed * time_conv, p.min_convergence_m, p.max_convergence_m)[:, None]
        u = np.clip(stations / conv, 0.0, 1.0)
        h00 = 2 * u ** 3 - 3 * u ** 2 + 1
        h10 = u ** 3 - 2 * u ** 2 + u
        d = d0 * h00 + slope0 * conv * h10
        d_slope = (d0 * (6 * u ** 2 - 6 * u) / conv + slope0 * (3 * u ** 2 - 4 * u + 1))
        d_slope = np.where(u < 1.0, d_slope, 0.0)
        x = x - d * np.sin(heading)
        y = y + d * np.cos(heading)
        yaw = _wrap(heading + np.arctan(d_slope))
        return np.stack([x, y, yaw], axis=-1)

    def _emit_ctrv(self, table, history, rows: np.ndarray, results) -> None:
        """Constant turn rate and velocity along the heading (signed speed: reversing)."""
        t = self.times_s[None, :]
        x0, y0, yaw0 = table[rows, 2:3], table[rows, 3:4], table[rows, 4:5]
        speed = table[rows, 5:6]
        omega = np.nan_to_num(history['yaw_rate'][rows])[:, None]
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
        reach_m = p.crosswalk_approach_m + p.crosswalk_edge_m + float(
            np.max(self._cw_half_len) + np.max(self._cw_half_wid))
        near = np.all((self._cw_centre >= xy.min(axis=0) - reach_m)
                      & (self._cw_centre <= xy.max(axis=0) + reach_m), axis=1)
        if not near.any():
            return
        centre, axis = self._cw_centre[near], self._cw_axis[near]
        normal = np.column_stack([-axis[:, 1], axis[:, 0]])
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
