"""Injected client faults: reproducible draws, a mod that really raises, a grid that withholds."""

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedsim.config import FaultsConfig
from fedsim.faults import DropoutGrid, FaultPlan, InjectedClientFault, failing_client_mod


def test_draws_depend_only_on_seed_round_and_client_and_match_the_rates():
    plan = FaultPlan.from_config(3, FaultsConfig(client_error_rate=0.2, client_dropout_rate=0.1))
    cells = [(r, c) for r in range(1, 201) for c in range(10)]
    raises = [plan.raises(r, c) for r, c in cells]
    drops = [plan.drops(r, c) for r, c in cells]
    assert raises == [FaultPlan(3, 0.2, 0.1).raises(r, c) for r, c in cells]
    assert raises != [FaultPlan(4, 0.2, 0.1).raises(r, c) for r, c in cells]
    assert abs(sum(drops) / len(cells) - 0.1) < 0.02
    assert abs(sum(raises) / len(cells) - 0.2 * 0.9) < 0.03  # a client that dropped out cannot also fail
    assert not any(r and d for r, d in zip(raises, drops))
    assert not any(FaultPlan(3, 0.0, 0.0).raises(r, c) or FaultPlan(3, 0.0, 0.0).drops(r, c) for r, c in cells)


@pytest.fixture(autouse=True)
def server_identity(monkeypatch):
    """Messages are built by a server task; outside a simulation, give the process one."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _train_message(server_round: int, node: int = 7) -> Message:
    return Message(content=RecordDict({"config": ConfigRecord({"server-round": server_round})}),
                   message_type=MessageType.TRAIN, dst_node_id=node)


def test_the_client_mod_raises_exactly_in_the_picked_rounds():
    plan = FaultPlan(0, 0.5, 0.0)
    mod = failing_client_mod(plan, "partition-id")
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 2}, state=RecordDict(), run_config={})
    for server_round in range(1, 30):
        if plan.raises(server_round, 2):
            with pytest.raises(InjectedClientFault, match=f"client 2 in round {server_round}"):
                mod(_train_message(server_round), context, lambda m, c: "trained")
        else:
            assert mod(_train_message(server_round), context, lambda m, c: "trained") == "trained"


class _Grid:
    def __init__(self):
        self.delivered = []

    def send_and_receive(self, messages, *, timeout=None):
        self.delivered += [m.metadata.dst_node_id for m in messages]
        return ["reply"] * len(messages)

    def get_node_ids(self):
        return [10, 11, 12]


def test_the_grid_withholds_training_from_clients_that_drop_out():
    plan = FaultPlan(1, 0.0, 0.5)
    partitions = {10: 0, 11: 1, 12: 2}
    inner = _Grid()
    grid = DropoutGrid(inner, plan, partitions)
    for server_round in range(1, 20):
        inner.delivered = []
        replies = grid.send_and_receive([_train_message(server_round, node) for node in partitions], timeout=1)
        expected = [node for node, p in partitions.items() if not plan.drops(server_round, p)]
        assert inner.delivered == expected and len(replies) == len(expected)
    assert grid.get_node_ids() == [10, 11, 12]  # everything else passes through
