"""Shards of `ctx.map_shards`: what one is, how its checkpoint file is written and read, and
the in-process runner (the Ray runner lives in engine/run/executors/ray.py).

A shard file is written first-writer-wins: the rows go to a private temp file, which is then
`os.link`ed to the shard's name. Two writers of the same shard (a retried task whose first
attempt was not dead after all, two drivers on one cache) cannot interleave: the second
one's link fails with FileExistsError, which means the shard is already done.
"""
from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence


@dataclass
class Shard:
    index: int
    items: list[Any]
    path: Path


def read_shard(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_shard(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Publish `rows` as this shard unless another writer did first; return the published rows."""
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return read_shard(path)  # the first writer's rows are the shard
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def compute_shard(fn: Callable, items: list[Any], path: Path, state: Any = None, with_state: bool = False):
    """Run one shard and checkpoint it; what every runner calls, wherever it runs."""
    rows = fn(items, state) if with_state else fn(items)
    return write_shard(Path(path), rows)


class InProcessShards:
    """One shard after another in this process. A `setup` (a backend spec that loads a model)
    is called once per step, however many map_shards calls share it, and its result closed
    when the step ends or the step releases it."""

    def __init__(self) -> None:
        self._loaded: list[tuple[Callable[[], Any], Any]] = []

    def run(self, todo: Sequence[Shard], fn: Callable, done: Callable[[Shard, list], None],
            setup: Callable[[], Any] | None = None, replica: Any = None) -> None:
        state = self._state(setup) if setup is not None and todo else None
        for shard in todo:
            done(shard, compute_shard(fn, shard.items, shard.path, state, setup is not None))

    def _state(self, setup: Callable[[], Any]) -> Any:
        for known, state in self._loaded:
            if known == setup:
                return state
        state = setup()
        self._loaded.append((setup, state))
        return state

    def release(self, setup: Callable[[], Any]) -> None:
        keep = []
        for known, state in self._loaded:
            if known == setup:
                _close(state)
            else:
                keep.append((known, state))
        self._loaded = keep

    def close(self) -> None:
        for _, state in self._loaded:
            _close(state)
        self._loaded = []


def _close(state: Any) -> None:
    close = getattr(state, "close", None)
    if callable(close):
        close()
