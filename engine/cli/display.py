"""What a run shows, at three levels:

    default  one line per step instance, except inside a step with more than FOLD_OVER
             instances (there: failures only, and a bar on a terminal); a summary table that
             folds such a step into one row with counts per status
    quiet    (-q) the run id, failures, and the final line
    all      (--all) every instance's line and every row

On a terminal a live line above the bars says "step n/N", what runs, and an ETA (under -q it
is the only live line). Piped, a bar prints its state every 10 s at most and its final state
once, when its step ends.

A result only needs `label`, `step_id`, `status`, `key`, `seconds`, `size`, `error`, `why`:
the runner's results and the no-op fast path's rows both qualify.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, Iterable

STYLE = {"cached": "dim", "ran": "green", "failed": "bold red", "blocked": "yellow", "skipped": "dim",
         "running": "cyan", "will run": "cyan", "waits": "cyan"}
FOLD_OVER = 12  # a step with more foreach instances than this is shown as one row
FAILURES = ("failed", "blocked")
# C0 and C1 control characters but tab and newline: an error can quote a file name, a server's
# answer or a row, and an ESC in them drove the terminal (cleared it, recoloured what followed)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Untrusted text with its control characters as `\\x1b`, for output without markup."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def shown(text: str) -> str:
    """Untrusted text fit to print: rich markup escaped, control characters as `\\x1b`."""
    from rich.markup import escape

    return escape(printable(text))


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def plural(n: int, word: str, many: str | None = None) -> str:
    """"1 entry", "2 entries", "1 run record", "0 run records"."""
    if n == 1:
        return f"1 {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"
    return f"{n} {many}"


def group_of(label: str, step_id: str) -> str:
    """The step a foreach instance belongs to: "problems[algebra]" -> "problems"."""
    prefix = label.rsplit("/", 1)[0] + "/" if "/" in label else ""
    return prefix + step_id


def groups(items: Iterable[Any], label_and_step: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        out.setdefault(group_of(*label_and_step(item)), []).append(item)
    return out


def count_statuses(statuses: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())


def start_line(run_id: str, recipe: str, n_steps: int, profile: str | None, executor: str = "local") -> str:
    return (f"run {run_id}: {recipe} ({n_steps} steps{', profile ' + profile if profile else ''}"
            f"{', executor ' + executor if executor != 'local' else ''})")


def final_line(run_id: str, statuses: Iterable[str], where: str) -> str:
    counts = {s: 0 for s in ("ran", "cached", "failed", "blocked")}
    for s in statuses:
        if s in counts:
            counts[s] += 1
    failed = counts["failed"] or counts["blocked"]
    return (f"run {run_id} {'failed' if failed else 'done'}: "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; outputs under {where}")


def console(stderr: bool = False):
    """A rich console; logs and pipes get 160 columns so tables don't fold at 80."""
    import os

    from rich.console import Console

    c = Console(highlight=False, stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(highlight=False, width=160, stderr=stderr)
    return c


def _rate():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.1f}/s" if task.speed else "", style="dim")

    return Rate()


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _board(console, head):
    """A rich Progress whose first line is `head()` (redrawn with the bars, ten times a second)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Board(Progress):
        def get_renderables(self):
            yield Text(head(), style="cyan", no_wrap=True, overflow="ellipsis")
            if self.tasks:
                yield self.make_tasks_table(self.tasks)

    return Board(TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(), _rate(),
                 TimeRemainingColumn(), console=console, transient=True)


class Display:
    def __init__(self, out=None, quiet: bool = False, show_all: bool = False):
        self._out = out
        self.quiet = quiet
        self.show_all = show_all and not quiet
        self._lock = threading.Lock()
        self._progress = None
        self._tasks: dict[str, Any] = {}
        self._last_print: dict[str, float] = {}
        self._bars: dict[str, str] = {}  # piped: each running bar's latest state, printed when its step ends
        self._folded: set[str] = set()  # steps with many instances: no line per instance
        self._total = self._done = self._computed = 0
        self._running: dict[str, float] = {}  # label -> when it started
        self._started = self._first = 0.0

    @property
    def console(self):
        if self._out is None:
            self._out = console()
        return self._out

    def start(self, runner) -> None:
        self.fold_steps(r for r in runner.results.values())
        self._total = len(runner.selection.labels)
        self._started = time.time()
        if self.console.is_terminal:
            self._progress = _board(self.console, self.overall)
            self._progress.start()

    def overall(self) -> str:
        """ "step 12/27 · running pretrain · 0:41 elapsed · ETA 1:05" """
        now = time.time()
        running = list(self._running)
        parts = [f"step {self._done}/{self._total}"]
        if running:
            parts.append("running " + ", ".join(running[:3]) + (f" and {len(running) - 3} more" if running[3:] else ""))
        parts.append(f"{clock(now - self._started)} elapsed")
        if self._computed:  # steps left x the time a computed step has taken so far (cached ones: none)
            parts.append(f"ETA {clock((now - self._first) / self._computed * (self._total - self._done))}")
        return "  " + " · ".join(parts)

    def _count(self, event: str, label: str) -> None:
        if event == "running":
            self._running[label] = time.time()
            self._first = self._first or time.time()
        elif event in ("ran", "failed", "cached", "blocked"):
            self._done += 1
            self._computed += self._running.pop(label, None) is not None

    def fold_steps(self, results: Iterable[Any]) -> None:
        if not self.show_all:
            big = groups(results, lambda r: (r.label, r.step_id))
            self._folded = {name for name, members in big.items() if len(members) > FOLD_OVER}

    def stop(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None

    def shows(self, event: str, res) -> bool:
        if self.quiet:
            return event == "failed"
        if self.show_all or event == "failed":
            return True
        return group_of(res.label, res.step_id) not in self._folded

    def event(self, event: str, res) -> None:
        if self._total:  # a live run (the no-op fast path only lists cached rows)
            with self._lock:
                self._count(event, res.label)
                self._final_bar(event, res.label)
        if not self.shows(event, res):
            return
        from rich.markup import escape

        key = (res.key or "")[:10]
        extra = ""
        if event == "ran":
            extra = f" {res.seconds:.1f}s"
        if event == "running" and res.why:
            extra = f"  ({', '.join(res.why[:4])})"
        if event in FAILURES:
            extra = f"  {res.error}"
        with self._lock:
            if event in ("ran", "failed") and res.label in self._tasks and self._progress:
                self._progress.remove_task(self._tasks.pop(res.label))
            self.console.print(f"  [{STYLE.get(event, '')}]{event:<8}[/] {escape(res.label)} [dim]{key}[/]"
                               f"{shown(extra)}", markup=True, soft_wrap=True)

    def warn(self, line: str) -> None:
        """A line the user must see, at every output level (a quarantined entry)."""
        with self._lock:
            self.console.print(f"[yellow]warning:[/] {shown(line)}", soft_wrap=True)

    def progress(self, label: str, bar) -> None:
        with self._lock:
            if self._progress:
                if self.quiet:  # the overall line only
                    return
                if label not in self._tasks:
                    self._tasks[label] = self._progress.add_task(f"{label} {bar.desc}", total=bar.total)
                self._progress.update(self._tasks[label], completed=bar.done, total=bar.total,
                                      description=f"{label} {bar.desc}")  # a trainer's latest loss
                return
            # not a terminal: a line every 10 s at most, and the final state once its step ends
            if self.quiet or not bar.total or not bar.done:
                return
            line = f"           {label} {bar.desc}: {bar.done}/{bar.total}"
            now = time.time()
            if now - self._last_print.setdefault(label, now) > 10 and bar.done < bar.total:
                self._last_print[label] = now
                self.console.print(line, highlight=False, markup=False)
                line = ""
            self._bars[label] = line

    def _final_bar(self, event: str, label: str) -> None:
        """Piped: the last state of a step's bar, unless that is the line printed last."""
        line = self._bars.pop(label, None) if event in ("ran", "failed") else None
        if line:
            self.console.print(line, highlight=False, markup=False)

    def summary(self, results: dict, run_id: str) -> None:
        self.stop()
        if self.quiet:
            return
        from rich.table import Table

        table = Table(title=f"run {run_id}", title_justify="left")
        for col in ("step", "status", "time", "output", "key"):
            table.add_column(col, justify="right" if col in ("time", "output") else "left")
        for row in self.summary_rows([r for r in results.values() if r.status != "skipped"]):
            table.add_row(*row)
        self.console.print(table)

    def summary_rows(self, results: list) -> list[tuple[str, ...]]:
        from rich.markup import escape

        rows = []
        for name, members in groups(results, lambda r: (r.label, r.step_id)).items():
            if len(members) > FOLD_OVER and not self.show_all:
                ran = sum(r.seconds for r in members if r.status == "ran")
                size = sum(r.size for r in members)
                noted = sum(1 for r in members if getattr(r, "notes", None))
                rows.append((escape(f"{name}[×{len(members)}]"),
                             count_statuses(r.status for r in members) + (f" ({noted} with notes)" if noted else ""),
                             f"{ran:.1f}s" if ran else "", human_size(size) if size else "", ""))
                continue
            rows += [(escape(r.label), f"[{STYLE.get(r.status, '')}]{r.status}[/]{_notes(r)}",
                      f"{r.seconds:.1f}s" if r.status == "ran" else "", human_size(r.size) if r.size else "",
                      (r.key or "")[:10]) for r in members]
        return rows


def _notes(result) -> str:
    """A step's own lines for its summary row (ctx.note: e.g. "responses: 1/4 failed")."""

    notes = getattr(result, "notes", None)
    return f" ({shown('; '.join(notes))})" if notes else ""
