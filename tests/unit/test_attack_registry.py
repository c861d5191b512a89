"""Attacks register themselves by decorator; an `attacks:` entry may name a user's attack class by
import path, checked up front: every bad entry is one line (exit code 2 from the CLI).

The user's modules are written to a temporary folder put on sys.path, as a user's package would be.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from attackers.inference.base import AttackParams, MembershipInferenceAttack
from attackers.inference.registry import ATTACKS, attack_class, attack_params, check_attacks, make_attack, register
from fedsim.app.cli import main
from fedsim.core.errors import FedsimError
from fedsim.core.registry import Registry

# One module of a user's attacks: a good one, and one of each kind of mistake.
USER_ATTACKS = '''
from pydantic import BaseModel, Field

from attackers.inference.base import AttackParams, MembershipInferenceAttack


class ShiftParams(AttackParams):
    shift: float = Field(0.0, description="added to every score")


class Shift(MembershipInferenceAttack):
    """Scores each record by its id plus `shift` (enough to follow the protocol)."""

    Params = ShiftParams
    deterministic = True

    def fit(self, observation, ids, members):
        return self

    def score(self, observation, ids):
        return ids.astype(float) + self.params.shift


class NeedsUpdates(Shift):
    needs_individual_updates = True
    reads = "compares every client's update"


class NoScore(MembershipInferenceAttack):
    def fit(self, observation, ids, members):
        return self


class LooseParams(BaseModel):
    anything: int = 0


class LooseAttack(Shift):
    Params = LooseParams


class NotAnAttack:
    pass


def a_function():
    pass
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The name of an importable module holding USER_ATTACKS."""
    (tmp_path / "user_attacks_unit.py").write_text(textwrap.dedent(USER_ATTACKS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_attacks_unit"


def test_every_built_in_attack_registered_itself_under_its_name():
    assert set(ATTACKS) == {"loss", "confidence", "entropy", "grad_norm", "trajectory", "label_only", "nasr", "nasr_blackbox",
                            "nasr_unsupervised", "fedmia", "grad_cosine", "lira", "rmia", "sent_returned", "crafted"}
    for name, cls in ATTACKS.items():
        assert cls.name == name and attack_class(name) is cls


def test_register_refuses_a_second_class_under_a_name_and_what_is_not_an_attack():
    class Impostor(ATTACKS["loss"]):  # type: ignore[misc,valid-type]
        pass

    with pytest.raises(ValueError, match="'loss' is registered twice"):
        register("loss")(Impostor)
    assert ATTACKS["loss"] is not Impostor
    with pytest.raises(TypeError, match="MembershipInferenceAttack subclasses"):
        register("not_an_attack")(dict)  # type: ignore[type-var]
    assert "not_an_attack" not in ATTACKS


def test_a_registry_loads_its_modules_once_on_the_first_read_and_retries_a_failed_load():
    calls = []

    def load():
        calls.append(1)
        if len(calls) == 1:
            raise ImportError("first try")
        registry.add("late", 2)

    registry: Registry[int] = Registry("thing", "things", load=load)
    registry.register("early")(1)  # registering does not load
    assert calls == []
    with pytest.raises(ImportError):
        registry["early"]
    assert dict(registry) == {"early": 1, "late": 2} and len(calls) == 2
    assert registry.choices() == "early, late" and len(calls) == 2


def test_an_import_path_names_a_users_attack_whose_params_validate_its_args(user_module):
    cls = attack_class(f"{user_module}:Shift")
    assert issubclass(cls, MembershipInferenceAttack) and cls.__module__ == user_module
    attack = make_attack({"name": f"{user_module}:Shift", "args": {"shift": 0.5}}, seed=3)
    assert isinstance(attack, cls) and attack.params.shift == 0.5
    assert np.array_equal(attack.fit(None, np.arange(3), np.ones(3, bool)).score(None, np.arange(3)), [0.5, 1.5, 2.5])
    assert isinstance(attack_params(f"{user_module}:Shift"), AttackParams)
    check_attacks(["loss", f"{user_module}:Shift"], references=False)  # no exception


@pytest.mark.parametrize(("entry", "fragment"), [
    ("no_such_module_xyz:Shift", "attacks: cannot import module 'no_such_module_xyz' (ModuleNotFoundError"),
    ("{module}:Missing", "attacks: module '{module}' has no 'Missing'"),
    ("{module}:NotAnAttack", "attacks: '{module}:NotAnAttack' is not a subclass of attackers.inference.base.MembershipInferenceAttack"),
    ("{module}:a_function", "attacks: '{module}:a_function' is a function, not a class; name a subclass of attackers.inference.base"),
    ("{module}:NoScore", "attacks: '{module}:NoScore' does not implement score"),
    ("{module}:LooseParams", "attacks: '{module}:LooseParams' is not a subclass of attackers.inference.base.MembershipInferenceAttack"),
    ("{module}:LooseAttack", "which is not a subclass of attackers.inference.base.AttackParams"),
    ("{{name: '{module}:Shift', args: {{shift_by: 1}}}}", "attacks: attack '{module}:Shift' has no argument 'shift_by'; its arguments are: shift"),
    ("{{name: '{module}:Shift', args: {{shift: lots}}}}", "attacks: attack '{module}:Shift', argument 'shift': Input should be a valid number"),
    ("{module}.Shift", "attacks: unknown attack '{module}.Shift'; choose one of confidence, crafted"),
], ids=["no module", "no attribute", "not an attack", "a function", "another class", "abstract", "loose params", "unknown arg",
        "ill-typed arg", "dotted path"])
def test_a_bad_attack_entry_is_one_line_and_exit_2(user_module, capsys, entry, fragment):
    import yaml

    entry, fragment = entry.format(module=user_module), fragment.format(module=user_module)
    with pytest.raises(FedsimError) as error:
        check_attacks([yaml.safe_load(entry)])
    assert fragment in str(error.value) and "\n" not in str(error.value)
    assert main(["run", "--set", f"attacks=[{entry}]"]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_a_users_attack_that_needs_individual_updates_is_refused_where_the_attacker_has_none(user_module):
    check_attacks([f"{user_module}:NeedsUpdates"], references=True)
    with pytest.raises(FedsimError, match=f"attacks: {user_module}:NeedsUpdates compares every client's update, which only a curious "
                                          "server that sees individual updates holds"):
        check_attacks([f"{user_module}:NeedsUpdates"], references=False)


def test_the_same_import_path_twice_is_refused(user_module):
    with pytest.raises(FedsimError, match="is listed twice"):
        check_attacks([f"{user_module}:Shift", {"name": f"{user_module}:Shift", "args": {"shift": 1.0}}])
