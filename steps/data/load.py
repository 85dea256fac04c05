"""data.load: a dataset from the Hub (revision resolved to a commit and recorded) or from local
parquet / JSONL / JSON files, globs or folders.

    - id: openmath
      uses: data.load
      with: {hub: nvidia/OpenMathReasoning, revision: main, split: cot}     # files downloaded whole
    - id: openmath_head
      uses: data.load
      with: {hub: nvidia/OpenMathReasoning, split: cot, streaming: true, limit: 100000}
    - id: fixture
      uses: data.load
      with: {path: tests/data/openmath_fixture.parquet}

Local files are validated (parquet footer, first JSON record) and hard-linked into the output
when the filesystem allows, so a multi-GB file is not copied; their content digests are part of
the step key, so editing a file reruns the step. The `source` report records where the rows
came from: the Hub commit sha behind `revision`, the files, their sizes and row counts.

A Hub revision that is a branch name (like `main`) is not part of the key as a commit: pin a
40-character sha for a reproducible recipe (the step logs a warning otherwise).
"""
from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from engine.recipe.artifact_types import Dataset, Report
from engine.recipe.errors import StepError
from engine.recipe.step import EXECUTION_ONLY, Step, StepConfig, register
from steps.common.arrowio import RECORD_SUFFIXES

SHA = re.compile(r"^[0-9a-f]{40}$")


def make_hf_api(token: str | None):
    """The Hub boundary (tests replace it with a fake)."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def download(repo_id: str, filename: str, revision: str, local_dir: Path, token: str | None) -> Path:
    """One file of a dataset repo, to disk (the Hub boundary; tests replace it)."""
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision,
                                local_dir=str(local_dir), token=token))


def stream_rows(repo_id: str, name: str | None, split: str, revision: str, token: str | None):
    """Rows of a Hub dataset without downloading it whole (the Hub boundary; tests replace it)."""
    from datasets import load_dataset

    return iter(load_dataset(repo_id, name, split=split, revision=revision, streaming=True, token=token))


def local_files(patterns: list[str], recipe_dir: str | None = None) -> list[tuple[str, list[Path], Path | None]]:
    """Each pattern with the record files it names (a file, a folder (recursively) or a glob) and
    the folder a relative pattern was found from (engine/recipe/paths.py; None for an absolute one).
    A folder's files under a name starting with `.` or `_` are left out, as pyarrow.dataset and
    `datasets` leave them: a notebook's `.ipynb_checkpoints/` copy, Spark's `_temporary/` parts."""
    from engine.recipe.paths import locate

    out = []
    for pattern in patterns:
        root, where = locate(pattern, recipe_dir)
        p = Path(where).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in RECORD_SUFFIXES
                           and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts))
        elif any(c in pattern for c in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True)
                           if Path(f).is_file() and Path(f).suffix.lower() in RECORD_SUFFIXES)
        else:
            found = [p] if p.exists() else []
        out.append((pattern, found, root))
    return out


@register("data.load")
class Load(Step):
    """A Hub dataset (revision pinned and recorded) or local parquet/JSONL/JSON files and globs, as a Dataset."""

    # 2: rows rewritten (limit, streaming) keep every row's columns (a field the first row of a
    # batch lacked was dropped), parts share one schema, and `.`/`_` files in a folder are skipped
    version = "2"

    class Config(StepConfig):
        path: list[str] = Field(default_factory=list, description="local files, folders or globs")
        hub: str | None = Field(None, description="a Hub dataset id, e.g. nvidia/OpenMathReasoning")
        revision: str = Field("main", description="Hub branch, tag or commit sha (pin a sha to reproduce)")
        name: str | None = Field(None, description="Hub dataset config name (streaming)")
        split: str | None = Field(None, description="Hub split: selects data/<split>-* files, or the streamed split")
        files: list[str] = Field(default_factory=list, description="Hub file patterns to fetch (default: by split)")
        streaming: bool = Field(False, description="Hub: iterate rows instead of downloading whole files")
        limit: int | None = Field(None, ge=1, description="keep only the first N rows")
        part_rows: int = Field(100_000, ge=1, description="rows per parquet part when rows are rewritten")
        token_env: str = Field("HF_TOKEN", json_schema_extra=EXECUTION_ONLY)  # the variable's name

        @field_validator("path", "files", mode="before")
        @classmethod
        def _one_or_many(cls, v):
            return [v] if isinstance(v, str) else v

        @model_validator(mode="after")
        def _one_source(self):
            if bool(self.path) == bool(self.hub):
                raise ValueError("give either path (local files) or hub (a dataset id), not both or neither")
            if self.streaming and not self.hub:
                raise ValueError("streaming applies to hub datasets")
            if self.streaming and not self.split:
                raise ValueError("streaming needs split")
            return self

    inputs: dict = {}
    outputs = {"data": Dataset, "source": Report}

    def external_files(self) -> list[str]:
        files = [str(f) for _, found, _ in local_files(self.config.path, self.config._recipe_dir) for f in found]
        return files or [self.config.local_path(p) for p in self.config.path]

    def run(self, ctx) -> None:
        who = ctx.step_name or self.name
        if self.config.hub:
            source = self.from_hub(ctx, who)
        else:
            source = self.from_local(ctx, who)
        ctx.write_metrics("source", source)

    # ---------------------------------------------------------------- local
    def from_local(self, ctx, who: str) -> dict[str, Any]:
        from steps.common.arrowio import check_file

        files: list[Path] = []
        shown: list[str] = []  # as the recipe names them: where the checkout lies is no part of the output
        for pattern, found, root in local_files(self.config.path, self.config._recipe_dir):
            if not found:
                raise StepError(f"{who}: path {pattern}: no .parquet, .jsonl or .json file found")
            files.extend(found)
            shown += [os.path.relpath(f, root) if root else str(f) for f in found]
        for f in files:
            if f.suffix.lower() not in RECORD_SUFFIXES:
                raise StepError(f"{who}: {f}: unsupported file type {f.suffix!r}; expected .parquet, .jsonl or .json")
        infos = [check_file(f, who) for f in files]
        out = ctx.out("data")
        if self.config.limit:
            rows = rewrite(files, out, self.config.limit, self.config.part_rows, who)
        else:
            used: set[str] = set()
            for f in files:
                link_or_copy(f, out / unique_name(f.name, used))
            rows = sum(i["rows"] for i in infos) if all(i["rows"] is not None for i in infos) else None
        ctx.log.info("loaded %d local file(s)", len(files))
        return {"kind": "local", "rows": rows, "limit": self.config.limit,
                "files": [{**i, "path": name, "bytes": Path(i["path"]).stat().st_size}
                          for i, name in zip(infos, shown)]}

    # ---------------------------------------------------------------- hub
    def from_hub(self, ctx, who: str) -> dict[str, Any]:
        cfg = self.config
        token = ctx.secret(cfg.token_env, required=False)
        api = make_hf_api(token)
        try:
            info = api.dataset_info(cfg.hub, revision=cfg.revision)
        except Exception as e:
            raise StepError(f"{who}: hub dataset {cfg.hub}@{cfg.revision}: "
                            f"cannot resolve ({_scrub(e, token)})") from None
        sha = info.sha
        if not SHA.match(cfg.revision):
            ctx.log.warning("revision %r resolved to %s; pin revision: %s to make this step reproducible",
                            cfg.revision, sha, sha)
        source: dict[str, Any] = {"kind": "hub", "repo_id": cfg.hub, "revision": cfg.revision, "sha": sha,
                                  "split": cfg.split, "streaming": cfg.streaming, "limit": cfg.limit}
        out = ctx.out("data")
        if cfg.streaming:
            try:
                rows_iter = stream_rows(cfg.hub, cfg.name, cfg.split, sha, token)
                source["rows"] = write_stream(rows_iter, out, cfg.limit, cfg.part_rows, ctx)
            except StepError:
                raise
            except Exception as e:
                raise StepError(f"{who}: streaming {cfg.hub}@{sha} split {cfg.split}: {_scrub(e, token)}") from None
            return source
        try:
            names = [f for f in api.list_repo_files(cfg.hub, repo_type="dataset", revision=sha)]
        except Exception as e:
            raise StepError(f"{who}: hub dataset {cfg.hub}@{sha}: cannot list files ({_scrub(e, token)})") from None
        patterns = cfg.files or ([f"data/{cfg.split}-*", f"data/{cfg.split}_*", f"{cfg.split}/*",
                                  f"*/{cfg.split}/*", f"data/{cfg.split}.*"] if cfg.split else ["*"])
        wanted = sorted(n for n in names if Path(n).suffix.lower() in RECORD_SUFFIXES
                        and any(fnmatch.fnmatch(n, p) for p in patterns))
        if not wanted:
            raise StepError(f"{who}: hub dataset {cfg.hub}@{sha}: no .parquet/.jsonl/.json file matches "
                            f"{', '.join(patterns)} (files: {', '.join(names[:20])})")
        cache = ctx.scratch / "hub"
        local = []
        with ctx.progress(len(wanted), "downloading") as bar:
            for name in wanted:
                try:
                    local.append(download(cfg.hub, name, sha, cache, token))
                except Exception as e:
                    raise StepError(f"{who}: downloading {name} from {cfg.hub}@{sha} "
                                    f"failed ({_scrub(e, token)})") from None
                bar.update(1)
        from steps.common.arrowio import check_file

        infos = [check_file(p, who) for p in local]
        if cfg.limit:
            source["rows"] = rewrite(local, out, cfg.limit, cfg.part_rows, who)
        else:
            used: set[str] = set()
            for p in local:
                link_or_copy(p, out / unique_name(p.name, used))
            source["rows"] = sum(i["rows"] or 0 for i in infos)
        source["files"] = [{"path": n, "format": i["format"], "rows": i["rows"],
                            "bytes": Path(i["path"]).stat().st_size}
                           for n, i in zip(wanted, infos)]
        return source


def _scrub(e: Exception, token: str | None) -> str:
    from engine.cache.secrets import scrub

    text = f"{type(e).__name__}: {e}"
    return scrub(text.replace(token, "***") if token else text)  # and any other token-shaped string


def unique_name(name: str, used: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, i = name, 2
    while candidate in used:
        candidate, i = f"{stem}_{i}{suffix}", i + 1
    used.add(candidate)
    return candidate


def link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def rewrite(files: list[Path], out: Path, limit: int | None, part_rows: int, who: str) -> int:
    """Copy the first `limit` rows of `files` into parquet parts of `part_rows` rows."""
    import pyarrow as pa

    from steps.common.arrowio import BatchReader, unify_parts, write_table

    buffer, buffered, parts, total = [], 0, 0, 0

    def flush():
        nonlocal buffer, buffered, parts
        if buffer:
            write_table(pa.concat_tables(buffer, promote_options="permissive"), out / f"part-{parts:05d}.parquet",
                        "parquet")
            parts += 1
        buffer, buffered = [], 0

    for f in files:
        for batch in BatchReader(f, min(part_rows, 65536), who):
            if limit is not None:
                batch = batch.slice(0, limit - total)
            buffer.append(pa.Table.from_batches([batch]))
            buffered += batch.num_rows
            total += batch.num_rows
            if buffered >= part_rows:
                flush()
            if limit is not None and total >= limit:
                break
        if limit is not None and total >= limit:
            break
    flush()
    unify_parts(sorted(out.glob("part-*.parquet")), who)
    return total


def write_stream(rows, out: Path, limit: int | None, part_rows: int, ctx) -> int:
    """Streamed rows into parquet parts (memory: one part)."""
    import pyarrow as pa

    from engine.recipe.artifact_types import record_batch
    from steps.common.arrowio import unify_parts, write_table

    chunk, parts, total = [], 0, 0
    with ctx.progress(limit, "streaming rows") as bar:
        for row in rows:
            chunk.append(row)
            total += 1
            if len(chunk) == part_rows:
                write_table(pa.Table.from_batches([record_batch(chunk)]), out / f"part-{parts:05d}.parquet", "parquet")
                parts, chunk = parts + 1, []
                bar.update(part_rows)
            if limit is not None and total >= limit:
                break
        if chunk or not parts:
            write_table(pa.Table.from_batches([record_batch(chunk)]), out / f"part-{parts:05d}.parquet", "parquet")
            bar.update(len(chunk))
    unify_parts(sorted(out.glob("part-*.parquet")), ctx.step_name)
    return total
