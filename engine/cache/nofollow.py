"""Files under a local folder read and written without following any symlink, race-free.

Whoever else can write to a shared directory remote can swap a folder or file for a symlink (or
a FIFO) between a check of a name and its transfer; fsspec would follow it, so a push wrote
outside the remote and a pull read from outside it. Here each name is walked from one open
descriptor of the root, component by component, every open with O_NOFOLLOW: what a component
is when it is opened is what is used, so no check can go stale before the use."""
from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from .names import shown

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO opens at once (with no writer it would block); O_NOCTTY: a terminal never becomes ours
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(Exception):
    """A name that passes a symlink, or that is no regular file: nothing goes through it."""


def open_root(root: str, create: bool) -> int:
    """A descriptor of the remote's root (which the user named: a symlink in it is theirs)."""
    if create:
        os.makedirs(root, exist_ok=True)
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def write(root: int, rel: str, source: Path) -> None:
    """Copy `source` to root/rel, making missing folders: into a temporary name in the final folder,
    then renamed over rel (a rename replaces a symlink there, never writes through it)."""
    *folders, name = rel.split("/")
    fd = _folder(root, folders, create=True)
    try:
        _refuse_link(fd, name, rel, "written")  # the clear refusal; the rename is the guarantee
        temp = f".push-{os.urandom(8).hex()}"  # short: rel's own name may be NAME_MAX long already
        out = os.open(temp, _WRITE, 0o666, dir_fd=fd)
        try:
            with os.fdopen(out, "wb") as dst, open(source, "rb") as src:  # dst first: it closes `out` either way
                shutil.copyfileobj(src, dst)
            try:
                os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except IsADirectoryError:  # a folder planted where the file goes: that entry is refused, not the push
                raise Refused(f"{shown(rel)} is a folder there: nothing is written over it") from None
        except BaseException:
            try:
                os.unlink(temp, dir_fd=fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def read(root: int, rel: str, local: Path) -> None:
    """Copy root/rel to `local`, when rel is a regular file reached through no symlink."""
    *folders, name = rel.split("/")
    fd = _folder(root, folders, create=False)
    try:
        src = _open(fd, name, _READ, rel, "read")
    finally:
        os.close(fd)
    with os.fdopen(src, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a FIFO or a device swapped in
            raise Refused(f"{shown(rel)} is no regular file there: nothing is read from it")
        with open(local, "wb") as out:
            shutil.copyfileobj(f, out)


def _folder(root: int, folders: list[str], create: bool) -> int:
    """A descriptor of root/folders, each opened from its parent's descriptor, never through a symlink."""
    fd = os.dup(root)
    try:
        for depth, part in enumerate(folders, 1):
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)  # on a symlink: EEXIST, and the open below refuses it
                except FileExistsError:
                    pass
            child = _open(fd, part, _FOLDER, "/".join(folders[:depth]), "written" if create else "read")
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open(parent: int, name: str, flags: int, rel: str, done: str) -> int:
    try:
        return os.open(name, flags, dir_fd=parent)
    except OSError as e:  # O_NOFOLLOW on a symlink: ELOOP, or ENOTDIR with O_DIRECTORY
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            _refuse_link(parent, name, rel, done)
        if e.errno == errno.ENOTDIR:  # a file planted where a folder goes: that entry is refused, not all
            raise Refused(f"{shown(rel)} is no folder there: nothing is {done} through it") from None
        raise


def _refuse_link(parent: int, name: str, rel: str, done: str) -> None:
    """Refused when `name` in the folder `parent` is a symlink (an open with O_NOFOLLOW failed on it)."""
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return
    if is_link:
        raise Refused(f"{shown(rel)} is a symlink there: nothing is {done} through it")
