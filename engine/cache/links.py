"""Readable names for cached outputs: artifacts/<recipe>/<step>/<output> -> the entry's output.

A step instance's folder is its label with the brackets made dots (`export[algebra]` ->
`export.algebra`, `quickstart[tiny]/pretrain` -> `quickstart.tiny/pretrain`): tools that read
paths as glob patterns (`datasets`' data_files, fsspec) take `[algebra]` for a character class
and find nothing. Until the next release the old bracketed names stay, as links to the new folders.

A no-op run of 10,000 instances checks 10,000 links, so the check is one readlink per link,
and a link is written only where it is missing or points elsewhere.

The recipe name, step label and output name come from records (a pulled entry's output names
among them), so before anything is written, replaced or removed, the link's path must be a
plain relative name (names.py) whose folders under the artifacts dir are not symlinks: links
only ever change paths inside the artifacts dir.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable

from engine.recipe.errors import CacheError

from .names import path_problem, shown, symlink_in


def link_outputs(base: str | Path, cache_root: Path, nodes: Iterable[tuple[str, str, str, Iterable[str]]]) -> int:
    """`nodes`: (recipe name, label, key, output names). Returns the number of links written.

    A label "other/step" (a step of another recipe) is linked under artifacts/other/step."""
    base = os.path.abspath(base)
    root = str(cache_root)
    written = 0
    for recipe, label, key, names in nodes:
        owner, _, step = label.rpartition("/")
        top, leaf = folder_name(owner or recipe), folder_name(step)
        changed = sum(_link(base, f"{top}/{leaf}/{name}", os.path.join(root, key[:2], key, "outputs", name),
                            (recipe, label, name)) for name in names)
        # the old bracketed names, as links to the new folders (kept for one release); checked only
        # where an output link changed, so a no-op run still costs one readlink per output
        if changed and leaf != step:
            changed += _link(base, f"{top}/{step}", leaf, (recipe, label, "(old name)"))
        if changed and owner and top != owner:
            changed += _link(base, owner, top, (recipe, label, "(old name)"))
        written += changed
    return written


def folder_name(label: str) -> str:
    """A label as an artifacts folder name: `export[algebra]` -> `export.algebra`."""
    return label.replace("[", ".").replace("]", "")


def _link(base: str, rel: str, target: str, named: tuple[str, str, str]) -> int:
    """Make base/rel a symlink to `target` (an output in the cache, or for an old name the new
    folder beside it, which its output links were checked under) unless it is one already; 1 when
    written."""
    link = os.path.join(base, rel)
    try:
        if os.readlink(link) == target:
            return 0
    except OSError:
        pass  # missing, or not a link
    _check(base, rel, named)
    _replace(link, target)
    return 1


def _check(base: str, rel: str, named: tuple[str, str, str]) -> None:
    """Refuse a link that would change anything outside the artifacts dir."""
    why = path_problem(rel)
    if why is None and (through := symlink_in(base, rel.rpartition("/")[0])):
        why = f"passes through the symlink {shown(through)}"
    if why:
        recipe, label, name = (shown(n) for n in named)
        raise CacheError(f"artifact link {shown(rel)} (recipe {recipe}, step {label}, output {name}) {why}: "
                         f"not linked under {base}")


def _replace(link: str, target: str) -> None:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) or os.path.isfile(link):
        os.unlink(link)
    elif os.path.isdir(link):
        shutil.rmtree(link)
    os.symlink(target, link, target_is_directory=True)
