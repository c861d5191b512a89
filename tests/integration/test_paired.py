"""Paired evidence across seeds: the interval against scipy, the pairing, a real seeded sweep."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fedsim.app.cli import main
from fedsim.app.sweep import PAIRED_CSV, pairs_of, parse_baseline, parse_grid
from fedsim.core.errors import FedsimError
from fedsim.stats.paired import PAIRED_COLUMNS, paired_interval, paired_table

SMALL = ["data.records_per_client=40", "data.nonmembers=40", "data.test_records=100", "adversary.target_records=20",
         "train.rounds=1", "model.args={hidden: [16]}", "attacks=[loss]", "backend.engine=in-process"]


def test_the_paired_interval_is_scipys_paired_t_interval():
    setting = np.array([0.71, 0.74, 0.69, 0.80, 0.77, 0.72])
    baseline = np.array([0.70, 0.70, 0.70, 0.75, 0.74, 0.73])
    mean, low, high = paired_interval(setting - baseline)
    reference = stats.ttest_rel(setting, baseline).confidence_interval(0.95)
    assert mean == pytest.approx((setting - baseline).mean())
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-10)
    assert np.isnan(paired_interval(np.array([0.1]))[1])  # one seed: no interval
    # one value per seed (fedsim reproduce's mean ± half-width): the one-sample t interval of its mean
    mean, low, high = paired_interval(setting)
    reference = stats.ttest_1samp(setting, 0.0).confidence_interval(0.95)
    assert mean == pytest.approx(setting.mean()) and (low, high) == pytest.approx((reference.low, reference.high), rel=1e-10)


def _leakage(auc: float, tpr: float, round_number: int = 1) -> pd.DataFrame:
    return pd.DataFrame([{"round": round_number, "attacker": "server", "attack": "loss", "auc": auc, "tpr_at_fpr_1e-2": tpr}])


def test_the_table_pairs_each_setting_with_its_baseline_seed_by_seed():
    ascent = {0: 0.80, 1: 0.60, 2: 0.75}  # differences 0.1, -0.1, 0.05: the seeds' levels cancel
    passive = {0: 0.70, 1: 0.70, 2: 0.70}
    leakage = {("mode=ascent", s): _leakage(a, 0.1) for s, a in ascent.items()}
    leakage |= {("mode=passive", s): _leakage(p, 0.0) for s, p in passive.items()}
    leakage[("mode=passive", 3)] = _leakage(0.9, 0.0)  # no partner: not paired
    table = paired_table(leakage, {"mode=ascent": "mode=passive"})
    assert list(table.columns) == PAIRED_COLUMNS
    auc = table[table["metric"] == "auc"].iloc[0]
    expected = paired_interval(np.array([0.1, -0.1, 0.05]))
    assert (auc["mean_diff"], auc["ci_low"], auc["ci_high"]) == pytest.approx(expected)
    assert auc["n_seeds"] == 3 and auc["setting"] == "mode=ascent" and auc["baseline"] == "mode=passive"
    tpr = table[table["metric"] == "tpr_at_fpr_1e-2"].iloc[0]
    assert (tpr["mean_diff"], tpr["ci_low"], tpr["ci_high"]) == pytest.approx((0.1, 0.1, 0.1))


def test_baselines_are_found_per_grid_point_and_bad_ones_give_one_line():
    points = parse_grid(["adversary.mode=passive,gradient-ascent", "adversary.isolate=false,true"], seeds=2)
    assert len(points) == 8 and points[0].settings[-1] == ("seed", "0")
    assert pairs_of(points, *parse_baseline("adversary.mode=passive", points)) == {
        "adversary.mode=gradient-ascent__adversary.isolate=false": "adversary.mode=passive__adversary.isolate=false",
        "adversary.mode=gradient-ascent__adversary.isolate=true": "adversary.mode=passive__adversary.isolate=true",
    }
    with pytest.raises(FedsimError, match="not among the grid's values"):
        parse_baseline("adversary.mode=nope", points)
    with pytest.raises(FedsimError, match="one of the grid's keys"):
        parse_baseline("train.lr=0.1", points)
    with pytest.raises(FedsimError, match="already has a 'seed' axis"):
        parse_grid(["seed=0,1"], seeds=2)


@pytest.mark.integration
def test_a_seeded_sweep_with_a_baseline_writes_paired_csv(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("name: s\n")
    argv = ["sweep", str(config), "--grid", "adversary.mode=passive,gradient-ascent", "--seeds", "2",
            "--baseline", "adversary.mode=passive", "--out", str(tmp_path / "sweep"), *(a for o in SMALL for a in ("--set", o))]
    assert main(argv) == 0
    folder = tmp_path / "sweep"
    table = pd.read_csv(folder / PAIRED_CSV)
    assert list(table.columns) == PAIRED_COLUMNS
    # TPR at FPR 1e-2 is not measurable with fewer than 100 non-member targets: no paired row for it then
    measurable = pd.read_csv(folder / "adversary.mode=passive__seed=0" / "metrics" / "leakage.csv")["min_fpr"].max() <= 1e-2
    assert set(table["metric"]) == {"auc", "test_accuracy"} | ({"tpr_at_fpr_1e-2"} if measurable else set())
    auc = table[(table["metric"] == "auc") & (table["attack"] == "loss")].iloc[0]
    assert auc["setting"] == "adversary.mode=gradient-ascent" and auc["baseline"] == "adversary.mode=passive"
    assert auc["n_seeds"] == 2
    runs = {(m, s): pd.read_csv(folder / f"adversary.mode={m}__seed={s}" / "metrics" / "leakage.csv") for m in ("passive", "gradient-ascent") for s in (0, 1)}
    diffs = [runs[("gradient-ascent", s)]["auc"].iloc[-1] - runs[("passive", s)]["auc"].iloc[-1] for s in (0, 1)]
    assert auc["mean_diff"] == pytest.approx(np.mean(diffs), abs=1e-9)
    out = capsys.readouterr().out
    assert "mean_diff" in out and "ci_low" in out
    assert "Paired differences" in (folder / "report.html").read_text()
