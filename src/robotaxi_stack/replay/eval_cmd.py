"""`robotaxi eval BAG --scenario FILE`: result.json metrics recomputed from a recording.

For bags recorded by `robotaxi scenario run` (or any bag with the contract topics) and the
scenario they ran: re-evaluates without re-running, e.g. after a metrics change. End-to-end
latency is taken from the bag's receive times here (sim time in runner bags), so it is only
meaningful for bags recorded on wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from robotaxi_stack.replay import evaluation
from robotaxi_stack.replay.bag_io import BagError
from robotaxi_stack.replay.metrics import MetricsError
from robotaxi_stack.sim.scenario import ScenarioError, load_scenario
from robotaxi_stack.sim.vehicle_dynamics import load_vehicle
from robotaxi_stack.sim.maps import MapError
from robotaxi_stack.sim.world import build_town


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='robotaxi eval', description=__doc__.splitlines()[0])
    parser.add_argument('bag', help='rosbag2 directory')
    parser.add_argument('--scenario', required=True, help='the scenario YAML the bag ran')
    parser.add_argument('--out', help='write result JSON here (default: print it)')
    parser.add_argument('--summary', help='also draw summary.png here')
    options = parser.parse_args(argv)
    try:
        path = pathlib.Path(options.scenario)
        scenario = load_scenario(path)
        series = evaluation.extract_series(options.bag)
        # Latency pairs need one clock for receive time and stamp: drop the bag's if they
        # contradict each other rather than fail the evaluation of everything else.
        for topic, pairs in series.latency.items():
            series.latency[topic] = [(r, s) for r, s in pairs if r >= s]
        town = build_town(scenario, path.resolve().parent)
        result, extras = evaluation.evaluate(series, scenario, load_vehicle(scenario.ego.vehicle),
                                             town)
        if options.summary:
            evaluation.write_summary(options.summary, series, scenario, town, extras)
    except (ScenarioError, MapError, BagError, MetricsError, evaluation.EvaluationError,
            OSError) as error:
        print(f'robotaxi eval: {error}', file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2) + '\n'
    if options.out:
        pathlib.Path(options.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0 if result['passed'] else 1
