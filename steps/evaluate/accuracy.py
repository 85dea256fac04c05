"""`evaluate.accuracy` (seed 002's evaluate_model.py + evaluate_extract.py) and
`evaluate.compare` (the before/after table).

`evaluate.accuracy` generates greedily, in batches, for every problem of a Dataset, extracts
the answer (`<answer>` tag, else `\\boxed{}`, else the last number; steps.common.mathcheck) and checks
it against the reference with exact arithmetic / math-verify. Outputs:
- `report`: metrics.json (accuracy, format rate, per-domain figures, examples) + accuracy.png
- `predictions`: every row with `output`, `predicted`, `correct`, `format_ok`, `finish_reason`
- `errors`: exactly the rows marked wrong (the seed's error file for the next fine-tuning round)
Generation runs in checkpointed shards, so a killed evaluation resumes.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import Field

from engine.artifacts import Dataset, Model, Report
from engine.errors import StepError
from engine.step import In, Step, StepConfig, register
from steps.backends.base import BackendConfig

PROMPT_FIELDS = ("problem", "instruction", "question")


def model_path(step: str, ctx, configured: str | None) -> str:
    bound = ctx.inputs.get("model")
    if bound is not None:
        return str(bound.path)
    if configured:
        return configured
    raise StepError(f"{step}: model: no model given; bind the `model` input or set `model:` to a path or Hub id")


def check_rows(step: str, data: Dataset, rows: list[dict[str, Any]], prompt_field: str | None,
               answer_field: str) -> str:
    if not rows:
        raise StepError(f"{step}: data: {data.path} holds no rows to evaluate")
    candidates = (prompt_field,) if prompt_field else PROMPT_FIELDS
    pf = next((f for f in candidates if f in rows[0]), None)
    if pf is None:
        raise StepError(f"{step}: data: {data.path}: rows have no {' / '.join(map(repr, candidates))} field "
                        f"(columns: {', '.join(sorted(rows[0]))}); set prompt_field")
    for i, row in enumerate(rows):
        if row.get(answer_field) in (None, ""):
            raise StepError(f"{step}: data: row {i} of {data.path} has no {answer_field!r} field to check against "
                            f"(columns: {', '.join(sorted(row))}); evaluation needs reference answers "
                            "(set answer_field)")
        if row.get(pf) in (None, ""):
            raise StepError(f"{step}: data: row {i} of {data.path} has an empty {pf!r} field")
    return pf


def summarize(scored: list[dict[str, Any]], n_examples: int) -> dict[str, Any]:
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

    version = "1"

    class Config(StepConfig):
        model: str | None = Field(None, description="local path or Hub id; the bound `model` input wins")
        backend: BackendConfig = BackendConfig()
        max_new_tokens: int = Field(64, ge=1)
        chat: bool = Field(True, description="send each problem as a chat user message (the chat template "
                                             "renders it); false: the raw problem text")
        system: str | None = Field(None, description="optional system message (chat only)")
        prompt_field: str | None = Field(None, description="default: problem, instruction or question")
        answer_field: str = "answer"
        limit: int | None = Field(None, ge=1, description="evaluate the first N rows only")
        examples: int = Field(10, ge=0, description="rows shown in the report")

    inputs = {"data": Dataset, "model": In(Model, required=False)}
    outputs = {"report": Report, "predictions": Dataset, "errors": Dataset}

    def run(self, ctx):
        from steps.backends import Sampling, load_backend
        from steps.common.mathcheck import extract_answer, has_think_answer_format, is_correct

        c = self.config
        step = "evaluate.accuracy"
        data = ctx.inputs["data"]
        rows = data.read()
        if c.limit:
            rows = rows[: c.limit]
        pf = check_rows(step, data, rows, c.prompt_field, c.answer_field)
        path = model_path(step, ctx, c.model)
        backend = None
        sampling = Sampling(temperature=0.0, max_new_tokens=c.max_new_tokens)

        def prompt(row):
            if not c.chat:
                return str(row[pf])
            msgs = [{"role": "system", "content": c.system}] if c.system else []
            return msgs + [{"role": "user", "content": str(row[pf])}]

        def score(shard: list[dict[str, Any]]) -> list[dict[str, Any]]:
            nonlocal backend
            if backend is None:
                backend = load_backend(c.backend, path)
            outs = backend.generate([prompt(r) for r in shard], sampling)
            scored = []
            for row, comps in zip(shard, outs):
                comp = comps[0]
                predicted = extract_answer(comp.text)
                scored.append({**row, "output": comp.text, "predicted": predicted,
                               "correct": is_correct(predicted, row[c.answer_field]),
                               "format_ok": has_think_answer_format(comp.text),
                               "finish_reason": comp.finish_reason})
            return scored

        scored = ctx.map_shards(rows, score, shard_size=c.backend.shard_size, name="generations", desc="evaluating")
        if backend is not None:
            backend.close()
        metrics = summarize(scored, c.examples)
        metrics["model"] = path if ctx.inputs.get("model") is None else "(bound input)"
        ctx.write_metrics("report", metrics)
        bar_chart(ctx.out("report") / "accuracy.png", metrics["per_domain"], metrics["accuracy"],
                  f"accuracy {metrics['accuracy']:.1%} on {metrics['n']} problems")
        ctx.write_dataset("predictions", scored)
        ctx.write_dataset("errors", [r for r in scored if not r["correct"]])
        ctx.log.info("accuracy %.4f (%d/%d), format rate %.4f", metrics["accuracy"], metrics["correct"],
                     metrics["n"], metrics["format_rate"])


def comparison_table(labels: list[str], reports: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    domains = sorted({d for r in reports for d in r.get("per_domain", {})})
    header = ["domain"] + labels + ([f"change ({labels[0]} -> {labels[-1]})"] if len(labels) > 1 else [])
    body = []
    for d in domains + ["overall"]:
        accs = [(r["per_domain"].get(d, {}).get("accuracy") if d != "overall" else r.get("accuracy"))
                for r in reports]
        cells = [d] + ["-" if a is None else f"{a:.1%}" for a in accs]
        if len(labels) > 1:
            first, last = accs[0], accs[-1]
            cells.append("-" if first is None or last is None else f"{(last - first) * 100:+.1f} pts")
        body.append(cells)
    return header, body


@register("evaluate.compare")
class Compare(Step):
    """A before/after accuracy table (per domain) from several evaluate.accuracy reports."""

    version = "2"

    class Config(StepConfig):
        labels: list[str] = Field(default_factory=list, description="one per report, e.g. [before, after]")
        title: str = "accuracy"

    inputs = {"reports": In(Report, many=True)}
    outputs = {"report": Report}

    def run(self, ctx):
        step = "evaluate.compare"
        reports = ctx.inputs["reports"] or []
        if not reports:
            raise StepError(f"{step}: reports: bind at least one evaluate.accuracy report")
        labels = self.config.labels or [f"#{i}" for i in range(len(reports))]
        if len(labels) != len(reports):
            raise StepError(f"{step}: labels: {len(labels)} labels for {len(reports)} reports; give one per report")
        loaded = []
        for rep in reports:
            try:
                m = rep.metrics()
            except (OSError, ValueError) as e:
                raise StepError(f"{step}: reports: {rep.path} has no readable metrics.json ({e})") from None
            if "accuracy" not in m:
                raise StepError(f"{step}: reports: {rep.path}/metrics.json has no 'accuracy'; "
                                "expected an evaluate.accuracy report")
            loaded.append(m)
        header, body = comparison_table(labels, loaded)
        widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
        table = "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in body])
        out = ctx.out("report")
        # summary.md: `recipe run` prints it at the end of every run, cached or not
        (out / "summary.md").write_text(f"## {self.config.title}\n\n{table}\n", encoding="utf-8")
        ctx.write_metrics("report", {"labels": labels, "header": header, "rows": body,
                                     "accuracy": {l: m["accuracy"] for l, m in zip(labels, loaded)}})
        ctx.log.info("%s\n%s", self.config.title, table)
