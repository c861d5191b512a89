"""The white-box membership inference attack of Nasr, Shokri and Houmansadr (S&P 2019).

For each observed snapshot and record: the model's output, the loss, the true label (one-hot)
and the gradients of chosen layers each go through a small component network; the components'
outputs, across all snapshots, are concatenated and an encoder (256-128-64-1, ReLU, dropout
0.2) gives the membership probability. A layer gradient's component is a convolution whose
kernel spans one row of the (in x out) gradient matrix, then fully connected layers; for a
linear layer, row j of the gradient is a_j g, so the convolution is a_j (k . g) + b and the
gradient is never materialised; for a convolution held factored (unfolded input U, output
gradient G over L positions) it is sum_l U_jl (k . g_l) + b.

Supervised training uses the attacker's known records with a validation split taken from
them, and early stopping on the validation loss; the evaluation records are never seen.
The black-box variant keeps only output, loss and label.

A curious server also holds the other clients' models of each round, which never trained on
the target's records; like the trajectory baseline, it adds to the loss component how much
lower a record's loss is on the target's model than on those (a per-record calibration).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from attackers.inference.features import Features, LayerGradient
from attackers.inference.observation import Observation
from attackers.inference.registry import register

COMPONENT = 64


def _dense(inputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, COMPONENT), nn.ReLU())


class GradientComponent(nn.Module):
    """Row convolution over a layer's gradient, then fully connected layers (Nasr et al., S&P 2019, Fig. 3).

    Parameters
    ----------
    rows : int
        Rows of the layer's gradient matrix (its input width for a linear layer).
    width : int
        Columns of a row (its output width), what one kernel spans.
    filters : int
        Kernels.
    """

    def __init__(self, rows: int, width: int, filters: int):
        super().__init__()
        self.kernel = nn.Linear(width, filters)  # a convolution kernel spanning one row of width `width`
        self.dense = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), _dense(rows * filters))

    def forward(self, a: torch.Tensor | None, g: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor:
        """(N, 64) from a factored gradient, a (N, rows) and g (N, width), or a dense one, rows (N, rows, width)."""
        if rows is not None:
            return self.dense(self.kernel(rows))
        assert a is not None and g is not None  # a layer is given either as rows or as factors
        if a.dim() == 2:  # factored linear gradient: row j is a_j * g
            convolved = a[:, :, None] * (g @ self.kernel.weight.T)[:, None, :] + self.kernel.bias
        else:  # factored convolution gradient: row j is sum_l u_jl g_l
            convolved = torch.bmm(a, g.transpose(1, 2) @ self.kernel.weight.T) + self.kernel.bias
        return self.dense(convolved)


@dataclass
class _Inputs:
    """Tensors of N records on one snapshot, as the attack model takes them."""

    scalars: torch.Tensor  # (N, signals + 2 classes): standardised log loss (and log gradient norm), output probabilities, one-hot label
    gradients: list[tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]]  # (a, g, rows) per layer
    activations: list[torch.Tensor] = field(default_factory=list)  # (N, width) standardised outputs per chosen module

    def take(self, index: torch.Tensor) -> _Inputs:
        def pick(t):
            return None if t is None else t[index]

        return _Inputs(self.scalars[index], [tuple(pick(t) for t in layer) for layer in self.gradients],
                       [a[index] for a in self.activations])


class NasrModel(nn.Module):
    """Components per snapshot, concatenated, then the encoder (Nasr et al., S&P 2019, Fig. 3).

    Parameters
    ----------
    snapshots : int
        Snapshots read per record.
    classes : int
        Output classes of the target model.
    signals : int
        Scalar signals per snapshot (log loss, and log gradient norm and reference gap when present).
    gradient_shapes : sequence of (int, int)
        (rows, width) of each chosen layer's gradient.
    filters : int
        Kernels of each gradient component.
    activation_widths : sequence of int
        Width of each chosen hidden layer's output.
    out : int
        Outputs of the encoder's last layer (1: one membership logit per record, and `forward` returns shape (N,)).
    """

    def __init__(self, snapshots: int, classes: int, signals: int, gradient_shapes: Sequence[tuple[int, int]], filters: int,
                 activation_widths: Sequence[int] = (), out: int = 1):
        super().__init__()
        self.out = out
        self.classes, self.signals = classes, signals
        # One set of components reads every snapshot (weights shared across rounds): the
        # attacker's few known records then train few parameters however many rounds it observes.
        self.outputs = _dense(classes)
        self.losses = _dense(signals)
        self.labels = _dense(classes)
        self.gradients = nn.ModuleList(GradientComponent(rows, width, filters) for rows, width in gradient_shapes)
        self.activations = nn.ModuleList(_dense(width) for width in activation_widths)  # a hidden layer's output
        width = snapshots * COMPONENT * (3 + len(gradient_shapes) + len(activation_widths))
        self.encoder = nn.Sequential(
            nn.Linear(width, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, out),
        )

    def forward(self, snapshots: list[_Inputs]) -> torch.Tensor:
        """Membership logits, shape (N,), from one `_Inputs` per snapshot (N records each)."""
        parts = []
        for inputs in snapshots:
            loss, probabilities, label = inputs.scalars.split([self.signals, self.classes, self.classes], dim=1)
            parts += [self.losses(loss), self.outputs(probabilities), self.labels(label)]
            parts += [component(*layer) for component, layer in zip(self.gradients, inputs.gradients)]
            parts += [component(values) for component, values in zip(self.activations, inputs.activations)]
        encoded = self.encoder(torch.cat(parts, 1))
        return encoded.squeeze(1) if self.out == 1 else encoded


class NasrTrainingParams(AttackParams):
    """The arguments every attack of Nasr et al. shares: the attack model's gradient components
    (`filters`) and its training (Adam, early stopping on a validation split of the known records).

    It is `nasr_blackbox`'s whole `Params` (that attack reads no gradient, so `filters` changes
    nothing there); `NasrParams` adds what the white-box attack reads, and the unsupervised attack's
    `UnsupervisedParams` derives from that.
    """

    filters: int = Field(4, ge=1, description="convolution filters per gradient row in a layer-gradient component")
    epochs: int = Field(100, ge=1, description="most training epochs over the attacker's known records")
    batch_size: int = Field(64, ge=1, description="records per Adam step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    patience: int = Field(15, ge=1, description="epochs without a lower validation loss before stopping early")
    validation: float = Field(0.2, gt=0, lt=1, description="share of the known records held out for early stopping")


def fit_with_early_stopping(modules: list[nn.Module], n_records: int, params: NasrTrainingParams, generator: torch.Generator,
                            loss_of: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, int]:
    """Adam on `modules` with early stopping on a held-out share of the records; they end with the best epoch's weights.

    Parameters
    ----------
    modules : list of torch.nn.Module
        What is trained (their parameters, in order, go to one Adam optimiser).
    n_records : int
        Records available; `params.validation` of them (at least one) are held out.
    params : NasrTrainingParams
        epochs, batch_size, lr, patience, validation.
    generator : torch.Generator
        The attack's own generator: the split and each epoch's batch order.
    loss_of : callable
        Mean loss of the records at the given indices, shape (n,) -> scalar tensor.

    Returns
    -------
    tuple of (float, int)
        The lowest validation loss (inf when none was finite) and the epochs trained.
    """
    order = torch.randperm(n_records, generator=generator)
    cut = max(1, int(len(order) * params.validation))
    val_index, train_index = order[:cut], order[cut:]
    optimizer = torch.optim.Adam([q for module in modules for q in module.parameters()], lr=params.lr)
    best, best_state, waited, epochs = float("inf"), None, 0, 0
    for _ in range(params.epochs):
        epochs += 1
        for module in modules:
            module.train()
        for batch in train_index[torch.randperm(len(train_index), generator=generator)].split(params.batch_size):
            optimizer.zero_grad()
            loss_of(batch).backward()
            optimizer.step()
        for module in modules:
            module.eval()
        with torch.no_grad():
            val_loss = loss_of(val_index).item()
        if val_loss < best - 1e-4:
            best, waited = val_loss, 0
            best_state = [{k: v.clone() for k, v in module.state_dict().items()} for module in modules]
        else:
            waited += 1
            if waited >= params.patience:
                break
    if best_state is not None:  # else (no epoch improved on a finite loss) keep the last state
        for module, state in zip(modules, best_state):
            module.load_state_dict(state)
    return best, epochs


class NasrParams(NasrTrainingParams):
    """Parameters of the white-box attack."""

    layers: str | list[str] | None = Field(
        "last", description="gradients read: 'last', 'all', module names of the target model, or null for none")
    activations: str | list[str] | None = Field(
        None, description="hidden-layer outputs read: 'last' or 'all' hidden layers, module names of the target model, or null for none")


@register("nasr")
class NasrAttack(MembershipInferenceAttack):
    """Supervised white-box attack of Nasr, Shokri and Houmansadr (S&P 2019), section IV.

    `layers` selects the gradients ('last', 'all', module names, or none). The attack model
    is trained with Adam on the attacker's known records, early stopping on a validation split
    of them; its initialisation, dropout and batch order draw from the attack's own seed.

    Attributes
    ----------
    epochs_trained : int
        Epochs actually run by the last `fit` (at most `params.epochs`).
    """

    multi_round = True
    deterministic = False
    Params: ClassVar[type[AttackParams]] = NasrParams
    params: NasrTrainingParams  # NasrParams, or NasrTrainingParams for the black-box variant

    def __init__(self, params: AttackParams | dict | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        super().__init__(params, seed)
        self.model: NasrModel | None = None
        # Per snapshot: the scalar signals' (mean, std) tensors, then each layer's (float, float) scales.
        self.scales: list[list[tuple[Any, Any]]] = []
        self.threshold = 0.5
        self.epochs_trained = 0

    @property
    def layers(self) -> str | Sequence[str] | None:
        """The layers whose gradients the attack reads ('last', 'all', module names; None: no gradients)."""
        return self.params.layers if isinstance(self.params, NasrParams) else None  # the black-box variant reads none

    @property
    def activations(self) -> str | Sequence[str] | None:
        """The modules whose outputs the attack reads ('last', 'all', module names; None: none)."""
        return self.params.activations if isinstance(self.params, NasrParams) else None

    def _inputs(self, observation: Observation, ids: np.ndarray, fit: bool) -> list[_Inputs]:
        snapshots = []
        if fit:
            self.scales = []
        for s, round_number in enumerate(observation.rounds):
            features: Features = observation.features(ids, round_number, self.layers or "last", self.activations)
            columns = [features.loss.clamp_min(1e-12).log()]
            if self.layers:
                columns.append(features.gradient_norm.clamp_min(1e-12).log())
            reference = observation.reference_losses(ids, round_number)
            if reference is not None:  # the server's per-record calibration: the loss on clients that never trained on it
                columns.append(reference.clamp_min(1e-12).log().mean(0) - columns[0])
            signals = torch.stack(columns, 1)
            layers = list(features.gradients.values()) if self.layers else []
            hidden = list(features.activations.values())
            if fit:
                self.scales.append([(signals.mean(0), signals.std(0).clamp_min(1e-6))] + [_scale(layer) for layer in layers]
                                   + [(a.mean(0), a.std(0).clamp_min(1e-6)) for a in hidden])
            (mean, std), *rest = self.scales[s]
            layer_scales, hidden_scales = rest[: len(layers)], rest[len(layers) :]
            scalars = torch.cat([(signals - mean) / std, features.probabilities, features.one_hot], 1)
            snapshots.append(_Inputs(scalars, [_scaled(layer, scale) for layer, scale in zip(layers, layer_scales)],
                                     [(a - m) / d for a, (m, d) in zip(hidden, hidden_scales)]))
        return snapshots

    def _model(self, inputs: list[_Inputs], out: int = 1) -> NasrModel:
        """A fresh attack model shaped for `inputs` (draws its initialisation from torch's global generator)."""
        shapes = [_shape(a, g, rows) for a, g, rows in inputs[0].gradients]
        signals = len(self.scales[0][0][0])
        classes = (inputs[0].scalars.shape[1] - signals) // 2
        return NasrModel(len(inputs), classes, signals, shapes, self.params.filters, [a.shape[1] for a in inputs[0].activations], out)

    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> NasrAttack:
        """Train the attack model on the known records (one component set shared across every observed snapshot).

        The weights kept are those of the epoch with the lowest validation loss; returns self.
        """
        p = self.params
        inputs = self._inputs(observation, ids, fit=True)  # reads the run before any random draw
        generator = self.torch_generator()
        labels = torch.tensor(np.asarray(members), dtype=torch.float32)
        with self.own_torch_random():  # initialisation and dropout
            self.model = model = self._model(inputs)
            loss_fn = nn.BCEWithLogitsLoss()
            _, self.epochs_trained = fit_with_early_stopping(
                [model], len(labels), p, generator, lambda index: loss_fn(model([s.take(index) for s in inputs]), labels[index]))
        return self

    @torch.no_grad()
    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Member probability (sigmoid of the attack model's output), in [0, 1], shape (n_records,)."""
        if self.model is None:
            raise RuntimeError("fit the attack before scoring")
        self.model.eval()
        return torch.sigmoid(self.model(self._inputs(observation, ids, fit=False))).numpy()


@register("nasr_blackbox")
class NasrBlackBoxAttack(NasrAttack):
    """The same model on output, loss and label only (the black-box setting of Nasr et al., S&P 2019)."""

    Params = NasrTrainingParams


def _shape(a: torch.Tensor | None, g: torch.Tensor | None, rows: torch.Tensor | None) -> tuple[int, int]:
    """(rows, width) of one layer's input to the row convolution."""
    if rows is None:
        assert a is not None and g is not None
        return a.shape[1], g.shape[1]
    return rows.shape[1], rows.shape[2]


def _scale(layer: LayerGradient) -> tuple[float, float]:
    """Scalar scales fitted on the attacker's records, so gradients reach the network at unit size."""
    if layer.factored:
        a, g = layer.factors()
        return float(a.std()) or 1.0, float(g.std()) or 1.0
    return float(layer.rows().std()) or 1.0, 1.0


def _scaled(layer: LayerGradient, scale: tuple[float, float]):
    if layer.factored:
        a, g = layer.factors()
        return a / scale[0], g / scale[1], None
    return None, None, layer.rows() / scale[0]
