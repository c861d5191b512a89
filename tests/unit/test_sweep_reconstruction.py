"""A sweep's tables carry the reconstruction metrics: per (attacker, attack, round) the fraction
recovered, the mean PSNR and the exact fraction, paired seed by seed like the membership metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fedsim.app.sweep import RECONSTRUCTION_METRICS, reconstruction_summary
from fedsim.core.layout import RECONSTRUCTION_COLUMNS
from fedsim.stats.paired import paired_table


def _rows(attack: str, psnr: list[float], exact: list[bool] | None, round_number: int = 1) -> pd.DataFrame:
    """reconstruction.csv rows of one (attack, round): `recovered` is psnr >= 20 dB, as the scoring writes it."""
    n = len(psnr)
    return pd.DataFrame({
        "attack": attack, "attacker": "server", "target": "client-000", "round": round_number, "record_id": np.arange(n),
        "label": 0, "predicted_label": 0, "psnr": psnr, "ssim": np.nan, "mse": np.nan, "baseline_psnr": 12.0, "baseline_ssim": np.nan,
        "recovered": [p >= 20 for p in psnr], "exact": pd.array(exact if exact is not None else [None] * n, dtype="boolean"),
        "seconds": 1.0, "claimed_exact": pd.array([None] * n, dtype="boolean"), "max_abs_error": np.nan,
    }, columns=RECONSTRUCTION_COLUMNS)


def test_the_summary_is_per_attack_and_round_with_exact_empty_for_an_attack_that_claims_none():
    rows = pd.concat([_rows("imprint", [math.inf, 25.0, 10.0, math.nan], [True, False, False, False]),
                      _rows("inverting_gradients", [30.0, 15.0], None), _rows("inverting_gradients", [21.0, 22.0], None, 2)])
    table = reconstruction_summary(rows).set_index(["attack", "round"])
    assert list(table.columns) == ["attacker", *RECONSTRUCTION_METRICS]
    imprint = table.loc[("imprint", 1)]
    # 2 of 4 recovered; the mean over the 3 paired records, inf counted as the 100 dB cap; 1 of 4 exact
    assert imprint["recovered"] == 0.5 and imprint["mean_psnr"] == pytest.approx((100 + 25 + 10) / 3) and imprint["exact_fraction"] == 0.25
    assert table.loc[("inverting_gradients", 1), "recovered"] == 0.5 and math.isnan(table.loc[("inverting_gradients", 1), "exact_fraction"])
    assert table.loc[("inverting_gradients", 2), "recovered"] == 1.0


def test_the_reconstruction_metrics_are_paired_seed_by_seed():
    setting = {0: [30.0, 30.0], 1: [30.0, 10.0], 2: [30.0, 30.0]}  # recovered 1.0, 0.5, 1.0
    baseline = {0: [10.0, 10.0], 1: [30.0, 10.0], 2: [10.0, 30.0]}  # recovered 0.0, 0.5, 0.5
    runs = {("secure", s): reconstruction_summary(_rows("inverting_gradients", p, None)) for s, p in setting.items()}
    runs |= {("none", s): reconstruction_summary(_rows("inverting_gradients", p, None)) for s, p in baseline.items()}
    table = paired_table(runs, {"secure": "none"}, RECONSTRUCTION_METRICS).set_index("metric")
    assert "exact_fraction" not in table.index  # an attack that claims no exact records has no such row
    recovered = table.loc["recovered"]
    reference = stats.ttest_rel([1.0, 0.5, 1.0], [0.0, 0.5, 0.5]).confidence_interval(0.95)
    assert recovered["mean_diff"] == pytest.approx(0.5) and recovered["n_seeds"] == 3
    assert (recovered["ci_low"], recovered["ci_high"]) == pytest.approx((reference.low, reference.high))
    assert table.loc["mean_psnr", "mean_diff"] == pytest.approx(np.mean([20.0, 0.0, 10.0]))
