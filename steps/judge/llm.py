"""filter.llm_judge (an LLM judge for OpenMathReasoning-style rows): an inference model answers each
problem; math-verify decides whether the answer matches the reference, and a judgement model
decides only where math-verify cannot read the answers. Registered under `filter.` because it
filters rows: recipes and keys name it so.

    - id: hard
      uses: filter.llm_judge
      with: {keep: incorrect, inference_model: Qwen/Qwen3-32B}
      inputs: {data: "${steps.openmath.data}"}
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from engine.recipe.artifact_types import Dataset, Model, Report
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.backends import BackendConfig, BackendSpec, Sampling, backend_resources
from steps.backends.base import served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD
from steps.common.chat import fill, prompt
from steps.common.columns import ANSWER_COLUMNS, PROMPT_COLUMNS, pick_column
from steps.common.models import resolve_model
from steps.common.prompts import OPENMATH_PROMPT
from steps.judge.verdict import math_verify_decision, parse_judgement

JUDGE_PROMPT = (
    "You will be given a math problem, a reference answer and a predicted answer. Decide whether the predicted "
    "answer is mathematically equivalent to the reference answer. Ignore formatting differences.\n\n"
    "Problem: {problem}\n\nReference answer: {reference}\n\nPredicted answer: {predicted}\n\n"
    "Reply with one line: \"Judgement: Yes\" if they are equivalent, otherwise \"Judgement: No\"."
)


@register("filter.llm_judge")
class LLMJudge(Step):
    """An inference model answers each problem; math-verify (else a judgement model) decides if it matches the reference.

    A response with no extractable answer is incorrect without asking the judge; the judge
    sees only answers math-verify cannot read (words, \\text{...}, unparseable LaTeX).
    """  # noqa: E501

    version = "1"
    uses_replicas = True
    deterministic = False

    class Config(StepConfig):
        inference_model: str | None = Field("Qwen/Qwen3-32B", description="a bound `inference_model` input wins")
        judgement_model: str | None = Field("Qwen/Qwen3-32B", description="a bound `judgement_model` input wins")
        inference_backend: BackendConfig = BackendConfig()
        judgement_backend: BackendConfig = BackendConfig()
        inference_prompt: str = OPENMATH_PROMPT
        judgement_prompt: str = JUDGE_PROMPT
        chat: bool = True
        max_new_tokens: int = Field(4096, ge=1, description="inference budget")
        judgement_max_new_tokens: int = Field(512, ge=1)
        temperature: float = 0.0
        keep: Literal["incorrect", "correct", "all"] = Field(
            "incorrect", description="rows to pass on: the ones the inference model got wrong (hard), right, or all")
        start: float = Field(0.0, ge=0.0, le=1.0,
                             description="where in the input judging starts, as a fraction of its rows")
        end: float = Field(1.0, ge=0.0, le=1.0, description="where it ends, as a fraction of its rows")
        problem_column: str | None = None
        answer_column: str | None = None
        retries: int = Field(2, ge=0)
        max_failed_fraction: float = MAX_FAILED_FIELD
        keep_truncated: bool = Field(False, description="use generations cut at the token budget "
                                                        "instead of setting them aside")
        shard_size: int | None = Field(None, ge=1)
        seed: int = 0

        @model_validator(mode="after")
        def _range(self):
            if self.start >= self.end:
                raise ValueError(f"start {self.start} must be below end {self.end}")
            return self

    inputs = {"data": Dataset, "inference_model": In(Model, required=False),
              "judgement_model": In(Model, required=False)}
    outputs = {"data": Dataset, "judged": Dataset, "failed": Dataset, "report": Report}
    may_be_empty = ("failed",)  # rows set aside

    def resources(self) -> Resources:
        return backend_resources(self.config.inference_backend, self.config.judgement_backend)

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        c = self.config
        return (served_model_problem(c.inference_backend, bound, "inference_model", "inference_model")
                or served_model_problem(c.judgement_backend, bound, "judgement_model", "judgement_model"))

    def run(self, ctx) -> None:
        c = self.config
        self.who = ctx.step_name or self.name
        self._check_prompts()
        rows = ctx.inputs["data"].read()
        total = len(rows)
        lo, hi = int(total * c.start), int(total * c.end)
        rows = rows[lo:hi]
        where = f"{self.who}: input data"
        self.pcol = pick_column(rows[0] if rows else {}, c.problem_column, PROMPT_COLUMNS, "problem", where,
                                "problem_column")
        self.acol = pick_column(rows[0] if rows else {}, c.answer_column, ANSWER_COLUMNS, "answer", where,
                                "answer_column")
        records = [dict(r, _row=lo + i) for i, r in enumerate(rows)]
        models = (resolve_model(ctx, c, slot="inference_model", field="inference_model", backend=c.inference_backend),
                  resolve_model(ctx, c, slot="judgement_model", field="judgement_model",
                                backend=c.judgement_backend))
        counts = {"rows_total": total, "range": [lo, hi], "rows": len(records), "correct": 0, "incorrect": 0,
                  "by_math_verify": 0, "by_llm_judge": 0, "by_no_answer": 0, "undecided": 0, "failed": 0}
        judged, failed = self._judge_all(ctx, records, models, counts) if records else ([], [])
        self._write(ctx, judged, failed, counts, models)
        ctx.log.info("llm_judge: rows %d-%d of %d: %d correct, %d incorrect (%d by math-verify, %d by the judge), "
                     "%d set aside; kept %d (%s)", lo, hi, total, counts["correct"], counts["incorrect"],
                     counts["by_math_verify"], counts["by_llm_judge"], len(failed), counts["kept"], c.keep)

    def _check_prompts(self) -> None:
        c = self.config
        for name, tmpl, fields in (("inference_prompt", c.inference_prompt, ("{problem}",)),
                                   ("judgement_prompt", c.judgement_prompt, ("{reference}", "{predicted}"))):
            missing = [f for f in fields if f not in tmpl]
            if missing:
                raise StepError(f"{self.who}: {name} must contain {', '.join(missing)}")

    def _judge_all(self, ctx, records, models, counts) -> tuple[list[dict], list[dict]]:
        """Inference, then the judgement model for what math-verify left open. The two roles share
        one loaded backend when they name the same model and backend settings (equal specs)."""
        c = self.config
        inference = BackendSpec(c.inference_backend, models[0])
        judge = BackendSpec(c.judgement_backend, models[1])
        judged, pending, failed = self._infer(ctx, inference, records)
        if judge != inference:
            ctx.release(inference)  # free its memory before the judgement model loads
        if pending:
            decided, undecided = self._ask_judge(ctx, judge, pending)
            judged += decided
            failed += undecided
            counts["undecided"] = len(undecided)
        return judged, failed

    def _infer(self, ctx, backend, records) -> tuple[list[dict], list[dict], list[dict]]:
        """(decided rows, rows for the judge, failed rows) after the inference model's answers."""
        from steps.backends.rows import generate_rows
        from steps.common.mathcheck import extract_answer

        c, pcol = self.config, self.pcol
        res = generate_rows(
            ctx, backend, records, name="inference",
            prompt_of=lambda r: prompt(fill(c.inference_prompt, problem=r[pcol]), None, c.chat),
            sampling=Sampling(temperature=c.temperature, max_new_tokens=c.max_new_tokens, seed=c.seed),
            retries=c.retries, shard_size=c.shard_size or c.inference_backend.shard_size,
            keep_truncated=c.keep_truncated, instruction_of=lambda r: r.get(pcol),
            max_failed_fraction=c.max_failed_fraction)
        failed = [dict(f, problem=f.pop("instruction", None), stage="inference") for f in res.failed]
        judged, pending = [], []
        for rec, texts in res.ok:
            pred = extract_answer(texts[0])
            item = dict(rec, judge_response=texts[0], judge_predicted=pred)
            verdict = math_verify_decision(pred, rec.get(self.acol))
            if pred is None:  # no \boxed{}, <answer> or number at all: nothing for a judge to compare
                judged.append(dict(item, judge_verdict="incorrect", judge_method="no_answer"))
            elif verdict is None:
                pending.append(item)
            else:
                judged.append(dict(item, judge_verdict="correct" if verdict else "incorrect",
                                   judge_method="math_verify"))
        return judged, pending, failed

    def _judgement_text(self, r: dict[str, Any]) -> str:
        predicted = r["judge_predicted"] if r["judge_predicted"] is not None else r["judge_response"][-2000:]
        return fill(self.config.judgement_prompt, problem=r[self.pcol], reference=r.get(self.acol),
                    predicted=predicted)

    def _ask_judge(self, ctx, judge, pending) -> tuple[list[dict], list[dict]]:
        from steps.backends.rows import generate_rows

        c = self.config
        res = generate_rows(
            ctx, judge, pending, name="judgement",
            prompt_of=lambda r: prompt(self._judgement_text(r), None, c.chat),
            sampling=Sampling(temperature=0.0, max_new_tokens=c.judgement_max_new_tokens, seed=c.seed),
            retries=c.retries, shard_size=c.shard_size or c.judgement_backend.shard_size,
            validate=lambda t: None if parse_judgement(t) is not None else "no 'Judgement: Yes/No' line",
            keep_truncated=c.keep_truncated, instruction_of=lambda r: r.get(self.pcol),
            max_failed_fraction=c.max_failed_fraction)
        decided = [dict(rec, judge_verdict="correct" if parse_judgement(texts[0]) else "incorrect",
                        judge_method="llm_judge", judge_output=texts[0]) for rec, texts in res.ok]
        return decided, [dict(f, problem=f.pop("instruction", None), stage="judgement") for f in res.failed]

    def _write(self, ctx, judged, failed, counts, models) -> None:
        c = self.config
        judged.sort(key=lambda r: r["_row"])
        for r in judged:
            counts[r["judge_verdict"]] += 1
            counts["by_" + r["judge_method"]] += 1
            r.pop("_row", None)
        kept = [r for r in judged if c.keep == "all" or r["judge_verdict"] == c.keep]
        counts.update(failed=len(failed), kept=len(kept), keep=c.keep, inference_model=models[0],
                      judgement_model=models[1])
        ctx.write_dataset("data", kept)
        ctx.write_dataset("judged", judged)
        ctx.write_dataset("failed", failed)
        ctx.write_metrics("report", counts)
