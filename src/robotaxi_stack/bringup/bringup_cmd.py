"""`robotaxi bringup [name:=value ...]`: the launch file's graph as OS processes."""

from __future__ import annotations

import argparse
import sys

from robotaxi_stack.bringup.graph import (LAUNCH_ARGUMENTS, GraphError, load_graph, parse_bool,
                                          resolve_arguments, resolve_graph)
from robotaxi_stack.bringup.process_runner import GraphRunner
from robotaxi_stack.common.paths import config_dir, data_path


def parse_launch_arguments(items: list[str]) -> dict[str, str]:
    """['sim:=false', ...] -> {'sim': 'false'}; the `ros2 launch` argument syntax."""
    result = {}
    for item in items:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            raise GraphError(f'launch argument {item!r}: expected name:=value')
        result[name] = value
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog='robotaxi bringup', description='Start the stack graph (config/stack.yaml).',
        epilog='launch arguments: ' + ', '.join(
            f'{n}:= ({d or "empty"}) {h}' for n, (d, h) in LAUNCH_ARGUMENTS.items()))
    parser.add_argument('arguments', nargs='*', help='launch arguments name:=value')
    parser.add_argument('--graph', default=None, help='stack description (default: stack.yaml)')
    parser.add_argument('--duration', type=float, default=None,
                        help='stop after this many seconds (default: run until Ctrl-C)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the node command lines and exit')
    options = parser.parse_args(argv)
    try:
        args = resolve_arguments(parse_launch_arguments(options.arguments))
        nodes = load_graph(options.graph or data_path('config', 'stack.yaml'))
        specs = resolve_graph(nodes, args, config_dir())
    except GraphError as error:
        print(f'robotaxi bringup: {error}', file=sys.stderr)
        return 2
    use_sim_time = parse_bool('use_sim_time', args['use_sim_time'])
    if options.dry_run:
        for spec in specs:
            print(spec.name, ' '.join(spec.ros_arguments(use_sim_time, args['log_level'])))
        return 0
    runner = GraphRunner(specs, use_sim_time=use_sim_time, log_level=args['log_level'])
    return runner.run(duration_s=options.duration)
