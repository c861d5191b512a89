"""The public entry points are documented in numpy style, checked by numpydoc's own validator.

The entry points are what a user calls or subclasses: `fedsim.app.api`'s `simulate` and `measure`,
`fedsim.recording.run.Run` and its public members, the attack protocol
(`MembershipInferenceAttack`, its `fit` and `score`, `AttackParams`) and every registered attack
class, and the strategy wrappers of `strategies/`. Each must have a docstring of its own, document
every parameter of its signature and none it lacks, and a function that returns something must
have a Returns section (numpydoc codes GL08, PR01, PR02, RT01). A method that overrides a base
class's (an attack's `fit`, a wrapper's `aggregate_train`) inherits its documentation and is not
checked; a registered attack's constructor is the protocol's, and its arguments are its `Params`
fields, each with a description. Every other docstring is held to the numpy convention's format
by ruff's pydocstyle rules (`make lint`), not to a required section.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from numpydoc.validate import validate
from pydantic import BaseModel

import strategies
from attackers.inference.registry import ATTACKS
from strategies.wrapper import StrategyWrapper

REQUIRED = {"GL08": "no docstring", "PR01": "a parameter not documented", "PR02": "a documented parameter it does not have",
            "RT01": "no Returns section"}


def _overrides(cls: type, name: str) -> bool:
    return any(name in vars(base) for base in cls.__mro__[1:] if base is not object)


def _members(cls: type) -> list[str]:
    """Qualified names of the public methods and properties `cls` defines, overrides left out."""
    found = []
    for name, member in vars(cls).items():
        target = getattr(member, "fget", None) or getattr(member, "__func__", member)
        if not name.startswith("_") and inspect.isfunction(target) and not _overrides(cls, name):
            found.append(f"{cls.__module__}.{cls.__qualname__}.{name}")
    return found


def _wrappers() -> list[type]:
    """Every StrategyWrapper subclass defined in strategies/ (the base included)."""
    modules = [importlib.import_module(f"strategies.{m.name}") for m in pkgutil.iter_modules(strategies.__path__)]
    return [obj for module in modules for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, StrategyWrapper) and obj.__module__ == module.__name__]


def entry_points() -> list[str]:
    from attackers.inference.base import MembershipInferenceAttack
    from fedsim.recording.run import Run

    names = ["fedsim.app.api.simulate", "fedsim.app.api.measure", "fedsim.recording.run.Run", *_members(Run),
             "attackers.inference.base.MembershipInferenceAttack", *_members(MembershipInferenceAttack),
             "attackers.inference.base.AttackParams"]
    for wrapper in _wrappers():
        names += [f"{wrapper.__module__}.{wrapper.__qualname__}", *_members(wrapper)]
    return names


ENTRY_POINTS = entry_points()


def test_the_entry_points_are_found():
    assert {"fedsim.recording.run.Run.state", "fedsim.recording.run.Run.status", "attackers.inference.base.MembershipInferenceAttack.fit",
            "attackers.inference.base.MembershipInferenceAttack.score", "strategies.wrapper.StrategyWrapper",
            "strategies.secure_aggregation.SecureAggregation"} <= set(ENTRY_POINTS)
    assert not any(name.endswith(".aggregate_train") for name in ENTRY_POINTS)  # an override inherits its documentation


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_an_entry_point_documents_its_parameters_and_result(name):
    errors = [f"{code} ({REQUIRED[code]}): {message}" for code, message in validate(name)["errors"] if code in REQUIRED]
    assert not errors, f"{name}: " + "; ".join(errors)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_registered_attack_has_a_docstring_of_its_own_and_described_arguments(name):
    cls = ATTACKS[name]
    assert (vars(cls).get("__doc__") or "").strip(), f"attack {name} ({cls.__qualname__}) has no docstring of its own"
    params: type[BaseModel] = cls.Params
    undocumented = [field for field, info in params.model_fields.items() if not info.description]
    assert not undocumented, f"attack {name}: arguments without a description: {undocumented}"
