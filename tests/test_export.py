"""export.files: file names that would name one file twice, or a file and a folder at once."""
from __future__ import annotations

import json

import pytest
from conftest import write

RECIPE = """recipe: exp
steps:
  - id: data
    uses: data.from_file
    with: {path: rows.jsonl}
  - id: export
    uses: export.files
    with: {files: FILES}
    inputs: {datasets: DATASETS}
"""


@pytest.mark.parametrize("files, message", [
    ("[{name: a.json}, {name: ./a.json}]",  # once: one a.json, the second dataset over the first
     "config field 'files.1.name': Value error, file name './a.json' must be a relative path without '..', "
     "'.' parts, '//' or a trailing '/' (got './a.json')"),
    ("[{name: .}]",  # once: IsADirectoryError traceback
     "config field 'files.0.name': Value error, file name '.' must be a relative path without '..', "
     "'.' parts, '//' or a trailing '/' (got '.')"),
    ("[{name: a}, {name: a/b.json}]",  # once: FileExistsError traceback
     "config field 'files': Value error, a is a file name and also a folder of another file"),
])
def test_file_names_that_clash_are_plan_time_errors(cli, files, message):
    write(cli.tmp / "rows.jsonl", json.dumps({"id": 1, "problem": "1+1"}) + "\n")
    datasets = ", ".join(['"${steps.data.data}"'] * files.count("name:"))
    write(cli.tmp / "r.yaml", RECIPE.replace("FILES", files).replace("DATASETS", f"[{datasets}]"))
    p = cli("run", "r.yaml", check=2)
    assert f"error: r.yaml:8:12: step export: {message}" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert not list(cli.cache.rglob("entry.json"))
