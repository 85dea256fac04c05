"""Whether a node's key has a cache entry that serves, and if not, why the node computes.

An entry serves when it is not forced, exists and is intact (engine/cache/reuse.py). Where its
step's code changed without a version bump, a recomputation made under the changed code has
its own key, which includes the source digest (a key's content never changes); without one,
the old entry serves unless `--rerun-changed-code` asks for it. "Why" is the difference
between the node's KeyParts and those of the latest entry of the same step.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.cache.hold import CacheHold
from engine.cache.keys import KeyParts
from engine.cache.reuse import damage
from engine.cache.source import CODE_CHANGED, code_changed, remember_parses_in, source_digest
from engine.cache.store import DamagedEntry, Store
from engine.recipe.errors import CacheError
from engine.recipe.plan import Node, Plan

from .selection import Selection


class Lookup:
    def __init__(self, store: Store, hold: CacheHold, plan: Plan, selection: Selection,
                 rerun_changed_code: bool = False):
        self.store, self.hold, self.selection = store, hold, selection
        remember_parses_in(store.root / "index" / "source")  # source digests: parsed once per file version
        self.recipes = (plan.name, *plan.extends)  # a recipe that never ran compares with those it extends
        self.rerun_changed_code = rerun_changed_code
        self.damaged: dict[str, str] = {}  # label -> what is wrong with its entry (quarantined, recomputed)
        self.recompute: set[str] = set()  # labels recomputed because their code changed (--rerun-changed-code)

    def resolve(self, node: Node, parts: KeyParts) -> tuple[KeyParts, dict[str, Any] | None]:
        """The parts of the key this node's entry is under, and that entry if it serves (None:
        compute it). The entry is kept from `recipe gc` (this run holds it) before it is looked at."""
        key = parts.key
        if self.selection.forced(node) or not self.store.has(key):
            return parts, None
        self.hold.keep(key)
        try:
            entry = self.store.read_entry(key)
            if code_changed(entry, node.step_cls):
                newer = replace(parts, source=source_digest(node.step_cls))
                if self.store.has(newer.key):
                    self.hold.keep(newer.key)
                    parts, entry = newer, self.store.read_entry(newer.key)
                elif self.rerun_changed_code:
                    self.recompute.add(node.label)
                    return newer, None
        except DamagedEntry as e:  # set aside under the key's lock, then recomputed
            self.damaged[node.label] = e.problem
            return parts, None
        except CacheError:  # removed meanwhile
            return parts, None
        problem = (_outputs_problem(entry, node)
                   or damage(self.store.root, parts.key, entry.get("outputs", {}), self.store.stat_cache))
        if problem:
            self.damaged[node.label] = problem
            return parts, None
        return parts, entry

    def why(self, node: Node, parts: KeyParts) -> list[str]:
        """What differs from the latest entry of the same step (for `plan` and the run's lines)."""
        if self.selection.forced(node):
            return ["--force"]
        if node.label in self.recompute:
            return [f"{CODE_CHANGED}; --rerun-changed-code"]
        if node.label in self.damaged:
            return [f"cached entry damaged: {self.damaged[node.label]}"]
        last = next((k for name in self.recipes
                     if (k := self.store.last_keys.get(name, node.label)) and self.store.has(k)), None)
        if last is None:
            return ["never ran"]
        if last == parts.key:
            return []
        try:
            old = KeyParts.of_entry(self.store.read_entry(last))
        except CacheError:  # removed meanwhile
            return ["never ran"]
        return parts.diff(old) or ["key changed"]


def _outputs_problem(entry: dict[str, Any], node: Node) -> str | None:
    """An entry whose outputs are not the ones its step makes: output names are not part of a key,
    so a pulled entry may name others (its digests all match), and downstream steps would find none."""
    names, made = sorted(entry.get("outputs", {})), sorted(node.step_cls.outputs)
    return None if names == made else f"has the outputs {names}, the step makes {made}"
