"""The crafted-model server without Ray: the trap neurons fire only on their records, the server
sends the trap to the victim only and keeps its reply out of the aggregate, the victim's real
local training (the real ClientApp, the in-process grid of test_strategies) moves exactly the
traps of its members, and bad settings are one clear line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAvg

from attackers.active.crafted_model import MARGIN, centre, check_crafted, chunk, crafted_state, first_linear_relu
from attackers.active.curious_server import CuriousServer
from attackers.inference.crafted import CraftedAttack, trap_scores
from attackers.inference.observation import Observation
from conftest import shared_data, small_config
from fedsim.core.config import ServerAdversary, load_config
from fedsim.core.errors import FedsimError
from fedsim.core.messages import partition_of
from fedsim.engine.client_app import make_client_app
from fedsim.engine.inprocess import server_identity
from fedsim.learning.datasets import load_pool, pool_for
from fedsim.learning.models import build_model, model_for
from helpers import NODE, assert_states_close, assert_states_equal
from helpers import RecordingGrid as InProcessGrid
from helpers import fedavg_reference as _fedavg_reference

NUM_CLIENTS, VICTIM, PER_CLIENT, WIDTH = 3, 1, 40, 64
RELU = ["model.args={hidden: [64, 32], activation: relu}", "adversary.mode=crafted-model"]


@pytest.fixture(scope="module")
def _server_identity():
    with server_identity():
        yield


def first_layer_fires(state: dict, x: torch.Tensor) -> torch.Tensor:
    """(n_records, width) bool: ReLU > 0 of the first layer, from the state's tensors directly."""
    weight, bias = state["0.weight"].double(), state["0.bias"].double()
    return (x.flatten(1).double() @ weight.T + bias) > 0


def test_on_location_each_trap_fires_on_its_record_and_on_no_other_of_the_5010():
    pool = load_pool("location", shared_data("location"), False)
    x, _ = pool.take(np.arange(len(pool)))
    model = build_model("fcn", pool.input_shape, pool.num_classes, {"hidden": [256, 64], "activation": "relu"})
    trapped = np.random.default_rng(0).choice(len(pool), 256, replace=False)
    state = crafted_state(model, model.state_dict(), x[trapped], centre(x))
    fires = first_layer_fires(state, x)  # every record of the data set against every trap
    expected = torch.zeros_like(fires)
    expected[torch.as_tensor(trapped), torch.arange(256)] = True
    assert torch.equal(fires, expected)  # binary features: the record is the only input above its trap's bias


def test_on_digits_a_trap_fires_on_its_record_with_the_set_margin_and_unused_neurons_are_off():
    config = small_config(*RELU)
    pool = pool_for(config.data)
    x, _ = pool.take(np.arange(len(pool)))
    model = model_for(config)
    trapped = np.arange(0, 400, 10)  # 40 traps, 24 neurons unused
    c = centre(x)
    state = crafted_state(model, model.state_dict(), x[trapped], c)
    pre = x.flatten(1).double() @ state["0.weight"].double().T + state["0.bias"].double()
    own = pre[torch.as_tensor(trapped), torch.arange(40)]
    radius = torch.linalg.vector_norm(x[trapped].flatten(1).double() - c.double(), dim=1)
    torch.testing.assert_close(own, MARGIN * radius, rtol=1e-3, atol=1e-6)  # positive by the margin, in float32 weights
    assert not (pre[:, 40:] > 0).any()  # neurons without a record never fire
    others = (pre[:, :40] > 0).sum(0) - 1
    assert (others >= 0).all() and others.float().mean() < 0.2  # collisions: other records "containing" the trapped one, rare
    # later layers keep the aggregate's weights, with biases that keep every hidden unit active when the first layer is silent
    assert torch.equal(state["2.weight"], model.state_dict()["2.weight"]) and torch.equal(state["4.weight"], model.state_dict()["4.weight"])
    torch.testing.assert_close(state["2.bias"], torch.ones(32))


def test_targets_are_covered_chunk_by_chunk_then_again():
    ids = np.arange(150)
    assert [chunk(ids, 64, i).tolist() for i in range(4)] == [list(range(64)), list(range(64, 128)), list(range(128, 150)), list(range(64))]


@pytest.fixture(scope="module")
def trap_round(_server_identity):
    """One real round: 3 clients train (real ClientApp) after the crafted-model server configured them."""
    config = small_config(*RELU, f"data.num_clients={NUM_CLIENTS}", f"adversary.victim={VICTIM}")
    pool = pool_for(config.data)
    ids = np.random.default_rng(1).permutation(len(pool.labels))
    records = {c: ids[c * PER_CLIENT:(c + 1) * PER_CLIENT] for c in range(NUM_CLIENTS)}
    members = records[VICTIM][:20]
    outsiders = ids[NUM_CLIENTS * PER_CLIENT:NUM_CLIENTS * PER_CLIENT + 20]  # in no client's data
    target_ids = np.concatenate([members, outsiders])
    targets = pool.take(target_ids)
    c = centre(pool.take(ids[:400])[0])
    torch.manual_seed(0)
    initial = model_for(config).state_dict()
    adversary = ServerAdversary(**config.adversary.model_dump())
    server = CuriousServer(FedAvg(fraction_evaluate=0.0), adversary, {NODE + i: i for i in range(NUM_CLIENTS)}, lambda: model_for(config),
                           targets, centre=c)
    grid = InProcessGrid(make_client_app(config, records), NUM_CLIENTS)
    messages = list(server.configure_train(1, ArrayRecord(initial), ConfigRecord({"server-round": 1}), grid))
    replies = grid.send_and_receive(messages)
    aggregate, _ = server.aggregate_train(1, replies)
    return config, pool, initial, targets, target_ids, np.isin(target_ids, members), c, messages, replies, aggregate


def test_only_the_victim_gets_the_trap_and_its_reply_stays_out_of_the_aggregate(trap_round):
    config, _, initial, (x, _), _, _, c, messages, replies, aggregate = trap_round
    assert sorted(m.metadata.dst_node_id for m in messages) == [NODE, NODE + 1, NODE + 2]
    for message in messages:
        sent = message.content["arrays"].to_torch_state_dict()
        if message.metadata.dst_node_id == NODE + VICTIM:
            assert_states_equal(sent, crafted_state(model_for(config), initial, x, c))
        else:  # honest clients: the aggregate itself
            assert_states_equal(sent, initial)
    assert_states_close({k: v.double() for k, v in aggregate.to_torch_state_dict().items()}, _fedavg_reference(replies, exclude=VICTIM),
                        rtol=0, atol=1e-6)


def test_the_victims_training_moves_the_traps_of_its_members_and_no_other(trap_round):
    config, pool, _, (x, _), target_ids, is_member, _, messages, replies, _ = trap_round
    sent_state = next(m for m in messages if m.metadata.dst_node_id == NODE + VICTIM).content["arrays"].to_torch_state_dict()
    back_state = next(r for r in replies if partition_of(r) == VICTIM).content["arrays"].to_torch_state_dict()
    sent, returned = model_for(config), model_for(config)
    sent.load_state_dict(sent_state)
    returned.load_state_dict(back_state)
    reading = trap_scores(sent, returned, sent, x)
    assert (reading[torch.as_tensor(is_member)] > 0).all() and (reading[torch.as_tensor(~is_member)] == 0).all()
    # the attack reads the same through an Observation: every member above every non-member
    observation = Observation([1], lambda r: returned.eval(), lambda ids: pool.take(ids), load_sent=lambda r: sent.eval(),
                              manipulated=frozenset({1}))
    attack = CraftedAttack().fit(observation, target_ids, is_member)
    scores = attack.score(observation, target_ids)
    assert scores[is_member].min() > scores[~is_member].max() == 0 and attack.threshold <= scores[is_member].min()
    # a round it did not craft is not read: no evidence, score 0
    assert (CraftedAttack().score(Observation([1], lambda r: returned.eval(), pool.take, load_sent=lambda r: sent.eval()), target_ids) == 0).all()


@pytest.mark.parametrize("overrides, message", [
    (["adversary.role=participant"], "crafted-model is a dishonest server's attack, but adversary.role is participant"),
    (["adversary.isolate=true"], "set adversary.isolate: false"),
    (["record.dtype=float16"], "set record.dtype: float32"),  # a trap's margin is below float16's rounding
    (["defense.secure_aggregation=true", "data.partition=dirichlet"], "exact only for strategy fedavg over equal clients"),
    (["defense.secure_aggregation=true", "strategy.name=fedadam"], "exact only for strategy fedavg over equal clients"),
])
def test_crafted_model_settings_that_cannot_work_are_one_line(overrides, message):
    with pytest.raises(FedsimError, match=message) as error:
        load_config(None, ["model.args={hidden: [64], activation: relu}", "adversary.mode=crafted-model", *overrides], default_file=False)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("model, args", [("fcn", {"hidden": [64]}), ("mnist_cnn", {})])
def test_a_model_without_a_first_relu_layer_is_refused(model, args):
    config = small_config("adversary.mode=crafted-model")
    shape = (1, 28, 28) if model == "mnist_cnn" else (64,)
    with pytest.raises(FedsimError, match="needs a .*fully connected .*ReLU.* use model: {name: fcn, args: {activation: relu}}") as error:
        check_crafted(build_model(model, shape, 10, args), 40, config)
    assert "\n" not in str(error.value)
    first_linear_relu(build_model("fcn", (64,), 10, {"hidden": [64], "activation": "relu"}))  # accepted


def test_targets_beyond_what_the_rounds_can_cover_are_refused():
    config = small_config(*RELU, "train.rounds=2")
    model = model_for(config)
    check_crafted(model, 128, config)  # two rounds of 64 neurons
    with pytest.raises(FedsimError, match="129 targets need 3 crafted rounds with a first layer of 64 neurons, but the server acts in 2"):
        check_crafted(model, 129, config)


def test_the_audit_plot_takes_a_perfect_attack_whose_point_estimate_is_infinite():
    """A perfect separation (the crafted traps) has epsilon point estimate inf and a finite lower bound above 1:
    the plot's axis must reach the bound (it drew a negative error bar and raised before)."""
    import pandas as pd

    from fedsim.report.plots import privacy_audit

    leakage = pd.DataFrame({"round": [1, 2], "attack": ["crafted"] * 2, "epsilon_lower_bound": [4.65, 4.88],
                            "epsilon_lb_point": [float("inf")] * 2})
    axes = privacy_audit(leakage, pd.DataFrame()).axes[0]
    assert axes.get_ylim()[1] >= 4.88


def test_the_crafted_attack_without_a_crafted_model_server_is_one_line():
    from fedsim.app.experiment import check_config

    with pytest.raises(FedsimError, match="attacks: crafted reads the traps of a crafted-model server; set adversary.mode: crafted-model"):
        check_config(small_config("attacks=[loss, crafted]"))
    check_config(small_config(*RELU, "attacks=[loss, crafted]"))
