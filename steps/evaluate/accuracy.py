"""`evaluate.accuracy`: how often a model answers a Dataset's problems right, and which it got wrong.

It asks the model once per problem (greedy, in batches), extracts the answer (`<answer>` tag,
else `\\boxed{}`, else the last number; steps.common.mathcheck) and checks it against the
reference with exact arithmetic, then math-verify. Outputs:
- `report`: metrics.json (accuracy, format rate, per-domain figures, examples) + accuracy.png
- `predictions`: every answered row with `output`, `predicted`, `correct`, `format_ok`, `finish_reason`
- `errors`: exactly the rows marked wrong (the error set for the next fine-tuning round)
- `failed`: the rows the backend could not answer (an error after retries), with the reason
Generation goes through the one row runner (steps/backends/rows.py: checkpointed shards, so a
killed evaluation resumes; retries; `max_failed_fraction`). A cut-off or empty answer is the
model's answer and is scored; a backend error is not an answer, so it never reaches `errors`.
The before/after table of several evaluations is `evaluate.compare` (compare.py).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Model, Report
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.backends import BackendConfig, BackendSpec, Sampling, backend_resources
from steps.backends.rows import MAX_FAILED_FIELD
from steps.common.chat import prompt
from steps.common.columns import PROMPT_COLUMNS, pick_column
from steps.common.models import resolve_model


def check_rows(step: str, data: Dataset, rows: list[dict[str, Any]], prompt_field: str | None,
               answer_field: str) -> str:
    """The prompt column; every row has a prompt and a reference answer (else one clear error)."""
    if not rows:
        raise StepError(f"{step}: data: {data.path} holds no rows to evaluate")
    pf = pick_column(rows[0], prompt_field, PROMPT_COLUMNS, "prompt", f"{step}: data: {data.path}", "prompt_field")
    for i, row in enumerate(rows):
        if row.get(answer_field) in (None, ""):
            raise StepError(f"{step}: data: row {i} of {data.path} has no {answer_field!r} field to check against "
                            f"(columns: {', '.join(sorted(row))}); evaluation needs reference answers "
                            "(set answer_field)")
        if row.get(pf) in (None, ""):
            raise StepError(f"{step}: data: row {i} of {data.path} has an empty {pf!r} field")
    return pf


def scored_row(row: dict[str, Any], output: str, finish_reason: str | None, answer_field: str) -> dict[str, Any]:
    """The row with the model's output, the answer extracted from it, and whether that is right."""
    from steps.common.mathcheck import extract_answer, has_think_answer_format, is_correct

    predicted = extract_answer(output)
    return {**row, "output": output, "predicted": predicted, "correct": is_correct(predicted, row[answer_field]),
            "format_ok": has_think_answer_format(output), "finish_reason": finish_reason}


def summarize(scored: list[dict[str, Any]], n_examples: int) -> dict[str, Any]:
    """Accuracy, format rate and cut-off count, overall and per domain, and the first rows as examples."""
    by_domain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in scored:
        by_domain[str(r.get("domain") or "all")].append(r)

    def figures(rs):
        n = len(rs)
        correct = sum(r["correct"] for r in rs)
        return {"n": n, "correct": correct, "accuracy": round(correct / n, 4) if n else 0.0,
                "format_rate": round(sum(r["format_ok"] for r in rs) / n, 4) if n else 0.0,
                "cut_off": sum(r["finish_reason"] == "length" for r in rs)}

    overall = figures(scored)
    return {
        **overall,
        "per_domain": {d: figures(rs) for d, rs in sorted(by_domain.items())},
        "examples": [{k: r.get(k) for k in ("id", "domain", "problem", "answer", "output", "predicted", "correct")}
                     for r in scored[:n_examples]],
    }


def bar_chart(path, per_domain: dict[str, dict[str, Any]], overall: float, title: str) -> None:
    """accuracy.png: a bar per domain and one for all rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_domain) + ["overall"]
    values = [per_domain[d]["accuracy"] for d in per_domain] + [overall]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(names)), 3.5))
    bars = ax.bar(names, values, color=["#4c72b0"] * len(per_domain) + ["#dd8452"])
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in values], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@register("evaluate.accuracy")
class Accuracy(Step):
    """Greedy batched generation over problems; accuracy per domain; the wrongly answered rows."""

    version = "2"  # 2: a backend error is a `failed` row, no longer a wrong answer in `predictions`/`errors`

    class Config(StepConfig):
        model: str | None = Field(None, description="local path or Hub id; the bound `model` input wins")
        backend: BackendConfig = BackendConfig()
        max_new_tokens: int = Field(64, ge=1)
        chat: bool = Field(True, description="send each problem as a chat user message (the chat template "
                                             "renders it); false: the raw problem text")
        system: str | None = Field(None, description="optional system message (chat only)")
        prompt_field: str | None = Field(None,
                                         description="default: the first of prompt, problem, instruction, question")
        answer_field: str = "answer"
        limit: int | None = Field(None, ge=1, description="evaluate the first N rows only")
        examples: int = Field(10, ge=0, description="rows shown in the report")
        max_failed_fraction: float = MAX_FAILED_FIELD

    inputs = {"data": Dataset, "model": In(Model, required=False)}
    outputs = {"report": Report, "predictions": Dataset, "errors": Dataset, "failed": Dataset}
    may_be_empty = ("errors", "failed")  # a model with no errors, a backend with no failures

    uses_replicas = True  # generate_rows loads the model in map_shards' replicas

    def resources(self) -> Resources:
        return backend_resources(self.config.backend)

    def run(self, ctx):
        from steps.backends.rows import generate_rows

        c = self.config
        step = "evaluate.accuracy"
        data = ctx.inputs["data"]
        rows = data.read()[: c.limit]
        pf = check_rows(step, data, rows, c.prompt_field, c.answer_field)
        path = resolve_model(ctx, c, who=step)
        result = generate_rows(
            ctx, BackendSpec(c.backend, path), rows,  # the model loads once here, or once per Ray replica
            prompt_of=lambda r: prompt(r[pf], c.system, c.chat),
            sampling=Sampling(temperature=0.0, max_new_tokens=c.max_new_tokens),
            shard_size=c.backend.shard_size, name="answers",
            keep_truncated=True, keep_empty=True, strip=False,  # what the model said, as it said it
            instruction_of=lambda r: r[pf], max_failed_fraction=c.max_failed_fraction)
        scored = [scored_row(row, texts[0], finish[0], c.answer_field)
                  for (row, texts), finish in zip(result.ok, result.finish_reasons)]
        metrics = summarize(scored, c.examples)
        metrics["failed"] = len(result.failed)
        metrics["model"] = path if ctx.inputs.get("model") is None else "(bound input)"
        ctx.write_metrics("report", metrics)
        bar_chart(ctx.out("report") / "accuracy.png", metrics["per_domain"], metrics["accuracy"],
                  f"accuracy {metrics['accuracy']:.1%} on {metrics['n']} problems")
        ctx.write_dataset("predictions", scored)
        ctx.write_dataset("errors", [r for r in scored if not r["correct"]])
        ctx.write_dataset("failed", result.failed)
        ctx.log.info("accuracy %.4f (%d/%d), format rate %.4f", metrics["accuracy"], metrics["correct"],
                     metrics["n"], metrics["format_rate"])
