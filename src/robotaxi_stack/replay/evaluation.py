"""Recording -> result.json metrics and summary.png (no rclpy: bags are decoded with rosbags).

`extract_series` reads the topics the metrics need from a bag into numpy time series;
`evaluate` turns them into the section 6 metrics and pass/fail against the scenario's
expectations; `write_summary` draws the figure. Times are header stamps in seconds of sim time
(the simulator stamps everything it publishes), except latency, which compares the recording
time of an output with the sensor stamp it carries.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

import numpy as np

from robotaxi_stack.common.params import ParameterError
from robotaxi_stack.replay import free_flow as ff
from robotaxi_stack.replay import metrics as m
from robotaxi_stack.replay.bag_io import deserialize, read_bag
from robotaxi_stack.replay.summary import draw_summary
from robotaxi_stack.sim import maps
from robotaxi_stack.sim.scenario import Scenario, ScenarioError
from robotaxi_stack.sim.vehicle_dynamics import VehicleParams

TOPIC_ODOMETRY = '/localization/kinematic_state'
TOPIC_GROUND_TRUTH = '/sim/ground_truth/objects'
TOPIC_MISSION = '/planning/mission_status'
TOPIC_MRM = '/system/mrm_state'
TOPIC_TRACKED = '/perception/tracked_objects'
TOPIC_DETECTED = '/perception/objects'
TRACKING_RANGE_M = 50.0  # tracking is scored against the actors within this of the ego
# Outputs whose header.stamp is the stamp of the sensor data they derive from, in the order
# the end-to-end latency is taken from (the last stage of the chain that exists).
LATENCY_TOPICS = ('/control/command', '/planning/trajectory', '/prediction/objects',
                  TOPIC_TRACKED, TOPIC_DETECTED)
_NEEDED = (TOPIC_ODOMETRY, TOPIC_GROUND_TRUTH, TOPIC_MISSION, TOPIC_MRM, TOPIC_TRACKED,
           TOPIC_DETECTED, *LATENCY_TOPICS)


class EvaluationError(ValueError):
    """The recording lacks what the metrics need (e.g. no odometry at all)."""


def _stamp_s(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _yaw(q: Any) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def _last_per_stamp(items: list[tuple]) -> list[tuple]:
    """Sorted by stamp, one entry per stamp: a state topic also repeats itself periodically,
    so a change and a periodic message can carry the same stamp; the later one is current."""
    latest: dict[float, tuple] = {}
    for item in items:  # recording order: a later message with the same stamp wins
        latest[item[0]] = item
    return [latest[t] for t in sorted(latest)]


@dataclasses.dataclass
class Series:
    """Time series extracted from one recording (all times in seconds)."""

    t_s: np.ndarray                         # (T,) odometry stamps
    xy_m: np.ndarray                        # (T, 2) base_link
    yaw_rad: np.ndarray                     # (T,)
    speed_mps: np.ndarray                   # (T,)
    yaw_rate_rps: np.ndarray                # (T,)
    gt_t_s: np.ndarray                      # (G,) ground truth stamps
    gt_objects: list[dict[int, np.ndarray]]  # per stamp: object id -> [x, y, yaw, l, w]
    mission: list[tuple[float, str, int]]   # (t, ride_id, state)
    mrm: list[tuple[float, int, int, str]]  # (t, state, behavior, reason)
    objects: dict[str, list[tuple[float, np.ndarray, np.ndarray]]]  # topic -> (t, ids, xy)
    latency: dict[str, list[tuple[float, float]]]  # topic -> (record time s, stamp s)
    message_counts: dict[str, int]


def extract_series(bag_path: str | pathlib.Path) -> Series:
    """Decode the topics the metrics use; PointClouds and images are never decoded."""
    odom, gt, mission, mrm = [], [], [], []
    objects: dict[str, list] = {TOPIC_TRACKED: [], TOPIC_DETECTED: []}
    latency: dict[str, list] = {topic: [] for topic in LATENCY_TOPICS}
    counts: dict[str, int] = {}
    for topic, msgtype, record_ns, data in read_bag(bag_path):
        counts[topic] = counts.get(topic, 0) + 1
        if topic not in _NEEDED:
            continue
        msg = deserialize(data, msgtype)
        if topic in latency:
            latency[topic].append((record_ns * 1e-9, _stamp_s(msg.header)))
        if topic == TOPIC_ODOMETRY:
            pose, twist = msg.pose.pose, msg.twist.twist
            odom.append((_stamp_s(msg.header), pose.position.x, pose.position.y,
                         _yaw(pose.orientation), twist.linear.x, twist.angular.z))
        elif topic == TOPIC_GROUND_TRUTH:
            gt.append((_stamp_s(msg.header), {
                int(o.object_id): np.array([o.pose.pose.position.x, o.pose.pose.position.y,
                                            _yaw(o.pose.pose.orientation), o.dimensions.x,
                                            o.dimensions.y]) for o in msg.objects}))
        elif topic == TOPIC_MISSION:
            mission.append((_stamp_s(msg.header), msg.ride_id, int(msg.state)))
        elif topic == TOPIC_MRM:
            mrm.append((_stamp_s(msg.header), int(msg.state), int(msg.behavior), msg.reason))
        if topic in objects:
            ids = np.array([getattr(o, 'object_id', i) for i, o in enumerate(msg.objects)])
            xy = np.array([[o.pose.pose.position.x, o.pose.pose.position.y]
                           for o in msg.objects]).reshape(-1, 2)
            objects[topic].append((_stamp_s(msg.header), ids, xy))
    if not odom:
        raise EvaluationError(f'{bag_path}: no {TOPIC_ODOMETRY} messages recorded')
    odom_array = np.array(sorted(odom))
    gt.sort(key=lambda item: item[0])
    return Series(
        t_s=odom_array[:, 0], xy_m=odom_array[:, 1:3], yaw_rad=odom_array[:, 3],
        speed_mps=odom_array[:, 4], yaw_rate_rps=odom_array[:, 5],
        gt_t_s=np.array([item[0] for item in gt]), gt_objects=[item[1] for item in gt],
        mission=_last_per_stamp(mission), mrm=_last_per_stamp(mrm), objects=objects, latency=latency,
        message_counts=counts)


def actor_boxes_at(series: Series, actor_count: int, times_s: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Actor footprints (T, M, 4, 2) and validity (T, M) at `times_s`.

    Ground truth comes at 10 Hz; positions are interpolated linearly to the odometry times so
    a brief contact between two ground-truth frames is not missed. Actor ids are 1..M.
    """
    boxes = np.full((len(times_s), actor_count, 4, 2), np.nan)
    valid = np.zeros((len(times_s), actor_count), dtype=bool)
    if len(series.gt_t_s) == 0:
        return boxes, valid
    for index in range(actor_count):
        present = [(t, objs[index + 1]) for t, objs in zip(series.gt_t_s, series.gt_objects)
                   if index + 1 in objs]
        if not present:
            continue
        t_gt = np.array([t for t, _ in present])
        values = np.array([v for _, v in present])
        inside = (times_s >= t_gt[0]) & (times_s <= t_gt[-1])
        t = times_s[inside]
        x = np.interp(t, t_gt, values[:, 0])
        y = np.interp(t, t_gt, values[:, 1])
        yaw = np.interp(t, t_gt, np.unwrap(values[:, 2]))
        length = np.interp(t, t_gt, values[:, 3])
        width = np.interp(t, t_gt, values[:, 4])
        boxes[inside, index] = m.box_corners(x, y, yaw, length, width)
        valid[inside, index] = True
    return boxes, valid


def evaluate(series: Series, scenario: Scenario, vehicle: VehicleParams,
             town: maps.Town | None = None) -> tuple[dict, dict]:
    """(result.json dict, extras for the summary) of one run.

    town: the scenario's map, for the free-flow ride times; None builds it from the scenario
    (a map file given relative to the scenario's folder is then looked up from the working
    directory).
    """
    t = series.t_s
    ego_boxes = m.ego_footprint(series.xy_m[:, 0], series.xy_m[:, 1], series.yaw_rad,
                                vehicle.length_m, vehicle.width_m,
                                center_offset_m=vehicle.box_centre_offset_m)
    actor_ids = [a.id for a in scenario.actors]
    boxes, valid = actor_boxes_at(series, len(actor_ids), t)
    events, clearance = m.collisions_and_clearance(t, ego_boxes, boxes, valid, actor_ids)
    ride_ids = [r for _, r, _ in series.mission]
    states = [s for _, _, s in series.mission]
    requested = {r.ride_id: ((r.pickup.x, r.pickup.y), (r.dropoff.x, r.dropoff.y))
                 for r in scenario.rides}
    stops = m.stop_errors(t, series.xy_m, series.speed_mps, [x for x, _, _ in series.mission],
                          ride_ids, states, requested) if series.mission else []
    comfort = m.jerk_and_lat_accel(t, series.speed_mps, yaw_rate_rps=series.yaw_rate_rps) \
        if len(t) >= 8 else None
    mrm = m.mrm_events([x[0] for x in series.mrm], [x[1] for x in series.mrm],
                       [x[2] for x in series.mrm], [x[3] for x in series.mrm]) \
        if series.mrm else []
    metrics: dict[str, Any] = {
        'collisions': len(events),
        'collision_events': [dataclasses.asdict(e) for e in events],
        'min_clearance_m': clearance,
        'rides_completed': m.rides_completed(ride_ids, states),
        'stop_error_m': [s.error_m for s in stops],
        'stops': [dataclasses.asdict(s) for s in stops],
        'mrm_events': mrm,
        'sim_time_s': float(t[-1] - t[0]) if len(t) else 0.0,
        'distance_m': float(np.sum(np.hypot(*np.diff(series.xy_m, axis=0).T))),
        'message_counts': dict(sorted(series.message_counts.items())),
    }
    if comfort is not None:
        metrics['max_abs_jerk_mps3'] = comfort.max_abs_jerk_mps3
        metrics['p95_abs_jerk_mps3'] = comfort.p95_abs_jerk_mps3
        metrics['max_abs_accel_mps2'] = comfort.max_abs_accel_mps2
        metrics['max_abs_lat_accel_mps2'] = comfort.max_abs_lat_accel_mps2
    for topic in LATENCY_TOPICS:
        if series.latency[topic]:
            metrics['e2e_latency_ms'] = m.latency_percentiles(series.latency[topic])
            metrics['e2e_latency_topic'] = topic
            break
    if series.objects[TOPIC_TRACKED] and len(series.gt_t_s):
        metrics['tracking'] = _tracking_metrics(series)
    metrics.update(_ride_time_metrics(series, scenario, vehicle, town))
    if clearance is None:
        metrics['min_clearance_m'] = None
    result = m.build_result(scenario.name, metrics, scenario.expect)
    extras = {'events': [(e.t_s, f'collision {e.actor_id}') for e in events]
              + [(e['t_s'], f"MRM {e['behavior']}") for e in mrm]}
    return result, extras


def _ride_time_metrics(series: Series, scenario: Scenario, vehicle: VehicleParams,
                       town: maps.Town | None) -> dict:
    """ride_legs (measured vs free-flow time per completed leg) and max_ride_time_ratio;
    ride_time_error says why there are none when the references could not be computed."""
    out: dict[str, Any] = {'ride_legs': [], 'max_ride_time_ratio': None}
    try:
        legs = ff.extract_ride_legs(series.mission)
        if not legs:
            return out
        if town is None:
            town = _scenario_town(scenario)
        behavior, hold_s = ff.load_planner_settings()
        stops = {r.ride_id: ((r.pickup.x, r.pickup.y, r.pickup.yaw),
                             (r.dropoff.x, r.dropoff.y, r.dropoff.yaw)) for r in scenario.rides}
        entries = ff.ride_time_ratios(legs, series.t_s, series.xy_m, series.yaw_rad,
                                      series.speed_mps, stops, town, behavior,
                                      vehicle.length_m - vehicle.rear_overhang_m, hold_s)
    except (ff.FreeFlowError, maps.MapError, ScenarioError, ParameterError, OSError) as error:
        out['ride_time_error'] = str(error)
        return out
    ratios = [e['ratio'] for e in entries if e['ratio'] is not None]
    out['ride_legs'] = entries
    out['max_ride_time_ratio'] = max(ratios) if ratios else None
    return out


def _scenario_town(scenario: Scenario) -> maps.Town:
    if scenario.map.generator == 'grid_town':
        return maps.generate_grid_town(scenario.map.params)
    # Imported here: sim.world pulls in the sensor models, which a generated map never needs.
    from robotaxi_stack.sim.world import build_town
    return build_town(scenario)


def _tracking_metrics(series: Series) -> dict:
    """CLEAR MOT of /perception/tracked_objects against the actors within TRACKING_RANGE_M of
    the ego (farther actors are out of sensor reach; tracks there are not scored either).
    Tracks of solid scenery (kerbs, poles, walls the clustering reports as UNKNOWN) count as
    false positives: the actors are the only ground truth."""
    gt_by_t = {round(t, 6): objs for t, objs in zip(series.gt_t_s, series.gt_objects)}
    frames = []
    for t, ids, xy in series.objects[TOPIC_TRACKED]:
        objs = gt_by_t.get(round(t, 6))
        if objs is None:
            continue
        index = min(int(np.searchsorted(series.t_s, t)), len(series.t_s) - 1)
        ego_xy = series.xy_m[index]
        gt_ids = [i for i in sorted(objs)
                  if math.hypot(objs[i][0] - ego_xy[0], objs[i][1] - ego_xy[1])
                  <= TRACKING_RANGE_M]
        gt_xy = np.array([objs[i][:2] for i in gt_ids]).reshape(-1, 2)
        hyp_xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        near = np.hypot(*(hyp_xy - ego_xy).T) <= TRACKING_RANGE_M
        frames.append(m.MotFrame(gt_ids, gt_xy, [i for i, k in zip(ids, near) if k],
                                 hyp_xy[near]))
    if not frames:
        return {}
    mot = m.clear_mot(frames)
    return {'mota': mot.mota, 'id_switches': mot.id_switches, 'misses': mot.misses,
            'false_positives': mot.false_positives, 'ground_truth_objects': mot.num_gt,
            'range_m': TRACKING_RANGE_M}


def write_summary(path: str | pathlib.Path, series: Series, scenario: Scenario, town: Any,
                  extras: dict) -> str:
    """summary.png: map, ego path, actor tracks, stops; speed/accel/jerk over time."""
    t = series.t_s
    accel, jerk = (m.longitudinal_profiles(t, series.speed_mps) if len(t) >= 8
                   else (np.zeros_like(t), np.zeros_like(t)))
    lines = []
    for lanelet in town.lanelets.values():
        if lanelet.kind in ('road', 'turn'):
            lines += [lanelet.left, lanelet.right]
    tracks = {}
    for index, actor in enumerate(scenario.actors):
        xy = [objs[index + 1][:2] for objs in series.gt_objects if index + 1 in objs]
        tracks[actor.id] = np.array(xy).reshape(-1, 2)
    stops = {}
    for ride in scenario.rides:
        stops[f'{ride.ride_id} pickup'] = (ride.pickup.x, ride.pickup.y)
        stops[f'{ride.ride_id} dropoff'] = (ride.dropoff.x, ride.dropoff.y)
    return draw_summary(path, lines, series.xy_m, tracks, t, series.speed_mps, accel, jerk,
                        events=extras.get('events', ()), title=scenario.name, stops_xy=stops)
