"""Run records, one JSON file each under `<cache>/runs/<run-id>.json`. Only `Runs.write` writes
them: a run and `pull` hand it a RunRecord, the no-op fast path a SavedRun."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from engine.recipe.errors import CacheError

if TYPE_CHECKING:
    from .records import RunRecord


class DamagedRecord(CacheError):
    """A run record file that is there but does not parse."""


class Runs:
    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.json"

    def write(self, record: "RunRecord | SavedRun") -> Path:
        """Whole or not at all: written beside, then renamed into place."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(record.run_id)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(record.dumps())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def ids(self) -> list[str]:
        """Every run id, oldest first (run ids sort by time)."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json"))

    def newest_local(self) -> Iterator[str]:
        """The ids of the runs made with this cache, newest first: a record pulled from a remote
        (`pulled_from`) may carry any id, a future one too, and is never taken for the latest."""
        return (rid for rid in reversed(self.ids()) if "pulled_from" not in self.read(rid))

    def read(self, ref: str) -> dict[str, Any]:
        """A run id, a unique prefix of one, or a path to a record file."""
        if ref.endswith(".json") and Path(ref).is_file():
            return _load(Path(ref))
        hits = prefixed(self.ids(), ref)
        if not hits:
            raise CacheError(f"no run {ref!r} in {self.folder} (`recipe ls` lists runs)")
        if len(hits) > 1:
            raise CacheError(f"run prefix {ref!r} is ambiguous: {', '.join(hits[:5])}")
        return _load(self.path(hits[0]))


def _load(path: Path) -> dict[str, Any]:
    """A record that does not parse (cut short by a crash of the machine, edited, copied in part)
    is one message naming it, not a traceback of every command that lists runs."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedRecord(f"run record {path} is damaged ({e}); delete it or pull it again") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise DamagedRecord(f"run record {path} is damaged (not a run record); delete it or pull it again")
    return data


def prefixed(run_ids: list[str], ref: str) -> list[str]:
    """The ids `ref` names: itself, where it is a whole id (a pulled record may carry any id, one
    that starts with a local one too), else those it is a prefix of."""
    return [ref] if ref in run_ids else [r for r in run_ids if r.startswith(ref)]


class SavedRun:
    """The run record of a no-op: the header and nodes (all cached) that the last full run saved,
    under a new run id. The nodes stay the JSON text they were saved as: a 10,000-node record is
    not parsed and written again, and the no-op imports no dataclass (records.py costs 10 ms)."""

    def __init__(self, header: dict[str, Any], nodes_json: str):
        self.header, self.nodes_json = header, nodes_json
        self.run_id = header["run_id"]

    def dumps(self) -> str:
        """As RunRecord.dumps: compact, `nodes` last."""
        head = json.dumps(self.header, separators=(",", ":"), default=str)
        return head[:-1] + ',"nodes":' + self.nodes_json + "}"
