"""The end of every `recipe run`, the full run and the no-op fast path alike: outputs linked
under artifacts/, the summary table, warnings, the reports' summaries, the final line and the
exit code. Both hand their results to `finish` as an Outcome.

Imports nothing heavy: the no-op fast path with `-q` reaches the final line without rich.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from .display import final_line


class Outcome:
    """A finished run. `results`: label -> a row with label, step_id, status, key, seconds,
    size, error, notes and `outputs` (names, or name -> digest): the runner's Results, or the
    fast path's rows. A plain class: the no-op path pays for no dataclass."""

    def __init__(self, run_id: str, recipe: str, results: Mapping[str, Any], cache_root: Path, *,
                 summaries: Iterable[str] = (), warnings: Iterable[str] = (), unrecorded: str | None = None,
                 read_only: bool = False):
        self.run_id, self.recipe, self.results, self.cache_root = run_id, recipe, results, cache_root
        self.summaries, self.warnings = list(summaries), list(warnings)
        self.unrecorded, self.read_only = unrecorded, read_only
        if unrecorded:
            self.warnings.append(f"run {run_id} could not be recorded: {unrecorded}")

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "blocked") for r in self.results.values())

    def exit_code(self) -> int:
        """1 when a step failed, or the record was lost (a read-only cache serves a cached run
        without one; a full disk that loses it fails the run)."""
        return 1 if self.failed or (self.unrecorded and not self.read_only) else 0

    def links(self) -> Iterable[tuple[str, str, str, Iterable[str]]]:
        return ((self.recipe, r.label, r.key, r.outputs) for r in self.results.values()
                if r.status in ("cached", "ran") and r.key)


def finish(args, display, done: Outcome) -> int:
    """Link, summarise, warn, say the final line; returns the run's exit code."""
    from engine.cache.links import link_outputs

    warnings = list(done.warnings)
    try:
        link_outputs(args.artifacts_dir, done.cache_root, done.links())
    except OSError as e:
        from engine.run.faults import fault_line

        warnings.insert(0, f"outputs not linked under {args.artifacts_dir}: {fault_line(e, args.artifacts_dir) or e}")
    display.summary(done.results, done.run_id)
    for line in warnings:
        display.warn(line)
    if done.summaries and not args.quiet:
        print_markdown(display.console, done.summaries)
    print(final_line(done.run_id, (r.status for r in done.results.values()), f"{args.artifacts_dir}/{done.recipe}/"),
          flush=True)
    return done.exit_code()


def code_changed_line(labels: list[str]) -> str | None:
    """One warning for all cached entries whose step code changed without a version bump."""
    if not labels:
        return None
    from engine.cache.source import CODE_CHANGED

    shown = ", ".join(labels[:5]) + (f" and {len(labels) - 5} more" if len(labels) > 5 else "")
    return (f"{shown}: {CODE_CHANGED}; reused the cached output. Bump the step's `version`, or pass "
            "--rerun-changed-code to recompute.")


def print_markdown(out, paths: list[str]) -> None:
    """Reports' summary.md files (e.g. a before/after table), rendered on the console `out`."""
    from rich.markdown import Markdown

    for path in paths:
        if Path(path).is_file():
            out.print(Markdown(Path(path).read_text(encoding="utf-8")))
