"""Reuse only what verifies: the cheap check an entry passes before it is served.

Every recorded output must exist with its recorded size, and its tree digest, computed through
the stat cache, must equal the recorded one. Files whose (size, mtime, inode) the stat cache
knows are not read; a file whose stat changed is digested again. The runner seeds the stat
cache with the files of each entry it commits (`remember_outputs`), so an intact entry costs a
walk and a stat per file. A damaged entry is moved to `quarantine/` and recomputed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .digest import StatCache, combine, tree_files


def damage(root: Path, key: str, outputs: dict[str, dict[str, Any]], stats: StatCache) -> str | None:
    """What is wrong with an entry's outputs, in a few words; None when they are intact."""
    for name, recorded in outputs.items():
        path = root / key[:2] / key / "outputs" / name
        try:
            problem = _output_damage(path, recorded, stats)
        except OSError as e:  # removed or unreadable while being checked
            problem = f"cannot be read ({e.strerror})"
        if problem:
            return f"output {name} {problem}"
    return None


def _output_damage(path: Path, recorded: dict[str, Any], stats: StatCache) -> str | None:
    if not os.path.lexists(path):
        return "is missing"
    files = tree_files(path)
    sts = [os.stat(f) for f in files]
    size = sum(st.st_size for st in sts)
    if recorded.get("size") is not None and size != recorded["size"]:
        return f"has {size} bytes, {recorded['size']} recorded"
    if combine(path, [(f, stats.digest_at(str(f), st)) for f, st in zip(files, sts)]) != recorded.get("digest"):
        return "does not match its recorded digest"
    return None


def remember_outputs(root: Path, key: str, files: dict[str, dict[str, list]], stats: StatCache) -> None:
    """Seed the stat cache with a committed entry's files ({output: {relative path: [size,
    mtime_ns, inode, digest]}}, as the step's process digested them); a file whose stat has
    changed since is left out, and will be digested when the entry is next checked."""
    for name, manifest in files.items():
        base = root / key[:2] / key / "outputs" / name
        for rel, (*st_stamp, digest) in manifest.items():
            path = str(base if rel == "." else base / rel)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if [st.st_size, st.st_mtime_ns, st.st_ino] == st_stamp:
                stats.remember(path, tuple(st_stamp), digest)
