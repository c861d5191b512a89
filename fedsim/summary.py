"""The headline of a run: its worst-case leakage, read off metrics/leakage.csv.

The console's final table and the HTML report's summary both come from here, so they cannot
disagree: each row is a row of leakage.csv, kept with its index there, and the numbers are
shown as they are in the file (never re-rounded).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# Columns of a leakage row a person compares first, with their labels.
HEADLINE_COLUMNS = {
    "round": "round",
    "attacker": "attacker",
    "attack": "attack",
    "target": "target",
    "auc": "AUC",
    "auc_ci_low": "AUC 95% low",
    "auc_ci_high": "AUC 95% high",
    "accuracy": "accuracy",
    "tpr_at_fpr_1e-2": "TPR@FPR 1e-2",
    "tpr_at_fpr_1e-3": "TPR@FPR 1e-3",
    "n_members": "members",
    "n_nonmembers": "non-members",
}


@dataclass(frozen=True)
class Summary:
    """Worst rows of leakage.csv (by index there) and the final utility row of training.csv."""

    leakage: pd.DataFrame  # the whole leakage.csv
    training: pd.DataFrame  # the whole training.csv
    threat_model: str

    @property
    def per_attack(self) -> pd.DataFrame:
        """For each (attacker, attack, target): its row with the highest AUC, earliest round on ties."""
        if self.leakage.empty:
            return self.leakage
        ordered = self.leakage.astype(object).sort_values(["auc", "round"], ascending=[False, True], kind="stable")
        best = ordered.drop_duplicates(["attacker", "attack", "target"])
        return best.sort_values("auc", ascending=False, kind="stable")

    @property
    def worst(self) -> pd.Series | None:
        """The row with the highest AUC over every round, attacker and attack (None without leakage)."""
        rows = self.per_attack
        return None if rows.empty else rows.iloc[0]

    @property
    def worst_low_fpr(self) -> pd.Series | None:
        """The row with the highest TPR at FPR 1e-3, the low-FPR view of the worst case."""
        if self.leakage.empty:
            return None
        ordered = self.leakage.astype(object).sort_values(["tpr_at_fpr_1e-3", "auc", "round"], ascending=[False, False, True], kind="stable")
        return ordered.iloc[0]

    @property
    def final_training(self) -> pd.Series | None:
        return None if self.training.empty else self.training.astype(object).iloc[-1]  # object: ints stay ints

    def headline_columns(self) -> dict[str, str]:
        """The headline columns this leakage.csv has (older runs may lack the AUC interval)."""
        return {column: label for column, label in HEADLINE_COLUMNS.items() if column in self.leakage.columns}


def display(value) -> str:
    """A table value as text that parses back to the same number (repr of floats, never re-rounded)."""
    value = value.item() if hasattr(value, "item") else value  # numpy scalars
    return repr(value) if isinstance(value, float) else str(value)
