"""Step keys: a digest of what determines a step's outputs, and nothing else."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .digest import canonical, text_digest

# 2: execution-only fields (`json_schema_extra={"key": False}`) and fields a config says do not
# apply (`unkeyed_fields()`, e.g. another backend kind's settings) left the key
KEY_SCHEMA = 2


def config_for_key(config: BaseModel) -> dict[str, Any]:
    """The config as JSON with defaults filled, minus secrets and settings that cannot change outputs.

    A field leaves the key when marked `json_schema_extra={"secret": True}` (never hashed nor
    recorded) or `{"key": False}` (execution-only: concurrency, timeouts, server addresses), and
    when the config object lists it in `unkeyed_fields()` (it does not apply to this instance).
    """
    data = config.model_dump(mode="json")
    _drop_unkeyed(config, data)
    return data


def is_unkeyed(field: Any) -> bool:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return bool(extra.get("secret")) or extra.get("key") is False


def _drop_unkeyed(model: BaseModel, data: dict[str, Any]) -> None:
    for name, f in type(model).model_fields.items():
        if is_unkeyed(f):
            data.pop(name, None)
            continue
        value = getattr(model, name, None)
        if isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _drop_unkeyed(value, data[name])
    unkeyed = getattr(model, "unkeyed_fields", None)
    for name in unkeyed() if callable(unkeyed) else ():
        data.pop(name, None)


def step_key(uses: str, version: str, config: dict[str, Any], inputs: dict[str, Any], external: list[str]) -> str:
    payload = {"schema": KEY_SCHEMA, "uses": uses, "version": version, "config": config,
               "inputs": inputs, "external": external}
    return text_digest(canonical(payload))


def code_key(key: str, source: str) -> str:
    """The key of an entry recomputed because its step's code changed without a version bump
    (`--rerun-changed-code`): the step key and the source digest, so that `key` keeps its content."""
    return text_digest(canonical({"schema": KEY_SCHEMA, "key": key, "source": source}))


def diff_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dot paths whose values differ between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += diff_fields(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(value)"]
