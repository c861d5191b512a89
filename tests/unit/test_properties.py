"""Property-based tests (hypothesis) of the metrics and the config loader."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.core.config import load_config
from fedsim.core.errors import FedsimError
from fedsim.stats.metrics import leakage, tpr_at_fpr

labels = st.lists(st.booleans(), min_size=2, max_size=60).filter(lambda m: any(m) and not all(m))


@given(labels, st.integers(0, 2**31 - 1))
def test_perfect_reversed_and_constant_scores_for_any_labels(members, seed):
    members = np.array(members)
    noise = np.random.default_rng(seed).random(len(members))
    perfect = members + noise * 0.5
    assert leakage(perfect, members).auc == 1.0
    assert leakage(-perfect, members).auc == 0.0
    assert leakage(np.full(len(members), 0.3), members).auc == 0.5


@given(labels, st.integers(0, 2**31 - 1))
def test_tpr_at_fpr_is_monotone_in_fpr(members, seed):
    members = np.array(members)
    scores = np.random.default_rng(seed).normal(size=len(members))
    values = [tpr_at_fpr(scores, members, target) for target in (0.0, 1e-3, 1e-2, 0.1, 0.5, 1.0)]
    assert values == sorted(values) and values[-1] == 1.0 and all(0 <= v <= 1 for v in values)


def brute_force_tpr(scores: np.ndarray, members: np.ndarray, target: float) -> float:
    """Largest TPR over every threshold `score >= t` (each distinct score, and +inf) whose FPR is <= target."""
    best = 0.0
    for threshold in [*np.unique(scores), np.inf]:
        predicted = scores >= threshold
        if predicted[~members].mean() <= target:
            best = max(best, predicted[members].mean())
    return float(best)


@settings(max_examples=300, deadline=None)
@given(labels, st.data())
def test_tpr_at_fpr_equals_a_threshold_scan_on_tied_integer_scores(members, data):
    members = np.array(members)
    scores = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(members), max_size=len(members))), dtype=float)
    n_out = int((~members).sum())
    # the exact FPRs reachable (k / n_out), just above and just below them, and the usual targets
    targets = sorted({0.0, 1e-3, 1e-2, 0.1, 0.5, 1.0} | {k / n_out for k in range(n_out + 1)}
                     | {min(1.0, k / n_out + 1e-9) for k in range(n_out + 1)} | {max(0.0, k / n_out - 1e-9) for k in range(n_out + 1)})
    for target in targets:
        assert tpr_at_fpr(scores, members, target) == pytest.approx(brute_force_tpr(scores, members, target), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(-5, 50), st.floats(-1, 2, allow_nan=False))
def test_sizes_and_alpha_are_accepted_or_refused_with_one_line(rounds, alpha):
    overrides = [f"train.rounds={rounds}", f"data.alpha={alpha}", "adversary.active_rounds=null"]
    if rounds >= 1 and alpha > 0:
        config = load_config(None, overrides, default_file=False)
        assert config.train.rounds == rounds and config.data.alpha == alpha
    else:
        with pytest.raises(FedsimError) as error:
            load_config(None, overrides, default_file=False)
        assert "\n" not in str(error.value)


@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80))
def test_any_yaml_text_is_loaded_or_refused_with_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except FedsimError as error:
        assert "\n" not in str(error)


@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30))
def test_any_set_value_is_accepted_or_refused_with_one_line(value):
    try:
        load_config(None, [f"name={value}"], default_file=False)
    except FedsimError as error:
        assert "\n" not in str(error)
