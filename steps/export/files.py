"""export.files: write Datasets to named files (JSON array or JSONL), e.g. the origin's layout

    data/DeepSeek-R1-Distill-Qwen-32B_algebra_ins.json          {instruction, id}
    data/DeepSeek-R1-Distill-Qwen-32B_algebra_ins_res.json      {instruction, response, id}
    data/DeepSeek-R1-Distill-Qwen-32B_algebra_ins_5res.json     {instruction, responses, id}
    data/DeepSeek-R1-Distill-Qwen-32B_algebra_ins_5res_armorm.json
                                    {instruction, chosen, rejected, score_chosen, score_rejected, id}

`datasets` (a list input) and `files` (config) pair up by position. Each file may keep only
some columns, in the order given (the origin's shapes), and rename columns (`problem` →
`instruction` for problem rows that use the other name). The files always land in the step's
`files` output (in the cache); with `directory` set they are also written there, relative to
the directory `recipe run` was started in.

`trl: sft` / `trl: preference` write the same rows in the shapes trl's trainers read without
guessing (the seed's files have no `prompt` column, so `trl dpo` would take the common prefix
of chosen and rejected as the prompt and drop the problem; `trl sft` finds no `text`):

    trl: sft          {"prompt": [{"role": "user", "content": problem}],
                       "completion": [{"role": "assistant", "content": response}]}
    trl: preference   {"prompt": [user message], "chosen": [assistant message], "rejected": [...]}

Conversational (messages, rendered by the model's chat template) unless `conversational:
false`, which writes plain strings for models without a chat template.
"""
from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.recipe.artifact_types import Dataset, Files
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, StepConfig, register


class FileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str  # file name, may contain sub-folders; .json → JSON array, .jsonl → JSON Lines
    columns: list[str] | None = None  # keep these, in this order; None keeps all
    rename: dict[str, str] = Field(default_factory=dict)  # applied before `columns`
    format: Literal["json", "jsonl"] | None = None  # default: from the name's suffix
    trl: Literal["sft", "preference"] | None = None  # write prompt/completion or prompt/chosen/rejected
    conversational: bool = True  # trl shapes as chat messages (the model has a chat template)

    @field_validator("name")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = PurePosixPath(v)
        if not v or p.is_absolute() or ".." in p.parts or "\\" in v:
            raise ValueError(f"file name {v!r} must be a relative path without '..'")
        return v

    def fmt(self) -> str:
        return self.format or ("jsonl" if self.name.endswith(".jsonl") else "json")


PROMPT_COLUMNS = ("instruction", "problem", "prompt")
TRL_COLUMNS = {"sft": {"completion": ("response", "solution", "completion")},
               "preference": {"chosen": ("chosen",), "rejected": ("rejected",)}}


def trl_row(row: dict[str, Any], spec: FileSpec, where: str) -> dict[str, Any]:
    """One row in the shape trl's SFT / DPO trainers read: the problem is the prompt."""
    def pick(names: tuple[str, ...], what: str) -> str:
        col = next((c for c in names if c in row), None)
        if col is None:
            raise StepError(f"{where}: trl {spec.trl}: row has no {what} column (one of {', '.join(names)}; "
                            f"columns: {', '.join(row)})")
        return row[col]

    def msg(role: str, text: str) -> Any:
        return [{"role": role, "content": text}] if spec.conversational else text

    out = {"prompt": msg("user", pick(PROMPT_COLUMNS, "prompt"))}
    for field, names in TRL_COLUMNS[spec.trl].items():
        out[field] = msg("assistant", pick(names, field))
    return out


def render_rows(rows: list[dict[str, Any]], spec: FileSpec, where: str) -> list[dict[str, Any]]:
    out = []
    for i, row in enumerate(rows):
        r = {spec.rename.get(k, k): v for k, v in row.items()}
        if spec.trl is not None:
            r = trl_row(r, spec, f"{where}: row {i}")
        if spec.columns is not None:
            missing = [c for c in spec.columns if c not in r]
            if missing:
                raise StepError(f"{where}: row {i} has no column(s) {', '.join(missing)} "
                                f"(columns: {', '.join(r)}); fix `columns` or `rename`")
            r = {c: r[c] for c in spec.columns}
        out.append(r)
    return out


def dump(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@register("export.files")
class ExportFiles(Step):
    """Write Datasets to named JSON / JSONL files (the files output, and optionally a directory)."""

    version = "1"

    class Config(StepConfig):
        files: list[FileSpec] = Field(..., min_length=1)
        directory: str | None = None  # also write the files here (relative to the working directory)

        @field_validator("files")
        @classmethod
        def _distinct(cls, v: list[FileSpec]) -> list[FileSpec]:
            names = [f.name for f in v]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"file name(s) {', '.join(dup)} given twice")
            return v

    inputs = {"datasets": In(Dataset, many=True)}
    outputs = {"files": Files}

    def run(self, ctx):
        c = self.config
        datasets = ctx.inputs["datasets"] or []
        if len(datasets) != len(c.files):
            raise StepError(f"{ctx.step_name}: files: {len(c.files)} file(s) configured for {len(datasets)} "
                            "dataset(s) bound to `datasets`; give one file entry per dataset, in the same order")
        out = ctx.out("files")
        for ds, spec in zip(datasets, c.files):
            rows = render_rows(ds.read(), spec, f"{ctx.step_name}: {spec.name} (from {ds.path})")
            write_atomic(out / spec.name, dump(rows, spec.fmt()))
            ctx.log.info("exported %d rows to %s", len(rows), spec.name)

    def place(self, outputs):
        """Copy the files to `directory` after every run, cached ones too, so a deleted or
        edited data/ file comes back as the recipe made it."""
        if not self.config.directory:
            return
        target = Path(self.config.directory).expanduser()
        for spec in self.config.files:
            text = (outputs["files"].path / spec.name).read_text(encoding="utf-8")
            dest = target / spec.name
            if not dest.exists() or dest.read_text(encoding="utf-8") != text:
                write_atomic(dest, text)
