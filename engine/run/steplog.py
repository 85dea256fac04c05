"""A step's log.txt, bounded: the first LOG_HEAD and the last LOG_TAIL bytes of what the step
wrote are kept, with one line between them saying how many bytes were cut.

A step may print gigabytes (a loss line per batch, a library's debug output), and its log goes
into its cache entry, which is pushed, pulled and copied into report bundles. The head keeps how
the step started (its config, the libraries' first warnings), the tail how it ended (what a
failure shows); 4 MiB is some 50,000 lines, more than anyone reads. The log is cut as it is
written, so the disk holds at most LOG_HEAD + 2 * LOG_TAIL of it, and it is never read whole
into memory: a cut moves the tail in pieces of _PIECE bytes.

Text arrives scrubbed of secrets (by the capture and the step logger's redactor); a cut only
removes bytes, at a line's start where one is near, and puts the count on a line of its own.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

LOG_HEAD, LOG_TAIL = 1 << 20, 3 << 20
_PIECE = 1 << 20  # bytes moved at once, and how far a cut looks for a line's start (at most)
_MARKER_ROOM = 64  # more than the line a cut writes: a cut writes it over bytes cut, never over the tail


class StepLog:
    """The one writer of a step's log file (the step's logger and its captured output share it)."""

    def __init__(self, path: Path, head: int = LOG_HEAD, tail: int = LOG_TAIL):
        assert tail >= _MARKER_ROOM, tail
        self.path, self.head, self.tail = Path(path), head, tail
        # unbuffered (each write is on disk for a tail or a crash to show); appends land at the end, after a cut too
        self._file: IO[bytes] = open(self.path, "ab", buffering=0)
        self.size = self._file.tell()
        self._head_end: int | None = None  # where the cut starts, once there is one
        self._marker = b""  # the line counting the bytes cut, at _head_end
        self._cut = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        data = text.encode("utf-8", errors="replace")  # a lone surrogate is no reason to lose a line
        with self._lock:
            if self._file.closed:  # a step's thread that outlived it (a relay of a command left running)
                return len(text)
            self._file.write(data)
            self.size += len(data)
            if self.size > self.head + len(self._marker) + 2 * self.tail:
                self._cut_middle()
        return len(text)

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        """Cut to at most LOG_HEAD + LOG_TAIL bytes and the line between them (or a few bytes more, uncut)."""
        with self._lock:
            if self._file.closed:
                return
            try:
                if self.size > self.head + self.tail + _MARKER_ROOM:
                    self._cut_middle()
            except OSError:  # the log stays as it is (at most LOG_HEAD + 2 * LOG_TAIL): the step's own error matters
                pass
            finally:
                self._file.close()

    def _cut_middle(self) -> None:
        with open(self.path, "r+b") as f:
            if self._head_end is None:
                self._head_end = _line_end(f, self.head)
            body = self._head_end + len(self._marker)  # what follows the head (and the marker)
            start = _line_start(f, self.size - self.tail)
            self._cut += start - body
            newline = b"" if self._head_end == 0 or _byte_at(f, self._head_end - 1) == b"\n" else b"\n"
            self._marker = newline + f"[... {self._cut:,} bytes cut ...]\n".encode()
            f.seek(self._head_end)
            f.write(self._marker)
            end = _move(f, start, self.size, self._head_end + len(self._marker))
            f.truncate(end)
            self.size = end


def _byte_at(f: IO[bytes], at: int) -> bytes:
    f.seek(at)
    return f.read(1)


def _line_end(f: IO[bytes], at: int) -> int:
    """Just after the last newline in the _PIECE bytes before `at`; `at` itself when there is none."""
    low = max(0, at - _PIECE)
    f.seek(low)
    cut = f.read(at - low).rfind(b"\n")
    return low + cut + 1 if cut >= 0 else _char_start(f, at, -1)


def _line_start(f: IO[bytes], at: int) -> int:
    """Just after the first newline in the _PIECE bytes from `at`; `at` itself when there is none."""
    f.seek(at)
    cut = f.read(_PIECE).find(b"\n")
    return at + cut + 1 if cut >= 0 else _char_start(f, at, 1)


def _char_start(f: IO[bytes], at: int, step: int) -> int:
    """`at`, moved by `step` (1 or -1) off UTF-8 continuation bytes: a cut never halves a character."""
    for _ in range(3):
        byte = _byte_at(f, at)
        if not byte or byte[0] & 0xC0 != 0x80 or at + step < 0:
            break
        at += step
    return at


def _move(f: IO[bytes], start: int, end: int, to: int) -> int:
    """Bytes [start, end) copied down to `to` (< start) in pieces; returns where they end."""
    while start < end:
        f.seek(start)
        piece = f.read(min(_PIECE, end - start))
        f.seek(to)
        f.write(piece)
        start, to = start + len(piece), to + len(piece)
    return to
