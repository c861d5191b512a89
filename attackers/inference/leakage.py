"""Leakage per round: every configured attack, fitted and scored on each round's observation.

Single-snapshot attacks use the snapshot of that round; multi-round attacks combine every
observed snapshot up to it (restricted to `observe_rounds` or `observe_every` when set). Learned attacks are fitted
`attack_seeds` times (their randomness from (run seed, attack, round, attack seed)); an attack
that draws no random numbers is fitted once. metrics/leakage.csv holds one row per (round,
attacker, attack, target): the contract columns (docs/design.md, section 3.4) hold means over the attack
seeds, then come the spread over seeds, a bootstrap 95% interval of the (seed-mean) AUC,
bootstrap 95% intervals of the (seed-mean) TPRs that re-set the threshold in every resample
(`fedsim.stats.metrics.tpr_interval`), `min_fpr` = 1/n_nonmembers (a TPR at a smaller FPR is left
empty: not measurable, Carlini et al., S&P 2022), and the AUC on two fixed halves of the targets,
so that a maximum over rounds or attacks can be selected on one half and reported on the other.
The privacy audit of attack seed 0 (`attackers.inference.audit`): with canaries, the one-run 95%
lower bound of the canaries (`canary_epsilon_lower_bound`, Steinke et al. 2023); on the targets,
the empirical epsilon and its point estimate (`epsilon_empirical`, `epsilon_empirical_point`: not
a DP lower bound, the targets are not independent trials), and `epsilon_empirical_select` and
`epsilon_empirical_holdout`, the same with its threshold chosen on the selection half of the
targets, there and on the holdout half, so that a best attack is chosen by the one and reported by
the other. metrics/leakage_seeds.csv holds the per-seed rows. The last round also gets ROC points
and per-class leakage (of attack seed 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from attackers.inference.audit import (
    AUDIT_COLUMNS,
    audit_delta,
    canary_audit,
    empirical_epsilon,
    empirical_epsilon_on_halves,
    split_seed,
    stratified_half,
)
from attackers.inference.base import attack_seed_sequence
from attackers.inference.registry import attack_class, attack_name, make_attack
from attackers.inference.threat_models import attacker_view
from fedsim.core.layout import LEAKAGE_COLUMNS, LEAKAGE_EXTRA_COLUMNS, LEAKAGE_SEEDS_COLUMNS, PER_CLASS_COLUMNS, ROC_COLUMNS
from fedsim.core.threat_model import ThreatModel
from fedsim.learning.membership import CANARY
from fedsim.recording.run import Run
from fedsim.stats.metrics import FPR_TARGETS, bootstrap_aucs, leakage, tpr_column, tpr_interval

EXTRA_COLUMNS = LEAKAGE_EXTRA_COLUMNS[:2] + AUDIT_COLUMNS + LEAKAGE_EXTRA_COLUMNS[2:]
FEATURES_STAGE = "feature extraction"
ATTACKS_STAGE = "attack training"
BOOTSTRAP_SAMPLES = 200
TPR_BOOTSTRAP_SAMPLES = 1000  # cheap (tpr_interval draws counts, not records); percentiles need about 1,000


def measurable(target: float, n_nonmembers: int) -> bool:
    """Whether a TPR at FPR `target` is measured by `n_nonmembers` non-members (target >= 1/n).

    Parameters
    ----------
    target : float
        The false-positive rate, e.g. 1e-3.
    n_nonmembers : int
        Non-member targets scored.

    Returns
    -------
    bool
        False when fewer than 1/target non-members: the TPR there would be the TPR at zero false positives.
    """
    return n_nonmembers > 0 and target * n_nonmembers >= 1 - 1e-9


class Progress(Protocol):
    """Where measure_leakage reports its two stages (fedsim.app.console.RunConsole shows them as bars).

    Attributes
    ----------
    start, advance : callable
        Show a stage with its steps; move it one step, printing a line.
    """

    def start(self, stage: str, total: int) -> None:
        """Show (or restart) a stage with `total` steps.

        Parameters
        ----------
        stage : str
            The stage's name (a bar's label).
        total : int
            Its number of steps.
        """
        ...

    def advance(self, stage: str, message: str | None = None) -> None:
        """Move a stage one step and print `message` as a line.

        Parameters
        ----------
        stage : str
            The stage's name.
        message : str, optional
            A progress line.
        """
        ...


class _Silent:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, message: str | None = None) -> None:
        pass


@dataclass
class LeakageReport:
    """What `measure_leakage` measured, as the tables of the run folder's metrics/.

    Attributes
    ----------
    rows : pandas.DataFrame
        metrics/leakage.csv: LEAKAGE_COLUMNS (means over attack seeds) + LEAKAGE_EXTRA_COLUMNS.
    seed_rows : pandas.DataFrame
        metrics/leakage_seeds.csv: LEAKAGE_SEEDS_COLUMNS, one row per attack seed.
    roc : pandas.DataFrame
        Last round, attack seed 0: attack, fpr, tpr.
    per_class : pandas.DataFrame
        Last round, attack seed 0: attack, class, auc, accuracy, n_members, n_nonmembers.
    why_empty : str or None
        One line: why there are no rows (None when there are).
    """

    rows: pd.DataFrame
    seed_rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LEAKAGE_SEEDS_COLUMNS))
    roc: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROC_COLUMNS))
    per_class: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PER_CLASS_COLUMNS))
    why_empty: str | None = None


def target_halves(members: np.ndarray, seed: int) -> np.ndarray:
    """A fixed split of the targets into a selection half and a holdout half, by membership.

    Parameters
    ----------
    members : numpy.ndarray
        Membership of the targets, bool, shape (n_targets,).
    seed : int
        The run's seed (the split is the same for every attack and round).

    Returns
    -------
    numpy.ndarray
        True for the selection half, bool, shape (n_targets,); half the members and half the
        non-members (rounded down) on each side.
    """
    return stratified_half(np.asarray(members, dtype=bool), np.random.default_rng([int(seed) % (1 << 32), 0x5E1EC7]))


def _auc(scores: np.ndarray, members: np.ndarray) -> float:
    return float(roc_auc_score(members, scores)) if 0 < members.sum() < len(members) else float("nan")


def bootstrap_mean_auc_interval(scores: Sequence[np.ndarray], members: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                                seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the AUC averaged over attack seeds, resampling the targets.

    Members and non-members are resampled separately, the same resample for every seed (so the
    interval is that of the reported seed-mean). With one seed this is
    `fedsim.stats.metrics.bootstrap_auc_interval` (same generator draws, same numbers).

    Parameters
    ----------
    scores : sequence of numpy.ndarray
        One score vector per attack seed, each shape (n_targets,).
    members : numpy.ndarray
        Membership, bool, shape (n_targets,).
    samples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    tuple of float
        (2.5th, 97.5th) percentiles of the resampled seed-mean AUC.
    """
    matrix = np.stack([np.asarray(s, dtype=np.float64) for s in scores])
    low, high = np.percentile(bootstrap_aucs(matrix, members, samples, seed).mean(axis=0), [2.5, 97.5])
    return float(low), float(high)


def _seed_row(scores: np.ndarray, members: np.ndarray, threshold: float | None, selection: np.ndarray) -> dict[str, Any]:
    """The metrics of one attack seed; TPRs at unmeasurable FPRs are NaN (written empty)."""
    result = leakage(scores, members, threshold)
    row: dict[str, Any] = result.as_row()
    for target in FPR_TARGETS:
        if not measurable(target, result.n_nonmembers):
            row[tpr_column(target)] = float("nan")
    row["min_fpr"] = 1 / result.n_nonmembers if result.n_nonmembers else float("nan")
    row["auc_select"] = _auc(scores[selection], members[selection])
    row["auc_holdout"] = _auc(scores[~selection], members[~selection])
    return row


def _aggregate(per_seed: list[dict[str, Any]], scores: list[np.ndarray], members: np.ndarray, deterministic: bool,
               seed: int) -> dict[str, Any]:
    """leakage.csv's row: means over seeds, their spread, and the intervals."""
    table = pd.DataFrame(per_seed)
    row: dict[str, Any] = {column: table[column].mean() for column in ("auc", "accuracy", "auc_select", "auc_holdout")}
    n_members, n_nonmembers = int(table["n_members"].iloc[0]), int(table["n_nonmembers"].iloc[0])
    row |= {"n_members": n_members, "n_nonmembers": n_nonmembers, "min_fpr": table["min_fpr"].iloc[0], "n_seeds": len(per_seed)}
    row["auc_ci_low"], row["auc_ci_high"] = bootstrap_mean_auc_interval(scores, members, seed=seed)

    def spread(column: str) -> float:
        if deterministic:
            return 0.0  # no randomness in the fit: nothing varies over seeds
        return float(table[column].std(ddof=1)) if len(table) > 1 else float("nan")

    row["auc_std"], row["accuracy_std"] = spread("auc"), spread("accuracy")
    for target in FPR_TARGETS:
        column = tpr_column(target)
        if measurable(target, n_nonmembers):
            row[column] = table[column].mean()
            row[f"{column}_std"] = spread(column)
        else:
            row[column] = row[f"{column}_std"] = float("nan")
    # the targets' sampling error of the seed-mean TPRs, members and non-members resampled together
    # (the threshold moves with the non-members); the spread over seeds is the _std column
    lows, highs = tpr_interval(np.stack(scores), members, FPR_TARGETS, samples=TPR_BOOTSTRAP_SAMPLES, seed=seed)
    for target, low, high in zip(FPR_TARGETS, lows, highs):
        row[f"{tpr_column(target)}_ci_low"], row[f"{tpr_column(target)}_ci_high"] = low, high
    return row


def _plan(run: Run, view, specs: list, attacked: Sequence[int]) -> list[tuple[int, Any, Any]]:
    """(round, attack entry, observation) for every row to measure."""
    keep = run.config.observed_rounds()
    plan = []
    for round_number in attacked:
        for spec in specs:
            multi_round = attack_class(spec).multi_round
            if multi_round and keep is not None and round_number not in keep:
                continue  # nothing new observed since the last row of this attack
            observation = view.observation.up_to(round_number, keep if multi_round else [round_number])
            if observation.rounds:
                plan.append((round_number, spec, observation))
    return plan


def measure_leakage(
    run: Run,
    attacks: Sequence[Any] | None = None,
    rounds: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> LeakageReport:
    """One row per (round, attacker, attack, target) for the run's adversary.

    Features of every snapshot the attacks will read are extracted first (one progress step per
    snapshot; the observation caches them), then each attack is fitted and scored (one step per
    row, over its seeds).

    Parameters
    ----------
    run : Run
        A recorded run.
    attacks : sequence of str or AttackConfig, optional
        Attack entries (names or `{name, args}`); default: the run's config `attacks`.
    rounds : sequence of int, optional
        Rounds to attack; default: every observed round.
    progress : Progress, optional
        Where the stages are reported.

    Returns
    -------
    LeakageReport
        The tables of metrics/ (leakage.csv, leakage_seeds.csv, roc.csv, leakage_per_class.csv).
    """
    progress = progress or _Silent()
    view = attacker_view(run)
    if view is None:
        return LeakageReport(pd.DataFrame(columns=LEAKAGE_COLUMNS + EXTRA_COLUMNS), why_empty="no adversary (adversary.role: none)")
    specs = list(attacks if attacks is not None else run.config.attacks)
    attacked = [r for r in view.observation.rounds if rounds is None or r in rounds]
    plan = _plan(run, view, specs, attacked)
    snapshots = sorted({r for _, _, observation in plan for r in observation.rounds})
    progress.start(FEATURES_STAGE, len(snapshots))
    for round_number in snapshots:
        for ids in (view.train_ids, view.eval_ids):
            view.observation.features(ids, round_number)
        progress.advance(FEATURES_STAGE)

    seed = run.config.seed
    members = view.eval_members
    selection = target_halves(members, seed)
    labels = run.pool.labels.numpy()[view.eval_ids]
    last_round = attacked[-1] if attacked else None
    delta = audit_delta(run.config)
    canaries = run.membership[run.membership["role"] == CANARY]
    canary_ids, canary_in = canaries["record_id"].to_numpy(), canaries["member"].to_numpy(bool)
    rows, seed_rows, roc, per_class = [], [], [], []
    progress.start(ATTACKS_STAGE, len(plan))
    for round_number, spec, observation in plan:
        name = attack_name(spec)
        deterministic = attack_class(spec).deterministic
        key = {"round": round_number, "attacker": view.attacker, "attack": name, "target": view.target,
               "observed_rounds": ";".join(map(str, observation.rounds))}
        per_seed, scores, thresholds = [], [], []
        for attack_seed in range(1 if deterministic else run.config.attack_seeds):
            attack = make_attack(spec, attack_seed_sequence(seed, name, round_number, attack_seed))
            attack.fit(observation, view.train_ids, view.train_members)
            scores.append(np.asarray(attack.score(observation, view.eval_ids), dtype=np.float64))
            thresholds.append(attack.threshold)
            if attack_seed == 0:
                canary_bound = (canary_audit(attack.score(observation, canary_ids), canary_in, run.config.audit.guesses, delta)[0]
                                if len(canary_ids) else None)
            per_seed.append(_seed_row(scores[-1], members, attack.threshold, selection))
            seed_rows.append(key | {"seed": attack_seed} | per_seed[-1])
        row = key | _aggregate(per_seed, scores, members, deterministic, seed)
        empirical = empirical_epsilon(scores[0], members, delta, seed=split_seed(seed, round_number, name))
        row |= {"epsilon_empirical": empirical.epsilon, "epsilon_empirical_point": empirical.point,
                "canary_epsilon_lower_bound": canary_bound}
        # the same on the halves of auc_select/auc_holdout: a best attack is chosen by the first, reported by the second
        row["epsilon_empirical_select"], holdout = empirical_epsilon_on_halves(scores[0], members, selection, delta)
        row["epsilon_empirical_holdout"] = holdout.epsilon
        rows.append(row)
        progress.advance(ATTACKS_STAGE, f"round {round_number:>3}  {view.attacker} {name:<17} {_progress_text(row)}")
        if round_number == last_round:
            fpr, tpr, _ = roc_curve(members, scores[0], drop_intermediate=False)
            roc += [{"attack": name, "fpr": f, "tpr": t} for f, t in zip(fpr, tpr)]
            per_class += _per_class(name, scores[0], members, labels, thresholds[0])
    return LeakageReport(pd.DataFrame(rows, columns=LEAKAGE_COLUMNS + EXTRA_COLUMNS).round(6),
                         pd.DataFrame(seed_rows, columns=LEAKAGE_SEEDS_COLUMNS).round(6),
                         pd.DataFrame(roc, columns=ROC_COLUMNS).round(6), pd.DataFrame(per_class, columns=PER_CLASS_COLUMNS).round(6),
                         None if rows else _why_empty(run, view, specs, attacked))


def _progress_text(row: dict[str, Any]) -> str:
    spread = f" +- {row['auc_std']:.3f} over {row['n_seeds']} seeds" if row["n_seeds"] > 1 else ""
    tpr = row["tpr_at_fpr_1e-3"]
    low_fpr = "n/a (needs >= 1000 non-members)" if pd.isna(tpr) else f"{tpr:.3f}"
    return f"AUC {row['auc']:.3f}{spread}  TPR@1e-3 {low_fpr}"


def _why_empty(run: Run, view, names: Sequence[str], attacked: Sequence[int]) -> str:
    """One line: why an adversary's run has no leakage rows."""
    adversary = run.config.adversary
    if not names:
        return "no attack configured (attacks: [])"
    if not view.observation.rounds:
        if run.manifest.victim_rounds == []:
            return (f"client sampling left client {adversary.victim} out of every round (the manifest's victim_rounds is empty), so the "
                    "adversary observed nothing of it; raise the strategy's fraction_train or run more rounds")
        if ThreatModel.of(run.config).sees_individual_updates:
            return (f"the server never received client {adversary.victim}'s model (client sampling left it out of every round, "
                    "or it failed or dropped out); raise the strategy's fraction_train or run more rounds")
        return (f"the curious participant (client {adversary.victim}) never received a global model (client sampling left it out of "
                "every round, or it dropped out); raise the strategy's fraction_train or run more rounds")
    if not attacked:
        return f"none of the rounds asked for was observed (observed rounds: {view.observation.rounds})"
    return f"no attack observed a snapshot among the rounds kept by observe_rounds ({run.config.observe_rounds})"


def _per_class(name: str, scores: np.ndarray, members: np.ndarray, labels: np.ndarray, threshold: float | None) -> list[dict]:
    rows = []
    for label in np.unique(labels):
        mask = labels == label
        inside, outside = int(members[mask].sum()), int((~members[mask]).sum())
        if inside and outside:
            result = leakage(scores[mask], members[mask], threshold)
            rows.append({"attack": name, "class": int(label), "auc": result.auc, "accuracy": result.accuracy,
                         "n_members": inside, "n_nonmembers": outside})
    return rows
