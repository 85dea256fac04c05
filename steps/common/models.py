"""Which model a step uses: a bound Model input wins over the config's path, Hub id or served name;
and how that model is named where others read it (`model_ref`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.recipe.errors import StepError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


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


def load_pretrained(who: str, what: str, path: Any, load: Any, **kw: Any) -> Any:
    """`load(path, **kw)` (a transformers `from_pretrained`) with any failure, a broken config.json,
    truncated weights or a missing tokenizer file alike, as one StepError naming the path: the user
    gave a damaged model directory, which deserves a message, not a traceback."""
    try:
        return load(path, **kw)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError, SafetensorError...
        why = " ".join(str(e).split())[:300]
        raise StepError(f"{who}: {what} {path}: cannot load it ({type(e).__name__}: {why})") from None


def load_tokenizer_of(who: str, path: Any, **kw: Any) -> Any:
    """The tokenizer saved with the model at `path`; a local directory without one is named as such
    (transformers would otherwise talk of sentencepiece and slow tokenizers)."""
    from transformers import AutoTokenizer

    if Path(str(path)).is_dir() and not any((Path(str(path)) / f).exists() for f in TOKENIZER_FILES):
        raise StepError(f"{who}: model {path}: no tokenizer next to it (expected tokenizer.json or "
                        "tokenizer_config.json, as save_pretrained writes)")
    return load_pretrained(who, "tokenizer of model", path, AutoTokenizer.from_pretrained, **kw)
