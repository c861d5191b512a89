"""Exact reconstruction through a crafted model: read each record off the trap neuron it fired.

Fowl, Geiping, Czaja, Goldblum and Goldstein, "Robbing the Fed: Directly Obtaining Private Data in
Federated Learning with Modified Models", ICLR 2022 (the imprint read); the traps are Pichler et
al.'s (IEEE TDSC 2024), as the crafted-model server builds them (`attackers.active.crafted_model`):
first-layer neuron k of weights W_k and bias b_k fires (ReLU > 0) on its target record only.

Why it is exact: if neuron k fires on record x in a local step, the loss gradient of its row is
dL/dW_k = delta * x and dL/db_k = delta (delta = dL/d(pre-activation_k), summed over the batch).
When x alone fires it, every step t adds -lr * delta_t * (x, 1) to (W_k, b_k), so after any number of
plain-SGD steps the update is (dW_k, db_k) = -lr * (sum_t delta_t) * (x, 1) and x = dW_k / db_k.
SGD momentum only re-weights past gradients (each a multiple of (x, 1)), and Opacus' per-example
clipping scales an example's whole gradient by one factor, so both stay exact.

Where it fails: Adam divides each coordinate by its own running scale (the read gives about sign(x);
nothing is claimed exact when the schedule says adam, but an unknown schedule cannot tell);
weight decay moves every row towards zero whether it fired or not; DP-SGD's noise is added to every
row (every neuron "moves" and the ratio is noise); two records firing one neuron give
(d1 x1 + d2 x2) / (d1 + d2), a mixture; under secure aggregation the residual (aggregate minus
the mean of what was sent) mixes every other client's update of the same rows, so no row is one
record's. The read is also only as precise as float32: each step rounds b_k to half an ulp, so x
carries an error of about eps * (|W_k| + |x| |b_k|) / |db_k| per step in which the row changed
(`info["rounding_bound"]`; at lr 0.05 on the 8x8 digits 2e-5 to 5e-3, down to 1e-12 in float64).

Which rows: those that moved (|db_k| > `floor_ulps` * eps * |b_k|, eps of the recorded dtype: plain
SGD leaves a row that never fired bit for bit unchanged). A recovered x is claimed `exact` when it
still fires neuron k in the sent model and lies inside `task.bounds`, each up to its own rounding
bound and `bounds_tol`. A mixture of records whose deltas differ in sign extrapolates beyond both and
usually leaves the bounds, and noise gives a ratio that is neither bounded nor firing; but a mixture
of two records that both fire the sent trap, with deltas of one sign, is a convex combination that
passes both checks: `exact` is the method's claim, which scoring against the truth confirms or not.

Labels: the first layer carries none, so the label is read from the same row. At the crafted model
the network's output hardly depends on the input (every other trap is silent), so a record of label
y would have moved b_k by -alpha * g_k(y), with g_k(y) = (softmax(z) - e_y) . dz/d(pre_k), the
gradient of the loss on the recovered x through neuron k (iDLG's reading of the output layer's
gradient, Zhao et al. 2020, taken through the trap instead): the label is the y whose g_k(y) best
explains db_k (`read_labels`: alpha = lr / batch_size, times local_epochs for a row whose record kept
firing, when the schedule is known and plain SGD; else the alpha that explains the rows best). Not
exact: training moves the later layers between steps, and two labels may explain a row about
equally; on the 8x8 digits 60 to 80% of the labels are right (chance 10%).
"""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field
from torch import nn

from attackers.inference.reconstruction.base import (
    LocalSchedule,
    Reconstruction,
    ReconstructionAttack,
    ReconstructionParams,
    ReconstructionTask,
    register_reconstruction,
)
from fedsim.core.errors import FedsimError


class ImprintParams(ReconstructionParams):
    """The imprint read's tolerances (nothing is fitted)."""

    floor_ulps: float = Field(8.0, gt=0, description="a neuron moved when |db_k| exceeds this many eps of the recorded dtype times |b_k|")
    bounds_tol: float = Field(1e-4, ge=0, description="slack of the bounds and firing checks, as a fraction of each feature's range, "
                                                       "added to the read's own rounding bound")


def first_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's first layer with parameters, which must be an `nn.Linear` with a bias, and its parameter prefix.

    Parameters
    ----------
    model : nn.Module
        The task's model.

    Returns
    -------
    (str, nn.Linear)
        The prefix of its parameters in the state dict (e.g. "0" for "0.weight") and the layer.

    Raises
    ------
    FedsimError
        One line when the first layer with parameters is not a fully connected layer with a bias.
    """
    fix = "run the crafted-model server with model: {name: fcn, args: {activation: relu}}"
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            if not isinstance(module, nn.Linear) or module.bias is None:
                kind = type(module).__name__ if not isinstance(module, nn.Linear) else "Linear without a bias"
                raise FedsimError(f"reconstruction imprint reads the first layer's trap neurons, which must be a fully connected layer "
                                  f"with a bias; the model's first layer {name!r} is a {kind}; {fix}")
            return name, module
    raise FedsimError(f"reconstruction imprint: the model has no parameters; {fix}")


def _class_gradients(model: nn.Module, layer: nn.Linear, x: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """(n, C): g_i(y) = dL_y / d(pre-activation of neuron k_i) for record x_i and every label y, at the model's weights."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        captured.append(output.detach().requires_grad_())  # a leaf of its own: gradients reach it whatever the parameters require
        return captured[-1]

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x.to(layer.weight.dtype))
            pre = captured[0]
            rows = torch.arange(len(x))
            jacobian = torch.stack([torch.autograd.grad(logits[:, c].sum(), pre, retain_graph=True)[0][rows, neurons]
                                    for c in range(logits.shape[1])], 1).double()  # (n, C): dz_c / d pre_k
            probabilities = torch.softmax(logits.detach().double(), 1)
    finally:
        handle.remove()
    return (probabilities * jacobian).sum(1, keepdim=True) - jacobian  # (p - e_y) . J


def _fit_alpha(db: torch.Tensor, gradients: torch.Tensor) -> float:
    """The alpha among the candidates db_i / -g_i(y) > 0 that minimises sum_i min_y |db_i + alpha g_i(y)| / |db_i|."""
    candidates = (db[:, None] / -gradients).flatten()
    candidates = candidates[torch.isfinite(candidates) & (candidates > 0)]
    if len(candidates) == 0:
        return 1.0
    misfit = ((db[None, :, None] + candidates[:, None, None] * gradients[None]).abs().min(2).values / db.abs()[None]).sum(1)
    return float(candidates[int(misfit.argmin())])


def read_labels(db: torch.Tensor, gradients: torch.Tensor, schedule: LocalSchedule | None) -> tuple[torch.Tensor, list[float]]:
    """The labels whose bias update -alpha * g(y) best explains each db, and the alphas used.

    A row whose update lowered the record's pre-activation (db < 0) fired once: the step pushed the
    record below the trap's margin. One that raised it (db > 0) fires again each time the record
    comes round, once per local epoch. So alpha is lr / batch_size for db < 0 and
    local_epochs * lr / batch_size for db > 0 when the schedule is known and plain SGD; otherwise
    each sign's alpha is the one that explains that sign's rows best (`_fit_alpha`).

    Parameters
    ----------
    db : torch.Tensor
        (n,) float64 bias updates of the moved neurons.
    gradients : torch.Tensor
        (n, C) float64 per-label gradients g_i(y) (`_class_gradients`).
    schedule : LocalSchedule or None
        The victim's local schedule, where known.

    Returns
    -------
    (torch.Tensor, list of float)
        (n,) int64 labels, and the alphas for db < 0 and db > 0 (NaN for a sign no row has).
    """
    labels = torch.zeros(len(db), dtype=torch.int64)
    alphas = []
    for sign, firings in ((-1, 1), (1, schedule.local_epochs if schedule is not None else 1)):
        rows = torch.sign(db) == sign
        if not rows.any():
            alphas.append(float("nan"))
            continue
        if schedule is not None and schedule.optimizer == "sgd" and schedule.momentum == 0:
            alpha = firings * schedule.lr / schedule.batch_size
        else:
            alpha = _fit_alpha(db[rows], gradients[rows])
        labels[rows] = (db[rows, None] + alpha * gradients[rows]).abs().argmin(1)
        alphas.append(alpha)
    return labels, alphas


@register_reconstruction("imprint")
class ImprintReconstruction(ReconstructionAttack):
    """Exact reconstruction from a crafted model's trap neurons (Fowl et al., ICLR 2022; see the module docstring).

    Deterministic: nothing is drawn, the seed is unused.

    Parameters
    ----------
    params : ImprintParams or dict, optional
        `floor_ulps` and `bounds_tol` (default: every default).
    seed : int or numpy.random.SeedSequence
        The protocol's seed (unused).
    """

    Params = ImprintParams
    needs_crafted_model = True

    def reconstruct(self, task: ReconstructionTask) -> Reconstruction:
        """Read one record off every first-layer neuron that moved.

        Parameters
        ----------
        task : ReconstructionTask
            A round in which the server sent a crafted model: `sent` the trap (under secure
            aggregation the mean of what was sent), `returned` the victim's model (or the aggregate).

        Returns
        -------
        Reconstruction
            One row per moved neuron, in neuron order: x (n, *input_shape) = dW_k / db_k in the model's
            input space, y (n,) the label read from the same row, `exact` (n,) the claim that x fires
            neuron k in the sent model and lies within `task.bounds` (each up to its rounding bound).
            info: "width", "moved", "exact" (counts), "neurons" (k of each row), "rounding_bound" (per
            row, the largest per-feature float rounding bound of x), "alpha" (the label read's scale).

        Raises
        ------
        FedsimError
            One line when the model's first layer is not fully connected with a bias, or does not take
            the flattened record.
        """
        params = cast(ImprintParams, self.params)
        prefix, layer = first_layer(task.model)
        features = 1
        for size in task.input_shape:
            features *= size
        if layer.in_features != features:
            raise FedsimError(f"reconstruction imprint: the first layer takes {layer.in_features} features but a record has {features} "
                              f"(shape {task.input_shape}); the first layer must take the flattened record (model fcn)")
        weight_key, bias_key = f"{prefix}.weight" if prefix else "weight", f"{prefix}.bias" if prefix else "bias"
        w_sent, b_sent = task.sent[weight_key].double(), task.sent[bias_key].double()
        w_back, b_back = task.returned[weight_key].double(), task.returned[bias_key].double()
        dw, db = w_back - w_sent, b_back - b_sent  # exact in float64: differences of float32 (or float16) values
        eps = torch.finfo(task.returned[bias_key].dtype).eps
        b_size = torch.maximum(b_sent.abs(), b_back.abs())
        moved = db.abs() > params.floor_ulps * eps * b_size
        neurons = torch.nonzero(moved).flatten()
        x = dw[neurons] / db[neurons, None]  # (n, features)

        # float rounding: each step that changed the row rounded every entry to half an ulp (<= eps/2 * |value|)
        steps = task.schedule.steps(task.n_records) if task.schedule is not None else 1
        w_size = torch.maximum(w_sent.abs(), w_back.abs())[neurons]
        bound = steps * eps / 2 * (w_size + x.abs() * b_size[neurons, None]) / db[neurons].abs()[:, None]  # (n, features)

        lower, upper = (b.flatten().double() for b in task.bounds)
        slack = bound + params.bounds_tol * (upper - lower)
        inside = ((x >= lower - slack) & (x <= upper + slack)).all(1)
        pre = (x * w_sent[neurons]).sum(1) + b_sent[neurons]
        fires = pre > -(w_sent[neurons].abs() * slack).sum(1)
        exact = inside & fires
        if task.schedule is not None and task.schedule.optimizer != "sgd":
            exact = torch.zeros_like(exact)  # Adam's per-coordinate scaling: the ratio is not the record

        gradients = _class_gradients(task.model, layer, x.reshape(len(x), *task.input_shape), neurons) if len(x) else torch.zeros(0, 1)
        labels, alphas = read_labels(db[neurons], gradients.double(), task.schedule)

        dtype = task.sent[weight_key].dtype
        info = {"width": layer.out_features, "moved": len(neurons), "exact": int(exact.sum()), "neurons": neurons.tolist(),
                "rounding_bound": bound.max(1).values.tolist() if len(x) else [], "alpha": alphas}
        return Reconstruction(x.to(dtype).reshape(len(x), *task.input_shape), labels, exact, info)
