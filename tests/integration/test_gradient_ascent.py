"""The ascent step against torch.autograd, its scale-free size, and the records it covers (no Ray)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attackers.active.adversary import ascended_ids, target_ids
from attackers.active.gradient_ascent import ascent_step
from conftest import small_config
from fedsim.learning.datasets import pool_for
from fedsim.learning.membership import ATTACK_TRAIN, attacker_known, build_ledger
from fedsim.learning.models import build_model


def _flat(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([state[n].flatten() for n in names])


def _records(n: int, shape: tuple[int, ...], classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_gamma_step_is_w_plus_gamma_times_the_mean_loss_gradient_from_autograd():
    torch.manual_seed(0)
    model = build_model("fcn", (64,), 10, {"hidden": [32, 16]})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _records(50, (64,))
    new = ascent_step(build_model("fcn", (64,), 10, {"hidden": [32, 16]}), state, x, y, gamma=0.3, batch_size=7)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(params.values()))  # mean over the records
    for (name, p), g in zip(params.items(), grads):
        torch.testing.assert_close(new[name], p.detach() + 0.3 * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "shape"), [("fcn", (64,)), ("mnist_cnn", (1, 28, 28)), ("alexnet_cifar", (3, 32, 32))])
def test_step_norm_sets_the_steps_l2_norm_as_a_fraction_of_the_parameters_norm(name, shape):
    torch.manual_seed(1)
    model = build_model(name, shape, 10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    x, y = _records(16, shape)
    new = ascent_step(build_model(name, shape, 10), state, x, y, gamma=123.0, step_norm=0.01)
    step = _flat(new, names) - _flat(state, names)
    assert torch.linalg.vector_norm(step).item() == pytest.approx(0.01 * torch.linalg.vector_norm(_flat(state, names)).item(), rel=1e-4)
    params = dict(model.named_parameters())  # the direction is the loss gradient's (the paper's, sum or mean alike)
    grads = torch.cat([g.flatten() for g in torch.autograd.grad(nn.functional.cross_entropy(model(x), y), list(params.values()))])
    assert nn.functional.cosine_similarity(step, grads, dim=0).item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("role", ["server", "participant"])
def test_known_records_are_ascended_with_the_targets(role):
    config = small_config(f"adversary.role={role}", "adversary.mode=gradient-ascent", "adversary.victim=1")
    ledger = build_ledger(config, pool_for(config.data))
    ascended = set(ascended_ids(ledger, config).tolist())
    known = ledger.loc[attacker_known(ledger, config), "record_id"]
    assert set(target_ids(ledger).tolist()) <= ascended and set(known.tolist()) <= ascended
    assert ascended == set(target_ids(ledger).tolist()) | set(known.tolist())
    assert (ledger.loc[ledger["record_id"].isin(known), "role"] == ATTACK_TRAIN).all()


@pytest.mark.determinism
def test_the_mechanism_replay_reproduces_the_victims_recorded_model_and_its_step_is_the_servers(tmp_path):
    """research/ascent_mechanism.py: the replay of a real (in-process) run's last round gives the
    recorded victim model exactly, whatever torch threads this process holds (the replay computes on
    the run's `backend.cpus_per_client`, as the client did); with a step it starts from what
    curious_server would send; a run it cannot replay is refused."""
    from fedsim.app.experiment import run_experiment
    from fedsim.core.errors import FedsimError
    from fedsim.recording.run import Run
    from research import ascent_mechanism as mechanism

    run = Run.open(run_experiment(small_config("adversary.step_norm=0.02"), tmp_path / "run"))
    previous = torch.get_num_threads()
    torch.set_num_threads(int(run.config.backend.cpus_per_client) + 3)  # not the run's count: the replay must not take the process's
    try:
        error, rows = mechanism.round_effects(run, 2, [0.02])
    finally:
        torch.set_num_threads(previous)
    assert error == 0.0
    none, step = rows
    assert none["raise_members"] == 0 and none["raise_nonmembers"] == 0
    assert step["raise_members"] > 0 and step["raise_nonmembers"] > 0  # the step raises the targets' loss
    assert 0.0 <= step["auc_drop"] <= 1.0 and step["auc_drop"] != none["auc_drop"]
    active = Run.open(run_experiment(small_config("adversary.mode=gradient-ascent", "adversary.step_norm=0.02"), tmp_path / "active"))
    # the script's stepped start is what the real server sent the victim in that round
    ledger = active.membership
    x, y = active.records(ascended_ids(ledger, active.config))
    start = active.model(1).state_dict()
    stepped = ascent_step(build_model("fcn", (64,), 10, active.config.model.args), start, x, y, 1.0, step_norm=0.02)
    sent = active.state(2, active.config.adversary.victim, kind="broadcast")
    for name, value in sent.items():
        torch.testing.assert_close(stepped[name], value)
    with pytest.raises(FedsimError, match="not a passive curious-server run"):
        mechanism.round_effects(active, 2, [0.02])


def test_sent_to_all_records_what_every_client_was_sent_and_the_references_read_it(tmp_path):
    """A real (in-process) run: with adversary.sent_to all, every client of an active round is sent the
    ascended aggregate, each broadcast is recorded, and the server's view measures the honest
    clients' updates from it (reference_sent), not from the aggregate they never got."""
    from attackers.inference.threat_models import attacker_view
    from fedsim.app.experiment import run_experiment
    from fedsim.core.layout import client_file
    from fedsim.recording.run import Run

    config = small_config("adversary.mode=gradient-ascent", "adversary.step_norm=0.02", "adversary.sent_to=all", "adversary.active_rounds=[2]")
    run = Run.open(run_experiment(config, tmp_path / "run"))
    x, y = run.records(ascended_ids(run.membership, run.config))
    stepped = ascent_step(build_model("fcn", (64,), 10, run.config.model.args), run.model(1).state_dict(), x, y, 1.0, step_norm=0.02)
    assert not any((run.folder / client_file(1, c, "broadcast")).exists() for c in run.clients(1))  # round 1: not active
    for client in run.clients(2):
        sent = run.state(2, client, kind="broadcast")
        for name, value in sent.items():
            torch.testing.assert_close(stepped[name], value)
    observation = attacker_view(run).observation
    assert observation.reference_sent is not None
    for model in observation.reference_sent(2):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(stepped[name], value)
