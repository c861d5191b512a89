"""The report's TPR figure: bands are leakage.csv's own intervals, and an FPR the run cannot measure is said in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsim.report.plots import tpr_per_round


def leakage(n_nonmembers: int, measured_1e2: bool) -> pd.DataFrame:
    """Two rounds of one attack; TPR cells empty where the FPR is below 1/n_nonmembers, as leakage.csv writes them."""
    nan = float("nan")
    return pd.DataFrame({
        "round": [1, 2], "attacker": "server", "attack": "loss", "target": "client-000", "n_members": 100,
        "n_nonmembers": n_nonmembers,
        "tpr_at_fpr_1e-2": [0.05, 0.08] if measured_1e2 else [nan, nan],
        "tpr_at_fpr_1e-2_ci_low": [0.01, 0.03] if measured_1e2 else [nan, nan],
        "tpr_at_fpr_1e-2_ci_high": [0.11, 0.15] if measured_1e2 else [nan, nan],
        "tpr_at_fpr_1e-3": [nan, nan], "tpr_at_fpr_1e-3_ci_low": [nan, nan], "tpr_at_fpr_1e-3_ci_high": [nan, nan],
    })


def texts(axes) -> list[str]:
    return [text.get_text() for text in axes.texts]


def test_an_fpr_too_small_for_the_non_members_is_said_in_words_not_drawn_as_empty_axes():
    few, fpr_1e3 = tpr_per_round(leakage(50, measured_1e2=False)).axes
    assert texts(few) == ["not measurable with 50 non-members\n(FPR 0.01 needs at least 100)"]
    assert texts(fpr_1e3) == ["not measurable with 50 non-members\n(FPR 0.001 needs at least 1000)"]
    assert not few.axison and not fpr_1e3.axison and not few.lines and not fpr_1e3.lines


def test_a_measurable_fpr_is_drawn_with_the_bootstrap_interval_of_leakage_csv():
    table = leakage(200, measured_1e2=True)
    fpr_1e2, fpr_1e3 = tpr_per_round(table).axes
    assert texts(fpr_1e2) == [] and fpr_1e2.axison
    (line,) = [line for line in fpr_1e2.lines if line.get_label() == "server/loss"]
    assert list(line.get_ydata()) == [0.05, 0.08]
    (band,) = fpr_1e2.collections
    corners = band.get_paths()[0].vertices
    for round_number, low, high in zip(table["round"], table["tpr_at_fpr_1e-2_ci_low"], table["tpr_at_fpr_1e-2_ci_high"]):
        at_round = corners[np.isclose(corners[:, 0], round_number), 1]
        assert np.isclose(at_round, low).any() and np.isclose(at_round, high).any()
    assert "bootstrap" in fpr_1e2.get_ylabel()
    assert texts(fpr_1e3) == ["not measurable with 200 non-members\n(FPR 0.001 needs at least 1000)"]
