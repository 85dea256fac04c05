"""Never silently empty: a step whose Dataset output has 0 rows fails (exit 1, nothing cached,
the reason counted), unless it may be (a step's set-aside rows) or the recipe says `allow_empty`."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write

from engine.cache.keys import config_for_key
from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import StepConfig


def recipe(tmp_path, where: str, allow: str = "") -> str:
    return str(write(tmp_path / "empty.yaml", f"""recipe: empty
steps:
  - id: squares
    uses: test.squares
    with: {{n: 3}}
  - id: keep
    uses: data.map
    with: {{where: "{where}"{allow}}}
    inputs: {{data: "${{steps.squares.data}}"}}
"""))


def entries(cache) -> list[str]:
    return sorted(p.parent.name for p in cache.glob("??/*/entry.json"))


def test_a_dataset_output_with_0_rows_fails_with_its_reason_and_caches_nothing(cli, tmp_path):
    out = cli("run", recipe(tmp_path, "square > 100"), check=1).stdout
    assert ("keep: output data has 0 rows (input data: 3 rows); nothing was cached. Set `allow_empty: true` "
            "in the step's `with:` if empty is expected") in " ".join(out.split())
    run = cli.last_run()
    status = {n["label"]: (n["status"], n["key"]) for n in run["nodes"]}
    assert status["keep"][0] == "failed" and run["status"] == "failed"
    assert entries(cli.cache) == [status["squares"][1]]  # the empty step left no entry
    assert not list(cli.artifacts.glob("empty/keep/*"))
    cli("run", recipe(tmp_path, "square > 1"))  # a step that finds rows is not affected
    assert cli.statuses()["keep"] == "ran" and len(entries(cli.cache)) == 2


def test_allow_empty_lets_it_through_and_says_so_in_the_summary_row(cli, tmp_path):
    path = recipe(tmp_path, "square > 100", ", allow_empty: true")
    out = cli("run", path).stdout
    assert "ran (output data: 0 rows (allow_empty))" in out
    assert cli.statuses()["keep"] == "ran"
    assert (cli.artifacts / "empty" / "keep" / "data" / "data.jsonl").read_text() == ""
    # the entry keeps the note: a cached run says it too
    assert "cached (output data: 0 rows (allow_empty))" in cli("run", path).stdout


def test_allow_empty_is_in_the_key_only_when_true():
    """Keys of every existing step stay as they were; an entry made while allowing empty is
    never served to a step that does not allow it."""
    assert "allow_empty" not in config_for_key(StepConfig())
    assert config_for_key(StepConfig(allow_empty=True)) == {"allow_empty": True}


def test_dataset_is_empty_reads_only_the_start_of_each_part(tmp_path):
    def ds(name: str, files: dict[str, str | bytes | None]) -> Dataset:
        for f, text in files.items():
            p = tmp_path / name / f
            p.parent.mkdir(parents=True, exist_ok=True)
            if text is None:
                pq.write_table(pa.table({"a": pa.array([], pa.int64())}), p)
            else:
                p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
        (tmp_path / name).mkdir(exist_ok=True)
        return Dataset(tmp_path / name)

    assert ds("none", {}).is_empty()
    assert ds("blank", {"a.jsonl": "", "b.jsonl": "\n \n"}).is_empty()
    assert ds("array", {"a.json": " [ \n ] \n"}).is_empty()
    assert ds("parquet", {"a.parquet": None}).is_empty()
    assert ds("readme", {"README.md": "# rows: none"}).is_empty()
    assert not ds("row", {"a.jsonl": "", "b.jsonl": "\n" * 70000 + json.dumps({"a": 1}) + "\n"}).is_empty()
    assert not ds("rows", {"a.json": "[" + " " * 70000 + json.dumps({"a": 1}) + "]"}).is_empty()
    assert not ds("lines", {"a.json": json.dumps({"a": 1}) + "\n"}).is_empty()  # JSON Lines saved as .json


def test_dataset_len_counts_footers_and_lines_without_decoding_rows(tmp_path):
    """len(Dataset) read and decoded every row (the engine takes it of each set-aside output). It
    counts parquet footers and JSON Lines' non-blank lines; a line that is no valid row still
    counts, since a count is no validation: reading the rows names its line."""
    d = tmp_path / "d"
    d.mkdir()
    pq.write_table(pa.table({"a": list(range(250))}), d / "p1.parquet", row_group_size=100)  # 3 row groups
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), d / "p2.parquet")
    # a byte order mark, CRLF and lone CR line ends, blank lines, a corrupt row, no newline at the end
    (d / "q.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\n  \r\n{"a": 2}\r{"a": \n' + b"\n" * 3 + b'{"a": 3}')
    (d / "r.json").write_text('[{"a": 4}, {"a": 5}]')  # a JSON array is read through
    (d / "s.json").write_text('{"a": 6}\n{"a": 7}\n')  # JSON Lines saved as .json
    probe = ("import sys; from engine.recipe.artifact_types import Dataset; "
             f"print(len(Dataset({str(d)!r})), 'pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["258", "False"]  # 250 + 0 + 4 + 2 + 2, and no parquet page read
    with pytest.raises(StepError, match=r"q\.jsonl:5: not valid JSON Lines"):
        Dataset(d).read()
    (d / "q.jsonl").write_bytes(b'{"a": 1}\n\xff\n')
    with pytest.raises(StepError, match=r"q\.jsonl:2: not valid UTF-8 \(byte 0xff"):
        len(Dataset(d))


def test_dataset_len_refuses_a_footer_whose_row_count_lies(tmp_path):
    """As data.load does (steps/common/arrowio.check_file): num_rows 63 over row groups of 3 rows."""
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"p": [0.1, 0.2, 0.3]}), good)
    data = good.read_bytes()
    length = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - length:-8]
    at = footer.index(b"\x16\x06")  # field 3 (num_rows, an i64): zigzag 3 is 6
    footer = footer[:at + 1] + bytes([63 * 2]) + footer[at + 2:]
    bad = tmp_path / "d" / "lying.parquet"
    bad.parent.mkdir()
    bad.write_bytes(data[:-8 - length] + footer + struct.pack("<I", len(footer)) + b"PAR1")
    assert pq.ParquetFile(bad).metadata.num_rows == 63
    with pytest.raises(StepError, match=r"lying\.parquet: damaged parquet footer: it counts 63 rows, its row groups "
                                        r"hold 3; expected the two to agree \(write the file again\)"):
        len(Dataset(bad.parent))
