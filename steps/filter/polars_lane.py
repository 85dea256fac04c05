"""filter.by_label's common case, read and written by Polars alone (no pyarrow, no numpy).

The lane takes parquet inputs written by Arrow (their footer holds the `ARROW:schema`) with flat
nullable columns of plain types and a text pass-rate column, with no `where` and no `columns`,
and writes parquet parts. Per file, two Polars queries:

- the pass-rate column's rows by distinct text (each text parsed once): which texts are kept,
  and the whole file's counts, from which the step's tally comes (a checkpoint holds none);
- a streaming scan for the kept texts (Polars decodes the other columns only where they hold)
  with a row index, cut into parts of `save_every` rows, each checkpointed at the input row
  after its last row and written by Polars with the input's footer metadata, `ARROW:schema`
  included, so pyarrow and `datasets` read the input's own types back.

Importing pyarrow and numpy is a sixth of filtering 5M openmath rows: hence this lane.
"""
from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from engine.recipe.errors import StepError
from engine.recipe.parquet_footer import OPTIONAL, FooterError, read_footer
from steps.filter import scan
from steps.filter.by_label import PartWriter, Tally
from steps.filter.rowexpr import parse_number

PLAIN = {"String", "Binary", "Boolean", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
         "Float32", "Float64"}


@dataclass
class Lane:
    column: str
    rates: dict[str | None, float | None]  # each distinct pass-rate text's rate (None: not a number)
    kept: list[str | None]  # the texts whose rows are kept
    counts: list[Counter]  # rows by pass-rate text, one Counter per input file
    metadata: dict[str, str]  # the inputs' footer metadata, written into every part
    schema: Any  # the inputs' Polars schema (for an empty part)

    def predicate(self):
        """The kept rows, as a Polars expression."""
        import polars as pl

        keep = pl.col(self.column).is_in([t for t in self.kept if t is not None])
        return keep | pl.col(self.column).is_null() if None in self.kept else keep.fill_null(False)


def readable(path: Path, column: str) -> tuple[dict[str, str] | None, str]:
    """(the file's footer metadata, "") where the lane can read it, else (None, why not)."""
    import polars as pl

    if path.suffix.lower() != ".parquet":
        return None, "not a parquet file"
    try:
        footer = read_footer(path, metadata=False)
        metadata = pl.read_parquet_metadata(path)
        schema = pl.read_parquet_schema(path)
    except (FooterError, OSError, pl.exceptions.PolarsError, pl.exceptions.PanicException) as e:
        # a panic: Polars unwraps what a hostile footer lacks (a negative column chunk size) where
        # pyarrow reads the file; a PanicException is no Exception, so it had ended the step
        return None, f"footer: {e}"
    if footer.num_rows >= 2 ** 32 or scan.ROW_INDEX in schema:
        return None, "more than 2^32 rows" if footer.num_rows >= 2 ** 32 else f"a column is named {scan.ROW_INDEX}"
    if "ARROW:schema" not in metadata:
        return None, "not written by Arrow"
    if any(c.children or c.repetition != OPTIONAL for c in footer.columns):
        return None, "nested or non-nullable columns"
    odd = [f"{n!r} of type {t}" for n, t in schema.items() if str(t) not in PLAIN]
    if odd:
        return None, f"column {odd[0]}"
    if column not in schema:
        return None, "no pass-rate column"
    if str(schema[column]) != "String":
        return None, "a numeric pass-rate column"
    return metadata, ""


def _parquet(path: Path):
    import polars as pl

    return pl.scan_parquet(path, glob=False, hive_partitioning=False)


def texts(path: Path, column: str, limit: int) -> Counter | None:
    """The file's rows by pass-rate text (None: more than `limit` distinct texts)."""
    import polars as pl

    counts = _parquet(path).select(pl.col(column).alias("text")).group_by("text").len().limit(limit + 1).collect()
    if len(counts) > limit:
        return None
    return Counter(dict(counts.iter_rows()))


def plan(run) -> Lane | None:
    """The lane for a filter run (by_label's `_FilterRun`), or None where Polars alone cannot do it (logged)."""
    cfg = run.cfg
    if cfg.format != "parquet" or cfg.where or cfg.columns or not run.uses_rate:
        return None
    metadata, counts = [], []
    for path in run.files:
        meta, why_not = readable(path, cfg.pass_rate_column)
        if meta is None or (metadata and meta != metadata[0]):
            run.ctx.log.info("%s: not filtered by Polars alone (%s)", path.name, why_not or "another schema")
            return None
        metadata.append(meta)
    with _polars_errors(run, run.files[0]):
        for path in run.files:
            counts.append(texts(path, cfg.pass_rate_column, scan.MAX_DISTINCT_LABELS))
            if counts[-1] is None:
                run.ctx.log.info("%s: not filtered by Polars alone (over %d distinct pass rates)", path.name,
                                  scan.MAX_DISTINCT_LABELS)
                return None
        schema = _parquet(run.files[0]).collect_schema()
    rates = {t: None if t is None else parse_number(t) for c in counts for t in c}
    kept = [t for t in rates if Tally.of_texts({t: 1}, rates, cfg).kept]  # texts a row of which is kept
    run.ctx.log.info("filtering by Polars alone (decides on %s)", cfg.pass_rate_column)
    return Lane(cfg.pass_rate_column, rates, kept, counts, metadata[0], schema)


def filter_files(run, lane: Lane, next_row: int, parts: int) -> Tally:
    """Every input row from `next_row` on (the first `parts` parts hold the rows before it); the
    tally comes from the pass-rate counts of whole files."""
    kept_before = sum(read_footer(run.parts_dir / run.part_name(i), metadata=False).num_rows for i in range(parts))
    tallies = [Tally.of_texts(counts, lane.rates, run.cfg) for counts in lane.counts]
    pos = kept = 0
    with run.ctx.progress(sum(t.rows_in for t in tallies), "filtering rows") as bar:
        bar.update(next_row)
        for path, file in zip(run.files, tallies):
            if next_row - pos < file.rows_in:
                with _polars_errors(run, path):
                    kept += _file_rows(run, path, lane, file, max(0, next_row - pos), pos, bar)
            pos += file.rows_in
        tally = reduce(Tally.add, tallies, Tally())
        run.writer.flush(pos, tally, final=True)
    if kept_before + kept != tally.kept:
        _bug(run, run.files[-1], f"{kept_before + kept} rows to keep where the pass rates keep {tally.kept}")
    return tally


def _file_rows(run, path: Path, lane: Lane, file: Tally, skip: int, pos: int, bar) -> int:
    """One file's kept rows from row `skip` on, in parts of `save_every`; returns how many.

    A Polars query reads ahead of its consumer as far as its buffers go (1.1 GB on 5M openmath
    rows when every row is kept), so where most rows are kept, one query reads a window of
    row groups; where few are, the read-ahead holds only them and one query does the file.
    """
    cfg, writer = run.cfg, run.writer
    done, kept = pos + skip, 0
    spans = [(skip, file.rows_in)]
    if file.kept * 4 > file.rows_in:
        spans = scan.windows(read_footer(path).row_groups, skip, scan.WINDOW_BYTES)
    for start, stop in spans:
        query = _parquet(path).with_row_index(scan.ROW_INDEX).slice(start, stop - start).filter(lane.predicate())
        for df in query.collect_batches(chunk_size=cfg.save_every, engine="streaming"):
            kept += df.height
            while df.height:
                piece = df.slice(0, cfg.save_every - writer.buffered)
                df = df.slice(piece.height)
                writer.add(piece.drop(scan.ROW_INDEX))
                if writer.buffered == cfg.save_every:
                    cut = pos + piece[scan.ROW_INDEX][-1] + 1
                    writer.flush(cut, None)
                    bar.update(cut - done)
                    done = cut
    bar.update(pos + file.rows_in - done)
    return kept


def _bug(run, path: Path, what: str):
    raise StepError(f"{run.who}: {path}: the Polars scan found {what} (a damaged file its streaming engine read "
                    "without an error, or a bug in the Polars lane)")


@contextmanager
def _polars_errors(run, path: Path):
    import polars as pl

    try:
        yield
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError) as e:
        raise StepError(f"{run.who}: {path}: cannot read parquet data ({e})") from None


class PolarsPartWriter(PartWriter):
    """Parts as Polars frames, written by Polars with the input's footer metadata (its Arrow schema)."""

    one_schema = True  # the lane's, for every part (reading their footers back would import pyarrow)

    def __init__(self, run, parts: int, lane: Lane):
        super().__init__(run, parts)
        self.lane = lane

    def add(self, piece) -> None:
        self.buffer.append(piece)
        self.buffered += piece.height

    def table(self):
        import polars as pl

        # one chunk per column, as the pyarrow writer's parts: bytes that depend on the rows only
        return pl.concat(self.buffer, rechunk=True) if self.buffer else pl.DataFrame(schema=self.lane.schema)

    def save(self, table, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        table.write_parquet(tmp, compression="snappy", metadata=self.lane.metadata)
        os.replace(tmp, path)
