"""`observe_rounds`/`observe_every` and `fedsim attack RUN --rounds ... --attack ...` give exactly the
leakage rows asked for: no more, no fewer, each on the snapshots it names (no Ray: the run folder is
written by the real Recorder with a distinct model per client and round, then attacked by the command).

A single-round attack (loss) gets a row at every asked round, on that round's snapshot; a
multi-round attack (trajectory) gets a row only at the rounds `observe_rounds` keeps, combining
the kept snapshots up to it. Each row's AUC is recomputed here, independently of the row
selection: the loss AUC from the recorded state dict with torch and scikit-learn, the trajectory
AUC from the attack fitted on an Observation built here from the recorded states of the kept rounds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from attackers.inference.base import attack_seed_sequence
from attackers.inference.observation import Observation
from attackers.inference.registry import make_attack
from attackers.inference.threat_models import attacker_view
from conftest import small_config
from fedsim import Run
from fedsim.app.cli import main
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import build_ledger, save_ledger
from fedsim.learning.models import build_model
from fedsim.recording.recorder import Recorder
from fedsim.stats.metrics import leakage

ROUNDS, CLIENTS, VICTIM = 4, 3, 1


def recorded(folder, *overrides):
    """A complete 4-round run of 3 clients (server attacks client 1); states[r][c]: what client c sent in round r."""
    config = small_config(f"data.num_clients={CLIENTS}", f"train.rounds={ROUNDS}", f"adversary.victim={VICTIM}",
                          "attacks=[loss, trajectory]", *overrides)
    ledger = build_ledger(config, load_pool("digits", None))
    recorder = Recorder(folder, config)
    recorder.start(lambda where: save_ledger(ledger, where))
    torch.manual_seed(0)

    def state():
        return build_model("fcn", (64,), 10, config.model.args).state_dict()

    recorder.record_round(0, state())
    states = {r: [state() for _ in range(CLIENTS)] for r in range(1, ROUNDS + 1)}
    for r in range(1, ROUNDS + 1):
        recorder.record_round(r, state(), {c: (states[r][c], 60) for c in range(CLIENTS)})
    recorder.finish("complete")
    return Run.open(folder), states


def module(config, state):
    model = build_model("fcn", (64,), 10, config.model.args)
    model.load_state_dict(state)
    return model.eval()


def loss_auc(run, state) -> float:
    """AUC of minus the cross-entropy of the recorded state on the targets, computed here."""
    view = attacker_view(run)
    x, y = run.pool.take(view.eval_ids)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(module(run.config, state)(x), y, reduction="none")
    return float(roc_auc_score(view.eval_members, -loss.numpy()))


def trajectory_auc(run, states, kept: list[int]) -> float:
    """The trajectory attack fitted on an Observation built here from the recorded states of `kept`."""
    view = attacker_view(run)
    observation = Observation(kept, lambda r: module(run.config, states[r][VICTIM]), run.pool.take,
                              reference_models=lambda r: [module(run.config, states[r][c]) for c in range(CLIENTS) if c != VICTIM])
    attack = make_attack("trajectory", attack_seed_sequence(run.config.seed, "trajectory", kept[-1], 0))
    attack.fit(observation, view.train_ids, view.train_members)
    return leakage(attack.score(observation, view.eval_ids), view.eval_members, attack.threshold).auc


def attack_rows(run, tmp_path, capsys, *argv: str) -> pd.DataFrame:
    """`fedsim attack RUN argv...`: the rows it prints, checked equal to the rows it writes with --out."""
    out = tmp_path / "rows.csv"
    assert main(["attack", str(run.folder), *argv, "--out", str(out)]) == 0
    written = pd.read_csv(out)
    printed = capsys.readouterr().out
    assert printed == written.to_csv(index=False)
    return written


def keys(rows: pd.DataFrame) -> list[tuple[int, str, str]]:
    return [(int(r), a, str(o)) for r, a, o in zip(rows["round"], rows["attack"], rows["observed_rounds"])]


@pytest.mark.parametrize(("overrides", "kept"), [(["observe_rounds=[1, 3]"], [1, 3]), (["observe_every=2"], [2, 4]), ([], [1, 2, 3, 4])])
def test_every_round_for_single_round_attacks_and_only_the_kept_rounds_for_multi_round_ones(tmp_path, capsys, overrides, kept):
    run, states = recorded(tmp_path / "run", *overrides)
    rows = attack_rows(run, tmp_path, capsys)
    expected = sorted([(r, "loss", str(r)) for r in range(1, ROUNDS + 1)]
                      + [(r, "trajectory", ";".join(str(k) for k in kept if k <= r)) for r in kept])
    assert sorted(keys(rows)) == expected
    aucs = {r: loss_auc(run, states[r][VICTIM]) for r in range(1, ROUNDS + 1)}
    assert len({round(a, 6) for a in aucs.values()}) == ROUNDS  # distinct per round: the wrong snapshot cannot pass
    for row in rows.itertuples():
        if row.attack == "loss":
            assert row.auc == pytest.approx(aucs[row.round], abs=1e-6), row
        else:
            assert row.auc == pytest.approx(trajectory_auc(run, states, [k for k in kept if k <= row.round]), abs=1e-6), row


def test_fedsim_attack_gives_exactly_the_asked_rounds_and_attacks(tmp_path, capsys):
    run, states = recorded(tmp_path / "run", "observe_rounds=[1, 3]")
    rows = attack_rows(run, tmp_path, capsys, "--rounds", "2,3", "--attack", "trajectory", "--attack", "loss")
    # round 2 is not kept by observe_rounds: trajectory observed nothing new there, so it has no row
    assert sorted(keys(rows)) == [(2, "loss", "2"), (3, "loss", "3"), (3, "trajectory", "1;3")]
    by_key = rows.set_index(["round", "attack"])["auc"]
    assert by_key[2, "loss"] == pytest.approx(loss_auc(run, states[2][VICTIM]), abs=1e-6)
    assert by_key[3, "loss"] == pytest.approx(loss_auc(run, states[3][VICTIM]), abs=1e-6)
    assert by_key[3, "trajectory"] == pytest.approx(trajectory_auc(run, states, [1, 3]), abs=1e-6)
    assert trajectory_auc(run, states, [1, 3]) != pytest.approx(trajectory_auc(run, states, [1, 2, 3]), abs=1e-6)

    only_loss = attack_rows(run, tmp_path, capsys, "--rounds", "4", "--attack", "loss")
    assert keys(only_loss) == [(4, "loss", "4")]
    assert only_loss["auc"].iloc[0] == pytest.approx(loss_auc(run, states[4][VICTIM]), abs=1e-6)
    assert attack_rows(run, tmp_path, capsys, "--rounds", "2", "--attack", "trajectory").empty  # nothing kept at round 2
    assert np.array_equal(attack_rows(run, tmp_path, capsys, "--rounds", "1,4")["round"], [1, 1, 4])  # the config's attacks


def test_fedsim_attack_takes_an_attack_with_arguments_as_its_config_entry(tmp_path, capsys):
    run, _ = recorded(tmp_path / "run")
    spec = {"name": "fedmia", "args": {"measurement": "cosine"}}
    rows = attack_rows(run, tmp_path, capsys, "--rounds", "4", "--attack", "{name: fedmia, args: {measurement: cosine}}")
    assert keys(rows) == [(4, "fedmia", "1;2;3;4")]
    view = attacker_view(run)
    cosine = make_attack(spec).fit(view.observation, view.train_ids, view.train_members)
    hinge = make_attack("fedmia").fit(view.observation, view.train_ids, view.train_members)
    auc = leakage(cosine.score(view.observation, view.eval_ids), view.eval_members).auc
    assert rows["auc"].iloc[0] == pytest.approx(auc, abs=1e-6)
    assert auc != pytest.approx(leakage(hinge.score(view.observation, view.eval_ids), view.eval_members).auc, abs=1e-6)
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", str(run.folder), "--attack", "{name: fedmia"])
    assert exit_info.value.code == 2 and "expected a registry name or a mapping" in capsys.readouterr().err


def test_an_attack_listed_twice_is_refused_in_one_line(capsys):
    from attackers.inference.registry import check_attacks
    from fedsim.core.errors import FedsimError

    with pytest.raises(FedsimError, match="fedmia is listed twice"):
        check_attacks(["loss", "fedmia", {"name": "fedmia", "args": {"measurement": "cosine"}}], "--attack")
