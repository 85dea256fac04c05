"""What a run shows: one line per step, a bar with rate and ETA for long steps (on a
terminal), and a summary table at the end."""
from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STYLE = {"cached": "dim", "ran": "green", "failed": "bold red", "blocked": "yellow", "skipped": "dim",
         "running": "cyan", "will run": "cyan", "waits": "cyan"}


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _Rate():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f}/s" if task.speed else "", style="dim")

    return Rate()


class Display:
    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(highlight=False)
        self.quiet = quiet
        self._lock = threading.Lock()
        self._progress = None
        self._tasks: dict[str, Any] = {}
        self._last_print: dict[str, float] = {}

    def start(self, runner) -> None:
        if self.console.is_terminal and not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                                      _Rate(), TimeRemainingColumn(), console=self.console, transient=True)
            self._progress.start()

    def stop(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None

    def event(self, event: str, res) -> None:
        if self.quiet and event != "failed":
            return
        key = (res.key or "")[:10]
        extra = ""
        if event == "ran":
            extra = f" {res.seconds:.1f}s"
        if event == "running" and res.why:
            extra = f"  ({', '.join(res.why[:4])})"
        if event in ("failed", "blocked"):
            extra = f"  {res.error}"
        with self._lock:
            if event in ("ran", "failed") and res.node.label in self._tasks and self._progress:
                self._progress.remove_task(self._tasks.pop(res.node.label))
            self.console.print(f"  [{STYLE.get(event, '')}]{event:<8}[/] {escape(res.node.label)} [dim]{key}[/]"
                               f"{escape(extra)}", markup=True, soft_wrap=True)

    def progress(self, label: str, bar) -> None:
        with self._lock:
            if self._progress:
                if label not in self._tasks:
                    self._tasks[label] = self._progress.add_task(f"{label} {bar.desc}", total=bar.total)
                self._progress.update(self._tasks[label], completed=bar.done, total=bar.total,
                                      description=f"{label} {bar.desc}")  # a trainer's latest loss
                return
            # not a terminal: a line every 10 s at most, and at the end
            now = time.time()
            if bar.total and (bar.done >= bar.total or now - self._last_print.get(label, 0) > 10):
                self._last_print[label] = now
                if not self.quiet and bar.done:
                    self.console.print(f"           {label} {bar.desc}: {bar.done}/{bar.total}", highlight=False)

    def summary(self, results: dict, run_id: str) -> None:
        self.stop()
        table = Table(title=f"run {run_id}", title_justify="left")
        for col in ("step", "status", "time", "output", "key"):
            table.add_column(col, justify="right" if col in ("time", "output") else "left")
        for r in results.values():
            if r.status == "skipped":
                continue
            notes = f" ({escape('; '.join(r.notes))})" if getattr(r, "notes", None) else ""
            table.add_row(escape(r.node.label), f"[{STYLE.get(r.status, '')}]{r.status}[/]{notes}",
                          f"{r.seconds:.1f}s" if r.status == "ran" else "", human_size(r.size) if r.size else "",
                          (r.key or "")[:10])
        self.console.print(table)
