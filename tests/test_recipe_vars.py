"""Vars that refer to vars: derived once, in any order, following --set; a cycle is one clear error."""
from conftest import write

from engine.recipe.plan import plan_file

RECIPE = """\
recipe: derived
vars:
  size: ${vars.sizes[vars.choice]}       # refers to vars defined below it
  choice: small
  sizes: {small: 3, large: 30}
  prefix: "p${vars.size}"
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: "${vars.size}", id_prefix: "${vars.prefix}"}
"""


def test_derived_vars_resolve_in_any_order_and_follow_set(tmp_path):
    f = write(tmp_path / "r.yaml", RECIPE)
    plan = plan_file(f)
    assert (plan.by_label["problems"].config.count, plan.by_label["problems"].config.id_prefix) == (3, "p3")
    assert plan.vars["size"] == 3
    plan = plan_file(f, sets=["vars.choice=large"])
    assert (plan.by_label["problems"].config.count, plan.by_label["problems"].config.id_prefix) == (30, "p30")


def test_a_cycle_of_vars_is_one_error_naming_the_chain_and_line(cli):
    write(cli.tmp / "cycle.yaml", RECIPE.replace("choice: small", "choice: ${vars.prefix}"))
    out = cli("plan", "cycle.yaml", check=2)
    assert out.stderr == ("error: cycle.yaml:3:3: vars refer to each other in a cycle: "
                          "vars.size -> vars.choice -> vars.prefix -> vars.size\n")


def test_an_unknown_var_in_a_var_names_that_var(cli):
    write(cli.tmp / "bad.yaml", RECIPE.replace('"p${vars.size}"', '"p${vars.sise}"'))
    out = cli("plan", "bad.yaml", check=2)
    assert "bad.yaml:6:" in out.stderr and "vars.prefix: no 'sise' here" in out.stderr



def test_an_expression_may_hold_braces(tmp_path):
    """`${...}` ends at its own closing brace: a mapping or a '}' in a string inside it used to end
    it early (a syntax error naming half the expression)."""
    f = write(tmp_path / "braces.yaml", """
recipe: braces
vars:
  size: '${ {"small": 2, "large": 3}["small"] }'
  label: "${'{' + 'n}'} = ${vars.size}"
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: 1}
""")
    assert plan_file(f).vars == {"size": 2, "label": "{n} = 2"}


def test_a_date_is_the_text_written(cli):
    """YAML 1.2 has no dates: ruamel made `2020-01-01` a date object, which reached the run record
    and failed `recipe run` with a traceback after every step had run."""
    write(cli.tmp / "data.jsonl", '{"a": 1}\n')
    write(cli.tmp / "dated.yaml", """
recipe: dated
vars: {since: 2020-01-01, until: 2020-12-31 10:00:00, <<: {at: 2021-1-1}}  # the merge key: read by ruamel
steps:
  - id: load
    uses: data.from_file
    with: {path: data.jsonl}
""")
    assert plan_file(cli.tmp / "dated.yaml", sets=["vars.since=2019-01-01"]).vars == {
        "since": "2019-01-01", "until": "2020-12-31 10:00:00", "at": "2021-1-1"}
    cli("run", "dated.yaml", "--set", "vars.since=2019-01-01")
    assert cli.statuses() == {"load": "ran"}


def test_vars_each_reading_the_next_resolve_however_many(cli):
    """500 vars each reading the one written after it: resolved one by one, it passed Python's
    recursion limit (an error at the 66th). A var named in a branch not taken does not make a
    cycle; a true cycle at the end of a long chain is still one error naming it."""
    chain = "".join(f"  v{i}: ${{vars.v{i + 1}}}\n" for i in range(1, 500))
    text = ("recipe: chain\nvars:\n" + chain + "  v500: 7\n  pick: ${vars.v1 if vars.v500 else vars.back}\n"
            "  back: ${vars.pick}\nsteps:\n  - id: problems\n    uses: problems.arithmetic\n"
            '    with: {count: "${vars.pick}"}\n')
    f = write(cli.tmp / "chain.yaml", text)
    plan = plan_file(f)
    assert plan.vars["v1"] == plan.vars["back"] == plan.by_label["problems"].config.count == 7
    write(cli.tmp / "ring.yaml", text.replace("v500: 7", "v500: ${vars.v498}"))
    out = cli("plan", "ring.yaml", check=2)
    assert out.stderr == ("error: ring.yaml:500:3: vars refer to each other in a cycle: "
                          "vars.v498 -> vars.v499 -> vars.v500 -> vars.v498\n")


def test_vars_read_by_computed_names_are_resolved_where_they_are_read(cli, monkeypatch):
    """`vars['v' + str(i)]` of 300 vars: each such read stopped the reader's evaluation and started
    it again (2,000 of them planned in 12 s); now each var is evaluated about once. A ring through computed
    names, longer than the vars resolved inline, is still one error naming every var in it."""
    from engine.recipe import vars as vars_module

    evaluated = []
    real = vars_module.resolve
    monkeypatch.setattr(vars_module, "resolve", lambda value, names: evaluated.append(value) or real(value, names))
    many = "".join(f"  v{i}: ${{{i} + vars[vars.name + str({i + 1})] if {i} < 30 else {i}}}\n" for i in range(300))
    text = ("recipe: computed\nvars:\n  name: v\n  total: ${sum([vars['v' + str(i)] for i in range(300)])}\n"
            + many + 'steps:\n  - {id: problems, uses: problems.arithmetic, with: {count: "${vars.total}"}}\n')
    plan = plan_file(write(cli.tmp / "computed.yaml", text))
    assert plan.vars["total"] == sum(range(30, 300)) + sum(sum(range(i, 31)) for i in range(30))
    # once, and once more where v0's chain of 30 went deeper than the vars resolved inline (was 271)
    assert evaluated.count("${sum([vars['v' + str(i)] for i in range(300)])}") <= 2
    ring = "".join(f"  v{i}: ${{vars['v' + str({(i + 1) % 20})]}}\n" for i in range(20))
    write(cli.tmp / "ring.yaml", "recipe: ring\nvars:\n" + ring + 'steps:\n  - {id: p, uses: problems.arithmetic, '
          'with: {count: "${vars.v0}"}}\n')
    out = cli("plan", "ring.yaml", check=2)
    assert out.stderr == ("error: ring.yaml:3:3: vars refer to each other in a cycle: "
                          + " -> ".join(f"vars.v{i}" for i in [*range(20), 0]) + "\n")
