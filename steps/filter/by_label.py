"""Filtering steps: by precomputed labels (fast, streaming) and by an LLM judge.

filter.by_label reproduces the seed's OpenMathReasoningFiltering_bylabel.py
(`--filter-by-pass-rate`, `--save-per-iteration`, `--batch-size`) as a step:

    - id: hard
      uses: filter.by_label
      with:
        max_pass_rate: 0.1            # keep pass rate <= 0.1 (lower = harder)
        where: ['problem_type == "has_answer_extracted"', 'tokens(generated_solution) <= 16000']
        batch_size: 5000              # rows per record batch in memory
        save_every: 10000             # kept rows per output part
      inputs: {data: "${steps.openmath.data}"}

It streams pyarrow record batches, so memory is bounded by `batch_size`, `save_every` and the
input's row-group size, not by the input. Each finished part and the counts behind it are
checkpointed in `ctx.scratch`; a killed run resumes after the last finished part.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.artifacts import Dataset, Model, Report
from engine.errors import StepError
from engine.step import In, Step, StepConfig, register
from steps.backends.base import BackendConfig, served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD

from steps.filter.rowexpr import FUNCTION_NAMES, check_syntax

HIST_BINS = 20
MAX_DISTINCT_UNPARSEABLE = 1000


def _part_done(index: int) -> None:
    """Called after part `index` and its checkpoint are on disk (tests kill the process here)."""


class Tally:
    """Row counts that always sum to rows_in: kept + the three kinds of dropped."""

    FIELDS = ("rows_in", "kept", "dropped_by_threshold", "dropped_unparseable", "dropped_by_predicate",
              "unparseable", "predicate_errors")

    def __init__(self, data: dict[str, Any] | None = None):
        data = data or {}
        for f in self.FIELDS:
            setattr(self, f, int(data.get(f, 0)))
        self.unparseable_values = Counter(data.get("unparseable_values", {}))
        self.hist = list(data.get("hist", [0] * HIST_BINS))
        self.first_error = data.get("first_error")

    def add(self, other: "Tally") -> "Tally":
        out = Tally(self.to_json())
        for f in self.FIELDS:
            setattr(out, f, getattr(out, f) + getattr(other, f))
        for k, v in other.unparseable_values.items():
            if k in out.unparseable_values or len(out.unparseable_values) < MAX_DISTINCT_UNPARSEABLE:
                out.unparseable_values[k] += v
            else:
                out.unparseable_values["<other>"] += v
        out.hist = [a + b for a, b in zip(out.hist, other.hist)]
        out.first_error = out.first_error or other.first_error
        return out

    def to_json(self) -> dict[str, Any]:
        d = {f: getattr(self, f) for f in self.FIELDS}
        d.update(unparseable_values=dict(self.unparseable_values), hist=self.hist, first_error=self.first_error)
        return d


class BatchVerdict:
    """Per-row outcome of one batch as numpy masks; `tally(n)` counts the first n rows.

    `rates` is float64 with NaN where unparseable; `labels[codes[i]]` is row i's raw value
    (used to report which unparseable values were seen).
    """

    def __init__(self, rates, codes, labels, unparse, thr_drop, na_drop, pred_drop, kept, pred_errors, first_error):
        self.rates, self.codes, self.labels = rates, codes, labels
        self.unparse, self.thr_drop, self.na_drop, self.pred_drop, self.kept = unparse, thr_drop, na_drop, pred_drop, kept
        self.pred_errors, self.first_error = pred_errors, first_error

    def tally(self, n: int) -> Tally:
        import numpy as np

        t = Tally()
        t.rows_in = n
        t.kept = int(np.count_nonzero(self.kept[:n]))
        t.dropped_by_threshold = int(np.count_nonzero(self.thr_drop[:n]))
        t.dropped_unparseable = int(np.count_nonzero(self.na_drop[:n]))
        t.dropped_by_predicate = int(np.count_nonzero(self.pred_drop[:n]))
        t.unparseable = int(np.count_nonzero(self.unparse[:n]))
        t.predicate_errors = int(np.count_nonzero(self.pred_errors[:n])) if self.pred_errors is not None else 0
        t.first_error = self.first_error if t.predicate_errors else None
        if self.rates is not None:
            if t.unparseable:
                counts = np.bincount(self.codes[:n][self.unparse[:n]], minlength=len(self.labels))
                for code in np.flatnonzero(counts):
                    t.unparseable_values[self.labels[code]] += int(counts[code])
            rates = self.rates[:n]
            rates = rates[~np.isnan(rates)]
            bins = np.clip((rates * HIST_BINS).astype(np.int64), 0, HIST_BINS - 1)
            t.hist = [int(x) for x in np.bincount(bins, minlength=HIST_BINS)]
        return t


_PARSED: dict[str, float] = {}  # distinct pass-rate strings seen so far -> value (NaN: not a number)


def read_rates(raw):
    """A pass-rate column as (rates float64 with NaN where unparseable, codes, labels).

    Strings are parsed once per distinct value (the column has a few dozen), not per row.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from steps.filter.rowexpr import parse_number, parse_number_array

    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    t = raw.type
    if pa.types.is_dictionary(t):
        raw = raw.cast(t.value_type)
        t = raw.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        enc = pc.dictionary_encode(raw)
        distinct = enc.dictionary.to_pylist()
        if len(distinct) <= 1024:  # the usual case: k/32 and "n/a"
            for v in distinct:
                if v not in _PARSED:
                    if len(_PARSED) > 100_000:
                        _PARSED.clear()
                    x = parse_number(v)
                    _PARSED[v] = np.nan if x is None else x
            values = np.array([_PARSED[v] for v in distinct], dtype=np.float64)
        else:
            values = parse_number_array(enc.dictionary).to_numpy(zero_copy_only=False).astype(np.float64)
        labels = [v[:80] for v in distinct] + ["<null>"]
        indices = enc.indices if enc.indices.null_count == 0 else pc.fill_null(enc.indices, len(labels) - 1)
        codes = indices.to_numpy(zero_copy_only=False).astype(np.int64)
        rates = np.append(values, np.nan)[codes]
        return rates, codes, labels
    rates = parse_number_array(raw).to_numpy(zero_copy_only=False).astype(np.float64)  # may raise Unsupported
    codes = np.where(pc.is_null(raw).to_numpy(zero_copy_only=False), 1, 0)
    return rates, codes, ["nan", "<null>"]


@register("filter.by_label")
class ByLabel(Step):
    """Keep rows by pass-rate threshold and column predicates; streams record batches (bounded memory)."""

    version = "1"

    class Config(StepConfig):
        max_pass_rate: float | None = Field(0.1, description="keep rows with pass rate <= this (the seed's --filter-by-pass-rate); null: no upper bound")
        min_pass_rate: float | None = Field(None, description="keep rows with pass rate >= this; null: no lower bound")
        pass_rate_column: str = "pass_rate_72b_tir"
        unparseable: Literal["drop", "keep"] = Field("drop", description='rows whose pass rate is not a number ("n/a"): counted, then dropped or kept')
        where: list[str] = Field(default_factory=list, description="row predicates in the expression language; a row must satisfy all")
        tokenizer: str | None = Field(None, description="tokenizer (local dir or Hub id) for tokens(); default: an approximate count")
        columns: list[str] | None = Field(None, description="columns to write (default: all)")
        batch_size: int = Field(5000, ge=1, description="rows per record batch (the seed's --batch-size)")
        save_every: int = Field(10000, ge=1, description="kept rows per output part (the seed's --save-per-iteration)")
        format: Literal["parquet", "jsonl", "json"] = "parquet"

        @field_validator("where", mode="before")
        @classmethod
        def _one_or_many(cls, v):
            return [v] if isinstance(v, str) else v

        @field_validator("where")
        @classmethod
        def _syntax(cls, v):
            return [check_syntax(e) for e in v]

        @model_validator(mode="after")
        def _range(self):
            if self.min_pass_rate is not None and self.max_pass_rate is not None and self.min_pass_rate > self.max_pass_rate:
                raise ValueError(f"min_pass_rate {self.min_pass_rate} is above max_pass_rate {self.max_pass_rate}")
            return self

    inputs = {"data": Dataset}
    outputs = {"data": Dataset, "report": Report}

    # ------------------------------------------------------------------ run
    def run(self, ctx) -> None:
        cfg = self.config
        who = ctx.step_name or self.name
        files = ctx.inputs["data"].parts()
        if not files:
            raise StepError(f"{who}: input dataset {ctx.inputs['data'].path} has no .parquet, .jsonl or .json files")
        uses_rate = cfg.max_pass_rate is not None or cfg.min_pass_rate is not None
        run = _FilterRun(cfg, who, ctx, files, uses_rate)
        run.execute()


class _FilterRun:
    def __init__(self, cfg, who, ctx, files: list[Path], uses_rate: bool):
        from steps.common.arrowio import parquet_rows

        self.cfg, self.who, self.ctx, self.files, self.uses_rate = cfg, who, ctx, files, uses_rate
        self.parts_dir = ctx.scratch / "parts"
        self.state_path = ctx.scratch / "filter_state.json"
        self.sizes = {str(p): p.stat().st_size for p in files}
        self.total = sum(parquet_rows(p, who) for p in files) if all(p.suffix == ".parquet" for p in files) else None
        self.signature = hashlib.sha256(json.dumps(
            [cfg.model_dump(mode="json"), [(p.name, self.sizes[str(p)]) for p in files]], sort_keys=True
        ).encode()).hexdigest()
        self.predicates = None
        self.ext = {"parquet": ".parquet", "jsonl": ".jsonl", "json": ".json"}[cfg.format]

    # ---------------------------------------------------------------- state
    def load_state(self) -> dict[str, Any]:
        fresh = {"signature": self.signature, "parts": 0, "next_row": 0, "tally": Tally().to_json(), "done": False}
        if not self.state_path.exists():
            return fresh
        try:
            state = json.loads(self.state_path.read_text())
        except json.JSONDecodeError:
            return fresh
        if state.get("signature") != self.signature:
            return fresh
        # a part written after the last checkpoint is not trusted; parts named in it must exist
        if not all((self.parts_dir / self.part_name(i)).exists() for i in range(state["parts"])):
            return fresh
        return state

    def save_state(self, parts: int, next_row: int, tally: Tally, done: bool = False) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"signature": self.signature, "parts": parts, "next_row": next_row,
                                   "tally": tally.to_json(), "done": done}))
        os.replace(tmp, self.state_path)

    def part_name(self, i: int) -> str:
        return f"part-{i:05d}{self.ext}"

    # ---------------------------------------------------------------- main loop
    def execute(self) -> None:
        import pyarrow as pa

        from steps.common.arrowio import BatchReader, write_table

        cfg, ctx = self.cfg, self.ctx
        state = self.load_state()
        if state["next_row"] == 0 and state["parts"] == 0:
            if self.parts_dir.exists():
                for stale in self.parts_dir.iterdir():
                    stale.unlink()
        else:
            ctx.log.info("resuming after part %d (input row %d)", state["parts"] - 1, state["next_row"])
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        parts, next_row, committed = state["parts"], state["next_row"], Tally(state["tally"])
        self.resumed_from = (parts, next_row) if next_row else None
        tally = committed
        buffer: list[Any] = []
        buffered = 0
        schema = None

        def flush(upto_row: int, upto_tally: Tally, final: bool = False) -> None:
            nonlocal parts, buffer, buffered
            if buffered or (final and parts == 0):
                if buffer:
                    try:
                        table = pa.concat_tables(buffer, promote_options="permissive")
                    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                        raise StepError(f"{self.who}: kept rows have columns whose type changes between "
                                        f"batches or files ({e}); make the input's column types consistent") from None
                else:
                    table = (schema or pa.schema([])).empty_table()
                write_table(table, self.parts_dir / self.part_name(parts), cfg.format)
                parts += 1
            buffer, buffered = [], 0
            self.save_state(parts, upto_row, upto_tally, done=final)
            if not final:
                _part_done(parts - 1)

        pos = 0  # global index of the next input row
        unreported = 0
        with ctx.progress(self.total, "filtering rows") as bar:
            if next_row:
                bar.update(next_row)
            for path in self.files:
                skip = max(0, next_row - pos)
                reader = BatchReader(path, cfg.batch_size, self.who, skip=skip)
                row = pos + skip
                for batch in reader:
                    verdict = self.judge(batch, path)
                    if schema is None:
                        schema = self.out_schema(batch)
                    kept_idx = verdict.kept.nonzero()[0]
                    if len(kept_idx):
                        kept = self.select(batch).take(pa.array(kept_idx))
                        start = 0
                        while start < len(kept_idx):
                            piece = kept.slice(start, cfg.save_every - buffered)
                            buffer.append(pa.Table.from_batches([piece]))
                            buffered += piece.num_rows
                            start += piece.num_rows
                            if buffered == cfg.save_every:
                                cut = int(kept_idx[start - 1]) + 1
                                flush(row + cut, tally.add(verdict.tally(cut)))
                    tally = tally.add(verdict.tally(batch.num_rows))
                    row += batch.num_rows
                    unreported += batch.num_rows
                    if unreported >= 100_000:  # a display refresh per batch would cost more than the batch
                        bar.update(unreported)
                        unreported = 0
                pos += reader.rows_seen
            bar.update(unreported)
            flush(pos, tally, final=True)
        self.finish(parts, tally)

    def select(self, batch):
        return batch.select(self.cfg.columns) if self.cfg.columns else batch

    def out_schema(self, batch):
        return self.select(batch).schema

    # ---------------------------------------------------------------- one batch
    def judge(self, batch, path: Path) -> BatchVerdict:
        import numpy as np

        cfg, n = self.cfg, batch.num_rows
        names = batch.schema.names
        if cfg.columns:
            missing = [c for c in cfg.columns if c not in names]
            if missing:
                raise StepError(f"{self.who}: {path}: no column(s) {', '.join(missing)} to keep "
                                f"(columns: {', '.join(names)})")
        rates = codes = labels = None
        if self.uses_rate:
            if cfg.pass_rate_column not in names:
                raise StepError(
                    f"{self.who}: {path}: no column {cfg.pass_rate_column!r} to filter on "
                    f"(columns: {', '.join(names)}); set pass_rate_column to the column holding pass rates")
            from steps.filter.rowexpr import Unsupported

            try:
                rates, codes, labels = read_rates(batch.column(cfg.pass_rate_column))
            except Unsupported as e:
                raise StepError(f"{self.who}: {path}: column {cfg.pass_rate_column!r}: {e}") from None
            unparse = np.isnan(rates)
            with np.errstate(invalid="ignore"):
                in_range = ~unparse
                if cfg.max_pass_rate is not None:
                    in_range &= rates <= cfg.max_pass_rate
                if cfg.min_pass_rate is not None:
                    in_range &= rates >= cfg.min_pass_rate
            thr_drop = ~unparse & ~in_range
            na_drop = unparse if cfg.unparseable == "drop" else np.zeros(n, dtype=bool)
        else:
            unparse = thr_drop = na_drop = np.zeros(n, dtype=bool)
        stage1 = ~thr_drop & ~na_drop
        pred, pred_errors, first = self.predicate_mask(batch, path)
        if pred_errors is not None:
            pred_errors = pred_errors & stage1  # errors only count where the predicate decided
        return BatchVerdict(rates, codes, labels, unparse, thr_drop, na_drop, stage1 & ~pred, stage1 & pred,
                            pred_errors, first)

    def predicate_mask(self, batch, path: Path):
        import numpy as np
        from simpleeval import FunctionNotDefined, InvalidExpression, NameNotDefined

        if not self.cfg.where:
            return np.ones(batch.num_rows, dtype=bool), None, None
        if self.predicates is None:
            from steps.filter.rowexpr import Predicates

            self.predicates = Predicates(self.cfg.where, count_tokens=self.token_counter())
        was_vectorized = self.predicates.vectorized
        try:
            result = self.predicates.mask(batch)
        except NameNotDefined as e:
            raise StepError(f"{self.who}: where {e.expression!r}: unknown column {e.name!r} in {path} "
                            f"(columns: {', '.join(batch.schema.names)})") from None
        except FunctionNotDefined as e:
            raise StepError(f"{self.who}: where {e.expression!r}: unknown function {e.func_name!r} "
                            f"(functions: {', '.join(FUNCTION_NAMES)})") from None
        except InvalidExpression as e:
            raise StepError(f"{self.who}: where: {e}") from None
        if was_vectorized and not self.predicates.vectorized:
            self.ctx.log.warning("where: evaluating row by row (%s)", self.predicates.fallback_reason)
        return result

    def token_counter(self):
        if not self.cfg.tokenizer:
            return None
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.cfg.tokenizer)
        except Exception as e:
            raise StepError(f"{self.who}: tokenizer {self.cfg.tokenizer!r} cannot be loaded ({e})") from None

        def count(texts: list[str]) -> list[int]:
            return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

        return count

    # ---------------------------------------------------------------- outputs
    def finish(self, parts: int, tally: Tally) -> None:
        import shutil

        out = self.ctx.out("data")
        for i in range(parts):
            src, dst = self.parts_dir / self.part_name(i), out / self.part_name(i)
            dst.unlink(missing_ok=True)
            try:
                os.link(src, dst)  # instant; scratch keeps its copy until the entry is committed
            except OSError:
                shutil.copy2(src, dst)
        cfg = self.cfg
        metrics = {
            **{k: v for k, v in tally.to_json().items() if k not in ("hist", "unparseable_values", "first_error")},
            "dropped": tally.rows_in - tally.kept,
            "kept_fraction": round(tally.kept / tally.rows_in, 6) if tally.rows_in else 0.0,
            "unparseable_values": dict(tally.unparseable_values.most_common(20)),
            "parts": parts,
            "save_every": cfg.save_every,
            "pass_rate_column": cfg.pass_rate_column if self.uses_rate else None,
            "max_pass_rate": cfg.max_pass_rate,
            "min_pass_rate": cfg.min_pass_rate,
            "where": cfg.where,
            "where_evaluation": None if not cfg.where else (
                "vectorized" if self.predicates is None or self.predicates.vectorized else "row-wise"),
            "resumed_from": None if not self.resumed_from else
            {"parts": self.resumed_from[0], "input_row": self.resumed_from[1]},
            "pass_rate_histogram": {"bins": HIST_BINS, "counts": tally.hist},
        }
        if tally.first_error:
            metrics["first_predicate_error"] = tally.first_error
        self.ctx.write_metrics("report", metrics)
        if self.uses_rate:
            _histogram_figure(self.ctx.out("report") / "pass_rate.png", tally, cfg)
        self.ctx.log.info("kept %d of %d rows (%d unparseable) in %d part(s)",
                          tally.kept, tally.rows_in, tally.unparseable, parts)


def _histogram_figure(path: Path, tally: Tally, cfg) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 1.0 / HIST_BINS
    ax.bar([i * width for i in range(HIST_BINS)], tally.hist, width=width, align="edge", color="#4477aa",
           label="parseable")
    ax.bar([1.0 + width], [tally.unparseable], width=width, align="edge", color="#bb5566",
           label=f"unparseable ({tally.unparseable})")
    for bound in (cfg.min_pass_rate, cfg.max_pass_rate):
        if bound is not None:
            ax.axvline(bound, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel(cfg.pass_rate_column)
    ax.set_ylabel("rows")
    ax.set_title(f"kept {tally.kept} of {tally.rows_in}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ==================================================================== filter.llm_judge

INFERENCE_PROMPT = ("Solve the following math problem. Make sure to put the answer (and only answer) inside "
                    "\\boxed{}.\n\n{problem}")
JUDGE_PROMPT = (
    "You will be given a math problem, a reference answer and a predicted answer. Decide whether the predicted "
    "answer is mathematically equivalent to the reference answer. Ignore formatting differences.\n\n"
    "Problem: {problem}\n\nReference answer: {reference}\n\nPredicted answer: {predicted}\n\n"
    "Reply with one line: \"Judgement: Yes\" if they are equivalent, otherwise \"Judgement: No\"."
)


def math_verify_decision(pred: str | None, ref: str | None) -> bool | None:
    """True/False when math-verify (or exact rationals) can read both answers; None when it cannot."""
    import threading

    from steps.common.mathcheck import normalize_number

    if pred is None or ref is None or not str(pred).strip() or not str(ref).strip():
        return None
    pred, ref = str(pred).strip(), str(ref).strip()
    a, b = normalize_number(pred), normalize_number(ref)
    if a is not None and b is not None:
        return a == b
    if _has_words(pred) or _has_words(ref):
        return None  # "a square", "dark blue": math-verify would read them as products of symbols
    from math_verify import parse, verify

    main = threading.current_thread() is threading.main_thread()
    kw = {} if main else {"parsing_timeout": None}
    try:
        gold = parse(_latex(ref), **kw)
        guess = parse(_latex(pred), **kw)
    except Exception:
        return None
    if not gold or not guess:
        return None
    try:
        return bool(verify(gold, guess, **({} if main else {"timeout_seconds": None})))
    except Exception:
        return None


_MATH_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
               "log", "ln", "lg", "exp", "lim", "max", "min", "gcd", "lcm", "mod", "det", "deg", "pi", "inf",
               "infty", "sqrt", "frac", "text", "mathrm", "and", "or", "dx", "dy", "dt"}


def _has_words(s: str) -> bool:
    """Natural-language words (not LaTeX commands or function names) in an answer."""
    import re

    plain = re.sub(r"\\[A-Za-z]+", " ", s)
    return any(w.lower() not in _MATH_WORDS for w in re.findall(r"[A-Za-z]{2,}", plain))


def _latex(s: str) -> str:
    return s if s.startswith(("$", "\\(", "\\[")) else f"${s}$"


def parse_judgement(text: str) -> bool | None:
    import re

    found = re.findall(r"judg(?:e)?ment\s*[:：]\s*\**\s*(yes|no)\b", text, re.I)
    if not found:
        found = re.findall(r"\bcorrect\s*[:：]\s*\**\s*(yes|no)\b", text, re.I)
    return None if not found else found[-1].lower() == "yes"


@register("filter.llm_judge")
class LLMJudge(Step):
    """An inference model answers each problem; math-verify (else a judgement model) decides if it matches the reference.

    A response with no extractable answer is incorrect without asking the judge; the judge
    sees only answers math-verify cannot read (words, \\text{...}, unparseable LaTeX).
    """

    version = "1"
    deterministic = False

    class Config(StepConfig):
        inference_model: str | None = Field("Qwen/Qwen3-32B", description="a bound `inference_model` input wins")
        judgement_model: str | None = Field("Qwen/Qwen3-32B", description="a bound `judgement_model` input wins")
        inference_backend: BackendConfig = BackendConfig()
        judgement_backend: BackendConfig = BackendConfig()
        inference_prompt: str = INFERENCE_PROMPT
        judgement_prompt: str = JUDGE_PROMPT
        chat: bool = True
        max_new_tokens: int = Field(4096, ge=1, description="inference budget")
        judgement_max_new_tokens: int = Field(512, ge=1)
        temperature: float = 0.0
        keep: Literal["incorrect", "correct", "all"] = Field(
            "incorrect", description="rows to pass on: the ones the inference model got wrong (hard), right, or all")
        start: float = Field(0.0, ge=0.0, le=1.0, description="first fraction of the input to judge (the seed's --start-from-percentage)")
        end: float = Field(1.0, ge=0.0, le=1.0, description="last fraction (the seed's --end-at-percentage)")
        problem_column: str | None = None
        answer_column: str | None = None
        retries: int = Field(2, ge=0)
        max_failed_fraction: float = MAX_FAILED_FIELD
        keep_truncated: bool = Field(False, description="use generations cut at the token budget instead of setting them aside")
        shard_size: int | None = Field(None, ge=1)
        seed: int = 0

        @model_validator(mode="after")
        def _range(self):
            if self.start >= self.end:
                raise ValueError(f"start {self.start} must be below end {self.end}")
            return self

    inputs = {"data": Dataset, "inference_model": In(Model, required=False),
              "judgement_model": In(Model, required=False)}
    outputs = {"data": Dataset, "judged": Dataset, "failed": Dataset, "report": Report}

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        c = self.config
        return (served_model_problem(c.inference_backend, bound, "inference_model", "inference_model")
                or served_model_problem(c.judgement_backend, bound, "judgement_model", "judgement_model"))

    def run(self, ctx) -> None:
        from steps.generate import model as gen
        from steps.backends.base import Sampling
        from steps.backends.rows import generate_rows

        from steps.generate.from_origin import ANSWER_COLUMNS, PROBLEM_COLUMNS, pick_column, prompt_for
        from steps.common.mathcheck import extract_answer

        c = self.config
        who = ctx.step_name or self.name
        for name, tmpl, fields in (("inference_prompt", c.inference_prompt, ("{problem}",)),
                                   ("judgement_prompt", c.judgement_prompt, ("{reference}", "{predicted}"))):
            missing = [f for f in fields if f not in tmpl]
            if missing:
                raise StepError(f"{who}: {name} must contain {', '.join(missing)}")
        rows = ctx.inputs["data"].read()
        total = len(rows)
        lo, hi = int(total * c.start), int(total * c.end)
        rows = rows[lo:hi]
        pcol = pick_column(rows, c.problem_column, PROBLEM_COLUMNS, "problem", who)
        acol = pick_column(rows, c.answer_column, ANSWER_COLUMNS, "answer", who)
        records = [dict(r, _row=lo + i) for i, r in enumerate(rows)]
        inf_model = gen.resolve_model(ctx, c, slot="inference_model", field="inference_model")
        judge_model = gen.resolve_model(ctx, c, slot="judgement_model", field="judgement_model")
        same = inf_model == judge_model and c.inference_backend == c.judgement_backend
        failed: list[dict[str, Any]] = []
        judged: list[dict[str, Any]] = []
        counts = {"rows_total": total, "range": [lo, hi], "rows": len(records), "correct": 0, "incorrect": 0,
                  "by_math_verify": 0, "by_llm_judge": 0, "by_no_answer": 0, "undecided": 0, "failed": 0}
        if records:
            backend = gen.load_backend(c.inference_backend, inf_model)
            judge = backend if same else None
            try:
                res = generate_rows(
                    ctx, backend, records, name="inference",
                    prompt_of=lambda r: prompt_for(r[pcol], c.inference_prompt, None, c.chat),
                    sampling=Sampling(temperature=c.temperature, max_new_tokens=c.max_new_tokens, seed=c.seed),
                    retries=c.retries, shard_size=c.shard_size or c.inference_backend.shard_size,
                    keep_truncated=c.keep_truncated, instruction_of=lambda r: r.get(pcol),
                    max_failed_fraction=c.max_failed_fraction)
                failed += [dict(f, problem=f.pop("instruction", None), stage="inference") for f in res.failed]
                pending = []
                for rec, texts in res.ok:
                    pred = extract_answer(texts[0])
                    verdict = math_verify_decision(pred, rec.get(acol))
                    item = dict(rec, judge_response=texts[0], judge_predicted=pred)
                    if pred is None:  # no \boxed{}, <answer> or number at all: nothing for a judge to compare
                        item.update(judge_verdict="incorrect", judge_method="no_answer")
                        judged.append(item)
                    elif verdict is None:
                        pending.append(item)
                    else:
                        item.update(judge_verdict="correct" if verdict else "incorrect", judge_method="math_verify")
                        judged.append(item)
                if pending:
                    if judge is None:
                        backend.close()
                        backend = None
                        judge = gen.load_backend(c.judgement_backend, judge_model)
                    jres = generate_rows(
                        ctx, judge, pending, name="judgement",
                        prompt_of=lambda r: prompt_for(
                            c.judgement_prompt.replace("{problem}", str(r[pcol])).replace("{reference}", str(r.get(acol)))
                            .replace("{predicted}", str(r["judge_predicted"] if r["judge_predicted"] is not None
                                                        else r["judge_response"][-2000:])),
                            "{problem}", None, c.chat),
                        sampling=Sampling(temperature=0.0, max_new_tokens=c.judgement_max_new_tokens, seed=c.seed),
                        retries=c.retries, shard_size=c.shard_size or c.judgement_backend.shard_size,
                        validate=lambda t: None if parse_judgement(t) is not None else "no 'Judgement: Yes/No' line",
                        keep_truncated=c.keep_truncated, instruction_of=lambda r: r.get(pcol),
                        max_failed_fraction=c.max_failed_fraction)
                    for rec, texts in jres.ok:
                        verdict = parse_judgement(texts[0])
                        judged.append(dict(rec, judge_verdict="correct" if verdict else "incorrect",
                                           judge_method="llm_judge", judge_output=texts[0]))
                    failed += [dict(f, problem=f.pop("instruction", None), stage="judgement") for f in jres.failed]
                    counts["undecided"] = len(jres.failed)
            finally:
                for b in {id(x): x for x in (backend, judge) if x is not None}.values():
                    b.close()
        judged.sort(key=lambda r: r["_row"])
        for r in judged:
            counts[r["judge_verdict"]] += 1
            counts["by_" + r["judge_method"]] += 1
            r.pop("_row", None)
        kept = [r for r in judged if c.keep == "all" or r["judge_verdict"] == c.keep]
        counts.update(failed=len(failed), kept=len(kept), keep=c.keep, inference_model=inf_model,
                      judgement_model=judge_model)
        ctx.write_dataset("data", kept)
        ctx.write_dataset("judged", judged)
        ctx.write_dataset("failed", failed)
        ctx.write_metrics("report", counts)
        ctx.log.info("llm_judge: rows %d-%d of %d: %d correct, %d incorrect (%d by math-verify, %d by the judge), "
                     "%d set aside; kept %d (%s)", lo, hi, total, counts["correct"], counts["incorrect"],
                     counts["by_math_verify"], counts["by_llm_judge"], len(failed), len(kept), c.keep)
