"""filter.by_label's input files as decision batches and, for the rows it keeps, every output column.

The step decides from a few label columns (the pass rate, the columns `where` names) but writes
whole rows. Decoding all nine columns of 5M OpenMathReasoning rows takes 2.3 s, the pass-rate
column alone 0.03 s, and ~92% of rows are dropped; so a parquet file is read by projection:

- `ProjectedScan`: the decision columns with pyarrow, in batches (verdicts and row counts);
  the output columns with a Polars scan whose predicate on the pass-rate column selects a
  superset of the kept rows. Polars decodes the other columns only where that predicate holds
  (late materialisation); the scan's row index then picks the exact kept rows. One query per
  ~64 MB window of row groups bounds how far Polars reads ahead.
- `MaterialisedScan`: every column of every row, batch by batch, kept rows taken from each
  batch. For JSON Lines and JSON arrays, and parquet whose column types Polars does not give
  back unchanged.

Both yield (first input row, decision batch) and answer `rows(local_indices)` for the batch just
yielded with a table in the file's own arrow schema, so they write the same bytes.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

ROW_INDEX = "__filter_by_label_row__"
MAX_DISTINCT_LABELS = 4096  # more distinct pass-rate values than this: no scan predicate (read every row)
WINDOW_BYTES = 128 << 20  # uncompressed bytes of the input per Polars query (what it may read ahead)


class _Scan:
    """A BatchReader's batches as (first input row, batch); `start` is the last one's first row."""

    def __init__(self, reader, skip: int):
        self.reader, self.skip, self.start = reader, skip, skip

    @property
    def rows_seen(self) -> int:
        return self.reader.rows_seen

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        self.start = self.skip
        for batch in self.reader:
            self.seen(batch)
            yield self.start, batch
            self.start += batch.num_rows

    def seen(self, batch) -> None:
        pass


class MaterialisedScan(_Scan):
    """Every column of every row; kept rows are taken from the batch in memory."""

    def __init__(self, path: Path, batch_size: int, who: str, skip: int, out_columns: list[str] | None):
        from steps.common.arrowio import BatchReader

        super().__init__(BatchReader(path, batch_size, who, skip=skip), skip)
        self.out_columns = out_columns
        self.batch = None
        self.columns: list[str] = []

    def seen(self, batch) -> None:
        self.batch, self.columns = batch, batch.schema.names

    def out_schema(self):
        return self._select(self.batch).schema

    def rows(self, idx):
        return self._select(self.batch).take(arrow_indices(idx))

    def _select(self, batch):
        return batch.select(self.out_columns) if self.out_columns else batch


class ProjectedScan(_Scan):
    """Decision columns from pyarrow; output columns from Polars, only where `superset` holds."""

    def __init__(self, path: Path, schema, decision: list[str], dictionary: list[str], superset,
                 batch_size: int, decision_rows: int, who: str, skip: int, out_columns: list[str] | None):
        from steps.common.arrowio import BatchReader

        super().__init__(BatchReader(path, decision_rows, who, skip=skip, columns=decision, dictionary=dictionary),
                         skip)
        self.path, self.who, self.batch_size = path, who, batch_size
        self.columns = schema.names
        out = out_columns or schema.names
        self.schema = _project(schema, out)
        self.out, self.superset = out, superset
        self.pending = None  # scan rows beyond the last request
        self.stream = None  # the Polars scans, started by the first request

    def out_schema(self):
        return self.schema

    def rows(self, idx):
        """The output columns of the rows `idx` (ascending indices into the batch just yielded).

        Scan chunks are consumed as they come: memory holds the answer and one chunk, however
        many superset rows lie between the rows asked for.
        """
        import numpy as np
        import pyarrow as pa

        wanted = np.asarray(idx, dtype=np.int64) + self.start
        found, pieces = 0, []
        while found < len(wanted):
            chunk, self.pending = self.pending, None
            if chunk is None:
                chunk = next(self._chunks(), None)
            if chunk is None:
                self._lost(wanted[found])
            rows = numpy_of(chunk.column(ROW_INDEX).combine_chunks())
            end = int(np.searchsorted(rows, wanted[-1], side="right"))
            if end < len(rows):
                self.pending = chunk.slice(end)  # beyond this request: the next batches' rows
            upto = int(np.searchsorted(wanted, rows[end - 1], side="right")) if end else found
            if upto <= found:
                if self.pending is not None:  # the scan went past wanted[found]
                    self._lost(wanted[found])
                continue  # a chunk wholly before the rows asked for
            at = np.searchsorted(rows[:end], wanted[found:upto])
            if not np.array_equal(rows[at], wanted[found:upto]):
                self._lost(wanted[found:upto][rows[at] != wanted[found:upto]][0])
            if at[-1] - at[0] + 1 == len(at):  # a run of rows (every row, without `where`): no copy
                pieces.append(chunk.slice(int(at[0]), len(at)))
            else:
                pieces.append(chunk.take(arrow_indices(at)))
            found = upto
        table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        return table.drop_columns([ROW_INDEX]).cast(self.schema)

    def _lost(self, row) -> None:
        from engine.recipe.errors import StepError

        raise StepError(f"{self.who}: {self.path}: kept row {int(row)} is missing from the Polars scan "
                        "(a bug in the scan predicate)")

    def _chunks(self):
        if self.stream is None:
            self.stream = self._scan()
        return self.stream

    def _scan(self):
        """Chunks of superset rows, one Polars query per window of row groups: a query reads ahead
        of its consumer without bound (all 5M rows, 1.4 GB, when every row is kept), a window
        bounds that by its size."""
        import polars as pl

        from steps.common.arrowio import open_parquet

        base = pl.scan_parquet(self.path, row_index_name=ROW_INDEX, glob=False, hive_partitioning=False)
        try:
            meta = open_parquet(self.path, self.who).metadata
            groups = [(g.num_rows, g.total_byte_size) for g in map(meta.row_group, range(meta.num_row_groups))]
            for start, stop in windows(groups, self.skip, WINDOW_BYTES):
                query = base.slice(start, stop - start)
                if self.superset is not None:
                    query = query.filter(self.superset)
                for df in query.select([ROW_INDEX, *self.out]).collect_batches(chunk_size=self.batch_size):
                    yield df.to_arrow()
        except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError) as e:
            from engine.recipe.errors import StepError

            raise StepError(f"{self.who}: {self.path}: cannot read parquet data ({e})") from None


def windows(groups: list[tuple[int, int]], skip: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of whole row groups ((rows, uncompressed bytes) each) from row
    `skip` on, each about `size` uncompressed bytes (at least one row group)."""
    out: list[tuple[int, int]] = []
    row, start, acc = 0, None, 0
    for rows, nbytes in groups:
        end = row + rows
        if end > skip:
            start = max(row, skip) if start is None else start
            acc += nbytes
            if acc >= size:
                out.append((start, end))
                start, acc = None, 0
        row = end
    if start is not None:
        out.append((start, row))
    return out


def _project(schema, names: list[str]):
    import pyarrow as pa

    return pa.schema([schema.field(n) for n in names], metadata=schema.metadata)


def polars_safe(t) -> bool:
    """Arrow types that come back from Polars with the same values after a cast to the original type."""
    import pyarrow as pa

    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t) or pa.types.is_boolean(t) or pa.types.is_integer(t)
            or pa.types.is_float32(t) or pa.types.is_float64(t)):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return polars_safe(t.value_type)
    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(polars_safe(t.field(i).type) for i in range(t.num_fields))
    return False


def string_superset(path: Path, column: str, who: str, skip: int, keeps: Callable[[Any], Any], keep_null: bool):
    """A Polars predicate true on every row whose pass-rate text `keeps` (None: too many distinct texts).

    The column is read as a dictionary (a few dozen texts in 5M rows), so this costs one cheap pass.
    `keeps` maps a list of distinct texts to a numpy mask.
    """
    import polars as pl

    from steps.common.arrowio import BatchReader

    distinct: dict[str | None, None] = {}  # ordered, as met
    for batch in BatchReader(path, 1 << 20, who, skip=skip, columns=[column], dictionary=[column]):
        distinct.update(dict.fromkeys(batch.column(0).dictionary.to_pylist()))
        if len(distinct) > MAX_DISTINCT_LABELS:
            return None
    if not distinct:
        return None
    texts = list(distinct)
    kept = [v for v, ok in zip(texts, keeps(texts)) if ok and v is not None]
    predicate = pl.col(column).is_in(kept)
    return predicate | pl.col(column).is_null() if keep_null else predicate


@contextmanager
def system_memory_pool():
    """Arrow allocations from malloc while filtering. With the default pool (mimalloc) the
    kernel zero-fills fresh pages for every batch: on 5M rows, 0.15 s more CPU and 50 MB more RSS."""
    import pyarrow as pa

    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


# pa.array(), Array.to_numpy() and friends import pandas (0.2-0.3 s, a sixth of filtering 5M rows)
# to check for pandas objects; the two conversions the projected scan needs go through buffers.

def numpy_of(array):
    """A primitive Arrow array without nulls as a numpy view."""
    import numpy as np

    dtype = np.dtype(str(array.type))
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def arrow_indices(idx):
    """numpy indices as an Arrow int64 array."""
    import numpy as np
    import pyarrow as pa

    idx = np.ascontiguousarray(idx, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(idx), [None, pa.py_buffer(idx)])


def numeric_superset(column: str, low: float | None, high: float | None, keep_unparseable: bool):
    """A Polars predicate true on every row of a numeric pass-rate column inside [low, high]."""
    import polars as pl

    if keep_unparseable or (low is None and high is None):
        return None
    x = pl.col(column).cast(pl.Float64)
    if low is not None and high is not None:
        return x.is_between(low, high)
    return x >= low if low is not None else x <= high
