"""The key of each node of a plan: its KeyParts (engine/cache/keys.py) from the digests its
upstream nodes produced and the external files it reads. Keys use the digests of upstream
*outputs*, so a step that reran and produced the same bytes leaves its dependents cached
(early cutoff).

Key equals content: before a node's entry is committed, `check_read` makes sure the external
files it read are still those whose digests went into the key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from engine.cache.digest import StatCache, stamp, tree_digest
from engine.cache.keys import KeyParts, config_for_key
from engine.recipe.errors import StepError
from engine.recipe.plan import Node


class NodeKeys:
    def __init__(self, results: Mapping[str, Any], stat_cache: StatCache):
        self.results = results  # label -> its Result: the digests of its outputs, once it has them
        self.stat_cache = stat_cache
        self._configs: dict[str, dict[str, Any]] = {}
        self._read: dict[str, tuple[list[str], list]] = {}  # label -> its external files and their stamps

    def config(self, node: Node) -> dict[str, Any]:
        """The config as hashed; dumped once per node, not once per use."""
        if node.label not in self._configs:
            self._configs[node.label] = config_for_key(node.config)
        return self._configs[node.label]

    def parts(self, node: Node) -> KeyParts | None:
        """The node's key parts; None while an input is missing (its upstream node has not run)."""
        inputs = self.input_digests(node)
        if inputs is None:
            return None
        return KeyParts(node.uses, node.step_cls.version, self.config(node), inputs, self._external(node))

    def input_digests(self, node: Node) -> dict[str, Any] | None:
        digests: dict[str, Any] = {}
        for slot, value in node.inputs.items():
            if value is None:
                digests[slot] = None
                continue
            ds = []
            for r in value if isinstance(value, list) else [value]:
                made = self.results[r.label].outputs
                if r.output not in made:
                    return None
                ds.append(made[r.output])
            digests[slot] = ds if isinstance(value, list) else ds[0]
        return digests

    def _external(self, node: Node) -> list[str]:
        """Content digests only: where a file lives is not part of the key."""
        files, seen, digests = node.step_cls(node.config).external_files(), [], []
        for f in files:
            p = Path(f)
            if not p.exists():
                raise StepError(f"{node.label}: file {_shown(f)} not found")
            digests.append(tree_digest(p, self.stat_cache, seen))
        if files:  # most nodes read none: nothing kept for them
            self._read[node.label] = (files, seen)
        return digests

    def check_read(self, node: Node) -> None:
        """The external files the key was digested from are still the ones the step read (same
        size, mtime and inode; the same files matching its globs)."""
        files, seen = self._read.pop(node.label, ([], []))
        if node.step_cls(node.config).external_files() != files:
            raise StepError(f"{node.label}: the files matching {', '.join(files[:3]) or 'its paths'} "
                            "changed while they were read; nothing was cached, run it again")
        for path, before in seen:
            try:
                now = stamp(os.stat(path))
            except OSError:
                now = None
            if now != before:
                raise StepError(f"{node.label}: {_shown(path)} changed while it was read; nothing was cached, "
                                "run it again")


def _shown(path: str) -> str:
    """A path as a user finds it: relative to the working directory when it lies below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
