"""Execution-only settings stay out of keys: changing how a step talks to its server (concurrency,
timeouts, address) reuses the cache; changing what it asks for (temperature) reruns it."""
import pytest
from conftest import write

from engine.cache.keys import config_for_key
from steps.backends import BackendConfig

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

RECIPE = """\
recipe: exec_only
vars:
  url: http://127.0.0.1:1/v1
steps:
  - id: problems
    uses: problems.arithmetic
    with: {count: 3, seed: 1}
  - id: answers
    uses: generate.responses
    with:
      model: echo
      backend: {kind: openai, base_url: "${vars.url}", api_key_env: MATHRECIPE_TEST_NO_KEY}
    inputs: {problems: "${steps.problems.problems}"}
"""


def test_backend_fields_of_other_kinds_and_execution_only_fields_leave_the_key():
    keyed = config_for_key(BackendConfig(kind="transformers"))
    assert set(keyed) == {"kind", "shard_size", "device", "dtype", "batch_size"}
    keyed = config_for_key(BackendConfig(kind="openai", base_url="http://elsewhere/v1", concurrency=64))
    assert set(keyed) == {"kind", "shard_size"}  # server address, key name, concurrency, timeouts, retries: not outputs
    assert set(config_for_key(BackendConfig(kind="vllm"))) == {"kind", "shard_size", "dtype", "tensor_parallel_size",
                                                               "max_model_len"}


def test_concurrency_timeout_and_base_url_do_not_rerun_but_temperature_does(cli):
    from _openai_server import FakeOpenAIServer

    f = write(cli.tmp / "r.yaml", RECIPE)
    with FakeOpenAIServer() as one, FakeOpenAIServer() as two:
        cli("run", str(f), "--set", f"vars.url={one.base_url}")
        assert cli.statuses() == {"problems": "ran", "answers": "ran"}
        for change in ("steps.answers.with.backend.concurrency=2", "steps.answers.with.backend.timeout_s=5",
                       f"vars.url={two.base_url}"):
            cli("run", str(f), "--set", f"vars.url={one.base_url}", "--set", change)
            assert cli.statuses() == {"problems": "cached", "answers": "cached"}, change
        assert not two.requests  # served from the cache: the second server was never asked
        cli("run", str(f), "--set", f"vars.url={two.base_url}", "--set", "steps.answers.with.temperature=0.5")
        assert cli.statuses() == {"problems": "cached", "answers": "ran"}
        assert two.requests
