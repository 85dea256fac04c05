"""filter.by_label's common case, read and written by Polars alone (no pyarrow, no numpy).

The lane takes parquet inputs written by Arrow (their footer holds the `ARROW:schema`) with flat
nullable columns of plain types and a text pass-rate column, with no `where` and no `columns`,
and writes parquet parts. Per file, two streaming Polars queries:

- the decision pass reads the pass-rate column alone: its distinct texts (parsed once each) and,
  for every output part, the input row it ends after and the counts of the rows behind it;
- the row pass scans the file for the kept texts (Polars decodes the other columns only where
  they hold) and cuts the stream into parts of `save_every` rows, each written by Polars with the
  input's footer metadata, `ARROW:schema` included, so pyarrow and `datasets` read the input's
  own types back.

Importing pyarrow and numpy is a sixth of filtering 5M rows; hence this lane. Polars' streaming
engine bounds how far a scan reads ahead (~500 MB on 5M openmath rows when every row is kept).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.recipe.parquet_footer import OPTIONAL, FooterError, read_footer
from steps.filter.scan import ROW_INDEX

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
    except (FooterError, OSError, pl.exceptions.PolarsError) as e:
        return None, f"footer: {e}"
    if footer.num_rows >= 2 ** 32 or ROW_INDEX in schema:
        return None, "more than 2^32 rows" if footer.num_rows >= 2 ** 32 else f"a column is named {ROW_INDEX}"
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


def scan(path: Path):
    import polars as pl

    return pl.scan_parquet(path, glob=False, hive_partitioning=False)


def texts(path: Path, column: str, limit: int) -> Counter | None:
    """The file's rows by pass-rate text (None: more than `limit` distinct texts)."""
    counts = scan(path).group_by(column).len().limit(limit + 1).collect()
    if len(counts) > limit:
        return None
    return Counter(dict(counts.iter_rows()))
