"""The one interface every reconstruction attack implements: from what was sent and what came back,
rebuild the records the update was trained on.

Membership inference asks "was this record trained on?"; reconstruction asks "what were the
records?". Both read the same recorded rounds through the same threat models, so a reconstruction
attack gets a `ReconstructionTask` (the model as sent, the parameters that came back, how many
records and, where the attacker knows it, the local training schedule) and returns a
`Reconstruction` (records in the model's input space, with the labels it inferred). Scoring against
the true records is not the attack's business: `attackers.inference.reconstruction.quality` does it
for every attack alike, after the best matching of reconstructions to records.

Randomness is owned as for the membership attacks (`attackers.inference.base.attack_seed_sequence`):
the same task and seed give the same reconstruction in any order.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from fedsim.core.registry import Registry


class ReconstructionParams(BaseModel):
    """Base of every reconstruction attack's declared parameters (the `args` of a `reconstructions:` entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class LocalSchedule:
    """How the client trained, as far as the attacker knows it (fedsim's `train` section).

    Attributes
    ----------
    lr : float
        Learning rate of the local optimiser.
    batch_size : int
        Records per local step.
    local_epochs : int
        Passes over the client's records per round.
    optimizer : str
        "sgd" or "adam".
    momentum : float
        SGD momentum.
    """

    lr: float
    batch_size: int
    local_epochs: int
    optimizer: str = "sgd"
    momentum: float = 0.0

    def steps(self, n_records: int) -> int:
        """Local optimiser steps a client with `n_records` records takes in one round (the last batch may be short)."""
        return self.local_epochs * -(-n_records // self.batch_size)


@dataclass
class ReconstructionTask:
    """One observed update to invert.

    Attributes
    ----------
    model : nn.Module
        The architecture, holding the parameters the client was sent (`sent`), in eval mode.
    sent : dict of str to torch.Tensor
        The state the client started from (what the server sent it; under secure aggregation, the
        mean of what was sent).
    returned : dict of str to torch.Tensor
        The state that came back (the client's model; under secure aggregation, the aggregate).
    n_records : int
        How many records the update was trained on (the reply's `num_examples`).
    input_shape : tuple of int
        One record's shape as the model takes it, e.g. (1, 28, 28).
    num_classes : int
        Output classes of the model.
    schedule : LocalSchedule or None
        The local training schedule, where the attacker knows it (a curious server running the
        federation does; an audited app's server may not): None, treat the update as one gradient.
    bounds : tuple of torch.Tensor
        Per-feature (lower, upper) bounds of a record in the model's input space, each of
        `input_shape` (e.g. the normalised images of 0 and 1); reconstructions are kept inside them.
    """

    model: nn.Module
    sent: Mapping[str, torch.Tensor]
    returned: Mapping[str, torch.Tensor]
    n_records: int
    input_shape: tuple[int, ...]
    num_classes: int
    schedule: LocalSchedule | None
    bounds: tuple[torch.Tensor, torch.Tensor]

    def update(self) -> dict[str, torch.Tensor]:
        """The update, returned - sent, per parameter (float tensors only; integer buffers are skipped)."""
        return {k: (self.returned[k] - self.sent[k]) for k in self.sent if torch.is_floating_point(self.sent[k])}


@dataclass
class Reconstruction:
    """What an attack rebuilt from one update.

    Attributes
    ----------
    x : torch.Tensor
        Reconstructed records in the model's input space, shape (n, *input_shape); n may be fewer
        than the task's `n_records` (an attack that recovers only some records returns those).
    y : torch.Tensor
        The labels the attack inferred, int64, shape (n,).
    exact : torch.Tensor or None
        bool, shape (n,): which records the attack claims to have recovered exactly (the imprint
        read); None for an attack that makes no such claim.
    info : dict
        What the attack reports about itself (iterations run, final matching loss, ...), for the log.
    """

    x: torch.Tensor
    y: torch.Tensor
    exact: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


class ReconstructionAttack(ABC):
    """A reconstruction attack: rebuild the records an observed update was trained on.

    fedsim builds one object per (round, restart seed) as `cls(params, seed)` and calls
    `reconstruct(task)`. Randomness comes only from `numpy_generator()`, `torch_generator()` or a
    block inside `own_torch_random()`.

    Parameters
    ----------
    params : ReconstructionParams or dict, optional
        The attack's parameters, validated against `Params` (default: every default).
    seed : int or numpy.random.SeedSequence
        Where the attack's randomness comes from (`attackers.inference.base.attack_seed_sequence`).
    """

    name: ClassVar[str] = ""
    """The registry name, set by `@register_reconstruction(name)`."""
    Params: ClassVar[type[ReconstructionParams]] = ReconstructionParams
    """The declared parameters (`reconstructions: [{name, args}]`)."""
    needs_crafted_model: ClassVar[bool] = False
    """Whether it reads only rounds in which the server sent a crafted model (`adversary.mode: crafted-model`)."""

    def __init__(self, params: ReconstructionParams | dict[str, Any] | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        if params is None:
            params = self.Params()
        elif isinstance(params, dict):
            params = self.Params.model_validate(params)
        self.params = params
        self.seed_sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
        self.seed = int(self.seed_sequence.generate_state(1)[0])

    @abstractmethod
    def reconstruct(self, task: ReconstructionTask) -> Reconstruction:
        """Rebuild the records of one update.

        Parameters
        ----------
        task : ReconstructionTask
            The update and what the attacker knows about how it was made.

        Returns
        -------
        Reconstruction
            Records in the model's input space and their inferred labels.
        """

    def declines(self, task: ReconstructionTask) -> str | None:
        """Why the attack does not attempt `task` within its budget (one line naming the argument that
        raises the budget), or None to attempt it. Default: every task is attempted.
        """
        return None

    def numpy_generator(self) -> np.random.Generator:
        """A fresh NumPy generator from the attack's seed sequence (the same stream on every call)."""
        return np.random.default_rng(self.seed_sequence)

    def torch_generator(self) -> torch.Generator:
        """A fresh CPU torch generator seeded from the attack's seed (the same stream on every call)."""
        return torch.Generator().manual_seed(self.seed)

    @contextmanager
    def own_torch_random(self) -> Iterator[None]:
        """Run a block with torch's global CPU generator forked and seeded from the attack's seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield


#: The modules of `attackers.inference.reconstruction` whose classes register the built-in attacks.
BUILTIN_MODULES = ("inverting_gradients", "imprint")


def _import_builtin() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"attackers.inference.reconstruction.{module}")


RECONSTRUCTIONS: Registry[type[ReconstructionAttack]] = Registry("reconstruction attack", "reconstructions", load=_import_builtin)

AttackClass = TypeVar("AttackClass", bound=type[ReconstructionAttack])


def register_reconstruction(name: str) -> Callable[[AttackClass], AttackClass]:
    """Class decorator: register a reconstruction attack under `name` and set its `name` to it."""

    def add(cls: AttackClass) -> AttackClass:
        cls.name = name
        RECONSTRUCTIONS.register(name)(cls)
        return cls

    return add
