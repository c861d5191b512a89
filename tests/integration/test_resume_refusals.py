"""`fedsim run --resume` refuses what it cannot continue byte-identically (no Ray: the run folder
is written by the real Recorder, and the refusals come before any simulation starts).

Refused after a complete training round: DP-SGD (the accountant is not recorded), float16
records (rounded), every strategy that keeps state between rounds, an edited config.yaml.
A run with no complete training round has nothing to lose: it is continued (the simulation is
replaced below by a function that records what it was handed, and only there).
"""

from __future__ import annotations

import pytest
import torch

import fedsim.app.experiment as experiment
from conftest import small_config
from fedsim.app.experiment import resume_experiment
from fedsim.core.errors import FedsimError
from fedsim.learning.datasets import pool_for
from fedsim.learning.membership import build_ledger, save_ledger
from fedsim.learning.models import model_for
from fedsim.recording.recorder import Recorder
from helpers import STRATEGY_ARGS as ARGS
from strategies import STRATEGIES

STATEFUL = sorted(name for name, spec in STRATEGIES.items() if not spec.resumable)
DP_SGD = "defense.dp_sgd={noise_multiplier: 1.0, max_grad_norm: 1.0}"


def interrupted(folder, *overrides: str, rounds: int = 1):
    """A run folder left 'running' after `rounds` complete rounds (-1: not even round 0)."""
    config = small_config("train.rounds=3", *overrides)
    ledger = build_ledger(config, pool_for(config.data))
    recorder = Recorder(folder, config)
    recorder.start(lambda where: save_ledger(ledger, where))
    torch.manual_seed(1)
    states = [model_for(config).state_dict() for _ in range(3)]
    for r in range(rounds + 1):
        recorder.record_round(r, states[r], {0: (states[(r + 1) % 3], 60)} if r else {})
    return states


@pytest.fixture
def handed(monkeypatch):
    """What resume_experiment hands the simulation, instead of simulating."""
    seen = {}

    def carry_out(recorder, ledger, model, strategy, resumed, console, notes=()):
        seen.update(recorder=recorder, model=model, strategy=strategy, resumed=resumed)
        return recorder.folder

    monkeypatch.setattr(experiment, "_carry_out", carry_out)
    return seen


def _refused(folder, fragment: str) -> str:
    with pytest.raises(FedsimError) as error:
        resume_experiment(folder)
    message = str(error.value)
    assert fragment in message and "\n" not in message, message
    return message


def test_a_dp_sgd_run_is_refused(tmp_path, handed):
    interrupted(tmp_path / "run", DP_SGD)
    _refused(tmp_path / "run", "DP-SGD clients keep their privacy accountant")
    assert not handed


def test_float16_records_are_refused(tmp_path, handed):
    interrupted(tmp_path / "run", "record.dtype=float16")
    _refused(tmp_path / "run", "records float16 (rounded) parameters")
    assert not handed


@pytest.mark.parametrize("name", STATEFUL)
def test_each_stateful_strategy_is_refused(tmp_path, handed, name):
    args = ARGS.get(name, {})
    interrupted(tmp_path / "run", f"strategy.name={name}", f"strategy.args={args}".replace("'", ""))
    message = _refused(tmp_path / "run", f"strategy {name} keeps state between rounds")
    assert "fedavg" in message and not handed


def test_an_edited_config_is_refused(tmp_path, handed):
    interrupted(tmp_path / "run")
    path = tmp_path / "run" / "config.yaml"
    path.write_text(path.read_text().replace("seed: 0", "seed: 1"))
    _refused(tmp_path / "run", "config.yaml does not match the manifest's config_sha256")
    assert not handed


@pytest.mark.parametrize("overrides", [[], [DP_SGD], ["record.dtype=float16"], ["strategy.name=fedadam"]])
@pytest.mark.parametrize("rounds", [-1, 0])
def test_a_run_with_no_complete_training_round_is_continued(tmp_path, handed, overrides, rounds):
    states = interrupted(tmp_path / "run", *overrides, rounds=rounds)
    assert resume_experiment(tmp_path / "run") == tmp_path / "run"
    if rounds == 0:  # from the recorded initial model
        assert handed["resumed"] is not None and handed["resumed"].rounds == [0]
        rounded = "record.dtype=float16" in overrides  # float16 records load as the rounded model
        expected = {k: v.half().float() if rounded else v for k, v in states[0].items()}
        assert all(torch.equal(handed["model"].state_dict()[k], v) for k, v in expected.items())
    else:  # from scratch, as `fedsim run` would start it
        assert handed["resumed"] is None
        torch.manual_seed(handed["recorder"].config.seed)
        fresh = model_for(handed["recorder"].config).state_dict()
        assert all(torch.equal(handed["model"].state_dict()[k], v) for k, v in fresh.items())


def test_a_resumable_run_is_continued_from_its_last_complete_round(tmp_path, handed):
    states = interrupted(tmp_path / "run", rounds=2)
    resume_experiment(tmp_path / "run")
    assert handed["resumed"].rounds == [0, 1, 2] and handed["recorder"].manifest.status == "running"
    assert all(torch.equal(handed["model"].state_dict()[k], v) for k, v in states[2].items())
