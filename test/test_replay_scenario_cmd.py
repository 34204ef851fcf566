"""`robotaxi scenario suite`: the table, the exit code, and stopping on an interrupted run."""

from robotaxi_stack.replay import scenario_cmd
from robotaxi_stack.replay.scenario_runner import INTERRUPTED


def _suite(tmp_path, monkeypatch, outcomes):
    for name in outcomes:
        (tmp_path / f'{name}.yaml').write_text('')
    ran = []

    def run_scenario(path, out):
        ran.append(path.stem)
        failures = outcomes[path.stem]
        return {'scenario': path.stem, 'passed': not failures, 'failures': failures,
                'metrics': {'collisions': 0, 'rides_completed': 1, 'stop_error_m': [0.05]}}

    monkeypatch.setattr(scenario_cmd, 'run_scenario', run_scenario)
    code = scenario_cmd.main(['suite', str(tmp_path), '--out', str(tmp_path / 'out')])
    return code, ran


def test_suite_runs_every_scenario_and_fails_on_any_failure(tmp_path, monkeypatch, capsys):
    code, ran = _suite(tmp_path, monkeypatch, {'a': [], 'b': ['collisions: 1'], 'c': []})
    assert code == 1 and ran == ['a', 'b', 'c']
    assert '2 passed, 1 failed' in capsys.readouterr().out


def test_suite_stops_after_an_interrupted_scenario(tmp_path, monkeypatch, capsys):
    code, ran = _suite(tmp_path, monkeypatch, {'a': [INTERRUPTED], 'b': []})
    assert code == 130 and ran == ['a']
    assert 'interrupted' in capsys.readouterr().err
