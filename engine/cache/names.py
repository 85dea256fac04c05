"""Names that come from outside (a remote's listing, an entry.json, a run record) are checked
here before any of them becomes a path, so pull, verify, the store and the artifact links
apply one rule: a name is a relative POSIX path that stays inside its folder, and what is
written through it never passes a symlink.

The rule is lexical and strict (as git's for tree entries): no `..` or `.` component, no
empty component (`a//b`, a trailing `/`), not absolute, no backslash, no control character
(NUL included). Strict on purpose: the engine never writes such a name itself.
"""
from __future__ import annotations

import os
import re

KEY = re.compile(r"[0-9a-f]{64}")  # a step key: blake3 hex (keys.py)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 4096
MAX_COMPONENT = 255  # bytes: NAME_MAX of Linux filesystems; a longer one fails the whole download


def is_key(value: object) -> bool:
    return isinstance(value, str) and KEY.fullmatch(value) is not None


def path_problem(name: object) -> str | None:
    """Why `name` is not a relative POSIX path that stays inside its folder; None when it is."""
    if not isinstance(name, str):
        return "is not a string"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if "\\" in name:
        return "has a backslash"
    if CONTROL.search(name):
        return "has a control character"
    if name.startswith("/"):
        return "is absolute"
    parts = name.split("/")
    if "" in parts:
        return "has an empty component"
    if ".." in parts:
        return "has a '..' component"
    if "." in parts:
        return "has a '.' component"
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_COMPONENT for p in parts):
        return f"has a component longer than {MAX_COMPONENT} bytes"
    return None


def component_problem(name: object) -> str | None:
    """Why `name` is not one plain path component (a file or folder name); None when it is."""
    why = path_problem(name)
    if why is None and "/" in name:  # type: ignore[operator]  # a str once path_problem passed
        return "has a '/'"
    return why


def shown(name: object, limit: int = 120) -> str:
    """A name fit for one line of output: quoted, control characters escaped, cut short."""
    text = repr(name)
    return text if len(text) <= limit else text[:limit] + "...'"


# all but tab and newline; C1 too (\x9b is CSI); the bidi controls, which make text read as other text;
# and lone surrogates, which no terminal encoding takes
TERMINAL_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """Text from a record or a remote, fit for a terminal: a control character (ESC starts the
    sequences that recolour, retitle or write the clipboard) is shown as its escape, `\\x1b`."""
    return TERMINAL_CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def symlink_in(base: str, rel: str) -> str | None:
    """The first component of base/rel (below base) that is a symlink, or None. Stops at the
    first missing component: what does not exist yet is created as a plain folder or file."""
    path = base
    for part in rel.split("/"):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return path
        if not os.path.exists(path):
            return None
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def symlink_problem(folder: str | os.PathLike) -> str | None:
    """A symlink in `folder` that leaves it, or that points to a folder holding the link (a loop
    that would make a digest walk forever); None when there is none."""
    root = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(folder):  # does not follow links
        here = os.path.realpath(dirpath)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            target, rel = os.path.realpath(path), os.path.relpath(path, folder)
            if not _within(target, root):
                return f"{shown(rel)} is a symlink to outside the entry"
            if _within(here, target):
                return f"{shown(rel)} is a symlink to a folder that holds it"
    return None
