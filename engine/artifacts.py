"""Artifact types. Every artifact is a directory; its digest is a hash of its files.

Dataset directories hold records as `*.jsonl` or `*.parquet` parts, read in name order.
Model and Tokenizer directories are what `save_pretrained` writes. A Report holds
`metrics.json` plus figures. Files is any directory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

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
        return sorted(p for p in self.path.rglob("*") if p.suffix in (".jsonl", ".parquet", ".json"))

    def rows(self) -> Iterator[dict[str, Any]]:
        for part in self.parts():
            yield from read_records(part)

    def read(self) -> list[dict[str, Any]]:
        return list(self.rows())

    def __len__(self) -> int:
        return sum(1 for _ in self.rows())


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

_DECODER = json.JSONDecoder()


def _row_encoder():
    """json.dumps(row, ensure_ascii=False) as one C call, without building an encoder per row
    (which took most of the time of writing small rows)."""
    import json.encoder as je

    slow = json.JSONEncoder(ensure_ascii=False).encode
    try:
        c = je.c_make_encoder(None, json.JSONEncoder().default, je.c_encode_basestring, None, ": ", ", ",
                              False, False, True)
        sample = {"a": [1, 2.5, None, True, "ü\n"], "b": {"c": float("nan")}}
        if "".join(c(sample, 0)) == slow(sample):
            return lambda row: "".join(c(row, 0))
    except (TypeError, AttributeError):  # another Python's C encoder, or none
        pass
    return slow


_encode_row = _row_encoder()

def write_records(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows to `path` (.jsonl, .json array or .parquet). Returns the row count."""
    path = Path(path)
    if not path.parent.is_dir():  # a stat; a mkdir of an existing folder costs as much as a new one
        path.parent.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    else:
        with path.open("w", encoding="utf-8") as f:
            for i in range(0, len(rows), 4096):
                f.write("".join([_encode_row(row) + "\n" for row in rows[i : i + 4096]]))
    return len(rows)


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Read JSONL, a JSON array, parquet or CSV, with errors that name the file and line."""
    path = Path(path)
    if not path.exists():
        raise StepError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise StepError(f"{path}: not a readable parquet file ({e})") from None
        for batch in pf.iter_batches():
            yield from batch.to_pylist()
    elif suffix == ".csv":
        import csv

        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)
    elif suffix == ".json":
        text = path.read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise StepError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise StepError(f"{path}: item {i} is {type(row).__name__}, expected an object")
                yield row
        else:  # JSON Lines saved as .json, as many tools do
            yield from _read_jsonl(path)
    else:
        yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """About 1 MB of lines at a time, each decoded by one C call; a block with anything unusual
    (a blank line, a bad row) is read again line by line, for the error that names its line."""
    raw_decode = _DECODER.raw_decode
    with path.open(encoding="utf-8", newline="") as f:
        lineno = 0
        while lines := f.readlines(1 << 20):
            try:
                rows = [raw_decode(line) for line in lines]
                if all(type(row) is dict and end == len(line) - 1 and line[-1] == "\n"
                       for (row, end), line in zip(rows, lines)):
                    yield from (row for row, _ in rows)
                    lineno += len(lines)
                    continue
            except json.JSONDecodeError:
                pass
            yield from _parse_lines(path, lines, lineno)
            lineno += len(lines)


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
        if not isinstance(row, dict):
            raise StepError(f"{path}:{lineno}: expected a JSON object, found {type(row).__name__}")
        yield row
