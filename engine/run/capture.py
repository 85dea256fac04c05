"""Step output goes to the step's log.txt, not to the terminal.

While a step runs, what libraries print (tqdm and `datasets` progress bars, trl's loss dicts,
`print`), their `logging` records and Python warnings are written to that step's log. The
engine's own lines and bars are drawn by rich, which writes to the real stream (rich unwraps
`rich_proxied_file`), so they are never captured.

Several steps may run at once in threads (`-j N`), so output is routed by thread: a write
from a thread running a step goes to that step's log. A thread the step started itself (a
pool of HTTP workers) has no step of its own; its writes go to the step when only one step
is running, else to the terminal. `-v` (`set_verbose(True)`) also copies step output to the
terminal as it is written, each line after the step's label (`-j N` output interleaves).
File descriptors are left alone: fd-level redirection is process-wide and cannot tell two
concurrent steps apart. So a subprocess a step starts runs
through `run_logged` (`ctx.run_process`): its stdout and stderr come back through a pipe and
are written to the log of the step that started it, scrubbed, like the step's own output.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .steplog import StepLog

_lock = threading.RLock()
_sinks: dict[int, _Sink] = {}  # thread id -> the log of the step it runs
_installed: dict[str, object] = {}  # what install() replaced, restored when the last step ends
_verbose = os.environ.get("RECIPE_VERBOSE") == "1"  # a worker process of a `-v` run


def set_verbose(on: bool) -> None:
    """`recipe run -v`: step output is also streamed to the terminal, live. Also set in the
    environment, so step processes started afterwards (Ray workers) stream theirs."""
    global _verbose
    _verbose = on
    if on:
        os.environ["RECIPE_VERBOSE"] = "1"
    else:
        os.environ.pop("RECIPE_VERBOSE", None)


class _Sink:
    def __init__(self, logger: logging.Logger, log: StepLog, scrub: Callable[[str], str], label: str = ""):
        self.logger, self.log, self.scrub = logger, log, scrub
        self.prefix = f"{label} | " if label else ""
        self._partial: dict[int, tuple[IO[str], str]] = {}  # -v: a terminal's unfinished line

    def echo(self, text: str, terminal: IO[str]) -> None:
        """`-v`: `text` on the terminal, each line (a `\r` redraw too) after the step's label."""
        text = self._partial.pop(id(terminal), (terminal, ""))[1] + text
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith(("\n", "\r")):
            self._partial[id(terminal)] = (terminal, lines.pop())
        if lines:
            terminal.write("".join(self.prefix + line for line in lines))

    def close(self) -> None:
        for terminal, rest in self._partial.values():  # a last line without its newline
            terminal.write(self.prefix + rest + "\n")


def _current() -> _Sink | None:
    sink = _sinks.get(threading.get_ident())
    # a helper thread of the only running step; never the main thread, which runs the CLI
    # (its Ctrl-C line went to the step's log, then deleted with the step's staging folder)
    if sink is None and len(_sinks) == 1 and threading.current_thread() is not threading.main_thread():
        sink = next(iter(_sinks.values()), None)
    return sink


class _Router:
    """Stands in for sys.stdout / sys.stderr: step threads write to their log."""

    def __init__(self, original: IO[str]):
        self.original = original

    @property
    def rich_proxied_file(self) -> IO[str]:
        # rich consoles write to this instead of us: the engine's display is never captured
        return getattr(self.original, "rich_proxied_file", self.original)

    def write(self, text: str) -> int:
        sink = _current()
        if sink is None:
            return self.original.write(text)
        return _to_log(sink, text, self.original)

    def flush(self) -> None:
        self.original.flush()

    def isatty(self) -> bool:
        return False  # libraries draw plain lines, not terminal bars, into a log file

    def __getattr__(self, name: str):
        return getattr(self.original, name)


def _to_log(sink: _Sink, text: str, terminal: IO[str]) -> int:
    text = sink.scrub(text)  # a library may print a URL or header holding a secret
    with _lock:
        sink.log.write(text)  # unbuffered: on disk now
        if _verbose:
            sink.echo(text, terminal)
    return len(text)


class _RouteRecords(logging.Handler):
    """On the root logger: library records (that propagate) go to the step's log."""

    def emit(self, record: logging.LogRecord) -> None:
        sink = _current()
        if sink is not None:
            sink.logger.handle(record)
        elif record.levelno >= logging.WARNING and logging.getLogger().handlers == [self]:
            logging.lastResort.handle(record)  # what logging does when nothing else handles it


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sink = _current()
    if sink is None or file is not None:
        return _installed["showwarning"](message, category, filename, lineno, file, line)
    text = sink.scrub(warnings.formatwarning(message, category, filename, lineno, line).rstrip())
    sink.logger.warning("%s", text)
    if _verbose:
        with _lock:
            sink.echo(text + "\n", _installed["stderr"])


def _install() -> None:
    out, err = sys.stdout, sys.stderr
    _installed.update(stdout=out, stderr=err, showwarning=warnings.showwarning, handler=_RouteRecords())
    sys.stdout, sys.stderr = _Router(out), _Router(err)
    warnings.showwarning = _show_warning
    logging.getLogger().addHandler(_installed["handler"])
    # library loggers with their own stream handler (transformers has one) keep a reference
    # to the stream they were made with: point those at the routers too
    moved = []
    for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for h in getattr(lg, "handlers", []):
            if type(h) is logging.StreamHandler and h.stream in (out, err):
                moved.append((h, h.setStream(sys.stdout if h.stream is out else sys.stderr)))
    _installed["moved"] = moved


def _uninstall() -> None:
    for h, stream in _installed.pop("moved"):
        h.setStream(stream)
    logging.getLogger().removeHandler(_installed.pop("handler"))
    warnings.showwarning = _installed.pop("showwarning")
    sys.stdout, sys.stderr = _installed.pop("stdout"), _installed.pop("stderr")


@contextmanager
def captured(logger: logging.Logger, log: Path | StepLog, scrub: Callable[[str], str] = str,
             label: str = "") -> Iterator[None]:
    """Route this thread's output to `log` (the step logger's StepLog, or a file of its own; records
    through `logger`) while a step runs; `scrub` removes known secrets from what is printed; `-v`
    shows it after `label`."""
    own = not isinstance(log, StepLog)
    me, sink = threading.get_ident(), _Sink(logger, StepLog(log) if own else log, scrub, label)
    with _lock:
        if not _sinks:
            _install()
        _sinks[me] = sink
    try:
        yield
    finally:
        with _lock:
            _sinks.pop(me, None)
            if not _sinks:
                _uninstall()
            sink.close()
            if own:
                sink.log.close()


def run_logged(args: list[str], *, on_tick: Callable[[], None] | None = None, tick_s: float = 0.5,
               **popen: object) -> int:
    """Run a command to its end; return its exit status. Inside a step its stdout and stderr
    (merged, line by line) go to that step's log, never the terminal; outside one they are
    the terminal's. `on_tick()` is called every `tick_s` seconds while it runs and once after
    (to relay its progress). If this thread is interrupted, the command is terminated."""
    sink = _sinks.get(threading.get_ident()) or _current()
    if sink is None:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, **popen)
        reader = None
    else:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                **popen)
        reader = threading.Thread(target=_relay, args=(proc.stdout, sink, _installed["stdout"]), daemon=True)
        reader.start()
    try:
        while True:
            try:
                status = proc.wait(timeout=tick_s)
                break
            except subprocess.TimeoutExpired:
                if on_tick:
                    on_tick()
        if reader:
            reader.join(timeout=30)  # a grandchild still holding the pipe open must not hold the step
        if on_tick:
            on_tick()
        return status
    finally:
        if proc.poll() is None:  # interrupted: take the command (and, through its launcher, its children) down
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _relay(pipe: IO[bytes], sink: _Sink, terminal: IO[str]) -> None:
    """A command's output to the step's log, in lines, so that a secret is never split between
    two scrubbed writes. A line is read 64 KB at a time (tqdm redraws with `\r`, no newline):
    a piece that ends mid-line is written up to its last blank or `\r`, which no secret holds,
    and the rest goes with the next piece (whole, once that rest passes 1 MB without one)."""
    rest = b""
    with pipe:
        for piece in iter(lambda: pipe.readline(1 << 16), b""):
            text = rest + piece
            cut = len(text)
            if not text.endswith(b"\n") and len(text) < 1 << 20:
                cut = max(text.rfind(b" "), text.rfind(b"\t"), text.rfind(b"\r")) + 1
            text, rest = text[:cut], text[cut:]
            if text:
                _to_log(sink, text.decode("utf-8", errors="replace"), terminal)
        if rest:
            _to_log(sink, rest.decode("utf-8", errors="replace"), terminal)


TAIL_BYTES, TAIL_LINE_CHARS = 64 << 10, 500  # what a failure shows of its log: a step may print gigabytes


def log_tail(path: Path, lines: int = 20) -> list[str]:
    """The last lines of a step log (tqdm's carriage-return redraws reduced to their last state),
    read from its end and each cut short: the log may hold gigabytes, or one line of megabytes."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    tail = [line.rsplit("\r", 1)[-1] for line in text.splitlines() if line.strip()][-lines:]
    return [line if len(line) <= TAIL_LINE_CHARS else line[:TAIL_LINE_CHARS] + " [...]" for line in tail]
