"""Artifact folder names that glob-reading tools accept: `squares.2`, not `squares[2]` (which
`datasets`' data_files and fsspec read as a character class); the old names stay as links."""
from __future__ import annotations

import os

import pytest
from conftest import write

from engine.cache.links import folder_name, link_outputs
from engine.recipe.errors import CacheError

RECIPE = """recipe: names
steps:
  - id: squares
    uses: test.squares
    foreach: [2, 3]
    with: {n: "${item}"}
"""


def test_foreach_instances_get_dotted_folders_that_load_dataset_reads(cli):
    from datasets import load_dataset

    cli("run", str(write(cli.tmp / "names.yaml", RECIPE)))
    base = cli.artifacts / "names"
    assert sorted(p.name for p in base.iterdir()) == ["squares.2", "squares.3", "squares[2]", "squares[3]"]
    assert not (base / "squares.2").is_symlink() and (base / "squares.2" / "data").is_symlink()
    # the old names, for one release: links to the new folders, inside the artifacts dir
    assert os.readlink(base / "squares[2]") == "squares.2"
    old, new = base / "squares[3]" / "data" / "data.jsonl", base / "squares.3" / "data" / "data.jsonl"
    assert old.read_bytes() == new.read_bytes()
    ds = load_dataset("json", data_files=str(base / "squares.3" / "data" / "*.jsonl"))
    assert ds["train"]["square"] == [0, 1, 4]


def test_an_old_layout_folder_becomes_a_link_and_other_recipes_get_dots_too(cli):
    write(cli.tmp / "d.jsonl", '{"a": 1}\n{"a": 2}\n')
    write(cli.tmp / "up.yaml", "recipe: up\nprofiles: {tiny: {}}\nsteps:\n"
                               "  - id: load\n    uses: data.from_file\n    with: {path: d.jsonl}\n")
    down = write(cli.tmp / "down.yaml", "recipe: down\nsteps:\n  - id: use\n    uses: data.map\n    inputs: "
                                        "{data: '${recipe(\"up.yaml\", profile=\"tiny\").steps.load.data}'}\n")
    old = cli.artifacts / "up[tiny]" / "load"
    old.mkdir(parents=True)
    (old / "data").symlink_to(cli.tmp / "d.jsonl")  # what an earlier release left
    cli("run", str(down))
    assert os.readlink(cli.artifacts / "up[tiny]") == "up.tiny"
    assert (cli.artifacts / "up.tiny" / "load" / "data" / "data.jsonl").exists()
    assert (cli.artifacts / "up[tiny]" / "load" / "data" / "data.jsonl").exists()


def test_folder_names_and_old_links_stay_inside_the_artifacts_dir(tmp_path):
    assert folder_name("export[algebra]") == "export.algebra"
    assert folder_name("quickstart[tiny]") == "quickstart.tiny"
    assert folder_name("x[a[b]]") == "x.a.b"
    base, outside = tmp_path / "artifacts", tmp_path / "outside"
    outside.mkdir()
    (base / "r").mkdir(parents=True)
    (base / "r" / "s.a").symlink_to(outside)  # a folder on the way that leads out
    with pytest.raises(CacheError, match="passes through the symlink"):
        link_outputs(base, tmp_path / "cache", [("r", "s[a]", "k" * 64, ["data"])])
    with pytest.raises(CacheError, match=r"has a '\.\.' component"):  # "[.]" is ".." once the brackets go
        link_outputs(base, tmp_path / "cache", [("r", "[.]", "k" * 64, ["data"])])
    assert list(outside.iterdir()) == [] and sorted(p.name for p in (base / "r").iterdir()) == ["s.a"]
