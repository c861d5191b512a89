"""README's configuration reference stays the config model's: every key, its default, a description.

The reference is the YAML block under "## Configuration reference"; the model is
`fedsim.core.config.Config`. A key added to the model without the README (or left in the README after
it was removed) fails here, as does a field without `Field(description=...)`.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fedsim.core.config import AttackConfig, Config

README = Path(__file__).resolve().parents[2] / "README.md"


def _reference_block() -> str:
    text = README.read_text()
    section = text.split("## Configuration reference", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match, "README's Configuration reference has no ```yaml block"
    return match.group(1)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The config section class of a field (through `X | None`), or None for a plain value."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel) and candidate is not AttackConfig:
            return candidate
    return None


def _mismatches(model: type[BaseModel], documented: dict, defaults: dict, block: str, where: str = "") -> list[str]:
    problems = [f"{where}{key}: in the README but not a config key" for key in documented if key not in model.model_fields]
    for key, field in model.model_fields.items():
        path = f"{where}{key}"
        if key not in documented:
            problems.append(f"{path}: a config key missing from the README")
            continue
        section = _section_type(field.annotation)
        value, default = documented[key], defaults[key]
        if section is not None and isinstance(value, dict):
            problems += _mismatches(section, value, default, block, f"{path}.")
        elif section is not None and value is None:  # an optional section (dp_sgd): its keys are named in the comment
            problems += [f"{path}.{sub}: not mentioned in the README" for sub in section.model_fields if sub not in block]
        elif value != default:
            problems.append(f"{path}: the README shows {value!r}, the default is {default!r}")
    return problems


def test_readme_config_reference_lists_every_key_with_its_default():
    block = _reference_block()
    documented = yaml.safe_load(block)
    problems = _mismatches(Config, documented, Config().model_dump(mode="json"), block)
    assert not problems, "README config reference is out of date:\n" + "\n".join(problems)


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
