"""generate.from_seed: new solutions for seed problems (e.g. OpenMathReasoning's hardest).

    - id: solutions
      uses: generate.from_seed
      with: {model: Qwen/Qwen3-32B, max_tokens: 4096, temperature: 0.3, n: 4}
      inputs: {problems: "${steps.hardest.data}"}

For every seed problem it asks the model for `n` solutions (prompted to end in \\boxed{}),
extracts each final answer and, when the problem has a reference answer, checks it
(`steps.common.mathcheck.is_correct`: exact rationals, then math-verify). Output rows follow the
OpenMathReasoning columns (`problem`, `expected_answer`, `generated_solution`,
`generation_model`, `inference_mode`) plus `predicted_answer`, `correct` and `sample`; the
input rows' other columns are carried along. Samples with a wrong answer are set aside in
`failed` unless `keep_incorrect`; so are backend errors, cut-off and empty generations.
Runs in checkpointed shards (resumes after a kill).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Model, Report
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.backends import BackendConfig, BackendSpec, Sampling, backend_resources
from steps.backends.base import served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD
from steps.common.chat import fill, prompt
from steps.common.columns import ANSWER_COLUMNS, PROMPT_COLUMNS, pick_column
from steps.common.models import model_ref, resolve_model
from steps.common.prompts import OPENMATH_PROMPT


@register("generate.from_seed")
class FromSeed(Step):
    """n solutions per seed problem, each answer checked against the problem's reference answer."""

    version = "2"  # 2: generation_model names the model (Hub id, folder name or digest), never a local path
    deterministic = False  # sampled text (temperature 0.3 by default)
    uses_replicas = True

    class Config(StepConfig):
        model: str | None = Field("Qwen/Qwen3-32B", description="a Hub id or local dir; a bound `model` input wins")
        backend: BackendConfig = BackendConfig()
        max_tokens: int = Field(4096, ge=1, description="most new tokens per solution")
        temperature: float = Field(0.3, ge=0.0, description="sampling temperature")
        top_p: float = 1.0
        n: int = Field(1, ge=1, description="solutions per problem")
        prompt: str = Field(OPENMATH_PROMPT, description="prompt template with {problem}")
        system_prompt: str | None = None
        chat: bool = True
        problem_column: str | None = None
        answer_column: str | None = None
        check_answer: bool = True
        keep_incorrect: bool = False
        unique_problems: bool = Field(True, description="one request per distinct problem text")
        limit: int | None = Field(None, ge=1, description="use only the first N (distinct) problems")
        retries: int = Field(2, ge=0)
        max_failed_fraction: float = MAX_FAILED_FIELD
        keep_truncated: bool = False
        stop: list[str] = Field(default_factory=list)
        shard_size: int | None = Field(None, ge=1)
        seed: int = 0

    inputs = {"problems": Dataset, "model": In(Model, required=False)}
    outputs = {"data": Dataset, "failed": Dataset, "report": Report}
    may_be_empty = ("failed",)  # rows set aside

    def resources(self) -> Resources:
        return backend_resources(self.config.backend)

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        return served_model_problem(self.config.backend, bound, "model", "model")

    def run(self, ctx) -> None:
        c = self.config
        self.who = ctx.step_name or self.name
        if "{problem}" not in c.prompt:
            raise StepError(f"{self.who}: prompt must contain {{problem}}")
        rows = ctx.inputs["problems"].read()
        cols = rows[0] if rows else {}
        where = f"{self.who}: input problems"
        self.pcol = pick_column(cols, c.problem_column, PROMPT_COLUMNS, "problem", where, "problem_column")
        self.acol = pick_column(cols, c.answer_column, ANSWER_COLUMNS, "answer", where, "answer_column", required=False)
        problems, failed = self._problems(rows)
        model = resolve_model(ctx, c, backend=c.backend)
        name = model_ref(ctx, c)  # what rows and the report say: never a path on this machine
        out: list[dict[str, Any]] = []
        counts: dict[str, Any] = {"problems": len(problems), "samples": 0, "correct": 0, "incorrect": 0,
                                  "unchecked": 0, "no_answer": 0}
        if problems:
            res = self._generate(ctx, problems, model)
            failed += [dict(f, problem=f.pop("instruction", None)) for f in res.failed]
            counts["generation"] = res.counts
            for rec, texts in res.ok:
                for k, text in enumerate(texts):
                    self._check(rec, k, text, name, counts, out, failed)
        checked = counts["correct"] + counts["incorrect"]
        counts.update(kept=len(out), set_aside=len(failed),
                      accuracy=round(counts["correct"] / checked, 4) if checked else None)
        ctx.write_dataset("data", out)
        ctx.write_dataset("failed", failed)
        ctx.write_metrics("report", {**counts, "model": name, "n": c.n, "temperature": c.temperature,
                                     "max_tokens": c.max_tokens})
        ctx.log.info("from_seed: %d problems -> %d solutions kept, %d set aside", len(problems), len(out), len(failed))

    def _problems(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The problems to ask for (distinct, up to `limit`) and the rows set aside as empty."""
        c, pcol = self.config, self.pcol
        problems, failed, seen = [], [], set()
        for i, r in enumerate(rows):
            text = r.get(pcol)
            if not isinstance(text, str) or not text.strip():
                failed.append({"id": r.get("id", i), "problem": text, "reason": f"input: empty or missing {pcol}"})
                continue
            if c.unique_problems:
                if text in seen:
                    continue
                seen.add(text)
            problems.append(dict(r, id=r.get("id", i)))
            if c.limit and len(problems) >= c.limit:
                break
        return problems, failed

    def _generate(self, ctx, problems: list[dict[str, Any]], model: str):
        from steps.backends.rows import generate_rows

        c, pcol = self.config, self.pcol
        sampling = Sampling(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_tokens, n=c.n,
                            stop=list(c.stop), seed=c.seed)
        return generate_rows(ctx, BackendSpec(c.backend, model), problems,
                             prompt_of=lambda r: prompt(fill(c.prompt, problem=r[pcol]), c.system_prompt, c.chat),
                             sampling=sampling, retries=c.retries, max_failed_fraction=c.max_failed_fraction,
                             shard_size=c.shard_size or c.backend.shard_size,
                             name="from_seed", keep_truncated=c.keep_truncated, instruction_of=lambda r: r.get(pcol))

    def _check(self, rec: dict[str, Any], k: int, text: str, model: str, counts: dict[str, Any],
               out: list[dict[str, Any]], failed: list[dict[str, Any]]) -> None:
        """Sample k of a problem in OpenMathReasoning's columns, its answer checked against the reference."""
        from steps.common.mathcheck import extract_answer, is_correct

        c, pcol, acol = self.config, self.pcol, self.acol
        ref = rec.get(acol) if acol else None
        pred = extract_answer(text)
        correct = is_correct(pred, ref) if (c.check_answer and ref not in (None, "")) else None
        counts["samples"] += 1
        counts["no_answer"] += pred is None
        counts["unchecked" if correct is None else "correct" if correct else "incorrect"] += 1
        if correct is False and not c.keep_incorrect:
            failed.append({"id": rec["id"], "problem": rec[pcol], "sample": k, "predicted_answer": pred,
                           "expected_answer": ref, "reason": "wrong answer: does not match the seed's answer"})
            return
        row = {key: v for key, v in rec.items() if key != "id"}
        row.update({"id": rec["id"], "problem": rec[pcol], "expected_answer": ref, "generated_solution": text,
                    "generation_model": model, "inference_mode": "cot", "predicted_answer": pred,
                    "correct": correct, "sample": k})
        if pcol != "problem":
            row.pop(pcol, None)
        if acol and acol != "expected_answer":
            row.pop(acol, None)
        out.append(row)
