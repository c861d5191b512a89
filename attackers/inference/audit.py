"""Empirical privacy audit: what an attack's scores say about epsilon, and what they prove.

An (epsilon, delta)-DP mechanism bounds every membership test: TPR <= e^eps FPR + delta and
TNR <= e^eps FNR + delta. A test that beats that, on independent trials, refutes every smaller
epsilon. Two audits:

- `canary_audit` (`one_run_epsilon`): m canaries each included independently with probability
  1/2, the attacker guesses the k most and k least likely, and the number of correct guesses is
  tested against randomized response (Steinke, Nasr and Jagielski, "Privacy Auditing with One (1)
  Training Run", NeurIPS 2023, main theorem with its delta term). A 95% lower bound on the epsilon
  of the training run, valid from one run because each canary's inclusion is an independent coin.
- `empirical_epsilon`: many targets, threshold chosen on one seeded half of them, rates with 95%
  Clopper-Pearson bounds on the other half, the statistic of the hypothesis-test audits of
  Jagielski, Ullman and Oprea ("Auditing Differentially Private Machine Learning: How Private is
  Private SGD?", NeurIPS 2020) and Nasr, Song, Thakurta, Papernot and Carlini ("Adversary
  Instantiation: Lower Bounds for Differentially Private Machine Learning", S&P 2021). Those
  papers get one independent trial per training run; here every target comes from one run, and
  the targets' membership was fixed by the ledger, not drawn independently per target. It is
  therefore an empirical epsilon of this run's attack, not a DP lower bound: it treats the targets
  as independent trials, which they are not.

Only the canary bound is a lower bound at 95% confidence that must never exceed an accountant's
epsilon (an upper bound) on a run the accountant covers.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from opacus.accountants import RDPAccountant
from scipy import optimize, stats

from fedsim.core.config import Config
from fedsim.stats.metrics import clopper_pearson

CONFIDENCE = 0.95
DEFAULT_DELTA = 1e-5
# leakage.csv's audit columns, in order (docs/design.md, section 3.4)
AUDIT_COLUMNS = ["epsilon_empirical", "epsilon_empirical_point", "canary_epsilon_lower_bound", "epsilon_empirical_select",
                 "epsilon_empirical_holdout"]
# Their names in leakage.csv files written before the empirical epsilon was told apart from a DP
# lower bound; readers of older run folders rename them (`renamed_columns`).
OLD_AUDIT_COLUMNS = {"epsilon_lower_bound": "epsilon_empirical", "epsilon_lb_point": "epsilon_empirical_point",
                     "epsilon_lb_select": "epsilon_empirical_select", "epsilon_lb_holdout": "epsilon_empirical_holdout"}


def renamed_columns(table: pd.DataFrame) -> pd.DataFrame:
    """A leakage table with the audit columns of older leakage.csv files under their present names.

    Parameters
    ----------
    table : pandas.DataFrame
        A leakage.csv (or leakage_seeds.csv) as read.

    Returns
    -------
    pandas.DataFrame
        The same table, `epsilon_lower_bound` renamed `epsilon_empirical` and so on
        (`OLD_AUDIT_COLUMNS`) where the present name is absent.
    """
    return table.rename(columns={old: new for old, new in OLD_AUDIT_COLUMNS.items() if new not in table.columns})


def _epsilons(tp: np.ndarray, fp: np.ndarray, positives: int, negatives: int, delta: float, bounded: bool,
              confidence: float = CONFIDENCE) -> np.ndarray:
    """max(ln((TPR - delta)/FPR), ln((TNR - delta)/FNR)) per threshold, floored at 0.

    With `bounded`, TPR and TNR are their 95% Clopper-Pearson lower bounds and FPR, FNR their upper
    bounds (a lower confidence bound on epsilon when the records are independent trials); otherwise
    the point estimates.
    """
    fn, tn = positives - tp, negatives - fp
    if bounded:
        tpr, _ = clopper_pearson(tp, positives, confidence)
        tnr, _ = clopper_pearson(tn, negatives, confidence)
        _, fpr = clopper_pearson(fp, negatives, confidence)
        _, fnr = clopper_pearson(fn, positives, confidence)
    else:
        tpr, tnr, fpr, fnr = tp / positives, tn / negatives, fp / negatives, fn / positives
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.where(tpr - delta > 0, np.log(np.maximum(tpr - delta, 1e-300)) - np.log(fpr), -np.inf)
        other = np.where(tnr - delta > 0, np.log(np.maximum(tnr - delta, 1e-300)) - np.log(fnr), -np.inf)
    return np.maximum(np.maximum(one, other), 0.0)


def _counts(scores: np.ndarray, members: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) when 'member' means score >= threshold, per threshold."""
    inside = np.sort(scores[members])
    outside = np.sort(scores[~members])
    tp = len(inside) - np.searchsorted(inside, thresholds, side="left")
    fp = len(outside) - np.searchsorted(outside, thresholds, side="left")
    return tp, fp


@dataclass(frozen=True)
class EmpiricalEpsilon:
    """`empirical_epsilon`'s result: the value at the rates' confidence bounds, the point estimate, what it rests on.

    Neither is a DP lower bound (the targets are not independent trials; module docstring).

    Attributes
    ----------
    epsilon : float
        The epsilon at the rates' 95% Clopper-Pearson bounds (0 when the bounds show nothing).
    point : float
        The point estimate at the same threshold.
    threshold : float
        The score threshold chosen on the selection half of the targets.
    n_members, n_nonmembers : int
        Targets of the measuring half.
    """

    epsilon: float
    point: float
    threshold: float
    n_members: int  # in the half that measured the bound
    n_nonmembers: int


def empirical_epsilon(scores: np.ndarray, members: np.ndarray, delta: float = DEFAULT_DELTA, seed: int = 0,
                      confidence: float = CONFIDENCE) -> EmpiricalEpsilon:
    """Epsilon of an attack's membership test on the targets, threshold chosen on a seeded half of them.

    Not a DP lower bound. The Clopper-Pearson bounds treat each target as an independent trial of
    the test; the audits this follows (Jagielski et al. 2020; Nasr et al. 2021) have one such trial
    per training run, while here all targets come from one run and their membership was fixed by
    the ledger (not included independently at random, as the one-run theorem of Steinke et al.
    2023 requires: `canary_audit`). Read it as how far this run's attack separates members from
    non-members on the epsilon scale.

    Parameters
    ----------
    scores : (n_records,) array
        Attack scores, higher means member.
    members : (n_records,) bool array
        Ground truth.
    delta : float
        The defence's delta (1e-5 when it names none).
    seed : int
        Seeds the stratified split into the half that chooses the threshold and the half that
        measures (numpy default_rng).
    confidence : float
        Of the Clopper-Pearson bounds.

    Returns
    -------
    EmpiricalEpsilon
        epsilon = max(ln((TPR_lo - delta)/FPR_hi), ln((TNR_lo - delta)/FNR_hi)) on the second
        half, floored at 0 (the statistic of Jagielski et al. 2020 and Nasr et al. 2021); point =
        the same with point estimates (inf where a denominator is 0). The threshold maximises the
        value on the first half. With 100 + 100 measuring targets even a perfect attack reaches
        only ln((0.9638 - delta) / 0.0362) = 3.28 (Clopper-Pearson bounds of 100 of 100 and 0 of 100).
    """
    members = np.asarray(members, dtype=bool)
    return _bound_on_split(scores, members, stratified_half(members, np.random.default_rng(seed)), delta, confidence)[1]


def stratified_half(members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random half of the members and a random half of the non-members (each rounded down).

    Parameters
    ----------
    members : (n_records,) bool array
        Membership.
    rng : numpy.random.Generator
        Draws one permutation of the members, then one of the non-members.

    Returns
    -------
    (n_records,) bool array
        True for the chosen half.
    """
    half = np.zeros(len(members), dtype=bool)
    for side in (members, ~members):
        where = np.flatnonzero(side)
        half[rng.permutation(where)[: len(where) // 2]] = True
    return half


def empirical_epsilon_on_halves(scores: np.ndarray, members: np.ndarray, selection: np.ndarray, delta: float = DEFAULT_DELTA,
                                confidence: float = CONFIDENCE) -> tuple[float, EmpiricalEpsilon]:
    """`empirical_epsilon` on given halves of the targets: threshold chosen on `selection`, measured on the rest.

    With the halves of `attackers.inference.leakage.target_halves` (those of `auc_select` and
    `auc_holdout`), a best attack can be chosen by the first value and reported by the second:
    neither the threshold nor the choice of attack then saw the records that measure the bound.

    Parameters
    ----------
    scores : (n_records,) array
        Attack scores, higher means member.
    members : (n_records,) bool array
        Ground truth.
    selection : (n_records,) bool array
        True for the half that chooses the threshold (and the attack).
    delta : float
        The defence's delta (1e-5 when it names none).
    confidence : float
        Of the Clopper-Pearson bounds.

    Returns
    -------
    (float, EmpiricalEpsilon)
        The empirical epsilon reached on the selection half at the threshold chosen there (for
        choosing only: it is optimistic), and the one at that threshold on the other half (as
        `empirical_epsilon`'s; neither is a DP lower bound).
    """
    return _bound_on_split(scores, members, np.asarray(selection, dtype=bool), delta, confidence)


def _bound_on_split(scores: np.ndarray, members: np.ndarray, choose: np.ndarray, delta: float,
                    confidence: float) -> tuple[float, EmpiricalEpsilon]:
    """(bound on the choosing half at its best threshold, the bound at that threshold on the rest)."""
    scores = np.asarray(scores, dtype=np.float64)
    members = np.asarray(members, dtype=bool)
    measure = ~choose
    a_scores, a_members = scores[choose], members[choose]
    b_scores, b_members = scores[measure], members[measure]
    positives_a, negatives_a = int(a_members.sum()), int((~a_members).sum())
    positives_b, negatives_b = int(b_members.sum()), int((~b_members).sum())
    if min(positives_a, negatives_a, positives_b, negatives_b) == 0:
        return 0.0, EmpiricalEpsilon(0.0, 0.0, math.inf, positives_b, negatives_b)
    candidates = np.unique(np.r_[a_scores, np.inf])
    tp, fp = _counts(a_scores, a_members, candidates)
    chosen_bounds = _epsilons(tp, fp, positives_a, negatives_a, delta, bounded=True, confidence=confidence)
    best = int(np.argmax(chosen_bounds))  # ties: the lowest such threshold
    threshold = float(candidates[best])
    tp_b, fp_b = _counts(b_scores, b_members, np.array([threshold]))
    lower = float(_epsilons(tp_b, fp_b, positives_b, negatives_b, delta, bounded=True, confidence=confidence)[0])
    point = float(_epsilons(tp_b, fp_b, positives_b, negatives_b, delta, bounded=False, confidence=confidence)[0])
    return float(chosen_bounds[best]), EmpiricalEpsilon(lower, max(point, lower), threshold, positives_b, negatives_b)


def one_run_p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P[at least `correct` of `guesses` right] for an (epsilon, delta)-DP mechanism (Steinke et al. 2023).

    Parameters
    ----------
    m : int
        Canaries, each included independently with probability 1/2.
    guesses, correct : int
        Guesses made (abstentions excluded) and how many were right.
    epsilon, delta : float
        The null hypothesis' privacy parameters.

    Returns
    -------
    float
        P[Binomial(r, e^eps/(1+e^eps)) >= v] + 2 m delta max_i P[v - i <= Binomial(r, q) < v] / i,
        capped at 1 (their main theorem; the delta term vanishes for pure DP).
    """
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= m ({m})")
    q = 1 / (1 + math.exp(-epsilon))
    tail = float(stats.binom.sf(correct - 1, guesses, q))
    if delta == 0 or correct == 0:
        return min(tail, 1.0)
    below = stats.binom.pmf(np.arange(correct - 1, -1, -1), guesses, q)  # P[B = v-1], P[B = v-2], ...
    alpha = float(np.max(np.cumsum(below) / np.arange(1, correct + 1)))
    return min(tail + 2 * m * delta * alpha, 1.0)


def one_run_epsilon(m: int, guesses: int, correct: int, delta: float = DEFAULT_DELTA, confidence: float = CONFIDENCE) -> float:
    """The largest epsilon that `correct` of `guesses` right rejects at `confidence` (0 when none).

    Parameters
    ----------
    m, guesses, correct : int
        As in `one_run_p_value`.
    delta : float
        The defence's delta.
    confidence : float
        1 - the test's level.

    Returns
    -------
    float
        sup {eps : p-value(eps) < 1 - confidence}, found by root finding on the p-value, which
        grows with epsilon (Steinke, Nasr and Jagielski 2023).
    """
    level = 1 - confidence
    if guesses == 0 or one_run_p_value(m, guesses, correct, 0.0, delta) >= level:
        return 0.0
    high = 1.0
    while one_run_p_value(m, guesses, correct, high, delta) < level:
        high *= 2
        if high > 1e3:
            return math.inf
    return float(optimize.brentq(lambda e: one_run_p_value(m, guesses, correct, e, delta) - level, 0.0, high, xtol=1e-6))


def canary_audit(scores: np.ndarray, included: np.ndarray, guesses: int, delta: float = DEFAULT_DELTA) -> tuple[float, int, int]:
    """One-run audit of canary scores: guess the `guesses // 2` highest in, the rest of the guesses lowest out.

    A 95% lower bound on the run's epsilon for one attack and round fixed before looking (Steinke,
    Nasr and Jagielski 2023: each canary included independently with probability 1/2, guesses
    fixed in advance); the largest over several attacks or rounds is a selection and is not.

    Parameters
    ----------
    scores : (m,) array
        Attack scores of the canaries, higher means included.
    included : (m,) bool array
        Whether each canary was in the victim's data (each with probability 1/2 by the seed).
    guesses : int
        Total guesses r (fixed before looking: the config's `audit.guesses`).
    delta : float
        The defence's delta.

    Returns
    -------
    (epsilon, guesses, correct)
        The 95% lower bound of `one_run_epsilon` and the counts it rests on.
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    guesses = min(guesses, m)
    order = np.argsort(-scores, kind="stable")
    high, low = order[: guesses - guesses // 2], order[m - guesses // 2:] if guesses // 2 else order[:0]
    correct = int(included[high].sum() + (~included[low]).sum())
    return one_run_epsilon(m, guesses, correct, delta), guesses, correct


def split_seed(seed: int, round_number: int, attack: str) -> int:
    """The seed of an audit's split: the run's seed, the round and the attack (each row its own split).

    Parameters
    ----------
    seed : int
        The run's seed.
    round_number : int
        The attacked round.
    attack : str
        The attack's registry name.

    Returns
    -------
    int
        A seed for numpy's SeedSequence-derived generator of the split.
    """
    return int(np.random.SeedSequence([seed, round_number, zlib.crc32(attack.encode())]).generate_state(1)[0])


def audit_delta(config: Config) -> float:
    """The delta the audit tests against: DP-SGD's, else the server-side DP wrapper's, else 1e-5.

    Parameters
    ----------
    config : Config
        The run's configuration.

    Returns
    -------
    float
        delta of the (epsilon, delta) guarantee under test.
    """
    if config.defense.dp_sgd is not None:
        return config.defense.dp_sgd.delta
    return DEFAULT_DELTA


def server_dp_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float = DEFAULT_DELTA) -> float:
    """Client-level epsilon of `rounds` Gaussian-mechanism rounds (Flower's server-side DP wrappers).

    Parameters
    ----------
    noise_multiplier : float
        Noise standard deviation over the clipping norm of the summed updates.
    sample_rate : float
        Clients sampled per round over all clients.
    rounds : int
        Rounds so far.
    delta : float

    Returns
    -------
    float
        Opacus' RDP accountant's epsilon (Mironov 2017; subsampled Gaussian), inf without noise.
    """
    if noise_multiplier <= 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, rounds)]
    return float(accountant.get_epsilon(delta=delta))


def accountant_epsilon(config: Config, training: pd.DataFrame) -> pd.DataFrame:
    """The accountant's epsilon (an upper bound) per round, where the run has one.

    Parameters
    ----------
    config : Config
        The run's configuration.
    training : DataFrame
        metrics/training.csv (its `epsilon_max` under DP-SGD: the clients' Opacus epsilon).

    Returns
    -------
    DataFrame with columns round, epsilon, accountant
        Empty when no defence accounts for privacy. Under DP-SGD the worst client's record-level
        epsilon; under dp-server-fixed/-adaptive the client-level epsilon of the Gaussian mechanism
        with that noise multiplier and sampling rate (which protects the aggregate, not the
        individual updates a curious server reads).
    """
    rounds = training["round"].to_numpy() if "round" in training else np.array([], dtype=int)
    rounds = rounds[rounds >= 1]
    if config.defense.dp_sgd is not None and "epsilon_max" in training:
        kept = training[training["round"] >= 1]
        return pd.DataFrame({"round": kept["round"], "epsilon": kept["epsilon_max"].astype(float), "accountant": "dp-sgd (opacus, record level)"})
    if config.strategy.name in ("dp-server-fixed", "dp-server-adaptive"):
        noise = float(config.strategy.args.get("noise_multiplier", 0.0))
        sampled = config.strategy.args.get("num_sampled_clients") or config.data.num_clients
        rate = min(1.0, sampled / config.data.num_clients)
        epsilons = [server_dp_epsilon(noise, rate, int(r)) for r in rounds]
        return pd.DataFrame({"round": rounds, "epsilon": epsilons, "accountant": f"{config.strategy.name} (opacus rdp, client level)"})
    return pd.DataFrame(columns=["round", "epsilon", "accountant"])
