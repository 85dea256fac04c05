"""Small in-memory data steps over a Dataset's rows: `data.map` (rename, derive, filter, select
columns), `data.concat`, `data.split` (seeded train/test) and `data.sample` (n seeded rows)."""
from __future__ import annotations

from pydantic import Field

from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, StepConfig, register


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
        from engine.recipe.expr import Evaluator
        from engine.recipe.expr.rows import RowFailed, row_mapper

        cfg, step = self.config, ctx.step_name
        try:
            mapper = row_mapper(Evaluator({}), cfg.derive, cfg.where)
        except SyntaxError as e:
            raise StepError(f"{step}: {e.msg}") from None
        rows = ctx.inputs["data"].rows()
        if cfg.rename:
            rows = _renamed(rows, cfg.rename, step)
        try:
            out = mapper(rows)
        except RowFailed as e:
            raise StepError(f"{step}: {e}") from None
        if cfg.select:
            out = [_selected(row, cfg.select, step, i) for i, row in enumerate(out)]
        ctx.write_dataset("data", out)


def _renamed(rows, rename: dict[str, str], step: str):
    for i, row in enumerate(rows):
        for old, new in rename.items():
            if old not in row:
                raise StepError(f"{step}: rename: row {i} has no column {old!r} (columns: {', '.join(row)})")
            row[new] = row.pop(old)
        yield row


def _selected(row: dict, select: list[str], step: str, i: int) -> dict:
    missing = [c for c in select if c not in row]
    if missing:
        raise StepError(f"{step}: select: output row {i} has no column {missing[0]!r}")
    return {c: row[c] for c in select}


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
