"""Artifact types. Every artifact is a directory; its digest is a hash of its files.

Dataset directories hold records as `*.jsonl` or `*.parquet` parts, read in name order.
Model and Tokenizer directories are what `save_pretrained` writes. A Report holds
`metrics.json` plus figures. Files is any directory.
"""
from __future__ import annotations

import codecs
import json
import re
from itertools import chain, repeat
from operator import sub
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import StepError


class Artifact:
    kind = "Artifact"

    def __init__(self, path: str | Path, digest: str | None = None):
        self.path = Path(path)
        self.digest = digest

    def __repr__(self) -> str:
        return f"{self.kind}({str(self.path)!r})"

    @classmethod
    def accepts(cls, other: type["Artifact"]) -> bool:
        """Can an output of type `other` be bound to an input of this type?"""
        return cls is Artifact or issubclass(other, cls)


class Dataset(Artifact):
    kind = "Dataset"

    def parts(self) -> list[Path]:
        """Record files in name order, whatever the case of their suffix: data.load links `B.PARQUET`
        as it is named, and a part left unread would silently drop its rows."""
        return sorted(p for p in self.path.rglob("*") if p.suffix.lower() in (".jsonl", ".parquet", ".json"))

    def rows(self) -> Iterator[dict[str, Any]]:
        return chain.from_iterable(map(read_records, self.parts()))

    def read(self) -> list[dict[str, Any]]:
        return list(self.rows())

    def __len__(self) -> int:
        """Rows counted without decoding them (see `_count_rows`)."""
        return sum(map(_count_rows, self.parts()))

    def is_empty(self) -> bool:
        """No part holds a row: read from each part's first bytes (or parquet footer), not its rows."""
        return not any(map(_has_rows, self.parts()))


class Model(Artifact):
    kind = "Model"


class Tokenizer(Artifact):
    kind = "Tokenizer"


class Report(Artifact):
    kind = "Report"

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.path / "metrics.json").read_text())


class Files(Artifact):
    kind = "Files"


TYPES: dict[str, type[Artifact]] = {t.kind: t for t in (Artifact, Dataset, Model, Tokenizer, Report, Files)}


# ---------------------------------------------------------------- records on disk

# UTF-8, a byte order mark at the start skipped: Excel's "CSV UTF-8" and Windows tools write one,
# which made a CSV's first column `\ufeffproblem` and a JSON file unreadable
TEXT = "utf-8-sig"
# json.loads recurses once per level: a hostile `[[[[...]]]]` of 100,000 levels raised RecursionError
TOO_DEEP = "JSON nested too deeply to read; expected rows of at most a few hundred levels"


def _has_rows(path: Path) -> bool:
    """Whether a part holds a row: a parquet file's row count; for JSON Lines any non-blank
    character; for a JSON array, anything between `[` and `]`."""
    if path.suffix.lower() == ".parquet":
        from .parquet_footer import FooterError, read_footer

        try:
            return read_footer(path, metadata=False).num_rows > 0
        except (FooterError, OSError):  # unreadable: let reading it say why
            return True
    with path.open("rb") as f:
        first = _first_byte(f)
        if first != b"[" or path.suffix.lower() != ".json":
            return bool(first)
        return _first_byte(f) not in (b"]", b"")


def _lines_encoder():
    """rows -> their JSON Lines text, the bytes of `json.dumps(row, ensure_ascii=False)` per
    row, through one C encoder made once and C loops (`map`): building an encoder per row took
    most of the time of writing small rows."""
    import json.encoder as je

    slow = json.JSONEncoder(ensure_ascii=False).encode

    def each(rows: list[dict[str, Any]]) -> str:
        return "".join([slow(row) + "\n" for row in rows])
    try:
        c = je.c_make_encoder(None, json.JSONEncoder().default, je.c_encode_basestring, None, ": ", ", ",
                              False, False, True)
    except (TypeError, AttributeError):  # another Python's C encoder, or none
        return each

    def fast(rows: list[dict[str, Any]]) -> str:
        return "\n".join(map("".join, map(c, rows, repeat(0)))) + "\n" if rows else ""
    sample = [{"a": [1, 2.5, None, True, "ü\n"], "b": {"c": float("nan")}}, {}]
    return fast if fast(sample) == each(sample) else each


_encode_lines = _lines_encoder()


def record_batch(rows: list[dict[str, Any]]):
    """Rows as a pyarrow RecordBatch holding every row's columns, in order of first appearance.
    `from_pylist` takes the columns of the first row alone: a key that row lacks (an optional
    JSON field) was dropped from every row."""
    import pyarrow as pa

    names = dict.fromkeys(chain.from_iterable(rows))
    return pa.RecordBatch.from_pydict({name: [row.get(name) for row in rows] for name in names})


def write_records(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows to `path` (.jsonl, .json array or .parquet). Returns the row count."""
    path = Path(path)
    if not path.parent.is_dir():  # a stat; a mkdir of an existing folder costs as much as a new one
        path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pa.Table.from_batches([record_batch(rows)])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise StepError(f"{path}: rows cannot be written as parquet ({type_clash(rows) or e})") from None
        pq.write_table(table, path)
    else:
        try:
            if path.suffix == ".json":
                path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
            else:
                with path.open("w", encoding="utf-8") as f:
                    for i in range(0, len(rows), 4096):
                        f.write(_encode_lines(rows[i : i + 4096]))
        except TypeError as e:  # a datetime, Decimal or bytes read from parquet: JSON has no such type
            where = not_json(rows)
            what = f"row {where[0] + 1}'s column {where[1]!r} holds a {where[2]}" if where else str(e)
            raise StepError(f"{path}: {what}; JSON cannot hold it (a .parquet output can)") from None
    return len(rows)


def not_json(rows: list[dict[str, Any]]) -> tuple[int, str, str] | None:
    """The first top-level value JSON cannot hold: (row index, column, its type's name)."""
    for i, row in enumerate(rows):
        for column, value in row.items():
            if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
                return i, column, type(value).__name__
    return None


def _count_rows(path: Path) -> int:
    """A part's rows: a parquet footer's count (refused where its row groups hold another), a JSON
    Lines part's non-blank lines as `_jsonl_blocks` splits them. A line that is no valid row still
    counts: a count is no validation, and whoever reads the rows gets the error naming its line.
    Only a JSON array, or a file whose footer cannot be decoded, is read through."""
    if path.suffix.lower() == ".parquet":
        from .parquet_footer import FooterError, disagreement, read_footer

        try:
            footer = read_footer(path)
        except (FooterError, OSError):  # reading it says why (or pyarrow can, an encrypted footer)
            return sum(1 for _ in read_records(path))
        held = sum(rows for rows, _ in footer.row_groups or [])
        if why := disagreement(footer.num_rows, held):
            raise StepError(f"{path}: {why}")
        return held
    with path.open("rb") as f:
        array = path.suffix.lower() == ".json" and _first_byte(f) == b"["
    if array:
        return sum(1 for _ in read_records(path))
    count = 0
    with path.open(encoding=TEXT, newline="") as f:
        try:
            while lines := f.readlines(1 << 20):
                count += sum(map(bool, map(str.strip, lines)))
        except UnicodeDecodeError:
            raise StepError(not_utf8(path)) from None
    return count


def _first_byte(f) -> bytes:
    """The next byte of binary file `f` that is not whitespace, a byte order mark skipped at its
    start (b"" at its end); `f` then stands just past it."""
    if f.tell() == 0 and f.read(3) != codecs.BOM_UTF8:
        f.seek(0)
    head = b""
    while not head and (block := f.read(1 << 16)):
        head = block.lstrip()
    if head:
        f.seek(1 - len(head), 1)
    return head[:1]


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read JSONL, a JSON array, parquet or CSV, with errors that name the file and line."""
    return chain.from_iterable(_blocks(Path(path)))


def _blocks(path: Path) -> Iterator[Iterable[dict[str, Any]]]:
    """A file's rows a block at a time: `chain` hands them on in C, not one Python frame per row."""
    if not path.exists():
        raise StepError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise StepError(f"{path}: not a readable parquet file ({e})") from None
        if twice := repeated_column(pf.schema_arrow.names):
            raise StepError(f"{path}: {twice}")
        for group in range(pf.metadata.num_row_groups):
            yield from _group_blocks(path, pf, group)
    elif suffix == ".csv":
        with path.open(newline="", encoding=TEXT) as f:
            yield _utf8_checked(path, _csv_rows(path, f))
    elif suffix == ".json" and (text := _read_text(path)).lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise StepError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise StepError(f"{path}: {TOO_DEEP}") from None
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise StepError(f"{path}: item {i} is {type(row).__name__}, expected an object")
        yield data
    else:  # JSON Lines, also saved as .json, as many tools do
        yield from _jsonl_blocks(path)


def _group_blocks(path: Path, pf, group: int) -> Iterator[list[dict[str, Any]]]:
    """One row group's rows, a batch at a time; damaged pages (a footer can be whole over them)
    are an error naming the group, not pyarrow's OSError."""
    batches = pf.iter_batches(row_groups=[group])
    while True:
        try:
            batch = next(batches, None)
            rows = None if batch is None else batch.to_pylist()  # text that is not UTF-8 fails here
        except Exception as e:  # OSError, ArrowInvalid, UnicodeDecodeError...: pyarrow's for bad pages
            raise StepError(f"{path}: row group {group}: cannot read parquet data ({' '.join(str(e).split())}); "
                            "expected an undamaged file") from None
        if rows is None:
            return
        yield rows


def _jsonl_blocks(path: Path) -> Iterator[Iterable[dict[str, Any]]]:
    """About 1 MB of lines at a time, decoded and checked in C (`_whole_rows`): 1,000 small rows
    in a fraction of a millisecond. A block with anything unusual (a blank line, a bad row) is
    read again line by line, for the error that names its line."""
    with path.open(encoding=TEXT, newline="") as f:
        lineno = 0
        try:
            while lines := f.readlines(1 << 20):
                rows = _whole_rows(lines)
                yield rows if rows is not None else _parse_lines(path, lines, lineno)
                lineno += len(lines)
        except UnicodeDecodeError:
            raise StepError(not_utf8(path)) from None


def _csv_rows(path: Path, f) -> Iterator[dict[str, Any]]:
    import csv

    reader = csv.DictReader(f)
    names = reader.fieldnames or []
    if twice := repeated_column(names):
        raise StepError(f"{path}:1: {twice}")
    for row in reader:  # DictReader files extra fields under None and fills missing ones with None
        if None in row or None in row.values():
            n = len(names) + len(row.get(None, [])) - list(row.values()).count(None)
            raise StepError(f"{path}:{reader.line_num}: {n} field{'s' * (n != 1)}; expected {len(names)}, "
                            "as in the header")
        yield row


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding=TEXT)
    except UnicodeDecodeError:
        raise StepError(not_utf8(path)) from None


def _utf8_checked(path: Path, rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    try:
        yield from rows
    except UnicodeDecodeError:
        raise StepError(not_utf8(path)) from None


def value_kind(v) -> str:
    """A JSON value's kind: bool, number, str, list, dict."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def type_clash(rows: list[dict[str, Any]], before: int = 0) -> str | None:
    """Why rows are not one Arrow table: where a column first changes kind ("row 7's column 'q'
    is a list, row 1's a dict") or holds an integer beyond 64 bits; rows counted from `before` + 1.
    None where only something nested inside a value differs."""
    first: dict[str, tuple[int, str]] = {}
    for i, r in enumerate(rows, before + 1):
        for k, v in r.items():
            if v is None:
                continue
            row, kind = first.setdefault(k, (i, value_kind(v)))
            if value_kind(v) != kind:
                return (f"row {i}'s column {k!r} is a {value_kind(v)}, row {row}'s a {kind}; "
                        "expected one type per column")
            if type(v) is int and not -(2 ** 63) <= v < 2 ** 64:
                return f"row {i}'s column {k!r} holds {v}, beyond a 64-bit integer; expected it as text"
    return None


def repeated_column(names: list[str]) -> str | None:
    """Parquet allows two columns of one name; a row (a dict) keeps only the last one's value."""
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    return None if twice is None else f"column {twice!r} appears more than once; expected unique column names"


def not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: its line, and the offset of the bad byte in the file."""
    offset = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path}:{lineno}: not valid UTF-8 (byte 0x{line[e.start]:02x} at byte offset "
                        f"{offset + e.start}); expected UTF-8 text")
            offset += len(line)
    return f"{path}: not valid UTF-8; expected UTF-8 text"


def _whole_rows(lines: list[str]) -> Sequence[dict[str, Any]] | None:
    """The rows of `lines` when each is exactly one JSON object, else None.

    All lines are decoded at once as the items of one JSON array, `[line,line,...]`: one C call.
    That is exact when no line holds a comma between two objects, `},{`: a line that is not a
    whole value then merges with the next one, which leaves fewer items than lines. Rows that
    hold lists of objects have `},{`; they are decoded a line at a time."""
    text = ",".join(lines)
    if _TWO_OBJECTS.search(text):
        return _rows_per_line(lines)
    try:
        rows = json.loads(f"[{text}]")
    except (ValueError, RecursionError):  # JSONDecodeError, a lone surrogate, or too deep: line by line
        return None
    return rows if len(rows) == len(lines) and set(map(type, rows)) == {dict} else None


_TWO_OBJECTS = re.compile(r"\}[ \t\r]*,[ \t\r]*\{")  # JSON's whitespace, but the newline that ends a line
_DECODER = json.JSONDecoder()


def _rows_per_line(lines: list[str]) -> Sequence[dict[str, Any]] | None:
    """The same, with the C scanner mapped over the lines: each must be one object and its newline."""
    if not lines[-1].endswith("\n"):  # only the last line can lack one
        return None
    try:  # a line where no value starts raises StopIteration, which ends the map early
        rows, ends = zip(*map(_DECODER.scan_once, lines, repeat(0)))
    except (ValueError, RecursionError):  # ValueError (JSONDecodeError among them): the first line ended it
        return None
    if len(rows) != len(lines) or set(map(type, rows)) != {dict} or set(map(sub, map(len, lines), ends)) != {1}:
        return None  # a line without a value, not an object, or more than the newline after it
    return rows


def _parse_lines(path: Path, lines: list[str], lineno: int) -> Iterator[dict[str, Any]]:
    for lineno, line in enumerate(lines, lineno + 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise StepError(
                f"{path}:{lineno}: not valid JSON Lines ({e.msg}); expected one JSON object per line"
            ) from None
        except RecursionError:
            raise StepError(f"{path}:{lineno}: {TOO_DEEP}") from None
        if not isinstance(row, dict):
            raise StepError(f"{path}:{lineno}: expected a JSON object, found {type(row).__name__}")
        yield row
