"""filter.by_label: keep rows by precomputed labels (fast, streaming). The LLM judge is in steps/judge/.

It keeps OpenMathReasoning-style rows by pass rate and row predicates, streaming record batches
and writing parts of `save_every` kept rows:

    - id: hard
      uses: filter.by_label
      with:
        max_pass_rate: 0.1            # keep pass rate <= 0.1 (lower = harder)
        where: ['problem_type == "has_answer_extracted"', 'tokens(generated_solution) <= 16000']
        batch_size: 5000              # rows per record batch in memory
        save_every: 10000             # kept rows per output part
      inputs: {data: "${steps.openmath.data}"}

It decides on the label columns first (the pass rate, the columns `where` reads) and reads the
other columns only for the rows it keeps. The common case (parquet written by Arrow, plain
columns, a text pass rate, no `where` or `columns`, parquet out) is done by Polars alone
(steps/filter/polars_lane.py); other parquet by a pyarrow decision pass and a Polars scan of
the kept rows (steps/filter/scan.py); JSON inputs are read whole, batch by batch. Memory is
bounded by `batch_size`, `save_every` and the input's row-group size, not by the input. Each
finished part is checkpointed in `ctx.scratch`; a killed run resumes after the last finished
part. A part's bytes depend on its rows, the input's schema and the input's kind (the Polars
lane writes with Polars, the other paths with pyarrow), not on `batch_size`, threads or a
resume. The pass-rate histogram is `report/pass_rate.svg`.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from engine.recipe.artifact_types import Dataset, Report
from engine.recipe.errors import StepError
from engine.recipe.step import EXECUTION_ONLY, Step, StepConfig, register
from steps.filter.rowexpr import FUNCTION_NAMES, check_syntax, referenced_names

HIST_BINS = 20
MAX_DISTINCT_UNPARSEABLE = 1000
DECISION_ROWS = 1 << 18  # rows per batch when deciding on the pass-rate column alone (a few bytes a row)


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

    @classmethod
    def of_texts(cls, counts: Counter, rates: dict[str | None, float | None], cfg) -> "Tally":
        """Rows counted by pass-rate text; `rates[text]` is its rate (None: not a number)."""
        t = cls()
        for text, n in counts.items():
            rate = rates[text]
            t.rows_in += n
            if rate is None:
                t.unparseable += n
                t.unparseable_values["<null>" if text is None else text[:80]] += n
                if cfg.unparseable == "drop":
                    t.dropped_unparseable += n
                else:
                    t.kept += n
                continue
            t.hist[int(min(max(rate * HIST_BINS, 0.0), HIST_BINS - 1))] += n
            if ((cfg.max_pass_rate is None or rate <= cfg.max_pass_rate)
                    and (cfg.min_pass_rate is None or rate >= cfg.min_pass_rate)):
                t.kept += n
            else:
                t.dropped_by_threshold += n
        return t

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
    """Per-row outcome of one batch as numpy masks; `tally(lo, hi)` counts rows lo..hi-1.

    `labels[codes[i]]` is row i's raw pass-rate value (to report which unparseable values were
    seen). A text column comes as codes of distinct values, `values[code]` each one's rate (NaN:
    unparseable), so counting goes by code; a numeric one as per-row `rates`.
    """

    def __init__(self, rates, codes, labels, values, masks, pred_errors, first_error):
        self.rates, self.codes, self.labels, self.values = rates, codes, labels, values
        self.unparse, self.thr_drop, self.na_drop, self.pred_drop, self.kept = masks
        self.pred_errors, self.first_error = pred_errors, first_error

    def tally(self, lo: int, hi: int) -> Tally:
        import numpy as np

        t = Tally()
        t.rows_in = hi - lo
        t.kept = int(np.count_nonzero(self.kept[lo:hi]))
        t.dropped_by_threshold = int(np.count_nonzero(self.thr_drop[lo:hi]))
        t.dropped_unparseable = int(np.count_nonzero(self.na_drop[lo:hi]))
        t.dropped_by_predicate = int(np.count_nonzero(self.pred_drop[lo:hi]))
        t.unparseable = int(np.count_nonzero(self.unparse[lo:hi]))
        t.predicate_errors = int(np.count_nonzero(self.pred_errors[lo:hi])) if self.pred_errors is not None else 0
        t.first_error = self.first_error if t.predicate_errors else None
        if self.values is not None:
            per_code = np.bincount(self.codes[lo:hi], minlength=len(self.labels))
            t.hist, unparseable = _histogram(self.values, per_code)
        elif self.rates is not None:
            rates = self.rates[lo:hi]
            t.hist, _ = _histogram(rates, np.ones(len(rates), dtype=np.int64))
            unparseable = np.bincount(self.codes[lo:hi][self.unparse[lo:hi]], minlength=len(self.labels))
        else:
            return t
        for code in np.flatnonzero(unparseable):
            t.unparseable_values[self.labels[code]] += int(unparseable[code])
        return t


def _histogram(rates, counts):
    """(histogram of the parseable rates, each weighted by its count; counts of the unparseable)."""
    import numpy as np

    nan = np.isnan(rates)
    bins = np.clip(rates[~nan] * HIST_BINS, 0, HIST_BINS - 1).astype(np.int64)  # clipped first: inf is a rate too
    hist = np.bincount(bins, weights=counts[~nan], minlength=HIST_BINS)
    return [int(x) for x in hist], np.where(nan, counts, 0)


_PARSED: dict[str, float] = {}  # distinct pass-rate strings seen so far -> value (NaN: not a number)


def read_rates(raw):
    """A pass-rate column as (rates, codes, labels, values): row i's value is `labels[codes[i]]`.

    Text is parsed once per distinct value (the column has a few dozen), not per row: `values`
    is each code's rate (float64, NaN: unparseable) and `rates` is None. A dictionary column
    (how the projected scan reads it) is already in that form. Numbers come as per-row `rates`
    (NaN where unparseable; codes 0 NaN, 1 null) and `values` None.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from steps.filter.rowexpr import parse_number_array
    from steps.filter.scan import numpy_of

    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks()
    t = raw.type
    if pa.types.is_dictionary(t) and not (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
        raw = raw.cast(t.value_type)
        t = raw.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        raw = pc.dictionary_encode(raw)
        t = raw.type
    if pa.types.is_dictionary(t):
        distinct = raw.dictionary.to_pylist()
        values = _parse_distinct(distinct, raw.dictionary)
        labels = ["<null>" if v is None else v[:80] for v in distinct] + ["<null>"]
        indices = raw.indices if raw.indices.null_count == 0 else pc.fill_null(raw.indices, len(labels) - 1)
        return None, numpy_of(indices).astype(np.int64), labels, np.append(values, np.nan)
    rates = parse_number_array(raw).to_numpy(zero_copy_only=False).astype(np.float64)  # may raise Unsupported
    codes = np.where(pc.is_null(raw).to_numpy(zero_copy_only=False), 1, 0)
    return rates, codes, ["nan", "<null>"], None


def _parse_distinct(distinct: list[str | None], array=None):
    """Each distinct pass-rate text as float64 (NaN: not a number); `array`: the texts as Arrow."""
    import numpy as np

    from steps.filter.rowexpr import parse_number, parse_number_array

    if len(distinct) > 1024:  # unusual: parse the texts with Arrow kernels
        if array is None:
            import pyarrow as pa

            array = pa.array(distinct, pa.string())
        return parse_number_array(array).to_numpy(zero_copy_only=False).astype(np.float64)
    for v in distinct:
        if v not in _PARSED:
            if len(_PARSED) > 100_000:
                _PARSED.clear()
            x = parse_number(v)
            _PARSED[v] = np.nan if x is None else x
    return np.array([_PARSED[v] for v in distinct], dtype=np.float64)


def rate_bounds(rates, cfg):
    """(unparseable, within [min_pass_rate, max_pass_rate]) as numpy masks."""
    import numpy as np

    unparse = np.isnan(rates)
    with np.errstate(invalid="ignore"):
        in_range = ~unparse
        if cfg.max_pass_rate is not None:
            in_range &= rates <= cfg.max_pass_rate
        if cfg.min_pass_rate is not None:
            in_range &= rates >= cfg.min_pass_rate
    return unparse, in_range


@register("filter.by_label")
class ByLabel(Step):
    """Keep rows by pass-rate threshold and column predicates; streams record batches (bounded memory)."""

    # 2: a part is written from one chunk per column; version 1's parquet bytes followed
    # batch_size (execution-only), so two runs with one key could write different bytes.
    # 3: the common case is written by Polars (steps/filter/polars_lane.py): other bytes, same rows
    # 4: JSON inputs keep a field the first row of a batch lacked, parts share one schema, and a
    # row-wise `where` runs the vectorized kernels (RE2, Arrow's split and case): other rows kept
    # at the edges
    version = "4"

    class Config(StepConfig):
        max_pass_rate: float | None = Field(0.1, description="keep rows with pass rate <= this; "
                                                             "null: no upper bound")
        min_pass_rate: float | None = Field(None, description="keep rows with pass rate >= this; null: no lower bound")
        pass_rate_column: str = "pass_rate_72b_tir"
        unparseable: Literal["drop", "keep"] = Field("drop", description='rows whose pass rate is not a number '
                                                                         '("n/a"): counted, then dropped or kept')
        where: list[str] = Field(default_factory=list,
                                 description="row predicates in the expression language; a row must satisfy all")
        tokenizer: str | None = Field(None, description="tokenizer (local dir or Hub id) for tokens(); "
                                                        "default: an approximate count")
        columns: list[str] | None = Field(None, description="columns to write (default: all)")
        batch_size: int = Field(5000, ge=1,
                                description="rows per record batch; memory only",
                                json_schema_extra=EXECUTION_ONLY)
        save_every: int = Field(10000, ge=1,
                                description="kept rows per output part")
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
            if (self.min_pass_rate is not None and self.max_pass_rate is not None
                    and self.min_pass_rate > self.max_pass_rate):
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
        _FilterRun(cfg, who, ctx, files, uses_rate).execute()


class _FilterRun:
    def __init__(self, cfg, who, ctx, files: list[Path], uses_rate: bool):
        self.cfg, self.who, self.ctx, self.files, self.uses_rate = cfg, who, ctx, files, uses_rate
        self.parts_dir = ctx.scratch / "parts"
        self.state_path = ctx.scratch / "filter_state.json"
        self.sizes = {str(p): p.stat().st_size for p in files}
        self.predicates = None
        self.where = set(referenced_names(cfg.where))  # the names `where` reads
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

    def save_state(self, parts: int, next_row: int, tally: Tally | None, done: bool = False) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"signature": self.signature, "parts": parts, "next_row": next_row,
                                   "tally": tally and tally.to_json(), "done": done}))
        os.replace(tmp, self.state_path)

    def part_name(self, i: int) -> str:
        return f"part-{i:05d}{self.ext}"

    # ---------------------------------------------------------------- main loop
    def execute(self) -> None:
        from steps.filter import polars_lane

        ctx = self.ctx
        lane = polars_lane.plan(self)
        # a checkpoint of the Polars lane holds no tally: the two paths never resume each other
        self.signature = hashlib.sha256(json.dumps(
            [self.cfg.model_dump(mode="json"), [(p.name, self.sizes[str(p)]) for p in self.files]]
            + (["polars"] if lane else []), sort_keys=True).encode()).hexdigest()
        state = self.load_state()
        if state["next_row"] == 0 and state["parts"] == 0:
            if self.parts_dir.exists():
                for stale in self.parts_dir.iterdir():
                    stale.unlink()
        else:
            ctx.log.info("resuming after part %d (input row %d)", state["parts"] - 1, state["next_row"])
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        next_row = state["next_row"]
        self.resumed_from = (state["parts"], next_row) if next_row else None
        parts = state["parts"]
        self.writer = polars_lane.PolarsPartWriter(self, parts, lane) if lane else PartWriter(self, parts)
        try:
            if lane:
                tally = polars_lane.filter_files(self, lane, next_row, parts)
            else:
                from steps.filter.scan import system_memory_pool

                with system_memory_pool():
                    tally = self.filter_files(next_row, Tally(state["tally"]))
        finally:
            self.writer.close()
        self.finish(self.writer.parts, tally)

    def filter_files(self, next_row: int, tally: Tally) -> Tally:
        """Every input row from `next_row` on; the last part and checkpoint are written on return."""
        from steps.common.arrowio import parquet_rows

        pos = 0  # global index of the next input row
        unreported = 0
        total = sum(parquet_rows(p, self.who) for p in self.files) if all(
            p.suffix.lower() == ".parquet" for p in self.files) else None
        with self.ctx.progress(total, "filtering rows") as bar:
            if next_row:
                bar.update(next_row)
            for path in self.files:
                skip = max(0, next_row - pos)
                scan = self.open_scan(path, skip)
                for row, batch in scan:
                    tally = self.filter_batch(scan, batch, path, pos + row, tally)
                    unreported += batch.num_rows
                    if unreported >= 100_000:  # a display refresh per batch would cost more than the batch
                        bar.update(unreported)
                        unreported = 0
                pos += scan.rows_seen
            bar.update(unreported)
            self.writer.flush(pos, tally, final=True)
        return tally

    def open_scan(self, path: Path, skip: int):
        """A projected scan of a parquet file where it can be done; else every column of every row."""
        from steps.filter import scan

        cfg = self.cfg
        plan, why_not = self.projection(path)
        if plan is None:
            self.ctx.log.info("%s: reading every column (%s)", path.name, why_not)
            return scan.MaterialisedScan(path, cfg.batch_size, self.who, skip, cfg.columns)
        schema, decision = plan
        superset = self.superset(schema, path, skip) if self.uses_rate else None
        rows = max(cfg.batch_size, DECISION_ROWS) if decision == [cfg.pass_rate_column] else cfg.batch_size
        # as a dictionary the pass-rate texts are parsed once each; `where`'s kernels want plain text. Only
        # a text column: pyarrow cannot read a list or struct as one, and blamed the file (KeyError b'p')
        text = str(schema.field(cfg.pass_rate_column).type) in ("string", "large_string") if self.uses_rate else False
        dictionary = [cfg.pass_rate_column] if text and cfg.pass_rate_column not in self.where else []
        self.ctx.log.info("%s: projected scan (decides on %s)", path.name, ", ".join(decision))
        return scan.ProjectedScan(path, schema, decision, dictionary, superset, cfg.batch_size, rows, self.who, skip,
                                  cfg.columns)

    def projection(self, path: Path):
        """((schema, decision columns), None) for a projected scan, or (None, why not)."""
        from steps.common.arrowio import kind_of, open_parquet
        from steps.filter.scan import ROW_INDEX, polars_safe

        cfg = self.cfg
        kind = kind_of(path)
        if kind != "parquet":
            return None, f"a {'JSON Lines' if kind == 'jsonl' else 'JSON'} file"
        pf = open_parquet(path, self.who)
        schema = pf.schema_arrow
        names = schema.names
        where = self.where
        needed = set(cfg.columns or names) | where | ({cfg.pass_rate_column} if self.uses_rate else set())
        unsafe = [f"{c!r} of type {schema.field(c).type}" for c in cfg.columns or names
                  if c in names and not polars_safe(schema.field(c).type)]
        why_not = ("duplicate column names" if len(set(names)) != len(names) else
                   f"a column is named {ROW_INDEX}" if ROW_INDEX in names else
                   "columns are missing" if not needed <= set(names) else  # the materialised scan names them
                   "more than 2^32 rows" if pf.metadata.num_rows >= 2 ** 32 else
                   f"column {unsafe[0]}" if unsafe else
                   "every row is kept" if not (where or self.uses_rate) else None)
        if why_not:
            return None, why_not
        return (schema, [c for c in names if c in where or (self.uses_rate and c == cfg.pass_rate_column)]), None

    def superset(self, schema, path: Path, skip: int):
        """A Polars predicate true on every row the pass-rate bounds keep (None: every row)."""
        import pyarrow as pa

        from steps.filter import scan

        cfg = self.cfg
        t = schema.field(cfg.pass_rate_column).type
        keep_na = cfg.unparseable == "keep"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            def keeps(texts):
                unparse, in_range = rate_bounds(_parse_distinct(texts), cfg)
                return in_range | (unparse & keep_na)

            return scan.string_superset(path, cfg.pass_rate_column, self.who, skip, keeps, keep_na)
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return scan.numeric_superset(cfg.pass_rate_column, cfg.min_pass_rate, cfg.max_pass_rate, keep_na)
        return None

    def filter_batch(self, scan, batch, path: Path, row: int, tally: Tally) -> Tally:
        """Keep one batch's rows (input rows `row`...); returns the tally including this batch.

        Kept rows are fetched at most `batch_size` at a time and written in parts of `save_every`;
        a full part is checkpointed after its last input row.
        """
        verdict = self.judge(batch, scan.columns, path)
        writer = self.writer
        if writer.schema is None:
            writer.schema = scan.out_schema()
        kept_idx = verdict.kept.nonzero()[0]
        start = counted = 0
        while start < len(kept_idx):
            n = min(self.cfg.save_every - writer.buffered, self.cfg.batch_size)
            writer.add(scan.rows(kept_idx[start:start + n]))
            start += n
            if writer.buffered == self.cfg.save_every:
                cut = int(kept_idx[start - 1]) + 1
                tally, counted = tally.add(verdict.tally(counted, cut)), cut
                writer.flush(row + cut, tally)
        return tally.add(verdict.tally(counted, batch.num_rows))

    # ---------------------------------------------------------------- one batch
    def judge(self, batch, names: list[str], path: Path) -> BatchVerdict:
        """Per-row verdicts of one batch; `names` are the file's columns (the batch may hold fewer)."""
        import numpy as np

        cfg, n = self.cfg, batch.num_rows
        if cfg.columns:
            missing = [c for c in cfg.columns if c not in names]
            if missing:
                raise StepError(f"{self.who}: {path}: no column(s) {', '.join(missing)} to keep "
                                f"(columns: {', '.join(names)})")
        rates = codes = labels = values = None
        if self.uses_rate:
            if cfg.pass_rate_column not in names:
                raise StepError(
                    f"{self.who}: {path}: no column {cfg.pass_rate_column!r} to filter on "
                    f"(columns: {', '.join(names)}); set pass_rate_column to the column holding pass rates")
            from steps.filter.rowexpr import Unsupported

            try:
                rates, codes, labels, values = read_rates(batch.column(cfg.pass_rate_column))
            except Unsupported as e:
                raise StepError(f"{self.who}: {path}: column {cfg.pass_rate_column!r}: {e}") from None
            if values is not None:  # decide once per distinct value
                unparse, in_range = (mask[codes] for mask in rate_bounds(values, cfg))
            else:
                unparse, in_range = rate_bounds(rates, cfg)
            thr_drop = ~unparse & ~in_range
            na_drop = unparse if cfg.unparseable == "drop" else np.zeros(n, dtype=bool)
        else:
            unparse = thr_drop = na_drop = np.zeros(n, dtype=bool)
        stage1 = ~thr_drop & ~na_drop
        pred, pred_errors, first = self.predicate_mask(batch, names, path)
        if pred_errors is not None:
            pred_errors = pred_errors & stage1  # errors only count where the predicate decided
        return BatchVerdict(rates, codes, labels, values, (unparse, thr_drop, na_drop, stage1 & ~pred, stage1 & pred),
                            pred_errors, first)

    def predicate_mask(self, batch, names: list[str], path: Path):
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
                            f"(columns: {', '.join(names)})") from None
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

        if tally.predicate_errors:
            where = (f"`where` raised on {tally.predicate_errors:,} of {tally.rows_in:,} rows "
                     f"(first: {tally.first_error})")
            if tally.predicate_errors * 2 > tally.rows_in:  # a wrong expression, not a few odd rows
                raise StepError(f"{self.who}: {where}; expected true or false for most rows")
            self.ctx.note(where)
        if self.cfg.format == "parquet" and not self.writer.one_schema:
            from steps.common.arrowio import unify_parts

            unify_parts([self.parts_dir / self.part_name(i) for i in range(parts)], self.who)
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
            from steps.filter.histogram import histogram_svg

            histogram_svg(self.ctx.out("report") / "pass_rate.svg", tally.hist, tally.unparseable,
                          [b for b in (cfg.min_pass_rate, cfg.max_pass_rate) if b is not None],
                          cfg.pass_rate_column, f"kept {tally.kept:,} of {tally.rows_in:,}")
        self.ctx.log.info("kept %d of %d rows (%d unparseable) in %d part(s)",
                          tally.kept, tally.rows_in, tally.unparseable, parts)


class PartWriter:
    """Kept rows buffered into parts of `save_every` rows; each flush writes a part, then the
    checkpoint that says how far the input was read.

    Parts are written by one background thread, in order, while the next part fills (Arrow
    releases the GIL while it encodes); at most one part is in flight.
    """

    one_schema = False  # whether every part has one schema by construction (else `finish` unifies them)

    def __init__(self, run: "_FilterRun", parts: int):
        from concurrent.futures import ThreadPoolExecutor

        self.run, self.parts = run, parts
        self.buffer: list[Any] = []
        self.buffered = 0
        self.schema = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="filter-parts")
        self.in_flight = None

    def add(self, piece) -> None:
        import pyarrow as pa

        self.buffer.append(piece if isinstance(piece, pa.Table) else pa.Table.from_batches([piece]))
        self.buffered += piece.num_rows

    def flush(self, upto_row: int, upto_tally: Tally | None, final: bool = False) -> None:
        table = self.table() if self.buffered or (final and self.parts == 0) else None
        if table is not None:
            self.parts += 1
        self.buffer, self.buffered = [], 0
        self.wait()
        self.in_flight = self.pool.submit(self.write, table, self.parts, upto_row, upto_tally, final)
        if final:
            self.close()

    def table(self):
        import pyarrow as pa

        if not self.buffer:
            return (self.schema or pa.schema([])).empty_table()
        try:
            # one chunk per column: parquet bytes depend on how the rows are chunked (where the
            # writer gives up on a dictionary), and the chunks would follow batch_size
            return pa.concat_tables(self.buffer, promote_options="permissive").combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise StepError(f"{self.run.who}: kept rows have columns whose type changes between "
                            f"batches or files ({e}); make the input's column types consistent") from None

    def write(self, table, parts: int, upto_row: int, upto_tally: Tally | None, final: bool) -> None:
        run = self.run
        if table is not None:
            self.save(table, run.parts_dir / run.part_name(parts - 1))
        run.save_state(parts, upto_row, upto_tally, done=final)
        if not final:
            _part_done(parts - 1)

    def save(self, table, path: Path) -> None:
        from steps.common.arrowio import write_table

        write_table(table, path, self.run.cfg.format)

    def wait(self) -> None:
        if self.in_flight is not None:
            self.in_flight.result()  # raises what the write raised
            self.in_flight = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)
