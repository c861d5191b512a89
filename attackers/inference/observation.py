"""What an attacker observed: the model snapshots of its threat model, with cached features.

A curious server observes the target client's local models (or, under secure aggregation,
only the aggregates); a curious participant observes the global models. Inference attacks
ask an Observation for features of records on its snapshots; features are computed once per
(snapshot, records, layers) and reused by every attack.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from attackers.inference.features import DEFAULT_BUDGET, Features, extract

V = TypeVar("V")


def records_key(ids: np.ndarray) -> tuple[int, ...]:
    """The record ids as a hashable part of a cache key (same ids in the same order, same key)."""
    return tuple(np.asarray(ids).tolist())


def _on_cpu(features: Features) -> Features:
    """`features` with every tensor moved to the CPU."""

    def cpu(value):
        return None if value is None else value.cpu()

    gradients = {name: replace(g, inputs=cpu(g.inputs), outputs=cpu(g.outputs), dense=cpu(g.dense), bias=cpu(g.bias))
                 for name, g in features.gradients.items()}
    return replace(features, loss=features.loss.cpu(), probabilities=features.probabilities.cpu(), labels=features.labels.cpu(),
                   gradients=gradients, gradient_norm=cpu(features.gradient_norm),
                   activations={name: a.cpu() for name, a in features.activations.items()})


@dataclass
class Observation:
    """Snapshots (oldest first) an attacker holds, and how to read records.

    What is read or derived from the snapshots is kept in one cache per run view, shared by every
    `up_to` view of it, so each (snapshot, records) is read once whatever attacks ask; an attack
    keeps what it derives there through `cached` (a `dataclasses.replace` copy starts empty).

    Parameters
    ----------
    rounds : list of int
        The rounds whose snapshot the attacker holds, oldest first.
    load_model : callable
        round -> the snapshot's torch module (evaluation mode); it must draw nothing from torch's
        global generator (`fedsim.Run.model` forks it), so reading a run never shifts an attack's randomness.
    load_records : callable
        record ids, shape (n_records,) -> (x, y): inputs (n_records, *input_shape) and labels (n_records,).
    memory_budget : int
        Bytes the per-example features of one chunk may take (`features.extract`).
    reference_models : callable, optional
        round -> the other clients' models of the round (a curious server's references); None otherwise.
    reference_sent : callable, optional
        round -> what each of those clients was sent before it trained, in the same order (a
        curious server's; FedMIA's cosine measurement reads their updates); None otherwise.
    """

    rounds: list[int]
    load_model: Callable[[int], nn.Module]
    load_records: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
    memory_budget: int = DEFAULT_BUDGET
    reference_models: Callable[[int], list[nn.Module]] | None = None  # other clients' models (server only)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where features are computed (kept on CPU)
    _cache: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    # what the observer held before each observed snapshot was trained: the server's broadcast to the
    # victim (the aggregate when nothing else was sent), the participant's own upload
    load_sent: Callable[[int], nn.Module] | None = None
    # rounds whose sent model the attacker manipulated (a broadcast other than the aggregate was recorded)
    manipulated: frozenset[int] = frozenset()
    # what the observed snapshot of a manipulated round would be had nobody trained (None: the sent model);
    # under secure aggregation the sent models' example-weighted mean
    load_baseline: Callable[[int], nn.Module] | None = None
    # what the attacker held before it manipulated a round's sent model (the server's aggregate, or the
    # isolated victim's previous reply, before the ascent step); None for a round it did not ascend
    load_before: Callable[[int], nn.Module | None] | None = None
    # what each reference client was sent before it trained its model of the round, in the order of
    # `reference_models` (a curious server's; None otherwise)
    reference_sent: Callable[[int], list[nn.Module]] | None = None

    def up_to(self, last_round: int, keep: Sequence[int] | None = None) -> Observation:
        """The snapshots observed by round `last_round`.

        Parameters
        ----------
        last_round : int
            The last round included.
        keep : sequence of int, optional
            Only these rounds (e.g. `observe_rounds`).

        Returns
        -------
        Observation
            A view on the same run sharing this one's cache.
        """
        view = replace(self, rounds=[r for r in self.rounds if r <= last_round and (keep is None or r in keep)])
        view._cache = self._cache
        return view

    def cached(self, key: Hashable, compute: Callable[[], V]) -> V:
        """`compute()`, run once per key; later calls (from any `up_to` view) return the kept value.

        Parameters
        ----------
        key : hashable
            Names what is kept; start it with a string naming the kind (e.g. ("lira", round,
            records_key(ids))) so two attacks' keys never collide.
        compute : callable
            Makes the value; called only when the key is not kept yet (None is kept too).

        Returns
        -------
        object
            The kept value.
        """
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def is_cached(self, key: Hashable) -> bool:
        """Whether a value is kept under `key` (so reading it through `cached` computes nothing)."""
        return key in self._cache

    def before_features(self, ids: np.ndarray, round_number: int) -> Features | None:
        """Last-layer features of records on the model the attacker held before its ascent step of the round.

        Per-record loss (nats) and last-layer gradients (cached); None when the attacker did not ascend
        in that round (or this view does not know).
        """
        return self._last_layer_features("before-features", self.load_before, ids, round_number)

    def _last_layer_features(self, kind: str, load: Callable[[int], nn.Module | None] | None, ids: np.ndarray,
                             round_number: int) -> Features | None:
        """Last-layer features of `ids` on `load(round_number)`, cached under `kind`; None without a model."""
        if load is None:
            return None

        def compute() -> Features | None:
            model = load(round_number)
            return None if model is None else extract(model, *self.load_records(ids), "last", self.memory_budget)

        return self.cached((kind, round_number, records_key(ids)), compute)

    def sent_features(self, ids: np.ndarray, round_number: int) -> Features | None:
        """Last-layer features of records on the model sent before the round's snapshot was trained.

        Per-record loss (nats) and last-layer gradients (cached); None when this view does not know what
        was sent.
        """
        return self._last_layer_features("sent-features", self.load_sent, ids, round_number)

    def model(self, round_number: int) -> nn.Module:
        """The snapshot of `round_number` (loaded once, then cached)."""
        return self.cached(("model", round_number), lambda: self.load_model(round_number))

    def features(self, ids: np.ndarray, round_number: int, layers: str | Sequence[str] = "last",
                 activations: str | Sequence[str] | None = None) -> Features:
        """White-box features of records on one snapshot (computed once per (round, ids, layers), then cached).

        Parameters
        ----------
        ids : numpy.ndarray
            Record ids, shape (n_records,).
        round_number : int
            Which snapshot.
        layers : str or sequence of str
            Layers whose per-example gradients are kept: 'last', 'all' or module names.
        activations : str or sequence of str, optional
            Modules whose outputs are kept ('last', 'all' hidden layers, or module names).

        Returns
        -------
        Features
            Loss (n_records,) in nats, probabilities (n_records, classes), labels, the chosen layers'
            gradients and the exact per-example gradient L2 norm (n_records,).
        """
        def frozen(names):
            return names if names is None or isinstance(names, str) else tuple(names)

        def compute() -> Features:
            x, y = self.load_records(ids)
            if self.device.type == "cpu":
                return extract(self.model(round_number), x, y, layers, self.memory_budget, activations)
            # on the accelerator, then back to CPU, where the attacks read them
            model = copy.deepcopy(self.model(round_number)).to(self.device)
            return _on_cpu(extract(model, x.to(self.device), y.to(self.device), layers, self.memory_budget, activations))

        return self.cached(("features", round_number, records_key(ids), frozen(layers), frozen(activations)), compute)

    def reference_losses(self, ids: np.ndarray, round_number: int) -> torch.Tensor | None:
        """Losses of records on the round's reference models (the other clients' models).

        Parameters
        ----------
        ids : numpy.ndarray
            Record ids, shape (n_records,).
        round_number : int
            Which round.

        Returns
        -------
        torch.Tensor or None
            Cross-entropy in nats, shape (n_references, n_records); None without references.
        """
        load = self.reference_models
        if load is None:
            return None

        def compute() -> torch.Tensor | None:
            models = load(round_number)
            x, y = self.load_records(ids)
            with torch.no_grad():
                losses = [nn.functional.cross_entropy(m.eval()(x), y, reduction="none") for m in models]
            return torch.stack(losses) if losses else None

        return self.cached(("reference", round_number, records_key(ids)), compute)
