"""`robotaxi scenario run FILE --out DIR` and `robotaxi scenario suite DIR`."""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

from robotaxi_stack.bringup.graph import GraphError
from robotaxi_stack.replay.scenario_runner import INTERRUPTED, ScenarioRunError, run_scenario
from robotaxi_stack.sim.maps import MapError
from robotaxi_stack.sim.scenario import ScenarioError

_EXPECTED_ERRORS = (ScenarioError, ScenarioRunError, GraphError, MapError, OSError)


def _run_one(path: pathlib.Path, out: pathlib.Path) -> tuple[dict | None, float, str]:
    start = time.monotonic()
    try:
        result = run_scenario(path, out)
    except _EXPECTED_ERRORS as error:
        return None, time.monotonic() - start, f'{path}: {error}'
    return result, time.monotonic() - start, ''


def _format_metrics(result: dict) -> str:
    metrics = result.get('metrics', {})
    stops = metrics.get('stop_error_m') or []
    return (f"collisions={metrics.get('collisions', '-')} "
            f"rides={metrics.get('rides_completed', '-')} "
            f"stop_err_max={max(stops):.2f}m " if stops else
            f"collisions={metrics.get('collisions', '-')} "
            f"rides={metrics.get('rides_completed', '-')} ")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='robotaxi scenario')
    sub = parser.add_subparsers(dest='action', required=True)
    run = sub.add_parser('run', help='run one scenario closed loop')
    run.add_argument('file')
    run.add_argument('--out', required=True, help='output directory (result.json, bag/, ...)')
    suite = sub.add_parser('suite', help='run every *.yaml of a directory, print a table')
    suite.add_argument('directory')
    suite.add_argument('--out', default='out/suite')
    options = parser.parse_args(argv)

    if options.action == 'run':
        result, wall_s, error = _run_one(pathlib.Path(options.file), pathlib.Path(options.out))
        if result is None:
            print(f'robotaxi scenario: {error}', file=sys.stderr)
            return 2
        out = pathlib.Path(options.out)
        print(f"scenario {result['scenario']}: {'PASSED' if result['passed'] else 'FAILED'} "
              f"in {wall_s:.1f} s wall")
        for failure in result['failures']:
            print(f'  - {failure}')
        print(f'result:  {out / "result.json"}\nsummary: {out / "summary.png"}\n'
              f'bag:     {out / "bag"}\nlog:     {out / "stack.log"}')
        return 0 if result['passed'] else 1

    files = sorted(pathlib.Path(options.directory).glob('*.yaml'))
    if not files:
        print(f'robotaxi scenario suite: no *.yaml in {options.directory}', file=sys.stderr)
        return 2
    rows, all_passed = [], True
    for path in files:
        result, wall_s, error = _run_one(path, pathlib.Path(options.out) / path.stem)
        passed = bool(result and result['passed'])
        all_passed &= passed
        detail = error or ('; '.join(result['failures']) if result['failures'] else
                           _format_metrics(result))
        rows.append((path.stem, 'PASS' if passed else 'FAIL', f'{wall_s:.0f}s', detail))
        print(f'{rows[-1][0]:40s} {rows[-1][1]:5s} {rows[-1][2]:>6s}  {detail}', flush=True)
        if result and INTERRUPTED in result['failures']:
            print('robotaxi scenario suite: interrupted; remaining scenarios not run',
                  file=sys.stderr)
            return 130
    print(f'{sum(r[1] == "PASS" for r in rows)} passed, {sum(r[1] == "FAIL" for r in rows)} '
          'failed')
    return 0 if all_passed else 1
