"""Leakage per round: every configured attack, fitted and scored on each round's observation.

Single-snapshot attacks use the snapshot of that round; multi-round attacks combine every
observed snapshot up to it (restricted to `observe_rounds` or `observe_every` when set). The rows follow the
columns of metrics/leakage.csv (DESIGN.md section 4), with a bootstrap 95% interval of the AUC
after them, and the epsilon each attack's scores prove (`attackers.inference.audit`: the 95% lower
bound and its point estimate; with canaries, the one-run bound of the canaries); the last round
also gets ROC points and per-class leakage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from attackers.inference.audit import audit_delta, canary_audit, epsilon_lower_bound, split_seed
from attackers.inference.registry import ATTACKS, attack_name, make_attack
from attackers.inference.threat_models import attacker_view
from fedsim.membership import CANARY
from fedsim.metrics import bootstrap_auc_interval, leakage
from fedsim.recorder import LEAKAGE_COLUMNS, PER_CLASS_COLUMNS, ROC_COLUMNS
from fedsim.run import Run

EXTRA_COLUMNS = ["auc_ci_low", "auc_ci_high", "epsilon_lower_bound", "epsilon_lb_point", "canary_epsilon_lower_bound"]
FEATURES_STAGE = "feature extraction"
ATTACKS_STAGE = "attack training"


class Progress(Protocol):
    """Where measure_leakage reports its two stages (fedsim.console.RunConsole shows them as bars)."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, stage: str, message: str | None = None) -> None: ...


class _Silent:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, stage: str, message: str | None = None) -> None:
        pass


@dataclass
class LeakageReport:
    rows: pd.DataFrame  # LEAKAGE_COLUMNS + EXTRA_COLUMNS
    roc: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ROC_COLUMNS))  # last round
    per_class: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PER_CLASS_COLUMNS))  # last round
    why_empty: str | None = None  # one line: why there are no rows (None when there are)


def measure_leakage(
    run: Run,
    attacks: Sequence[str] | None = None,
    rounds: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> LeakageReport:
    """One row per (round, attacker, attack, target) for the run's adversary.

    Features of every snapshot the attacks will read are extracted first (one progress step per
    snapshot; the observation caches them), then each attack is fitted and scored (one step each).
    """
    progress = progress or _Silent()
    view = attacker_view(run)
    if view is None:
        return LeakageReport(pd.DataFrame(columns=LEAKAGE_COLUMNS + EXTRA_COLUMNS), why_empty="no adversary (adversary.role: none)")
    specs = list(attacks if attacks is not None else run.config.attacks)
    keep = run.config.observed_rounds()
    attacked = [r for r in view.observation.rounds if rounds is None or r in rounds]
    plan = []
    for round_number in attacked:
        for spec in specs:
            name = attack_name(spec)
            multi_round = ATTACKS[name].multi_round
            if multi_round and keep is not None and round_number not in keep:
                continue  # nothing new observed since the last row of this attack
            observation = view.observation.up_to(round_number, keep if multi_round else [round_number])
            if observation.rounds:
                plan.append((round_number, spec, observation))
    snapshots = sorted({r for _, _, observation in plan for r in observation.rounds})
    progress.start(FEATURES_STAGE, len(snapshots))
    for round_number in snapshots:
        for ids in (view.train_ids, view.eval_ids):
            view.observation.features(ids, round_number)
        progress.advance(FEATURES_STAGE)

    labels = run.pool.labels.numpy()[view.eval_ids]
    delta = audit_delta(run.config)
    canaries = run.membership[run.membership["role"] == CANARY]
    canary_ids, canary_in = canaries["record_id"].to_numpy(), canaries["member"].to_numpy(bool)
    rows, roc, per_class = [], [], []
    progress.start(ATTACKS_STAGE, len(plan))
    for round_number, spec, observation in plan:
        name = attack_name(spec)
        attack = make_attack(spec, seed=run.config.seed)
        attack.fit(observation, view.train_ids, view.train_members)
        scores = attack.score(observation, view.eval_ids)
        result = leakage(scores, view.eval_members, attack.threshold)
        low, high = bootstrap_auc_interval(scores, view.eval_members, seed=run.config.seed)
        bound = epsilon_lower_bound(scores, view.eval_members, delta, seed=split_seed(run.config.seed, round_number, name))
        canary_bound = (canary_audit(attack.score(observation, canary_ids), canary_in, run.config.audit.guesses, delta)[0]
                        if len(canary_ids) else None)
        rows.append({
            "round": round_number, "attacker": view.attacker, "attack": name, "target": view.target,
            "observed_rounds": ";".join(map(str, observation.rounds)), **result.as_row(),
            "auc_ci_low": low, "auc_ci_high": high, "epsilon_lower_bound": bound.lower_bound, "epsilon_lb_point": bound.point,
            "canary_epsilon_lower_bound": canary_bound,
        })
        progress.advance(ATTACKS_STAGE, f"round {round_number:>3}  {view.attacker} {name:<17} AUC {result.auc:.3f}  TPR@1e-3 {result.tpr_at_fpr[1e-3]:.3f}")
        if round_number == attacked[-1]:
            fpr, tpr, _ = roc_curve(view.eval_members, scores, drop_intermediate=False)  # every operating point
            roc += [{"attack": name, "fpr": f, "tpr": t} for f, t in zip(fpr, tpr)]
            per_class += _per_class(name, scores, view.eval_members, labels, attack.threshold)
    return LeakageReport(pd.DataFrame(rows, columns=LEAKAGE_COLUMNS + EXTRA_COLUMNS).round(6),
                         pd.DataFrame(roc, columns=ROC_COLUMNS).round(6), pd.DataFrame(per_class, columns=PER_CLASS_COLUMNS).round(6),
                         None if rows else _why_empty(run, view, specs, attacked))


def _why_empty(run: Run, view, names: Sequence[str], attacked: Sequence[int]) -> str:
    """One line: why an adversary's run has no leakage rows."""
    adversary = run.config.adversary
    if not names:
        return "no attack configured (attacks: [])"
    if not view.observation.rounds:
        if view.attacker == "server" and view.target != "global":
            return (f"the server never received client {adversary.victim}'s model (client sampling left it out of every round, "
                    "or it failed or dropped out); raise the strategy's fraction_train or run more rounds")
        return (f"the curious participant (client {adversary.victim}) never received a global model (client sampling left it out of "
                "every round, or it dropped out); raise the strategy's fraction_train or run more rounds")
    if not attacked:
        return f"none of the rounds asked for was observed (observed rounds: {view.observation.rounds})"
    return f"no attack observed a snapshot among the rounds kept by observe_rounds ({run.config.observe_rounds})"


def _per_class(name: str, scores: np.ndarray, members: np.ndarray, labels: np.ndarray, threshold: float) -> list[dict]:
    rows = []
    for label in np.unique(labels):
        mask = labels == label
        inside, outside = int(members[mask].sum()), int((~members[mask]).sum())
        if inside and outside:
            result = leakage(scores[mask], members[mask], threshold)
            rows.append({"attack": name, "class": int(label), "auc": result.auc, "accuracy": result.accuracy,
                         "n_members": inside, "n_nonmembers": outside})
    return rows
