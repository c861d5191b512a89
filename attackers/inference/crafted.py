"""Reads a crafted-model server's traps: did the neurons that fire on a record move.

The crafted-model server (`attackers.active.crafted_model`; Pichler et al., IEEE TDSC 2024,
arXiv:2203.16463; Nguyen et al., AISTATS 2023) sends the victim a model whose first-layer neurons
each fire (ReLU > 0) on one target record only. A neuron that fires on no training record gets no
gradient and comes back unchanged. So for a target x, in a round the server crafted:

    score_r(x) = min over first-layer neurons k with w_k . x + b_k > 0 in the sent model
                 of || (w_k, b_k) returned - (w_k, b_k) sent ||_2

Every neuron that fires on a member fires during the victim's training, so all of them move and
the minimum is positive; a non-member's own trap never fires on the victim's data, so the minimum
is 0 (unless another of its records collides with the trap). The papers read the trap's gradient
the same way; taking the minimum over the firing neurons spares the attack the neuron-to-record
assignment (records whose trap is not in this model fire none and are not scored in that round).
Over rounds the score is the mean of score_r over the crafted rounds that cover the record (0 if
none covers it: no evidence). Under secure aggregation the server sees only the aggregate; it
subtracts what the aggregate would be without training (the mean of what it sent) and reads the
same neurons of that residual, where the other clients' updates of those neurons mix in.

No fitting: the score is the trap's own reading; the decision threshold is the smallest value above
every known non-member's score (known records are not trapped: in a run they score 0, and the
decision is "moved at all").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from attackers.inference.base import MembershipInferenceAttack
from attackers.inference.observation import Observation
from attackers.inference.registry import register
from fedsim.core.errors import FedsimError


def first_linear(model: nn.Module) -> nn.Linear:
    """The first `nn.Linear` of a model (the crafted layer); FedsimError when it has none."""
    layer = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
    if layer is None:
        raise FedsimError("attack crafted reads a first fully connected layer; the model has none (use model fcn with activation relu)")
    return layer


def trap_scores(sent: nn.Module, returned: nn.Module, baseline: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One round's reading: per record, the smallest change of a first-layer neuron that fires on it.

    Parameters
    ----------
    sent : nn.Module
        The model the victim was sent (the trap).
    returned : nn.Module
        What came back (the victim's model, or the aggregate under secure aggregation).
    baseline : nn.Module
        What would have come back without training (the sent model, or the mean of what was sent).
    x : torch.Tensor
        Records `(n_records, ...)` as the model takes them.

    Returns
    -------
    torch.Tensor
        `(n_records,)` float64: min over firing neurons of the L2 change of (weights, bias); NaN
        where no neuron fires on the record.
    """
    trap, back, base = first_linear(sent), first_linear(returned), first_linear(baseline)
    with torch.no_grad():
        flat = x.flatten(1).to(trap.weight.dtype)
        fires = (flat @ trap.weight.T + trap.bias) > 0  # (n_records, width)
        change = torch.cat([back.weight - base.weight, (back.bias - base.bias)[:, None]], 1).double()
        moved = torch.linalg.vector_norm(change, dim=1)  # (width,)
        masked = torch.where(fires, moved[None, :], torch.tensor(float("inf"), dtype=torch.float64))
        smallest = masked.min(1).values
    return torch.where(torch.isinf(smallest), torch.tensor(float("nan"), dtype=torch.float64), smallest)


@register("crafted")
class CraftedAttack(MembershipInferenceAttack):
    """Membership from a crafted-model server's traps (see the module docstring)."""

    multi_round = True
    deterministic = True

    def signals(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Per crafted round, each record's trap reading, shape (n_records, n_crafted_rounds).

        The L2 change of parameters; NaN where the round's trap did not cover the record.
        """
        x, _ = observation.load_records(ids)
        columns = []
        for round_number in observation.rounds:
            if round_number not in observation.manipulated or observation.load_sent is None:
                continue
            sent = observation.load_sent(round_number)
            baseline = observation.load_baseline(round_number) if observation.load_baseline is not None else sent
            columns.append(trap_scores(sent, observation.model(round_number), baseline, x).numpy())
        return np.stack(columns, 1) if columns else np.full((len(ids), 0), np.nan)

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> CraftedAttack:
        """Set the decision threshold just above the known non-members' highest score (nothing is learned); returns self."""
        outside = self.score(observation, ids)[~np.asarray(members, bool)]
        highest = float(outside.max()) if len(outside) else 0.0
        self.threshold = float(np.nextafter(max(highest, 0.0), np.inf))  # "member" means score >= threshold: above every known non-member
        return self

    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """The mean trap reading over the crafted rounds that cover each record, shape (n_records,); 0 for a record none covered."""
        readings = self.signals(observation, ids)
        covered = ~np.isnan(readings)
        total = np.where(covered, readings, 0.0).sum(1)
        return np.where(covered.any(1), total / np.maximum(covered.sum(1), 1), 0.0)
