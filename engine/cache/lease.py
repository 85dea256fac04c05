"""A lease file: the per-key lock where flock does not hold across nodes (NFS, GPFS, Lustre).

The holder creates `<key>.lease` with O_EXCL and writes its host, pid, a token and an expiry,
then renews the expiry from a background thread. Another driver waits while the lease is
live; a lease past its expiry, or held by a process of this host that no longer exists, is
stale: it is broken by renaming it aside (only one breaker's rename succeeds) and the key is
taken with a new O_EXCL create.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

TTL = 60.0  # seconds a lease lives without renewal; a dead holder blocks others this long at most


class Lease:
    def __init__(self, path: str | Path, ttl: float = TTL, poll: float = 0.2):
        self.path = Path(path)
        self.ttl, self.poll = ttl, poll
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> str:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                           "expires": time.time() + self.ttl})

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._record())
            f.flush()
            os.fsync(f.fileno())
        return True

    def __enter__(self) -> "Lease":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not self._try_create():
            if stale(self.path, self.ttl):
                _break(self.path)
                continue
            time.sleep(self.poll)
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if read_lease(self.path).get("token") != self.token:
                return  # broken by someone who judged it stale: do not take it back
            tmp = self.path.with_name(f"{self.path.name}.{self.token}.tmp")
            tmp.write_text(self._record())
            os.replace(tmp, self.path)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._renewer:
            self._renewer.join()
        if read_lease(self.path).get("token") == self.token:
            self.path.unlink(missing_ok=True)


def read_lease(path: Path) -> dict:
    """The lease's record; {} when it is gone or not one (being written this very moment, left
    empty by a holder that died between create and write, or written by something else)."""
    try:
        lease = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return lease if isinstance(lease, dict) else {}


def stale(path: Path, ttl: float = TTL) -> bool:
    lease = read_lease(path)
    if not lease:  # being written now, or never will be: stale once older than a lease lives
        try:
            return time.time() - path.stat().st_mtime > ttl
        except FileNotFoundError:
            return False  # let the next create attempt decide
    expires = lease.get("expires", 0)
    if not isinstance(expires, (int, float)) or expires < time.time():
        return True
    if lease.get("host") == socket.gethostname():
        try:
            os.kill(int(lease["pid"]), 0)
        except ProcessLookupError:
            return True  # its holder on this machine died
        except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
            return False
    return False


def _break(path: Path) -> None:
    try:
        os.rename(path, path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}"))
    except FileNotFoundError:
        return
    for old in path.parent.glob(f"{path.name}.stale-*"):
        old.unlink(missing_ok=True)
