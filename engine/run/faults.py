"""Faults of the machine, said in one line: a full disk, a read-only cache.

A step that runs out of space says where and what it was writing ("no space left on /mnt/cache
while writing load's data"), not the OSError of whatever failed last.
"""
from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

_FULL = ("No space left on device", "Disk quota exceeded", "database or disk is full")


def no_space(e: BaseException | str) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(s in str(e) for s in _FULL)


def read_only(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno == errno.EROFS


def device(path: Path) -> str:
    """The mount point that holds `path` (the disk a user frees space on)."""
    path = Path(path).absolute()
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            points = [line.split()[1] for line in f if len(line.split()) > 2]
    except OSError:
        return str(path)
    text = str(path) + "/"
    return max((p for p in points if text.startswith(p.rstrip("/") + "/")), key=len, default=str(path))


def written_output(staging: Path, e: BaseException, names: list[str]) -> str:
    """Which output a step was writing when it ran out of space: the one the error names, else
    the one changed last, else its only one."""
    outputs = staging / "outputs"
    filename = getattr(e, "filename", None)
    if filename and str(filename).startswith(str(outputs) + "/"):
        return Path(filename).relative_to(outputs).parts[0]
    present = [n for n in names if (outputs / n).exists()]
    if present:
        return max(present, key=lambda n: (outputs / n).stat().st_mtime_ns)
    return names[0] if len(names) == 1 else "outputs"


def fault_line(e: BaseException, where: Path) -> str | None:
    """The one line for a machine fault met while writing under `where`; None for other errors."""
    if no_space(e):
        return f"no space left on {device(where)}"
    if read_only(e):
        return f"{where} is read-only"
    return None


def failed_log(root: Path, key: str, label: str) -> Path:
    """Where the log of a failed attempt is kept: per step instance, as two foreach instances
    whose configs do not use `item` share a key (and would overwrite one log)."""
    tag = hashlib.blake2b(label.encode(), digest_size=4).hexdigest()
    return root / "failed" / f"{key}-{tag}.log"


def keep_log(root: Path, folder: Path, key: str, label: str) -> Path | None:
    """A failed attempt's log, moved out of `folder` (its staging folder or unfinished entry) to
    `failed_log`, where the user can read it: moved, not copied (the disk may be full)."""
    failed = failed_log(root, key, label)
    try:
        failed.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / "log.txt", failed)
    except OSError:
        return None
    return failed


def commit_fault(e: BaseException, root: Path, key: str | None, label: str) -> str | None:
    """A full disk or a read-only cache met while committing `key`: one line, and the step's log
    moved out of its unfinished entry. None for other errors."""
    fault = fault_line(e, root)
    if fault is None or not key:
        return None
    log = keep_log(root, root / key[:2] / key, key, label)
    return f"{fault} while writing {label}'s entry" + (f"; log: {log}" if log else "")
