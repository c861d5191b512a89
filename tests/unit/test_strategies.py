"""Strategies: every registered strategy completes a real round; custom strategies by import path;
the norm-bounding example; one-line errors for bad names."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, MessageType

from conftest import small_config
from fedsim.app.cli import main
from fedsim.core.config import StrategyConfig
from fedsim.engine.client_app import make_client_app
from fedsim.engine.inprocess import server_identity
from fedsim.learning.datasets import pool_for
from fedsim.learning.membership import build_ledger
from fedsim.learning.models import model_for
from helpers import DP, STRATEGY_ARGS
from helpers import RecordingGrid as InProcessGrid
from strategies import STRATEGIES, build_strategy, train_mods
from strategies.norm_bounded import NormBoundedFedAvg

NUM_CLIENTS = 4
ARGS = STRATEGY_ARGS


@pytest.fixture(autouse=True)
def _server_identity():
    with server_identity():
        yield


def one_round(spec: StrategyConfig, *overrides: str):
    """A strategy's real round: configure_train, the ClientApp on every message, aggregate_train."""
    config = small_config(f"data.num_clients={NUM_CLIENTS}", "train.rounds=1", *overrides)
    pool = pool_for(config.data)
    ledger = build_ledger(config, pool)
    members = ledger[ledger["member"]]
    records = {int(c): g["record_id"].to_numpy() for c, g in members.groupby("client")}
    grid = InProcessGrid(make_client_app(config, records, train_mods=train_mods(spec)), NUM_CLIENTS)
    strategy = build_strategy(spec, NUM_CLIENTS, config.train.lr)
    torch.manual_seed(0)
    initial = ArrayRecord(model_for(config).state_dict())
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=1)
    return initial, result, grid


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_registered_strategy_completes_a_real_round(name):
    initial, result, grid = one_round(StrategyConfig(name=name, args=ARGS.get(name, {})))
    assert sum(m.metadata.message_type == MessageType.TRAIN for m in grid.sent) == NUM_CLIENTS
    new = result.arrays.to_torch_state_dict()
    before = initial.to_torch_state_dict()
    assert new.keys() == before.keys()
    assert all(torch.isfinite(t).all() for t in new.values())
    assert any(not torch.equal(new[k], before[k]) for k in new)  # the round moved the model
    assert 1 in result.train_metrics_clientapp


def test_fedprox_clients_apply_the_proximal_term():
    start, plain, _ = one_round(StrategyConfig(name="fedprox", args={"proximal_mu": 0.0}), "train.local_epochs=5")
    _, strong, grid = one_round(StrategyConfig(name="fedprox", args={"proximal_mu": 10.0}), "train.local_epochs=5")
    assert float(grid.sent[0].content["config"]["proximal-mu"]) == 10.0
    # the proximal term pulls the local models, and so their average, back to where they started
    initial = start.to_torch_state_dict()
    def distance(r):
        return sum(((r.arrays.to_torch_state_dict()[k] - initial[k]) ** 2).sum() for k in initial)

    assert distance(strong) < 0.5 * distance(plain)


def test_a_dp_wrapper_wraps_the_configured_base():
    spec = StrategyConfig(name="dp-server-fixed", args=DP, base=StrategyConfig(name="fedmedian"))
    built = build_strategy(spec, NUM_CLIENTS, 0.05)
    assert type(built.strategy).__name__ == "FedMedian" and built.num_sampled_clients == NUM_CLIENTS
    sampled = build_strategy(StrategyConfig(name="dp-client-fixed", args=DP, base=StrategyConfig(name="fedavg", args={"fraction_train": 0.5})), 8, 0.05)
    assert sampled.num_sampled_clients == 4


def test_custom_strategy_loaded_from_a_file_outside_the_package(tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "my_strategies.py").write_text(
        "from flwr.serverapp.strategy import FedAvg\n\n"
        "class HalfStep(FedAvg):\n"
        "    '''FedAvg that moves the global model half-way to the average.'''\n"
        "    def configure_train(self, server_round, arrays, config, grid):\n"
        "        self.sent = arrays\n"
        "        return super().configure_train(server_round, arrays, config, grid)\n\n"
        "    def aggregate_train(self, server_round, replies):\n"
        "        arrays, metrics = super().aggregate_train(server_round, replies)\n"
        "        half = {k: (v.numpy() + self.sent[k].numpy()) / 2 for k, v in arrays.items()}\n"
        "        from flwr.app import Array, ArrayRecord\n"
        "        return ArrayRecord({k: Array(v) for k, v in half.items()}), metrics\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    assert "my_strategies" not in sys.modules
    initial, half, _ = one_round(StrategyConfig(name="my_strategies:HalfStep"))
    _, full, _ = one_round(StrategyConfig(name="fedavg"))
    start = initial.to_torch_state_dict()
    for key, value in half.arrays.to_torch_state_dict().items():
        torch.testing.assert_close(value, (start[key] + full.arrays.to_torch_state_dict()[key]) / 2)


def test_norm_bound_scales_only_updates_above_the_bound():
    strategy = NormBoundedFedAvg(max_update_norm=1.0)
    strategy.sent = {"w": np.zeros(4, dtype=np.float32)}
    from flwr.app import Array

    large = strategy.bound(ArrayRecord({"w": Array(np.array([3.0, 4.0, 0.0, 0.0], dtype=np.float32))}))["w"].numpy()
    small = strategy.bound(ArrayRecord({"w": Array(np.array([0.3, 0.4, 0.0, 0.0], dtype=np.float32))}))["w"].numpy()
    np.testing.assert_allclose(large, [0.6, 0.8, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(small, [0.3, 0.4, 0.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError):
        NormBoundedFedAvg(max_update_norm=0)


@pytest.mark.parametrize(("overrides", "expected"), [
    (["strategy.name=fedavgx"], "unknown strategy 'fedavgx'"),
    (["strategy.name=no_such_module:Thing"], "cannot import module 'no_such_module'"),
    (["strategy.name=fedsim.core.config:Nope"], "has no 'Nope'"),
    (["strategy.name=fedsim.core.config:Config"], "is not a flwr.serverapp.strategy.Strategy subclass"),
    (["strategy.base={name: fedavg}"], "fedavg is not a wrapper strategy"),
    (["strategy.name=dp-server-fixed", "strategy.args={clipping_norm: 1.0}"], "dp-server-fixed rejected its arguments"),
    (["strategy.name=krum", "defense.secure_aggregation=true"], "needs each client's update"),
])
def test_bad_strategy_gives_one_line_and_exit_2(overrides, expected, capsys):
    argv = ["run", "--set", "train.rounds=1"] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err
