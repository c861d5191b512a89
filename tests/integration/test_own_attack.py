"""A user's own attack, named by import path in `attacks:`, runs end to end through `fedsim run`
and `fedsim attack`, beside the built-in attacks, on a small in-process run.

The user's attack computes each record's cross-entropy on the last observed snapshot itself (with
torch, from `observation.model` and `observation.load_records`); its AUC must equal the built-in
`loss` attack's in every round, and its argument `flip` must reach it (AUC 1 - loss's).
"""

from __future__ import annotations

import textwrap

import pandas as pd

from conftest import SMALL
from fedsim import Run
from fedsim.app.cli import main

USER_MODULE = "own_attack_e2e"
USER_ATTACK = '''
import torch
from pydantic import Field

from attackers.inference.base import AttackParams, MembershipInferenceAttack


class LossAgainParams(AttackParams):
    flip: bool = Field(False, description="score the loss itself (members score low) instead of minus the loss")


class LossAgain(MembershipInferenceAttack):
    """Minus each record's cross-entropy on the last observed snapshot."""

    Params = LossAgainParams
    deterministic = True

    def fit(self, observation, ids, members):
        return self  # no threshold of its own: the targets' median

    def score(self, observation, ids):
        x, y = observation.load_records(ids)
        with torch.no_grad():
            logits = observation.model(observation.rounds[-1])(x)
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="none").double().numpy()
        return loss if self.params.flip else -loss
'''
PATH = f"{USER_MODULE}:LossAgain"


def test_a_users_attack_runs_through_fedsim_run_and_fedsim_attack(tmp_path, monkeypatch, capsys):
    code_folder = tmp_path / "code"
    code_folder.mkdir()
    (code_folder / f"{USER_MODULE}.py").write_text(textwrap.dedent(USER_ATTACK))
    monkeypatch.syspath_prepend(str(code_folder))
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), "--quiet", *[f"--set={s}" for s in SMALL], f"--set=attacks=[loss, {PATH}]"]) == 0
    run = Run.open(out)
    assert run.status == "complete" and [a if isinstance(a, str) else a.name for a in run.config.attacks] == ["loss", PATH]
    rows = pd.read_csv(out / "metrics" / "leakage.csv")
    loss = rows[rows["attack"] == "loss"].set_index("round")
    own = rows[rows["attack"] == PATH].set_index("round")
    assert list(own.index) == list(loss.index) == [1, 2]
    assert (own["n_seeds"] == 1).all()  # it declared itself deterministic: one fit stands for every attack seed
    pd.testing.assert_series_equal(own["auc"], loss["auc"], atol=1e-6)
    assert loss["auc"].nunique() == 2  # the rounds differ, so a wrong snapshot could not pass

    table = tmp_path / "flipped.csv"
    capsys.readouterr()
    assert main(["attack", str(out), "--attack", f"{{name: '{PATH}', args: {{flip: true}}}}", "--out", str(table)]) == 0
    flipped = pd.read_csv(table).set_index("round")
    assert list(flipped["attack"].unique()) == [PATH]
    pd.testing.assert_series_equal(flipped["auc"], 1 - loss["auc"], atol=1e-6)
