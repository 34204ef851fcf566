"""Stack graph resolution, the process runner, and the launch file against launch_ros' API."""

import ast
import importlib.util
import io
import pathlib
import sys
import textwrap
import types

import pytest

from robotaxi_stack.bringup import graph
from robotaxi_stack.bringup.bringup_cmd import main as bringup_main, parse_launch_arguments
from robotaxi_stack.bringup.executables import NODE_EXECUTABLES
from robotaxi_stack.bringup.process_runner import GraphRunner, node_argv

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write(tmp_path, text, name='stack.yaml'):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_graph_resolves_for_sim_and_vehicle():
    nodes = graph.load_graph(ROOT / 'config' / 'stack.yaml')
    for sim in ('true', 'false'):
        args = graph.resolve_arguments({'sim': sim})
        specs = graph.resolve_graph(nodes, args, ROOT / 'config')
        assert specs and all(s.module == NODE_EXECUTABLES[s.executable] for s in specs)
        assert all(pathlib.Path(p).is_file() for s in specs for p in s.param_files)


def test_every_executable_module_has_a_main():
    for module in NODE_EXECUTABLES.values():
        path = ROOT / 'src' / (module.replace('.', '/') + '.py')
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == 'main' for n in tree.body), module


def test_launch_arguments_resolve_defaults_and_reject_bad_values():
    args = graph.resolve_arguments({'sim': 'false'})
    assert args['use_sim_time'] == 'false' and args['vehicle'] == 'bmw_320i'
    with pytest.raises(graph.GraphError, match="unknown launch argument"):
        graph.resolve_arguments({'simm': 'true'})
    with pytest.raises(graph.GraphError, match='expected true or false'):
        graph.resolve_arguments({'sim': 'maybe'})
    with pytest.raises(graph.GraphError, match='log_level'):
        graph.resolve_arguments({'log_level': 'loud'})
    assert parse_launch_arguments(['sim:=false', 'vehicle:=a']) == {'sim': 'false', 'vehicle': 'a'}
    with pytest.raises(graph.GraphError, match='name:=value'):
        parse_launch_arguments(['sim=false'])


@pytest.mark.parametrize('body, message', [
    ('format: other/1\nnodes: []\n', 'format'),
    ('format: robotaxi-stack/1\nnodes: []\n', 'non-empty list'),
    ('format: robotaxi-stack/1\nnodes:\n  - {name: a, executable: nope_node}\n', 'executable'),
    ('format: robotaxi-stack/1\nnodes:\n  - {name: a, executable: health_monitor_node, colour: red}\n',
     "unknown key(s) ['colour']"),
    ('format: robotaxi-stack/1\nnodes:\n  - {name: a, executable: health_monitor_node}\n'
     '  - {name: a, executable: health_monitor_node}\n', 'duplicate'),
    ('format: robotaxi-stack/1\nnodes:\n  - {name: a, executable: health_monitor_node,'
     ' when: {perception: [ground_truth, lidar_camera]}}\n'
     '  - {name: a, executable: health_monitor_node, when: {perception: ground_truth}}\n',
     'duplicate'),
    ('format: robotaxi-stack/1\nnodes:\n  - {name: a, executable: health_monitor_node,'
     ' respawn_delay_s: -1}\n', 'respawn_delay_s'),
    ('format: robotaxi-stack/1\nnodes:\n  - {name: a, executable: health_monitor_node,'
     ' when: {weather: rain}}\n', 'unknown launch argument'),
    ('format: [unclosed\n', 'cannot read'),
])
def test_malformed_graph_errors_name_the_key(tmp_path, body, message):
    with pytest.raises(graph.GraphError) as error:
        graph.load_graph(write(tmp_path, body))
    assert message in str(error.value)


def test_when_conditions_select_nodes_and_params_are_passed(tmp_path):
    (tmp_path / 'hm.yaml').write_text('/**:\n  ros__parameters: {stale_timeout_s: 2.0}\n')
    path = write(tmp_path, '''\
        format: robotaxi-stack/1
        nodes:
          - {name: a, executable: health_monitor_node, params: [hm.yaml], when: {sim: true},
             pass_args: [vehicle], remaps: {~/output/health: /system/health}}
          - {name: b, executable: health_monitor_node, when: {sim: false}}
        ''')
    nodes = graph.load_graph(path)
    specs = graph.resolve_graph(nodes, graph.resolve_arguments({'vehicle': 'ford_escort'}),
                                tmp_path)
    assert [s.name for s in specs] == ['a']
    argv = specs[0].ros_arguments(use_sim_time=True, log_level='warn')
    assert argv[:3] == ['--ros-args', '-r', '__node:=a']
    assert 'use_sim_time:=true' in argv and 'vehicle:=ford_escort' in argv
    assert '~/output/health:=/system/health' in argv and str(tmp_path / 'hm.yaml') in argv
    with pytest.raises(graph.GraphError, match='not found'):
        graph.resolve_graph(nodes, graph.resolve_arguments({'sim': 'false',
                                                            'params_file': '/nope.yaml'}),
                            tmp_path)


def _runner(specs, out, argv_for=None):
    return GraphRunner(specs, use_sim_time=False, log_level='info', out=out, argv_for=argv_for)


def test_runner_starts_real_node_prefixes_logs_and_stops_cleanly(tmp_path):
    specs = graph.resolve_graph(graph.load_graph(ROOT / 'config' / 'stack.yaml'),
                                graph.resolve_arguments({'sim': 'false'}), ROOT / 'config')
    out = io.StringIO()
    runner = _runner(specs, out)
    assert runner.run(duration_s=4.0) == 0, out.getvalue()[-3000:]
    assert runner.failure is None
    assert '[bringup] starting health_monitor' in out.getvalue()
    assert all(m.poll() is not None for m in runner.processes)  # nothing left running


def test_runner_names_the_node_that_failed_to_start(tmp_path):
    (tmp_path / 'bad.yaml').write_text('/**:\n  ros__parameters: {stale_timeout_s: 500.0}\n')
    path = write(tmp_path, '''\
        format: robotaxi-stack/1
        nodes:
          - {name: good, executable: health_monitor_node}
          - {name: broken, executable: health_monitor_node, params: [bad.yaml]}
        ''')
    specs = graph.resolve_graph(graph.load_graph(path), graph.resolve_arguments({}), tmp_path)
    out = io.StringIO()
    runner = _runner(specs, out)
    assert runner.run(duration_s=20.0) == 1
    assert runner.failure == "node 'broken' failed to start (exit code 2)"
    assert "[broken] health_monitor: broken: parameter 'stale_timeout_s' = 500.0" in out.getvalue()


def test_runner_respawns_crashed_node_and_stops_on_required_exit(tmp_path):
    # A node that lives 3.5 s and exits 1: the respawn policy restarts it; a required one stops
    # the graph. A tiny Python child stands in for a crashing node process.
    crash = [sys.executable, '-c', 'import time, sys; print("up", flush=True); '
             'time.sleep(3.5); sys.exit(1)']
    spec = graph.NodeSpec(name='crashy', executable='health_monitor_node', module='x',
                          param_files=(), remaps=(), respawn=True, respawn_delay_s=0.2,
                          required=False)
    out = io.StringIO()
    runner = _runner([spec], out, argv_for=lambda s: crash)
    assert runner.run(duration_s=8.0) == 0
    assert runner.processes[0].restarts >= 1 and 'respawning' in out.getvalue()
    assert out.getvalue().count('[crashy] up') >= 2
    required = spec.__class__(**{**spec.__dict__, 'respawn': False, 'required': True})
    runner = _runner([required], io.StringIO(), argv_for=lambda s: crash)
    assert runner.run(duration_s=10.0) == 1
    assert runner.failure == "required node 'crashy' exited with code 1"


def test_node_argv_runs_module_with_this_interpreter():
    spec = graph.NodeSpec(name='n', executable='health_monitor_node', module='m.n',
                          param_files=(), remaps=(), respawn=False, respawn_delay_s=1.0,
                          required=False)
    assert node_argv(spec, True, 'info')[:3] == [sys.executable, '-m', 'm.n']


def test_bringup_cli_reports_bad_arguments(capsys):
    assert bringup_main(['sim:=perhaps']) == 2
    assert 'expected true or false' in capsys.readouterr().err
    assert bringup_main(['--dry-run', 'sim:=false']) == 0
    assert '__node:=health_monitor' in capsys.readouterr().out


class _Recorder:
    """Records constructor arguments, standing in for launch/launch_ros classes."""

    instances: list = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        _Recorder.instances.append(self)


def test_launch_file_builds_launch_ros_nodes_from_the_graph(monkeypatch):
    # launch and launch_ros are not installable from PyPI (ENVIRONMENT.md): this test runs the
    # launch file against recorders with their API names and checks every argument it passes
    # exists in launch_ros.actions.Node's signature (Humble..Kilted).
    node_kwargs = {'executable', 'package', 'name', 'namespace', 'exec_name', 'parameters',
                   'remappings', 'ros_arguments', 'arguments', 'respawn', 'respawn_delay',
                   'output', 'emulate_tty', 'condition'}
    modules = {}
    for name in ('launch', 'launch.actions', 'launch.substitutions', 'launch_ros',
                 'launch_ros.actions'):
        modules[name] = types.ModuleType(name)
    recorder = type('Node', (_Recorder,), {})
    modules['launch'].LaunchDescription = lambda actions: list(actions)
    modules['launch.actions'].DeclareLaunchArgument = type('DeclareLaunchArgument', (_Recorder,), {})
    modules['launch.actions'].OpaqueFunction = type('OpaqueFunction', (_Recorder,), {})
    values = {'sim': 'true', 'vehicle': 'bmw_320i', 'params_file': '', 'log_level': 'warn',
              'use_sim_time': '', 'perception': 'ground_truth', 'scenario': ''}

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return values[self.name]

    modules['launch.substitutions'].LaunchConfiguration = LaunchConfiguration
    modules['launch_ros.actions'].Node = recorder
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('robotaxi_launch',
                                                  ROOT / 'launch' / 'robotaxi.launch.py')
    launch_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_module)
    monkeypatch.setattr(launch_module, 'get_package_share_directory', lambda _: str(ROOT))
    description = launch_module.generate_launch_description()
    declared = [a.kwargs['default_value'] for a in description[:-1]]
    assert [a.args[0] for a in description[:-1]] == list(graph.LAUNCH_ARGUMENTS)
    assert declared[0] == 'true'
    nodes = description[-1].kwargs['function'](context=None)
    expected = graph.resolve_graph(graph.load_graph(ROOT / 'config' / 'stack.yaml'),
                                   graph.resolve_arguments(values), ROOT / 'config')
    assert [n.kwargs['name'] for n in nodes] == [s.name for s in expected]
    for node, spec_ in zip(nodes, expected):
        assert set(node.kwargs) <= node_kwargs
        assert node.kwargs['package'] == 'robotaxi_stack'
        assert node.kwargs['executable'] == spec_.executable
        assert {'use_sim_time': True} in node.kwargs['parameters']
        assert node.kwargs['ros_arguments'] == ['--log-level', 'warn']


def test_empty_launch_argument_is_not_passed_as_a_parameter():
    # rcl cannot parse `-p scenario:=` (no value): an empty argument leaves the node default.
    nodes = graph.load_graph(ROOT / 'config' / 'stack.yaml')
    empty = {s.name: dict(s.parameters) for s in graph.resolve_graph(
        nodes, graph.resolve_arguments({'sim': 'false'}), ROOT / 'config')}
    assert 'scenario' not in empty['mpc_planner'] and empty['mpc_planner']['vehicle']
    given = {s.name: dict(s.parameters) for s in graph.resolve_graph(
        nodes, graph.resolve_arguments({'sim': 'false', 'scenario': '/x.yaml'}),
        ROOT / 'config')}
    assert given['mpc_planner']['scenario'] == '/x.yaml'


def test_one_node_name_in_exclusive_variants_resolves_to_one_node(tmp_path):
    path = write(tmp_path, 'format: robotaxi-stack/1\nnodes:\n'
                 '  - {name: a, executable: health_monitor_node, when: {perception: ground_truth},'
                 ' remaps: {~/input/x: /ground_truth}}\n'
                 '  - {name: a, executable: health_monitor_node, when: {perception: lidar_camera},'
                 ' remaps: {~/input/x: /tracked}}\n')
    nodes = graph.load_graph(path)
    for perception, topic in (('ground_truth', '/ground_truth'), ('lidar_camera', '/tracked')):
        args = graph.resolve_arguments({'perception': perception})
        specs = graph.resolve_graph(nodes, args, tmp_path)
        assert [(s.name, s.remaps) for s in specs] == [('a', (('~/input/x', topic),))]


def test_share_dir_without_an_ament_environment_falls_back_to_the_checkout(monkeypatch):
    from robotaxi_stack.common import paths
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    paths.share_dir.cache_clear()
    try:
        assert paths.share_dir() == paths.SOURCE_ROOT
        assert (paths.share_dir() / 'config' / 'stack.yaml').is_file()
    finally:
        paths.share_dir.cache_clear()
