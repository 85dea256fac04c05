"""Which model a step uses: a bound Model input wins over the config's path, Hub id or served name;
and how that model is named where others read it (`model_ref`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.recipe.errors import StepError


def looks_local(name: str) -> bool:
    """A path the user meant as a directory here, not a Hub id or a served model name."""
    return name.startswith((".", "/", "~")) or Path(name).exists()


def resolve_model(ctx: Any, config: Any, slot: str = "model", field: str = "model", who: str | None = None,
                  backend: Any = None) -> str:
    """The model for `slot`: the bound input's directory, else config `field` (a local model
    directory, checked to hold config.json, or a Hub id / served name passed on as is). With an
    `openai` backend the name is whatever the server serves, so it is never checked here."""
    who = who or ctx.step_name
    bound = ctx.inputs.get(slot) if isinstance(ctx.inputs, dict) else None
    if bound is not None:
        return str(bound.path)
    name = getattr(config, field, None)
    if not name:
        raise StepError(f"{who}: {field}: no model given; bind input `{slot}` from a step or set "
                        f"`{field}:` to a local model directory or a Hub id")
    name = str(name)
    if looks_local(name) and getattr(backend, "kind", None) != "openai":
        if not (Path(name).expanduser() / "config.json").exists():
            raise StepError(f"{who}: {field}: {name}: not a model directory (no config.json)")
        return str(Path(name).expanduser())
    return name


def require_model_dir(who: str, path: str | Path, what: str = "model") -> str:
    """A bound model input must be a Hugging Face model directory (trainers load it directly)."""
    if not (Path(path) / "config.json").exists():
        raise StepError(f"{who}: input {what} {path}: no config.json; expected a Hugging Face model directory")
    return str(path)


def model_ref(ctx: Any, config: Any, slot: str = "model", field: str = "model") -> str:
    """The model as rows and cards name it, never a path on this machine: a bound input (a step's
    output in the cache) by its content digest, `blake3:<hex>`; a local directory by its folder
    name; a Hub id or served name as given. (The digest is part of the step's key, so the rows
    still depend on nothing but the key.)"""
    bound = ctx.inputs.get(slot) if isinstance(ctx.inputs, dict) else None
    if bound is not None:
        from engine.cache.digest import tree_digest

        return f"blake3:{bound.digest or tree_digest(bound.path)}"
    name = str(getattr(config, field, None) or "")
    return Path(name).expanduser().name if looks_local(name) else name
