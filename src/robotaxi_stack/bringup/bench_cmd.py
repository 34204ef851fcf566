"""`robotaxi bench [NAME ...] [--quick]`: run the benchmarks of bench/ and collect their JSON.

Each benchmark prints one JSON object as its last stdout line (ARCHITECTURE.md section 8);
this command runs them with this interpreter, prints each result line and exits non-zero if
one fails or prints no JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from robotaxi_stack.common.paths import data_path


def _bench_dir() -> pathlib.Path:
    # Benchmarks live in the source tree (they are not installed): next to config/.
    candidates = [pathlib.Path.cwd() / 'bench', data_path().parent / 'bench']
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError('no bench/ directory here; run from the repository root')


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog='robotaxi bench')
    parser.add_argument('names', nargs='*', help='benchmark names (default: all)')
    parser.add_argument('--quick', action='store_true', help='short runs')
    options = parser.parse_args(argv)
    try:
        folder = _bench_dir()
    except FileNotFoundError as error:
        print(f'robotaxi bench: {error}', file=sys.stderr)
        return 2
    scripts = sorted(folder.glob('*.py'))
    if options.names:
        scripts = [s for s in scripts if s.stem in options.names]
        missing = set(options.names) - {s.stem for s in scripts}
        if missing:
            print(f'robotaxi bench: unknown benchmark(s) {sorted(missing)}', file=sys.stderr)
            return 2
    failed = 0
    for script in scripts:
        args = [sys.executable, str(script)] + (['--quick'] if options.quick else [])
        run = subprocess.run(args, capture_output=True, text=True, check=False)
        lines = run.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1]) if lines else None
        except ValueError:
            result = None
        if run.returncode != 0 or not isinstance(result, dict):
            failed += 1
            print(f'{script.stem}: FAILED (exit {run.returncode})\n{run.stderr[-2000:]}',
                  file=sys.stderr)
            continue
        print(json.dumps(result), flush=True)
    return 1 if failed else 0
