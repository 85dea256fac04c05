"""`evaluate.compare`: a before/after accuracy table (per domain) from evaluate.accuracy reports."""
from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.recipe.artifact_types import Report
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, StepConfig, register


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


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header] + body) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in body])


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
        table = markdown_table(header, body)
        out = ctx.out("report")
        # summary.md: `recipe run` prints it at the end of every run, cached or not
        (out / "summary.md").write_text(f"## {self.config.title}\n\n{table}\n", encoding="utf-8")
        ctx.write_metrics("report", {"labels": labels, "header": header, "rows": body,
                                     "accuracy": {l: m["accuracy"] for l, m in zip(labels, loaded)}})
        ctx.log.info("%s\n%s", self.config.title, table)
