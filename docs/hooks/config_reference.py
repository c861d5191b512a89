"""mkdocs hook: the configuration reference page, generated at build time from the config model.

Walks `fedsim.core.config.Config` recursively (optional sections, the `adversary` roles, the
`attacks` list) and writes one Markdown table per top-level section: every key, its default and
the description of its `Field(description=...)`. The page is built in memory on every
`mkdocs build`, so it cannot drift from the code; tests/unit/test_config_reference.py checks that
it names every key of the model with its default.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

PAGE = "reference/configuration.md"
NOTES = "configuration_notes.md"  # hand-written notes appended to the generated tables
REQUIRED = "(required)"

HEADER = """# Configuration reference

Generated from `fedsim.core.config.Config` each time the documentation is built: every key a
config file (or `--set key=value`) can set, its default and its description. Unknown keys are
errors. `fedsim check CONFIG` prints the resolved configuration of a file; the quickstart shipped
with fedsim is `fedsim/quickstart.yaml`.

A config file sets only what differs from these defaults; `--set a.b=value` overrides any key (the
value read as YAML) before validation. Sections marked *optional* are `null` by default and take
the keys listed under them when given.
"""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation may hold (through `X | None`, `Annotated`, unions)."""
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        current = stack.pop(0)
        if isinstance(current, type) and issubclass(current, BaseModel):
            found.append(current)
        elif typing.get_origin(current) in (typing.Union, types.UnionType, typing.Annotated):
            stack.extend(typing.get_args(current))
    return found


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    """The section of a `list[Section]` field (e.g. attacks), else None."""
    if typing.get_origin(annotation) is list:
        models = _models_in(typing.get_args(annotation)[0])
        return models[0] if models else None
    return None


def _type_text(annotation: Any) -> str:
    """A short human reading of a field's type: the choices of a Literal, `or null` for optionals."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        parts = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        text = " or ".join(_type_text(arg) for arg in parts)
        return f"{text} or null" if len(parts) < len(typing.get_args(annotation)) else text
    if origin is typing.Annotated:
        return _type_text(typing.get_args(annotation)[0])
    if origin is list:
        return f"list of {_type_text(typing.get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> Any:
    if field.default is PydanticUndefined and field.default_factory is None:
        return REQUIRED
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in value]
    return value


def _default_text(value: Any) -> str:
    if value == REQUIRED:
        return REQUIRED
    return f"`{json.dumps(value)}`".replace("|", "\\|")


def config_rows(model: type[BaseModel] | None = None, prefix: str = "", within: tuple = ()) -> list[dict[str, Any]]:
    """Every key of the config model, depth first: key path, type, default and description.

    A section's own row precedes its keys; an optional section's keys show the defaults they take
    when the section is given; the `adversary` roles are one section whose keys are the union of
    the roles', with the role-specific descriptions noted; `attacks[]` stands for each list entry.

    Parameters
    ----------
    model : pydantic model class, optional
        The section to walk (default: `fedsim.core.config.Config`).
    prefix : str
        The key path of `model` ("" for the top level).
    within : tuple
        The sections above `model`; a section that holds itself (`strategy.base`) is listed once, not walked again.

    Returns
    -------
    list of dict
        Rows with keys `key`, `type`, `default`, `description`, `section` (True for a section's own row).
    """
    if model is None:
        from fedsim.core.config import Config

        model = Config
    rows: list[dict[str, Any]] = []
    within = (*within, model)
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sections = [section for section in _models_in(field.annotation) if section not in within]
        item = _list_item_model(field.annotation)
        default = _default(field)
        rows.append({"key": path, "type": _type_text(field.annotation), "default": default,
                     "description": field.description or "", "section": bool(sections)})
        if item is not None:
            rows += config_rows(item, f"{path}[].", within)
        elif len(sections) == 1:
            rows += config_rows(sections[0], f"{path}.", within)
        elif sections:  # a discriminated union (adversary): the first variant, others' differences noted
            rows += _union_rows(sections, f"{path}.", within)
    return rows


def _union_rows(variants: list[type[BaseModel]], prefix: str, within: tuple) -> list[dict[str, Any]]:
    first, *others = variants
    rows = config_rows(first, prefix, within)
    by_key = {row["key"]: row for row in rows}
    for other in others:
        role = _role_of(other)
        for row in config_rows(other, prefix, within):
            known = by_key.get(row["key"])
            if known is None:
                row["description"] = f"({role}) {row['description']}"
                rows.append(row)
                by_key[row["key"]] = row
            elif row["description"] != known["description"]:
                known["description"] += f"<br>*role {role}*: {row['description']}"
    return rows


def _role_of(model: type[BaseModel]) -> str:
    field = model.model_fields.get("role")
    return str(field.default) if field is not None else model.__name__


def markdown() -> str:
    """The whole configuration reference page (Markdown)."""
    rows = config_rows()
    lines = [HEADER]
    top = [row for row in rows if "." not in row["key"] and "[]" not in row["key"]]
    plain = [row for row in top if not row["section"] and not any(r["key"].startswith(f"{row['key']}[].") for r in rows)]
    lines += ["## Top-level keys", "", "| key | type | default | description |", "| --- | --- | --- | --- |"]
    lines += [_row(row) for row in plain]
    for row in top:
        if row in plain:
            continue
        inner = [r for r in rows if r["key"].startswith((f"{row['key']}.", f"{row['key']}[]."))]
        optional = " (optional)" if row["default"] is None else ""
        description = _escape(row["description"])
        default = f" Default: {_default_text(row['default'])}." if row["default"] is None or isinstance(row["default"], list) else ""
        lines += ["", f"## `{row['key']}`{optional}", "", f"{description[:1].upper()}{description[1:]}.{default}", "",
                  "| key | type | default | description |", "| --- | --- | --- | --- |"]
        lines += [_row(r) for r in inner]
    notes = Path(__file__).with_name(NOTES)
    if notes.is_file():
        lines += ["", notes.read_text()]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(row: dict[str, Any]) -> str:
    return f"| `{row['key']}` | {row['type']} | {_default_text(row['default'])} | {_escape(row['description'])} |"


def on_files(files, config):  # mkdocs hook: add the generated page to the site's files
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=markdown()))
    return files
