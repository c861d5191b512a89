"""Optimisation-based reconstruction: find records whose update matches the observed one.

Geiping, Bauermeister, Dröge and Moeller, "Inverting Gradients - How easy is it to break privacy
in federated learning?" (NeurIPS 2020) start from random dummy records and move them, by Adam on
the sign of the gradient, until the update they would produce points the same way as the observed
update (cosine distance), with a total-variation prior on images. The labels are read first from
the last layer (Zhao, Mopuri and Bilen 2020, iDLG, for one record; Geng et al. 2021 for counts
over several), so only the records are optimised. A FedAvg client takes several local steps, not
one gradient: either the attacker replays the client's local SGD on the dummy records, as
Dimitrov, Balunovic, Konstantinov and Vechev ("Data Leakage in Federated Averaging", TMLR 2022) do,
or it treats the whole update as one gradient (a pseudo-gradient); both are here, so their
difference can be measured.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from attackers.inference.reconstruction.base import (
    LocalSchedule,
    Reconstruction,
    ReconstructionAttack,
    ReconstructionParams,
    ReconstructionTask,
    register_reconstruction,
)
from fedsim.core.errors import FedsimError

Mode = Literal["simulate", "pseudo-gradient"]


class InvertingGradientsParams(ReconstructionParams):
    """The budget and the model of the client's training (the `args` of an `inverting_gradients` entry)."""

    local_steps: Literal["auto", "simulate", "pseudo-gradient"] = Field(
        "auto", description="simulate (replay the client's local SGD on the dummy records; needs the schedule), "
        "pseudo-gradient (the update as one gradient of the mean loss) or auto (simulate when the schedule is known)")
    iterations: int = Field(200, ge=1, description="Adam steps on the dummy records per restart (the paper: 4,800-24,000)")
    restarts: int = Field(2, ge=1, description="independent random starts; the one with the lowest objective is kept")
    lr: float = Field(0.1, gt=0, allow_inf_nan=False, description="Adam's step size on the dummy records (decayed x0.1 at 3/8, 5/8, 7/8)")
    tv: float = Field(1e-3, ge=0, allow_inf_nan=False, description="weight of the total-variation prior (images only)")
    max_records: int = Field(64, ge=1, description="an update trained on more records is not attacked (the cost grows with "
                             "the records and the local steps: about 18 s of CPU for 8 MNIST records at the defaults)")


@register_reconstruction("inverting_gradients")
class InvertingGradients(ReconstructionAttack):
    """Inverting Gradients (Geiping et al. 2020) with the client's local steps replayed (Dimitrov et al. 2022).

    Minimises, over dummy records x of shape (n, *input_shape) in the model's input space,

        1 - cos(simulated update(x, y), observed update) + tv * TV(x)

    where the cosine runs over all parameters concatenated, TV is the anisotropic total variation
    (mean absolute difference of neighbouring pixels, both directions, as in the paper's code) for
    inputs of shape (C, H, W) and nothing for tabular inputs. Each of `restarts` starts draws x from
    a standard normal (the paper's `randn` init, in normalised space) clamped to `task.bounds`, then
    takes `iterations` Adam steps (lr 0.1, decayed by 10 at 3/8, 5/8 and 7/8 of the budget) on
    the sign of the gradient, clamping x to the bounds after each; the restart with the lowest
    objective is returned.

    The simulated update, by `local_steps`:

    - "simulate": the client's local training on (x, y) replayed differentiably
      (`torch.func.functional_call`, `create_graph=True`): `task.schedule.local_epochs` passes, batches
      of `batch_size`, SGD with torch's momentum rule or Adam (torch's rule, betas 0.9/0.999,
      eps 1e-8); update = final - sent parameters. The model runs in train mode, as the client's does.
    - "pseudo-gradient": -(gradient of the mean cross-entropy over all n records at the sent
      parameters); the update is taken as one step of unknown size, which the cosine ignores.
    - "auto" (default): "simulate" when `task.schedule` is known, else "pseudo-gradient".

    Labels are inferred before the optimisation, from the last layer that runs (the last
    `nn.Linear` in forward order, which must have `num_classes` outputs):

    - one record: iDLG. The cross-entropy gradient of the last bias is softmax - onehot, negative only
      at the true class, so the update (-lr x gradient, summed over steps) moves the true class's bias
      up and every other one down: y = argmax of the bias update. That holds for every local step and
      for momentum. Without a bias, the row sums of the weight update (iDLG's rule, exact when the
      penultimate features are non-negative, e.g. after a ReLU).
    - several records: label counts from the bias update (Geng et al. 2021, "Towards General Deep
      Leakage in Federated Learning", arXiv 2110.09074): with p the mean softmax, the bias update is
      about -lr W (p - k/n) (k the label counts, W the sum over steps of each gradient's weight in
      the update: the number of steps for plain SGD), so k = n (p + update / (lr W)). p is estimated
      after Geng et al., from the model's softmax on dummy inputs (64 draws uniform within the
      bounds), averaged over the sent and the returned parameters. Where lr W is unknown (no schedule, or Adam), the
      scale is taken as the largest that keeps every count non-negative, which is exact when at least
      one class is absent. Counts are rounded by largest remainder to sum to n; the labels are dealt to
      the dummy records in an order drawn from the attack's generator.

    Deviations from the papers, and why:

    - Budget: 200 iterations x 2 restarts by default instead of the paper's 4,800-24,000 x 1-8, so an
      attack over a run's observed rounds finishes on a laptop CPU. Measured on this project's 2-core
      CPU (torch 2.14, one thread, MNIST CNN on 28x28 MNIST, one local SGD step with batch = n,
      default "simulate"): 8 s of CPU time for one record (52.9 dB, label right) and 18 s for eight
      (21.8 dB mean after matching, baseline 12.6 dB, label counts right); the machine was shared, so
      wall time was 18-41 s and 58 s. Run it on one thread: two threads on a busy 2-core machine took
      171 s for the one record. The cost is linear in iterations x restarts x local steps and in the
      records per step; raise `iterations` for better reconstructions.
    - TV weight 1e-3, inside the paper's range (its code: 1e-1 on CIFAR-10, 1e-4 on ImageNet). On
      MNIST (CNN, 200 iterations, seed 0) one record came back at 36 dB with 1e-2, 54 dB with 1e-3
      and 72 dB with 1e-4, and eight at about 21 dB with each: fedsim's small, sharp digits gain
      little from the prior and lose detail to a strong one; 0 turns it off.
    - Batch order in "simulate": the client reshuffles its records each epoch with a seed the attacker
      does not know. We keep one order: record i is in batch i // batch_size in every epoch (as Geiping
      et al.'s own FedAvg reconstructor does). Dimitrov et al. instead keep one dummy set per epoch and
      tie them with an epoch-order-invariant prior; that multiplies the cost by the number of epochs and
      is not done here. The order is exact when there is one batch per epoch (batch_size >= n); with
      one epoch of several batches the dummy records are interchangeable but the labels, dealt at
      random, may group differently from the client's batches; with several epochs of several
      batches the replay is an approximation.
    - The schedule does not carry the client's weight decay, DP-SGD clipping/noise or FedProx term:
      they are not simulated (the cosine is robust to a uniform rescaling, not to these).

    Parameters
    ----------
    params : InvertingGradientsParams or dict, optional
        The budget and mode (defaults above).
    seed : int or numpy.random.SeedSequence
        All randomness (starts, label-probe inputs, label dealing, dropout in the replay) derives from
        it: the same task and seed give the same reconstruction, bit for bit, on one machine and thread
        count.
    """

    Params = InvertingGradientsParams

    def declines(self, task: ReconstructionTask) -> str | None:
        limit = self.params.max_records  # type: ignore[attr-defined]
        if task.n_records > limit:
            return (f"the update was trained on {task.n_records} records, above inverting_gradients' max_records "
                    f"{limit}; raise it with {{name: inverting_gradients, args: {{max_records: {task.n_records}}}}} "
                    "(the cost grows with the records)")
        return None

    def reconstruct(self, task: ReconstructionTask) -> Reconstruction:
        """Rebuild the `task.n_records` records of one update.

        Parameters
        ----------
        task : ReconstructionTask
            The update; `task.model` is copied, never changed.

        Returns
        -------
        Reconstruction
            x float32 of shape (n_records, *input_shape) within `task.bounds`, y int64 of shape
            (n_records,), `exact` None, and `info` with the mode, the label method and counts, each
            restart's final objective and matching loss, the kept restart and the seconds taken.
        """
        params: InvertingGradientsParams = self.params  # type: ignore[assignment]
        started = time.perf_counter()
        mode: Mode = ("simulate" if task.schedule is not None else "pseudo-gradient") if params.local_steps == "auto" else params.local_steps
        if mode == "simulate" and task.schedule is None:
            raise FedsimError("reconstructions: inverting_gradients local_steps 'simulate' needs the client's schedule, which this "
                              "task does not know; use local_steps 'pseudo-gradient' or 'auto'")
        if task.schedule is not None and task.schedule.optimizer not in ("sgd", "adam"):
            raise FedsimError(f"reconstructions: inverting_gradients cannot replay optimizer {task.schedule.optimizer!r}; "
                              "it replays sgd and adam (or use local_steps 'pseudo-gradient')")
        n = int(task.n_records)
        if n < 1:
            raise FedsimError(f"reconstructions: inverting_gradients got an update of {n} records; it needs at least one")
        starts_gen, probe_gen, deal_gen = (torch.Generator().manual_seed(int(s)) for s in self.seed_sequence.generate_state(3, np.uint64))

        model = copy.deepcopy(task.model)
        for p in model.parameters():
            p.requires_grad_(False)
        names = [name for name, _ in model.named_parameters()]
        missing = [name for name in names if name not in task.sent or name not in task.returned]
        if missing:
            raise FedsimError(f"reconstructions: the recorded states lack the model's parameter {missing[0]!r}; "
                              "the task's model does not fit the recorded run")
        sent = {name: task.sent[name].detach().to(torch.float32).clone() for name in names}
        observed = torch.cat([(task.returned[name].detach().to(torch.float32) - sent[name]).reshape(-1) for name in names])
        head = last_linear(model, task.input_shape, task.num_classes)
        labels, label_info = infer_labels(model, head, task, sent, n, probe_gen, deal_gen)

        lower, upper = (b.detach().to(torch.float32).expand(task.input_shape) for b in task.bounds)
        tv = params.tv if len(task.input_shape) == 3 and task.input_shape[1] > 1 and task.input_shape[2] > 1 else 0.0
        model.train()
        best_x, best_objective, restarts = None, math.inf, []
        with self.own_torch_random(), torch.enable_grad():
            for _ in range(params.restarts):
                x = torch.randn((n, *task.input_shape), generator=starts_gen).clamp_(lower, upper)
                x.requires_grad_(True)
                optimizer = torch.optim.Adam([x], lr=params.lr)
                milestones = [int(params.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
                decay = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
                for _ in range(params.iterations):
                    objective, _ = self._objective(model, sent, names, observed, x, labels, task.schedule, mode, tv)
                    (grad,) = torch.autograd.grad(objective, [x])
                    x.grad = grad.sign()
                    optimizer.step()
                    decay.step()
                    with torch.no_grad():
                        x.clamp_(lower, upper)
                objective, matching = self._objective(model, sent, names, observed, x, labels, task.schedule, mode, tv)
                restarts.append({"objective": float(objective.detach()), "matching": float(matching)})
                if float(objective.detach()) < best_objective:
                    best_objective, best_x = float(objective.detach()), x.detach().clone()
        assert best_x is not None
        kept = int(np.argmin([r["objective"] for r in restarts]))
        info = {"mode": mode, **label_info, "iterations": params.iterations, "restarts": restarts, "kept_restart": kept,
                "matching_loss": restarts[kept]["matching"], "seconds": time.perf_counter() - started}
        return Reconstruction(best_x, labels.clone(), None, info)

    def _objective(self, model: nn.Module, sent: dict[str, torch.Tensor], names: list[str], observed: torch.Tensor,
                   x: torch.Tensor, y: torch.Tensor, schedule: LocalSchedule | None, mode: Mode,
                   tv: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(matching + tv x TV, matching), matching = 1 - cosine of simulated and observed update."""
        if mode == "simulate":
            assert schedule is not None
            simulated = simulate_update(model, sent, names, x, y, schedule)
        else:
            start = {name: sent[name].detach().requires_grad_(True) for name in names}
            loss = F.cross_entropy(functional_call(model, start, (x,)), y)
            simulated = [-g for g in torch.autograd.grad(loss, list(start.values()), create_graph=True)]
        matching = 1 - cosine(simulated, observed)
        prior = tv * total_variation(x) if tv > 0 else 0.0
        return matching + prior, matching.detach()


def cosine(a: list[torch.Tensor], b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of a parameter list, concatenated, with the flat vector `b` (Geiping et al.'s `sim` cost)."""
    flat = torch.cat([u.reshape(-1) for u in a])
    return (flat @ b) / (flat.norm() * b.norm() + 1e-12)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of images (n, C, H, W): mean |horizontal difference| + mean |vertical difference|."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def simulate_update(model: nn.Module, sent: Mapping[str, torch.Tensor], names: list[str], x: torch.Tensor, y: torch.Tensor,
                    schedule: LocalSchedule) -> list[torch.Tensor]:
    """The parameter change of the client's local training on (x, y), differentiable in x.

    Batches in a fixed order (record i in batch i // batch_size, every epoch; the last batch may be
    short, as the client's DataLoader makes it); SGD with torch's momentum rule (first step: buffer =
    gradient; then buffer = momentum x buffer + gradient) or Adam with torch's defaults.
    """
    params = {name: sent[name].detach().requires_grad_(True) for name in names}
    start = dict(params)
    state: dict[str, list[torch.Tensor]] = {}
    step = 0
    for _ in range(schedule.local_epochs):
        for first in range(0, len(y), schedule.batch_size):
            batch = slice(first, first + schedule.batch_size)
            loss = F.cross_entropy(functional_call(model, params, (x[batch],)), y[batch])
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            step += 1
            new = {}
            for (name, p), g in zip(params.items(), grads):
                if schedule.optimizer == "adam":
                    m, v = state.get(name, [torch.zeros_like(p), torch.zeros_like(p)])
                    m = 0.9 * m + 0.1 * g
                    v = 0.999 * v + 0.001 * g * g
                    state[name] = [m, v]
                    # sqrt(v + 1e-30): the same value in float32, a finite derivative where v = 0 (a dead unit)
                    denom = (v + 1e-30).sqrt() / math.sqrt(1 - 0.999**step) + 1e-8
                    new[name] = p - schedule.lr / (1 - 0.9**step) * m / denom
                else:
                    if schedule.momentum > 0:
                        g = schedule.momentum * state[name][0] + g if name in state else g
                        state[name] = [g]
                    new[name] = p - schedule.lr * g
            params = new
    return [params[name] - start[name] for name in names]


def last_linear(model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> str:
    """The qualified name of the `nn.Linear` that runs last in a forward pass; its output must be the model's logits."""
    outputs: list[tuple[nn.Module, torch.Tensor]] = []
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    hooks = [m.register_forward_hook(lambda module, inputs, output: outputs.append((module, output))) for m in linears]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not outputs or outputs[-1][1].shape != (1, num_classes) or not torch.equal(outputs[-1][1], logits):
        raise FedsimError(f"reconstructions: inverting_gradients reads labels from the last layer, which must be an nn.Linear "
                          f"giving the {num_classes} logits, and this model's is not; use a classifier whose head is an nn.Linear")
    names = {id(m): name for name, m in model.named_modules()}
    return names[id(outputs[-1][0])]


def infer_labels(model: nn.Module, head: str, task: ReconstructionTask, sent: Mapping[str, torch.Tensor], n: int,
                 probe_gen: torch.Generator, deal_gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Labels of the n records from the last layer's update: iDLG for one, Geng et al.'s counts for several."""
    bias = f"{head}.bias"
    has_bias = bias in sent
    if has_bias:
        signal = (task.returned[bias].detach().to(torch.float32) - sent[bias]).double()
    else:  # iDLG's rule without a bias: the true class's row moves against the others (non-negative features)
        weight = f"{head}.weight"
        signal = (task.returned[weight].detach().to(torch.float32) - sent[weight]).double().sum(dim=1)
    if n == 1:
        label = int(torch.argmax(signal))
        return torch.tensor([label], dtype=torch.int64), {"label_method": "idlg" + ("" if has_bias else "-weight-rows"),
                                                          "label_counts": {label: 1}}
    mean_softmax = _probe_softmax(model, task, probe_gen)
    schedule = task.schedule
    if schedule is not None and schedule.optimizer == "sgd" and has_bias:
        steps = schedule.steps(n)
        weight_sum = sum(sum(schedule.momentum**j for j in range(steps - t)) for t in range(steps))
        scale = schedule.lr * weight_sum
        method = "geng-bias"
    else:  # the largest scale keeping every count >= 0 (exact when some class is absent)
        scale = float(torch.max(-signal / mean_softmax.clamp_min(1e-12)).clamp_min(1e-30))
        method = "geng-bias-scale-free" if has_bias else "weight-rows-scale-free"
    counts = (n * (mean_softmax + signal / scale)).clamp_min(0)
    counts = counts * (n / counts.sum()) if counts.sum() > 0 else torch.full_like(counts, n / len(counts))
    whole = torch.floor(counts).long()
    remainder = counts - whole
    for c in torch.argsort(remainder, descending=True, stable=True)[: n - int(whole.sum())]:
        whole[c] += 1
    labels = torch.repeat_interleave(torch.arange(len(whole)), whole)
    labels = labels[torch.randperm(n, generator=deal_gen)]
    return labels.to(torch.int64), {"label_method": method, "label_counts": {int(c): int(k) for c, k in enumerate(whole) if k}}


def _probe_softmax(model: nn.Module, task: ReconstructionTask, generator: torch.Generator) -> torch.Tensor:
    """Mean softmax on 64 inputs uniform within the bounds, averaged over the sent and returned parameters."""
    lower, upper = (b.detach().to(torch.float32).expand(task.input_shape) for b in task.bounds)
    probe = lower + (upper - lower) * torch.rand((64, *task.input_shape), generator=generator)
    was_training = model.training
    model.eval()
    means = []
    with torch.no_grad():
        for state in (task.sent, task.returned):
            weights = {name: state[name].detach().to(torch.float32) for name, _ in model.named_parameters()}
            means.append(F.softmax(functional_call(model, weights, (probe,)), dim=1).double().mean(dim=0))
    model.train(was_training)
    return (means[0] + means[1]) / 2
