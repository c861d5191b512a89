"""The server's wrapper stack, outermost first (no Ray: the stack is built, not run)."""

import torch
from flwr.serverapp.strategy import FedAvg

from attackers.active.adversary import server_wrapper
from attackers.active.curious_server import CuriousServer
from conftest import small_config
from fedsim.engine.server_app import RecordingStrategy, RoundClock, ServerPlan, wrapper_stack
from fedsim.learning.datasets import pool_for
from fedsim.learning.membership import build_ledger
from fedsim.learning.models import model_for
from fedsim.recording.recorder import Recorder
from strategies.registry import build_strategy
from strategies.secure_aggregation import SecureAggregation


def plan_for(config, tmp_path) -> ServerPlan:
    ledger = build_ledger(config, pool_for(config.data))
    strategy = build_strategy(config.strategy, config.data.num_clients, config.train.lr)
    return ServerPlan(strategy, Recorder(tmp_path / "run", config), config.data.num_clients, model_for(config),
                      (torch.zeros(1, 64), torch.zeros(1, dtype=torch.long)), config.train.rounds, config.seed,
                      adversary=server_wrapper(config, ledger), secure_aggregation=config.defense.secure_aggregation)


def test_curious_server_under_secure_aggregation_sits_inside_the_secure_sum_and_the_recorder(tmp_path):
    config = small_config("defense.secure_aggregation=true")
    plan = plan_for(config, tmp_path)
    stack = wrapper_stack(plan, {101: 0, 102: 1, 103: 2, 104: 3}, first_round=3)
    assert [type(s) for s in stack] == [RoundClock, SecureAggregation, RecordingStrategy, CuriousServer, FedAvg]
    assert all(outer.inner is inner for outer, inner in zip(stack, stack[1:]))
    assert stack[-1] is plan.strategy and stack[0].offset == 2


def test_an_honest_server_is_clock_recorder_strategy(tmp_path):
    plan = plan_for(small_config("adversary.role=none"), tmp_path)
    stack = wrapper_stack(plan, {101: 0})
    assert [type(s) for s in stack] == [RoundClock, RecordingStrategy, FedAvg]
    assert stack[1].inner is plan.strategy
