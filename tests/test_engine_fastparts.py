"""The engine's fast paths give exactly what the slow ones gave: libyaml recipes vs ruamel's,
compiled row expressions vs simpleeval's walk, block-decoded JSON Lines vs line by line."""
import json
import math
from pathlib import Path

import pytest

from engine.recipe import loader, yamlfast
from engine.recipe.artifact_types import read_records, write_records
from engine.recipe.errors import StepError
from engine.recipe.expr import Evaluator
from engine.recipe.expr.rows import RowFailed, row_mapper

ROOT = Path(__file__).resolve().parent.parent
libyaml = pytest.mark.skipif(yamlfast.CParser is None, reason="PyYAML without libyaml: ruamel reads every recipe")


def same_tree(fast, slow, path="doc"):
    """Equal plain values, and equal positions of every mapping, key and list item."""
    if isinstance(slow, dict):
        assert isinstance(fast, yamlfast.PosDict) and list(fast) == list(slow), path
        assert (fast.lc.line, fast.lc.col) == (slow.lc.line, slow.lc.col), path
        for k in slow:
            assert fast.lc.key(k) == tuple(slow.lc.key(k))[:2], f"{path}.{k}"
            same_tree(fast[k], slow[k], f"{path}.{k}")
    elif isinstance(slow, list):
        assert isinstance(fast, yamlfast.PosList) and len(fast) == len(slow), path
        for i, (a, b) in enumerate(zip(fast, slow)):
            assert fast.lc.item(i) == tuple(slow.lc.item(i))[:2], f"{path}[{i}]"
            same_tree(a, b, f"{path}[{i}]")
    else:
        a, b = loader.plain(fast), loader.plain(slow)
        assert type(a) is type(b), (path, a, b)
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), (path, a, b)


@libyaml
@pytest.mark.parametrize("recipe", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_libyaml_reads_every_shipped_recipe_as_ruamel_does(recipe):
    text = (ROOT / "recipes" / recipe).read_text()
    fast = yamlfast.load(text)
    assert fast is not None, "a shipped recipe fell back to ruamel"
    same_tree(fast, loader._yaml().load(text))


SCALARS = ["1", "-0", "007", "+3", "1.5", "1.", ".5", "-1.5e3", "1E5", ".inf", "-.Inf", ".NaN", "~", "null", "",
           "true", "False", "TRUE", "tRue", "yes", "no", "on", "off", "'1'", '"x"', "abc", "a b", "|\n  x\n  y\n"]


@libyaml
@pytest.mark.parametrize("scalar", SCALARS)
def test_scalars_are_yaml_1_2_like_ruamel(scalar):
    text = f"a: {scalar}\n"
    same_tree(yamlfast.load(text), loader._yaml().load(text))


@pytest.mark.parametrize("text", [
    "a: 1_000\n", "a: 0x1F\n", "a: 2020-01-01\n", "a: 1:20\n",  # ruamel's readings of these are kept
    "a: !!str 5\n", "a: !custom x\n", "base: &b {x: 1}\nc:\n  <<: *b\n",  # tags and merge keys
    "a: 1\na: 2\n", "a: [1, 2\n", "? [a]\n: 1\n",  # duplicate key, syntax error, complex key
])
def test_what_libyaml_should_not_decide_goes_to_ruamel(text):
    assert yamlfast.load(text) is None


@libyaml
def test_anchors_give_the_same_object_as_ruamel():
    doc = yamlfast.load("a: &x {b: [1, 2]}\nc: *x\n")
    assert doc["a"] is doc["c"] and doc["c"] == {"b": [1, 2]}


def test_duplicate_key_error_still_names_both_lines(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("recipe: r\nsteps: []\nrecipe: s\n")
    with pytest.raises(Exception) as e:
        loader.load(f)
    assert f"{f}:3" in str(e.value) and "duplicate" in str(e.value).lower()


# ------------------------------------------------------------------ row expressions

EXPRESSIONS = [
    "x + 1", "x * 2 - y", "-x", "not x", "x > 1 and y < 3", "x or y", "x if x > y else y", "1 < x < 5",
    "a.b", "a['b']", "l[0]", "l[1:]", "len(l)", "round(x / 3, 2)", "x in l", "'s' + s", "abs(-x)", "x ** 2",
    "str(x) + 'a' * 3", "[x, y]", "{'k': x}", "max(l)", "sorted(l, reverse=True)", "None", "True and x",
    "x == 1 or (y and z)", "not (x and y)", "0 <= y < x < 9", "x < y < zz", "round(x / 7, ndigits=2)",
    "s if x else (l if y else a.b)", "s * 200000", "x * 1.5 + y * True", "l + l", "-(-(-(x)))",
    "(" * 150 + "x" + ")" * 150, "+".join(["x"] * 300),
    "zz", "a.zz", "l[9]", "foo(1)", "s.upper", "a._x", "x // y", "x < s",  # errors, raised the same way
    "x ** 99999", "(x * 10 ** 4000) * (x * 10 ** 4000)", "1 << 99999", "'%0999999d' % x", "l * 99999",  # limits
    "[l * 9999 for a in range(999)]", "[a for a in range(99999)]", "x - 0.5", "x % 2", "y % 0", "s % 2",
]
ROWS = [dict(x=3, y=0, z=None, a={"b": 7}, l=[1, 2, 3], s="q"), dict(x=0, y=5, z=1, a={"b": [1]}, l=[], s="")]


def outcome(fn):
    try:
        return "ok", fn()
    except RowFailed as e:  # the compiled loop's error carries simpleeval's
        return type(e.error).__name__, str(e.error)
    except Exception as e:  # noqa: BLE001 - compared, type and text
        return type(e).__name__, str(e)


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_compiled_row_expression_equals_simpleeval_walk(expr):
    walk, fast = Evaluator({}), Evaluator({})
    mapper, tree = row_mapper(fast, {"v": expr}), walk.parse(expr)
    for row in ROWS:
        walk.names = row
        assert outcome(lambda: mapper([dict(row)])[0]["v"]) == outcome(
            lambda: walk.eval(expr, previously_parsed=tree))


def test_compiled_rows_see_earlier_columns_and_where_keeps_rows_in_order():
    ev = Evaluator({})
    mapper = row_mapper(ev, {"y": "x * 2", "z": "y + 1"}, where="z % 3 != 0")
    assert mapper([{"x": i} for i in range(5)]) == [{"x": 0, "y": 0, "z": 1}, {"x": 2, "y": 4, "z": 5},
                                                    {"x": 3, "y": 6, "z": 7}]
    assert row_mapper(ev, {})([{"x": 1}]) == [{"x": 1}]  # rename or select only
    with pytest.raises(RowFailed, match=r"^derive.z: 'y \+ 1' failed on row 1: ") as failed:
        row_mapper(ev, {"y": "x * 2", "z": "y + 1"})([{"x": 1}, {"x": "a"}])
    assert failed.value.row == 1 and failed.value.field == "derive.z"


# ------------------------------------------------------------------ JSON Lines

def test_rows_written_are_the_bytes_json_dumps_writes(tmp_path):
    rows = [{"x": 1, "t": "ü\n\u2028", "f": 2.5, "n": None, "nan": float("nan"), "l": [True, {"k": "v"}]}] * 3
    write_records(tmp_path / "d.jsonl", rows)
    expected = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert (tmp_path / "d.jsonl").read_text(encoding="utf-8") == expected


def test_block_reader_keeps_unicode_line_separators_inside_strings(tmp_path):
    rows = [{"t": "a\u2028b\x85c"}, {"t": "d"}]
    write_records(tmp_path / "d.jsonl", rows)
    assert list(read_records(tmp_path / "d.jsonl")) == rows


def test_rows_that_hold_lists_of_objects_read_back_as_written(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "},{"}, {"role": "assistant"}], "i": i} for i in range(3)]
    write_records(tmp_path / "d.jsonl", rows)
    assert list(read_records(tmp_path / "d.jsonl")) == rows


def test_a_line_cut_in_two_and_two_objects_on_one_line_are_an_error_even_when_the_counts_match(tmp_path):
    # as one JSON array, the cut line and the next merge into one item and the pair gives two
    lines = [json.dumps({"i": i}) for i in range(20)]
    lines[4:6] = ['{"a": [{"b": 1}', '{"c": 1}]}']
    lines[11] = '{"x": 1}, {"y": 2}'
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(StepError, match=r"d.jsonl:5: not valid JSON Lines"):
        list(read_records(tmp_path / "d.jsonl"))


@pytest.mark.parametrize("text,rows", [
    ('{"a": 1}\r\n{"a": 2}\r\n', [{"a": 1}, {"a": 2}]),  # CRLF
    ('{"a": 1}\n\n  {"a": 2}', [{"a": 1}, {"a": 2}]),  # blank line, indent, no final newline
])
def test_unusual_but_valid_files_read_as_before(tmp_path, text, rows):
    (tmp_path / "d.jsonl").write_text(text, encoding="utf-8", newline="")
    assert list(read_records(tmp_path / "d.jsonl")) == rows


@pytest.mark.parametrize("bad,message", [
    ('{"a": 1} {"b": 2}', "not valid JSON Lines (Extra data)"),
    ('{"a": 1},{"b": "', "not valid JSON Lines"),
    ("[1, 2]", "expected a JSON object, found list"),
])
def test_a_bad_line_deep_in_a_block_is_named_by_its_line_number(tmp_path, bad, message):
    lines = [json.dumps({"i": i}) for i in range(5000)]
    lines[3999] = bad
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(StepError) as e:
        list(read_records(tmp_path / "d.jsonl"))
    assert f"d.jsonl:4000: {message}" in str(e.value)
