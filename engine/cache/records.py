"""The facts the engine writes about a step instance, typed and serialized in one place:

    Entry       cache/<key[:2]>/<key>/entry.json: what made an entry's outputs
    NodeRecord  one step instance in a run record (also the source of `ctx.run_info`)
    RunRecord   cache/runs/<run-id>.json: the resolved recipe, every key and output digest

Plain dataclasses (no pydantic): the no-op fast path reads and writes them without importing
the step library. Fields a newer engine adds are kept in `extra` and written back unchanged.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator


def _split(cls, data: dict[str, Any]) -> dict[str, Any]:
    """Known fields as keyword arguments, the rest under `extra`."""
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    known["extra"] = {k: v for k, v in data.items() if k not in names}
    return known


def _plain(obj) -> dict[str, Any]:
    """Shallow: the values are JSON already (asdict would deep-copy every config)."""
    data = {f.name: getattr(obj, f.name) for f in fields(obj) if f.name != "extra"}
    data.update(obj.extra)
    return data


@dataclass
class Entry:
    key: str
    uses: str
    version: str
    config: dict[str, Any]
    inputs: dict[str, Any]  # slot -> digest | list of digests | None
    outputs: dict[str, dict[str, Any]]  # name -> {"digest", "size", "type"}
    external: list[str] = field(default_factory=list)
    label: str = ""
    recipe: str = ""
    input_refs: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    deterministic: bool = True
    start: float = 0.0
    end: float = 0.0
    seconds: float = 0.0
    host: str = ""
    libraries: dict[str, str] = field(default_factory=dict)
    run_id: str = ""
    source: str = ""  # digest of the step's source files (engine/source.py): stale code is noticed
    notes: list[str] = field(default_factory=list)  # the step's own lines for the summary (ctx.note)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Entry":
        return cls(**_split(cls, data))

    @classmethod
    def read(cls, path: Path) -> "Entry":
        return cls.from_json(json.loads(Path(path).read_text()))

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def expected_key(self) -> str:
        from .keys import step_key

        return step_key(self.uses, self.version, self.config, self.inputs, self.external)

    def digests(self) -> dict[str, str]:
        return {name: o["digest"] for name, o in self.outputs.items()}

    def size(self) -> int:
        return sum(o.get("size", 0) for o in self.outputs.values())


@dataclass
class NodeRecord:
    label: str
    recipe: str
    step_id: str
    uses: str
    version: str
    config: dict[str, Any]
    inputs: dict[str, Any]  # slot -> "label.output" | list of them | None
    needs: list[str] = field(default_factory=list)
    key: str | None = None
    status: str = "pending"
    outputs: dict[str, str] = field(default_factory=dict)  # name -> digest
    external: list[str] = field(default_factory=list)
    deterministic: bool = True
    seconds: float = 0.0
    error: str | None = None
    resources: dict[str, float] = field(default_factory=dict)  # what it was scheduled with: cpus, gpus
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NodeRecord":
        return cls(**_split(cls, data))

    def to_json(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class RunRecord:
    run_id: str
    recipe: str
    file: str
    nodes: list[NodeRecord]
    profile: str | None = None
    sets: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    status: str = "ok"
    environment: dict[str, Any] = field(default_factory=dict)
    fast_path: bool = False  # a no-op that reused the saved plan (see engine/fastpath.py)
    executor: str = "local"  # local | ray; never part of a key
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        known = _split(cls, data)
        known["nodes"] = [NodeRecord.from_json(n) for n in data.get("nodes", [])]
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("nodes", "extra")}
        data["nodes"] = [n.to_json() for n in self.nodes]
        data.update(self.extra)
        return data

    def dumps(self) -> str:
        """Compact: a 10,000-node record is written once per run, and read rarely."""
        return json.dumps(self.to_json(), separators=(",", ":"), default=str)


class RunInfo(Mapping):
    """`ctx.run_info`: this step and every step upstream of it. Built on first use only,
    because walking the ancestors of every node of a long chain is quadratic."""

    def __init__(self, build: Callable[[], dict[str, Any]]):
        self._build, self._data = build, None

    def _get(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._build()
        return self._data

    def __getitem__(self, k: str) -> Any:
        return self._get()[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __bool__(self) -> bool:
        return True  # never empty when the runner gives one; don't build it to find out

    def __reduce__(self):
        return (dict, (self._get(),))  # a job sent to another process takes the built dict


def provenance(n: NodeRecord, seed: int | None) -> dict[str, Any]:
    """One step's facts in `ctx.run_info["steps"]`."""
    return {"uses": n.uses, "version": n.version, "key": n.key, "config": n.config,
            "inputs": n.inputs, "seed": seed}
