"""`data.from_file`: read JSON, JSONL, parquet or CSV files (a path or a glob) into one Dataset,
row by row. `data.load` (load.py) reads Hub datasets, and links large local files instead."""
from __future__ import annotations

import glob as _glob
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from engine.recipe.artifact_types import Dataset, not_json, read_records
from engine.recipe.errors import StepError
from engine.recipe.step import Step, StepConfig, register


def _files(pattern: str) -> list[str]:
    files = sorted(_glob.glob(pattern, recursive=True)) if any(c in pattern for c in "*?[") else [pattern]
    return files


@register("data.from_file")
class FromFile(Step):
    """Read JSON, JSONL, parquet or CSV files (a path or a glob) into a Dataset."""

    version = "1"

    class Config(StepConfig):
        path: str = Field(description="a file or a glob; a relative one is read from the recipe's folder "
                                      "or a folder above it")
        format: Literal["auto", "json", "jsonl", "parquet", "csv"] = "auto"
        output_format: Literal["jsonl", "parquet"] = "jsonl"

    outputs = {"data": Dataset}

    def external_files(self) -> list[str]:
        path = self.config.local_path(self.config.path)
        return _files(path) or [path]

    def run(self, ctx) -> None:
        files = _files(self.config.local_path(self.config.path))
        if not files:
            raise StepError(f"{ctx.step_name}: no file matches {self.config.path}")
        rows: list[dict[str, Any]] = []
        starts: list[tuple[int, str]] = []  # (first row, file): to name the file a bad value came from
        for f in files:
            if self.config.format != "auto":
                suffix = "." + self.config.format
                if Path(f).suffix.lower() != suffix:
                    raise StepError(f"{ctx.step_name}: {f} is not a {self.config.format} file")
            starts.append((len(rows), f))
            rows.extend(read_records(f))
        if self.config.output_format == "jsonl" and (bad := not_json(rows)):  # a parquet timestamp, decimal...
            i, column, kind = bad
            first, f = next((s, f) for s, f in reversed(starts) if s <= i)
            raise StepError(f"{ctx.step_name}: {f}: row {i - first + 1}'s column {column!r} holds a {kind}; "
                            "JSON Lines cannot hold it, set output_format: parquet")
        ctx.write_dataset("data", rows, filename=f"data.{self.config.output_format}")
