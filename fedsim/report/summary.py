"""The headline of a run: each attack's leakage at the last observed round, read off metrics/leakage.csv.

The headline is fixed in advance, never chosen on the evaluation records: its attack is the
config's `headline` (default: the first attack listed in `attacks`) and its round the last one
that attack observed. A maximum over rounds and attacks ("worst case") is a selection: it is
chosen by the AUC on one fixed half of the targets (`auc_select`) and reported by the AUC on
the other half (`auc_holdout`), and labelled as selected. The console's final table and the
HTML report's summary both come from here, so they cannot disagree: each row is a row of
leakage.csv, kept with its index there, and the numbers are shown as they are in the file
(never re-rounded). A TPR at an FPR below 1/n_nonmembers is empty in the file and shown as
"n/a (needs >= 1/X non-members)".
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
    """Headline rows of leakage.csv (by index there) and the final utility row of training.csv.

    Attributes
    ----------
    leakage : pandas.DataFrame
        The whole leakage.csv.
    training : pandas.DataFrame
        The whole training.csv.
    threat_model : str
        The threat model in words.
    headline_attack : str or None
        The attack of the headline, fixed before the run (`Config.headline_attack`); None: the
        first attack in leakage.csv (the first listed in the config's `attacks`).
    """

    leakage: pd.DataFrame
    training: pd.DataFrame
    threat_model: str
    headline_attack: str | None = None

    @property
    def headline_name(self) -> str | None:
        """The headline's attack: `headline_attack`, else the first attack in leakage.csv (None without rows)."""
        if self.headline_attack is not None:
            return self.headline_attack
        return None if self.leakage.empty else str(self.leakage["attack"].iloc[0])

    @property
    def per_attack(self) -> pd.DataFrame:
        """For each (attacker, attack, target): its row at the last observed round (fixed in advance).

        The headline attack's row comes first, then the others in leakage.csv's order (the order
        of the config's `attacks`), never ordered by a measured value.
        """
        if self.leakage.empty:
            return self.leakage
        ordered = self.leakage.astype(object).sort_values("round", ascending=False, kind="stable")
        last = ordered.drop_duplicates(["attacker", "attack", "target"]).sort_index()
        return last.sort_values("attack", key=lambda attack: attack != self.headline_name, kind="stable")

    @property
    def headline(self) -> pd.Series | None:
        """The headline attack's row at its last observed round; None without leakage or without a row of that attack."""
        rows = self.per_attack
        rows = rows[rows["attack"] == self.headline_name] if not rows.empty else rows
        return None if rows.empty else rows.iloc[0]

    @property
    def selected(self) -> pd.Series | None:
        """The row with the highest AUC on the selection half of the targets, over every round and attack.

        Report its `auc_holdout` (measured on the other half), not its `auc`. None without
        leakage or for a leakage.csv without the halves (written before they existed).
        """
        if self.leakage.empty or "auc_select" not in self.leakage.columns or self.leakage["auc_select"].isna().all():
            return None
        ordered = self.leakage.astype(object).sort_values(["auc_select", "round"], ascending=[False, True], kind="stable")
        return ordered.iloc[0]

    @property
    def accountant(self) -> pd.Series | None:
        """The training.csv row of the headline's round when it holds DP-SGD's epsilon (`epsilon_max`), else None."""
        headline = self.headline
        if headline is None or "epsilon_max" not in self.training.columns:
            return None
        rows = self.training.astype(object)[self.training["round"] == headline["round"]]
        return None if rows.empty or pd.isna(rows["epsilon_max"].iloc[0]) else rows.iloc[0]

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


def tpr_text(row: pd.Series, column: str) -> str:
    """A TPR cell as text: the value as written, or "n/a (needs >= 1/X non-members)" when not measurable.

    Parameters
    ----------
    row : pandas.Series
        A leakage.csv row.
    column : str
        'tpr_at_fpr_1e-2' or 'tpr_at_fpr_1e-3'.

    Returns
    -------
    str
        The text shown by the console and the report.
    """
    value = row.get(column)
    if value is None or pd.isna(value):
        needed = round(1 / float(column.removeprefix("tpr_at_fpr_")))
        return f"n/a (needs >= {needed} non-members)"
    return display(value)
