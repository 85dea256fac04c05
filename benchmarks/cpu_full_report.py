"""What a run of `recipes/deepseek_all_domains.yaml --profile cpu-full` did, read from its cache:
per step its wall seconds and rows per output (records per exported file); for the generation
steps also the seconds from the engine being ready to the rows being done (vLLM's own log
lines) and the new tokens per second over them (texts re-tokenized with the model's tokenizer).

    .venv-vllm/bin/recipe run recipes/deepseek_all_domains.yaml --profile cpu-full --cache-dir CACHE
    .venv-vllm/bin/python benchmarks/cpu_full_report.py CACHE [RUN_ID] > benchmarks/results/cpu_full.json
"""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) ")
READY = re.compile(r"INFO (\d\d-\d\d \d\d:\d\d:\d\d) \[core\.py:\d+\] init engine")
TEXTS = {"responses": lambda r: [r["response"]], "candidates": lambda r: r["responses"]}


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.open()]


def generation(log: str, year: str) -> tuple[datetime, datetime] | None:
    """(engine ready, rows done) from a generation step's log."""
    ready = READY.search(log)
    done = [m.group(1) for line in log.splitlines() if " rows, " in line and (m := STAMP.match(line))]
    if not ready or not done:
        return None
    return (datetime.strptime(f"{year}-{ready.group(1)}", "%Y-%m-%d %H:%M:%S"),
            datetime.strptime(done[-1], "%Y-%m-%d %H:%M:%S,%f"))


def records(path: Path) -> int:
    """Records in one exported file: a JSON list, or JSON lines."""
    return len(json.loads(path.read_text())) if path.suffix == ".json" else len(path.read_text().splitlines())


def step_report(node: dict, cache: Path, tokenizer, year: str) -> dict:
    entry = cache / node["key"][:2] / node["key"]
    out = {"status": node["status"], "seconds": node["seconds"],
           "rows": {name: len(rows(entry / "outputs" / name)) for name in node["outputs"] if name != "files"}}
    if "files" in node["outputs"]:  # export.files: the seed's files, one folder per kind
        out["files"] = {f.parent.name: records(f) for f in sorted((entry / "outputs" / "files").glob("*/*"))}
    kind = node["uses"].split(".")[-1]
    if node["status"] == "ran" and kind in TEXTS:
        span = generation((entry / "log.txt").read_text(errors="replace").replace("\r", "\n"), year)
        texts = [t for r in rows(entry / "outputs" / kind) for t in TEXTS[kind](r)]
        tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
        out["new_tokens"] = tokens
        if span:
            seconds = (span[1] - span[0]).total_seconds()
            out["generation_s"] = round(seconds, 1)
            out["tokens_per_s"] = round(tokens / seconds)
    return out


def main() -> None:
    from transformers import AutoTokenizer

    cache = Path(sys.argv[1])
    record = sorted((cache / "runs").glob(f"{sys.argv[2] if len(sys.argv) > 2 else ''}*.json"))[-1]
    run = json.loads(record.read_text())
    model = next(n for n in run["nodes"] if n["label"].endswith("/pretrain"))
    tokenizer = AutoTokenizer.from_pretrained(cache / model["key"][:2] / model["key"] / "outputs" / "model")
    year = str(datetime.fromtimestamp(run["started"]).year)
    steps = {n["label"]: step_report(n, cache, tokenizer, year)
             for n in run["nodes"] if n["status"] in ("ran", "cached")}
    gen = [s for s in steps.values() if "generation_s" in s]
    print(json.dumps({"run": run["run_id"], "started": run["started"], "finished": run["finished"],
                      "status": run["status"], "steps": steps,
                      "generation": {"new_tokens": sum(s["new_tokens"] for s in gen),
                                     "seconds": round(sum(s["generation_s"] for s in gen), 1),
                                     "step_seconds": round(sum(s["seconds"] for s in gen), 1)}}, indent=1))


if __name__ == "__main__":
    main()
