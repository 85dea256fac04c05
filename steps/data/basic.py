"""Light, general data steps: read files, map columns, concatenate, split, sample."""
from __future__ import annotations

import glob as _glob
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from engine.artifacts import Dataset, read_records
from engine.errors import StepError
from engine.step import In, Step, StepConfig, register


def _files(pattern: str) -> list[str]:
    files = sorted(_glob.glob(pattern, recursive=True)) if any(c in pattern for c in "*?[") else [pattern]
    return files


@register("data.from_file")
class FromFile(Step):
    """Read JSON, JSONL, parquet or CSV files (a path or a glob) into a Dataset."""

    version = "1"

    class Config(StepConfig):
        path: str = Field(description="a file or a glob, relative to where `recipe` runs")
        format: Literal["auto", "json", "jsonl", "parquet", "csv"] = "auto"
        output_format: Literal["jsonl", "parquet"] = "jsonl"

    outputs = {"data": Dataset}

    def external_files(self) -> list[str]:
        return _files(self.config.path) or [self.config.path]

    def run(self, ctx) -> None:
        files = _files(self.config.path)
        if not files:
            raise StepError(f"{ctx.step_name}: no file matches {self.config.path}")
        rows: list[dict[str, Any]] = []
        for f in files:
            if self.config.format != "auto":
                suffix = "." + self.config.format
                if Path(f).suffix.lower() != suffix:
                    raise StepError(f"{ctx.step_name}: {f} is not a {self.config.format} file")
            rows.extend(read_records(f))
        ctx.write_dataset("data", rows, filename=f"data.{self.config.output_format}")


@register("data.map")
class Map(Step):
    """Rename, derive, filter and select columns; expressions see each row's fields by name."""

    version = "1"

    class Config(StepConfig):
        rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
        derive: dict[str, str] = Field(default_factory=dict,
                                       description="new column -> expression over the row, e.g. \"problem + ' = '\"")
        where: str | None = Field(None, description="keep rows where this expression is true")
        select: list[str] | None = Field(None, description="columns to keep, in this order")

    inputs = {"data": Dataset}
    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        from engine.expr import FUNCTIONS, _Evaluator

        cfg = self.config
        ev = _Evaluator(names={}, functions=dict(FUNCTIONS))  # one evaluator, each expression compiled once
        derive = [(col, f"derive.{col}", expr, _compile(ev, expr, ctx.step_name, f"derive.{col}"))
                  for col, expr in cfg.derive.items()]
        where = (None, "where", cfg.where, _compile(ev, cfg.where, ctx.step_name, "where")) if cfg.where else None
        out = []
        for i, row in enumerate(ctx.inputs["data"].rows()):
            for old, new in cfg.rename.items():
                if old not in row:
                    raise StepError(f"{ctx.step_name}: rename: row {i} has no column {old!r} "
                                    f"(columns: {', '.join(row)})")
                row[new] = row.pop(old)
            ev.names = row
            current = where
            try:
                for current in derive:
                    row[current[0]] = current[3]()
                current = where
                if where and not where[3]():
                    continue
            except Exception as e:
                _, field, expr, _ = current
                raise StepError(f"{ctx.step_name}: {field}: {expr!r} failed on row {i}: {e}") from None
            if cfg.select:
                missing = [c for c in cfg.select if c not in row]
                if missing:
                    raise StepError(f"{ctx.step_name}: select: row {i} has no column {missing[0]!r}")
                row = {c: row[c] for c in cfg.select}
            out.append(row)
        ctx.write_dataset("data", out)


def _compile(ev, expr: str, step: str, field: str):
    from engine.expr import row_function

    try:
        return row_function(ev, expr)
    except SyntaxError as e:
        raise StepError(f"{step}: {field}: {expr!r} is not a valid expression ({e.msg})") from None


@register("data.concat")
class Concat(Step):
    """Concatenate Datasets in the order given."""

    version = "1"
    Config = StepConfig
    inputs = {"datasets": In(Dataset, many=True)}
    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        ctx.write_dataset("data", (row for ds in ctx.inputs["datasets"] for row in ds.rows()))


@register("data.split")
class Split(Step):
    """Seeded train/test split."""

    version = "1"

    class Config(StepConfig):
        test_fraction: float = Field(0.1, gt=0, lt=1)
        seed: int = 0

    inputs = {"data": Dataset}
    outputs = {"train": Dataset, "test": Dataset}

    def run(self, ctx) -> None:
        import random

        rows = ctx.inputs["data"].read()
        order = list(range(len(rows)))
        random.Random(self.config.seed).shuffle(order)
        n_test = round(len(rows) * self.config.test_fraction)
        test = set(order[:n_test])
        ctx.write_dataset("train", [r for i, r in enumerate(rows) if i not in test])
        ctx.write_dataset("test", [r for i, r in enumerate(rows) if i in test])


@register("data.sample")
class Sample(Step):
    """Draw n rows at random (seeded), without replacement, keeping their order."""

    version = "1"

    class Config(StepConfig):
        n: int = Field(gt=0)
        seed: int = 0

    inputs = {"data": Dataset}
    outputs = {"data": Dataset}

    def run(self, ctx) -> None:
        import random

        rows = ctx.inputs["data"].read()
        keep = sorted(random.Random(self.config.seed).sample(range(len(rows)), min(self.config.n, len(rows))))
        ctx.write_dataset("data", [rows[i] for i in keep])
