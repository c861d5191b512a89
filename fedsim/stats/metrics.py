"""Membership-inference metrics: AUC, balanced accuracy, TPR at low FPR (Carlini et al. 2022).

Scores are "higher means member". TPR at a given FPR is read exactly off the ROC: the largest
TPR among the ROC points whose FPR does not exceed the target. Every operating point is kept
(`roc_curve(..., drop_intermediate=False)`): sklearn's default drops collinear vertices, which
under-reports TPR when scores tie (discrete scores, losses that round to 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, mannwhitneyu
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
        row |= {f"tpr_at_fpr_{target:.0e}".replace("e-0", "e-"): tpr for target, tpr in self.tpr_at_fpr.items()}
        return row | {"n_members": self.n_members, "n_nonmembers": self.n_nonmembers}


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


def wilson_interval(proportion: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of a binomial proportion (Wilson 1927), e.g. a TPR over n members.

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not empty at 0 and 1.

    Parameters
    ----------
    proportion : numpy.ndarray
        Observed proportions in [0, 1], any shape.
    n : numpy.ndarray
        Trials behind each proportion (> 0), broadcastable to `proportion`.
    z : float
        Standard-normal quantile of the interval (1.96 for 95%).

    Returns
    -------
    low, high : numpy.ndarray
        Interval bounds, shape of the broadcast inputs, clipped to [0, 1].
    """
    p, n = np.asarray(proportion, dtype=np.float64), np.asarray(n, dtype=np.float64)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def clopper_pearson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a binomial proportion, e.g. a TPR over `n` members.

    Parameters
    ----------
    successes : int
        Members flagged (true positives), 0 <= successes <= n.
    n : int
        Members scored.
    confidence : float
        Coverage of the interval.

    Returns
    -------
    tuple of float
        (low, high) in [0, 1]; scipy.stats.binomtest(...).proportion_ci(method="exact")
        (Clopper and Pearson, Biometrika 1934). (nan, nan) when n is 0.
    """
    if n <= 0:
        return float("nan"), float("nan")
    interval = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)
