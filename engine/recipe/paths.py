"""Where a relative path written in a recipe is read from: one rule for data files
(`data.from_file`'s `path`, `data.load`'s `path`, ...) and for `recipe("other.yaml")`.

A relative path is looked up next to the recipe file that declares it, then in each folder
above that one (so `recipes/x.yaml` may name `tests/data/y.jsonl` from the project root); the
first folder where it exists (a glob: matches something) wins. The working directory is still
searched last, for one release, with a warning: a recipe must not mean other files depending
on where `recipe` runs. Keys hash the path as written plus the file's content, so where it is
found never changes a key.
"""
from __future__ import annotations

import glob
import os
from contextvars import ContextVar
from pathlib import Path

# while a recipe is planned: (path, recipe folder) pairs found only in the working directory
_FROM_CWD: ContextVar[list | None] = ContextVar("paths_from_cwd", default=None)


def _exists(path: Path, pattern: bool) -> bool:
    return bool(glob.glob(str(path), recursive=True)) if pattern else path.exists()


def locate(path: str, recipe_dir: str | Path | None) -> tuple[Path | None, str]:
    """(the folder `path` was found from, the path to open). An absolute path, one with `~`, or
    one with no recipe folder to start from is returned as it is (folder None); one found
    nowhere is returned next to the recipe, so an error names where it was looked for."""
    if not path or recipe_dir is None or os.path.isabs(os.path.expanduser(path)) or path.startswith("~"):
        return None, path
    pattern = any(c in path for c in "*?[")
    start = Path(recipe_dir)
    for folder in (start, *start.parents):
        if _exists(folder / path, pattern):
            return folder, str(folder / path)
    cwd = Path.cwd()
    if _exists(cwd / path, pattern):
        found = _FROM_CWD.get()
        if found is not None and (path, str(start)) not in found:
            found.append((path, str(start)))
        return cwd, str(cwd / path)
    return start, str(start / path)


def collecting() -> tuple[list, object]:
    """Start noting paths found only in the working directory: (the list, a token for `done`)."""
    found: list = []
    return found, _FROM_CWD.set(found)


def done(token) -> None:
    _FROM_CWD.reset(token)


def cwd_warning(path: str, recipe_dir: str) -> str:
    """One line for a path read from the working directory under the deprecated rule."""
    better = os.path.relpath(Path.cwd() / path, recipe_dir)
    return (f"{path} was found only in the working directory; relative paths are read from the recipe's "
            f"folder ({recipe_dir}) and the folders above it, and the working directory will not be "
            f"searched in the next release: write {better!r} (or an absolute path)")
