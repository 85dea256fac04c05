"""generate.from_seed: the seed's generateFromSeed.py as a step.

    - id: solutions
      uses: generate.from_seed
      with: {model: Qwen/Qwen3-32B, max_tokens: 4096, temperature: 0.3, n: 4}
      inputs: {problems: "${steps.hardest.data}"}

For every seed problem it asks the model for `n` solutions (prompted to end in \\boxed{}),
extracts each final answer and, when the problem has a reference answer, checks it
(`steps.common.mathcheck.is_correct`: exact rationals, then math-verify). Output rows follow the
OpenMathReasoning columns (`problem`, `expected_answer`, `generated_solution`,
`generation_model`, `inference_mode`) plus `predicted_answer`, `correct` and `sample`; the
seed rows' other columns are carried along. Samples with a wrong answer are set aside in
`failed` unless `keep_incorrect`; so are backend errors, cut-off and empty generations.
Runs in checkpointed shards (resumes after a kill).
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.artifacts import Dataset, Model, Report
from engine.errors import StepError
from engine.step import In, Step, StepConfig, register
from steps.backends.base import BackendConfig, served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD

OPENMATH_PROMPT = ("Solve the following math problem. Make sure to put the answer (and only answer) inside "
                   "\\boxed{}.\n\n{problem}")
PROBLEM_COLUMNS = ("problem", "instruction", "question")
ANSWER_COLUMNS = ("expected_answer", "answer")


def pick_column(rows: list[dict[str, Any]], configured: str | None, candidates: tuple[str, ...],
                what: str, who: str, required: bool = True) -> str | None:
    """The configured column, else the first candidate the rows have."""
    cols = set(rows[0]) if rows else set()
    if configured:
        if rows and configured not in cols:
            raise StepError(f"{who}: input has no {what} column {configured!r} (columns: {', '.join(sorted(cols))})")
        return configured
    for c in candidates:
        if c in cols:
            return c
    if required and rows:
        raise StepError(f"{who}: input has none of the {what} columns {', '.join(candidates)} "
                        f"(columns: {', '.join(sorted(cols))}); set {what}_column")
    return None


def prompt_for(problem: str, template: str, system: str | None, chat: bool):
    text = template.replace("{problem}", problem)  # not str.format: LaTeX braces stay as they are
    if not chat:
        return text
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


@register("generate.from_seed")
class FromSeed(Step):
    """n solutions per seed problem (the seed's generateFromSeed.py), answers checked against the seed's answer."""

    version = "1"
    deterministic = False  # sampled text (temperature 0.3 by default)

    class Config(StepConfig):
        model: str | None = Field("Qwen/Qwen3-32B", description="a Hub id or local dir; a bound `model` input wins")
        backend: BackendConfig = BackendConfig()
        max_tokens: int = Field(4096, ge=1, description="the seed's --max_tokens")
        temperature: float = Field(0.3, ge=0.0, description="the seed's --temperature")
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

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        return served_model_problem(self.config.backend, bound, "model", "model")

    def run(self, ctx) -> None:
        from steps.generate import model as gen
        from steps.backends.base import Sampling
        from steps.backends.rows import generate_rows

        from steps.common.mathcheck import extract_answer, is_correct

        c = self.config
        who = ctx.step_name or self.name
        if "{problem}" not in c.prompt:
            raise StepError(f"{who}: prompt must contain {{problem}}")
        rows = ctx.inputs["problems"].read()
        pcol = pick_column(rows, c.problem_column, PROBLEM_COLUMNS, "problem", who)
        acol = pick_column(rows, c.answer_column, ANSWER_COLUMNS, "answer", who, required=False)
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
        model = gen.resolve_model(ctx, c)
        sampling = Sampling(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_tokens, n=c.n,
                            stop=list(c.stop), seed=c.seed)
        out: list[dict[str, Any]] = []
        counts: dict[str, Any] = {"problems": len(problems), "samples": 0, "correct": 0, "incorrect": 0,
                                  "unchecked": 0, "no_answer": 0}
        if problems:
            backend = gen.load_backend(c.backend, model)
            try:
                res = generate_rows(ctx, backend, problems,
                                    prompt_of=lambda r: prompt_for(r[pcol], c.prompt, c.system_prompt, c.chat),
                                    sampling=sampling, retries=c.retries, max_failed_fraction=c.max_failed_fraction,
                                    shard_size=c.shard_size or c.backend.shard_size, name="from_seed",
                                    keep_truncated=c.keep_truncated, instruction_of=lambda r: r.get(pcol))
            finally:
                backend.close()
            failed += [dict(f, problem=f.pop("instruction", None)) for f in res.failed]
            counts["generation"] = res.counts
            for rec, texts in res.ok:
                ref = rec.get(acol) if acol else None
                for k, text in enumerate(texts):
                    pred = extract_answer(text)
                    correct = is_correct(pred, ref) if (c.check_answer and ref not in (None, "")) else None
                    counts["samples"] += 1
                    counts["no_answer"] += pred is None
                    counts["unchecked" if correct is None else "correct" if correct else "incorrect"] += 1
                    row = {k2: v for k2, v in rec.items() if k2 != "id"}
                    row.update({"id": rec["id"], "problem": rec[pcol], "expected_answer": ref,
                                "generated_solution": text, "generation_model": model, "inference_mode": "cot",
                                "predicted_answer": pred, "correct": correct, "sample": k})
                    if pcol != "problem":
                        row.pop(pcol, None)
                    if acol and acol != "expected_answer":
                        row.pop(acol, None)
                    if correct is False and not c.keep_incorrect:
                        failed.append({"id": rec["id"], "problem": rec[pcol], "sample": k, "predicted_answer": pred,
                                       "expected_answer": ref, "reason": "wrong answer: does not match the seed's answer"})
                    else:
                        out.append(row)
        counts["kept"] = len(out)
        counts["set_aside"] = len(failed)
        counts["accuracy"] = round(counts["correct"] / (counts["correct"] + counts["incorrect"]), 4) \
            if counts["correct"] + counts["incorrect"] else None
        ctx.write_dataset("data", out)
        ctx.write_dataset("failed", failed)
        ctx.write_metrics("report", {**counts, "model": model, "n": c.n, "temperature": c.temperature,
                                     "max_tokens": c.max_tokens})
        ctx.log.info("from_seed: %d problems -> %d solutions kept, %d set aside", len(problems), len(out), len(failed))
