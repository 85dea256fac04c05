"""What a step sees while it runs: `ctx`.

    ctx.config            the validated pydantic config (also `step.config`)
    ctx.inputs[name]      an Artifact (or a list of them for `In(..., many=True)`; None if optional and unbound)
    ctx.out(name)         the directory to fill for output `name`
    ctx.scratch           a directory that survives a crash of this very key (checkpoints)
    ctx.seed, ctx.rng     the step's seed (config `seed` if it has one) and a random.Random on it
    ctx.log               a logger that writes to the entry's log
    ctx.progress(total)   a progress bar: `with ctx.progress(n, "generating") as bar: bar.update(k)`
    ctx.map_shards(...)   run work in shards, checkpoint each finished shard, resume after a kill
    ctx.run_process(cmd)  run a command (a launcher, a tool) with its output in the step's log, never the
                          terminal; `progress=PATH` shows what it writes there (FileProgress) on the bar
    ctx.secret(NAME)      a secret from the environment or the keys file, never recorded
    ctx.run_info          the recipe, profile, --set values and the key, step type, config and
                          seed of this step and every step upstream of it (for provenance, e.g.
                          a dataset card); empty when a step runs outside a recipe
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from engine.cache.secrets import Redactor, read_secret
from engine.recipe.artifact_types import write_records
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources

from .shards import InProcessShards, Shard, read_shard

NOTES_FILE = "notes.json"  # ctx.note's lines, in the staging folder beside outputs/ (never hashed)


class Bar:
    """A progress handle; the runner's display subscribes through `on_update`."""

    def __init__(self, total: int | None, desc: str, on_update: Callable[["Bar"], None] | None):
        self.total, self.desc, self.done = total, desc, 0
        self._on_update = on_update

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._on_update:
            self._on_update(self)


PROGRESS_FILE = "progress.json"  # a remote step's latest progress, in its staging folder; removed on commit


class ProgressFile:
    """A step's progress, written where the driver can read it (the cache root is shared on a
    cluster), at most twice a second."""

    def __init__(self, path: Path):
        self.path, self._last = path, 0.0

    def __call__(self, bar: Bar) -> None:
        now = time.monotonic()
        if now - self._last < 0.5 and bar.done != bar.total:
            return
        self._last = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"desc": bar.desc, "done": bar.done, "total": bar.total}))
        os.replace(tmp, self.path)


def read_progress(path: Path) -> Bar | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    bar = Bar(data["total"], data["desc"], None)
    bar.done = data["done"]
    return bar


class FileProgress:
    """The far end of `ctx.run_process(..., progress=PATH)`, in the process that was started:
    `progress(total, desc)` as on a ctx, its updates written to PATH for the step's bar."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def progress(self, total: int | None = None, desc: str = "") -> Iterator[Bar]:
        yield Bar(total, desc, ProgressFile(self.path))


class Context:
    def __init__(
        self,
        *,
        config: Any,
        inputs: dict[str, Any],
        outdir: Path,
        scratch: Path,
        seed: int,
        log: logging.Logger,
        redactor: Redactor | None = None,
        on_progress: Callable[[Bar], None] | None = None,
        step_name: str = "",
        run_info: dict[str, Any] | None = None,
        shards: Any = None,
    ):
        self.config = config
        self.inputs = inputs
        self.outdir = outdir
        self._scratch = scratch
        self.seed = seed
        self.rng = random.Random(seed)
        self.log = log
        self.step_name = step_name
        self.run_info = run_info or {}
        self._redactor = redactor or Redactor()
        self._on_progress = on_progress
        self.shards = shards or InProcessShards()  # how map_shards runs: here, or as Ray tasks

    @property
    def scratch(self) -> Path:
        """Made on first use: most steps never need one."""
        if not self._scratch.is_dir():
            self._scratch.mkdir(parents=True, exist_ok=True)
        return self._scratch

    # ------------------------------------------------------------------ outputs
    def out(self, name: str) -> Path:
        path = self.outdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_dataset(self, name: str, rows: Iterable[dict[str, Any]], filename: str = "data.jsonl") -> int:
        n = write_records(self.out(name) / filename, rows)
        self.log.info("wrote %d rows to output %r", n, name)
        return n

    def note(self, text: str) -> None:
        """A short line for the run summary's row of this step (e.g. "3/16 failed"); kept in the
        entry, so a cached run shows it too. Written beside the outputs, never hashed."""
        path = self.outdir.parent / NOTES_FILE
        notes = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(notes + [self._redactor.scrub(text)]))

    def write_metrics(self, name: str, metrics: dict[str, Any]) -> Path:
        path = self.out(name) / "metrics.json"
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
        return path

    # ------------------------------------------------------------------ running
    @contextmanager
    def progress(self, total: int | None = None, desc: str = "") -> Iterator[Bar]:
        bar = Bar(total, desc or self.step_name, self._on_progress)
        if self._on_progress:
            self._on_progress(bar)
        yield bar

    def map_shards(
        self,
        items: Sequence[Any],
        fn: Callable[..., list[dict[str, Any]]],
        shard_size: int = 100,
        name: str = "shards",
        desc: str = "",
        *,
        setup: Callable[[], Any] | None = None,
        replica: Resources | None = None,
    ) -> list[dict[str, Any]]:
        """Apply `fn` to consecutive shards of `items`; return all results in order.

        Each finished shard is checkpointed in scratch, so after a kill the rerun of the same
        key loads finished shards and computes only the rest. On the ray executor the missing
        shards run as Ray tasks. With `setup` (a picklable zero-argument callable, e.g. a
        backend spec that loads a model), `fn(chunk, setup())` is called instead, and on Ray
        each of a pool of actors (`replica` resources each) calls `setup` once.
        """
        if shard_size < 1:
            raise StepError(f"{self.step_name}: shard_size must be at least 1, got {shard_size}")
        folder = self.scratch / name
        folder.mkdir(parents=True, exist_ok=True)
        shards = [Shard(i, list(items[start : start + shard_size]), folder / f"{i:06d}.jsonl")
                  for i, start in enumerate(range(0, len(items), shard_size))]
        rows: dict[int, list[dict[str, Any]]] = {}
        with self.progress(len(items), desc or name) as bar:
            for shard in shards:
                if shard.path.exists():
                    rows[shard.index] = read_shard(shard.path)
                    bar.update(len(shard.items))

            def done(shard: Shard, result: list[dict[str, Any]]) -> None:
                rows[shard.index] = result
                bar.update(len(shard.items))

            resumed = len(rows)
            self.shards.run([s for s in shards if s.index not in rows], fn, done, setup, replica)
        if resumed:
            self.log.info("resumed %s: %d finished shard(s) loaded from scratch", name, resumed)
        return [row for i in sorted(rows) for row in rows[i]]

    def run_process(self, args: Sequence[str], *, progress: Path | None = None, **popen: Any) -> int:
        """Run a command to its end; return its exit status. Its stdout and stderr go to this
        step's log (secrets scrubbed), never the terminal. With `progress`, the command reports
        its progress by writing that file (`FileProgress(progress)`), and this step's bar follows."""
        from .capture import run_logged

        if progress is not None:
            Path(progress).unlink(missing_ok=True)  # a killed earlier attempt's, in scratch
        return run_logged(list(args), on_tick=self._follow(Path(progress)) if progress else None, **popen)

    def _follow(self, path: Path) -> Callable[[], None]:
        bar: Bar | None = None

        def tick() -> None:
            nonlocal bar
            seen = read_progress(path)
            if seen is None or (bar and (bar.desc, bar.done, bar.total) == (seen.desc, seen.done, seen.total)):
                return
            bar = bar or Bar(seen.total, seen.desc, self._on_progress)
            bar.total, bar.desc = seen.total, seen.desc
            bar.update(seen.done - bar.done)

        return tick

    def release(self, setup: Callable[[], Any]) -> None:
        """Close what `setup` loaded for map_shards (a model) before the step ends, to free its
        memory for the next one; on Ray, stop its replicas."""
        release = getattr(self.shards, "release", None)
        if release:
            release(setup)

    def close(self) -> None:
        """Called by the engine when the step ends: closes what map_shards setups loaded."""
        close = getattr(self.shards, "close", None)
        if close:
            close()

    def secret(self, name: str, required: bool = True) -> str | None:
        value = read_secret(name)
        if value is None:
            if required:
                raise StepError(
                    f"{self.step_name}: secret {name} is not set; export {name}=... or add it to the keys file"
                )
            return None
        self._redactor.add(value)
        return value
