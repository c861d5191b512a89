import numpy as np
import pytest

from fedsim.stats.metrics import balanced_accuracy, best_threshold, bootstrap_auc_interval, leakage, tpr_at_fpr


def test_perfect_reversed_and_constant_scores():
    members = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    scores = np.r_[np.linspace(1, 2, 50), np.linspace(-1, 0, 50)]
    assert leakage(scores, members).auc == 1 and leakage(scores, members).tpr_at_fpr[1e-3] == 1
    assert leakage(-scores, members).auc == 0 and leakage(-scores, members).tpr_at_fpr[1e-2] == 0
    assert leakage(np.zeros(100), members).auc == 0.5


def brute_force_tpr(scores, members, target):
    """Largest TPR over all thresholds whose FPR stays within target."""
    best = 0.0
    for threshold in np.r_[np.unique(scores), np.inf]:
        predicted = scores >= threshold
        if predicted[~members].mean() <= target:
            best = max(best, predicted[members].mean())
    return best


def test_tpr_at_fpr_with_tied_scores_keeps_every_operating_point():
    """Issue 20: sklearn's default drop_intermediate=True drops the collinear point (FPR 2/3, TPR 2/3)."""
    scores = np.array([3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1], dtype=float)
    members = np.array([1, 1, 0, 0] * 3, dtype=bool)
    assert tpr_at_fpr(scores, members, 0.67) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, members, 0.34) == pytest.approx(1 / 3)
    assert tpr_at_fpr(scores, members, 0.3) == 0.0
    assert tpr_at_fpr(scores, members, 1.0) == 1.0
    assert leakage(scores, members).tpr_at_fpr[1e-2] == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_tpr_at_fpr_is_read_exactly_off_the_roc(seed):
    rng = np.random.default_rng(seed)
    members = rng.random(400) < 0.5
    scores = rng.normal(size=400) + members * 1.5
    for target in (1e-3, 1e-2, 0.1, 0.5):
        assert tpr_at_fpr(scores, members, target) == pytest.approx(brute_force_tpr(scores, members, target))
    values = [tpr_at_fpr(scores, members, t) for t in (1e-3, 1e-2, 0.1, 0.5, 1.0)]
    assert values == sorted(values) and values[-1] == 1.0


def test_threshold_and_bootstrap():
    rng = np.random.default_rng(0)
    members = rng.random(1000) < 0.5
    scores = rng.normal(size=1000) + members * 2
    threshold = best_threshold(scores, members)
    assert 0.5 < threshold < 1.5 and balanced_accuracy(scores, members, threshold) > 0.8
    low, high = bootstrap_auc_interval(scores, members)
    assert low < leakage(scores, members).auc < high and high - low < 0.1
    assert list(leakage(scores, members).as_row()) == ["auc", "accuracy", "tpr_at_fpr_1e-2", "tpr_at_fpr_1e-3", "n_members", "n_nonmembers"]


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_is_sklearns_and_the_mean_of_tpr_and_tnr(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 300))
    members = rng.random(n) < rng.uniform(0.2, 0.8)
    members[:2] = [True, False]  # both classes present
    scores = rng.integers(0, 5, n) + rng.normal(0, 1, n) * members  # ties included
    threshold = float(rng.choice(scores))
    predicted = scores >= threshold
    reference = (predicted[members].mean() + (~predicted[~members]).mean()) / 2  # the definition, by hand
    assert balanced_accuracy(scores, members, threshold) == reference


def test_bootstrap_aucs_equal_sklearns_auc_of_each_resample_with_ties():
    from sklearn.metrics import roc_auc_score

    from fedsim.stats.metrics import bootstrap_aucs

    rng = np.random.default_rng(3)
    members = rng.random(60) < 0.4
    scores = rng.integers(0, 5, (2, 60)).astype(float)  # small integers: many ties
    aucs = bootstrap_aucs(scores, members, samples=30, seed=9)
    draws = np.random.default_rng(9)  # the resamples, drawn here as the docstring says: members' indices, then non-members'
    inside, outside = np.flatnonzero(members), np.flatnonzero(~members)
    for sample in range(30):
        chosen = np.r_[inside[draws.choice(len(inside), len(inside))], outside[draws.choice(len(outside), len(outside))]]
        truth = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
        for row in range(2):
            assert aucs[row, sample] == pytest.approx(roc_auc_score(truth, scores[row, chosen]), abs=1e-12)
    assert bootstrap_aucs(scores[0], members, samples=30, seed=9) == pytest.approx(aucs[0], abs=0)
