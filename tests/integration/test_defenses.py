"""Defences in real Ray simulations: DP-SGD's epsilon, client-side clipping, secure aggregation,
each composed with a curious server."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from opacus.accountants import RDPAccountant

from attackers.active.curious_server import CuriousServer
from conftest import small_config
from fedsim import Run
from fedsim.app.experiment import run_experiment
from fedsim.core.messages import AGGREGATE, partition_of

pytestmark = pytest.mark.integration


def update_norm(run: Run, round_number: int, client: int) -> float:
    sent, returned = run.state(round_number - 1), run.state(round_number, client)
    return math.sqrt(sum(float(((returned[k].double() - sent[k].double()) ** 2).sum()) for k in sent))


def test_dp_sgd_epsilon_is_opacus_accountants_and_client_clipping_bounds_updates(tmp_path):
    config = small_config(
        "data.num_clients=3", "data.records_per_client=60", "train.batch_size=32", "train.local_epochs=1", "train.rounds=2",
        "defense.dp_sgd={noise_multiplier: 1.1, max_grad_norm: 1.0, delta: 1.0e-5}",
        "strategy.name=dp-client-fixed", "strategy.args={noise_multiplier: 0.01, clipping_norm: 0.05}",
    )
    run = Run.open(run_experiment(config, tmp_path / "dp"))
    training = pd.read_csv(run.folder / "metrics/training.csv")
    sample_rate, steps_per_round = 1 / math.ceil(60 / 32), math.ceil(60 / 32)
    for round_number in (1, 2):
        accountant = RDPAccountant()
        for _ in range(steps_per_round * round_number):
            accountant.step(noise_multiplier=1.1, sample_rate=sample_rate)
        expected = accountant.get_epsilon(delta=1e-5)
        row = training[training["round"] == round_number].iloc[0]
        assert row["epsilon_max"] == pytest.approx(expected, rel=1e-9)
        for client in range(3):
            assert row[f"epsilon_client_{client:03d}"] == pytest.approx(expected, rel=1e-9)
            assert update_norm(run, round_number, client) <= 0.05 * (1 + 1e-4)  # fixedclipping_mod ran on the client
    assert training["epsilon_max"].iloc[2] > training["epsilon_max"].iloc[1]  # privacy loss accumulates over rounds
    assert set(pd.read_csv(run.folder / "metrics/leakage.csv")["target"]) == {"client-000"}


def test_under_secure_aggregation_the_server_attacker_never_receives_an_individual_update(tmp_path, monkeypatch):
    seen: list[int] = []
    original = CuriousServer.aggregate_train

    def spy(self, server_round, replies):
        replies = list(replies)
        seen.extend(partition_of(r) for r in replies if not r.has_error())
        return original(self, server_round, replies)

    monkeypatch.setattr(CuriousServer, "aggregate_train", spy)  # the ServerApp runs in this process
    config = small_config("data.num_clients=3", "defense.secure_aggregation=true", "strategy.name=fedadam",
                          "adversary.mode=gradient-ascent", "adversary.gamma=0.1")
    run = Run.open(run_experiment(config, tmp_path / "secagg"))
    assert seen == [AGGREGATE, AGGREGATE]  # one aggregate per round, never a client's update
    assert run.status == "complete" and not list(run.folder.glob("rounds/*/clients"))
    for round_number in (1, 2):
        assert run.clients(round_number) == [] and run.manifest.rounds[round_number].secure_sum == [0, 1, 2]
        assert (run.folder / f"rounds/{round_number:04d}/broadcast/client-000.safetensors").is_file()  # the active step
    training = pd.read_csv(run.folder / "metrics/training.csv")
    assert training["clients"].tolist()[1:] == [3, 3]
    assert set(pd.read_csv(run.folder / "metrics/leakage.csv")["target"]) == {"global"}
    assert all(torch.isfinite(t).all() for t in run.state(2).values())


def test_dp_sgd_refuses_batchnorm_models_in_one_line():
    from torchvision.models import resnet18

    from fedsim.core.errors import FedsimError
    from fedsim.learning.dp_sgd import check_model

    with pytest.raises(FedsimError, match="cannot be trained with DP-SGD .*BatchNorm"):
        check_model(resnet18(num_classes=10), "resnet18")
    check_model(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)), "fcn")


@pytest.mark.parametrize(("overrides", "expected"), [
    (["strategy.name=fedprox", "strategy.args={proximal_mu: 0.1}", "defense.dp_sgd={}"], "proximal term cannot be combined"),
    (["strategy.name=dp-client-fixed", "strategy.base={name: krum}", "defense.secure_aggregation=true"], "Krum needs each client's update"),
    (["defense.dp_sgd={noise_multiplier: -1}"], "defense.dp_sgd.noise_multiplier"),
])
def test_inconsistent_defences_give_one_line_and_exit_2(overrides, expected, capsys):
    from fedsim.app.cli import main

    assert main(["run", *(a for o in overrides for a in ("--set", o))]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
