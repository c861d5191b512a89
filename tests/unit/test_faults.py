"""Injected client faults: reproducible draws, a mod that really raises, a grid that withholds."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from fedsim.core.config import FaultsConfig
from fedsim.engine.faults import DropoutGrid, FaultPlan, InjectedClientFault, failing_client_mod


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


def test_draws_are_pinned_and_do_not_depend_on_the_order_they_are_asked_in():
    """numpy's default_rng([seed, round, client, kind]): the same clients fail in the same rounds on any machine,
    in a resumed run too (which asks only for the later rounds)."""
    plan = FaultPlan(3, 0.3, 0.2)
    cells = [(r, c) for r in range(1, 6) for c in range(4)]
    assert [cell for cell in cells if plan.raises(*cell)] == [(2, 3), (3, 0), (3, 3), (4, 1), (5, 0)]
    assert [cell for cell in cells if plan.drops(*cell)] == [(1, 0), (1, 3), (2, 0), (2, 1), (2, 2), (5, 2)]
    shuffled = [cells[i] for i in np.random.default_rng(0).permutation(len(cells))]
    fresh = FaultPlan(3, 0.3, 0.2)
    assert {cell: (fresh.raises(*cell), fresh.drops(*cell)) for cell in shuffled} == {cell: (plan.raises(*cell), plan.drops(*cell)) for cell in cells}
    # a resumed run asks from round 4 on only: the same answers
    assert [cell for cell in cells[12:] if FaultPlan(3, 0.3, 0.2).raises(*cell)] == [(4, 1), (5, 0)]


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
    branches = set()
    for server_round in range(1, 30):
        branches.add(plan.raises(server_round, 2))
        if plan.raises(server_round, 2):
            with pytest.raises(InjectedClientFault, match=f"client 2 in round {server_round}"):
                mod(_train_message(server_round), context, lambda m, c: "trained")
        else:
            assert mod(_train_message(server_round), context, lambda m, c: "trained") == "trained"
    assert branches == {True, False}  # both branches were exercised
    # a non-training message is never failed, even in a round the plan picks
    picked = next(r for r in range(1, 30) if plan.raises(r, 2))
    evaluate = Message(content=RecordDict({"config": ConfigRecord({"server-round": picked})}), message_type=MessageType.EVALUATE, dst_node_id=7)
    assert mod(evaluate, context, lambda m, c: "evaluated") == "evaluated"


class _Grid:
    def __init__(self):
        self.delivered = []
        self.calls = 0

    def send_and_receive(self, messages, *, timeout=None):
        self.calls += 1
        self.delivered += [m.metadata.dst_node_id for m in messages]
        return ["reply"] * len(messages)

    def get_node_ids(self):
        return [10, 11, 12]


def test_the_grid_withholds_training_from_clients_that_drop_out():
    plan = FaultPlan(1, 0.0, 0.5)
    partitions = {10: 0, 11: 1, 12: 2}
    inner = _Grid()
    grid = DropoutGrid(inner, plan, partitions)
    sizes = set()
    for server_round in range(1, 20):
        inner.delivered = []
        replies = grid.send_and_receive([_train_message(server_round, node) for node in partitions], timeout=1)
        expected = [node for node, p in partitions.items() if not plan.drops(server_round, p)]
        assert inner.delivered == expected and len(replies) == len(expected)
        sizes.add(len(expected))
    assert 3 in sizes and min(sizes) < 3  # rounds with and without clients withheld
    assert grid.get_node_ids() == [10, 11, 12]  # everything else passes through
    evaluate = Message(content=RecordDict({"config": ConfigRecord({"server-round": 1})}), message_type=MessageType.EVALUATE, dst_node_id=10)
    inner.delivered = []
    assert grid.send_and_receive([evaluate], timeout=1) == ["reply"] and inner.delivered == [10]  # only training is withheld


def test_a_round_where_every_client_drops_out_sends_nothing_and_gets_no_reply():
    inner = _Grid()
    grid = DropoutGrid(inner, FaultPlan(1, 0.0, 1.0), {10: 0, 11: 1, 12: 2})
    assert list(grid.send_and_receive([_train_message(4, node) for node in (10, 11, 12)], timeout=1)) == []
    assert inner.delivered == [] and inner.calls == 0  # the inner grid is not even asked
