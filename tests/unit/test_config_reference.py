"""The configuration reference stays the config model's: every key, its default, a description.

The reference is the page that docs/hooks/config_reference.py generates from
`fedsim.core.config.Config` at every `mkdocs build` (the documentation site's Reference >
Configuration). A key the generator misses (a section inside an optional one, the adversary roles,
the attacks list), a default shown other than the model's, a key shown that the model lacks, or a
field without `Field(description=...)` fails here.
"""

from __future__ import annotations

import importlib.util
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from fedsim.core.config import AttackConfig, Config

HOOK = Path(__file__).resolve().parents[2] / "docs" / "hooks" / "config_reference.py"
SECTION = object()  # a section documented by its heading: its keys carry the defaults
ROW = re.compile(r"^\| `([^`]+)` \| .*? \| (\(required\)|`.*?`) \| (.*) \|$")


def _page() -> str:
    spec = importlib.util.spec_from_file_location("config_reference_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.markdown()


def _documented(page: str) -> dict[str, tuple[Any, str]]:
    """key -> (default as the page shows it, parsed back from JSON; description) for every table row."""
    rows = {}
    for line in page.splitlines():
        match = ROW.match(line)
        if match:
            key, default, description = match.groups()
            value = default if default == "(required)" else json.loads(default.strip("`").replace("\\|", "|"))
            rows[key] = (value, description.strip())
        heading = re.match(r"^## `([^`]+)`", line)  # a top-level section is a heading over its own table
        if heading:
            rows[heading.group(1)] = (SECTION, "its heading")
    return rows


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The config section class of a field (through `X | None` and the adversary's tagged union: its
    first role), or None for a plain value or the attacks list."""
    stack = [annotation]
    while stack:
        candidate = stack.pop(0)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return None if candidate is AttackConfig else candidate
        if typing.get_origin(candidate) in (typing.Union, types.UnionType, typing.Annotated):
            stack.extend(typing.get_args(candidate))
    return None


def _sections_in(annotation: Any) -> list[type[BaseModel]]:
    """Every section class a field may hold (the adversary's roles, in order)."""
    found, stack = [], [annotation]
    while stack:
        candidate = stack.pop(0)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            found.append(candidate)
        elif typing.get_origin(candidate) in (typing.Union, types.UnionType, typing.Annotated):
            stack.extend(typing.get_args(candidate))
    return found


def _expected(model: type[BaseModel], defaults: dict | None, where: str = "", seen: tuple = ()) -> dict[str, Any]:
    """key -> default for every key of `model`, walked independently of the generator: from the
    model's own dump where the section is present, from the fields' defaults where it is optional."""
    keys: dict[str, Any] = {}
    for key, field in model.model_fields.items():
        path = f"{where}{key}"
        if defaults is not None:
            value = defaults[key]
        elif field.default is PydanticUndefined and field.default_factory is None:
            value = "(required)"
        else:
            value = field.get_default(call_default_factory=True)
            value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        keys[path] = value
        section = _section_type(field.annotation)
        if section is not None and section not in (*seen, model):  # strategy.base holds a strategy: listed, not walked again
            keys.update(_expected(section, value if isinstance(value, dict) else None, f"{path}.", (*seen, model)))
    return keys


def test_the_generated_config_reference_lists_every_key_with_its_default_and_description():
    documented = _documented(_page())
    expected = _expected(Config, Config().model_dump(mode="json"))
    for entries in ("attacks", "reconstructions"):  # lists of {name, args}
        expected.update({f"{entries}[].{key}": value for key, value in _expected(AttackConfig, None).items()})
    for role in _sections_in(Config.model_fields["adversary"].annotation)[1:]:  # the other roles' keys, where they add any
        expected.update({key: value for key, value in _expected(role, None, "adversary.").items() if key not in expected})
    problems = [f"{key}: a config key missing from the reference" for key in expected if key not in documented]
    problems += [f"{key}: in the reference but not a config key" for key in documented if key not in expected]
    problems += [f"{key}: the reference shows {documented[key][0]!r}, the default is {value!r}"
                 for key, value in expected.items() if key in documented and documented[key][0] not in (value, SECTION)]
    problems += [f"{key}: no description" for key, (_, description) in documented.items() if not description]
    assert not problems, "the generated configuration reference is out of date:\n" + "\n".join(problems)
    assert {"adversary.sent_to", "defense.dp_sgd.noise_multiplier", "strategy.base", "export.tensorboard"} <= documented.keys()


def _models(model: type[BaseModel], seen: set) -> set:
    seen.add(model)
    for field in model.model_fields.values():
        for candidate in (*typing.get_args(field.annotation), field.annotation):
            for inner in (candidate, *typing.get_args(candidate)):
                if isinstance(inner, type) and issubclass(inner, BaseModel) and inner not in seen:
                    _models(inner, seen)
    return seen


def test_every_config_field_has_a_description():
    models = _models(Config, set())
    assert AttackConfig in models and len(models) >= 10
    missing = [f"{m.__name__}.{k}" for m in models for k, f in m.model_fields.items() if not f.description]
    assert not missing, f"config fields without Field(description=...): {missing}"
