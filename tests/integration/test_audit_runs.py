"""The privacy audit on real (small) runs: bounds below the accountant's epsilon, nothing proven
on a control, canaries recorded and audited, calibrated attacks refused without references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attackers.inference.audit import accountant_epsilon, audit_delta, empirical_epsilon
from attackers.inference.registry import make_attack
from attackers.inference.threat_models import attacker_view
from conftest import small_config
from fedsim.app.cli import main
from fedsim.app.experiment import run_experiment
from fedsim.learning.membership import ATTACK_EVAL, CANARY
from fedsim.recording.run import Run

ATTACKS = ["loss", "fedmia", "lira", "rmia"]


@pytest.mark.integration
def test_dp_sgd_run_lower_bounds_stay_below_the_accountant_and_a_control_proves_nothing(tmp_path):
    config = small_config(
        "data.num_clients=3", "data.records_per_client=100", "data.nonmembers=300", "adversary.target_records=100",
        "train.batch_size=20", "train.local_epochs=2", "train.rounds=2",
        "defense.dp_sgd={noise_multiplier: 0.5, max_grad_norm: 1.0}", f"attacks={ATTACKS}".replace("'", ""),
        "audit.canaries=40", "audit.guesses=10",
    )
    run = Run.open(run_experiment(config, tmp_path / "dp"))
    leakage = pd.read_csv(run.folder / "metrics/leakage.csv")
    training = pd.read_csv(run.folder / "metrics/training.csv")
    accountant = accountant_epsilon(run.config, training).set_index("round")["epsilon"]
    assert set(leakage["attack"]) == set(ATTACKS) and len(leakage) == 2 * len(ATTACKS)
    for _, row in leakage.iterrows():  # validity: the canaries' 95% lower bound <= the accountant's epsilon, every round
        assert 0 <= row["canary_epsilon_lower_bound"] <= accountant[row["round"]]
        # the empirical epsilon is no DP bound, but a run this noisy keeps it below too
        assert 0 <= row["epsilon_empirical"] <= accountant[row["round"]]
        assert 0 <= row["epsilon_empirical_holdout"] <= accountant[row["round"]]
        assert row["epsilon_empirical_point"] >= row["epsilon_empirical"]

    ledger = run.membership
    canaries = ledger[ledger["role"] == CANARY]
    assert len(canaries) == 40 and set(canaries.loc[canaries["member"], "client"]) <= {0}
    assert 5 < canaries["member"].sum() < 35  # each in with probability 1/2

    # control: "members" and "non-members" both drawn from one pool nobody trained on
    view = attacker_view(run)
    pool = ledger.loc[(ledger["role"] == ATTACK_EVAL) & ~ledger["member"], "record_id"].to_numpy()
    fake = np.random.default_rng(0).permutation(len(pool)) < len(pool) // 2
    for name in ATTACKS:
        attack = make_attack(name).fit(view.observation, view.train_ids, view.train_members)
        scores = attack.score(view.observation, pool)
        assert empirical_epsilon(scores, fake, audit_delta(run.config), seed=1).epsilon == 0.0


def test_calibrated_attacks_need_the_servers_references(capsys):
    code = main(["run", "--set", "adversary.role=participant", "--set", "attacks=[lira]"])
    err = capsys.readouterr().err
    assert code == 2 and "lira calibrates against the other clients' models" in err and "Traceback" not in err
    code = main(["run", "--set", "defense.secure_aggregation=true", "--set", "attacks=[grad_cosine]"])
    err = capsys.readouterr().err
    assert code == 2 and "grad_cosine reads the victim's own update" in err and "Traceback" not in err
