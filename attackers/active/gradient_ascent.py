"""The active attacks' manipulation: one gradient-ascent step on the target records.

W <- W + gamma * dL/dW, with L the mean cross-entropy over the target records (members and
non-members alike: the attacker does not know which is which). Members' losses are then pulled
back down by the victim's own SGD while non-members' stay up, which widens the gap the
inference attack reads. A step that makes the loss non-finite is refused, not sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedsim.errors import FedsimError


def ascent_step(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, gamma: float,
                batch_size: int = 1024, where: str = "") -> dict[str, torch.Tensor]:
    """`state` moved by gamma times the gradient of the targets' mean loss (batched over x)."""
    model.load_state_dict(state)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for start in range(0, len(y), batch_size):
        loss = nn.functional.cross_entropy(model(x[start : start + batch_size]), y[start : start + batch_size], reduction="sum")
        for acc, g in zip(total, torch.autograd.grad(loss / len(y), params)):
            acc += g
    with torch.no_grad():
        for p, g in zip(params, total):
            p.add_(g, alpha=gamma)
        after = nn.functional.cross_entropy(model(x), y)
    if not torch.isfinite(after):
        raise FedsimError(f"adversary.gamma: the gradient-ascent step{where} makes the target loss non-finite; lower adversary.gamma (now {gamma})")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
