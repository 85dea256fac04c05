"""Record files as streams of pyarrow record batches, with errors that name the file.

Shared by data.load, filter.by_label and publish.hub. Parquet is read row group by row group
(memory bounded by the batch and the file's row-group size); JSON Lines line by line; a JSON
array (export.files writes them, as do many published datasets) has to be parsed whole, one
file at a time.

pyarrow is imported inside the functions: `recipe plan` imports every step module.
"""
from __future__ import annotations

import codecs
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from engine.recipe.artifact_types import TEXT, TOO_DEEP, not_utf8, record_batch, repeated_column, type_clash, value_kind
from engine.recipe.errors import StepError
from engine.recipe.parquet_footer import disagreement

RECORD_SUFFIXES = (".parquet", ".jsonl", ".json")


def kind_of(path: Path) -> str:
    """'parquet', 'jsonl' or 'json' (a .json file may hold an array or JSON Lines)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".json":
        return "json" if _first_char(path) == "[" else "jsonl"
    raise StepError(f"{path}: unsupported file type {suffix!r}; expected .parquet, .jsonl or .json")


def _first_char(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(len(codecs.BOM_UTF8) if f.read(3) == codecs.BOM_UTF8 else 0)
        while True:
            chunk = f.read(4096)
            if not chunk:
                return ""
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1].decode("latin-1")


def check_file(path: Path, who: str) -> dict[str, Any]:
    """Cheap validation (footer or first record), so bad files fail before long work starts.

    Returns {"path", "format", "rows" (None where unknown without a full scan), "columns"}.
    """
    if not path.is_file():
        raise StepError(f"{who}: {path}: file not found")
    fmt = kind_of(path)
    if fmt == "parquet":
        pf = open_parquet(path, who)
        if twice := repeated_column(pf.schema_arrow.names):
            raise StepError(f"{who}: {path}: {twice}")
        meta = pf.metadata
        held = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
        if why := disagreement(meta.num_rows, held):  # the count is what the engine's emptiness check reads
            raise StepError(f"{who}: {path}: {why}")
        return {"path": str(path), "format": fmt, "rows": meta.num_rows, "columns": pf.schema_arrow.names}
    first = _first_char(path)
    if fmt == "jsonl":
        if first == "":
            return {"path": str(path), "format": fmt, "rows": 0, "columns": []}
        if first != "{":
            raise StepError(f"{who}: {path}: not a JSON array or JSON Lines file "
                            f"(starts with {first!r}; expected '[' or one object per line)")
        with _utf8(path, who), path.open(encoding=TEXT) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    row = _parse_line(line, path, lineno, who)
                    return {"path": str(path), "format": fmt, "rows": None, "columns": list(row)}
    rows = _load_array(path, who)
    return {"path": str(path), "format": fmt, "rows": len(rows), "columns": list(rows[0]) if rows else []}


def open_parquet(path: Path, who: str, dictionary: list[str] | None = None):
    """`dictionary`: columns read as dictionary arrays (a label column with few distinct values)."""
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: with it, the reader keeps every row group it has read cached until it
        # closes, so memory grows with the file (about 40 MB per 1M rows of this schema)
        return pq.ParquetFile(path, pre_buffer=False, read_dictionary=dictionary)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError... for a damaged file
        raise StepError(f"{who}: {path}: not a readable parquet file ({e})") from None


def parquet_rows(path: Path, who: str) -> int:
    return open_parquet(path, who).metadata.num_rows


def _parse_line(line: str, path: Path, lineno: int, who: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise StepError(f"{who}: {path}:{lineno}: not valid JSON Lines ({e.msg}); "
                        "expected a JSON array or one JSON object per line") from None
    except RecursionError:
        raise StepError(f"{who}: {path}:{lineno}: {TOO_DEEP}") from None
    if not isinstance(row, dict):
        raise StepError(f"{who}: {path}:{lineno}: expected a JSON object, found {type(row).__name__}")
    return row


@contextmanager
def _utf8(path: Path, who: str):
    """Text that is not UTF-8 (a Latin-1 export) as one error naming the line, not a traceback."""
    try:
        yield
    except UnicodeDecodeError:
        raise StepError(f"{who}: {not_utf8(path)}") from None


def _load_array(path: Path, who: str) -> list[dict[str, Any]]:
    try:
        with _utf8(path, who):
            text = path.read_text(encoding=TEXT)
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StepError(f"{who}: {path}:{e.lineno}: invalid JSON ({e.msg}); "
                        "expected a JSON array of objects or JSON Lines") from None
    except RecursionError:
        raise StepError(f"{who}: {path}: {TOO_DEEP}") from None
    if not isinstance(data, list):
        raise StepError(f"{who}: {path}: top-level JSON is {type(data).__name__}, expected an array of objects")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise StepError(f"{who}: {path}: item {i} is {type(row).__name__}; expected a JSON array of objects")
    return data


class BatchReader:
    """Iterate a file as record batches of at most `batch_size` rows, starting at row `skip`.

    After iteration `rows_seen` is the file's row count (skipped rows included). `dictionary`:
    parquet columns read as dictionary arrays.
    """

    def __init__(self, path: Path, batch_size: int, who: str, skip: int = 0, columns: list[str] | None = None,
                 dictionary: list[str] | None = None):
        self.path, self.batch_size, self.who, self.skip, self.columns = path, batch_size, who, skip, columns
        self.dictionary = dictionary
        self.rows_seen = 0

    def __iter__(self):
        fmt = kind_of(self.path)
        if fmt == "parquet":
            yield from self._parquet()
        elif fmt == "jsonl":
            yield from self._from_rows(self._jsonl_rows())
        else:
            yield from self._from_rows(iter(_load_array(self.path, self.who)))

    def _parquet(self):
        pf = open_parquet(self.path, self.who, self.dictionary)
        meta = pf.metadata
        groups, first, start = [], None, 0
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if start + n > self.skip:
                groups.append(i)
                if first is None:
                    first = start
            start += n
        self.rows_seen = meta.num_rows
        if not groups:
            return
        drop = self.skip - first  # rows of the first kept row group that were already done
        try:
            for batch in pf.iter_batches(batch_size=self.batch_size, row_groups=groups, columns=self.columns,
                                         use_threads=True):
                if drop:
                    if batch.num_rows <= drop:
                        drop -= batch.num_rows
                        continue
                    batch, drop = batch.slice(drop), 0
                yield batch
        except StepError:
            raise
        except Exception as e:
            raise StepError(f"{self.who}: {self.path}: cannot read parquet data ({e})") from None

    def _jsonl_rows(self) -> Iterator[dict[str, Any]]:
        with _utf8(self.path, self.who), self.path.open(encoding=TEXT) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    yield _parse_line(line, self.path, lineno, self.who)

    def _from_rows(self, rows: Iterator[dict[str, Any]]):
        import pyarrow as pa

        chunk: list[dict[str, Any]] = []
        for row in rows:
            self.rows_seen += 1
            if self.rows_seen <= self.skip:
                continue
            chunk.append(row)
            if len(chunk) == self.batch_size:
                yield self._batch(pa, chunk)
                chunk = []
        if chunk:
            yield self._batch(pa, chunk)

    def _batch(self, pa, rows):
        try:
            batch = record_batch(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            # a column holding both text and numbers ("n/a" and 0.5): read it as text
            mixed = _mixed_columns(rows)
            if not mixed:
                raise self._inconsistent(rows, e) from None
            rows = [{k: (str(v) if k in mixed and v is not None and not isinstance(v, str) else v)
                     for k, v in r.items()} for r in rows]
            try:
                batch = record_batch(rows)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                raise self._inconsistent(rows, e) from None
        if self.columns is not None:
            missing = [c for c in self.columns if c not in batch.schema.names]
            if missing:
                raise StepError(f"{self.who}: {self.path}: no column(s) {', '.join(missing)}")
            batch = batch.select(self.columns)
        return batch

    def _inconsistent(self, rows: list[dict[str, Any]], e: Exception) -> StepError:
        why = type_clash(rows, self.rows_seen - len(rows)) or f"rows have inconsistent types ({e})"
        return StepError(f"{self.who}: {self.path}: {why}")


def _mixed_columns(rows: list[dict[str, Any]]) -> set[str]:
    """Columns whose non-null values are of more than one kind (text, number, bool, list, object)."""
    kinds: dict[str, set[str]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kinds.setdefault(k, set()).add(value_kind(v))
    return {k for k, ks in kinds.items() if len(ks) > 1 and ks <= {"str", "number", "bool"}}


def unify_parts(paths: list[Path], who: str) -> None:
    """Parquet parts written one at a time, given one schema. A column null in every row of the
    first part and text in a later one (an optional JSON field) was `null` in one file and
    `string` in the next: pyarrow.dataset, Polars and `datasets` refused the folder. Parts whose
    types cannot be merged (numbers, then text) are one error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = [pq.read_schema(p) for p in paths]
    if all(s.equals(schemas[0]) for s in schemas[1:]):
        return
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StepError(f"{who}: rows have columns whose type changes between batches or files ({e}); "
                        "make the input's column types consistent") from None
    for path, schema in zip(paths, schemas):
        if not schema.equals(unified):
            table = pa.concat_tables([unified.empty_table(), pq.read_table(path)], promote_options="permissive")
            write_table(table.cast(unified), path, "parquet")


def write_table(table, path: Path, fmt: str) -> None:
    """Write a pyarrow Table atomically (temp file + rename) as parquet, jsonl or a json array."""
    import os

    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, tmp)
    else:
        rows = table.to_pylist()
        with tmp.open("w", encoding="utf-8") as f:
            if fmt == "json":
                f.write(json.dumps(rows, ensure_ascii=False, indent=1, default=str) + "\n")
            else:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
