"""`robotaxi`: the command line for people (bringup, scenario, replay, record, eval, bench).

Each subcommand lives in its own module and is imported only when used, so `robotaxi
bringup` does not pay for the simulator's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, function taking argv and returning an exit code, help)
SUBCOMMANDS = {
    'bringup': ('robotaxi_stack.bringup.bringup_cmd', 'main',
                'start the stack graph as processes (arg:=value launch arguments)'),
    'scenario': ('robotaxi_stack.replay.scenario_cmd', 'main',
                 'run a closed-loop scenario (run FILE --out DIR) or a suite (suite DIR)'),
    'replay': ('robotaxi_stack.replay.player', 'main_replay', 'play a rosbag2 bag'),
    'record': ('robotaxi_stack.replay.recorder', 'main_record', 'record topics to a bag'),
    'eval': ('robotaxi_stack.replay.eval_cmd', 'main', 'compute result metrics from a bag'),
    'bench': ('robotaxi_stack.bringup.bench_cmd', 'main', 'run the benchmarks in bench/'),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog='robotaxi', description='robotaxi_stack command line',
        epilog='\n'.join(f'  {name:10s} {help_}' for name, (_, _, help_) in SUBCOMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('command', choices=sorted(SUBCOMMANDS), metavar='COMMAND')
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        return 0 if argv else 2
    args = parser.parse_args(argv[:1])
    module_name, function_name, _ = SUBCOMMANDS[args.command]
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(argv[1:]) or 0)


if __name__ == '__main__':
    sys.exit(main())
