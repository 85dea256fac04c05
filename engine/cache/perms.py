"""Team-safe files: entries are created with the process umask, and a `shared` cache is
group-writable, like git's `core.sharedRepository=group`.

`recipe config shared group` writes `shared = group` to `<cache>/config`. Every process that
opens such a cache then clears group read and write from its umask (files 0664, folders 0775
under umask 022), so the stat cache, the key locks and the index stay writable by the team, and
folders get the setgid bit, so everything keeps the cache folder's group.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

CONFIG = "config"
_applied: dict[str, bool] = {}  # cache root -> shared, once per process


def umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # the portable way to read it: set it and put it back
    os.umask(mask)
    return mask


def read_config(root: Path) -> dict[str, str]:
    try:
        text = (Path(root) / CONFIG).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def apply(root: Path) -> bool:
    """Once per process and cache: a shared cache's umask. True when the cache is shared."""
    key = str(root)
    if key not in _applied:
        _applied[key] = read_config(root).get("shared") == "group"
        if _applied[key]:
            os.umask(umask() & ~0o060)
    return _applied[key]


def fix_modes(folder: Path, shared: bool) -> None:
    """Give a staged entry the modes the umask asks for: staging folders are made owner-only
    (mkdtemp) and some libraries write 0600 files. Files linked from elsewhere (more than one
    link: a user's data file) and symlinks keep theirs."""
    mask = umask()
    dir_mode = (0o777 & ~mask) | (stat.S_ISGID if shared else 0)
    for dirpath, dirnames, filenames in os.walk(folder):
        _chmod(dirpath, dir_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                _chmod(path, (0o777 if st.st_mode & stat.S_IXUSR else 0o666) & ~mask, st=st)


def _chmod(path: str, mode: int, st: os.stat_result | None = None) -> None:
    if stat.S_IMODE((st or os.lstat(path)).st_mode) != mode:
        os.chmod(path, mode)


def set_shared(root: Path, value: str) -> int:
    """Write the setting, and with `group` make what the cache holds already group-writable
    (folders setgid). Returns the number of paths changed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    config = {**read_config(root), "shared": value}
    (root / CONFIG).write_text("".join(f"{k} = {v}\n" for k, v in config.items()), encoding="utf-8")
    if value != "group":
        return 0
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for path, extra in [(dirpath, stat.S_ISGID | 0o070)] + [(os.path.join(dirpath, f), 0o060) for f in filenames]:
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and (st.st_mode & extra) != extra:
                os.chmod(path, stat.S_IMODE(st.st_mode) | extra)
                changed += 1
    return changed
