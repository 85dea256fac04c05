"""Step keys: a digest of what determines a step's outputs, and nothing else.

Every key is made here, from a `KeyParts` that names its parts: the step type (`uses`), its
`version`, its config as hashed, the digests of its inputs and of the external files it
reads, the key schema, and, for a recomputation under changed code (`--rerun-changed-code`),
the step's source digest. `plan`'s "why" is the difference of two KeyParts (`KeyParts.diff`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from engine.recipe.step import EXECUTION_ONLY

from .digest import canonical, text_digest

# 2: execution-only fields (EXECUTION_ONLY) and fields a config says do not apply
# (`unkeyed_fields()`, e.g. another backend kind's settings) left the key
KEY_SCHEMA = 2


def config_for_key(config: BaseModel) -> dict[str, Any]:
    """The config as JSON with defaults filled, minus secrets and settings that cannot change outputs.

    A field leaves the key when marked `json_schema_extra={"secret": True}` (never hashed nor
    recorded) or `json_schema_extra=EXECUTION_ONLY` (concurrency, timeouts, server addresses),
    and when the config object lists it in `unkeyed_fields()` (it does not apply to this instance).
    """
    data = config.model_dump(mode="json")
    _drop_unkeyed(config, data)
    return data


def is_unkeyed(field: Any) -> bool:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return bool(extra.get("secret")) or EXECUTION_ONLY.items() <= extra.items()


def _drop_unkeyed(model: BaseModel, data: dict[str, Any]) -> None:
    never, fields = _unkeyed_fields(type(model))
    for name in never:
        data.pop(name, None)
    for name in fields:
        value = getattr(model, name, None)
        if isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _drop_unkeyed(value, data[name])
    unkeyed = getattr(model, "unkeyed_fields", None)
    for name in unkeyed() if callable(unkeyed) else ():
        data.pop(name, None)


@functools.cache
def _unkeyed_fields(model: type[BaseModel]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A config class's fields that never enter a key, and the others (read once per class: a
    plan keys 100,000 configs of one class)."""
    fields = model.model_fields
    never = tuple(name for name, f in fields.items() if is_unkeyed(f))
    return never, tuple(name for name in fields if name not in never)


@dataclass(frozen=True)
class KeyParts:
    """Everything a step key is made of, named."""

    uses: str
    version: str
    config: dict[str, Any]  # as hashed: config_for_key
    inputs: dict[str, Any]  # slot -> digest | list of digests | None
    external: list[str] = field(default_factory=list)  # digests of the files the step reads
    source: str | None = None  # the step's source digest, in the key of a recomputation under changed code
    schema: int = KEY_SCHEMA

    @functools.cached_property
    def step_key(self) -> str:
        """The key without the source digest: the one an entry made under the version's code has."""
        return text_digest(canonical({"schema": self.schema, "uses": self.uses, "version": self.version,
                                      "config": self.config, "inputs": self.inputs, "external": self.external}))

    @property
    def key(self) -> str:
        return self.step_key if self.source is None else code_key(self.step_key, self.source)

    @classmethod
    def of_entry(cls, entry: dict[str, Any]) -> "KeyParts":
        """The parts an entry.json records (a recomputation under changed code says so in
        `source_in_key`)."""
        return cls(entry.get("uses", ""), entry.get("version", ""), entry.get("config") or {},
                   entry.get("inputs") or {}, entry.get("external") or [],
                   entry.get("source") if entry.get("source_in_key") else None)

    def diff(self, old: "KeyParts") -> list[str]:
        """What changed from `old` to these parts, one phrase each, old -> new where short:
        `with.n: 2 -> 3`, `version 1 -> 2`, `input problems changed`."""
        reasons = []
        if old.uses != self.uses:
            reasons.append(f"step type {old.uses} -> {self.uses}")
        if old.version != self.version:
            reasons.append(f"version {old.version} -> {self.version}")
        reasons += [f"with.{path}: {_short(a)} -> {_short(b)}" for path, a, b in changed_values(old.config, self.config)]
        reasons += [f"input {slot} changed" for slot in sorted(set(old.inputs) | set(self.inputs))
                    if old.inputs.get(slot) != self.inputs.get(slot)]
        if old.external != self.external:
            reasons.append("external file changed")
        if old.source != self.source:
            reasons.append("code changed (--rerun-changed-code)" if self.source else "without --rerun-changed-code")
        if old.schema != self.schema:
            reasons.append(f"key schema {old.schema} -> {self.schema}")
        return reasons


def step_key(uses: str, version: str, config: dict[str, Any], inputs: dict[str, Any], external: list[str]) -> str:
    """`KeyParts(...).key`, for callers that have the parts at hand."""
    return KeyParts(uses, version, config, inputs, external).key


def code_key(key: str, source: str) -> str:
    """The key of an entry recomputed because its step's code changed without a version bump
    (`--rerun-changed-code`): the step key and the source digest, so that `key` keeps its content."""
    return text_digest(canonical({"schema": KEY_SCHEMA, "key": key, "source": source}))


_MISSING = object()


def changed_values(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dot path, old value, new value) where two JSON values differ; a missing value is `_MISSING`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(old) | set(new)):
            out += changed_values(old.get(k, _MISSING), new.get(k, _MISSING), f"{prefix}{k}.")
        return out
    return [] if old == new else [(prefix.rstrip(".") or "(value)", old, new)]


def _short(value: Any, limit: int = 40) -> str:
    """A value for one line of `plan`: JSON, cut short."""
    if value is _MISSING:
        return "(unset)"
    text = canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
