"""What each attacker observes of a recorded run (no simulation needed)."""

import numpy as np
import pytest
import torch

from attackers.inference.threat_models import attacker_view
from conftest import small_config
from fedsim import Run
from fedsim.learning.datasets import load_pool
from fedsim.learning.membership import ATTACK_TRAIN, build_ledger, save_ledger
from fedsim.learning.models import build_model
from fedsim.recording.recorder import Recorder


def recorded_run(tmp_path, *overrides):
    config = small_config("data.num_clients=3", *overrides)
    ledger = build_ledger(config, load_pool("digits", None))
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(ledger, folder))
    torch.manual_seed(0)
    # distinct states everywhere: globals[r] after round r, clients[r][c] what client c sent in round r
    def state():
        return build_model("fcn", (64,), 10, config.model.args).state_dict()

    globals_ = [state() for _ in range(3)]
    clients = {r: [state() for _ in range(3)] for r in (1, 2)}
    recorder.record_round(0, globals_[0])
    for r in (1, 2):
        recorder.record_round(r, globals_[r], {c: (clients[r][c], 60) for c in range(3)})
    recorder.finish("complete")
    return Run.open(recorder.folder), globals_, clients


def same(model, state):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_server_observes_the_victims_local_models_and_knows_its_attack_train_members(tmp_path):
    run, _, clients = recorded_run(tmp_path, "adversary.victim=1")
    view = attacker_view(run)
    assert view.attacker == "server" and view.target == "client-001" and view.observation.rounds == [1, 2]
    for r in (1, 2):
        assert same(view.observation.model(r), clients[r][1])
        references = view.observation.reference_models(r)  # the other clients' models of that round: 0 and 2
        assert len(references) == 2 and same(references[0], clients[r][0]) and same(references[1], clients[r][2])
    known = run.membership.set_index("record_id").loc[view.train_ids]
    assert (known["role"] == ATTACK_TRAIN).all() and set(known.loc[known["member"], "client"]) == {1}
    assert view.train_members.sum() == (~view.train_members).sum()
    assert not set(view.train_ids) & set(view.eval_ids)


def test_under_secure_aggregation_the_server_sees_only_the_aggregate(tmp_path):
    run, globals_, _ = recorded_run(tmp_path, "defense.secure_aggregation=true")
    view = attacker_view(run)
    assert view.target == "global" and view.observation.reference_models is None and view.observation.rounds == [1, 2]
    assert same(view.observation.model(1), globals_[1]) and same(view.observation.model(2), globals_[2])


def test_participant_observes_global_models_and_targets_the_others(tmp_path):
    run, globals_, _ = recorded_run(tmp_path, "adversary.role=participant", "adversary.victim=2")
    view = attacker_view(run)
    assert view.attacker == "participant" and view.target == "others" and view.observation.rounds == [1, 2]
    # round r: the global model of round r - 1, which it received and trained from
    assert same(view.observation.model(1), globals_[0]) and same(view.observation.model(2), globals_[1])
    known = run.membership.set_index("record_id").loc[view.train_ids]
    assert 2 not in set(known.loc[known["member"], "client"])


def test_the_features_memory_budget_reaches_the_observation(tmp_path):
    run, *_ = recorded_run(tmp_path, "features.memory_budget_gib=0.25")
    assert attacker_view(run).observation.memory_budget == 1 << 28


def test_no_adversary_no_view(tmp_path):
    run, *_ = recorded_run(tmp_path, "adversary.role=none")
    assert attacker_view(run) is None


def test_isolation_under_secure_aggregation_is_refused():
    from fedsim.core.errors import FedsimError

    with pytest.raises(FedsimError, match="secure sum"):
        small_config("adversary.isolate=true", "defense.secure_aggregation=true")


def test_threat_model_in_words():
    from fedsim.core.threat_model import ThreatModel

    def describe(config):
        return ThreatModel.of(config).describe()

    assert "only the aggregate" in describe(small_config("defense.secure_aggregation=true"))
    assert "isolates the victim and sends it a gradient-ascent step" in describe(small_config("adversary.isolate=true", "adversary.mode=gradient-ascent"))
    assert "sends every client a gradient-ascent step" in describe(small_config("adversary.mode=gradient-ascent", "adversary.sent_to=all"))
    assert "curious participant (client 2)" in describe(small_config("adversary.role=participant", "adversary.victim=2"))


def test_participant_is_credited_only_with_the_global_models_it_received(tmp_path):
    """Round r: the global model of round r - 1 (what it trained from); not the final aggregate, which no
    client receives, and not the rounds client sampling left it out of (it failed in round 3: still received).
    """
    config = small_config("data.num_clients=3", "adversary.role=participant", "adversary.victim=2", "train.rounds=4")
    ledger = build_ledger(config, load_pool("digits", None))
    recorder = Recorder(tmp_path / "run", config)
    recorder.start(lambda folder: save_ledger(ledger, folder))
    torch.manual_seed(0)
    states = [build_model("fcn", (64,), 10, config.model.args).state_dict() for _ in range(5)]
    recorder.record_round(0, states[0])
    recorder.record_round(1, states[1], {c: (states[1], 60) for c in range(3)})
    recorder.record_round(2, states[2], {c: (states[2], 60) for c in (0, 1)})  # client 2 not sampled
    recorder.record_round(3, states[3], {c: (states[3], 60) for c in (0, 1)}, failed=[2])
    recorder.record_round(4, states[4], {c: (states[4], 60) for c in range(3)})
    recorder.finish("complete")
    run = Run.open(recorder.folder)
    observation = attacker_view(run).observation
    assert observation.rounds == [1, 3, 4]
    for r in observation.rounds:
        assert same(observation.model(r), states[r - 1])
    assert not any(same(observation.model(r), states[4]) for r in observation.rounds)


@pytest.mark.parametrize("isolate", [False, True])
def test_a_gradient_ascent_server_knows_what_it_ascended_from_in_the_rounds_it_acted(tmp_path, isolate):
    """Before its step the server held the previous aggregate, or under isolation the victim's last reply
    (the aggregate before any reply); in a round it did not act in, nothing was ascended."""
    run, globals_, clients = recorded_run(tmp_path, "adversary.victim=1", "adversary.mode=gradient-ascent",
                                          f"adversary.isolate={str(isolate).lower()}", "train.rounds=2")
    observation = attacker_view(run).observation
    assert same(observation.load_before(1), globals_[0])
    assert same(observation.load_before(2), clients[1][1] if isolate else globals_[1])
    passive, *_ = recorded_run(tmp_path / "passive", "adversary.victim=1", f"adversary.isolate={str(isolate).lower()}")
    assert attacker_view(passive).observation.load_before(2) is None


def test_a_server_acting_in_some_rounds_only_ascended_in_those(tmp_path):
    run, globals_, _ = recorded_run(tmp_path, "adversary.victim=1", "adversary.mode=gradient-ascent", "adversary.active_rounds=[2]",
                                    "train.rounds=2")
    observation = attacker_view(run).observation
    assert observation.load_before(1) is None
    assert same(observation.load_before(2), globals_[1])


def test_the_server_knows_what_each_reference_client_was_sent_and_fedmia_reads_their_updates(tmp_path):
    """Every client was sent the previous aggregate; FedMIA-II's measurement is the cosine between a
    record's gradient there and the client's update (sent minus returned), computed here by hand."""
    from torch import nn

    from attackers.inference.calibrated import update_cosines

    run, globals_, clients = recorded_run(tmp_path, "adversary.victim=1")
    observation = attacker_view(run).observation
    for r in (1, 2):
        sent = observation.reference_sent(r)
        assert len(sent) == 2 and all(same(model, globals_[r - 1]) for model in sent)
    ids = attacker_view(run).eval_ids[:6]
    victim, references = update_cosines(observation, ids, 2)
    start = build_model("fcn", (64,), 10, run.config.model.args)
    start.load_state_dict(globals_[1])
    x, y = run.records(ids)

    def flat(state):
        return torch.cat([state[name].flatten() for name, _ in start.named_parameters()]).double()

    for i in range(len(ids)):
        start.zero_grad()
        nn.functional.cross_entropy(start(x[i : i + 1]), y[i : i + 1]).backward()
        g = torch.cat([p.grad.flatten() for p in start.parameters()]).double()
        for client, got in ((1, victim[i]), (0, references[0, i]), (2, references[1, i])):
            update = flat(globals_[1]) - flat(clients[2][client])
            assert abs(got - float(g @ update / (g.norm() * update.norm()))) < 1e-5
    # grad_cosine (Li et al. 2023) is the victim's cosine of the last observed round itself (not a mean over rounds)
    from attackers.inference.registry import make_attack

    assert observation.rounds == [1, 2]
    attack = make_attack("grad_cosine").fit(observation, attacker_view(run).train_ids, attacker_view(run).train_members)
    np.testing.assert_array_equal(attack.score(observation, ids), victim)
    first, _ = update_cosines(observation, ids, 1)
    assert np.abs(first - victim).max() > 1e-3  # round 1 reads differently: reading it (or a mean) would fail above


def test_grad_cosine_needs_no_other_client():
    """A stand-alone victim (no other client trained that round): grad_cosine still reads its update."""
    from attackers.inference.features import gradient_alignment
    from attackers.inference.observation import Observation
    from attackers.inference.registry import make_attack

    torch.manual_seed(0)
    sent, returned = (build_model("fcn", (64,), 10, {"hidden": [16]}).eval() for _ in range(2))
    x, y = torch.randn(12, 64), torch.randint(0, 10, (12,))
    observation = Observation([3], lambda r: returned, lambda ids: (x[ids], y[ids]), load_sent=lambda r: sent,
                              reference_models=lambda r: [], reference_sent=lambda r: [])
    members = np.arange(12) < 6
    scores = make_attack("grad_cosine").fit(observation, np.arange(12), members).score(observation, np.arange(12))

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    expected = gradient_alignment(sent, x, y, (flat(sent) - flat(returned))[None])[:, 0].numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_fedmia_cosines_are_taken_at_each_clients_own_sent_model():
    """An isolated or ascended victim was sent another model than the others: each client's cosine
    is taken at what it was sent (two distinct starts here, shared by two clients each)."""
    from attackers.inference.calibrated import update_cosines
    from attackers.inference.features import gradient_alignment
    from attackers.inference.observation import Observation

    torch.manual_seed(0)
    models = [build_model("fcn", (64,), 10, {"hidden": [16]}).eval() for _ in range(6)]  # starts A, B; returned 0..3
    a, b, returned = models[0], models[1], models[2:]
    x, y = torch.randn(9, 64), torch.randint(0, 10, (9,))
    observation = Observation([1], lambda r: returned[0], lambda ids: (x[ids], y[ids]), load_sent=lambda r: a,
                              reference_models=lambda r: returned[1:], reference_sent=lambda r: [b, a, b])
    victim, references = update_cosines(observation, np.arange(9), 1)

    def flat(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    for got, start, end in ((victim, a, returned[0]), (references[0], b, returned[1]), (references[1], a, returned[2]),
                            (references[2], b, returned[3])):
        expected = gradient_alignment(start, x, y, (flat(start) - flat(end))[None])[:, 0].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)  # float32 gradients; another start differs by ~1e-2
