"""The report's headline is fixed before the run (the config's `headline`, else the first attack listed),
never chosen on the evaluation records: raising another attack's measured leakage cannot move it."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from fedsim.core.config import load_config
from fedsim.core.errors import FedsimError
from fedsim.report.summary import Summary
from fedsim.report.writer import summary_html


def leakage(nasr_auc: float) -> pd.DataFrame:
    """Two rounds of two attacks, in the order of the config's attacks (loss, then nasr)."""
    return pd.DataFrame({
        "round": [1, 1, 2, 2], "attacker": "server", "attack": ["loss", "nasr", "loss", "nasr"], "target": "client-000",
        "observed_rounds": ["1", "1", "2", "1;2"], "auc": [0.61, 0.58, 0.64, nasr_auc], "accuracy": 0.6,
        "tpr_at_fpr_1e-2": [0.02, 0.03, 0.04, 0.05], "tpr_at_fpr_1e-3": float("nan"), "n_members": 100, "n_nonmembers": 100,
        "canary_epsilon_lower_bound": [0.1, 0.9, 0.2, 1.4],
    })


def headline_sentence(summary: Summary) -> str:
    page = summary_html(summary)
    return re.sub(r"<[^>]+>", "", re.search(r'<p class="headline">(.*?)</p>', page, re.S).group(1))


@pytest.mark.parametrize("configured", [None, "loss", "nasr"])
def test_the_headline_attack_does_not_move_when_another_attacks_leakage_rises(configured):
    fixed = configured or "loss"  # default: the first attack listed
    other = "nasr" if fixed == "loss" else "loss"
    for raised in (0.55, 0.70, 0.99):  # nasr's last-round AUC below, above and far above loss's 0.64
        table = leakage(raised)
        if other == "loss":
            table.loc[table["attack"] == "loss", "auc"] = raised
        summary = Summary(table, pd.DataFrame(), "words", configured)
        assert summary.headline["attack"] == fixed and summary.headline["round"] == 2
        assert summary.per_attack["attack"].tolist()[0] == fixed  # first in the table, whatever the AUCs
        sentence = headline_sentence(summary)
        assert f"'s {fixed} attack" in sentence and f"AUC {summary.headline['auc']!r}" in sentence
        # the privacy audit in the summary is the headline attack's canary bound, not the largest over attacks
        audit = re.search(r"Privacy audit of the headline attack.*?</p>", summary_html(summary), re.S).group(0)
        assert f'data-row="{summary.headline.name}" data-column="canary_epsilon_lower_bound"' in audit


def test_a_summary_without_a_configured_headline_takes_the_first_attack_in_leakage_csv():
    summary = Summary(leakage(0.99), pd.DataFrame(), "words")
    assert summary.headline_name == "loss" and summary.headline.name == 2


def test_a_headline_attack_without_rows_says_so_instead_of_taking_another():
    summary = Summary(leakage(0.99), pd.DataFrame(), "words", "lira")
    assert summary.headline is None
    assert "The headline attack, lira, has no row in leakage.csv." in summary_html(summary)


def test_the_config_headline_defaults_to_the_first_attack_and_must_be_one_of_them():
    assert load_config(None, ["attacks=[trajectory, loss]"], default_file=False).headline_attack() == "trajectory"
    assert load_config(None, ["attacks=[trajectory, loss]", "headline=loss"], default_file=False).headline_attack() == "loss"
    with pytest.raises(FedsimError, match="headline is lira, which is not listed in attacks") as refused:
        load_config(None, ["attacks=[trajectory, loss]", "headline=lira"], default_file=False)
    assert "\n" not in str(refused.value)
