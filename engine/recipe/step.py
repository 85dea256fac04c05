"""The step contract: a Step type has a name, a pydantic Config, typed inputs and outputs,
a version, and `run(ctx)`. Built-in steps live in the `steps` package; third-party packages
register modules under the `mathrecipe.steps` entry point group.

    from engine.recipe.step import Step, StepConfig, register
    from engine.recipe.artifact_types import Dataset

    @register("data.sample")
    class Sample(Step):
        '''Draw n rows at random (seeded).'''
        version = "1"

        class Config(StepConfig):
            n: int

        inputs = {"data": Dataset}
        outputs = {"data": Dataset}

        def run(self, ctx):
            rows = ctx.inputs["data"].read()
            ctx.write_dataset("data", ctx.rng.sample(rows, min(self.config.n, len(rows))))

Bump `version` whenever a change to `run` changes what the step produces: it is part of
the key, so old cache entries stop matching.
"""
from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .artifact_types import Artifact
from .errors import RecipeError
from .resources import Resources

if TYPE_CHECKING:
    from engine.run.context import Context


class StepConfig(BaseModel):
    """Base of every step's `with:` config. Unknown fields are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    # the folder of the recipe file that declares the step (set by the planner; never in the key)
    _recipe_dir: str | None = PrivateAttr(None)

    def local_path(self, path: str) -> str:
        """A path named in this config, as this process opens it: a relative one is read from the
        recipe's folder or a folder above it (engine/recipe/paths.py)."""
        from .paths import locate

        return locate(path, self._recipe_dir)[1]

    # Every step has it: a Dataset output with 0 rows fails the step unless this is true.
    allow_empty: bool = Field(False, description="let a Dataset output have 0 rows instead of failing the step")

    def unkeyed_fields(self) -> list[str]:
        """`allow_empty` is in the key only when true: keys stay as they were without it, and an
        entry that may be empty is never served to a step that does not allow it."""
        return [] if self.allow_empty else ["allow_empty"]


# Fields of a config whose values are secrets: the engine never hashes or records them.
# A step declares them with `Field(..., json_schema_extra={"secret": True})` or, better,
# reads them at run time with `ctx.secret(NAME)` and keeps only the variable's *name* in config.

# Fields that cannot change a step's outputs (concurrency, timeouts, server addresses, checkpoint
# cadence) are execution-only: `Field(8, json_schema_extra=EXECUTION_ONLY)` keeps them out of the
# key, so changing them reuses the cache. Anything that feeds a seed or an output stays in.
EXECUTION_ONLY = {"key": False}


@dataclass(frozen=True)
class In:
    """An input slot: its artifact type, whether it takes a list, whether it may be left out."""

    type: type[Artifact]
    many: bool = False
    required: bool = True

    def describe(self) -> str:
        s = f"list[{self.type.kind}]" if self.many else self.type.kind
        return s if self.required else f"{s} (optional)"


class Step:
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Config: ClassVar[type[StepConfig]] = StepConfig
    inputs: ClassVar[dict[str, Any]] = {}  # name -> Artifact type or In(...)
    outputs: ClassVar[dict[str, type[Artifact]]] = {}
    # Steps whose output depends on nothing but key inputs set this; `reproduce` then insists
    # the recomputed digests equal the recorded ones.
    deterministic: ClassVar[bool] = True
    # True for a step whose run changes things outside the cache (an upload): `recipe verify
    # --recompute` never runs it again.
    side_effects: ClassVar[bool] = False
    # True for a step whose model work runs in `ctx.map_shards(setup=...)` replicas: on Ray the
    # replicas hold the step's `resources` (e.g. gpus: 8 with tensor_parallel_size 2 is four
    # replicas) and the step's own task only coordinates them. A step may make it a property of
    # its config.
    uses_replicas: ClassVar[bool] = False
    # Dataset outputs that may hold 0 rows (rows set aside, errors found): every other Dataset
    # output with 0 rows fails the step, unless its config says `allow_empty: true`.
    may_be_empty: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: StepConfig):
        self.config = config

    @classmethod
    def input_slots(cls) -> dict[str, In]:
        return {k: v if isinstance(v, In) else In(v) for k, v in cls.inputs.items()}

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def describe(self) -> str:
        """A few words for `recipe plan` on what this instance makes, e.g. "10000 algebra problems"."""
        return ""

    def place(self, outputs: dict[str, Artifact], out_dir: str | None = None) -> None:
        """Called after every run of the step, computed or cached, with its output artifacts
        and `recipe run --out DIR`. For steps that must also put files outside the cache (a
        layout a downstream tool expects); deleting those files and rerunning restores them.
        Keep it idempotent."""

    def resources(self) -> Resources:
        """What one run of this instance needs by default (a recipe's `resources:` overrides it).
        A step whose config asks for GPUs (a vLLM backend, a CUDA trainer) says so here."""
        return Resources()

    def estimated_output_bytes(self) -> int | None:
        """About how many bytes this instance's outputs will take, if the step can tell before
        running (for the disk check of preflight); None: the size of its last outputs is used."""
        return None

    def external_files(self) -> list[str]:
        """Files this step reads that are not step outputs (e.g. a user's data file).
        Their content digests go into the key, so editing the file reruns the step."""
        return []

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        """At plan time, with the names of the inputs the recipe binds: (input, problem) when
        the combination cannot work (e.g. a Model directory for a remote server), else None."""
        return None

    def preflight(self) -> list[str]:
        """Problems this instance would hit on this machine, each one sentence, found before
        anything runs: a missing package, GPU, secret, or a server that does not answer
        (`engine.cli.preflight` has helpers). The default asks each config value that has a
        `preflight()` (a backend config); a step adds its own checks by extending the list."""
        found: list[str] = []
        for name in type(self.config).model_fields:
            check = getattr(getattr(self.config, name), "preflight", None)
            if callable(check):
                found += check()
        return found

    def run(self, ctx: "Context") -> None:  # pragma: no cover - abstract
        raise NotImplementedError


_REGISTRY: dict[str, type[Step]] = {}
_BROKEN: dict[str, str] = {}  # module -> why it failed to import
_loaded = False


def _import(name: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as e:  # one broken step module must not hide the rest of the library
        _BROKEN[name] = f"{type(e).__name__}: {e}"


def register(name: str):
    def deco(cls: type[Step]) -> type[Step]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise RuntimeError(f"step type {name!r} registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_family(name: str) -> None:
    """The built-in package named like the step's family (`data.map` -> steps/data/): most
    steps live there, and a plan of a few step types need not import all 60 step modules."""
    import steps

    family = Path(steps.__path__[0]) / name.split(".")[0]
    if family.is_dir() and family.name not in ("backends", "common"):
        for mod in pkgutil.walk_packages([str(family)], f"steps.{family.name}."):
            _import(mod.name)


def load_all() -> dict[str, type[Step]]:
    """Import every built-in step module and every entry-point module, once."""
    global _loaded
    if not _loaded:
        import steps

        for mod in pkgutil.walk_packages(steps.__path__, "steps."):
            if ".backends" not in mod.name:
                _import(mod.name)
        load_plugins()
        _loaded = True
    return _REGISTRY


def load_plugins() -> None:
    """Step modules outside the library: entry points (group `mathrecipe.steps`) and, without
    packaging, RECIPE_STEP_MODULES=my_steps,team.steps. They may also register backend kinds,
    which a Ray replica loading a model then finds this way."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="mathrecipe.steps"):
        _import(ep.value.split(":")[0])
    for name in filter(None, os.environ.get("RECIPE_STEP_MODULES", "").split(",")):
        _import(name.strip())


@functools.lru_cache(maxsize=None)
def takes_number(config: type[BaseModel], name: str) -> bool:
    """Whether field `name` of a step's Config takes a number and not a boolean."""
    f = config.model_fields.get(name)
    kinds = (set(typing.get_args(f.annotation)) or {f.annotation}) if f else set()
    return bool(kinds & {int, float}) and bool not in kinds


def get(name: str, where: str | None = None) -> type[Step]:
    if not _loaded and name not in _REGISTRY:
        _load_family(name)
        if name not in _REGISTRY:
            load_plugins()
    registry = _REGISTRY if name in _REGISTRY else load_all()
    if name not in registry:
        import difflib

        close = difflib.get_close_matches(name, registry, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `recipe steps` lists them"
        raise RecipeError(f"unknown step type {name!r}{_broken_hint(name)}{hint}", where)
    return registry[name]


def _broken_hint(name: str) -> str:
    """The modules that may have defined `name` but failed to import, with their exception:
    every plugin module (entry points, RECIPE_STEP_MODULES) and the built-in family's modules."""
    family = f"steps.{name.split('.')[0]}."
    broken = [f"step module {m} failed to import ({why})" for m, why in _BROKEN.items()
              if not m.startswith("steps.") or m.startswith(family)]
    return "".join(f"; {b}" for b in broken[:3])
