"""Inference attacks on a model trained here (no simulation): they find real members, and
find nothing when 'members' and non-members come from the same unused pool."""

import numpy as np
import pytest
import torch

from attackers.inference.observation import Observation
from attackers.inference.registry import ATTACKS, make_attack
from conftest import shared_data, synthetic_location
from fedsim.core.config import TrainConfig
from fedsim.learning.datasets import load_pool
from fedsim.learning.models import build_model
from fedsim.learning.training import train_locally
from fedsim.stats.metrics import leakage


@pytest.fixture(scope="module", params=["synthetic-location", "location"])
def overfit(request, tmp_path_factory):
    """Two snapshots of an fcn overfitting 300 Location(-format) records; the other records were never seen.

    Three reference models ("other clients") train the same way on 300 other records each, as
    the OUT references of the calibrated attacks (fedmia, lira, rmia); each owner's previous
    snapshot (its initial model before round 1) is what it was "sent" (fedmia's cosine measurement).
    """
    real = request.param == "location"
    pool = load_pool("location", str(shared_data("location") if real else synthetic_location(tmp_path_factory.mktemp("location"))))
    order = np.random.default_rng(0).permutation(len(pool))
    members, unused = order[:300], order[300:1100]
    torch.manual_seed(0)
    snapshots: dict = {}
    for owner, records in enumerate([members, order[1100:1400], order[1400:1700], order[1700:2000]]):
        model = build_model("fcn", pool.input_shape, pool.num_classes, {"hidden": [128]})
        snapshots[owner, 0] = {k: v.clone() for k, v in model.state_dict().items()}
        for round_number in (1, 2):
            train_locally(model, *pool.take(records), TrainConfig(local_epochs=10, lr=0.1), seed=round_number)
            snapshots[owner, round_number] = {k: v.clone() for k, v in model.state_dict().items()}

    def load_model(round_number, owner=0):
        snapshot = build_model("fcn", pool.input_shape, pool.num_classes, {"hidden": [128]})
        snapshot.load_state_dict(snapshots[owner, round_number])
        return snapshot

    def references(round_number):
        return [load_model(round_number, owner) for owner in (1, 2, 3)]

    return (Observation([1, 2], load_model, pool.take, reference_models=references, load_sent=lambda r: load_model(r - 1),
                        reference_sent=lambda r: [load_model(r - 1, owner) for owner in (1, 2, 3)]), members, unused)


def split(inside, outside, seed):
    """Balanced attacker-known and evaluation sets from two id pools."""
    rng = np.random.default_rng(seed)
    inside, outside = rng.permutation(inside), rng.permutation(outside)
    half_in, half_out = len(inside) // 2, len(outside) // 2
    train = np.r_[inside[:half_in], outside[:half_out]]
    evaluation = np.r_[inside[half_in:], outside[half_out : 2 * half_out]]
    return (train, np.r_[np.ones(half_in, bool), np.zeros(half_out, bool)],
            evaluation, np.r_[np.ones(len(inside) - half_in, bool), np.zeros(half_out, bool)])


FEDMIA_COSINE = {"name": "fedmia", "args": {"measurement": "cosine"}}  # the paper's FedMIA-II
LIRA_SHRUNK = {"name": "lira", "args": {"rounds": "last", "mean": "shrunk"}}  # few references: empirical-Bayes OUT mean


# label_only reads no model (test_label_shortcut); crafted reads a crafted-model server's traps, absent here (test_crafted)
@pytest.mark.parametrize("name", [*sorted(set(ATTACKS) - {"label_only", "crafted"}), FEDMIA_COSINE, LIRA_SHRUNK], ids=str)
def test_attacks_find_real_members(overfit, name):
    observation, members, unused = overfit
    train, train_members, evaluation, eval_members = split(members, unused[:300], seed=1)
    attack = make_attack(name, seed=0).fit(observation, train, train_members)
    result = leakage(attack.score(observation, evaluation), eval_members, attack.threshold)
    assert result.auc > 0.6, (name, result)


@pytest.mark.parametrize("name", ["loss", "nasr", "trajectory", "fedmia", FEDMIA_COSINE, "grad_cosine", "lira", LIRA_SHRUNK, "rmia"], ids=str)
def test_control_from_one_unused_pool_gives_chance(overfit, name):
    observation, _, unused = overfit
    fake_members, nonmembers = unused[:400], unused[400:800]
    train, train_members, evaluation, eval_members = split(fake_members, nonmembers, seed=2)
    attack = make_attack(name, seed=0).fit(observation, train, train_members)
    result = leakage(attack.score(observation, evaluation), eval_members, attack.threshold)
    assert abs(result.auc - 0.5) < 0.1, (name, result)


def test_lira_last_round_reads_only_the_last_observed_round(overfit):
    """`rounds: last` is the last round's statistic alone (shrunk or not), not the mean over rounds."""
    from attackers.inference.calibrated import lira_round, outputs, scaled_confidence

    observation, members, unused = overfit
    ids = np.r_[members[:100], unused[:100]]
    for mean, shrink in (("per_record", False), ("shrunk", True)):
        target, references, labels = outputs(observation, ids, 2)
        expected = lira_round(scaled_confidence(target, labels), scaled_confidence(references, labels), shrink=shrink)
        scores = make_attack({"name": "lira", "args": {"rounds": "last", "mean": mean}}, seed=0).score(observation, ids)
        np.testing.assert_array_equal(scores, expected)
    both = make_attack("lira", seed=0).score(observation, ids)
    assert not np.allclose(both, make_attack({"name": "lira", "args": {"rounds": "last"}}, seed=0).score(observation, ids))
