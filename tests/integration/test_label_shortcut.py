"""Issue 13 item 3: under label skew the label alone must not answer "member?".

The `label_only` baseline (score = how common a record's label is among the attacker's known
members) reads no model; with non-member targets drawn to match the member targets' labels its
AUC is 0.5. Without the matching (non-members from every class) it is far above: the control.
Unit tests: a recorded run folder with the real ledger, no simulation.
"""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from attackers.inference.baselines import LabelOnlyAttack
from attackers.inference.threat_models import attacker_view
from conftest import shared_data, small_config
from fedsim import Run
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import ATTACK_EVAL, build_ledger, match_labels, save_ledger
from fedsim.learning.models import model_for
from fedsim.recording.recorder import Recorder

DIGITS = ["data.num_clients=4", "data.records_per_client=200", "data.nonmembers=400", "data.test_records=500",
          "adversary.target_records=60"]


def location():
    root = shared_data("location")
    return ["data.dataset=location", f"data.root={root}", "data.num_clients=4", "data.records_per_client=400",
            "data.nonmembers=1200", "data.test_records=500", "adversary.target_records=100", "model.args={hidden: [16]}"]


def recorded(tmp_path, overrides, notes=None):
    """A one-round run folder with the real ledger (parameters are the initial model's: no training needed)."""
    config = small_config(*overrides)
    ledger = build_ledger(config, load_pool(config.data.dataset, config.data.root), notes)
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(ledger, folder))
    state = model_for(config).state_dict()
    recorder.record_round(0, state)
    recorder.record_round(1, state, {c: (state, 1) for c in range(config.data.num_clients)})
    recorder.finish("complete")
    return Run.open(recorder.folder)


def label_only_auc(run, eval_ids=None, eval_members=None):
    view = attacker_view(run)
    attack = LabelOnlyAttack().fit(view.observation, view.train_ids, view.train_members)
    ids = view.eval_ids if eval_ids is None else eval_ids
    members = view.eval_members if eval_members is None else eval_members
    return roc_auc_score(members, attack.score(view.observation, ids)), view


@pytest.mark.parametrize("role", ["server", "participant"])
@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
@pytest.mark.parametrize("dataset", ["digits", "location"])
def test_label_only_is_chance_under_label_skew(tmp_path, dataset, alpha, role):
    overrides = (DIGITS if dataset == "digits" else location()) + [
        "data.partition=dirichlet", f"data.alpha={alpha}", f"adversary.role={role}", "seed=3"]
    run = recorded(tmp_path, overrides)
    auc, view = label_only_auc(run)
    assert abs(auc - 0.5) <= 0.05, auc
    labels = run.pool.labels.numpy()
    for ids, members in ((view.eval_ids, view.eval_members), (view.train_ids, view.train_members)):
        assert members.sum() == (~members).sum() > 0
        np.testing.assert_array_equal(np.sort(labels[ids[members]]), np.sort(labels[ids[~members]]))
    if alpha == 0.1 and role == "server":  # the control: non-members from every class let the label answer
        ledger = run.membership
        pool = ledger[(ledger["role"] == ATTACK_EVAL) & ~ledger["member"]]["record_id"].to_numpy()
        ids = np.concatenate([view.eval_ids[view.eval_members], pool])
        unmatched, _ = label_only_auc(run, ids, np.isin(ids, view.eval_ids[view.eval_members]))
        assert unmatched > 0.65, unmatched


def test_short_classes_give_fewer_targets_and_say_so(tmp_path):
    notes: list[str] = []
    run = recorded(tmp_path, DIGITS + ["data.partition=dirichlet", "data.alpha=0.05", "data.nonmembers=60",
                                       "adversary.target_records=60", "seed=1"], notes)
    targets = run.membership[run.membership["target"]]
    assert len(notes) == 1 and "targets instead of 60" in notes[0] and "raise data.nonmembers" in notes[0]
    assert f"{len(targets)} targets instead of 60" in notes[0] and len(targets) < 60
    assert targets["member"].sum() == (~targets["member"]).sum()


def test_match_labels_draws_equal_label_counts():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 3)
    members = np.array([0, 1, 2, 10, 11, 20, 21])
    candidates = np.array([3, 4, 5, 6, 12, 13, 22])
    kept, drawn, short = match_labels(members, candidates, labels, np.random.default_rng(0))
    assert short == {2: (2, 1)} and len(kept) == len(drawn) == 6
    assert sorted(labels[kept]) == sorted(labels[drawn]) == [0, 0, 0, 1, 1, 2]
    assert set(drawn) <= set(candidates) and set(kept) <= set(members)
    again = match_labels(members, candidates, labels, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip((kept, drawn), again[:2]))


def test_label_only_scores_are_the_known_members_label_shares():
    from attackers.inference.observation import Observation

    labels = torch.tensor([0, 0, 0, 1, 2, 1, 0, 2])
    observation = Observation([1], lambda r: None, lambda ids: (torch.zeros(len(ids), 1), labels[torch.as_tensor(ids)]))
    attack = LabelOnlyAttack().fit(observation, np.arange(6), np.array([1, 1, 1, 1, 0, 0], bool))
    np.testing.assert_allclose(attack.score(observation, np.array([6, 7, 5])), [0.75, 0.0, 0.25])
