"""Paired evidence across seeds: setting minus baseline on the same seed, with a 95% interval.

A claim that one setting leaks more than another rests on runs that differ only in that
setting: same seed (same data split, same initial model, same client sampling), so the
per-seed difference removes most of the seed-to-seed variance. The interval is the paired
Student t interval (scipy.stats.t) of the per-seed differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

PAIRED_METRICS = ("auc", "tpr_at_fpr_1e-2")
PAIRED_COLUMNS = ["setting", "baseline", "attacker", "attack", "round", "metric", "mean_diff", "ci_low", "ci_high", "n_seeds"]


def paired_interval(differences: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-seed differences and its paired t interval.

    fedsim's one Student t interval: given one value per seed instead of a difference, it is the
    interval of that value's mean over seeds (what `fedsim reproduce` prints as mean ± half-width).

    Parameters
    ----------
    differences : np.ndarray
        `(n_seeds,)` setting minus baseline, one per seed (NaNs are dropped), or any one value per seed.
    confidence : float
        Two-sided coverage of the interval.

    Returns
    -------
    tuple of float
        `(mean, low, high)`; mean +- t_{n-1, (1+confidence)/2} * sd / sqrt(n), sd with ddof=1
        (scipy.stats.t). With one seed, or none, the interval is (nan, nan); with zero spread it
        is the mean itself.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    sem = float(d.std(ddof=1) / math.sqrt(len(d)))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, len(d) - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def paired_table(leakage: Mapping[tuple[str, int], pd.DataFrame], pairs: Mapping[str, str],
                 metrics: tuple[str, ...] = PAIRED_METRICS) -> pd.DataFrame:
    """One row per (setting, attacker, attack, round, metric): setting minus its baseline.

    Parameters
    ----------
    leakage : mapping
        `(setting name, seed) -> metrics/leakage.csv` of that run.
    pairs : mapping
        `setting name -> baseline setting name` (settings that are baselines are not listed).
    metrics : tuple of str
        leakage.csv columns to compare.

    Returns
    -------
    pd.DataFrame
        Columns `PAIRED_COLUMNS`; only seeds where both runs have the row are paired, and
        `n_seeds` says how many.
    """
    keys = ["attacker", "attack", "round"]
    rows = []
    for setting, baseline in pairs.items():
        seeds = sorted(seed for name, seed in leakage if name == setting and (baseline, seed) in leakage)
        merged = []
        for seed in seeds:
            both = leakage[(setting, seed)].merge(leakage[(baseline, seed)], on=keys, suffixes=("", "_baseline"))
            merged.append(both.assign(seed=seed))
        if not merged:
            continue
        table = pd.concat(merged, ignore_index=True)
        for (attacker, attack, round_number), group in table.groupby(keys, sort=True):
            for metric in metrics:
                if metric not in group:
                    continue
                diff = pd.to_numeric(group[metric], errors="coerce") - pd.to_numeric(group[f"{metric}_baseline"], errors="coerce")
                if not np.isfinite(diff.to_numpy(dtype=float)).any():
                    continue
                mean, low, high = paired_interval(diff.to_numpy())
                rows.append({"setting": setting, "baseline": baseline, "attacker": attacker, "attack": attack,
                             "round": int(round_number), "metric": metric, "mean_diff": mean, "ci_low": low, "ci_high": high,
                             "n_seeds": int(np.isfinite(diff.to_numpy(dtype=float)).sum())})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
