"""The unsupervised attack of Nasr et al. (attackers/inference/unsupervised.py), without Ray.

The input is synthetic: a small network that memorised half of its records (random labels), so
the decoder's targets (loss, correctness, entropy, gradient norm) split the records in two. Its
determinism on a recorded run is tested with the other attacks' (tests/test_attack_protocol.py).
"""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

import attackers.inference.unsupervised as unsupervised
from attackers.inference.observation import Observation
from attackers.inference.registry import make_attack

FAST = {"name": "nasr_unsupervised", "args": {"epochs": 15}}


def memorised_half(n=400, dim=20, classes=5):
    """An Observation of two snapshots of an MLP trained on records 0..n/2-1 (random labels) and never on the rest."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x, y = torch.randn(n, dim), torch.randint(0, classes, (n,))
        model = nn.Sequential(nn.Linear(dim, 64), nn.Tanh(), nn.Linear(64, classes))
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
        snapshots = {}
        for step in range(1, 151):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[: n // 2]), y[: n // 2]).backward()
            optimizer.step()
            if step in (50, 150):
                snapshots[step // 50] = copy.deepcopy(model).eval()
    observation = Observation([1, 3], lambda r: snapshots[r], lambda ids: (x[ids], y[ids]))
    return observation, np.arange(n) < n // 2


@pytest.fixture(scope="module")
def synthetic():
    observation, memorised = memorised_half()
    rng = np.random.default_rng(0)
    known = np.sort(np.r_[rng.choice(200, 100, replace=False), 200 + rng.choice(200, 100, replace=False)])
    return observation, memorised, known, np.setdiff1d(np.arange(400), known)


@pytest.fixture(scope="module")
def fitted(synthetic):
    observation, _, known, _ = synthetic
    return make_attack(FAST, seed=0).fit(observation, known, None)  # no membership given


def test_the_score_separates_the_records_its_decoder_targets_separate(synthetic, fitted):
    observation, memorised, _, others = synthetic
    targets = fitted.decoder_targets(observation, others).numpy()
    assert roc_auc_score(memorised[others], -targets[:, 0]) > 0.95  # the decoder's targets separate the two halves
    scores = fitted.score(observation, others)
    # the one value they are rebuilt from separates them too (records not seen in fitting), oriented without labels
    assert roc_auc_score(memorised[others], scores) > 0.95
    assert spearmanr(scores, targets[:, 0]).statistic < -0.7


def test_the_threshold_is_the_boundary_of_two_clusters_of_the_known_records(synthetic, fitted):
    observation, memorised, known, others = synthetic
    above = fitted.score(observation, known) > fitted.threshold
    assert 0.3 < above.mean() < 0.7  # two clusters of similar size (half of the records were memorised)
    assert ((fitted.score(observation, others) > fitted.threshold) == memorised[others]).mean() > 0.8
    assert fitted.sign in (1.0, -1.0) and np.isfinite(fitted.reconstruction_error)


def test_membership_labels_are_never_read(synthetic, fitted):
    observation, memorised, known, others = synthetic
    lied_to = make_attack(FAST, seed=0).fit(observation, known, ~memorised[known])  # every label wrong
    assert np.array_equal(lied_to.score(observation, others), fitted.score(observation, others))  # fitted: given none
    assert lied_to.threshold == fitted.threshold


def test_orientation_follows_the_loss_without_labels():
    values = np.arange(10.0)
    assert unsupervised.UnsupervisedNasrAttack._orientation(values, values) == -1.0  # value grows with loss: flip it
    assert unsupervised.UnsupervisedNasrAttack._orientation(values, -values) == 1.0
    assert unsupervised.UnsupervisedNasrAttack._orientation(np.zeros(10), values) == 1.0  # undefined: keep


def test_the_docstring_cites_the_paper_and_states_its_deviations():
    text = unsupervised.__doc__
    assert "Nasr, Shokri and Houmansadr (S&P 2019" in text and "Deviations from the paper" in text
    for deviation in ("last observed snapshot", "oriented without labels", "known records only"):
        assert deviation in " ".join(text.split()), deviation
