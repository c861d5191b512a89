"""Leakage per round: every configured attack, fitted and scored on each round's observation.

Single-snapshot attacks use the snapshot of that round; multi-round attacks combine every
observed snapshot up to it (restricted to `observe_rounds` when set). The rows follow the
columns of metrics/leakage.csv (DESIGN.md section 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from attackers import make_attack
from attackers.threat_models import attacker_view
from fedsim.metrics import leakage
from fedsim.recorder import LEAKAGE_COLUMNS
from fedsim.run import Run


def measure_leakage(
    run: Run,
    attacks: Sequence[str] | None = None,
    rounds: Sequence[int] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> pd.DataFrame:
    """One row per (round, attacker, attack, target) for the run's adversary."""
    view = attacker_view(run)
    if view is None:
        return pd.DataFrame(columns=LEAKAGE_COLUMNS)
    names = list(attacks if attacks is not None else run.config.attacks)
    keep = run.config.observe_rounds
    rows = []
    for round_number in view.observation.rounds:
        if rounds is not None and round_number not in rounds:
            continue
        for name in names:
            attack = make_attack(name, seed=run.config.seed)
            if attack.multi_round:
                observation = view.observation.up_to(round_number, keep)
                if not observation.rounds:
                    continue
            else:
                observation = view.observation.up_to(round_number, [round_number])
            attack.fit(observation, view.train_ids, view.train_members)
            result = leakage(attack.score(observation, view.eval_ids), view.eval_members, attack.threshold)
            rows.append({
                "round": round_number, "attacker": view.attacker, "attack": name, "target": view.target,
                "observed_rounds": ";".join(map(str, observation.rounds)), **result.as_row(),
            })
            progress(f"round {round_number:>3}  {view.attacker} {name:<14} AUC {result.auc:.3f}  TPR@1e-3 {result.tpr_at_fpr[1e-3]:.3f}")
    frame = pd.DataFrame(rows, columns=LEAKAGE_COLUMNS)
    return frame.round(6)
