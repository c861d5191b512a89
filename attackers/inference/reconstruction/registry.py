"""The reconstruction attacks by name (config `reconstructions:`, `fedsim attack --attack`), checked up front.

As for the membership attacks (`attackers.inference.registry`): an entry is a registry name of
`RECONSTRUCTIONS` or a user's `ReconstructionAttack` subclass by import path ('package.module:Class'),
bare or as `{name, args}`, its arguments validated against the attack's `Params`; every problem is
one line before any work. `fedsim attack` takes membership and reconstruction names in one list,
so `is_reconstruction` tells them apart and `unknown_attack` names both registries.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from attackers.inference.reconstruction.base import RECONSTRUCTIONS, ReconstructionAttack, ReconstructionParams
from fedsim.core.config import Config
from fedsim.core.errors import FedsimError
from fedsim.core.registry import resolve_import

KEY = "reconstructions"


def name_and_args(spec: Any) -> tuple[str, dict[str, Any]]:
    """(name, args) of a name or an entry with `name` and `args` (attribute or key)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        return spec["name"], dict(spec.get("args") or {})
    return spec.name, dict(spec.args or {})


def reconstruction_class(spec: Any, key: str = KEY) -> type[ReconstructionAttack]:
    """The class an entry names: a registry name, or a user's class by import path.

    Parameters
    ----------
    spec : str or AttackConfig or mapping
        A name or 'package.module:Class', or an entry with `name` and `args`.
    key : str
        Where the entry came from, for the message.

    Returns
    -------
    type[ReconstructionAttack]
        The class (not instantiated).

    Raises
    ------
    FedsimError
        One line for an unknown name, an import that fails, or an object that is not a concrete
        `ReconstructionAttack` subclass with `ReconstructionParams`.
    """
    name = name_and_args(spec)[0]
    if ":" not in name:
        return RECONSTRUCTIONS.get_or_fail(name, key, hint=" or 'package.module:Class'")
    found = resolve_import(name, key)
    base = f"{ReconstructionAttack.__module__}.{ReconstructionAttack.__name__}"
    if not (inspect.isclass(found) and issubclass(found, ReconstructionAttack)):
        raise FedsimError(f"{key}: {name!r} is not a subclass of {base}; derive the attack from it")
    if inspect.isabstract(found):
        raise FedsimError(f"{key}: {name!r} does not implement {', '.join(sorted(found.__abstractmethods__))} ({base})")
    if not (inspect.isclass(found.Params) and issubclass(found.Params, ReconstructionParams)):
        raise FedsimError(f"{key}: {name!r} declares Params = {found.Params!r}, which is not a subclass of "
                          f"{ReconstructionParams.__module__}.ReconstructionParams; derive its Params from that")
    return found


def reconstruction_params(spec: Any, key: str = KEY) -> ReconstructionParams:
    """The validated parameters of an entry; one line for an unknown argument (naming those it has) or a bad value."""
    name, args = name_and_args(spec)
    cls = reconstruction_class(name, key)
    try:
        return cls.Params.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            declared = ", ".join(cls.Params.model_fields) or "none"
            raise FedsimError(f"{key}: reconstruction attack {name!r} has no argument {where!r}; its arguments are: {declared}") from None
        raise FedsimError(f"{key}: reconstruction attack {name!r}, argument {where!r}: {first['msg']} (got {first.get('input')!r})") from None


def make_reconstruction(spec: Any, seed: int | np.random.SeedSequence = 0) -> ReconstructionAttack:
    """A fresh attack from an entry, its arguments validated (`reconstruction_params`)."""
    return reconstruction_class(spec)(reconstruction_params(spec), seed)


def is_reconstruction(spec: Any) -> bool:
    """Whether an entry names a reconstruction attack (a registry name, or an import path to a subclass).

    An import path that does not resolve is not one (the membership registry then gives its line).
    """
    name = name_and_args(spec)[0]
    if ":" not in name:
        return name in RECONSTRUCTIONS
    try:
        found = resolve_import(name, "--attack")
    except FedsimError:
        return False
    return inspect.isclass(found) and issubclass(found, ReconstructionAttack)


def unknown_attack(name: str, key: str, membership: Iterable[str]) -> FedsimError:
    """The one line for a name neither registry holds, listing both."""
    return FedsimError(f"{key}: unknown attack {name!r}; membership attacks: {', '.join(sorted(membership))}; "
                       f"reconstruction attacks: {RECONSTRUCTIONS.choices()}; or 'package.module:Class'")


def check_reconstructions(specs: Iterable[Any], config: Config | None = None, key: str = KEY) -> None:
    """Raise FedsimError (one line) for the first entry with an unknown name, a bad import path or
    invalid arguments, listed twice, or (with `config`) that the run cannot serve: no adversary, or
    an attack that reads a crafted model's traps without a crafted-model server.

    Parameters
    ----------
    specs : iterable
        Names or import paths, or entries with `name` and `args`.
    config : Config, optional
        The run's config (`adversary`).
    key : str
        Where the entries came from, for the message.
    """
    seen: set[str] = set()
    for spec in specs:
        reconstruction_params(spec, key)
        name = name_and_args(spec)[0]
        if name in seen:
            raise FedsimError(f"{key}: {name} is listed twice; its rows carry only the name, so the two could not be told apart: keep one entry")
        seen.add(name)
        if config is None:
            continue
        if config.adversary.role == "none":
            raise FedsimError(f"{key}: {name} reconstructs what an adversary observed, and there is none (adversary.role: none); "
                              "name an adversary or remove it")
        if reconstruction_class(name, key).needs_crafted_model and config.adversary.mode != "crafted-model":
            raise FedsimError(f"{key}: {name} reads the traps of a crafted-model server, and this run's server is "
                              f"{config.adversary.mode}; run with --set adversary.mode=crafted-model (adversary.role: server) or remove {name}")
