"""Closed-loop scenario runs: the stack graph + simulator, recorded and evaluated.

`run_scenario(file, out_dir)`:
1. validates the scenario (errors name the key) and writes a parameter file that points the
   simulator at it (as fast as the machine allows, lock-stepped, waiting for every node);
2. starts the stack graph of config/stack.yaml with sim:=true through the bringup runner,
   logging every node to out_dir/stack.log;
3. records every contract topic to out_dir/bag (rosbag2, MCAP) from this process;
4. kills nodes at the scenario's kill_node fault times (sim time, from /clock);
5. when the simulator ends the scenario, closes the bag and writes result.json and
   summary.png. A run that could not finish (a node failed to start, the wall-clock limit)
   still writes result.json, with passed = false and the reason.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import struct
import threading
import time
import traceback
from typing import Any

import yaml

from robotaxi_stack.bringup.graph import load_graph, resolve_arguments, resolve_graph
from robotaxi_stack.bringup.process_runner import GraphRunner
from robotaxi_stack.common.paths import config_dir, data_path
from robotaxi_stack.replay import evaluation
from robotaxi_stack.sim.scenario import KillNodeFault, Scenario, load_scenario
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle
from robotaxi_stack.sim.world import build_town

RECORDER_NODE = 'scenario_recorder'
COUNTS_FILE = 'sim_published_counts.json'
INTERRUPTED = 'interrupted (SIGINT/SIGTERM)'  # the failure of a run stopped by a signal
# /clock is best effort by contract and also ticks while the simulator waits for the graph.
_UNCHECKED_TOPICS = ('/clock',)
RUNNER_RECORD_DEPTH = 1000
SIM_SENSOR_TOPICS = ('/sensing/lidar/points', '/sensing/camera/front/image_raw',
                     '/sensing/camera/front/camera_info', '/localization/kinematic_state',
                     '/vehicle/status', '/sim/ground_truth/objects')
# Wall-clock allowance: start-up plus this many wall seconds per simulated second.
WALL_S_PER_SIM_S = 20.0
STARTUP_ALLOWANCE_S = 60.0


# Outputs -> the input whose stamp they carry: end-to-end latency is the wall time between
# the recorder receiving the input and receiving the output with that stamp. (Sim time cannot
# measure it: under lock-step it stands still while the stack computes.)
LATENCY_SOURCES = {
    '/control/command': '/localization/kinematic_state',
    '/planning/trajectory': '/localization/kinematic_state',
    '/prediction/objects': '/sensing/lidar/points',
    '/perception/tracked_objects': '/sensing/lidar/points',
    '/perception/objects': '/sensing/lidar/points',
}


class LatencyProbe:
    """Wall receive times by header stamp, read from the serialized messages.

    Every message of these topics starts with a std_msgs/Header, whose stamp follows the
    4-byte CDR encapsulation header: no deserialization needed.
    """

    def __init__(self) -> None:
        self.inputs: dict[str, dict[int, int]] = {t: {} for t in set(LATENCY_SOURCES.values())}
        self.outputs: dict[str, list[tuple[int, int]]] = {t: [] for t in LATENCY_SOURCES}

    def __call__(self, topic: str, data: bytes) -> None:
        if topic not in self.inputs and topic not in self.outputs:
            return
        wall_ns = time.monotonic_ns()
        if len(data) < 12 or data[1] not in (0, 1):
            return
        sec, nanosec = struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)
        stamp_ns = sec * 1_000_000_000 + nanosec
        if topic in self.inputs:
            self.inputs[topic].setdefault(stamp_ns, wall_ns)
        else:
            self.outputs[topic].append((stamp_ns, wall_ns))

    def pairs(self) -> dict[str, list[tuple[float, float]]]:
        """topic -> [(output wall s, input wall s)] for outputs whose input was seen first."""
        result = {}
        for topic, outputs in self.outputs.items():
            seen = self.inputs[LATENCY_SOURCES[topic]]
            result[topic] = [(out_ns * 1e-9, seen[stamp] * 1e-9) for stamp, out_ns in outputs
                             if stamp in seen and out_ns >= seen[stamp]]
        return result


class ScenarioRunError(RuntimeError):
    """The run could not be carried out (not: the scenario's expectations failed)."""


def _write_params(out_dir: pathlib.Path, scenario: Scenario,
                  node_names: list[str]) -> pathlib.Path:
    real_time_factor = scenario.sim.real_time_factor or 0.0
    params = {'simulator': {'ros__parameters': {
        'real_time_factor': float(real_time_factor),
        'lockstep': True,
        'exit_at_end': True,
        'step_hz': float(max(scenario.sim.step_hz, 100.0)),
        'wait_for_nodes': [n for n in node_names if n != 'simulator'] + [RECORDER_NODE],
        # A loaded machine may stall the stack for a while; stepping on without its command
        # would make the run irreproducible, so wait long before declaring a timeout.
        'lockstep_timeout_s': 5.0,
        # The prediction node answers every ground-truth message (or, through perception and
        # tracking, every LiDAR cloud): wait for it like for the command (the planner applies
        # objects input_delay_s after their stamp, and a late prediction made two default-ride
        # runs differ).
        'lockstep_prediction': True,
        'lockstep_prediction_input': ('/sim/ground_truth/objects'
                                      if scenario.sim.perception == 'ground_truth'
                                      else '/sensing/lidar/points'),
        # The mission node is not on the command's path either: a starved one fell behind by
        # more than the planner's input delay (two default rides 0.2 s apart at the dropoff).
        'lockstep_mission': True,
        'reliable_sensors': True,
        'counts_file': str(out_dir / COUNTS_FILE),
    }}, 'mpc_planner': {'ros__parameters': {
        # Inputs derived from the same tick (mission status, objects) are applied 0.3 s after
        # their stamp, so every run sees them at the same cycle: the simulator waits for the
        # mission heartbeat and the prediction of each tick, and this covers their transit.
        'input_delay_s': 0.3,
        'reliable_inputs': True,
        'sync_vehicle_status': True,
        # Time deadlines depend on the machine's load; in a lock-stepped run the iteration
        # caps alone bound the solver, so the same seed gives the same plans.
        'max_cpu_time_s': 1.0, 'max_cpu_time_cold_s': 2.0, 'max_cpu_time_rescue_s': 1.0,
    }}, 'mission': {'ros__parameters': {'reliable_inputs': True, 'heartbeat': True}},
        # The gate's rate limits start from the measured state: the status of each command's
        # tick, read reliably (the first command of two runs was once 0, once -1.5 m/s^2).
        'vehicle_interface': {'ros__parameters': {'reliable_inputs': True,
                                                  'sync_vehicle_status': True}}}
    # The perception chain reads the simulator's reliable topics reliably too (a best-effort
    # reader may drop a frame under load, and the run would differ).
    for name in ('lidar_detector', 'camera_detector', 'fusion', 'tracking'):
        if name in node_names:
            params[name] = {'ros__parameters': {'reliable_inputs': True}}
    if 'fusion' in node_names:
        # Pair every cloud with the camera frame of its stamp, however long the camera node
        # takes on a loaded machine: lidar-only output would differ between runs.
        params['fusion']['ros__parameters']['camera_wait_s'] = 5.0
    path = out_dir / 'scenario.param.yaml'
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def recording_gaps(counts_file: pathlib.Path, recorded: dict[str, int]) -> list[str]:
    """Topics whose recording holds fewer messages than the simulator published."""
    try:
        published = json.loads(counts_file.read_text())['published']
    except (OSError, ValueError, KeyError) as error:
        return [f'simulator message counts unreadable ({counts_file}: {error})']
    return [f'{topic}: {recorded.get(topic, 0)} of {count} recorded'
            for topic, count in sorted(published.items())
            if topic not in _UNCHECKED_TOPICS and recorded.get(topic, 0) < count]


def _failed_result(scenario_name: str, reason: str) -> dict:
    return {'scenario': scenario_name, 'passed': False, 'failures': [reason], 'metrics': {}}


def run_scenario(scenario_file: str | os.PathLike, out_dir: str | os.PathLike, *,
                 storage: str = 'mcap') -> dict:
    """Run one scenario closed loop; returns the result.json content (also written)."""
    scenario_path = pathlib.Path(scenario_file).resolve()
    scenario = load_scenario(scenario_path)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bag_dir = out / 'bag'
    if bag_dir.exists():
        raise ScenarioRunError(f'{bag_dir} exists: bags are never overwritten; '
                               'choose a new --out directory')
    town = build_town(scenario, scenario_path.parent)
    vehicle = load_vehicle(scenario.ego.vehicle)
    nodes = load_graph(data_path('config', 'stack.yaml'))
    base_args = {'sim': 'true', 'vehicle': scenario.ego.vehicle,
                 'perception': scenario.sim.perception, 'scenario': str(scenario_path)}
    names = [s.name for s in resolve_graph(nodes, resolve_arguments(base_args), config_dir())]
    params_file = _write_params(out, scenario, names)
    args = resolve_arguments({**base_args, 'params_file': str(params_file)})
    specs = resolve_graph(nodes, args, config_dir())
    for fault in scenario.faults:
        if isinstance(fault, KillNodeFault) and fault.node not in names:
            raise ScenarioRunError(f'faults: kill_node node {fault.node!r} is not in the '
                                   f'graph {names}')

    result: dict[str, Any]
    probe = LatencyProbe()
    with open(out / 'stack.log', 'w') as log:
        runner = GraphRunner(specs, use_sim_time=True, out=log)
        try:
            failure = _run_closed_loop(runner, scenario, bag_dir, storage, probe)
        except Exception:  # report, never lose the run: result.json says what happened
            failure = 'scenario runner crashed: ' + traceback.format_exc(limit=3)
    if failure is None:
        try:
            series = evaluation.extract_series(bag_dir)
            series.latency.update(probe.pairs())
            result, extras = evaluation.evaluate(series, scenario, vehicle, town)
            evaluation.write_summary(out / 'summary.png', series, scenario, town, extras)
        except Exception:  # the bag stays; result.json says why there are no metrics
            failure = 'evaluation failed: ' + traceback.format_exc(limit=3)
    if failure is None:
        missing = recording_gaps(out / COUNTS_FILE, series.message_counts)
        if missing:
            result['passed'] = False
            result['failures'].append('recording incomplete: ' + '; '.join(missing))
        else:
            # Ticks the simulator stepped without the stack's command (slow machine): the run
            # is valid but may differ from another run of the same seed.
            counts = json.loads((out / COUNTS_FILE).read_text())
            result['metrics']['lockstep_timeouts'] = int(counts.get('lockstep_timeouts', 0))
    else:
        result = _failed_result(scenario.name, failure)
    result['output'] = {'bag': str(bag_dir), 'summary': str(out / 'summary.png'),
                        'log': str(out / 'stack.log')}
    (out / 'result.json').write_text(json.dumps(result, indent=2) + '\n')
    return result


def _run_closed_loop(runner: GraphRunner, scenario: Scenario, bag_dir: pathlib.Path,
                     storage: str, probe: LatencyProbe) -> str | None:
    """Record while the graph runs; returns a failure reason or None."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from robotaxi_stack.common.qos import clock_qos
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    from robotaxi_stack.replay.recorder import BagRecorder

    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=rclpy.SignalHandlerOptions.NO)
    node = rclpy.create_node(RECORDER_NODE, context=context, parameter_overrides=[
        Parameter('use_sim_time', value=True)])
    # The simulator publishes its sensors reliable in runner mode (see _write_params): subscribe
    # reliable with a deep history so that no frame is dropped.
    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=RUNNER_RECORD_DEPTH,
                          reliability=ReliabilityPolicy.RELIABLE)
    recorder = BagRecorder(node, bag_dir, storage=storage,
                           qos_overrides={topic: reliable for topic in SIM_SENSOR_TOPICS},
                           on_message=probe)
    sim_time = {'ns': 0}
    node.create_subscription(Clock, '/clock', lambda msg: sim_time.__setitem__(
        'ns', msg.clock.sec * 1_000_000_000 + msg.clock.nanosec), clock_qos())
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    exit_code: dict[str, int] = {}
    thread = threading.Thread(target=lambda: exit_code.setdefault('rc', runner.run()),
                              daemon=True)
    interrupted = threading.Event()
    # SIGINT and SIGTERM end the run cleanly: the bag is closed and result.json says why.
    previous = {sig: signal.signal(sig, lambda *_: interrupted.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    kills = sorted((f for f in scenario.faults if isinstance(f, KillNodeFault)),
                   key=lambda f: f.at_s)
    limit_s = STARTUP_ALLOWANCE_S + WALL_S_PER_SIM_S * scenario.duration_s
    failure = None
    try:
        thread.start()
        start = time.monotonic()
        while thread.is_alive():
            executor.spin_once(timeout_sec=0.01)
            while kills and sim_time['ns'] >= kills[0].at_s * 1e9:
                fault = kills.pop(0)
                for managed in runner.processes:
                    if managed.spec.name == fault.node:
                        managed.signal(signal.SIGKILL)
                        runner.log(f'fault: killed {fault.node} at sim {fault.at_s:.1f} s')
            if interrupted.is_set():
                failure = INTERRUPTED
                runner.stop()
                break
            if time.monotonic() - start > limit_s:
                failure = f'wall-clock limit of {limit_s:.0f} s reached'
                runner.stop()
                break
        thread.join(timeout=30.0)
        # Drain what is still queued before closing the bag.
        drain_until = time.monotonic() + 0.5
        while time.monotonic() < drain_until:
            executor.spin_once(timeout_sec=0.01)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        recorder.close()
        node.destroy_node()
        rclpy.shutdown(context=context)
    if failure is None and exit_code.get('rc', 1) != 0:
        failure = f'stack failed: {runner.failure}'
    if failure is None and sim_time['ns'] < scenario.duration_s * 1e9 * 0.999:
        failure = (f'simulator stopped at sim {sim_time["ns"] / 1e9:.1f} s of '
                   f'{scenario.duration_s:.1f} s')
    return failure
