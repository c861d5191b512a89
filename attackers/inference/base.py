"""The one interface every membership inference attack implements, and how attacks get randomness.

An attack is fitted on the attacker's known records (members and non-members it knows) and
then scores the target records, "higher means member"; its parameters are a declared pydantic
model (`Params`), so every parameter can be set from the config (`attacks: [{name, args}]`)
and an unknown or ill-typed argument is one clear line. In the style of LeakPro's per-attack
configs and IBM ART's `attacks/inference/membership_inference`.

Randomness is owned, never shared: an attack's generators derive from (run seed, attack name,
round, attack seed) through `numpy.random.SeedSequence`, and whatever draws from torch's global
generator (layer initialisation, dropout) runs inside `torch.random.fork_rng` seeded from
them. An attack's scores therefore do not depend on which attacks ran before it, nor on
what reading the run consumed.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from attackers.inference.observation import Observation


class AttackParams(BaseModel):
    """Base of every attack's declared parameters: the `args` of an `attacks:` entry.

    An attack subclasses it with one `Field(default, description=...)` per argument and names the
    subclass as its `Params`; `attackers.inference.registry.make_attack` validates an entry's
    `args` against it, so an unknown argument or an ill-typed value is one line (exit code 2).
    Instances are frozen. An attack without parameters uses this class as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def attack_seed_sequence(run_seed: int, attack: str, round_number: int, attack_seed: int) -> np.random.SeedSequence:
    """The seed sequence an attack's randomness derives from.

    Parameters
    ----------
    run_seed : int
        The run's `seed`.
    attack : str
        The attack's registry name (hashed with CRC-32, stable across processes and platforms).
    round_number : int
        The round the attack is fitted for (the last snapshot it observes).
    attack_seed : int
        Which of the `attack_seeds` fits this is (0, 1, ...).

    Returns
    -------
    numpy.random.SeedSequence
        Independent of every other (attack, round, attack seed) of the run (NumPy's SeedSequence
        guarantees distinct streams for distinct entropy).
    """
    return np.random.SeedSequence([int(run_seed) % (1 << 32), zlib.crc32(attack.encode()), int(round_number), int(attack_seed)])


class MembershipInferenceAttack(ABC):
    """A membership inference attack: fit on the attacker's known records, then score targets.

    Every built-in attack and a user's own (`attacks: ["my_package.my_module:MyAttack"]`, README
    "Your own attack") follows this protocol. fedsim builds one attack object per (round, attack
    seed) as `cls(params, seed)`, calls `fit` once on the attacker's known records, then `score`
    on the targets (and on the canaries, when there are any). `n` below is the number of records
    passed.

    - `Params`: an `AttackParams` subclass declaring the arguments; `self.params` is the
      validated instance.
    - `fit(observation, ids, members)`: `ids` int64 record ids, shape (n,), of the attacker's known
      records, balanced and label-matched; `members` bool, shape (n,) (an unsupervised attack
      ignores it). It may set `self.threshold` (the score at or above which a record is called a
      member; None: the targets' median score) and returns self.
    - `score(observation, ids)`: float scores, shape (n,), higher means member, finite.
    - The `Observation` holds what the attacker observed up to the round measured: `rounds`
      (oldest first; a single-round attack gets the measured round only), `features(ids, round)`
      (per-record loss, probabilities, labels, chosen layers' gradients and gradient norm),
      `model(round)`, `load_records(ids)` -> (x, y), `reference_losses(ids, round)` (a curious
      server's other clients; None otherwise), `load_sent` and the other loaders, and
      `cached(key, compute)` for whatever the attack derives per round.
    - The capabilities below, as class attributes; fedsim reads nothing else of the class.
    - Randomness comes only from `numpy_generator()`, `torch_generator()` or a block inside
      `own_torch_random()`, so the scores depend on the seed alone.

    Parameters
    ----------
    params : AttackParams or dict, optional
        The attack's parameters, validated against `Params` (default: every default).
    seed : int or numpy.random.SeedSequence
        Where the attack's randomness comes from (see `attack_seed_sequence`); an int is used as
        the entropy of a SeedSequence.

    Attributes
    ----------
    params : AttackParams
        The validated parameters (an instance of `Params`).
    threshold : float or None
        Decision threshold on the scores, chosen on the attacker's known records (None before `fit`).
    seed : int
        A 32-bit seed drawn from the seed sequence (for libraries that take an int, e.g. sklearn).
    """

    name: ClassVar[str] = ""
    """The registry name, set by `@register(name)`; empty for a user's attack, whose leakage rows
    carry the import path it was named by."""
    Params: ClassVar[type[AttackParams]] = AttackParams
    """The declared parameters (`attacks: [{name, args}]`)."""
    multi_round: ClassVar[bool] = False
    """Whether the attack combines every observed snapshot up to the measured round (it then gets a
    row only at the rounds `observe_rounds` keeps); else it reads the measured round's snapshot."""
    deterministic: ClassVar[bool] = False
    """Whether fitting draws no random numbers, so one fit stands for every attack seed (its spread
    over seeds is 0). False, the safe default, fits it `attack_seeds` times."""
    needs_individual_updates: ClassVar[bool] = False
    """Whether it reads what only a curious server that sees individual updates holds (the other
    clients' models, what each client was sent); `check_attacks` refuses it in other threat models."""
    reads: ClassVar[str] = "reads the individual clients' updates"
    """What it reads that needs individual updates, for the refusal ("attacks: NAME {reads}, which ...")."""
    references_needed: ClassVar[int] = 0
    """How many other clients' returned models per round it calibrates against at least (0: none); a
    run recording fewer (`record.clients: victim` with fewer `record.references`) is refused before it starts."""

    def __init__(self, params: AttackParams | dict[str, Any] | None = None, seed: int | np.random.SeedSequence = 0) -> None:
        if params is None:
            params = self.Params()
        elif isinstance(params, dict):
            params = self.Params.model_validate(params)
        self.params = params
        self.seed_sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(int(seed))
        self.seed = int(self.seed_sequence.generate_state(1)[0])
        self.threshold: float | None = None

    @abstractmethod
    def fit(self, observation: Observation, ids: np.ndarray, members: np.ndarray) -> MembershipInferenceAttack:
        """Fit the attack on the attacker's known records.

        Parameters
        ----------
        observation : Observation
            The snapshots the attacker holds (and their features).
        ids : numpy.ndarray
            Record ids of the attacker's known records, int64, shape (n_records,).
        members : numpy.ndarray
            Whether each known record is a member, bool, shape (n_records,) (unsupervised attacks ignore it).

        Returns
        -------
        MembershipInferenceAttack
            The fitted attack (self).
        """

    @abstractmethod
    def score(self, observation: Observation, ids: np.ndarray) -> np.ndarray:
        """Membership scores of records; higher means member.

        Parameters
        ----------
        observation : Observation
            The same kind of observation the attack was fitted on.
        ids : numpy.ndarray
            Record ids to score, int64, shape (n_records,).

        Returns
        -------
        numpy.ndarray
            Scores, float, shape (n_records,).
        """

    def numpy_generator(self) -> np.random.Generator:
        """A fresh NumPy generator from the attack's seed sequence.

        Returns
        -------
        numpy.random.Generator
            The same stream on every call, distinct for every (run seed, attack, round, attack seed).
        """
        return np.random.default_rng(self.seed_sequence)

    def torch_generator(self) -> torch.Generator:
        """A fresh CPU torch generator seeded from the attack's seed.

        Returns
        -------
        torch.Generator
            The same stream on every call (e.g. for `torch.randperm(..., generator=...)`).
        """
        return torch.Generator().manual_seed(self.seed)

    @contextmanager
    def own_torch_random(self) -> Iterator[None]:
        """Run a block with torch's global CPU generator forked and seeded from the attack's seed.

        Layer initialisation and dropout draw from the global generator; inside this block they
        draw from the attack's own stream, and the global state is restored afterwards, so
        neither the attack nor what runs after it depends on the other.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield
