"""Integration: the adversaries inside the real Flower/Ray loop do exactly what they claim."""

import pandas as pd
import pytest
import torch
from torch import nn

from attackers.active.adversary import ascended_ids, target_ids
from attackers.active.crafted_model import centre, crafted_state
from attackers.active.gradient_ascent import ascent_step
from attackers.inference.threat_models import before_ascent
from conftest import small_config
from fedsim import Run
from fedsim.app.experiment import run_experiment
from fedsim.engine.client_app import client_seed
from fedsim.learning.membership import attacker_known
from fedsim.learning.training import train_locally
from fedsim.recording.recorder import client_file, global_file

pytestmark = pytest.mark.integration
ROUNDS = 3


def run_with(tmp_path_factory, name, *overrides):
    config = small_config(f"train.rounds={ROUNDS}", "data.num_clients=3", *overrides)
    return Run.open(run_experiment(config, tmp_path_factory.mktemp(name) / "run"))


def target_loss(run, state, ids=None):
    model = run.model(0)
    model.load_state_dict(state)
    x, y = run.records(target_ids(run.membership) if ids is None else ids)
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y).item()


def weighted_average(run, round_number, clients):
    weights = torch.tensor([run.num_examples(round_number, c) for c in clients], dtype=torch.float64)
    weights /= weights.sum()
    states = [run.state(round_number, c) for c in clients]
    return {k: sum(w * s[k].double() for w, s in zip(weights, states)) for k in states[0]}


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    return run_with(tmp_path_factory, "isolated", "adversary.isolate=true", "adversary.mode=gradient-ascent", "adversary.victim=1")


def test_isolated_victim_never_enters_the_aggregate(isolated):
    for round_number in range(1, ROUNDS + 1):
        assert isolated.clients(round_number) == [0, 1, 2]  # the victim's reply is recorded...
        expected = weighted_average(isolated, round_number, [0, 2])  # ...but only the others are averaged
        for name, tensor in isolated.state(round_number).items():
            torch.testing.assert_close(tensor.double(), expected[name], rtol=0, atol=1e-6)


def test_isolated_victim_gets_its_own_previous_model_plus_the_ascent_step(isolated):
    x, y = isolated.records(ascended_ids(isolated.membership, isolated.config))  # targets and known records alike
    for round_number in range(1, ROUNDS + 1):
        previous = isolated.state(0) if round_number == 1 else isolated.state(round_number - 1, client=1)
        before = before_ascent(isolated, round_number, 1).state_dict()  # what the attack reads as the pre-ascent model
        assert all(torch.equal(before[name], tensor) for name, tensor in previous.items())
        expected = ascent_step(isolated.model(0), previous, x, y, gamma=1.0)
        sent = isolated.state(round_number, client=1, kind="broadcast")
        for name, tensor in sent.items():
            torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)
        assert not (isolated.folder / client_file(round_number, 0, "broadcast")).exists()


def test_server_gradient_ascent_raises_the_targets_loss_on_what_it_sent(tmp_path_factory):
    run = run_with(tmp_path_factory, "ascent", "adversary.mode=gradient-ascent", "adversary.active_rounds=[2, 3]", "adversary.gamma=2.0")
    assert not (run.folder / client_file(1, 0, "broadcast")).exists()  # round 1 is not an active round
    assert before_ascent(run, 1, 0) is None
    for round_number in (2, 3):
        aggregate = run.state(round_number - 1)
        before = before_ascent(run, round_number, 0).state_dict()  # the attack's pre-ascent model is what was ascended
        assert all(torch.equal(before[name], tensor) for name, tensor in aggregate.items())
        sent = run.state(round_number, client=0, kind="broadcast")
        assert target_loss(run, sent) > target_loss(run, aggregate) + 0.01
        known = run.membership.loc[attacker_known(run.membership, run.config), "record_id"].to_numpy()
        assert target_loss(run, sent, known) > target_loss(run, aggregate, known) + 0.01  # known records ascended too


def test_participant_upload_is_its_honest_update_plus_the_ascent_step(tmp_path_factory):
    run = run_with(tmp_path_factory, "participant", "adversary.role=participant", "adversary.mode=gradient-ascent", "adversary.victim=2")
    ledger = run.membership
    own = ledger.loc[ledger["client"] == 2, "record_id"].to_numpy()
    x, y = run.records(own)
    tx, ty = run.records(ascended_ids(ledger, run.config))  # targets and known records alike
    for round_number in range(1, ROUNDS + 1):
        model = run.model(round_number - 1)  # the global model it was sent
        seed = client_seed(run.config.seed, round_number, 2)
        torch.manual_seed(seed)
        train_locally(model, x, y, run.config.train, seed)
        expected = ascent_step(run.model(0), model.state_dict(), tx, ty, gamma=1.0)
        for name, tensor in run.state(round_number, client=2).items():
            torch.testing.assert_close(tensor, expected[name], rtol=1e-5, atol=1e-6)


def test_a_passive_adversary_changes_nothing(tmp_path_factory):
    honest = run_with(tmp_path_factory, "honest", "adversary.role=none")
    for role in ("server", "participant"):
        passive = run_with(tmp_path_factory, f"passive-{role}", f"adversary.role={role}")
        for round_number in range(ROUNDS + 1):
            assert (passive.folder / global_file(round_number)).read_bytes() == (honest.folder / global_file(round_number)).read_bytes()
        assert not list(passive.folder.glob("rounds/*/broadcast"))


def test_the_crafted_model_goes_to_the_victim_only_and_its_traps_separate_members(tmp_path_factory):
    """One run (3 clients, 3 rounds, digits, about 20 s): crafted in rounds 2 and 3 only."""
    run = run_with(tmp_path_factory, "crafted", "model.args={hidden: [64], activation: relu}", "adversary.mode=crafted-model",
                   "adversary.victim=1", "adversary.active_rounds=[2, 3]", "attacks=[crafted]")
    ledger = run.membership
    x, _ = run.records(target_ids(ledger))
    c = centre(run.records(ascended_ids(ledger, run.config))[0])
    assert sorted(p.relative_to(run.folder).as_posix() for p in run.folder.glob("rounds/*/broadcast/*")) == [
        client_file(2, 1, "broadcast"), client_file(3, 1, "broadcast")]  # the victim only, in the active rounds only
    for round_number in (1, 2, 3):
        if round_number > 1:  # what the victim got: the traps on the aggregate it would have got
            expected = crafted_state(run.model(0), run.state(round_number - 1), x, c)
            sent = run.state(round_number, client=1, kind="broadcast")
            assert all(torch.equal(sent[k], expected[k]) for k in expected)
        for honest in (0, 2):  # honest clients trained from the aggregate itself: their replies are their own training on it
            model = run.model(round_number - 1)
            own = ledger.loc[ledger["client"] == honest, "record_id"].to_numpy()
            seed = client_seed(run.config.seed, round_number, honest)
            torch.manual_seed(seed)
            train_locally(model, *run.records(own), run.config.train, seed)
            for name, tensor in run.state(round_number, client=honest).items():
                torch.testing.assert_close(tensor, model.state_dict()[name], rtol=1e-5, atol=1e-6)
        averaged = [0, 1, 2] if round_number == 1 else [0, 2]  # the trap's reply stays out of the aggregate
        expected_global = weighted_average(run, round_number, averaged)
        for name, tensor in run.state(round_number).items():
            torch.testing.assert_close(tensor.double(), expected_global[name], rtol=0, atol=1e-6)
    leakage = pd.read_csv(run.folder / "metrics" / "leakage.csv")
    last = leakage[(leakage["attack"] == "crafted") & (leakage["round"] == ROUNDS)].iloc[0]
    assert last["auc"] >= 0.95 and last["n_members"] >= 10 and last["n_nonmembers"] >= 10
