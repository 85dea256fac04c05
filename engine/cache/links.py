"""Readable names for cached outputs: artifacts/<recipe>/<step>/<output> -> the entry's output.

A no-op run of 10,000 instances checks 10,000 links, so the check is one readlink per link,
and a link is written only where it is missing or points elsewhere.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable


def link_outputs(base: str | Path, cache_root: Path, nodes: Iterable[tuple[str, str, str, Iterable[str]]]) -> int:
    """`nodes`: (recipe name, label, key, output names). Returns the number of links written.

    A label "other/step" (a step of another recipe) is linked under artifacts/other/step."""
    base = os.path.abspath(base)
    root = str(cache_root)
    written = 0
    for recipe, label, key, names in nodes:
        owner, _, step = label.rpartition("/")
        folder = os.path.join(base, owner or recipe, step)
        for name in names:
            target = os.path.join(root, key[:2], key, "outputs", name)
            link = os.path.join(folder, name)
            try:
                if os.readlink(link) == target:
                    continue
            except OSError:
                pass  # missing, or not a link
            _replace(link, target)
            written += 1
    return written


def _replace(link: str, target: str) -> None:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.islink(link) or os.path.isfile(link):
        os.unlink(link)
    elif os.path.isdir(link):
        shutil.rmtree(link)
    os.symlink(target, link, target_is_directory=True)
