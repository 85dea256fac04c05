"""filter.by_label: threshold semantics ("n/a", boundaries), predicates, parts, resume after a
kill, and clear errors for bad input. All on tiny in-test files or the shipped fixture."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.recipe.errors import StepError
from engine.run.testing import run_step

FIXTURE = Path(__file__).parent / "data" / "openmath_fixture.parquet"
ROOT = Path(__file__).resolve().parents[1]


def write_parquet(folder: Path, rows, name="part.parquet", schema=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / name)
    return folder


def rate_rows(values):
    return [{"id": i, "pass_rate_72b_tir": v, "problem_type": "has_answer_extracted"} for i, v in enumerate(values)]


RATES = ["0.1", "0.1000001", "0.0", "n/a", "", None, "1.0", " 0.05 ", "abc", "0.09375", "n/a", "1e-2"]


def test_threshold_keeps_rates_at_or_below_max_and_counts_na(tmp_path):
    data = write_parquet(tmp_path / "in", rate_rows(RATES))
    out = run_step("filter.by_label", {"max_pass_rate": 0.1}, {"data": data}, workdir=tmp_path / "w")
    kept = [r["pass_rate_72b_tir"] for r in out["data"].read()]
    assert kept == ["0.1", "0.0", " 0.05 ", "0.09375", "1e-2"]
    m = out["report"].metrics()
    assert (m["rows_in"], m["kept"], m["unparseable"], m["dropped_unparseable"],
            m["dropped_by_threshold"]) == (12, 5, 5, 5, 2)
    assert m["kept"] + m["dropped_by_threshold"] + m["dropped_unparseable"] + m["dropped_by_predicate"] == m["rows_in"]
    assert m["unparseable_values"] == {"n/a": 2, "": 1, "<null>": 1, "abc": 1}
    svg = ElementTree.parse(out["report"].path / "pass_rate.svg").getroot()
    bars = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if len(r)]  # a bar has a <title>
    assert len(bars) == 21 and bars[-1][0].text == "unparseable: 5"
    assert sum(int(b[0].text.rsplit(": ", 1)[1]) for b in bars[:-1]) == 7  # the 7 parseable rates
    assert "kept 5 of 12" in "".join(svg.itertext())


def test_min_and_max_bounds_are_inclusive_and_na_can_be_kept(tmp_path):
    data = write_parquet(tmp_path / "in", rate_rows(RATES))
    out = run_step("filter.by_label", {"min_pass_rate": 0.05, "max_pass_rate": 0.1, "unparseable": "keep"},
                   {"data": data}, workdir=tmp_path / "w")
    kept = [r["pass_rate_72b_tir"] for r in out["data"].read()]
    assert kept == ["0.1", "n/a", "", None, " 0.05 ", "abc", "0.09375", "n/a"]
    m = out["report"].metrics()
    assert (m["kept"], m["unparseable"], m["dropped_unparseable"]) == (8, 5, 0)


def test_numeric_pass_rate_column_with_nan_and_null(tmp_path):
    rows = [{"r": 0.0}, {"r": 0.1}, {"r": float("nan")}, {"r": None}, {"r": 0.5}]
    data = write_parquet(tmp_path / "in", rows)
    out = run_step("filter.by_label", {"pass_rate_column": "r"}, {"data": data}, workdir=tmp_path / "w")
    assert [r["r"] for r in out["data"].read()] == [0.0, 0.1]
    assert out["report"].metrics()["unparseable_values"] == {"nan": 1, "<null>": 1}



@pytest.mark.parametrize("rates, kind", [([[0.1], [0.2]], "list<element: double>"),
                                         ([{"v": 0.1}, {"v": 0.2}], "struct<v: double>")])
def test_a_pass_rate_column_of_lists_or_structs_names_its_type(tmp_path, rates, kind):
    """The projected scan read the pass-rate column as a dictionary whatever its type: pyarrow
    refused a nested one, and the error blamed the file ("not a readable parquet file (b'r')")."""
    data = write_parquet(tmp_path / "in", [{"r": r, "id": i} for i, r in enumerate(rates)])
    with pytest.raises(StepError, match=rf"part\.parquet: column 'r': cannot read numbers from a column of type "
                                        rf"{re.escape(kind)}$"):
        run_step("filter.by_label", {"pass_rate_column": "r"}, {"data": data}, workdir=tmp_path / "w")


def test_a_column_that_changes_type_names_the_rows(tmp_path):
    """"rows have inconsistent types" said neither which column nor where."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jsonl").write_text('{"r": 0.1, "q": {"a": 1}}\n{"r": 0.2, "q": {"a": 2}}\n'
                                             '{"r": 0.3, "q": [1]}\n')
    with pytest.raises(StepError, match=r"x\.jsonl: row 3's column 'q' is a list, row 1's a dict; "
                                        r"expected one type per column$"):
        run_step("filter.by_label", {"pass_rate_column": "r"}, {"data": tmp_path / "in"}, workdir=tmp_path / "w")
    (tmp_path / "in" / "x.jsonl").write_text('{"r": 0.1, "q": {"a": 1}}\n{"r": 0.3, "q": {"a": [1]}}\n')
    with pytest.raises(StepError, match=r"x\.jsonl: rows have inconsistent types \(.+\)$"):  # nested: pyarrow's words
        run_step("filter.by_label", {"pass_rate_column": "r"}, {"data": tmp_path / "in"}, workdir=tmp_path / "v")


def test_parquet_parts_share_one_schema_when_a_column_is_null_in_the_first(tmp_path):
    """An optional JSON field null in the first part's rows and text later: part 0 said `null`,
    part 1 `string`, and pyarrow.dataset, Polars and `datasets` refused the folder. Numbers in one
    part and text in the next were written without a word."""
    import pyarrow.dataset as pads

    (tmp_path / "in").mkdir()
    rows = [{"r": 0.1, "note": None}] * 4 + [{"r": 0.1, "note": "checked", "extra": 1}] * 2
    (tmp_path / "in" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"pass_rate_column": "r", "save_every": 4, "batch_size": 4}
    out = run_step("filter.by_label", cfg, {"data": tmp_path / "in"}, workdir=tmp_path / "w")
    schemas = {str(pq.read_schema(p)) for p in out["data"].parts()}
    assert len(out["data"].parts()) == 2 and len(schemas) == 1
    assert pads.dataset(str(out["data"].path)).to_table().to_pylist() == [
        {"r": 0.1, "note": None, "extra": None}] * 4 + [{"r": 0.1, "note": "checked", "extra": 1}] * 2
    (tmp_path / "in" / "x.jsonl").write_text("".join(json.dumps({"r": 0.1, "n": v}) + "\n" for v in [1] * 4 + ["a"]))
    with pytest.raises(StepError, match=r"type changes between batches or files .*Field n has incompatible types: "
                                        r"int64 vs string"):
        run_step("filter.by_label", cfg, {"data": tmp_path / "in"}, workdir=tmp_path / "v")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_a_json_field_the_first_row_lacks_is_kept(tmp_path, fmt):
    """pyarrow's from_pylist takes its columns from the first row: an optional field the first
    row of a batch lacked was dropped from every row (filter.by_label, data.load's limit and
    streaming, ctx.write_dataset as parquet)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jsonl").write_text('{"r": 0.1, "problem": "p1"}\n{"r": 0.1, "problem": "p2", "answer": 42}\n')
    out = run_step("filter.by_label", {"pass_rate_column": "r", "format": fmt}, {"data": tmp_path / "in"},
                   workdir=tmp_path / "w")
    assert [r.get("answer") for r in out["data"].read()] == [None, 42]
    out = run_step("data.load", {"path": str(tmp_path / "in"), "limit": 2}, workdir=tmp_path / "l")
    assert [r["answer"] for r in out["data"].read()] == [None, 42]
    out = run_step("data.from_file", {"path": str(tmp_path / "in" / "x.jsonl"), "output_format": "parquet"},
                   workdir=tmp_path / "f")
    assert [r["answer"] for r in out["data"].read()] == [None, 42]


def _varint(n: int) -> bytes:
    out = b""
    while True:
        out += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            return out


@pytest.mark.parametrize("group_rows, why", [
    (10, r"cannot read parquet data"),
    # the engine's threads race: the panic comes back, or no rows do
    (50, r"(cannot read parquet data|the Polars scan found 0 rows to keep where the pass rates keep 6 \(a damaged)"),
])
def test_a_footer_polars_panics_on_is_one_error_naming_the_file(tmp_path, group_rows, why):
    """A column chunk whose compressed size is negative (one byte of the footer, found by fuzzing):
    Polars panicked reading the footer, and a PanicException is no Exception, so the step ended
    with "PanicException: called `Option::unwrap()` on a `None` value" and named no file. In one
    row group its streaming engine swallowed the panic and read no rows: a check caught it, and
    blamed the Polars lane alone."""
    (tmp_path / "in").mkdir()
    path = tmp_path / "in" / "part.parquet"
    pq.write_table(pa.table({"pass_rate_72b_tir": [str(i / 50) for i in range(50)], "n": list(range(50))}), path,
                   row_group_size=group_rows)
    column = pq.ParquetFile(path).metadata.row_group(0).column(0)
    size, packed = column.total_compressed_size, column.total_uncompressed_size
    # ColumnMetaData fields 6 and 7 (i64, zigzag varints): the same length with -size for size
    fields = b"\x16" + _varint(2 * packed) + b"\x16" + _varint(2 * size)
    data = path.read_bytes()
    assert data.count(fields) and len(_varint(2 * size - 1)) == len(_varint(2 * size))
    path.write_bytes(data.replace(fields, b"\x16" + _varint(2 * packed) + b"\x16" + _varint(2 * size - 1)))
    assert pq.ParquetFile(path).metadata.row_group(0).column(0).total_compressed_size == -size
    with pytest.raises(StepError, match=rf"part\.parquet: {why}"):
        run_step("filter.by_label", {}, {"data": tmp_path / "in"}, workdir=tmp_path / "w")

def test_fixture_counts_match_an_independent_count(tmp_path):
    rows = pq.read_table(FIXTURE).to_pylist()

    def rate(v):
        try:
            return float(v)
        except ValueError:
            return None

    expected = [r for r in rows if rate(r["pass_rate_72b_tir"]) is not None and rate(r["pass_rate_72b_tir"]) <= 0.1
                and r["problem_type"] == "has_answer_extracted" and r["inference_mode"] in ("cot", "tir")]
    out = run_step("filter.by_label", {"where": ['problem_type == "has_answer_extracted"',
                                                 'inference_mode in ["cot", "tir"]'], "batch_size": 37},
                   {"data": _folder_with(FIXTURE, tmp_path)}, workdir=tmp_path / "w")
    assert out["data"].read() == expected
    m = out["report"].metrics()
    assert m["unparseable"] == sum(r["pass_rate_72b_tir"] == "n/a" for r in rows) > 0
    assert m["where_evaluation"] == "vectorized"


def _folder_with(path: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "fixture"
    folder.mkdir(exist_ok=True)
    target = folder / path.name
    if not target.exists():
        target.write_bytes(path.read_bytes())
    return folder


@pytest.mark.parametrize("expr", [
    'problem_type == "has_answer_extracted" and tokens(generated_solution) < 50',
    'not (len(problem) > 60) or contains(problem, "remainder")',
    'number(pass_rate_72b_tir) >= 0.5 or problem_source in ["MATH_training_set"]',
    'startswith(lower(problem), "find") or words(generated_solution) <= 30',
    '0.2 < number(pass_rate_72b_tir) <= 0.8',
])
def test_vectorized_predicates_agree_with_row_by_row(expr):
    from steps.filter.rowexpr import Predicates

    batch = pq.read_table(FIXTURE).to_batches()[0]
    fast, slow = Predicates([expr]), Predicates([expr], vectorized=False)
    keep_fast, _, _ = fast.mask(batch)
    keep_slow, errors, _ = slow.mask(batch)
    assert fast.vectorized and errors is None
    assert keep_fast.tolist() == keep_slow.tolist()
    assert 0 < keep_fast.sum() < batch.num_rows


def test_row_wise_fallback_for_subscripts_gives_the_same_rows(tmp_path):
    folder = _folder_with(FIXTURE, tmp_path)
    a = run_step("filter.by_label", {"max_pass_rate": None, "where": 'problem[0] == "C"'}, {"data": folder},
                 workdir=tmp_path / "a")
    b = run_step("filter.by_label", {"max_pass_rate": None, "where": 'startswith(problem, "C")'}, {"data": folder},
                 workdir=tmp_path / "b")
    assert a["report"].metrics()["where_evaluation"] == "row-wise"
    assert a["data"].read() == b["data"].read() and len(a["data"].read()) > 0


def test_row_errors_drop_the_row_and_are_counted(tmp_path):
    data = write_parquet(tmp_path / "in",
                         [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}, {"n": 3, "s": "c"}, {"n": 5, "s": None}])
    out = run_step("filter.by_label", {"max_pass_rate": None, "where": "[s, n][n % 2] > 2"}, {"data": data},
                   workdir=tmp_path / "w")  # n even: "b" > 2 raises TypeError
    m = out["report"].metrics()
    assert [r["n"] for r in out["data"].read()] == [3, 5]
    assert (m["predicate_errors"], m["dropped_by_predicate"]) == (1, 2)
    assert "TypeError" in m["first_predicate_error"]



def test_where_raising_on_most_rows_fails_the_step_and_names_the_first_error(tmp_path):
    """3 of 4 rows raised in `where` and were dropped silently (counted only in the report); where
    all did, the step said "0 rows" and not why."""
    data = write_parquet(tmp_path / "in", [{"n": 1, "s": "a"}, {"n": 2, "s": "b"}, {"n": 3, "s": "c"},
                                           {"n": 4, "s": "d"}])
    with pytest.raises(StepError, match=r"^filter\.by_label: `where` raised on 3 of 4 rows \(first: "
                                        r"'\[s, n\]\[n % 4 == 0\] > 0': TypeError: .*\); "
                                        r"expected true or false for most rows$"):
        run_step("filter.by_label", {"max_pass_rate": None, "where": "[s, n][n % 4 == 0] > 0"}, {"data": data},
                 workdir=tmp_path / "w")
    with pytest.raises(StepError, match=r"raised on 4 of 4 rows .*ArrowInvalid: Invalid regular expression"):
        run_step("filter.by_label", {"max_pass_rate": None, "where": 'matches(s, "(?=a)")'}, {"data": data},
                 workdir=tmp_path / "x")


def test_row_wise_text_functions_are_the_vectorized_kernels():
    """Row-wise `matches`, `words` and `upper` were Python's: `\\d` kept Arabic-Indic digits that
    the vectorized RE2 dropped, `split` cut words at a no-break space, "ß".upper() was "SS", so a
    subscript elsewhere in `where` changed which rows were kept; and `re` backtracked without
    bound (`(a|aa)+$` on 34 a's and a b: seconds; on 5,000: forever)."""
    import time

    from steps.filter.rowexpr import Predicates

    texts = ["\u0661\u0662\u0663", "123", "a\u00a0b c", "\u00df", "a" * 5000 + "b"]
    batch = pa.RecordBatch.from_pylist([{"q": t} for t in texts])
    for expr in (r'matches(q, "^\\d+$")', "words(q) == 2", 'upper(q) == "SS"', 'matches(q, "(a|aa)+$")'):
        start = time.perf_counter()
        fast, slow = Predicates([expr]).mask(batch), Predicates([expr], vectorized=False).mask(batch)
        assert fast[0].tolist() == slow[0].tolist(), expr
        assert slow[1] is None and time.perf_counter() - start < 5


def test_no_rows_kept_fails_unless_allowed_then_writes_an_empty_part_with_the_schema(tmp_path):
    data = write_parquet(tmp_path / "in", rate_rows(["0.9", "n/a"]))
    with pytest.raises(StepError, match=r"output data has 0 rows \(input data: 2 rows\)"):
        run_step("filter.by_label", {}, {"data": data}, workdir=tmp_path / "w0")
    out = run_step("filter.by_label", {"allow_empty": True}, {"data": data}, workdir=tmp_path / "w")
    part = out["data"].path / "part-00000.parquet"
    assert pq.read_table(part).num_rows == 0
    assert "pass_rate_72b_tir" in pq.read_schema(part).names


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import steps.filter.by_label as f
    def boom(index):
        if index == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
    f._part_done = boom
    from engine.run.testing import run_step
    run_step("filter.by_label", {"save_every": 5, "batch_size": 3, "format": "jsonl"}, {"data": sys.argv[1]},
             workdir=sys.argv[2])
""")


def test_killed_filter_resumes_after_the_last_finished_part(tmp_path):
    # two input files (parquet then JSONL) so the resume point skips across files
    rows = [{"id": i, "pass_rate_72b_tir": "0.0" if i % 4 else "0.5"} for i in range(40)]  # 30 kept
    data = write_parquet(tmp_path / "in", rows[:20], name="a.parquet")
    with (data / "b.jsonl").open("w") as f:
        for r in rows[20:]:
            f.write(json.dumps(r) + "\n")
    whole = run_step("filter.by_label", {"save_every": 5, "batch_size": 3, "format": "jsonl"}, {"data": data},
                     workdir=tmp_path / "whole")

    work = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(data), str(work), "3"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr  # SIGKILL after part 3 (kept ids 1..26 -> 20 rows)
    assert sorted(p.name for p in (work / "scratch" / "parts").iterdir()) == [f"part-{i:05d}.jsonl" for i in range(4)]
    assert not (work / "out" / "data").exists()

    resumed = run_step("filter.by_label", {"save_every": 5, "batch_size": 3, "format": "jsonl"}, {"data": data},
                       workdir=work)
    assert "resuming after part 3 (input row 27)" in (work / "step.log").read_text()
    m, m_whole = resumed["report"].metrics(), whole["report"].metrics()
    assert m["resumed_from"] == {"parts": 4, "input_row": 27}
    assert resumed["data"].read() == whole["data"].read()
    for key in ("rows_in", "kept", "dropped_by_threshold", "unparseable", "parts", "pass_rate_histogram"):
        assert m[key] == m_whole[key], key


# ---------------------------------------------------------------- projected scan

def _read_every_column(monkeypatch):
    from steps.filter import by_label

    monkeypatch.setattr(by_label._FilterRun, "projection", lambda self, path: (None, "test"))


def _part_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out["data"].path.iterdir())}


def _mixed_rows(n: int, numeric: bool) -> list[dict]:
    rates = ["0.0", "0.03125", "n/a", None, " 0.05 ", "0.5", "1e-2", "abc", "1.0", "0.1"]
    rows = []
    for i in range(n):
        rate = rates[(i // 3) % len(rates)]  # runs of equal rates, like solutions of one problem
        if numeric:
            rate = None if rate is None else float(rate) if rate.strip().replace(".", "", 1).isdigit() else float("nan")
        rows.append({"id": i, "pass_rate_72b_tir": rate, "problem": None if i % 11 == 0 else f"problem {i} " * (i % 4),
                     "score": None if i % 7 == 0 else i / 3, "flag": i % 2 == 0, "tags": [f"t{i % 3}"] * (i % 3),
                     "meta": {"source": f"s{i % 5}", "n": i}})
    return rows


@pytest.mark.parametrize("numeric", [False, True])
@pytest.mark.parametrize("config", [
    {"max_pass_rate": 0.1},
    {"min_pass_rate": 0.01, "max_pass_rate": 0.5, "unparseable": "keep"},
    {"max_pass_rate": 0.5, "where": ["len(problem) > 12", "number(pass_rate_72b_tir) >= 0.0"]},
    {"max_pass_rate": 0.5, "where": "number(pass_rate_72b_tir) > 0.0"},
    {"max_pass_rate": 0.1, "columns": ["problem", "id"]},
    {"max_pass_rate": None, "where": "score > 20 and flag"},
])
def test_projected_scan_writes_the_bytes_of_reading_every_row(tmp_path, monkeypatch, config, numeric):
    from steps.filter import scan

    monkeypatch.setattr(scan, "WINDOW_BYTES", 2000)  # a Polars query per row group or two
    folder = tmp_path / "in"
    folder.mkdir()
    table = pa.Table.from_pylist(_mixed_rows(230, numeric)).replace_schema_metadata({"origin": "test"})
    pq.write_table(table, folder / "a.parquet", row_group_size=40)
    config = {**config, "save_every": 9, "batch_size": 7}
    fast = run_step("filter.by_label", config, {"data": folder}, workdir=tmp_path / "fast")
    assert "a.parquet: projected scan (decides on " in (tmp_path / "fast" / "step.log").read_text()
    _read_every_column(monkeypatch)
    slow = run_step("filter.by_label", config, {"data": folder}, workdir=tmp_path / "slow")
    assert len(_part_bytes(fast)) > 2 and _part_bytes(fast) == _part_bytes(slow)
    assert fast["report"].metrics() == slow["report"].metrics()
    assert pq.read_schema(fast["data"].path / "part-00000.parquet").metadata == {b"origin": b"test"}


def test_projected_scan_with_more_distinct_rates_than_a_predicate_holds(tmp_path, monkeypatch):
    from steps.filter import scan

    monkeypatch.setattr(scan, "MAX_DISTINCT_LABELS", 3)  # the scan reads every row; the result is the same
    folder = write_parquet(tmp_path / "in", _mixed_rows(100, False))
    fast = run_step("filter.by_label", {"save_every": 5}, {"data": folder}, workdir=tmp_path / "fast")
    _read_every_column(monkeypatch)
    slow = run_step("filter.by_label", {"save_every": 5}, {"data": folder}, workdir=tmp_path / "slow")
    assert _part_bytes(fast) == _part_bytes(slow) and len(_part_bytes(fast)) > 1


def test_columns_polars_would_change_are_read_from_every_row(tmp_path):
    from decimal import Decimal

    rows = [{"id": i, "pass_rate_72b_tir": "0.0" if i % 2 else "0.5", "price": Decimal(f"{i}.25")} for i in range(9)]
    folder = write_parquet(tmp_path / "in", rows)
    out = run_step("filter.by_label", {}, {"data": folder}, workdir=tmp_path / "w")
    assert "part.parquet: reading every column (column 'price' of type decimal128(3, 2))" in (
        tmp_path / "w" / "step.log").read_text()
    assert out["data"].read() == [r for r in rows if r["id"] % 2]


def test_parquet_bytes_do_not_depend_on_batch_size(tmp_path):
    # batch_size is execution-only (not in the key); version 1 wrote a part as the batches'
    # chunks, and where pyarrow's writer gives up on a dictionary followed them
    rng = random.Random(0)
    rows = [{"id": i, "pass_rate_72b_tir": "0.0" if i % 5 else "n/a",
             "text": "".join(rng.choice("abcdefghij ") for _ in range(600))} for i in range(2500)]
    folder = write_parquet(tmp_path / "in", rows)
    parts = [_part_bytes(run_step("filter.by_label", {"batch_size": size, "save_every": 2000}, {"data": folder},
                                  workdir=tmp_path / f"w{size}")) for size in (100, 1000)]
    assert parts[0] == parts[1] and len(parts[0]) == 1


PROJECTED_KILL_SCRIPT = KILL_SCRIPT.replace('"format": "jsonl"', '"format": "parquet"').replace(
    "f._part_done = boom", "f._part_done = boom\nimport steps.filter.scan as scan\nscan.WINDOW_BYTES = 2000")


def test_scan_windows_are_whole_row_groups_of_about_the_size_asked(tmp_path):
    from engine.recipe.parquet_footer import read_footer
    from steps.filter.scan import windows

    pq.write_table(pa.table({"x": list(range(100))}), tmp_path / "a.parquet", row_group_size=10)
    meta = read_footer(tmp_path / "a.parquet").row_groups
    group = pq.ParquetFile(tmp_path / "a.parquet").metadata.row_group(0).total_byte_size
    assert meta == [(10, group)] * 10
    assert windows(meta, 0, 1) == [(i, i + 10) for i in range(0, 100, 10)]
    assert windows(meta, 0, 3 * group) == [(0, 30), (30, 60), (60, 90), (90, 100)]
    assert windows(meta, 47, 3 * group) == [(47, 70), (70, 100)]  # resumed at row 47
    assert windows(meta, 0, 1 << 40) == [(0, 100)] and windows(meta, 100, 1) == []


def _killed_after_part_3_and_resumed(folder: Path, tmp_path: Path):
    """(a whole run, a run killed after part 3 then resumed, the resumed run's log), in parquet parts of 5."""
    config = {"save_every": 5, "batch_size": 3, "format": "parquet"}
    whole = run_step("filter.by_label", config, {"data": folder}, workdir=tmp_path / "whole")
    work = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", PROJECTED_KILL_SCRIPT, str(folder), str(work), "3"], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr
    resumed = run_step("filter.by_label", config, {"data": folder}, workdir=work)
    return whole, resumed, (work / "step.log").read_text()


def test_killed_projected_filter_resumes_inside_a_parquet_file(tmp_path, monkeypatch):
    from steps.filter import scan

    monkeypatch.setattr(scan, "WINDOW_BYTES", 2000)  # resumes inside a later Polars window
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(_mixed_rows(200, False)), folder / "a.parquet", row_group_size=30)
    whole, resumed, log = _killed_after_part_3_and_resumed(folder, tmp_path)
    assert "resuming after part 3 (input row " in log and log.count("projected scan") == 2
    assert _part_bytes(resumed) == _part_bytes(whole)
    m, m_whole = resumed["report"].metrics(), whole["report"].metrics()
    for key in ("rows_in", "kept", "dropped_by_threshold", "unparseable", "parts", "pass_rate_histogram"):
        assert m[key] == m_whole[key], key


# ---------------------------------------------------------------- the Polars lane

def _flat_rows(n: int, start: int = 0) -> list[dict]:
    rates = ["0.0", "0.03125", "n/a", None, " 0.05 ", "0.5", "1e-2", "abc", "1.0", "0.1", "1e999"]
    return [{"id": i, "pass_rate_72b_tir": rates[(i // 3) % len(rates)], "problem": None if i % 11 == 0 else
             f"problem {i} " * (i % 4), "score": None if i % 7 == 0 else i / 3, "flag": i % 2 == 0,
             "small": i % 100, "blob": bytes([i % 256]) * (i % 3)} for i in range(start, start + n)]


def _flat_input(folder: Path) -> Path:
    """Two files of one Arrow schema, with schema metadata and a narrow int."""
    schema = pa.Table.from_pylist(_flat_rows(20)).schema.set(5, pa.field("small", pa.int8()))
    schema = schema.with_metadata({"origin": "test"})
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(_flat_rows(130), schema=schema), folder / "a.parquet", row_group_size=40)
    pq.write_table(pa.Table.from_pylist(_flat_rows(101, 130), schema=schema), folder / "b.parquet")
    return folder


@pytest.mark.parametrize("config", [
    {"max_pass_rate": 0.1},
    {"min_pass_rate": 0.01, "max_pass_rate": 0.5, "unparseable": "keep"},
    {"max_pass_rate": None, "min_pass_rate": 0.5},
    {"max_pass_rate": None, "min_pass_rate": 0.0, "unparseable": "keep"},
])
def test_polars_lane_keeps_the_rows_schema_and_counts_of_reading_every_row(tmp_path, monkeypatch, config):
    from steps.filter import scan

    monkeypatch.setattr(scan, "WINDOW_BYTES", 2000)  # where most rows are kept, a query per row group or two
    folder = _flat_input(tmp_path / "in")
    config = {**config, "save_every": 9, "batch_size": 7}
    fast = run_step("filter.by_label", config, {"data": folder}, workdir=tmp_path / "fast")
    assert "filtering by Polars alone (decides on pass_rate_72b_tir)" in (tmp_path / "fast" / "step.log").read_text()
    _read_every_column(monkeypatch)
    slow = run_step("filter.by_label", config, {"data": folder}, workdir=tmp_path / "slow")
    assert list(_part_bytes(fast)) == list(_part_bytes(slow)) and len(_part_bytes(fast)) > 2
    for name in _part_bytes(fast):
        lane, every = (pq.read_table(out["data"].path / name) for out in (fast, slow))
        assert lane.schema.equals(every.schema, check_metadata=True) and lane.equals(every), name
    assert fast["report"].metrics() == slow["report"].metrics()


def test_polars_lane_parts_read_back_with_datasets_and_do_not_depend_on_batch_size(tmp_path):
    import datasets

    folder = _flat_input(tmp_path / "in")
    runs = [run_step("filter.by_label", {"save_every": 20, "batch_size": size, "max_pass_rate": 0.5},
                     {"data": folder}, workdir=tmp_path / f"w{size}") for size in (3, 1000)]
    assert _part_bytes(runs[0]) == _part_bytes(runs[1])
    assert "filtering by Polars alone" in (tmp_path / "w3" / "step.log").read_text()
    parts = sorted(str(p) for p in runs[0]["data"].path.iterdir())
    ds = datasets.Dataset.from_parquet(parts, cache_dir=str(tmp_path / "hf"))
    assert ds.features["small"].dtype == "int8" and ds.features["blob"].dtype == "binary"
    assert ds["id"] == [r["id"] for r in runs[0]["data"].read()]
    assert len(ds) == runs[0]["report"].metrics()["kept"] > 40


def test_polars_lane_parts_do_not_depend_on_the_thread_count(tmp_path):
    # filter steps are bit-identical across machines (DESIGN.md); Polars sizes its pool at import
    folder = _flat_input(tmp_path / "in")
    script = ("import sys; from engine.run.testing import run_step; "
              "run_step('filter.by_label', {'save_every': 40}, {'data': sys.argv[1]}, workdir=sys.argv[2])")
    for threads in ("1", "3"):
        subprocess.run([sys.executable, "-c", script, str(folder), str(tmp_path / threads)], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "POLARS_MAX_THREADS": threads})
    parts = [{p.name: p.read_bytes() for p in sorted((tmp_path / t / "out" / "data").iterdir())} for t in "13"]
    assert parts[0] == parts[1] and len(parts[0]) > 1
    assert "filtering by Polars alone" in (tmp_path / "1" / "step.log").read_text()


def test_killed_polars_lane_resumes_after_the_last_finished_part(tmp_path):
    whole, resumed, log = _killed_after_part_3_and_resumed(_flat_input(tmp_path / "in"), tmp_path)
    assert "resuming after part 3 (input row " in log and log.count("filtering by Polars alone") == 2
    assert _part_bytes(resumed) == _part_bytes(whole) and len(_part_bytes(whole)) > 5
    assert resumed["report"].metrics() == {**whole["report"].metrics(),
                                           "resumed_from": resumed["report"].metrics()["resumed_from"]}


def test_polars_lane_rerun_after_its_last_checkpoint_writes_nothing_more(tmp_path):
    # a crash between the final checkpoint and the commit: the rerun finds every part written
    folder = _flat_input(tmp_path / "in")
    first = run_step("filter.by_label", {"save_every": 10}, {"data": folder}, workdir=tmp_path / "w")
    parts = _part_bytes(first)
    assert first["report"].metrics()["kept"] % 10  # the last part is not full
    again = run_step("filter.by_label", {"save_every": 10}, {"data": folder}, workdir=tmp_path / "w")
    assert _part_bytes(again) == parts
    assert again["report"].metrics()["kept"] == first["report"].metrics()["kept"]


@pytest.mark.parametrize("change, reason", [
    (lambda t: t.cast(t.schema.set(0, pa.field("id", pa.int64(), nullable=False))), "nested or non-nullable columns"),
    (lambda t: t.append_column("day", pa.array([None] * len(t), pa.date32())), "column 'day' of type Date"),
    (lambda t: t.append_column("tags", pa.array([["x"]] * len(t))), "nested or non-nullable columns"),
])
def test_files_the_polars_lane_cannot_write_faithfully_are_read_every_row(tmp_path, change, reason):
    folder = tmp_path / "in"
    folder.mkdir()
    table = change(pa.Table.from_pylist(_flat_rows(60)))
    pq.write_table(table, folder / "a.parquet")
    out = run_step("filter.by_label", {"max_pass_rate": 0.5}, {"data": folder}, workdir=tmp_path / "w")
    log = (tmp_path / "w" / "step.log").read_text()
    assert f"a.parquet: not filtered by Polars alone ({reason})" in log and "Polars alone (decides" not in log
    assert pq.read_schema(out["data"].path / "part-00000.parquet").equals(table.schema)


def test_polars_lane_with_a_pass_rate_column_named_like_its_own_counts(tmp_path):
    data = write_parquet(tmp_path / "in", [{"len": r, "text": "x"} for r in RATES])
    out = run_step("filter.by_label", {"pass_rate_column": "len"}, {"data": data}, workdir=tmp_path / "w")
    assert "filtering by Polars alone" in (tmp_path / "w" / "step.log").read_text()
    assert [r["len"] for r in out["data"].read()] == ["0.1", "0.0", " 0.05 ", "0.09375", "1e-2"]


def test_parquet_without_an_arrow_schema_is_not_filtered_by_polars_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(_flat_rows(60)), folder / "a.parquet", store_schema=False)
    run_step("filter.by_label", {"max_pass_rate": 0.5}, {"data": folder}, workdir=tmp_path / "w")
    assert "a.parquet: not filtered by Polars alone (not written by Arrow)" in (tmp_path / "w" / "step.log").read_text()


# ---------------------------------------------------------------- bad input

def test_missing_threshold_column_names_the_file(tmp_path):
    data = write_parquet(tmp_path / "in", [{"problem": "x", "pass_rate": "0.1"}])
    with pytest.raises(StepError) as e:
        run_step("filter.by_label", {}, {"data": data}, workdir=tmp_path / "w")
    msg = str(e.value)
    assert str(data / "part.parquet") in msg and "no column 'pass_rate_72b_tir'" in msg and "pass_rate" in msg


def test_corrupt_parquet_names_the_file(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = FIXTURE.read_bytes()
    (folder / "broken.parquet").write_bytes(good[: len(good) // 2])
    with pytest.raises(StepError, match=r"broken\.parquet: not a readable parquet file"):
        run_step("filter.by_label", {}, {"data": folder}, workdir=tmp_path / "w")


@pytest.mark.parametrize("text", ['{\n  "problem": "x",\n  "pass_rate_72b_tir": "0.1"\n}\n', '"just a string"\n',
                                  '[1, 2, 3]\n'])
def test_json_that_is_not_an_array_or_jsonl_names_the_file(tmp_path, text):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "seed.json").write_text(text)
    with pytest.raises(StepError) as e:
        run_step("filter.by_label", {}, {"data": folder}, workdir=tmp_path / "w")
    assert str(folder / "seed.json") in str(e.value)
    assert "JSON" in str(e.value)


def test_unknown_column_in_where_is_a_clear_error(tmp_path):
    data = write_parquet(tmp_path / "in", rate_rows(["0.0"]))
    with pytest.raises(StepError, match=r"unknown column 'problm'.*columns: id, pass_rate_72b_tir, problem_type"):
        run_step("filter.by_label", {"where": "len(problm) > 3"}, {"data": data}, workdir=tmp_path / "w")


def test_bad_config_fails_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="invalid expression"):
        run_step("filter.by_label", {"where": "len(problem) >"}, {}, workdir="/nonexistent")
    with pytest.raises(ValidationError, match="above max_pass_rate"):
        run_step("filter.by_label", {"min_pass_rate": 0.5, "max_pass_rate": 0.1}, {}, workdir="/nonexistent")


# ---------------------------------------------------------------- filter.llm_judge (scripted backend)

def _judge_rows(tmp_path):
    rows = [
        {"id": "a", "problem": "What is 2+3?", "expected_answer": "5"},                     # right, numbers
        {"id": "b", "problem": "What is 2*3?", "expected_answer": "6"},                     # wrong, numbers
        {"id": "c", "problem": "Simplify 2/4.", "expected_answer": "\\frac{1}{2}"},         # right, math-verify
        {"id": "d", "problem": "Name the shape.", "expected_answer": "a square"},           # judge says yes
        {"id": "e", "problem": "Name the colour.", "expected_answer": "dark blue"},         # judge says no
        {"id": "f", "problem": "Say nothing useful.", "expected_answer": "7"},              # judge never decides
        {"id": "g", "problem": "Stay silent.", "expected_answer": "7"},                     # no answer at all
    ]
    folder = tmp_path / "judge_in"
    folder.mkdir()
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


BOTH_SCRIPTED = {"inference_backend": {"kind": "scripted"}, "judgement_backend": {"kind": "scripted"}}


def _judge_backend():
    from tests._scripted_backend import ScriptedBackend

    answers = {"What is 2+3?": "so \\boxed{5}", "What is 2*3?": "it is \\boxed{5}", "Simplify 2/4.": "\\boxed{0.5}",
               "Name the shape.": "\\boxed{square}", "Name the colour.": "\\boxed{green}",
               "Say nothing useful.": "\\boxed{seven-ish}", "Stay silent.": "I refuse."}

    def answer(prompt, seed, k):
        if prompt.startswith("You will be given"):
            if "Predicted answer: square" in prompt:
                return "They match.\nJudgement: Yes"
            if "Predicted answer: green" in prompt:
                return "Judgement: No"
            return "I am not sure."
        return next(v for q, v in answers.items() if prompt.endswith(q))

    return ScriptedBackend(answer=answer)


def test_llm_judge_math_verify_first_then_judge_only_where_it_cannot_parse(tmp_path, monkeypatch):
    from tests._scripted_backend import use_scripted_backend

    backend = _judge_backend()
    loads = use_scripted_backend(monkeypatch, backend)
    out = run_step("filter.llm_judge", {"keep": "incorrect", "retries": 1, **BOTH_SCRIPTED},
                   {"data": _judge_rows(tmp_path)},
                   workdir=tmp_path / "w")
    judged = {r["id"]: (r["judge_verdict"], r["judge_method"]) for r in out["judged"].read()}
    assert judged == {"a": ("correct", "math_verify"), "b": ("incorrect", "math_verify"),
                      "c": ("correct", "math_verify"), "d": ("correct", "llm_judge"), "e": ("incorrect", "llm_judge"),
                      "g": ("incorrect", "no_answer")}
    assert [r["id"] for r in out["data"].read()] == ["b", "e", "g"]
    failed = out["failed"].read()
    assert [(f["id"], f["stage"]) for f in failed] == [("f", "judgement")]
    assert "Judgement: Yes/No" in failed[0]["reason"]
    # the judge saw only the rows math-verify could not read (d, e, f; f twice: one retry)
    judge_prompts = [t for texts, _ in backend.calls for t in texts if t.startswith("You will be given")]
    assert sorted(p.split("Problem: ")[1].split("\n")[0] for p in judge_prompts) == [
        "Name the colour.", "Name the shape.", "Say nothing useful.", "Say nothing useful."]
    # same model and backend for both roles: loaded once
    assert [m for _, m in loads] == ["Qwen/Qwen3-32B"]
    m = out["report"].metrics()
    assert (m["correct"], m["incorrect"], m["by_math_verify"], m["by_llm_judge"], m["by_no_answer"], m["failed"],
            m["kept"]) == (3, 3, 3, 2, 1, 1, 3)


def test_llm_judge_start_end_fractions_and_separate_judge_model(tmp_path, monkeypatch):
    from tests._scripted_backend import use_scripted_backend

    loads = use_scripted_backend(monkeypatch, _judge_backend())
    out = run_step("filter.llm_judge",
                   {"start": 0.5, "end": 1.0, "keep": "all", "judgement_model": "judge-model", **BOTH_SCRIPTED,
                    "retries": 0}, {"data": _judge_rows(tmp_path)}, workdir=tmp_path / "w")
    assert [r["id"] for r in out["judged"].read()] == ["d", "e", "g"]  # rows 3..6; f: the judge never decides
    assert out["report"].metrics()["range"] == [3, 7]
    assert [m for _, m in loads] == ["Qwen/Qwen3-32B", "judge-model"]


def test_llm_judge_bad_range_and_missing_answer_column(tmp_path, monkeypatch):
    from pydantic import ValidationError

    from tests._scripted_backend import use_scripted_backend

    with pytest.raises(ValidationError, match="start 0.5 must be below end 0.5"):
        run_step("filter.llm_judge", {"start": 0.5, "end": 0.5}, {}, workdir=tmp_path)
    use_scripted_backend(monkeypatch, _judge_backend())
    data = write_parquet(tmp_path / "in", [{"problem": "x"}])
    with pytest.raises(StepError, match=r"none of the answer columns expected_answer, answer"):
        run_step("filter.llm_judge", BOTH_SCRIPTED, {"data": data}, workdir=tmp_path / "w")


def test_jsonl_with_numbers_and_na_in_one_column_is_read_as_text(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = [{"id": 0, "pass_rate_72b_tir": 0.05}, {"id": 1, "pass_rate_72b_tir": "n/a"},
            {"id": 2, "pass_rate_72b_tir": 0.5},
            {"id": 3, "pass_rate_72b_tir": "0.1"}]
    (folder / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_step("filter.by_label", {}, {"data": folder}, workdir=tmp_path / "w")
    assert [r["id"] for r in out["data"].read()] == [0, 3]
    assert out["report"].metrics()["unparseable_values"] == {"n/a": 1}
