"""`recipe verify --recompute [--sample F]`: compute entries again and compare, like `nix build --check`.

Each deterministic entry (or a random fraction F of them) is computed again in a scratch
folder from what its entry.json records: step type and version, config, and inputs, found
among the cache's entries by their digests; its external files must still have the recorded
digests. The outputs' digests must equal the recorded ones. An entry that cannot be recomputed
here (an input no longer in the cache, a step now at another version, a step with effects
outside the cache such as publish.hub) is listed as skipped, with why. This is how a team
checks entries pulled from a remote it does not fully trust.
"""
from __future__ import annotations

import math
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from engine.cache.digest import tree_digest
from engine.cache.store import Store

from .display import escape, plural


def recompute(store: Store, console, sample: float | None, skip: set[str] = frozenset()) -> int:
    """Prints one line per entry that differs, failed or was skipped, and a summary; returns how
    many differ or failed. `skip`: entries known to be tampered with already."""
    # a tampered entry (its entry.json may not even parse) is neither checked nor an input of one
    read = {key: store.read_entry(key) for key in store.keys() if key not in skip}
    entries = [(key, entry) for key, entry in read.items() if entry.get("deterministic", True)]
    if sample is not None:
        entries = random.sample(entries, min(len(entries), math.ceil(sample * len(entries))))
    produced = {o["digest"]: (key, name) for key, entry in read.items() for name, o in entry["outputs"].items()}
    counts = {"match": 0, "differ": 0, "failed": 0, "skipped": 0}
    for key, entry in entries:
        status, why = _check(store, key, entry, produced)
        counts[status] += 1
        if status != "match":
            style = "bold red" if status in ("differ", "failed") else "yellow"
            console.print(f"[{style}]{status}[/] {key[:12]} {escape(entry.get('label') or entry['uses'])}: "
                          f"{escape(why)}", soft_wrap=True)
    done = len(entries) - counts["skipped"]
    console.print(f"recomputed {plural(done, 'deterministic entry', 'deterministic entries')}: "
                  + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["differ"] + counts["failed"]


def _check(store: Store, key: str, entry: dict[str, Any], produced: dict[str, tuple[str, str]]) -> tuple[str, str]:
    from engine.cache.secrets import Redactor
    from engine.recipe import step as registry
    from engine.recipe.errors import RecipeError
    from engine.run.step_process import Hooks, StepJob, describe_error, run_job

    try:
        cls = registry.get(entry["uses"])
    except RecipeError as e:
        return "skipped", str(e)
    if cls.version != entry["version"]:
        return "skipped", f"{cls.name} is now version {cls.version}, the entry was made by {entry['version']}"
    if cls.side_effects:
        return "skipped", f"{cls.name} has effects outside the cache"
    try:
        config = cls.Config.model_validate(entry["config"])
        inputs = {slot: _artifacts(store, cls, slot, d, produced) for slot, d in entry["inputs"].items()}
    except (ValueError, LookupError) as e:
        return "skipped", str(e)
    external = [tree_digest(Path(f), store.stat_cache) if Path(f).exists() else None
                for f in cls(config).external_files()]
    if external != entry.get("external", []):
        return "skipped", "its external files changed since"
    staging = Path(tempfile.mkdtemp(prefix=f"verify-{key[:16]}-", dir=store.root / "tmp"))
    try:
        job = StepJob(cls, config, inputs, staging, staging / "scratch", key, entry.get("label") or cls.name,
                      hooks=Hooks(Redactor()))
        outputs = run_job(job)
    except Exception as e:  # noqa: BLE001 - a step that fails here is reported, not raised
        return "failed", describe_error(e)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    differ = [name for name, o in entry["outputs"].items() if outputs.get(name, {}).get("digest") != o["digest"]]
    if differ:
        return "differ", "output " + ", ".join(f"{n} {outputs.get(n, {}).get('digest', 'missing')[:12]} "
                                               f"(recorded {entry['outputs'][n]['digest'][:12]})" for n in differ)
    return "match", ""


def _artifacts(store: Store, cls, slot: str, digests: Any, produced: dict[str, tuple[str, str]]) -> Any:
    """The recorded input digests as artifacts of the cache's entries that hold them."""
    if digests is None:
        return None
    kind = cls.input_slots()[slot].type

    def one(digest: str):
        if digest not in produced:
            raise LookupError(f"input {slot} ({digest[:12]}) is in no entry of this cache")
        key, name = produced[digest]
        return kind(store.output_path(key, name), digest)
    return [one(d) for d in digests] if isinstance(digests, list) else one(digests)
