"""Input that would cost the machine is refused: YAML alias bombs and deep nesting, and
expressions (recipe-level `${}` and per-row) asking for huge numbers, strings, lists, loops or
time. Each is one error line naming the limit, given fast and small: the `recipe` process is
measured (CPU, wall time, peak RSS), and capped so that a regression fails instead of eating
the machine."""
import json
import os
import resource
import subprocess
import sys
import time

import pytest
from conftest import write

from engine.recipe.expr import Evaluator
from engine.recipe.expr.rows import row_mapper

CPU_S, WALL_S, RSS_MB = 1.0, 3.0, 200  # refusing costs about a plain `recipe plan`: 0.3 s, 45 MB
CAP_S, CAP_BYTES = 20, 3 << 30  # what a bomb may take before the test kills it
# `recipe ARGS` as `python -c PEAK_AT_EXIT ARGS`: the CLI, writing its peak RSS (kB) at exit
PEAK_AT_EXIT = """import atexit, os, sys
def _peak():
    with open("/proc/self/status") as f, open(os.environ["MR_HWM_FILE"], "w") as out:
        out.write(next(line for line in f if line.startswith("VmHWM")).split()[1])
atexit.register(_peak)
from engine.cli.main import main
sys.exit(main())
"""


def measured(cli, *args: str, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run `recipe ARGS`; also its CPU seconds, wall seconds (from wait4) and peak RSS in MB.

    The peak is the process's own VmHWM, read at exit: wait4's ru_maxrss of a forked child
    starts from the parent's peak (Linux copies the old memory's high-water mark at exec), so a
    pytest process grown to 350 MB by earlier tests would show as the child's."""
    out, err, hwm = cli.tmp / "stdout.txt", cli.tmp / "stderr.txt", cli.tmp / "hwm.txt"
    hwm.unlink(missing_ok=True)

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))

    start = time.monotonic()
    with out.open("w") as o, err.open("w") as e:
        argv = [sys.executable, "-c", PEAK_AT_EXIT, *cli.args(*args)[3:]]  # [python, -m, engine.cli, ...]
        p = subprocess.Popen(argv, env={**cli.env, **(env or {}), "MR_HWM_FILE": str(hwm)}, cwd=cli.tmp,
                             stdout=o, stderr=e,
                             preexec_fn=capped)
        while (done := os.wait4(p.pid, os.WNOHANG))[0] == 0:
            if time.monotonic() - start > CAP_S:
                p.kill()
            time.sleep(0.01)
    wall = time.monotonic() - start
    _, status, usage = done
    p.returncode = os.waitstatus_to_exitcode(status)
    result = subprocess.CompletedProcess(p.args, p.returncode, out.read_text(), err.read_text())
    peak_mb = int(hwm.read_text()) / 1024 if hwm.exists() else float("inf")  # killed: no reading
    return result, usage.ru_utime + usage.ru_stime, wall, peak_mb


def refused(cli, recipe: str, expected: str, *, command: str = "plan", code: int = 2, cpu: float = CPU_S,
            env: dict | None = None) -> None:
    write(cli.tmp / "r.yaml", recipe)
    p, cpu_s, wall_s, rss_mb = measured(cli, command, "r.yaml", env=env)
    shown = p.stderr if code == 2 else p.stdout
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert expected in shown.splitlines(), shown[-2000:]
    assert "Traceback" not in p.stdout + p.stderr
    assert cpu_s < cpu and wall_s < WALL_S + cpu and rss_mb < RSS_MB, (cpu_s, wall_s, rss_mb)


# ------------------------------------------------------------------ YAML

def laughs(levels: int, extra: str = "") -> str:
    names = "abcdefghij"
    lines = ["recipe: r", f"vars:{extra}", f"  a: &a [{', '.join(['lol'] * 10)}]"]
    lines += [f"  {names[i]}: &{names[i]} [{', '.join([f'*{names[i - 1]}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines + ["steps: []", ""])


RUAMEL = "\n  hex: 0x1F"  # a number only ruamel reads as users expect: libyaml hands the file to ruamel

RECURSIVE = "a YAML alias refers to a node that contains it (a recursive alias)"
YAML_BOMBS = {
    "recursive_alias": ("recipe: r\nvars: {x: &a [*a]}\nsteps: []\n", f"error: r.yaml:2:11: {RECURSIVE}"),
    "recursive_alias_ruamel": (f"recipe: r\nvars:{RUAMEL}\n  x: &a {{y: [*a]}}\nsteps: []\n",
                               f"error: r.yaml:4:13: {RECURSIVE}"),
    "billion_laughs": (laughs(8), "error: r.yaml:6:6: YAML aliases expand to more than 10,000 nodes (MAX_ALIAS_NODES)"),
    "billion_laughs_ruamel": (laughs(8, RUAMEL),
                              "error: r.yaml:7:6: YAML aliases expand to more than 10,000 nodes (MAX_ALIAS_NODES)"),
    "deep_nesting": ("recipe: r\nvars: {x: " + "[" * 150 + "]" * 150 + "}\nsteps: []\n",
                     "error: r.yaml:2:109: the YAML is nested more than 100 levels deep"),
    "deeper_than_libyaml_reads": ("recipe: r\nvars: {x: " + "[" * 5000 + "]" * 5000 + "}\nsteps: []\n",
                                  "error: r.yaml:2:109: the YAML is nested more than 100 levels deep"),
    "huge_integer": ("recipe: r\nvars:\n  x: " + "7" * 5000 + "\nsteps: []\n",
                     "error: r.yaml:3:6: an integer of 5,000 digits; at most 4,300 are read "
                     "(quote it to keep it as text)"),
    # refused before it is read: ruamel, which the merge key calls for, reads ~0.2 MB/s of mappings
    "too_big_a_file": ("recipe: r\nvars: {a: &a {b: 1}, c: {<<: *a}}\n" + "#\n" * 1_200_000 + "steps: []\n",
                       "error: r.yaml is 2,400,054 bytes, over the limit of 2,097,152 for a recipe file "
                       "(MAX_FILE_BYTES); expected a recipe .yaml file"),
}


@pytest.mark.parametrize("name", YAML_BOMBS)
def test_yaml_bombs_are_refused_before_the_tree_is_walked(cli, name):
    recipe, expected = YAML_BOMBS[name]
    refused(cli, recipe, expected)


# ------------------------------------------------------------------ recipe-level expressions

LENGTH = "over the limit of 100,000 items or characters (MAX_LENGTH)"
DIGITS = "over the limit of 4,300 digits (MAX_INT_DIGITS)"
BUILT = "it builds more than 1,000,000 items and characters in all (MAX_BUILT)"

EXPRESSION_BOMBS = {  # the expression of `vars.x`, and what the message says after "is over a limit: "
    "${range(10**9)}": f"the range would be 1,000,000,000 long, {LENGTH}",
    "${'%03000000000d' % 1}": f"the formatted text would be at least 3,000,000,014 long, {LENGTH}",
    "${b'%0999999999d' % 1}": f"the formatted text would be at least 1,000,000,012 long, {LENGTH}",
    "${[[0]*99999 for a in range(9999)]}": BUILT,
    "${4000000**4000000}": f"a number of about 26,408,240 digits is {DIGITS}",
    "p${10**5000}": f"a number of about 5,001 digits is {DIGITS}",
    "${1 << 10**9}": f"a number of about 301,029,996 digits is {DIGITS}",
    "${(10**4000) * (10**4000)}": f"a number of about 8,001 digits is {DIGITS}",
    "${sum([10**4299] * 10)}": f"a number of about 4,301 digits is {DIGITS}",
    "${'ab' * 99999}": f"the repeated value would be 199,998 long, {LENGTH}",
    "${[x for x in range(99999)]}": "its comprehensions take more than 10,000 steps (MAX_LOOPS)",
    "${[vars.l[:] for a in range(999)]}": BUILT,
    "${[list(vars.l) for a in range(999)]}": BUILT,
    "${[[*vars.l, *vars.l] for a in range(99)]}": BUILT,
    "${[vars.l for a in range(99)]}": BUILT,
    "${[vars.l, vars.l, vars.l, vars.l, vars.l, vars.l, vars.l, vars.l, vars.l, vars.l, vars.l]}": BUILT,
    "${str([10**4000] * 99)}": f"the text would be at least 395,780 long, {LENGTH}",
    "${sorted([vars.l] * 999, key=str)}": BUILT,
    "${str(vars.l)}": f"the text would be at least 571,898 long, {LENGTH}",
    "${sum([[0], [1]], [])}": "sum adds numbers; found a start value of type list",
    "${'%*d' % (10**9, 1)}": "a `*` width in % formatting is not supported; write the width in the format",
}


@pytest.mark.parametrize("expression", EXPRESSION_BOMBS)
def test_recipe_expression_bombs_are_one_line_naming_the_limit(cli, expression):
    source = expression[expression.index("${") + 2 : -1]
    recipe = f'recipe: r\nvars:\n  l: ${{range(99999)}}\n  x: "{expression}"\nsteps: []\n'
    refused(cli, recipe, f"error: r.yaml:4:3: vars.x: '${{{source}}}' is over a limit: {EXPRESSION_BOMBS[expression]}")


@pytest.mark.parametrize("expression", [*EXPRESSION_BOMBS, "${[-1 in vars.l for a in range(9999)]}"])
def test_an_expression_met_again_is_compiled_and_refused_alike(expression):
    """A planner walks an expression the first time and compiles it the second (a foreach's,
    once per instance): the same limits, the same message."""
    from engine.recipe.expr import ExprError
    from engine.recipe.expr.template import evaluate, evaluator

    source = expression[expression.index("${") + 2 : -1]
    ev = evaluator({"vars": {"l": list(range(99999))}})
    said = []
    for _ in range(2):
        with pytest.raises(ExprError) as e:
            evaluate(expression, ev.names, ev=ev)
        said.append(str(e.value))
    limit = EXPRESSION_BOMBS.get(expression, "it ran longer than 0.5 s (MAX_SECONDS)")
    assert said == [f"'${{{source}}}' is over a limit: {limit}"] * 2
    assert ev.compiled[source] is not None  # the second time was the compiled function


def test_a_slow_recipe_expression_stops_at_its_time_budget(cli):
    recipe = 'recipe: r\nvars:\n  l: ${range(99999)}\n  x: "${[-1 in vars.l for a in range(9999)]}"\nsteps: []\n'
    refused(cli, recipe, "error: r.yaml:4:3: vars.x: '${[-1 in vars.l for a in range(9999)]}' is over a limit: "
            "it ran longer than 0.5 s (MAX_SECONDS)", cpu=CPU_S + 0.5)


def test_planning_a_recipe_stops_at_its_time_budget(tmp_path, monkeypatch):
    """Each `${...}` has 0.5 s, but a foreach evaluates one per instance: 100,000 of them could
    take hours. The plan as a whole has MAX_PLAN_SECONDS (60), here 0.5 to keep the test short."""
    from engine.recipe.errors import RecipeError
    from engine.recipe.expr import limits
    from engine.recipe.plan import plan_file

    write(tmp_path / "d.jsonl", '{"x": 1}\n')
    f = write(tmp_path / "r.yaml", "recipe: r\nsteps:\n  - id: s\n    uses: data.from_file\n"
                                   "    foreach: ${range(99999)}\n"
                                   "    with: {path: d.jsonl,\n"
                                   "           allow_empty: '${sum([i for i in range(9000)]) < item}'}\n")
    monkeypatch.setattr(limits, "MAX_PLAN_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(RecipeError) as e:
        plan_file(f)
    assert time.monotonic() - started < 5
    assert str(e.value).startswith(f"{f}:7:12: step s[")
    assert str(e.value).endswith("]: '${sum([i for i in range(9000)]) < item}' is over a limit: planning the recipe "
                                 "took longer than 0.5 s (MAX_PLAN_SECONDS)")


FOREACH = ("recipe: r\nsteps:\n" + "".join(f"  - id: s{i}\n    uses: data.from_file\n    foreach: ${{range({n})}}\n"
                                           f"    with: {{path: d.jsonl}}\n" for i, n in enumerate((60000, 60000))))


def test_foreach_instances_are_counted_before_any_is_planned(cli):
    write(cli.tmp / "d.jsonl", '{"x": 1}\n')
    refused(cli, FOREACH, "error: r.yaml:9:5: step 's1': with this foreach the recipe has 120,000 step instances, "
            "over the limit of 100,000 (set RECIPE_MAX_INSTANCES=N to raise it)")


def test_the_foreach_limit_is_raised_by_its_environment_variable(cli):
    write(cli.tmp / "d.jsonl", '{"x": 1}\n')
    write(cli.tmp / "r.yaml", FOREACH.replace("60000", "3"))
    cli.env["RECIPE_MAX_INSTANCES"] = "5"
    assert "over the limit of 5 (set RECIPE_MAX_INSTANCES=N" in cli("plan", "r.yaml", check=2).stderr
    cli.env["RECIPE_MAX_INSTANCES"] = "6"
    assert "0 cached, 6 to run" in cli("plan", "r.yaml").stdout


# ------------------------------------------------------------------ per-row expressions

def map_recipe(expression: str) -> str:
    return ("recipe: r\nsteps:\n  - id: load\n    uses: data.from_file\n    with: {path: rows.jsonl}\n"
            f"  - id: m\n    uses: data.map\n    with: {{derive: {{v: \"{expression}\"}}}}\n"
            "    inputs: {data: '${steps.load.data}'}\n")


def rows(cli, n: int) -> None:
    write(cli.tmp / "rows.jsonl", "".join(json.dumps({"problem": f"What is {i} + {i + 1}?", "x": 4000000, "n": 5000})
                                          + "\n" for i in range(n)))


ROW_BOMBS = {
    "x ** x": f"a number of about 26,408,240 digits is {DIGITS}",
    "10 ** n": f"a number of about 5,001 digits is {DIGITS}",
    "x << x": f"a number of about 1,204,127 digits is {DIGITS}",
    "'%0999999999d' % x": f"the formatted text would be at least 1,000,000,018 long, {LENGTH}",
    "problem * 99999999": f"the repeated value would be 1,399,999,986 long, {LENGTH}",
    "[[0]*99999 for a in range(9999)]": BUILT,
    "[problem * 999 for a in range(9999)]": BUILT,
}


@pytest.mark.parametrize("expression", ROW_BOMBS)
def test_per_row_expression_bombs_fail_the_step_fast(cli, expression):
    rows(cli, 3)
    write(cli.tmp / "r.yaml", map_recipe(expression))
    p, cpu_s, wall_s, rss_mb = measured(cli, "run", "r.yaml")
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert f"m: derive.v: {expression!r} failed on row 0: {ROW_BOMBS[expression]}" in p.stdout
    assert cpu_s < CPU_S + 1 and wall_s < WALL_S + 1 and rss_mb < RSS_MB, (cpu_s, wall_s, rss_mb)
    assert cli.statuses()["m"] == "failed"


def test_each_row_has_its_own_comprehension_budget(cli):
    rows(cli, 20000)
    write(cli.tmp / "r.yaml", map_recipe("len([c for c in problem])"))
    cli("run", "r.yaml")
    out = [json.loads(line) for line in (cli.artifacts / "r" / "m" / "data" / "data.jsonl").open()]
    assert len(out) == 20000 and all(r["v"] == len(r["problem"]) for r in out)


@pytest.mark.parametrize("terms", [0, 300])  # compiled, and walked (nested deeper than Python compiles)
def test_the_row_loop_resets_the_budget_for_each_row(terms):
    expression = "len([c for c in s])" + " + 0" * terms
    mapper = row_mapper(Evaluator({}), {"n": expression}, where="s")
    assert [r["n"] for r in mapper([{"s": "x" * 9000} for _ in range(3)])] == [9000] * 3
