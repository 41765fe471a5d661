"""Command-line overrides (`section.key=value`, DVC's spelling, values parsed as YAML) and the
sentences a wrong param gets: which override or file it came from, and the keys that would be valid.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel


class SettingsError(ValueError):
    """params.yaml or an override is wrong; the message names the key and the fix."""


def apply_override(tree: dict[str, Any], override: str) -> tuple[str, ...]:
    """Write one `section.key=value` into the params tree; returns the key path it set."""
    key, sep, raw_value = override.partition("=")
    if not sep or not key.strip():
        raise SettingsError(f"override {override!r} must read section.key=value, e.g. clip.epochs=2")
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SettingsError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(raw_value)
    return tuple(parts)


def parse_value(raw_value: str) -> Any:
    """YAML typing (2 -> int, [1, 5] -> list); text that is not valid YAML stays a string."""
    if not raw_value.strip():
        return ""
    try:
        return yaml.safe_load(raw_value)
    except yaml.YAMLError:
        return raw_value


def explain(settings_model: type[BaseModel], problem: Any, path: Path, typed: dict[tuple[str, ...], str]) -> str:
    """One validation problem as a sentence: where the value came from, and for an unknown key, the valid ones."""
    loc = tuple(str(part) for part in problem["loc"])
    source = next((f"override {override}" for key, override in typed.items()
                   if loc[:len(key)] == key or key[:len(loc)] == loc), str(path))
    if problem["type"] != "extra_forbidden":
        return f"{source}: {'.'.join(loc)}: {problem['msg']}"
    valid = valid_keys(settings_model, loc[:-1])
    closest = difflib.get_close_matches(loc[-1], valid, n=1)
    hint = f"did you mean {'.'.join((*loc[:-1], closest[0]))}? " if closest else ""
    where = ".".join(loc[:-1]) or "the top level"
    return f"{source}: unknown key {'.'.join(loc)}; {hint}valid keys of {where}: {', '.join(valid)}"


def valid_keys(settings_model: type[BaseModel], section: tuple[str, ...]) -> list[str]:
    """The keys params.yaml may hold at `section` (a path of section names), as spelt in the file."""
    model: Any = settings_model
    for name in section:
        field = next((f for key, f in model.model_fields.items() if name in (key, f.alias)), None)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return [field.alias or key for key, field in model.model_fields.items()]
