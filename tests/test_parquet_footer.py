"""engine/recipe/parquet_footer.py: a parquet footer read without a parquet library agrees with
pyarrow's, and a damaged or hostile file ends in FooterError (never another exception, never a
long loop)."""
from __future__ import annotations

import random
import struct
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.recipe.artifact_types import Dataset
from engine.recipe.parquet_footer import OPTIONAL, REQUIRED, FooterError, read_footer


def _files(tmp_path):
    nested = pa.table({"id": pa.array([1, 2], pa.int64()), "tags": [["a"], []], "meta": [{"n": 1}, None]})
    required = pa.table({"x": [1.5, 2.5]}).cast(pa.schema([pa.field("x", pa.float64(), nullable=False)]))
    flat = pa.Table.from_pylist([{"s": f"row {i}", "b": i % 2 == 0} for i in range(1000)]).replace_schema_metadata(
        {"origin": "test", "ünïcode": "✓"})
    tables = {"nested": nested, "required": required, "flat": flat, "empty": flat.slice(0, 0)}
    for name, table in tables.items():
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=100)
    return tables


def test_footer_agrees_with_pyarrow(tmp_path):
    for name, table in _files(tmp_path).items():
        path = tmp_path / f"{name}.parquet"
        footer, meta = read_footer(path), pq.ParquetFile(path).metadata
        assert footer.num_rows == meta.num_rows == table.num_rows
        assert [c.name for c in footer.columns if c.name in table.column_names] == table.column_names
        assert footer.metadata == {k.decode(): v.decode() for k, v in meta.metadata.items()}
    flat = read_footer(tmp_path / "flat.parquet")
    assert [(c.name, c.repetition, c.children) for c in flat.columns] == [("s", OPTIONAL, 0), ("b", OPTIONAL, 0)]
    assert flat.metadata["ünïcode"] == "✓" and "ARROW:schema" in flat.metadata
    assert read_footer(tmp_path / "required.parquet").columns[0].repetition == REQUIRED
    assert [(c.name, c.children) for c in read_footer(tmp_path / "nested.parquet").columns] == [
        ("id", 0), ("tags", 1), ("list", 1), ("element", 0), ("meta", 1), ("n", 0)]


def _footer(rest: bytes) -> bytes:
    """A parquet file whose footer is FileMetaData{version 1, a schema of one element, 0 rows} + `rest`
    (its fields 4 (row groups) and on, and the struct's end)."""
    footer = b"\x15\x02\x19\x1c\x48\x01r\x00\x16\x00" + rest
    return b"PAR1" + footer + struct.pack("<I", len(footer)) + b"PAR1"


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:7], "too short for a parquet file"),
    (lambda b: b[:-4] + b"PARE", "no PAR1 magic at its end"),
    (lambda b: b[:-8] + struct.pack("<I", len(b)) + b"PAR1", "does not fit the file"),
    (lambda b: b[:-8 - 40] + b"\x19" * 40 + b[-8:], "footer"),
    (lambda b: b[:-8] + b"\x19" * 4000 + struct.pack("<I", 4000) + b"PAR1", "nested too deep"),  # lists of lists
    # field 1, a map said to hold 2^40 boolean pairs: it had looped without reading a byte
    (lambda b: b[:-8] + b"\x1b\x80\x80\x80\x80\x80\x20\x11\x01\x01\x00" + struct.pack("<I", 11) + b"PAR1",
     "list or map longer than the footer"),
    # well-formed thrift, but a row group or a key-value entry is an empty string, not a struct
    # (found by fuzzing): it raised IndexError, which no caller expects
    (lambda b: _footer(b"\x19\x18\x00\x00"), "footer lacks a required field"),
    (lambda b: _footer(b"\x19\x0c\x19\x18\x00\x00"), "footer lacks a required field"),
])
def test_damaged_footers_are_a_footer_error(tmp_path, damage, message):
    _files(tmp_path)
    path = tmp_path / "flat.parquet"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(FooterError, match=message):
        read_footer(path)
    assert not Dataset(tmp_path).is_empty()  # unreadable: reading the part says why, not "empty"


def test_random_damage_to_a_footer_ends_in_footer_error_quickly(tmp_path):
    _files(tmp_path)
    good = (tmp_path / "nested.parquet").read_bytes()
    length = struct.unpack("<I", good[-8:-4])[0]
    rng = random.Random(0)
    start = time.perf_counter()
    for _ in range(500):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[len(good) - 8 - rng.randrange(length)] = rng.randrange(256)
        (tmp_path / "bad.parquet").write_bytes(bytes(data))
        try:
            read_footer(tmp_path / "bad.parquet")
        except FooterError:
            pass
    assert time.perf_counter() - start < 20


def test_an_empty_parquet_part_is_empty_and_a_full_one_is_not(tmp_path):
    _files(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "empty.parquet").rename(tmp_path / "a" / "empty.parquet")
    assert Dataset(tmp_path / "a").is_empty()
    (tmp_path / "flat.parquet").rename(tmp_path / "a" / "flat.parquet")
    assert not Dataset(tmp_path / "a").is_empty()
