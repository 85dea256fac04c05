"""OpenAIBackend against a real HTTP server on 127.0.0.1 (FastAPI + uvicorn in a thread)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _openai_server import FakeOpenAIServer  # noqa: E402

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.recipe.errors import StepError  # noqa: E402
from engine.run.testing import run_step  # noqa: E402
from steps.backends import load_backend  # noqa: E402
from steps.backends.base import BackendConfig, Sampling  # noqa: E402
from steps.backends.openai_http import OpenAIBackend  # noqa: E402

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(slow_s=1.0) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh(server):
    server.reset()


def backend(server, model="echo", **cfg) -> OpenAIBackend:
    config = BackendConfig(kind="openai", base_url=server.base_url, api_key_env="MATHRECIPE_TEST_NO_KEY", **cfg)
    return OpenAIBackend(config, model, backoff_s=0.01)


def test_chat_and_completion_prompts_map_to_their_endpoints(server):
    b = backend(server)
    outs = b.generate(["RAW PROMPT", [{"role": "user", "content": "chat prompt"}]],
                      Sampling(temperature=0.7, top_p=0.9, max_new_tokens=64, stop=["\n\n"], seed=5, logprobs=True))
    assert [len(o) for o in outs] == [1, 1]
    assert len(server.requests) == 2  # sent concurrently: arrival order is not fixed
    raw = next(r for r in server.requests if "prompt" in r)
    chat = next(r for r in server.requests if "messages" in r)
    assert raw["prompt"] == "RAW PROMPT" and "messages" not in raw and raw["logprobs"] == 1
    assert chat["messages"] == [{"role": "user", "content": "chat prompt"}] and chat["logprobs"] is True
    for body in (raw, chat):
        assert body["model"] == "echo" and body["max_tokens"] == 64 and body["temperature"] == 0.7
        assert body["top_p"] == 0.9 and body["stop"] == ["\n\n"] and body["seed"] == 5 and body["n"] == 1
    assert outs[0][0].text.startswith("re[RAW PROMPT]") and outs[0][0].token_logprobs == [-0.25, -0.75]
    assert outs[1][0].text.startswith("re[chat prompt]") and outs[1][0].token_logprobs == [-0.5, -1.5]
    assert outs[0][0].finish_reason == "stop"


def test_length_finish_reason_is_reported(server):
    out = backend(server).generate(["p"], Sampling(max_new_tokens=2))
    assert out[0][0].finish_reason == "length"


def test_n_samples_are_independent_requests_with_their_own_seeds(server):
    out = backend(server).generate([[{"role": "user", "content": "q"}]], Sampling(temperature=0.8, n=4, seed=10))
    assert sorted(r["seed"] for r in server.requests) == [10, 11, 12, 13]
    assert len({c.text for c in out[0]}) == 4
    server.reset()
    greedy = backend(server).generate(["q"], Sampling(temperature=0.0, n=3))
    assert len(server.requests) == 1 and len(greedy[0]) == 3  # greedy: one request, repeated


def test_concurrency_limit_is_respected(server):
    prompts = [f"p{i}" for i in range(24)]
    out = backend(server, concurrency=4).generate(prompts, Sampling())
    assert [o[0].text.startswith(f"re[p{i}]") for i, o in enumerate(out)] == [True] * 24  # order kept
    assert server.max_in_flight == 4
    server.reset()
    backend(server, concurrency=1).generate(prompts[:6], Sampling())
    assert server.max_in_flight == 1


def test_server_errors_are_retried_with_backoff(server):
    b = backend(server, model="flaky", retries=2)
    out = b.generate(["a", "b"], Sampling())
    assert all(o[0].ok and o[0].text for o in out)
    assert len(server.requests) == 4 and b.requests_sent == 4  # one 503 each, then success


def test_persistent_errors_come_back_as_failed_completions(server):
    b = backend(server, model="broken", retries=2)
    out = b.generate(["fine", "BAD one", "INVALID one"], Sampling())
    assert out[0][0].ok
    assert out[1][0].finish_reason == "error" and out[1][0].error.startswith("server error 500")
    assert out[1][0].error.endswith("(3 attempts)")
    assert out[2][0].error.startswith("server error 400") and out[2][0].error.endswith("(1 attempt)")  # not retried
    assert sum("BAD" in r["prompt"] for r in server.requests) == 3


def test_slow_server_times_out(server):
    b = backend(server, model="slow", timeout_s=0.2, retries=1)
    out = b.generate(["p"], Sampling())
    assert out[0][0].finish_reason == "error" and out[0][0].error == "timeout after 0.2s (2 attempts)"


def test_unreachable_server_is_a_failed_row_not_a_crash():
    cfg = BackendConfig(kind="openai", base_url="http://127.0.0.1:9/v1", retries=1, timeout_s=2)
    out = OpenAIBackend(cfg, "m", backoff_s=0.01).generate(["p"], Sampling())
    assert out[0][0].error.startswith("connection failed")


def test_api_key_is_sent_but_never_shown(monkeypatch, tmp_path):
    monkeypatch.setenv("MATHRECIPE_TEST_KEY", "sk-test-abcdef123456")
    with FakeOpenAIServer(api_key="sk-other-key-999") as s:
        cfg = BackendConfig(kind="openai", base_url=s.base_url, api_key_env="MATHRECIPE_TEST_KEY", retries=0)
        b = load_backend(cfg, "echo")
        assert isinstance(b, OpenAIBackend)
        out = b.generate(["p"], Sampling())
        assert s.auth_headers == ["Bearer sk-test-abcdef123456"]
        err = out[0][0].error
        assert err.startswith("server error 401") and "***" in err and "sk-test-abcdef123456" not in err
        assert "sk-test" not in repr(b) and "sk-test" not in cfg.model_dump_json()
        # through a step: the set-aside row and the log carry the reason, never the key
        write_records(tmp_path / "p" / "data.jsonl", [{"id": "a", "instruction": "What is 1+1?"}])
        step_cfg = {"model": "echo", "retries": 0, "backend": cfg.model_dump()}
        with pytest.raises(StepError) as e:  # every row failed: the step fails
            run_step("generate.responses", step_cfg, {"problems": tmp_path / "p"}, workdir=tmp_path / "run")
        assert "responses: 1/1 failed: error: server error 401" in str(e.value)
        assert "sk-test-abcdef123456" not in str(e.value)
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert b"sk-test-abcdef123456" not in f.read_bytes(), f


def test_generate_responses_through_the_server_retries_then_sets_aside(server, tmp_path):
    rows = [{"id": f"q{i}", "instruction": t} for i, t in enumerate(["What is 1+1?", "BAD question", "What is 2+2?"])]
    write_records(tmp_path / "p" / "data.jsonl", rows)
    cfg = {"model": "broken", "backend": {"kind": "openai", "base_url": server.base_url, "retries": 1,
                                          "api_key_env": "MATHRECIPE_TEST_NO_KEY", "shard_size": 2}}
    out = run_step("generate.responses", cfg, {"problems": tmp_path / "p"}, workdir=tmp_path / "run")
    assert [r["id"] for r in out["responses"].read()] == ["q0", "q2"]
    failed = out["failed"].read()
    assert len(failed) == 1 and failed[0]["id"] == "q1"
    assert failed[0]["reason"] == "error: server error 500: {\"error\":\"internal\"} (2 attempts)"
    # the rows layer asked again once more (retries=2 default) on top of the backend's own retry
    assert failed[0]["attempts"] == 3
    log = (tmp_path / "run" / "step.log").read_text()
    assert "3 rows, 2 ok, 1 set aside as failed (error=1)" in log


def test_generate_candidates_through_the_server(server, tmp_path):
    write_records(tmp_path / "p" / "data.jsonl", [{"id": "a", "instruction": "What is 3+4?"}])
    cfg = {"model": "echo", "n": 5, "backend": {"kind": "openai", "base_url": server.base_url,
                                                "api_key_env": "MATHRECIPE_TEST_NO_KEY", "concurrency": 5}}
    out = run_step("generate.candidates", cfg, {"problems": tmp_path / "p"}, workdir=tmp_path / "run")
    row = out["candidates"].read()[0]
    assert len(row["responses"]) == 5 and len(set(row["responses"])) == 5
    assert all(r["temperature"] == 0.8 for r in server.requests)


# ---------------------------------------------------------------------------- max_failed_fraction, end to end
def _recipe(cli, server, model: str, rows: list[str], extra: str = "", backend: str = "") -> str:
    from conftest import write

    write_records(cli.tmp / "problems.jsonl", [{"id": f"q{i}", "instruction": t} for i, t in enumerate(rows)])
    write(cli.tmp / "gen.yaml", f"""recipe: gen
steps:
  - id: problems
    uses: data.from_file
    with: {{path: problems.jsonl}}
  - id: responses
    uses: generate.responses
    with:
      model: {model}
      backend: {{kind: openai, base_url: "{server.base_url}", retries: 0,
                 api_key_env: MATHRECIPE_TEST_NO_KEY{backend}}}{extra}
    inputs: {{problems: "${{steps.problems.data}}"}}
""")
    return "gen.yaml"


def test_every_request_failing_fails_the_step_and_caches_nothing(cli, server):
    """Issue 9 finding 1: a model name the server does not serve; 16/16 answered 400."""
    f = _recipe(cli, server, "/cache/ab/abcdef/outputs/model", [f"What is {i}+1?" for i in range(16)])
    p = cli("run", f, check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert ("responses: 16/16 failed: error: server error 400: "
            "{\"error\":\"model '/cache/ab/abcdef/outputs/model' not found\"}") in out, out
    assert "(max_failed_fraction 0.5)" in out
    assert cli.statuses()["responses"] == "failed"
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["problems"]
    log = next((cli.cache / "failed").glob("*.log")).read_text()
    assert "16/16 failed" in log
    cli("run", f, check=1)  # not cached: the rerun asks the server again
    assert cli.statuses()["responses"] == "failed"


def test_some_failures_below_the_limit_show_in_the_summary_row(cli, server):
    rows = ["What is 1+1?", "INVALID question", "What is 2+2?", "What is 3+3?"]
    p = cli("run", _recipe(cli, server, "broken", rows))
    row = next(line for line in p.stdout.splitlines() if line.startswith("│ responses"))
    assert "ran (responses: 1/4 failed)" in row, p.stdout
    assert "cached (responses: 1/4 failed)" in cli("run", _recipe(cli, server, "broken", rows)).stdout  # cached too
    assert cli.statuses()["responses"] == "cached"


@pytest.mark.parametrize("model, why", [
    ("list-body", "response is a JSON list, not an object"),
    ("string-choice", "response choice is not an object"),
    ("string-message", "response choice has no message object"),
    ("number-content", "response text is not a string (int)"),
])
def test_a_200_body_of_the_wrong_shape_is_a_counted_failure_not_a_crash(cli, server, model, why):
    """A server answering 200 with a JSON list or non-object choices once crashed the step with an
    AttributeError traceback; a number as the text passed on as a response."""
    p = cli("run", _recipe(cli, server, model, ["What is 1+1?", "What is 2+2?"]), check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert f"responses: 2/2 failed: error: {why} (max_failed_fraction 0.5)" in out, out
    assert "Traceback" not in out
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["problems"]


@pytest.mark.parametrize("model, why", [
    ("trickle", "timeout after 0.5s"),  # one space per 0.1 s: each read is quick, the whole is not
    ("huge", "server sent more than 32 MiB"),
])
def test_a_server_that_never_finishes_its_answer_is_bounded(cli, server, model, why):
    """httpx's timeout is per read and it read any body whole: a trickling server held the step for
    as long as it liked, a runaway one filled memory."""
    p = cli("run", _recipe(cli, server, model, ["What is 1+1?"], backend=", timeout_s: 0.5"), check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert f"responses: 1/1 failed: error: {why} (max_failed_fraction 0.5)" in out, out
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["problems"]


def test_max_failed_fraction_zero_fails_on_any_failure(cli, server):
    rows = ["What is 1+1?", "INVALID question", "What is 2+2?", "What is 3+3?"]
    p = cli("run", _recipe(cli, server, "broken", rows, "\n      max_failed_fraction: 0"), check=1)
    assert "responses: 1/4 failed: error: server error 400: {\"error\":\"invalid request\"} (max_failed_fraction 0)" \
        in " ".join((p.stdout + p.stderr).split())


def test_a_model_directory_for_an_openai_backend_is_a_plan_time_error(cli):
    from conftest import write

    write_records(cli.tmp / "problems.jsonl", [{"id": "q0", "instruction": "What is 1+1?"}])
    write(cli.tmp / "served.yaml", """recipe: served
steps:
  - id: problems
    uses: data.from_file
    with: {path: problems.jsonl}
  - id: tokenizer
    uses: tokenizer.train
    inputs: {data: "${steps.problems.data}"}
  - id: pretrain
    uses: train.pretrain
    inputs: {data: "${steps.problems.data}", tokenizer: "${steps.tokenizer.tokenizer}"}
  - id: responses
    uses: generate.responses
    with: {backend: {kind: openai, base_url: "http://127.0.0.1:9/v1"}}
    inputs: {problems: "${steps.problems.data}", model: "${steps.pretrain.model}"}
""")
    for command in ("plan", "run"):
        p = cli(command, "served.yaml", check=2)
        assert p.stderr.startswith("error: served.yaml:15:") and p.stderr.count("\n") == 1, p.stderr
        assert ("step responses: input 'model' is a Model directory, but backend kind openai asks a server by model "
                "name; remove the input and set `with.model` to the name the server serves") in p.stderr
    assert not list(cli.cache.rglob("entry.json"))


# ---------------------------------------------------------------------------- a key planted in server errors
PLANTED = {"shaped": "sk-PLANTEDSECRET0a1b2c3d4e5f6a7b8c9d", "plain": "PLANTED.secret.0a1b2c3d4e5f6a7b8c9d0e1f"}


@pytest.mark.parametrize("shape", sorted(PLANTED))
def test_a_key_at_any_offset_of_a_server_error_leaves_no_8_characters_anywhere(cli, server, shape):
    """Issue 19: the error body was cut to 200 characters before the key was scrubbed, so a key
    at character 185 left `sk-PLANTEDSECRE` in log.txt, failed rows, scratch and the run record."""
    from _openai_server import LEAKY_BODY, leaky_body

    key = PLANTED[shape]
    assert leaky_body(key, 185)[185:185 + len(key)] == key
    cli.env["MR_TEST_API_KEY"] = key
    rows = [f"LEAK {i}" for i in range(LEAKY_BODY - len(key) + 1)] + ["What is 1+1?"]
    write_records(cli.tmp / "problems.jsonl", [{"id": f"q{i}", "instruction": t} for i, t in enumerate(rows)])
    backend = (f'{{kind: openai, base_url: "{server.base_url}", retries: 0, api_key_env: MR_TEST_API_KEY, '
               f"concurrency: 8}}")
    from conftest import write

    write(cli.tmp / "leak.yaml", f"""recipe: leak
steps:
  - id: problems
    uses: data.from_file
    with: {{path: problems.jsonl}}
  - id: kept                       # failed rows set aside: outputs/failed/data.jsonl, pushed with the entry
    uses: generate.responses
    with: {{model: leaky, retries: 0, max_failed_fraction: 1.0, backend: {backend}}}
    inputs: {{problems: "${{steps.problems.data}}"}}
  - id: failing                    # the step fails: cache/failed/<key>.log, scratch/, the run record
    uses: generate.responses
    with: {{model: leaky, retries: 0, shard_size: 64, backend: {backend}}}
    inputs: {{problems: "${{steps.problems.data}}"}}
""")
    p = cli("run", "leak.yaml", check=1)
    assert cli.statuses() == {"problems": "ran", "kept": "ran", "failing": "failed"}, p.stdout
    assert "server error 401" in (cli.artifacts / "leak/kept/failed/data.jsonl").read_text()
    assert list((cli.cache / "failed").glob("*.log")) and list((cli.cache / "scratch").rglob("*"))
    pieces = {key[i:i + 8] for i in range(len(key) - 7)}
    files = [f for root in (cli.cache, cli.artifacts) for f in root.rglob("*") if f.is_file()]
    leaks = {str(f.relative_to(cli.tmp)) for f in files for piece in pieces if piece.encode() in f.read_bytes()}
    assert not leaks, leaks
    assert not [piece for piece in pieces if piece in p.stdout + p.stderr]
