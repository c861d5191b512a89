"""The active attacks without Ray: the ascent step against torch.autograd, the curious server's
strategy wrapper and the curious participant's mod driven with real Flower Messages and the real
ClientApp (the in-process grid of test_strategies), FedAvg's weighting with unequal clients.

The ascent reference below is the one place that says what a step is (issue 14 may change its
scale): W + gamma * d(mean cross-entropy over the targets)/dW, every other tensor unchanged.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, RecordDict
from flwr.serverapp.strategy import FedAvg
from torch import nn

from attackers.active.curious_participant import make_participant_mod
from attackers.active.curious_server import CuriousServer
from attackers.active.gradient_ascent import ascent_step
from conftest import small_config
from fedsim.core.config import ParticipantAdversary, ServerAdversary
from fedsim.core.errors import FedsimError
from fedsim.core.messages import PARTITION_KEY, partition_of
from fedsim.engine.client_app import make_client_app
from fedsim.engine.inprocess import server_identity
from fedsim.learning.datasets import pool_for
from fedsim.learning.models import model_for
from helpers import NODE, assert_states_close, assert_states_equal
from helpers import RecordingGrid as InProcessGrid
from helpers import fedavg_reference as _fedavg_reference

NUM_CLIENTS = 4
SIZES = (20, 35, 50, 65)  # unequal on purpose: an unweighted mean differs from FedAvg's


@pytest.fixture(autouse=True)
def _server_identity():
    with server_identity():
        yield


def expected_ascent(model: nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor, gamma: float) -> dict:
    """W + gamma * dL/dW with L the mean cross-entropy over (x, y), from torch.autograd.grad."""
    model = copy.deepcopy(model)
    model.load_state_dict(state)
    model.eval()
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = dict(zip(names, torch.autograd.grad(loss, [dict(model.named_parameters())[n] for n in names])))
    return {k: (v + gamma * grads[k]) if k in grads else v.clone() for k, v in state.items()}


@pytest.fixture(scope="module")
def setting():
    config = small_config(f"data.num_clients={NUM_CLIENTS}", "train.rounds=3", "adversary.mode=gradient-ascent")
    pool = pool_for(config.data)
    rng = np.random.default_rng(0)
    ids = rng.permutation(len(pool.labels))
    starts = np.cumsum((0, *SIZES))
    records = {c: ids[starts[c]:starts[c + 1]] for c in range(NUM_CLIENTS)}
    targets = pool.take(ids[starts[-1]:starts[-1] + 30])
    torch.manual_seed(0)
    initial = model_for(config).state_dict()
    return config, records, targets, initial


def test_ascent_step_is_the_state_plus_gamma_times_the_autograd_gradient(setting):
    config, _, (x, y), initial = setting
    model = model_for(config)
    for gamma, batch_size in ((1.0, 1024), (0.3, 7)):  # 7: several batches, still the mean over all targets
        expected = expected_ascent(model, initial, x, y, gamma)
        assert_states_close(ascent_step(model_for(config), initial, x, y, gamma, batch_size=batch_size), expected)
    # the step raises the targets' loss (the direction of the ascent)
    before = nn.functional.cross_entropy(torch.func.functional_call(model, initial, (x,)), y)
    after = nn.functional.cross_entropy(torch.func.functional_call(model, ascent_step(model_for(config), initial, x, y, 0.5), (x,)), y)
    assert after > before


def test_a_non_finite_ascent_is_refused_with_one_line(setting):
    config, _, (x, y), initial = setting
    with pytest.raises(FedsimError) as error:
        ascent_step(model_for(config), initial, x, y, gamma=1e38, where=" of round 3")
    assert "non-finite" in str(error.value) and "round 3" in str(error.value) and "\n" not in str(error.value)


def _grid_and_app(config, records, mods=()):
    app = make_client_app(config, records, mods=mods)
    return InProcessGrid(app, NUM_CLIENTS), app


def _server(config, targets, **adversary):
    settings = ServerAdversary(**{**config.adversary.model_dump(), **adversary})
    partitions = {NODE + i: i for i in range(NUM_CLIENTS)}
    return CuriousServer(FedAvg(fraction_evaluate=0.0), settings, partitions, lambda: model_for(config), targets)


def test_fedavg_weights_each_client_by_its_examples(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, mode="passive")
    messages = list(server.configure_train(1, ArrayRecord(initial), ConfigRecord(), grid))
    replies = grid.send_and_receive(messages)
    assert sorted(int(r.content["metrics"]["num-examples"]) for r in replies) == sorted(SIZES)
    aggregate, _ = server.aggregate_train(1, replies)
    assert_states_close({k: v.double() for k, v in aggregate.to_torch_state_dict().items()}, _fedavg_reference(replies),
                        rtol=0, atol=1e-6)


def test_the_curious_server_sends_the_ascent_step_to_the_victim_only_in_its_active_rounds(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, victim=2, gamma=0.5, active_rounds=[2])
    for server_round in (1, 2):
        messages = list(server.configure_train(server_round, ArrayRecord(initial), ConfigRecord({"server-round": server_round}), grid))
        assert sorted(m.metadata.dst_node_id for m in messages) == [NODE, NODE + 1, NODE + 2, NODE + 3]
        for message in messages:
            sent = message.content["arrays"].to_torch_state_dict()
            if message.metadata.dst_node_id == NODE + 2 and server_round == 2:
                assert_states_close(sent, expected_ascent(model_for(config), initial, *targets, 0.5))
            else:  # every other client, and the victim outside the active rounds, gets the aggregate itself
                assert_states_equal(sent, initial)


def test_sent_to_all_sends_every_client_the_ascended_aggregate_in_the_active_rounds_only(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, victim=2, gamma=0.5, active_rounds=[2], sent_to="all")
    ascended = expected_ascent(model_for(config), initial, *targets, 0.5)
    for server_round in (1, 2):
        messages = list(server.configure_train(server_round, ArrayRecord(initial), ConfigRecord({"server-round": server_round}), grid))
        assert sorted(m.metadata.dst_node_id for m in messages) == [NODE, NODE + 1, NODE + 2, NODE + 3]
        for message in messages:
            sent = message.content["arrays"].to_torch_state_dict()
            if server_round == 2:  # the victim and the honest clients alike (Nasr et al.'s active global attacker)
                assert_states_close(sent, ascended)
            else:
                assert_states_equal(sent, initial)


def test_sent_to_all_under_isolation_ascends_the_victims_chain_and_the_others_aggregate(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, victim=1, isolate=True, gamma=0.2, sent_to="all")
    replies = grid.send_and_receive(list(server.configure_train(1, ArrayRecord(initial), ConfigRecord({"server-round": 1}), grid)))
    aggregate, _ = server.aggregate_train(1, replies)
    victim_reply = next(r for r in replies if partition_of(r) == 1).content["arrays"].to_torch_state_dict()
    for message in server.configure_train(2, aggregate, ConfigRecord({"server-round": 2}), grid):
        start = victim_reply if message.metadata.dst_node_id == NODE + 1 else aggregate.to_torch_state_dict()
        assert_states_close(message.content["arrays"].to_torch_state_dict(), expected_ascent(model_for(config), start, *targets, 0.2))


def test_passive_server_leaves_the_messages_untouched(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, mode="passive")
    inner = list(server.inner.configure_train(1, ArrayRecord(initial), ConfigRecord(), grid))
    wrapped = list(server.configure_train(1, ArrayRecord(initial), ConfigRecord(), grid))
    assert sorted(m.metadata.dst_node_id for m in wrapped) == sorted(m.metadata.dst_node_id for m in inner) == [NODE, NODE + 1, NODE + 2, NODE + 3]
    for message in wrapped:
        assert_states_equal(message.content["arrays"].to_torch_state_dict(), initial)


def test_isolation_keeps_the_victim_out_of_the_aggregate_and_continues_its_own_chain(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, victim=1, isolate=True, gamma=0.2)
    messages = list(server.configure_train(1, ArrayRecord(initial), ConfigRecord({"server-round": 1}), grid))
    replies = grid.send_and_receive(messages)
    aggregate, _ = server.aggregate_train(1, replies)
    assert_states_close({k: v.double() for k, v in aggregate.to_torch_state_dict().items()}, _fedavg_reference(replies, exclude=1),
                        rtol=0, atol=1e-6)
    victim_reply = next(r for r in replies if partition_of(r) == 1).content["arrays"].to_torch_state_dict()
    messages = list(server.configure_train(2, aggregate, ConfigRecord({"server-round": 2}), grid))
    for message in messages:
        sent = message.content["arrays"].to_torch_state_dict()
        if message.metadata.dst_node_id == NODE + 1:  # its own round-1 model plus the ascent step, not the aggregate
            assert_states_close(sent, expected_ascent(model_for(config), victim_reply, *targets, 0.2))
        else:
            assert_states_equal(sent, aggregate.to_torch_state_dict())


def test_the_curious_server_refuses_a_non_finite_ascent(setting):
    config, records, targets, initial = setting
    grid, _ = _grid_and_app(config, records)
    server = _server(config, targets, victim=0, gamma=1e38)
    with pytest.raises(FedsimError, match="of round 1 makes the target loss non-finite"):
        list(server.configure_train(1, ArrayRecord(initial), ConfigRecord({"server-round": 1}), grid))


# -- the curious participant's mod alone ------------------------------------------------------------

def _message(kind: str, server_round: int, state: dict, node: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(state), "config": ConfigRecord({"server-round": server_round})})
    return Message(content=content, message_type=kind, dst_node_id=node)


def _context(partition: int) -> Context:
    return Context(run_id=1, node_id=NODE + partition, node_config={PARTITION_KEY: partition}, state=RecordDict(), run_config={})


def _mod(config, targets, **adversary):
    settings = ParticipantAdversary(**{**config.adversary.model_dump(), "role": "participant", **adversary})
    return make_participant_mod(settings, lambda: model_for(config), lambda: targets)


def test_the_participant_mod_adds_the_ascent_step_to_its_own_upload_in_active_rounds(setting):
    config, records, targets, initial = setting
    _, app = _grid_and_app(config, records)
    mod = _mod(config, targets, victim=3, gamma=0.7, active_rounds=[2, 3])
    for server_round in (1, 2, 3):
        message = _message(MessageType.TRAIN, server_round, initial, NODE + 3)
        honest = app(message, _context(3)).content["arrays"].to_torch_state_dict()
        reply = mod(message, _context(3), app)
        uploaded = reply.content["arrays"].to_torch_state_dict()
        if server_round == 1:
            assert_states_equal(uploaded, honest)
        else:
            assert_states_close(uploaded, expected_ascent(model_for(config), honest, *targets, 0.7))


def test_the_participant_mod_passes_other_clients_and_other_messages_through_untouched(setting):
    config, records, targets, initial = setting
    _, app = _grid_and_app(config, records)
    mod = _mod(config, targets, victim=3, gamma=0.7)
    calls = []

    def call_next(message, context):
        reply = app(message, context)
        calls.append((reply, {k: v.clone() for k, v in reply.content["arrays"].to_torch_state_dict().items()}
                      if "arrays" in reply.content else None))
        return reply

    for partition in (0, 1, 2):  # honest clients: their uploads are exactly their own training
        assert mod(_message(MessageType.TRAIN, 1, initial, NODE + partition), _context(partition), call_next) is calls[-1][0]
        assert_states_equal(calls[-1][0].content["arrays"].to_torch_state_dict(), calls[-1][1])
        assert_states_equal(calls[-1][1], app(_message(MessageType.TRAIN, 1, initial, NODE + partition), _context(partition))
                            .content["arrays"].to_torch_state_dict())
    # the attacker's own non-training message (evaluation) passes untouched
    evaluate = _message(MessageType.EVALUATE, 1, initial, NODE + 3)
    seen = []
    reply = mod(evaluate, _context(3), lambda m, c: seen.append(m) or Message(content=RecordDict({"arrays": ArrayRecord(initial)}), reply_to=m))
    assert seen == [evaluate] and reply.content["arrays"].to_torch_state_dict().keys() == initial.keys()
    assert_states_equal(reply.content["arrays"].to_torch_state_dict(), initial)


def test_the_participant_mod_returns_an_error_reply_as_it_is(setting):
    config, _, targets, initial = setting
    mod = _mod(config, targets, victim=3, gamma=0.7)
    message = _message(MessageType.TRAIN, 1, initial, NODE + 3)
    failed = Message(Error(code=0, reason="client crashed"), reply_to=message)
    reply = mod(message, _context(3), lambda m, c: failed)
    assert reply is failed and reply.has_error() and reply.error.reason == "client crashed"


def test_the_participant_mod_refuses_a_non_finite_ascent(setting):
    config, records, targets, initial = setting
    _, app = _grid_and_app(config, records)
    mod = _mod(config, targets, victim=3, gamma=1e38)
    with pytest.raises(FedsimError, match="of round 1 makes the target loss non-finite"):
        mod(_message(MessageType.TRAIN, 1, initial, NODE + 3), _context(3), app)
