"""data.load: local files/globs/folders (validated, linked, limited) and the Hub path with a fake
HfApi and fake downloads (no network here), revision resolved and recorded."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

import steps.data.load as data_load
from engine.recipe.errors import StepError
from engine.run.testing import run_step

FIXTURE = Path(__file__).parent / "data" / "openmath_fixture.parquet"
SHA = "0123456789abcdef0123456789abcdef01234567"


def test_local_parquet_is_linked_and_recorded(tmp_path):
    out = run_step("data.load", {"path": str(FIXTURE)}, workdir=tmp_path)
    files = list(out["data"].path.iterdir())
    assert [f.name for f in files] == ["openmath_fixture.parquet"]
    assert files[0].read_bytes() == FIXTURE.read_bytes()
    src = out["source"].metrics()
    assert src["kind"] == "local" and src["rows"] == 300
    assert src["files"][0]["columns"][:5] == ["expected_answer", "problem_type", "problem_source", "generation_model",
                                              "pass_rate_72b_tir"]


def test_folder_and_glob_with_jsonl_and_json_array(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text('{"problem": "p1", "answer": "1"}\n\n{"problem": "p2", "answer": "2"}\n')
    (d / "b.json").write_text(json.dumps([{"problem": "p3", "answer": "3"}]))
    (d / "notes.txt").write_text("ignored")
    for path in (str(d), str(d / "*.json*")):
        out = run_step("data.load", {"path": path}, workdir=tmp_path / f"w{len(path)}")
        assert [r["problem"] for r in out["data"].read()] == ["p1", "p2", "p3"]
        assert out["source"].metrics()["rows"] is None  # JSONL rows are not counted without a scan



def test_a_folder_leaves_out_names_starting_with_a_dot_or_underscore(tmp_path):
    """A stale notebook checkpoint and a failed Spark job's partial part were loaded as rows."""
    d = tmp_path / "in"
    for name, row in [("data.jsonl", 1), (".ipynb_checkpoints/data-checkpoint.jsonl", 0),
                      ("_temporary/0/part-00000.jsonl", 9), ("a/_b.jsonl", 8)]:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(json.dumps({"p": row}) + "\n")
    out = run_step("data.load", {"path": str(d)}, workdir=tmp_path / "w")
    assert out["data"].read() == [{"p": 1}]
    assert [f["path"] for f in out["source"].metrics()["files"]] == [str(d / "data.jsonl")]

def test_limit_rewrites_the_first_rows_as_parquet_parts(tmp_path):
    out = run_step("data.load", {"path": [str(FIXTURE)], "limit": 50, "part_rows": 20}, workdir=tmp_path)
    parts = sorted(p.name for p in out["data"].path.iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert out["data"].read() == pq.read_table(FIXTURE).slice(0, 50).to_pylist()



def test_limit_parts_share_one_schema(tmp_path):
    """Parts of `part_rows` rows each: a field null in the first part's rows was `null` there and
    `string` in the next part, a folder pyarrow.dataset refused."""
    import pyarrow.dataset as pads

    rows = [{"problem": f"p{i}", "hint": None if i < 3 else "h"} for i in range(5)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_step("data.load", {"path": str(tmp_path / "a.jsonl"), "limit": 5, "part_rows": 3}, workdir=tmp_path / "w")
    assert len({str(pq.read_schema(p)) for p in out["data"].parts()}) == 1 < len(out["data"].parts())
    assert pads.dataset(str(out["data"].path)).to_table().to_pylist() == rows

def test_external_files_are_the_matched_files(tmp_path):
    from steps.data.load import Load

    step = Load(Load.Config(path=[str(FIXTURE.parent / "*.parquet")]))
    assert str(FIXTURE) in step.external_files()


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(StepError, match=r"path .*nothing\*\.parquet: no \.parquet, \.jsonl or \.json file found"):
        run_step("data.load", {"path": str(tmp_path / "nothing*.parquet")}, workdir=tmp_path)


def test_corrupt_parquet_names_the_file(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(FIXTURE.read_bytes()[:500])
    with pytest.raises(StepError, match=r"broken\.parquet: not a readable parquet file"):
        run_step("data.load", {"path": str(bad)}, workdir=tmp_path / "w")



@pytest.mark.parametrize("claimed", [0, 63])
def test_a_footer_whose_row_count_lies_names_the_file(tmp_path, claimed):
    """FileMetaData.num_rows said 0 or 63 of 3 rows: data.load linked the file and reported 63 rows,
    or failed with "output data has 0 rows" (the engine's emptiness check reads that count)."""
    import struct

    import pyarrow as pa

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"p": [0.1, 0.2, 0.3]}), good)
    data = good.read_bytes()
    length = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - length:-8]
    at = footer.index(b"\x16\x06")  # field 3 (num_rows, an i64): zigzag 3 is 6; claimed < 64 fits a byte
    footer = footer[:at + 1] + bytes([claimed * 2]) + footer[at + 2:]
    bad = tmp_path / "in" / "lying.parquet"
    bad.parent.mkdir()
    bad.write_bytes(data[:-8 - length] + footer + struct.pack("<I", len(footer)) + b"PAR1")
    assert pq.ParquetFile(bad).metadata.num_rows == claimed and pq.read_table(bad).num_rows == 3
    with pytest.raises(StepError, match=rf"lying\.parquet: damaged parquet footer: it counts {claimed} rows, its "
                                        r"row groups hold 3"):
        run_step("data.load", {"path": str(bad.parent)}, workdir=tmp_path / "w")

@pytest.mark.parametrize("text,match", [
    ('{\n  "problem": "x"\n}\n', r"seed\.json:1: not valid JSON Lines"),
    ('"text"', r"seed\.json: not a JSON array or JSON Lines file"),
    ('[{"a": 1}, 2]', r"seed\.json: item 1 is int"),
])
def test_json_that_is_not_an_array_or_jsonl_names_the_file(tmp_path, text, match):
    bad = tmp_path / "seed.json"
    bad.write_text(text)
    with pytest.raises(StepError, match=match):
        run_step("data.load", {"path": str(bad)}, workdir=tmp_path / "w")



def test_a_part_with_an_upper_case_suffix_is_read(tmp_path):
    """data.load linked `B.PARQUET` into its output and counted its rows, but a Dataset's parts
    were matched by a lower-case suffix: readers downstream silently lost B's rows."""
    d = tmp_path / "in"
    d.mkdir()
    shutil.copyfile(FIXTURE, d / "a.parquet")
    shutil.copyfile(FIXTURE, d / "B.PARQUET")
    (d / "C.JSONL").write_text('{"problem": "p1"}\n')
    out = run_step("data.load", {"path": str(d)}, workdir=tmp_path / "w")
    assert [p.name for p in out["data"].parts()] == ["B.PARQUET", "C.JSONL", "a.parquet"]
    assert len(out["data"].read()) == 601 and out["source"].metrics()["rows"] is None


@pytest.mark.parametrize("name, text, where", [
    ("late.jsonl", '{"problem": "ok"}\n' * 3 + '{"problem": "caf\xe9"}\n', r"late\.jsonl:4: not valid UTF-8"),
    ("first.jsonl", '{"problem": "caf\xe9"}\n', r"first\.jsonl:1: not valid UTF-8"),
    ("array.json", '[{"problem": "caf\xe9"}]', r"array\.json:1: not valid UTF-8"),
])
def test_latin1_text_names_the_file_and_line(tmp_path, name, text, where):
    """A Latin-1 file ended in a UnicodeDecodeError traceback, from data.load and from readers
    downstream (filter.by_label) of a file data.load had linked."""
    bad = tmp_path / "in" / name
    bad.parent.mkdir()
    bad.write_bytes(text.encode("latin-1"))
    with pytest.raises(StepError, match=where + r" \(byte 0xe9 at byte offset \d+\); expected UTF-8 text"):
        run_step("data.load", {"path": str(bad)}, workdir=tmp_path / "w")
    with pytest.raises(StepError, match=where):
        run_step("filter.by_label", {"max_pass_rate": None}, {"data": bad.parent}, workdir=tmp_path / "f")


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    """Excel's "CSV UTF-8" and Windows tools start a file with a BOM: a CSV's first column was
    named `\\ufeffproblem`, and JSON Lines and JSON arrays were refused."""
    bom = "\ufeff"
    (tmp_path / "a.jsonl").write_text(bom + '{"problem": "p1"}\n', encoding="utf-8")
    (tmp_path / "b.json").write_text(bom + '[{"problem": "p2"}]', encoding="utf-8")
    (tmp_path / "c.csv").write_text(bom + "problem,answer\np3,3\n", encoding="utf-8")
    out = run_step("data.load", {"path": str(tmp_path / "*.json*")}, workdir=tmp_path / "w")
    assert out["data"].read() == [{"problem": "p1"}, {"problem": "p2"}]
    out = run_step("data.from_file", {"path": str(tmp_path / "c.csv")}, workdir=tmp_path / "x")
    assert out["data"].read() == [{"problem": "p3", "answer": "3"}]


def test_a_repeated_column_name_is_an_error_not_a_lost_column(tmp_path):
    """Parquet allows two columns named `x`, a CSV header too; a row (a dict) kept only the last
    one, and data.from_file wrote the rows without the first column's values."""
    import pyarrow as pa

    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), pa.array(["a", "b"])], names=["x", "x"]),
                   tmp_path / "dup.parquet")
    (tmp_path / "dup.csv").write_text("x,y,x\n1,2,3\n")
    message = "column 'x' appears more than once; expected unique column names"
    with pytest.raises(StepError, match=rf"dup\.parquet: {message}"):
        run_step("data.load", {"path": str(tmp_path / "dup.parquet")}, workdir=tmp_path / "w")
    with pytest.raises(StepError, match=rf"dup\.parquet: {message}"):
        run_step("data.from_file", {"path": str(tmp_path / "dup.parquet")}, workdir=tmp_path / "x")
    with pytest.raises(StepError, match=rf"dup\.csv:1: {message}"):
        run_step("data.from_file", {"path": str(tmp_path / "dup.csv")}, workdir=tmp_path / "y")


@pytest.mark.parametrize("text, where", [("a,b\n1,2\n3,4,5\n", r":3: 3 fields; expected 2"),
                                         ('a,b\n1,2\n"x\ny",\n6\n', r":5: 1 field; expected 2")])
def test_a_csv_row_with_another_number_of_fields_names_its_line(tmp_path, text, where):
    """An extra field was kept under the key None (written out as "null"); a row cut short got
    None for the missing values."""
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(StepError, match=rf"r\.csv{where}, as in the header$"):
        run_step("data.from_file", {"path": str(tmp_path / "r.csv")}, workdir=tmp_path / "w")


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("name, text, step, why", [
    # RecursionError from json.loads, from every reader
    ("x.jsonl", '{"r": 0.1}\n{"r": 0.1, "n": %s}\n' % DEEP, "data.from_file", r"x\.jsonl:2: JSON nested too deeply"),
    ("x.jsonl", '{"r": 0.1, "n": %s}\n' % DEEP, "data.load", r"x\.jsonl:1: JSON nested too deeply"),
    ("x.json", '[{"r": 0.1, "n": %s}]' % DEEP, "data.load", r"x\.json: JSON nested too deeply"),
    ("x.jsonl", '{"r": 0.1, "n": %s}\n' % DEEP, "filter.by_label", r"x\.jsonl:1: JSON nested too deeply"),
    # OverflowError from pyarrow
    ("x.jsonl", '{"r": 0.1}\n{"r": 0.2, "n": 123456789012345678901234567890}\n', "filter.by_label",
     r"x\.jsonl: row 2's column 'n' holds 123456789012345678901234567890, beyond a 64-bit integer"),
    # ArrowInvalid from pyarrow, writing the rows as parquet
    ("x.jsonl", '{"q": {"a": 1}}\n{"q": [1]}\n', "data.from_file",
     r"data\.parquet: rows cannot be written as parquet \(row 2's column 'q' is a list, row 1's a dict"),
])
def test_hostile_json_is_one_error_naming_the_file(tmp_path, name, text, step, why):
    """Each of these ended in a traceback: RecursionError, OverflowError, ArrowInvalid."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_text(text)
    config, inputs = {
        "data.load": ({"path": str(tmp_path / "in")}, None),
        "data.from_file": ({"path": str(tmp_path / "in" / name), "output_format": "parquet"}, None),
        "filter.by_label": ({"pass_rate_column": "r", "max_pass_rate": None}, {"data": tmp_path / "in"}),
    }[step]
    with pytest.raises(StepError, match=why):
        run_step(step, config, inputs, workdir=tmp_path / "w")


def test_damaged_parquet_pages_name_the_file_and_row_group(tmp_path):
    """The footer is whole, the pages are not: reading the rows raised pyarrow's OSError (or a
    UnicodeDecodeError for text that is not UTF-8) as a traceback that named no file."""
    import pyarrow as pa

    pq.write_table(pa.table({"q": [f"text {i}" for i in range(1000)]}), tmp_path / "zeroed.parquet",
                   compression="none")
    data = bytearray((tmp_path / "zeroed.parquet").read_bytes())
    data[4:len(data) // 2] = bytes(len(data) // 2 - 4)
    (tmp_path / "zeroed.parquet").write_bytes(bytes(data))
    offsets = pa.array([0, 2, 3], pa.int32()).buffers()[1]
    text = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"ok\xff")])  # not UTF-8
    pq.write_table(pa.table({"q": text}), tmp_path / "latin.parquet")
    for name in ("zeroed", "latin"):
        with pytest.raises(StepError, match=rf"{name}\.parquet: row group 0: cannot read parquet data \([^\n]+\); "
                                            r"expected an undamaged file$"):
            run_step("data.from_file", {"path": str(tmp_path / f"{name}.parquet")}, workdir=tmp_path / name)


def test_a_parquet_timestamp_for_json_lines_names_file_row_and_column(tmp_path):
    """data.from_file writes JSON Lines by default: a parquet timestamp, decimal or binary column
    ended in "TypeError: Object of type datetime is not JSON serializable" and a traceback."""
    import datetime

    import pyarrow as pa

    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": [3, 4], "t": [None, datetime.datetime(2024, 1, 1)]}), tmp_path / "b.parquet")
    with pytest.raises(StepError, match=r"b\.parquet: row 2's column 't' holds a datetime; JSON Lines cannot hold "
                                        r"it, set output_format: parquet$"):
        run_step("data.from_file", {"path": str(tmp_path / "*.parquet")}, workdir=tmp_path / "w")
    out = run_step("data.from_file", {"path": str(tmp_path / "*.parquet"), "output_format": "parquet"},
                   workdir=tmp_path / "p")
    assert out["data"].read()[-1] == {"x": 4, "t": datetime.datetime(2024, 1, 1)}
    (tmp_path / "only").mkdir()  # a step that writes JSON Lines from such a dataset
    shutil.copyfile(tmp_path / "b.parquet", tmp_path / "only" / "b.parquet")
    with pytest.raises(StepError, match=r"data\.jsonl: row 2's column 't' holds a datetime; JSON cannot hold it"):
        run_step("data.sample", {"n": 2}, {"data": tmp_path / "only"}, workdir=tmp_path / "s")

def test_config_needs_exactly_one_source():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="either path"):
        run_step("data.load", {}, workdir="/nonexistent")
    with pytest.raises(ValidationError, match="streaming needs split"):
        run_step("data.load", {"hub": "nvidia/OpenMathReasoning", "streaming": True}, workdir="/nonexistent")


# ---------------------------------------------------------------- the Hub (fake HfApi, fake downloads)

@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    calls = SimpleNamespace(info=[], listed=[], downloaded=[])
    repo_files = [".gitattributes", "README.md", "data/cot-00000-of-00002.parquet", "data/cot-00001-of-00002.parquet",
                  "data/tir-00000-of-00001.parquet", "results.png"]

    class FakeApi:
        def dataset_info(self, repo_id, revision=None):
            calls.info.append((repo_id, revision))
            return SimpleNamespace(sha=SHA)

        def list_repo_files(self, repo_id, repo_type=None, revision=None):
            calls.listed.append((repo_id, repo_type, revision))
            return repo_files

    def fake_download(repo_id, filename, revision, local_dir, token):
        calls.downloaded.append((repo_id, filename, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURE, target)
        return target

    monkeypatch.setattr(data_load, "make_hf_api", lambda token: FakeApi())
    monkeypatch.setattr(data_load, "download", fake_download)
    return calls


def test_hub_split_files_with_fake_hfapi_record_the_resolved_sha(tmp_path, fake_hub):
    out = run_step("data.load", {"hub": "nvidia/OpenMathReasoning", "split": "cot"}, workdir=tmp_path)
    assert fake_hub.info == [("nvidia/OpenMathReasoning", "main")]
    assert fake_hub.downloaded == [("nvidia/OpenMathReasoning", "data/cot-00000-of-00002.parquet", SHA),
                                   ("nvidia/OpenMathReasoning", "data/cot-00001-of-00002.parquet", SHA)]
    src = out["source"].metrics()
    assert (src["repo_id"], src["revision"], src["sha"], src["rows"]) == ("nvidia/OpenMathReasoning", "main", SHA, 600)
    assert [f["path"] for f in src["files"]] == ["data/cot-00000-of-00002.parquet", "data/cot-00001-of-00002.parquet"]
    assert len(out["data"].read()) == 600
    assert f"pin revision: {SHA}" in (tmp_path / "step.log").read_text()


def test_hub_streaming_with_fake_stream_takes_the_first_rows(tmp_path, fake_hub, monkeypatch):
    seen = {}

    def fake_stream(repo_id, name, split, revision, token):
        seen.update(repo_id=repo_id, split=split, revision=revision)
        return iter(pq.read_table(FIXTURE).to_pylist())

    monkeypatch.setattr(data_load, "stream_rows", fake_stream)
    out = run_step("data.load", {"hub": "nvidia/OpenMathReasoning", "split": "cot", "streaming": True,
                                 "limit": 25, "part_rows": 10, "revision": SHA}, workdir=tmp_path)
    assert seen == {"repo_id": "nvidia/OpenMathReasoning", "split": "cot", "revision": SHA}
    assert out["data"].read() == pq.read_table(FIXTURE).slice(0, 25).to_pylist()
    assert sorted(p.name for p in out["data"].path.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]
    assert out["source"].metrics()["sha"] == SHA
    assert "pin revision" not in (tmp_path / "step.log").read_text()


def test_hub_errors_do_not_leak_the_token_with_fake_hfapi(tmp_path, monkeypatch):
    token = "hf_secretvalue_987654321"
    monkeypatch.setenv("HF_TOKEN", token)

    class Broken:
        def dataset_info(self, repo_id, revision=None):
            raise RuntimeError(f"401 for Authorization: Bearer {token}")

    monkeypatch.setattr(data_load, "make_hf_api", lambda t: Broken())
    with pytest.raises(StepError) as e:
        run_step("data.load", {"hub": "me/private-set"}, workdir=tmp_path)
    assert token not in str(e.value) and "cannot resolve" in str(e.value)
    assert token not in (tmp_path / "step.log").read_text()
