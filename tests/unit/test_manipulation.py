"""The sent-vs-returned attack reads what the attacker sent and what came back (no Ray)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from attackers.active.gradient_ascent import ascent_step
from attackers.inference.observation import Observation
from attackers.inference.registry import make_attack
from fedsim.learning.models import build_model


def _setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=g)
    y = torch.randint(0, 4, (400,), generator=g)
    torch.manual_seed(0)
    sent = build_model("fcn", (20,), 4, {"hidden": [64]})
    before = build_model("fcn", (20,), 4, {"hidden": [64]})
    before.load_state_dict(sent.state_dict())
    # the attacker ascends every record it will score or learn from, then the victim trains on its members
    sent.load_state_dict(ascent_step(build_model("fcn", (20,), 4, {"hidden": [64]}), sent.state_dict(), x, y, gamma=0.0, step_norm=0.05))
    returned = build_model("fcn", (20,), 4, {"hidden": [64]})
    returned.load_state_dict(sent.state_dict())
    members = np.arange(400) % 2 == 0
    optimizer = torch.optim.SGD(returned.parameters(), lr=0.5)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(returned(x[members]), y[members]).backward()
        optimizer.step()
    observation = Observation([1], lambda r: returned.eval(), lambda ids: (x[ids], y[ids]), load_sent=lambda r: sent.eval())
    return observation, members, sent, returned, x, y, before


def test_signals_are_the_losses_on_the_sent_and_returned_models_and_their_change():
    observation, _, sent, returned, x, y, _ = _setup()
    ids = np.arange(10)
    signals = make_attack("sent_returned").signals(observation, ids)
    with torch.no_grad():
        before = nn.functional.cross_entropy(sent(x[ids]), y[ids], reduction="none").log()
        after = nn.functional.cross_entropy(returned(x[ids]), y[ids], reduction="none").log()
    np.testing.assert_allclose(signals[:, 0], before.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(signals[:, 1], after.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(signals[:, 2], (before - after).numpy(), rtol=1e-4, atol=1e-5)
    assert signals.shape == (10, 6)


def test_the_change_from_sent_to_returned_separates_members_on_records_it_never_fitted():
    observation, members, *_ = _setup()
    ids = np.arange(400)
    attack = make_attack("sent_returned").fit(observation, ids[:200], members[:200])
    assert roc_auc_score(members[200:], attack.score(observation, ids[200:])) > 0.8


def test_in_an_ascended_round_it_also_reads_the_loss_before_the_step_and_what_training_undid():
    observation, _, sent, returned, x, y, before = _setup()
    ids = np.arange(10)
    observation.load_before = lambda r: before.eval()
    signals = make_attack("sent_returned").signals(observation, ids)
    with torch.no_grad():
        loss = {name: nn.functional.cross_entropy(m(x[ids]), y[ids], reduction="none").log().numpy()
                for name, m in (("before", before), ("sent", sent), ("returned", returned))}
    assert signals.shape == (10, 9)
    np.testing.assert_allclose(signals[:, 6], loss["before"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(signals[:, 7], loss["sent"] - loss["before"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(signals[:, 8], loss["before"] - loss["returned"], rtol=1e-4, atol=1e-4)
    assert not np.allclose(signals[:, 7], 0)  # the step raised the losses
    observation = replace(observation, load_before=lambda r: None)  # a round it did not ascend: the passive columns only
    assert make_attack("sent_returned").signals(observation, ids).shape == (10, 6)
