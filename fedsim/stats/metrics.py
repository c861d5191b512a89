"""Membership-inference metrics: AUC, balanced accuracy, TPR at low FPR (Carlini et al. 2022).

Scores are "higher means member". TPR at a given FPR is read exactly off the ROC: the largest
TPR among the ROC points whose FPR does not exceed the target. Every operating point is kept
(`roc_curve(..., drop_intermediate=False)`): sklearn's default drops collinear vertices, which
under-reports TPR when scores tie (discrete scores, losses that round to 0).

The threshold of a TPR at FPR x is set by the evaluation non-members themselves, so a binomial
interval over the members alone (threshold taken as fixed) is too narrow: on binormal scores
(d' = 1, 1,000 members and 1,000 non-members) a 95% Clopper-Pearson interval covered the true TPR
at FPR 1e-2 in 62.8% of 1,000 simulated draws.
`tpr_interval` therefore bootstraps members and non-members together (`bootstrap_tprs`), which
re-sets the threshold in every resample; its coverage is checked by simulation in
tests/unit/test_tpr_interval.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, mannwhitneyu
from sklearn.metrics import balanced_accuracy_score, roc_auc_score, roc_curve

FPR_TARGETS = (1e-2, 1e-3)


@dataclass(frozen=True)
class Leakage:
    """How much one attack's scores reveal membership, on one set of target records.

    Parameters
    ----------
    auc : float
        Area under the ROC curve of the scores (sklearn's `roc_auc_score`), in [0, 1]; 0.5 is chance.
    accuracy : float
        Balanced accuracy (mean of TPR and TNR) at the attack's threshold, in [0, 1].
    tpr_at_fpr : dict of float to float
        For each FPR target of `FPR_TARGETS`, the largest TPR at FPR <= target (Carlini et al. 2022).
    n_members : int
        Members among the targets.
    n_nonmembers : int
        Non-members among the targets.
    """

    auc: float
    accuracy: float
    tpr_at_fpr: dict[float, float]
    n_members: int
    n_nonmembers: int

    def as_row(self) -> dict[str, float | int]:
        """The row leakage.csv stores.

        Returns
        -------
        dict of str to float or int
            `auc`, `accuracy`, `tpr_at_fpr_1e-2`, `tpr_at_fpr_1e-3` (one per target), `n_members`
            and `n_nonmembers`.
        """
        row: dict[str, float | int] = {"auc": self.auc, "accuracy": self.accuracy}
        row |= {tpr_column(target): tpr for target, tpr in self.tpr_at_fpr.items()}
        return row | {"n_members": self.n_members, "n_nonmembers": self.n_nonmembers}


def tpr_column(target: float) -> str:
    """The table column of the TPR at FPR `target`, e.g. 'tpr_at_fpr_1e-3' (leakage.csv, the report, the plots).

    Parameters
    ----------
    target : float
        The false-positive rate, e.g. 1e-3.

    Returns
    -------
    str
        'tpr_at_fpr_' followed by the rate in short scientific notation ('1e-2', '1e-3').
    """
    return f"tpr_at_fpr_{target:.0e}".replace("e-0", "e-")


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, target: float) -> float:
    """Largest TPR on the ROC with FPR <= target.

    Parameters
    ----------
    scores : np.ndarray
        Membership scores, shape (n_records,); higher means member. Ties are allowed.
    members : np.ndarray
        Ground truth, shape (n_records,), bool.
    target : float
        The largest false positive rate allowed, in [0, 1].

    Returns
    -------
    float
        The largest TPR over all thresholds ``score >= t`` whose FPR is at most `target` (every
        operating point of the ROC, as in Carlini et al. 2022; collinear points are not dropped).

    Notes
    -----
    As an estimate of the TPR at FPR exactly `target` it runs high: its threshold sits just above
    the (k+1)-th highest of n non-member scores, k = floor(target n), whose true FPR averages
    (k+1)/(n+1). On binormal scores (d' = 1, 1,000 members) the mean over 2,000 draws was 0.0969
    against a true 0.0924 at FPR 1e-2 (1,000 non-members) and 0.0193 against 0.0183 at 1e-3
    (10,000), about a fifth of its standard deviation. It is kept for comparability with published
    TPRs; `tpr_interval` covers the true TPR nevertheless.
    """
    fpr, tpr, _ = roc_curve(members, scores, drop_intermediate=False)
    return float(tpr[fpr <= target].max())


def balanced_accuracy(scores: np.ndarray, members: np.ndarray, threshold: float) -> float:
    """Balanced accuracy of the decision "member" when score >= threshold.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,); both classes present.
    threshold : float
        The decision threshold, in the scores' units.

    Returns
    -------
    float
        The mean of TPR and TNR, in [0, 1]; 0.5 is chance (scikit-learn's `balanced_accuracy_score`).
    """
    return float(balanced_accuracy_score(np.asarray(members, dtype=bool), np.asarray(scores) >= threshold))


def best_threshold(scores: np.ndarray, members: np.ndarray) -> float:
    """The threshold with the best balanced accuracy on known records (Youden's J on the ROC).

    Fit on the attacker's known records, never on the evaluation targets.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,); both classes present.

    Returns
    -------
    float
        The ROC threshold (sklearn's `roc_curve`) maximising TPR - FPR; "member" means score >=
        threshold. Ties go to the earliest (highest) threshold.
    """
    fpr, tpr, thresholds = roc_curve(members, scores)
    return float(thresholds[np.argmax(tpr - fpr)])


def leakage(scores: np.ndarray, members: np.ndarray, threshold: float | None = None) -> Leakage:
    """Every leakage metric of one attack's scores on target records.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,); both classes present.
    threshold : float, optional
        The attack's decision threshold, chosen without these records. None: the median score
        (the rank threshold that calls half the targets members).

    Returns
    -------
    Leakage
        AUC, balanced accuracy at the threshold, TPR at each FPR of `FPR_TARGETS`, and the counts.

    Raises
    ------
    ValueError
        If `members` holds only one class (sklearn's `roc_auc_score`).
    """
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    if threshold is None:
        threshold = float(np.median(scores))
    return Leakage(
        auc=float(roc_auc_score(members, scores)),
        accuracy=balanced_accuracy(scores, members, threshold),
        tpr_at_fpr={target: tpr_at_fpr(scores, members, target) for target in FPR_TARGETS},
        n_members=int(members.sum()),
        n_nonmembers=int((~members).sum()),
    )


def bootstrap_aucs(scores: np.ndarray, members: np.ndarray, samples: int = 200, seed: int = 0) -> np.ndarray:
    """AUCs of a stratified bootstrap of the targets: members and non-members resampled separately.

    Each resample draws the members' indices, then the non-members' (numpy's default_rng(seed),
    `choice` with replacement); every score vector is scored on the same resamples. The AUC of a
    resample is the Mann-Whitney U statistic over (members x non-members) pairs divided by their
    number (scipy.stats.mannwhitneyu, ties counting 1/2), which is sklearn's `roc_auc_score` of
    the resample, computed for all resamples at once.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,) or (n_vectors, n_records) (e.g. one per attack
        seed); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,); both classes present.
    samples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    numpy.ndarray
        AUC per score vector and resample, shape (samples,) or (n_vectors, samples).
    """
    rng = np.random.default_rng(seed)
    scores, members = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    inside, outside = np.flatnonzero(members), np.flatnonzero(~members)
    drawn_in, drawn_out = np.empty((samples, len(inside)), dtype=np.intp), np.empty((samples, len(outside)), dtype=np.intp)
    for sample in range(samples):
        drawn_in[sample] = inside[rng.choice(len(inside), len(inside))]
        drawn_out[sample] = outside[rng.choice(len(outside), len(outside))]
    u = mannwhitneyu(scores[..., drawn_in], scores[..., drawn_out], axis=-1, method="asymptotic", use_continuity=False).statistic
    return np.asarray(u, dtype=np.float64) / (len(inside) * len(outside))


def bootstrap_auc_interval(scores: np.ndarray, members: np.ndarray, samples: int = 200, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the AUC (Efron and Tibshirani 1993).

    Members and non-members are resampled separately (a stratified bootstrap, `bootstrap_aucs`),
    so every resample has both classes in the original numbers.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,); both classes present.
    samples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling (numpy's default_rng).

    Returns
    -------
    low, high : float
        The 2.5th and 97.5th percentiles of the resampled AUCs.
    """
    low, high = np.percentile(bootstrap_aucs(scores, members, samples, seed), [2.5, 97.5])
    return float(low), float(high)


def clopper_pearson(successes: np.ndarray | int, trials: np.ndarray | int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact (Clopper-Pearson) interval of a binomial proportion, from beta quantiles.

    Parameters
    ----------
    successes, trials : int or numpy.ndarray of int
        Counts k and n (broadcast together), 0 <= k <= n, n >= 1.
    confidence : float
        Coverage of the interval; each tail gets (1 - confidence) / 2.

    Returns
    -------
    low, high : numpy.ndarray
        low = Beta(alpha/2; k, n - k + 1) (0 at k = 0), high = Beta(1 - alpha/2; k + 1, n - k)
        (1 at k = n), scipy.stats.beta (Clopper and Pearson, Biometrika 1934); the interval
        scipy.stats.binomtest(...).proportion_ci(method="exact") gives, for arrays.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return low, high


def false_positive_budget(target: float, n_nonmembers: int) -> int:
    """The most false positives an operating point may have at FPR <= `target`: the largest k with k / n <= target.

    Parameters
    ----------
    target : float
        The false-positive rate, e.g. 1e-2.
    n_nonmembers : int
        Non-members scored (n >= 1).

    Returns
    -------
    int
        k, computed as the ROC compares it (k / n <= target in floating point).
    """
    k = int(np.floor(target * n_nonmembers))
    while (k + 1) / n_nonmembers <= target:
        k += 1
    while k > 0 and k / n_nonmembers > target:
        k -= 1
    return k


def _nonmember_thresholds(outside: np.ndarray, budgets: list[int], samples: int, rng: np.random.Generator) -> np.ndarray:
    """Per budget k, score vector and resample: the (k+1)-th highest non-member score of a resample with replacement.

    A resample is a Multinomial(n, 1/n, ..., 1/n) count per non-member. For one score vector the
    threshold's rank is drawn directly (an order statistic of uniforms, one beta variate per budget
    and resample). For several, which share each resample, only the counts of the highest-scored
    non-members matter, so they are drawn one record at a time, each as the binomial of the draws
    left over the records left (the multinomial's sequential form, exact), in the order of the
    vectors' descending ranks, deeper until every resample has k + 1 draws at or above its
    threshold. Shape (len(budgets), n_vectors, samples).
    """
    vectors, n = outside.shape
    if vectors == 1:
        # The resample's (k+1)-th highest is the record of rank ceil(n U), U the (k+1)-th smallest of n
        # uniforms, Beta(k + 1, n - k) (drawing a record is drawing ceil(n U) in the order of ranks).
        descending = -np.sort(-outside[0])
        ranks = [np.clip(np.ceil(n * rng.beta(k + 1, n - k, samples)).astype(np.int64), 1, n) for k in budgets]
        return np.stack([descending[rank - 1] for rank in ranks])[:, None, :]
    order = np.argsort(-outside, axis=1, kind="stable")
    position = np.full(n, -1)  # where a record's counts are in `counts`, -1 while undrawn
    counts = np.zeros((0, samples), dtype=np.int64)
    draws_left, records_left = np.full(samples, n, dtype=np.int64), n
    need = max(budgets) + 1
    depth = min(n, need + 3 * int(np.sqrt(need)) + 8)  # deep enough for nearly every resample; deeper if not
    while True:
        visit = [r for r in dict.fromkeys(order[:, :depth].T.ravel().tolist()) if position[r] < 0]  # rank by rank, vector by vector
        drawn = np.empty((len(visit), samples), dtype=np.int64)
        for i, record in enumerate(visit):
            drawn[i] = rng.binomial(draws_left, 1 / records_left) if records_left > 1 else draws_left
            draws_left, records_left = draws_left - drawn[i], records_left - 1
            position[record] = len(counts) + i
        counts = np.concatenate([counts, drawn])
        cumulative = np.cumsum(counts[position[order[:, :depth]]], axis=1)  # (vectors, depth, samples)
        if (cumulative[:, -1] >= need).all():
            break
        depth = min(n, 2 * depth)
    thresholds = np.empty((len(budgets), vectors, samples))
    for i, k in enumerate(budgets):
        rank = np.argmax(cumulative >= k + 1, axis=1)  # (vectors, samples): the first rank reaching k + 1 draws
        thresholds[i] = np.take_along_axis(outside, np.take_along_axis(order, rank, axis=1), axis=1)
    return thresholds


def bootstrap_tprs(scores: np.ndarray, members: np.ndarray, targets: tuple[float, ...] = FPR_TARGETS, samples: int = 1000,
                   seed: int = 0) -> np.ndarray:
    """TPRs at FPR `targets` (mean over score vectors) of a stratified bootstrap that re-sets the threshold in each resample.

    A resample draws the non-members with replacement and the members with replacement (Efron and
    Tibshirani 1993, the two-sample bootstrap); its TPR at FPR x is `tpr_at_fpr` of the resample:
    the share of resampled members scored above the (k+1)-th highest resampled non-member, k the
    `false_positive_budget`. Every score vector (e.g. one per attack seed) is read on the same
    non-member resample. The statistic depends on a resample only through counts, so the counts
    are drawn, exactly in the distribution that resampling indices gives (the same as
    scipy.stats.bootstrap with paired=False, at a fraction of its cost): the non-members' counts of
    the highest-scored records (`_nonmember_thresholds`), then, per FPR target, the members'
    counts as one multinomial over the groups of members above the threshold in 0, 1, ..., V of
    the V vectors.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,) or (n_vectors, n_records); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,); both classes present.
    targets : tuple of float
        FPR targets.
    samples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling (numpy's default_rng).

    Returns
    -------
    numpy.ndarray
        Shape (len(targets), samples): the mean over vectors of each resample's TPR; NaN for a target
        below 1/n_nonmembers (not measurable).
    """
    rng = np.random.default_rng(seed)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    members = np.asarray(members, dtype=bool)
    inside, outside = scores[:, members], scores[:, ~members]
    vectors, n_members, n_nonmembers = scores.shape[0], inside.shape[1], outside.shape[1]
    result = np.full((len(targets), samples), np.nan)
    measured = [i for i, target in enumerate(targets) if n_nonmembers and false_positive_budget(target, n_nonmembers) < n_nonmembers
                and target * n_nonmembers >= 1 - 1e-9]
    if not measured or not n_members:
        return result
    budgets = [false_positive_budget(targets[i], n_nonmembers) for i in measured]
    thresholds = _nonmember_thresholds(outside, budgets, samples, rng)
    for row, i in enumerate(measured):
        if vectors == 1:
            beaten = n_members - np.searchsorted(np.sort(inside[0]), thresholds[row][0], side="right")
            groups = np.stack([n_members - beaten, beaten], axis=1)
        else:  # members by how many of the vectors score them above their resample's threshold
            above = (inside[:, None, :] > thresholds[row][:, :, None]).sum(axis=0)  # (samples, n_members)
            offsets = above + (vectors + 1) * np.arange(samples)[:, None]
            groups = np.bincount(offsets.ravel(), minlength=samples * (vectors + 1)).reshape(samples, vectors + 1)
        drawn = rng.multinomial(n_members, groups / n_members)  # resampled members per group
        result[i] = drawn @ np.arange(vectors + 1) / (vectors * n_members)
    return result


def tpr_interval(scores: np.ndarray, members: np.ndarray, targets: tuple[float, ...] = FPR_TARGETS, confidence: float = 0.95,
                 samples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the TPR at each FPR target, threshold re-set in every resample.

    Coverage, measured on binormal scores (d' = 1; tests/unit/test_tpr_interval.py, 1,000
    simulated target sets each, standard error 0.7 points): 95% intervals covered the true TPR at
    FPR 1e-2 (1,000 members and 1,000 non-members) in 94.8% and at FPR 1e-3 (1,000 members and
    10,000 non-members) in 96.0% of them (k = 10 non-members above the threshold in both). With
    fewer non-members above it, it covers less, as a percentile bootstrap of a tail quantile
    does: at FPR 1e-2 with as many members as non-members, 84.7% for 100 non-members (k = 1) and
    91.6% for 200 (k = 2) over 2,000 draws, against 57.7% and 61.4% for the members-only interval.
    The interval is of the TPR's sampling error over the targets; the spread over attack seeds is
    reported apart.

    Parameters
    ----------
    scores : numpy.ndarray
        Membership scores, shape (n_records,) or (n_vectors, n_records) (the interval is then of
        their mean TPR); higher means member.
    members : numpy.ndarray
        Ground truth, bool, shape (n_records,).
    targets : tuple of float
        FPR targets.
    confidence : float
        Coverage asked of the interval.
    samples : int
        Bootstrap resamples (`bootstrap_tprs`).
    seed : int
        Seed of the resampling.

    Returns
    -------
    low, high : numpy.ndarray
        Shape (len(targets),): the (1 - confidence)/2 and (1 + confidence)/2 quantiles of the
        resampled TPRs; NaN where the target is not measurable (fewer than 1/target non-members).
    """
    tprs = bootstrap_tprs(scores, members, targets, samples, seed)
    low, high = np.full(len(targets), np.nan), np.full(len(targets), np.nan)
    for i, row in enumerate(tprs):
        if not np.isnan(row).any():
            low[i], high[i] = np.quantile(row, [(1 - confidence) / 2, (1 + confidence) / 2])
    return low, high
