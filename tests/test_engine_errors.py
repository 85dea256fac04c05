"""Every malformed recipe ends in one message naming file:line, exit code 2, no traceback,
and nothing written to the cache."""
import pytest
from conftest import write

GOOD_STEP = "  - id: load\n    uses: data.from_file\n    with: {path: data.jsonl}\n"

CASES = {
    # name: (recipe text, expected line, words the message must contain)
    "yaml_syntax": ("recipe: x\nsteps:\n  - id: a\n    uses: data.map\n    with: {derive: {a: b}\n", 6,
                    "malformed YAML"),
    "bad_indent": ("recipe: x\nsteps:\n  - id: a\n   uses: data.map\n", 4, "malformed YAML"),
    "duplicate_key": ("recipe: x\nsteps:\n" + GOOD_STEP + "    with: {path: other}\n", 6, "malformed YAML"),
    "not_a_mapping": ("- just\n- a list\n", 1, "must be a mapping"),
    "unknown_top_key": ("recipe: x\nstepz: []\n", 2, "unknown top-level key 'stepz'"),
    "steps_not_a_list": ("recipe: x\nsteps:\n  load: {uses: data.from_file}\n", 2,
                         "`steps` must be a list, found a mapping"),
    "missing_steps": ("recipe: x\nvars: {a: 1}\n", 1, "missing `steps:`"),
    "unknown_step_type": ("recipe: x\nsteps:\n  - id: a\n    uses: data.frm_file\n", 4,
                          "unknown step type 'data.frm_file'; did you mean data.from_file"),
    "missing_uses": ("recipe: x\nsteps:\n  - id: a\n    with: {}\n", 3, "has no `uses:`"),
    "unknown_step_key": ("recipe: x\nsteps:\n  - id: a\n    uses: data.map\n    input: {}\n", 5,
                         "unknown key 'input' in a step"),
    "bad_id": ("recipe: x\nsteps:\n  - id: 'a b'\n    uses: data.map\n", 3, "step id must be"),
    "duplicate_id": ("recipe: x\nsteps:\n" + GOOD_STEP + GOOD_STEP, 6, "duplicate step id 'load'"),
    "wrong_type": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: s\n    uses: data.sample\n    with:\n      n: lots\n"
                   "    inputs: {data: '${steps.load.data}'}\n", 9, "config field 'n'"),
    "unknown_field": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: s\n    uses: data.sample\n    with: {n: 1, nn: 2}\n"
                      "    inputs: {data: '${steps.load.data}'}\n", 8, "has no config field 'nn'"),
    "missing_required_field": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: s\n    uses: data.sample\n"
                               "    inputs: {data: '${steps.load.data}'}\n", 6, "config field 'n' is required"),
    "missing_step_ref": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: s\n    uses: data.sample\n    with: {n: 1}\n"
                         "    inputs: {data: '${steps.lod.data}'}\n", 9, "no step 'lod'"),
    "missing_output": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: s\n    uses: data.sample\n    with: {n: 1}\n"
                       "    inputs: {data: '${steps.load.rows}'}\n", 9, "has no output 'rows'"),
    "wrong_input_type": ("recipe: x\nsteps:\n  - id: r\n    uses: test.report\n  - id: s\n    uses: data.sample\n"
                         "    with: {n: 1}\n    inputs: {data: '${steps.r.report}'}\n", 8,
                         "input 'data' expects Dataset but r.report is a Report"),
    "unbound_input": ("recipe: x\nsteps:\n  - id: s\n    uses: data.sample\n    with: {n: 1}\n", 4,
                      "input 'data' (Dataset) is not bound"),
    "unknown_input": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: s\n    uses: data.sample\n    with: {n: 1}\n"
                      "    inputs: {data: '${steps.load.data}', extra: '${steps.load.data}'}\n", 9,
                      "has no input 'extra'"),
    "cycle": ("recipe: x\nsteps:\n  - id: a\n    uses: data.map\n    inputs: {data: '${steps.b.data}'}\n"
              "  - id: b\n    uses: data.map\n    inputs: {data: '${steps.a.data}'}\n", 4, "cycle: a -> b -> a"),
    "foreach_scalar": ("recipe: x\nvars: {n: 3}\nsteps:\n  - id: a\n    uses: data.from_file\n    foreach: ${vars.n}\n"
                       "    with: {path: data.jsonl}\n", 6, "foreach must be a list or a mapping"),
    "unknown_var": ("recipe: x\nsteps:\n  - id: a\n    uses: data.from_file\n    with: {path: '${vars.file}'}\n", 5,
                    "no 'file' here"),
    "expression_syntax": ("recipe: x\nsteps:\n  - id: a\n    uses: data.from_file\n    with: {path: '${1 +}'}\n", 5,
                          "not a valid expression"),
    "python_attribute": ("recipe: x\nvars: {a: 1}\nsteps:\n  - id: a\n    uses: data.from_file\n"
                         "    with: {path: '${vars.__class__}'}\n", 6, "not allowed"),
    "object_tag": ("recipe: x\nsteps:\n  - id: a\n    uses: data.from_file\n"
                   "    with: {path: !!python/object/apply:os.system [ls]}\n",
                   5, "YAML tag"),
    "missing_file": ("recipe: x\nsteps:\n  - id: a\n    uses: data.from_file\n    with: {path: nowhere.jsonl}\n", 5,
                     "file nowhere.jsonl not found"),
    "extends_missing": ("recipe: x\nextends: base.yaml\nsteps: []\n", 2,
                        "`extends` names base.yaml, which does not exist"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_recipe(cli, name):
    text, line, words = CASES[name]
    write(cli.tmp / "data.jsonl", '{"a": 1}\n')
    f = write(cli.tmp / f"{name}.yaml", text)
    for command in ("plan", "run"):
        p = cli(command, f.name, check=2)
        assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
        assert f"{name}.yaml:{line}:" in p.stderr, p.stderr
        if words:
            assert words in p.stderr, p.stderr
        assert "Traceback" not in p.stderr + p.stdout
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))
    assert not (cli.cache / "runs").exists()


def test_unknown_profile_and_bad_set(cli):
    write(cli.tmp / "data.jsonl", '{"a": 1}\n')
    f = write(cli.tmp / "r.yaml", "recipe: r\nprofiles: {tiny: {vars: {}}}\nsteps:\n" + GOOD_STEP)
    assert "unknown profile 'huge' (profiles: tiny)" in cli("plan", f.name, "--profile", "huge", check=2).stderr
    assert "no step with id 'nope'" in cli("plan", f.name, "--set", "steps.nope.with.x=1", check=2).stderr
    assert "--set expects PATH=VALUE" in cli("plan", f.name, "--set", "vars.x", check=2).stderr


def test_missing_recipe_file(cli):
    p = cli("run", "nope.yaml", check=2)
    assert p.stderr == "error: recipe file nope.yaml not found\n"


BAD_BYTES = {
    # name: (file bytes, expected message after "error: FILE:")
    "utf16_bom": (b"\xff\xfe" + "recipe: x\n".encode("utf-16-le") + b"\x80\x81", ":1:1: not UTF-8 text (byte 0xff)"),
    "latin1": ("recipe: x\nsteps: []\n# caf\xe9\n".encode("latin-1"), ":3:6: not UTF-8 text (byte 0xe9)"),
    "nul_byte": (b"recipe: x\nsteps:\x00 []\n", ":2:7: NUL byte in the file"),
}


@pytest.mark.parametrize("name", sorted(BAD_BYTES))
def test_recipe_with_bad_bytes_is_one_error_line(cli, name):
    data, words = BAD_BYTES[name]
    f = cli.tmp / f"{name}.yaml"
    f.write_bytes(data)
    for command in ("plan", "run"):
        p = cli(command, f.name, check=2)
        assert p.stderr.startswith(f"error: {name}.yaml{words}") and p.stderr.count("\n") == 1, p.stderr
        assert "Traceback" not in p.stderr + p.stdout
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))


def test_recipe_path_that_is_a_directory(cli):
    (cli.tmp / "dir.yaml").mkdir()
    p = cli("plan", "dir.yaml", check=2)
    assert p.stderr == "error: dir.yaml is a directory, expected a recipe .yaml file\n"


def test_unreadable_recipe_file(tmp_path, monkeypatch):
    # root reads any file whatever its mode, so the refusal is raised where the file is read
    from pathlib import Path

    from engine.recipe import loader
    from engine.recipe.errors import RecipeError

    f = write(tmp_path / "r.yaml", "recipe: x\nsteps: []\n")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(RecipeError) as e:
        loader.load(f)
    assert str(e.value) == f"{f}: cannot read the recipe file (Permission denied)"


def test_control_characters_in_an_error_are_shown_not_sent_to_the_terminal(cli):
    """An error quotes what came from outside (a file name, a server's answer, a row): an ESC in
    it reached the terminal raw, and `ESC[2J` cleared the screen."""
    name = "x\x1b[2J\x1b[31mEVIL.jsonl"
    write(cli.tmp / "in" / name, '{"p": 1}\n{bad\n')
    write(cli.tmp / "r.yaml", 'recipe: e\nsteps:\n  - id: f\n    uses: data.from_file\n    with: {path: "in/*"}\n')
    out = cli("run", "r.yaml", check=1)
    assert "\x1b" not in out.stdout + out.stderr
    assert "in/x\\x1b[2J\\x1b[31mEVIL.jsonl:2: not valid JSON Lines" in out.stdout
    assert out.stdout.count("\\x1b[2J") == 2  # the failed line, and the log's last lines under it


def test_recipe_path_that_is_not_a_regular_file(cli):
    # a FIFO blocked `plan` for ever and /dev/zero filled the memory before a MemoryError traceback
    import os

    os.mkfifo(cli.tmp / "fifo.yaml")
    for path in ("fifo.yaml", "/dev/zero"):
        for command in ("plan", "run"):
            p = cli(command, path, check=2, timeout=60)
            assert p.stderr == f"error: {path} is not a regular file, expected a recipe .yaml file\n"
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))


SAMPLE_STEP = "  - id: s\n    uses: data.sample\n    with: {n: 1}\n    inputs: {data: '${steps.load.data}'}\n"
EXACT = {
    # name: (recipe text, extra arguments, the whole message after "error: ")
    "profile_vars_a_list": ("recipe: x\nprofiles:\n  tiny:\n    vars: [a]\nsteps: []\n", ["--profile", "tiny"],
                            "profile_vars_a_list.yaml:4:5: `vars` of profile 'tiny' must be a mapping, found a list"),
    "profile_set_a_list": ("recipe: x\nprofiles:\n  tiny:\n    set: [a]\nsteps: []\n", ["--profile", "tiny"],
                           "profile_set_a_list.yaml:4:5: `set` of profile 'tiny' must be a mapping, found a list"),
    "profile_defaults_a_list": ("recipe: x\nprofiles:\n  tiny:\n    defaults: [a]\nsteps: []\n", ["--profile", "tiny"],
                                "profile_defaults_a_list.yaml:4:5: `defaults` of profile 'tiny' must be a mapping, "
                                "found a list"),
    "profile_step_patch_a_list": ("recipe: x\nprofiles:\n  tiny:\n    steps: {load: [1]}\nsteps:\n" + GOOD_STEP,
                                  ["--profile", "tiny"],
                                  "profile_step_patch_a_list.yaml:4:13: `steps.load` of profile 'tiny' (a patch of "
                                  "step load) must be a mapping, found a list"),
    "set_needs_a_number": ("recipe: x\nsteps:\n" + GOOD_STEP, ["--set", "steps.load.needs=5"],
                           "--set steps.load.needs: `needs` of step 'load' must be a step id or a list of ids"),
    "set_uses_a_number": ("recipe: x\nsteps:\n" + GOOD_STEP, ["--set", "steps.load.uses=5"],
                          "--set steps.load.uses: `uses` of step 'load' must name a step type (e.g. data.from_file), "
                          "found a number"),
    "set_with_a_number": ("recipe: x\nsteps:\n" + GOOD_STEP, ["--set", "steps.load.with=5"],
                          "--set steps.load.with: steps.load.with must be a mapping, found a number"),
    "set_inside_foreach": ("recipe: x\nsteps:\n" + GOOD_STEP, ["--set", "steps.load.foreach.x=[a]"],
                           "--set steps.load.foreach.x: steps.load.foreach takes a whole value, not a field (got "
                           "steps.load.foreach.x)"),
    "expression_in_a_key": ("recipe: x\nvars: {col: text}\nsteps:\n" + GOOD_STEP + "  - id: m\n    uses: data.map\n"
                            "    with:\n      derive: {'${vars.col}': a}\n    inputs: {data: '${steps.load.data}'}\n",
                            [], "expression_in_a_key.yaml:10:7: step m: '${vars.col}' is a mapping key, and `${...}` "
                            "is evaluated in values only; write the mapping as one expression, e.g. "
                            "'${ {vars.name: value} }'"),
    "a_boolean_for_a_number": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP.replace("{n: 1}", "{n: true}"), [],
                               "a_boolean_for_a_number.yaml:8:12: step s: config field 'n' takes a number, found true"),
    "long_step_id": ("recipe: x\nsteps:\n" + GOOD_STEP.replace("id: load", "id: " + "s" * 101), [],
                     f"long_step_id.yaml:3:5: step id must be letters, digits, - and _ (starting with a letter, at "
                     f"most 100), found '{'s' * 101}'"),
    "long_foreach_item": ("recipe: x\nsteps:\n" + GOOD_STEP + f"    foreach: [{'i' * 151}]\n", [],
                          f"long_foreach_item.yaml:6:5: step 'load': foreach item '{'i' * 60}'... cannot be an "
                          f"instance id, which names its artifacts folder (at most 150 bytes); use a mapping of plain "
                          f"ids to items, e.g. {{a: '{'i' * 60}'...}}"),
    "set_a_whole_section": ("recipe: x\nsteps:\n" + GOOD_STEP, ["--set", "vars=5"],
                            "--set vars: cannot override 'vars' (expected vars.NAME, defaults.FAMILY.STEP.FIELD or "
                            "steps.ID.with.FIELD)"),
    "extends_itself": ("recipe: x\nextends: extends_itself.yaml\nsteps: []\n", [],
                       "extends_itself.yaml:2:1: `extends` loops back to extends_itself.yaml"),
    "misspelt_required_field": ("recipe: x\nsteps:\n  - id: load\n    uses: data.from_file\n"
                                "    with: {pth: data.jsonl}\n", [],
                                "misspelt_required_field.yaml:5:12: step load: data.from_file has no config field "
                                "'pth'; did you mean path? (fields: allow_empty, path, format, output_format) (and 1 "
                                "more problem in this step's config)"),
    "misspelt_step_ref": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP.replace("steps.load", "steps.lod"), [],
                          "misspelt_step_ref.yaml:9:14: step s: input data: no step 'lod' in recipe x; did you mean "
                          "load? (ids: load, s)"),
    "misspelt_output": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP.replace("load.data", "load.dta"), [],
                        "misspelt_output.yaml:9:14: step s: input data: step 'load' (data.from_file) has no output "
                        "'dta'; did you mean data? (outputs: data)"),
    "misspelt_needs": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP + "    needs: [lod]\n", [],
                       "misspelt_needs.yaml:10:5: step s: needs 'lod', which is not a step of this recipe; did you "
                       "mean load?"),
    "recipe_function_in_vars": ("recipe: x\nvars:\n  r: ${recipe('a.yaml')}\nsteps: []\n", [],
                                "recipe_function_in_vars.yaml:3:3: vars.r: unknown function 'recipe' in "
                                "'${recipe('a.yaml')}' (allowed: abs, bool, ceil, dict, float, floor, int, keys, len, "
                                "list, max, min, range, round, set, sorted, str, sum, tuple, values, zip)"),
    "foreach_item_with_a_slash": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP + "    foreach: [a/b]\n", [],
                                  "foreach_item_with_a_slash.yaml:10:5: step 's': foreach item 'a/b' cannot be an "
                                  "instance id, which names its artifacts folder ('/' is not allowed in one); use a "
                                  "mapping of plain ids to items, e.g. {a: 'a/b'}"),
    "foreach_key_with_a_nul": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP + '    foreach: {"a\\0": 1}\n', [],
                               "foreach_key_with_a_nul.yaml:10:5: step 's': foreach item 'a\\x00' cannot be an "
                               "instance id, which names its artifacts folder ('\\x00' is not allowed in one); use a "
                               "mapping of plain ids to items, e.g. {a: 'a\\x00'}"),
    "unclosed_after_a_closed_expression": ("recipe: x\nvars: {a: 1, b: 'v${vars.a} ${vars.a'}\nsteps: []\n", [],
                                           "unclosed_after_a_closed_expression.yaml:2:14: vars.b: unclosed '${' "
                                           "(expected '${ expression }')"),
    "resources_nan": ("recipe: x\nsteps:\n" + GOOD_STEP + "    resources: {cpus: .nan}\n", [],
                      "resources_nan.yaml:6:5: resources.cpus must be a number >= 0, found nan"),
    "a_step_as_an_input": ("recipe: x\nsteps:\n" + GOOD_STEP + SAMPLE_STEP.replace("load.data", "load"), [],
                           "a_step_as_an_input.yaml:9:14: step s: input 'data' must be bound to a step output like "
                           "'${steps.ID.OUTPUT}', found steps.load (a step, not one of its outputs: data)"),
    "profile_var_typo": ("recipe: x\nvars: {sample: 5}\nprofiles:\n  tiny:\n    vars: {smaple: 2}\nsteps:\n"
                         + GOOD_STEP, ["--profile", "tiny"],
                         "profile_var_typo.yaml:5:12: profile 'tiny' sets var 'smaple', which the recipe does not "
                         "have; did you mean sample? (vars: sample)"),
    "defaults_type_typo": ("recipe: x\ndefaults:\n  data.smaple: {n: 1}\nsteps:\n" + GOOD_STEP, [],
                           "defaults_type_typo.yaml:3:3: defaults: unknown step type 'data.smaple'; did you mean "
                           "data.sample, data.map, data.split?"),
    "defaults_field_typo": ("recipe: x\ndefaults:\n  data.sample: {nn: 1}\nsteps:\n" + GOOD_STEP + SAMPLE_STEP, [],
                            "defaults_field_typo.yaml:3:17: step s: data.sample has no config field 'nn'; did you "
                            "mean n? (fields: allow_empty, n, seed) (set by defaults.data.sample)"),
    "empty_list_input": ("recipe: x\nsteps:\n" + GOOD_STEP + "  - id: c\n    uses: data.concat\n"
                         "    inputs: {datasets: []}\n", [],
                         "empty_list_input.yaml:8:14: step c: input 'datasets' (list[Dataset]) is bound to an empty "
                         "list; it takes at least one output"),
    "set_tag": ("recipe: x\nvars: {d: !!set {a, b}}\nsteps:\n" + GOOD_STEP, [],
                "set_tag.yaml:2:8: YAML tag !!set is not allowed (recipes hold plain data only)"),
    "binary_tag": ("recipe: x\nvars: {d: !!binary aGk=}\nsteps:\n" + GOOD_STEP, [],
                   "binary_tag.yaml:2:8: YAML tag !!binary is not allowed (recipes hold plain data only)"),
    "binary_tag_in_set": ("recipe: x\nvars: {d: 1}\nsteps:\n" + GOOD_STEP, ["--set", "vars.d=!!binary aGk="],
                          "--set vars.d: YAML tag !!binary is not allowed (recipes hold plain data only)"),
    "extends_a_directory": ("recipe: x\nextends: /\nsteps: []\n", [],
                            "extends_a_directory.yaml:2:1: / is a directory, expected a recipe .yaml file"),
    "keys_that_are_one_name": ('recipe: x\nvars:\n  m:\n    1: a\n    "1": b\nsteps: []\n', [],
                               "keys_that_are_one_name.yaml:5:5: keys 1 and '1' are the same name '1'; keep one"),
    # a --set value is checked as the recipe file is; it was silently one key, or the text itself
    "keys_that_are_one_name_in_set": ("recipe: x\nvars: {m: {}}\nsteps:\n" + GOOD_STEP,
                                      ["--set", 'vars.m={1: a, "1": b}'],
                                      "--set vars.m: keys 1 and '1' are the same name '1'; keep one"),
    "local_tag_in_set": ("recipe: x\nvars: {d: 1}\nsteps:\n" + GOOD_STEP, ["--set", "vars.d=[!x 1]"],
                         "--set vars.d: YAML tag !x is not allowed (recipes hold plain data only)"),
    "recursive_alias_in_set": ("recipe: x\nvars: {d: 1}\nsteps:\n" + GOOD_STEP, ["--set", "vars.d=&a [*a]"],
                               "--set vars.d: a YAML alias refers to a node that contains it (a recursive alias)"),
    "duplicate_key_in_set": ("recipe: x\nvars: {d: 1}\nsteps:\n" + GOOD_STEP, ["--set", "vars.d={a: 1, a: 2}"],
                             '--set vars.d: malformed YAML: found duplicate key "a" with value "2" '
                             '(original value: "1")'),
    "empty_steps": ("recipe: x\nvars: {a: 1}\nsteps: []\n", [],
                    "empty_steps.yaml:3:1: `steps` is empty; a recipe needs at least one step"),  # ran, exit 0
    "terminal_escape_in_a_name": ('recipe: x\nvars: {"a\\e[31mred\\r": "${vars.nope}"}\nsteps: []\n', [],
                                  "terminal_escape_in_a_name.yaml:2:8: vars.a\\x1b[31mred\\r: no 'nope' here "
                                  "(known: a\\x1b[31mred\\r)"),
}


ODD_BREAK_HEAD = 'recipe: x\nvars:\n  note: "a{0}b"\n  more: \'c{0}d\'\n'
AFTER_AN_ODD_BREAK = {  # the error, named at the line an editor shows (lines 3 and 4 hold the odd break)
    "a step's key": ("steps:\n" + GOOD_STEP + "    stepz: 1\n",
                     "9:5: unknown key 'stepz' in a step; expected one of description, foreach, id, inputs, needs, "
                     "resources, uses, with"),
    "a var's expression": ("  e: ${vars.nope}\nsteps:\n" + GOOD_STEP,
                           "5:3: vars.e: no 'nope' here (known: note, more, e)"),
    "a recursive alias": ("  r: &a [1, *a]\nsteps: []\n",
                          "5:6: a YAML alias refers to a node that contains it (a recursive alias)"),
    "YAML syntax": ("steps: [\n", "6:1: malformed YAML: while parsing a flow node expected the node content, but "
                    "found '<stream end>'"),
}


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\r"])
def test_errors_after_a_line_break_only_yaml_sees_name_the_editors_line(cli, char):
    """libyaml breaks lines at U+2028, U+2029 and U+0085 too, both YAML readers at a lone \\r; an
    editor (and the loader's byte errors) at \\n only: every later error named a line one past it."""
    for what, (rest, message) in AFTER_AN_ODD_BREAK.items():
        write(cli.tmp / "odd.yaml", ODD_BREAK_HEAD.format(char) + rest)
        assert cli("plan", "odd.yaml", check=2).stderr == f"error: odd.yaml:{message}\n", what


@pytest.mark.parametrize("name", sorted(EXACT))
def test_malformed_recipe_exact_message(cli, name):
    """Each was a traceback (exit 1), a message without its line, or one without the obvious
    suggestion; a foreach id with a '/' linked its outputs outside the recipe's artifacts folder."""
    text, args, message = EXACT[name]
    write(cli.tmp / "data.jsonl", '{"a": 1}\n')
    f = write(cli.tmp / f"{name}.yaml", text)
    for command in ("plan", "run"):
        p = cli(command, f.name, *args, check=2)
        assert p.stderr == f"error: {message}\n", p.stderr
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))
    assert not cli.artifacts.exists()


def test_a_recipe_whose_parents_have_no_steps_either_is_refused(cli):
    write(cli.tmp / "base.yaml", "recipe: base\nvars: {a: 1}\nsteps: []\n")
    write(cli.tmp / "child.yaml", "recipe: child\nextends: base.yaml\nvars: {b: 2}\n")
    for command in ("plan", "run"):
        p = cli(command, "child.yaml", check=2)
        assert p.stderr == "error: child.yaml:1:1: `steps` is empty; a recipe needs at least one step\n"
    assert not cli.cache.exists()


def test_an_unknown_executor_in_the_recipe_names_its_line(cli):
    write(cli.tmp / "data.jsonl", '{"a": 1}\n')
    write(cli.tmp / "x.yaml", "recipe: x\nprofiles:\n  tiny: {executor: bananas}\n  ray: {executor: rai}\nsteps:\n"
          + GOOD_STEP)
    for command in ("plan", "run"):  # plan said nothing, exit 0
        p = cli(command, "x.yaml", "--profile", "tiny", check=2)
        assert p.stderr == "error: x.yaml:3:10: unknown executor 'bananas'; expected local, ray or ray=ADDRESS\n"
        p = cli(command, "x.yaml", "--profile", "ray", check=2)
        assert p.stderr == ("error: x.yaml:4:9: unknown executor 'rai'; expected local, ray or ray=ADDRESS; did you "
                            "mean ray?\n")
    assert not cli.cache.exists() or not list(cli.cache.rglob("entry.json"))


def test_an_error_in_a_recipe_that_recipe_plans_is_not_a_python_exception(cli):
    write(cli.tmp / "data.jsonl", '{"a": 1}\n')
    write(cli.tmp / "x.yaml", "recipe: x\nsteps:\n  - id: s\n    uses: data.sample\n    with: {n: 1}\n"
                              "    inputs: {data: '${recipe(\"data.jsonl\").steps.load.data}'}\n")
    p = cli("plan", "x.yaml", check=2)
    assert p.stderr == (f"error: x.yaml:6:14: step s: input data: {cli.tmp / 'data.jsonl'}:1:2: unknown top-level "
                        "key 'a'; expected one of defaults, description, executor, extends, profiles, recipe, steps, "
                        "vars\n"), p.stderr  # was "'${recipe(...)}' failed: RecipeError: ..."
