"""Step keys: a digest of what determines a step's outputs, and nothing else."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .digest import canonical, text_digest

KEY_SCHEMA = 1


def config_for_key(config: BaseModel) -> dict[str, Any]:
    """The config as JSON with defaults filled, minus fields marked secret or `key: False`
    (settings that cannot change outputs, e.g. when a step gives up)."""
    data = config.model_dump(mode="json")
    _drop_secrets(type(config), data)
    return data


def _drop_secrets(model: type[BaseModel], data: dict[str, Any]) -> None:
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("secret") or extra.get("key") is False:
            data.pop(name, None)
            continue
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and isinstance(data.get(name), dict):
            _drop_secrets(ann, data[name])


def step_key(uses: str, version: str, config: dict[str, Any], inputs: dict[str, Any], external: list[str]) -> str:
    payload = {"schema": KEY_SCHEMA, "uses": uses, "version": version, "config": config,
               "inputs": inputs, "external": external}
    return text_digest(canonical(payload))


def diff_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dot paths whose values differ between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += diff_fields(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(value)"]
