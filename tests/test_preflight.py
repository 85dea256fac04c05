"""Preflight: every known-at-start problem of a run (missing package, unreachable server,
missing secret, a third-party step's own check) in one message, exit 1, nothing started."""
from __future__ import annotations

import re
import socket

import pytest
from conftest import ROOT, write

PLUGIN = '''
from engine.recipe.artifact_types import Dataset
from engine.cli.preflight import missing_secret
from engine.recipe.step import Step, StepConfig, register


@register("thirdparty.needs_token")
class NeedsToken(Step):
    """A third-party step that checks its own needs before anything runs."""

    class Config(StepConfig):
        token_env: str = "MR_PREFLIGHT_TOKEN"

    outputs = {"data": Dataset}

    def preflight(self):
        problem = missing_secret(self.config.token_env)
        return super().preflight() + ([problem] if problem else [])

    def run(self, ctx):
        ctx.write_dataset("data", [{"x": 1}])
'''


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    return port


def _nothing_started(cli) -> None:
    assert not (cli.cache / "runs").exists() or not list((cli.cache / "runs").glob("*.json"))
    assert not list(cli.cache.glob("??/*/entry.json"))


def test_deepseek_without_vllm_fails_at_once_listing_every_affected_step(cli):
    p = cli("run", str(ROOT / "recipes" / "deepseek_all_domains.yaml"), check=1)
    err = p.stderr
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "preflight: 1 problem(s)" in err and "nothing was started" in err
    assert "steps: problems (6 instances), responses (6 instances), candidates (6 instances)" in err
    for hint in ("--profile tiny", "pip install 'mathrecipe[vllm]'", "backend.kind: openai"):
        assert hint in err
    assert "running" not in p.stdout and "ran " not in p.stdout
    _nothing_started(cli)


def test_problems_of_several_steps_and_a_third_party_check_come_in_one_message(cli, tmp_path, monkeypatch):
    write(tmp_path / "plugin" / "preflight_steps.py", PLUGIN)
    cli.env["PYTHONPATH"] = f"{tmp_path / 'plugin'}:{cli.env['PYTHONPATH']}"
    cli.env["RECIPE_STEP_MODULES"] += ",preflight_steps"
    cli.env.pop("MR_PREFLIGHT_TOKEN", None)
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    recipe = write(tmp_path / "r.yaml", f"""
recipe: preflight_demo
steps:
  - id: problems
    uses: problems.arithmetic
    with: {{count: 4, seed: 0}}
  - id: answers
    uses: generate.responses
    with: {{model: some-model, backend: {{kind: openai, base_url: "{url}"}}}}
    inputs: {{problems: "${{steps.problems.problems}}"}}
  - id: token
    uses: thirdparty.needs_token
""")
    p = cli("run", str(recipe), check=1)
    assert "preflight: 2 problem(s)" in p.stderr
    assert f"server {url} is not reachable" in p.stderr and "steps: answers" in p.stderr
    assert "secret MR_PREFLIGHT_TOKEN is not set" in p.stderr and "steps: token" in p.stderr
    _nothing_started(cli)
    # with the secret set and the offending step left out, the run goes ahead
    cli.env["MR_PREFLIGHT_TOKEN"] = "t0ken-value"
    p = cli("run", str(recipe), "--only", "token")
    assert cli.statuses()["token"] == "ran"


def test_a_cached_step_is_not_checked(cli, tmp_path):
    """Only steps that will compute need their package: a cached one needs nothing."""
    recipe = write(tmp_path / "r.yaml", """
recipe: cached_demo
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: 4, seed: 0}
""")
    cli("run", str(recipe))
    from engine.cache.store import Store
    from engine.cli.preflight import PreflightError, check
    from engine.recipe.plan import plan_file
    from engine.run.runner import Runner

    plan = plan_file(recipe)
    runner = Runner(plan, Store(cli.cache))
    node = plan.nodes[0]
    node.step_cls = type("Broken", (node.step_cls,), {"preflight": lambda self: ["needs a unicorn"]})
    check(runner)  # cached: no problem raised
    runner.selection.force = {"problems"}
    with pytest.raises(PreflightError, match="needs a unicorn"):
        check(runner)


def test_publishing_to_the_hub_without_its_token_is_a_preflight_problem(cli, tmp_path):
    cli.env.pop("HF_TOKEN", None)
    cli.env["RECIPE_KEYS_FILE"] = str(tmp_path / "no-keys")
    recipe = write(tmp_path / "r.yaml", """
recipe: publish_demo
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: 4, seed: 0}
  - id: publish
    uses: publish.hub
    with: {target: hub, repo_id: me/demo}
    inputs: {train: ["${steps.problems.problems}"]}
""")
    p = cli("run", str(recipe), check=1)
    assert "secret HF_TOKEN is not set" in p.stderr and "steps: publish" in p.stderr
    _nothing_started(cli)


def test_too_little_disk_for_the_last_outputs_is_a_problem_disk_size_faked(tmp_path, monkeypatch):
    """A nearly full disk cannot be made here: shutil.disk_usage reports it (the only fake)."""
    import collections
    import shutil

    from engine.cache.store import Store
    from engine.cli import preflight
    from engine.recipe.plan import plan_file
    from engine.run.runner import Runner

    (tmp_path / "d.jsonl").write_text("".join(f'{{"x": {i}}}\n' for i in range(2000)))
    text = "recipe: disk\nsteps:\n  - {id: load, uses: data.from_file, with: {path: d.jsonl}}\n" \
           "  - {id: m, uses: data.map, with: {derive: {x: 'x + K'}}, inputs: {data: '${steps.load.data}'}}\n"
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "cache")
    write(tmp_path / "r.yaml", text.replace("K", "1"))
    Runner(plan_file(tmp_path / "r.yaml"), store).run()
    write(tmp_path / "r.yaml", text.replace("K", "2"))  # m will compute again; load stays cached
    runner = Runner(plan_file(tmp_path / "r.yaml"), store)
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 5000, 5000))
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check(runner)
    assert re.search(r"disk: the steps that will compute are expected to write about 2\d KiB \(the size of",
                     str(e.value))
    assert "has 5 KiB free" in str(e.value) and "steps: m" in str(e.value)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 10**6))
    preflight.check(runner)  # enough room: nothing to say


@pytest.mark.parametrize("url, why", [("http://127.0.0.1:99999/v1", "Port out of range 0-65535"),
                                      ("http://127.0.0.1:eighty/v1", "Port could not be cast to integer value"),
                                      ("http://[::1/v1", "Invalid IPv6 URL")])
def test_a_malformed_server_url_is_a_preflight_problem_not_a_traceback(cli, tmp_path, url, why):
    recipe = write(tmp_path / "r.yaml", f"""
recipe: bad_url
steps:
  - id: problems
    uses: problems.arithmetic
    with: {{count: 4, seed: 0}}
  - id: answers
    uses: generate.responses
    with: {{model: some-model, backend: {{kind: openai, base_url: "{url}"}}}}
    inputs: {{problems: "${{steps.problems.problems}}"}}
""")
    p = cli("run", str(recipe), check=1)
    assert f"server {url} is not reachable (not a valid URL: {why}" in p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    _nothing_started(cli)
