"""export.files: write Datasets to named files (JSON array or JSONL), e.g. the six-domain
generation workflow's layout

    ins/DeepSeek-R1-Distill-Qwen-32B_algebra_ins.json          {instruction, id}
    ins_res/DeepSeek-R1-Distill-Qwen-32B_algebra_ins_res.json  {instruction, response, id}
    ...

`datasets` (a list input) and `files` (config) pair up by position. Each file may keep only
some columns, in the order given (the shapes a consumer expects), and rename columns (`problem` →
`instruction` for problem rows that use the other name).

Where the files land: in the step's `files` output, so in its cache entry, and so under the
run's artifacts as `artifacts/<recipe>/<step>/files/<name>` (`export.algebra` for the instance
`export[algebra]`). They are also copied, after every run (cached ones too, so a deleted copy
comes back), to `directory` when it is set (an absolute path: a relative one would land
wherever `recipe` was started, e.g. inside the repository) and to `recipe run --out DIR`.

One folder per dataset: files that share a folder must share their columns, because
`datasets.load_dataset(folder)` and `trl ... --dataset_name folder` read a folder as one
dataset; put samples and diagnostics in folders of their own (`name: samples/x.jsonl`). A file
with no rows is an error unless `allow_empty: true` (`load_dataset` cannot read one).

`trl: sft` / `trl: preference` write the same rows in the shapes trl's trainers read without
guessing (the generation workflow's files have no `prompt` column, so `trl dpo` would take the common prefix
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
        # str(p) != v: './a.json', 'a//b.json' or 'sub/' would name a file another spelling also names
        if not v or p.is_absolute() or ".." in p.parts or "\\" in v or str(p) != v or v == ".":
            raise ValueError(f"file name {v!r} must be a relative path without '..', '.' parts, "
                             "'//' or a trailing '/'")
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
        directory: str | None = Field(None, description="also copy the files here after every run (an absolute "
                                                         "path; they are always under artifacts/<recipe>/<step>/files)")

        @field_validator("directory")
        @classmethod
        def _absolute(cls, v: str | None) -> str | None:
            if v is not None and not Path(v).expanduser().is_absolute():
                raise ValueError(f"directory {v!r} is relative: the files are under artifacts/<recipe>/<step>/files "
                                 "already; give an absolute path, or `recipe run --out DIR` to copy every export")
            return v

        @field_validator("files")
        @classmethod
        def _distinct(cls, v: list[FileSpec]) -> list[FileSpec]:
            names = [f.name for f in v]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"file name(s) {', '.join(dup)} given twice")
            folders = {str(p) for n in names for p in PurePosixPath(n).parents}
            both = sorted(set(names) & folders)
            if both:
                raise ValueError(f"{both[0]} is a file name and also a folder of another file")
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
        folders: dict[str, tuple[str, list[str]]] = {}  # folder -> (first file in it, its columns)
        for ds, spec in zip(datasets, c.files):
            where = f"{ctx.step_name}: {spec.name} (from {ds.path})"
            rows = render_rows(ds.read(), spec, where)
            if not rows and not c.allow_empty:
                raise StepError(f"{where}: 0 rows to write (`load_dataset` cannot read an empty file); "
                                "set `allow_empty: true` if that is expected")
            one_dataset_per_folder(folders, spec.name, rows, ctx.step_name)
            write_atomic(out / spec.name, dump(rows, spec.fmt()))
            ctx.log.info("exported %d rows to %s", len(rows), spec.name)

    def place(self, outputs, out_dir=None):
        """Copy the files to `directory` and to `--out DIR` after every run, cached ones too, so
        a deleted or edited copy comes back as the recipe made it."""
        targets = [Path(d).expanduser() for d in (self.config.directory, out_dir) if d]
        for target in dict.fromkeys(targets):
            for spec in self.config.files:
                text = (outputs["files"].path / spec.name).read_text(encoding="utf-8")
                dest = target / spec.name
                if not dest.exists() or dest.read_text(encoding="utf-8") != text:
                    write_atomic(dest, text)


def one_dataset_per_folder(folders: dict[str, tuple[str, list[str]]], name: str, rows: list[dict[str, Any]],
                           who: str) -> None:
    """Files that share a folder must share their columns: a folder is one dataset to `datasets` and trl."""
    if not rows:
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    folder = str(PurePosixPath(name).parent)
    first = folders.setdefault(folder, (name, columns))
    if set(first[1]) != set(columns):
        where = "the top folder" if folder == "." else f"the folder {folder}/"
        raise StepError(f"{who}: {name} and {first[0]} share {where} but not their columns ({', '.join(columns)} vs "
                        f"{', '.join(first[1])}); `load_dataset(folder)` and `trl --dataset_name folder` read a "
                        f"folder as one dataset: give each its own, e.g. name: {PurePosixPath(name).stem}/"
                        f"{PurePosixPath(name).name}")
