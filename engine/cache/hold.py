"""The cache-wide gc lock: what a live driver holds, and what `recipe gc` may take.

Every driver (a run, the no-op fast path, reproduce, push, pull, verify --recompute) holds the
cache shared while it works (`CacheHold`); `recipe gc` (`GcLock`) takes it exclusively when no
driver is live, and otherwise removes only entries no live run can be using.

With byte locks (Linux open file description locks, see store.KeyLock) it is two bytes of
`locks/keys.lock` past the keys' bytes: LIVE, which every driver read-locks, and NOOP, which
the no-op fast path read-locks too (one call for both). A run also read-locks, until it ends,
a second byte per key it reuses or commits (HOLD + the key's byte; the key's own byte is its
compute lock, so computing never waits for a reader). gc write-locks LIVE without waiting:
when that fails, it waits for NOOP (no-op runs take a second or two at most) and removes an
entry only after write-locking both of its key's bytes without waiting. Without byte locks it is a flock on `locks/gc.lock`; on lease caches (NFS) a lease per
live driver in `locks/live/`, and `locks/gc.lease` while gc runs. There, gc removes no entry
while a driver is live.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import os
import struct
import sys
import time
from pathlib import Path

_FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid (0 for OFD locks)


def key_offset(key: str) -> int:
    """The byte of `locks/keys.lock` that is the key's lock; two keys share one once in 2**56,
    and would then take turns."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=7).digest(), "big")


@functools.cache
def byte_locks() -> bool:
    import fcntl

    return sys.platform == "linux" and hasattr(fcntl, "F_OFD_SETLKW") and struct.calcsize(_FLOCK) == 32


NETWORK_FS = {"nfs", "nfs4", "gpfs", "lustre", "beegfs", "cifs", "smb3", "ceph", "fuse.sshfs", "9p"}


def lock_kind(root: Path) -> str:
    """"lease" where the cache root is on a network filesystem, else "flock"."""
    chosen = os.environ.get("RECIPE_LOCK", "").strip().lower()
    if chosen in ("lease", "flock"):
        return chosen
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "flock"
    path = str(root.resolve() if root.exists() else root)
    best = max((m for m in mounts if len(m) > 2 and (path + "/").startswith(m[1].rstrip("/") + "/")),
               key=lambda m: len(m[1]), default=None)
    return "lease" if best and best[2] in NETWORK_FS else "flock"


LIVE = 1 << 56  # key bytes are below 2**56
NOOP = LIVE + 1
HOLD = 1 << 57  # HOLD + a key's byte: held by the runs that use the key


def _lock(fd: int, kind: int, start: int, length: int = 1, wait: bool = True) -> bool:
    import fcntl

    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK,
                    struct.pack(_FLOCK, kind, os.SEEK_SET, start, length, 0))
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _open(path: Path) -> int | None:
    """The lock file for reading and writing; on a read-only cache for reading (read locks
    still work), or None where it cannot exist: nobody can gc a read-only cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            return None


def _kind(root: Path) -> str:
    kind = lock_kind(root)
    return "lease" if kind == "lease" else "bytes" if byte_locks() else "flock"


class CacheHold:
    """A driver's shared hold on the cache, from `open()` to `close()` (or process exit)."""

    def __init__(self, root: Path, noop: bool = False):
        self.root, self.noop = Path(root), noop
        self.kind = _kind(self.root)
        self._fd: int | None = None
        self._lease = None

    def open(self) -> "CacheHold":
        locks = self.root / "locks"
        if self.kind == "lease":
            self._lease = _live_lease(locks)
            return self
        self._fd = _open(locks / ("keys.lock" if self.kind == "bytes" else "gc.lock"))
        if self._fd is not None:
            if self.kind == "bytes":
                import fcntl

                _lock(self._fd, fcntl.F_RDLCK, LIVE, 2 if self.noop else 1)
            else:
                import fcntl

                fcntl.flock(self._fd, fcntl.LOCK_SH)
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases every lock taken through it
            self._fd = None
        if self._lease is not None:
            self._lease.__exit__(None, None, None)
            self._lease = None

    def __enter__(self) -> "CacheHold":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def keep(self, key: str) -> None:
        """Keep a key this run reuses or committed from gc until the run ends. Waits while a gc
        is removing it: look for the entry afterwards."""
        if self.kind == "bytes" and self._fd is not None:
            import fcntl

            _lock(self._fd, fcntl.F_RDLCK, HOLD + key_offset(key))


def _live_lease(locks: Path):
    """Register a live driver on a lease cache, then wait while a gc holds `gc.lease`."""
    import uuid

    from .lease import Lease, stale

    lease = Lease(locks / "live" / f"{uuid.uuid4().hex}.lease").__enter__()
    while (locks / "gc.lease").exists() and not stale(locks / "gc.lease"):
        time.sleep(0.2)
    return lease


class GcLock:
    """gc's side. `exclusive`: no driver is live. Otherwise `take(key)` says whether an entry
    may be removed now, and keeps it from being reused until `release()`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.kind = _kind(self.root)
        self.exclusive = False
        self._fd: int | None = None
        self._lease = None

    def __enter__(self) -> "GcLock":
        import fcntl

        locks = self.root / "locks"
        if self.kind == "lease":
            self._enter_lease(locks)
            return self
        self._fd = _open(locks / ("keys.lock" if self.kind == "bytes" else "gc.lock"))
        if self._fd is None:
            return self
        if self.kind == "bytes":
            self.exclusive = _lock(self._fd, fcntl.F_WRLCK, LIVE, 2, wait=False)
            if not self.exclusive:
                _lock(self._fd, fcntl.F_WRLCK, NOOP)  # no-op runs in flight finish first
        else:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.exclusive = True
            except BlockingIOError:
                pass
        return self

    def _enter_lease(self, locks: Path) -> None:
        from .lease import Lease, stale

        self._lease = Lease(locks / "gc.lease").__enter__()  # before looking: a driver starting now waits
        live = []
        for path in (locks / "live").glob("*.lease"):
            if stale(path):
                path.unlink(missing_ok=True)  # a driver that died
            else:
                live.append(path)
        self.exclusive = not live
        if live:
            self.release()

    def take(self, key: str) -> bool:
        if self.exclusive:
            return True
        if self.kind != "bytes" or self._fd is None:
            return False
        import fcntl

        offset = key_offset(key)  # used by no live run, and not being computed; until release()
        return (_lock(self._fd, fcntl.F_WRLCK, HOLD + offset, wait=False)
                and _lock(self._fd, fcntl.F_WRLCK, offset, wait=False))

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lease is not None:
            self._lease.__exit__(None, None, None)
            self._lease = None

    def __exit__(self, *exc) -> None:
        self.release()
