"""The active attacks' manipulation: one gradient-ascent step on the records the attacker ascends.

Nasr, Shokri and Houmansadr (S&P 2019, section on the active attack) ascend each target
record: W <- W + gamma * dL_x/dW per target x. Taken at the same W for a set of records that is
one step along the sum of the per-record gradients, g = sum_x dL_x/dW (cross-entropy in nats).
The records ascended are the targets *and* the attacker's own known records, members and
non-members alike (`fedsim.learning.membership.attacker_known`): the attacker cannot tell members from
non-members, so everything it will score or learn from gets the same treatment.

Two ways to set the step's size:
- `gamma` (the default): W + gamma * g / n, gamma times the gradient of the *mean* loss over the
  n ascended records (the paper's gamma equals gamma / n). The mean keeps the step from growing
  with the number of records, but its size still depends on the model and its training state,
  so a gamma that helps the fcn can wreck a CNN.
- `step_norm` (scale-free, overrides gamma): W + step_norm * |W| * g / |g|, the step's L2 norm is
  the fraction `step_norm` of the L2 norm of all trainable parameters. The direction is the
  paper's (sum and mean point the same way); only the size is set, relative to the model.

Members' losses are then pulled back down by the victim's own SGD while non-members' stay up,
which widens the gap the inference attacks read. A step that makes the loss non-finite is
refused, not sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedsim.core.errors import FedsimError


def ascent_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy over (x, y) for each trainable parameter, batched.

    Parameters
    ----------
    model : nn.Module
        The model at the parameters to ascend from (put in eval mode).
    x, y : torch.Tensor
        Records `(n_records, ...)` and their labels `(n_records,)`.

    Returns
    -------
    list of torch.Tensor
        One gradient per trainable parameter (same shapes), of (1/n) sum_x L_x in nats.
    """
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for start in range(0, len(y), batch_size):
        loss = nn.functional.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size], reduction="sum")
        for acc, g in zip(total, torch.autograd.grad(loss / len(y), params)):
            acc += g
    return total


def ascent_step(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, gamma: float,
                batch_size: int = 1024, where: str = "", step_norm: float | None = None) -> dict[str, torch.Tensor]:
    """`state` moved one gradient-ascent step on the records (x, y).

    Parameters
    ----------
    model : nn.Module
        A model of the run's architecture (its parameters are overwritten with `state`).
    state : mapping of str to torch.Tensor
        The parameters to ascend from (a state dict).
    x, y : torch.Tensor
        The ascended records `(n_records, ...)` and labels `(n_records,)`.
    gamma : float
        Step = gamma * gradient of the mean loss (used when `step_norm` is None).
    step_norm : float or None
        When set, step = step_norm * |W| * g / |g| (L2 norms over all trainable parameters).
    where : str
        Where the step is taken, for the error message.

    Returns
    -------
    dict of str to torch.Tensor
        The new state dict.

    Raises
    ------
    FedsimError
        When the step makes the records' loss non-finite.
    """
    model.load_state_dict(state)
    params = [p for p in model.parameters() if p.requires_grad]
    total = ascent_gradient(model, x, y, batch_size)
    if step_norm is not None:
        weight_norm = torch.linalg.vector_norm(torch.cat([p.detach().flatten() for p in params]))
        gradient_norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in total]))
        scale = float(step_norm * weight_norm / gradient_norm) if gradient_norm > 0 else 0.0
    else:
        scale = gamma
    with torch.no_grad():
        for p, g in zip(params, total):
            p.add_(g, alpha=scale)
        after = nn.functional.cross_entropy(model(x), y)
    if not torch.isfinite(after):
        knob = f"adversary.step_norm (now {step_norm})" if step_norm is not None else f"adversary.gamma (now {gamma})"
        raise FedsimError(f"{knob.split(' ')[0]}: the gradient-ascent step{where} makes the target loss non-finite; lower {knob}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
