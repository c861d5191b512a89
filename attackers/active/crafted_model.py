"""The crafted-model server: a dishonest server that rewrites the model it sends the victim so
that the victim's reply says, record by record, whether a target was trained on.

Construction (Pichler, Romanelli, Rey Vega and Piantanida, "Perfectly Accurate Membership
Inference by a Dishonest Central Server in Federated Learning", IEEE TDSC 21(4), 2024,
arXiv:2203.16463; the same first-layer trap drives Nguyen, Lai, Tran, Phan and Thai, "Active
Membership Inference Attack under Local Differential Privacy in Federated Learning", AISTATS
2023): neuron i of the first fully connected layer gets the weights of target record i and a
bias just below the record's own response, so that after the ReLU it is positive on that record
and zero on every other input the victim holds. A neuron that never fires gets no gradient, so
its weights and bias come back unchanged; if record i was in the victim's training data, they
come back changed. `attackers.inference.crafted` reads that change.

What fedsim does exactly (and where it deviates from the papers):
- weights w_i = (x_i - c) / |x_i - c|, bias b_i = -w_i . c - (1 - margin) * |x_i - c|, with c the
  per-feature midpoint of the value range over the records the server holds; so the neuron's
  pre-activation is w_i . (x - c) - (1 - margin) |x_i - c|, positive on x_i (by margin |x_i - c|).
  The papers set w_i = x_i and the bias below |x_i|^2, which is exact when every record has the same
  norm; centring at c makes it exact on binary data (Location: x_i is the unique maximiser of
  w_i . x over {0, 1}^d) and leaves a collision only where another record "contains" x_i (on MNIST
  0.8% of targets collide with some record of 12,000, so about 0.03% with a victim's 400).
- one neuron per target; a layer of width W covers W targets per round, and the targets (in the
  ledger's order) are covered chunk by chunk over the rounds the server acts in, then again from
  the start. Neurons without a target are switched off (zero weights, bias -1).
- the layers after the first keep the aggregate's weights, with biases set so that every hidden
  unit is active (pre-activation 1) when the first layer outputs zeros: the gradient then reaches
  the crafted neuron from the loss. The papers assume the gradient reaches it.
- the victim trains several local steps (the papers analyse one): a neuron that fired once has
  changed, so the test stays "changed or not"; the local optimiser must not change parameters
  without a gradient (no weight decay), else the change is only larger for members, not exact.
- the victim's reply to a crafted model is useless as a model, so the server leaves it out of the
  aggregate in the rounds it crafts (it cannot under secure aggregation, where it only sees the sum).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedsim.core.errors import FedsimError

MARGIN = 1e-4  # the crafted record's own pre-activation, as a fraction of |x_i - c|: far above float32 rounding
_ALLOWED = (nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout)


def first_linear_relu(model: nn.Module, model_name: str = "the model") -> list[tuple[str, nn.Linear, bool]]:
    """The fully connected layers of a ReLU network, in order, with whether a ReLU follows each.

    Parameters
    ----------
    model : nn.Module
        The run's model: an `nn.Sequential` of Flatten, Linear, ReLU and Dropout modules whose
        first Linear is followed by a ReLU (fcn with `activation: relu`).
    model_name : str
        The model's registry name, for the message.

    Returns
    -------
    list of (str, nn.Linear, bool)
        (parameter prefix, layer, followed by ReLU) for each Linear layer; the first is crafted.

    Raises
    ------
    FedsimError
        One line when the model has no first fully connected layer followed by a ReLU.
    """
    fix = "use model: {name: fcn, args: {activation: relu}}"
    if not isinstance(model, nn.Sequential) or not all(isinstance(m, _ALLOWED) for m in model):
        other = type(model).__name__ if not isinstance(model, nn.Sequential) else next(type(m).__name__ for m in model if not isinstance(m, _ALLOWED))
        raise FedsimError(f"adversary.mode crafted-model needs a fully connected ReLU network (Linear and ReLU layers only); "
                          f"{model_name} has a {other} layer; {fix}")
    modules = list(model.named_children())
    layers = []
    for index, (name, module) in enumerate(modules):
        if isinstance(module, nn.Linear):
            following = next((m for _, m in modules[index + 1:] if not isinstance(m, nn.Dropout)), None)
            layers.append((name, module, isinstance(following, nn.ReLU)))
    if not layers or not layers[0][2]:
        raise FedsimError(f"adversary.mode crafted-model needs a first fully connected layer followed by a ReLU (the trap fires "
                          f"only through a ReLU's zero); {model_name} has none; {fix}")
    return layers


def crafted_width(model: nn.Module) -> int:
    """Targets one crafted model covers: the width of the first fully connected layer."""
    return first_linear_relu(model)[0][1].out_features


def chunk(ids: np.ndarray, width: int, index: int) -> np.ndarray:
    """The targets crafted in the `index`-th crafted round: chunks of `width` in order, cycling.

    Parameters
    ----------
    ids : numpy.ndarray
        All crafted record ids, shape `(n_targets,)`, in the order they are covered.
    width : int
        Neurons of the first layer.
    index : int
        How many crafted models the victim answered before this one.

    Returns
    -------
    numpy.ndarray
        Up to `width` record ids.
    """
    n_chunks = -(-len(ids) // width)
    start = (index % n_chunks) * width
    return ids[start:start + width]


def centre(x: torch.Tensor) -> torch.Tensor:
    """`(n_features,)` per-feature midpoint of the value range of records `x` `(n_records, ...)`."""
    flat = x.flatten(1)
    return (flat.min(0).values + flat.max(0).values) / 2


def crafted_state(model: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, c: torch.Tensor,
                  margin: float = MARGIN) -> dict[str, torch.Tensor]:
    """The model the crafted-model server sends: one first-layer neuron trapped on each record of `x`.

    Parameters
    ----------
    model : nn.Module
        A model of the run's architecture (`first_linear_relu` must accept it); overwritten.
    state : mapping of str to torch.Tensor
        What the victim would have been sent (the aggregate): later layers keep its weights.
    x : torch.Tensor
        The records to trap, `(n, ...)` as the model takes them, n <= the first layer's width;
        neuron k traps record k.
    c : torch.Tensor
        `(n_features,)` the centre (`centre` over the records the server holds).
    margin : float
        Pre-activation of neuron k on record k, as a fraction of |x_k - c| (L2).

    Returns
    -------
    dict of str to torch.Tensor
        The crafted state dict.

    Raises
    ------
    FedsimError
        When there are more records than neurons.
    """
    model.load_state_dict(state)
    layers = first_linear_relu(model)
    _, first, _ = layers[0]
    flat = x.flatten(1).to(first.weight.dtype)
    if len(flat) > first.out_features:
        raise FedsimError(f"adversary.mode crafted-model: {len(flat)} records for {first.out_features} neurons")
    with torch.no_grad():
        direction = flat - c
        radius = torch.linalg.vector_norm(direction, dim=1).clamp_min(1e-12)
        weights = direction / radius[:, None]
        first.weight.zero_()
        first.bias.fill_(-1.0)  # neurons without a record: off on every input
        first.weight[: len(flat)] = weights
        first.bias[: len(flat)] = -(weights @ c) - (1 - margin) * radius  # w . (x - c) - (1 - margin) |x_k - c|
        hidden = torch.zeros(first.out_features, dtype=first.weight.dtype)
        for _, layer, relu in layers[1:]:
            if not relu:
                break
            layer.bias.copy_(1.0 - layer.weight @ hidden)  # every unit active at pre-activation 1 when the first layer is silent
            hidden = torch.ones(layer.out_features, dtype=layer.weight.dtype)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_crafted(model: nn.Module, n_targets: int, config) -> None:
    """Refuse a crafted-model run that cannot trap every target.

    Parameters
    ----------
    model : nn.Module
        The run's initial model.
    n_targets : int
        Target records in the ledger.
    config : Config
        The run's config (model name, rounds, active rounds).

    Raises
    ------
    FedsimError
        One line when the model has no first fully connected ReLU layer, or when the rounds the
        server acts in cannot cover every target with one neuron each.
    """
    width = first_linear_relu(model, f"model {config.model.name!r}")[0][1].out_features
    acting = config.adversary.active_rounds or list(range(1, config.train.rounds + 1))
    needed = -(-n_targets // width)
    if needed > len(acting):
        raise FedsimError(f"adversary.mode crafted-model: {n_targets} targets need {needed} crafted rounds with a first layer of {width} "
                          f"neurons, but the server acts in {len(acting)}; raise train.rounds (or list more adversary.active_rounds), "
                          "widen the first layer (model.args.hidden) or lower adversary.target_records")
