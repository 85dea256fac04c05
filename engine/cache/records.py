"""The facts the engine writes about a step instance, typed and serialized in one place:

    Entry       cache/<key[:2]>/<key>/entry.json: what made an entry's outputs
    NodeRecord  one step instance in a run record (also the source of `ctx.run_info`)
    RunRecord   cache/runs/<run-id>.json: the resolved recipe, every key and output digest

Plain dataclasses (no pydantic): the no-op fast path reads and writes them without importing
the step library. Fields a newer engine adds are kept in `extra` and written back unchanged.
"""
from __future__ import annotations

import functools
import json
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Union, get_args, get_origin, get_type_hints

from .names import component_problem, is_key, path_problem, shown


def _split(cls, data: dict[str, Any]) -> dict[str, Any]:
    """Known fields as keyword arguments, the rest under `extra`."""
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    known["extra"] = {k: v for k, v in data.items() if k not in names}
    return known


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type of a field's annotation (the few kinds records use)."""
    return _checker(hint)(value)


@functools.cache
def _checker(hint: Any) -> Callable[[Any], bool]:
    """The check for one annotation, built once: a 10,000-node run record checks 10,000 nodes."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return lambda v: True
    if origin in (Union, types.UnionType):
        parts = [_checker(a) for a in args]
        return lambda v: any(p(v) for p in parts)
    if hint is type(None):
        return lambda v: v is None
    if hint in (int, float):  # JSON has one number type; a bool is no number here
        kinds = (int, float) if hint is float else int
        return lambda v: isinstance(v, kinds) and not isinstance(v, bool)
    if origin is dict:
        k, item = _checker(args[0]), _checker(args[1])
        return lambda v: isinstance(v, dict) and all(k(a) and item(b) for a, b in v.items())
    if origin is list:
        item = _checker(args[0])
        return lambda v: isinstance(v, list) and all(item(a) for a in v)
    return lambda v: isinstance(v, hint)


MAX_DEPTH = 100  # nesting of a record's JSON: a config is a few levels deep; code that walks one recurses


def _depth_problem(data: Any) -> str | None:
    """Lists and objects nested more than MAX_DEPTH levels (walked level by level, without recursion)."""
    level, depth = [data], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return f"nests lists or objects more than {MAX_DEPTH} levels deep"
        level = [v for x in level for v in (x.values() if isinstance(x, dict) else x) if isinstance(v, (dict, list))]
    return None


MAX_TIME = 253402300799  # 9999-12-31 UTC: what `time.localtime` takes everywhere; no run ends later


def _time_problem(data: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """A time or duration field that is no time (NaN, negative, past year 9999): printing it fails."""
    for name in names:
        value = data.get(name, 0)
        if not 0 <= value <= MAX_TIME:  # False for NaN too
            return f"field {name!r} is no time (found {shown(value, 60)})"
    return None


def _schema_problem(cls, data: Any) -> str | None:
    """Why `data` is not the JSON of a `cls` record: a missing field or a field of the wrong type.
    Fields a newer engine adds are let through (they land in `extra`)."""
    if not isinstance(data, dict):
        return f"is not a JSON object (found {type(data).__name__})"
    hints = _hints(cls)
    for f in fields(cls):
        if f.name == "extra" or f.name == "nodes" and cls is RunRecord:
            continue
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                return f"lacks the field {f.name!r}"
        elif not _fits(data[f.name], hints[f.name]):
            return f"field {f.name!r} is not {_hint_name(hints[f.name])} (found {shown(data[f.name], 60)})"
    return None


_hints = functools.cache(get_type_hints)  # a 10,000-node run record checks 10,000 nodes


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if get_origin(hint) is None else str(hint).replace("typing.", "")


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
    source: str = ""  # digest of the step's source files (engine/cache/source.py): stale code is noticed
    notes: list[str] = field(default_factory=list)  # the step's own lines for the summary (ctx.note)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Entry":
        return cls(**_split(cls, data))

    @classmethod
    def read(cls, path: Path) -> "Entry":
        return cls.from_json(json.loads(Path(path).read_text()))

    @classmethod
    def problem(cls, data: Any) -> str | None:
        """Why `data` (an entry.json from a remote, or from disk) is not an entry; None when it is.
        Output names become paths (outputs/<name>, artifact links): they must stay inside."""
        why = _schema_problem(cls, data) or _depth_problem(data) or _time_problem(data, ("start", "end", "seconds"))
        if why:
            return f"entry.json {why}"
        if not is_key(data["key"]):
            return f"entry.json names the key {shown(data['key'])}, which is not a key"
        for name, out in data["outputs"].items():
            if (why := path_problem(name)) is not None:
                return f"output name {shown(name)} {why}"
            if not (isinstance(out.get("digest"), str) and _fits(out.get("size", 0), int)
                    and isinstance(out.get("type", ""), str)):
                return f"output {shown(name)} lacks a digest, or its size or type is not one"
        for what in ("label", "recipe"):  # "" in entries of older engines
            if data.get(what) and (why := path_problem(data[what])) is not None:
                return f"entry.json {what} {shown(data[what])} {why}"
        return None

    def to_json(self) -> dict[str, Any]:
        return _plain(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def expected_key(self) -> str:
        from .keys import KeyParts

        return KeyParts.of_entry(self.to_json()).key

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
    fast_path: bool = False  # a no-op that reused the saved plan (see engine/cli/fastpath.py)
    executor: str = "local"  # local | ray; never part of a key
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def problem(cls, data: Any, run_id: str | None = None) -> str | None:
        """Why `data` (a run record from a remote, or from disk) is not a run record; None when
        it is. Its names become paths or keys of paths: report files, artifact links, entries."""
        why = _schema_problem(cls, data) or _depth_problem(data) or _time_problem(data, ("started", "finished"))
        if why:
            return f"run record {why}"
        if (why := component_problem(data["run_id"])) is not None:
            return f"run id {shown(data['run_id'])} {why}"
        if run_id is not None and data["run_id"] != run_id:
            return f"run record {run_id} holds run id {shown(data['run_id'])}"
        if (why := component_problem(data["recipe"])) is not None:
            return f"recipe name {shown(data['recipe'])} {why}"
        if not isinstance(data.get("nodes"), list):
            return "run record field 'nodes' is not a list"
        for i, node in enumerate(data["nodes"]):
            if (why := _node_problem(node)) is not None:
                return f"node {i} {why}"
        return None

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


def _node_problem(node: Any) -> str | None:
    why = _schema_problem(NodeRecord, node) or _time_problem(node, ("seconds",))
    if why:
        return why
    label = node["label"]
    if (why := path_problem(label)) is not None:
        return f"label {shown(label)} {why}"
    if (why := component_problem(node["recipe"])) is not None:
        return f"({shown(label)}) recipe name {shown(node['recipe'])} {why}"
    if node.get("key") is not None and not is_key(node["key"]):
        return f"({shown(label)}) key {shown(node['key'])} is not a key"
    bad = next((n for n in node["outputs"] if path_problem(n) is not None), None)
    if bad is not None:
        return f"({shown(label)}) output name {shown(bad)} {path_problem(bad)}"
    return None


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
