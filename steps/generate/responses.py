"""generate.responses and generate.candidates: one or n model answers per problem.

    generate.responses   {instruction, response, id, ...}        one answer each (SFT data; greedy by default)
    generate.candidates  {instruction, responses: [...], id, ...} n independent samples each

Both write a second Dataset `failed`: the rows set aside (backend error, timeout, cut off at
the token budget, empty text) with the reason; nothing empty or None is passed on. Generation
runs in checkpointed shards (`ctx.map_shards` via `steps/backends/rows.py`), so a killed step
resumes at its last finished shard.
"""
from __future__ import annotations

from typing import Any

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Model
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.backends import BackendConfig, BackendSpec, Sampling, backend_resources
from steps.backends.base import served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD
from steps.common.chat import prompt
from steps.common.columns import PROMPT_COLUMNS, pick_column
from steps.common.models import resolve_model


# ---------------------------------------------------------------------------- input rows
def problem_rows(ctx: Any, slot: str, configured: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input problems as (usable rows normalised to have `instruction` and `id`, set-aside rows)."""
    rows = ctx.inputs[slot].read()
    if not rows:
        return [], []
    col = pick_column(rows[0], configured, PROMPT_COLUMNS, "prompt", f"{ctx.step_name}: input {slot}",
                      "instruction_column")
    for i, r in enumerate(rows):
        if col not in r:
            raise StepError(f"{ctx.step_name}: input {slot}: row {i} has no column {col!r} "
                            f"(columns: {', '.join(sorted(r))}); set instruction_column")
    ok, bad = [], []
    for i, r in enumerate(rows):
        text = r.get(col)
        rid = r.get("id", i)
        if not isinstance(text, str) or not text.strip():
            bad.append({"id": rid, "instruction": text, "reason": f"input: empty or missing {col}", "attempts": 0,
                        "good_samples": 0})
            continue
        ok.append(dict(r, instruction=text.strip(), id=rid))
    return ok, bad


class _GenConfig(StepConfig):
    model: str | None = None
    backend: BackendConfig = BackendConfig()
    system_prompt: str | None = None
    chat: bool = True  # render with the model's chat template; False sends the raw instruction
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(2048, ge=1)
    stop: list[str] = Field(default_factory=list)
    retries: int = Field(2, ge=0)
    max_failed_fraction: float = MAX_FAILED_FIELD
    keep_truncated: bool = False  # a response cut at max_new_tokens is set aside unless True
    instruction_column: str | None = None  # default: the first of steps.common.columns.PROMPT_COLUMNS
    passthrough: list[str] = Field(default_factory=lambda: ["answer", "domain"])
    shard_size: int | None = Field(None, ge=1)  # default: backend.shard_size
    seed: int = 0


def _run_generation(step: Step, ctx: Any, n: int, name: str) -> tuple[list[tuple[dict, list[str]]], list[dict]]:
    from steps.backends.rows import generate_rows

    c = step.config
    records, bad = problem_rows(ctx, "problems", c.instruction_column)
    model = resolve_model(ctx, c, backend=c.backend)
    sampling = Sampling(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                        stop=list(c.stop), n=n, seed=c.seed)
    ok: list[tuple[dict, list[str]]] = []
    failed = list(bad)
    if records:
        res = generate_rows(ctx, BackendSpec(c.backend, model), records,
                            prompt_of=lambda r: prompt(r["instruction"], c.system_prompt, c.chat),
                            sampling=sampling, retries=c.retries, shard_size=c.shard_size or c.backend.shard_size,
                            name=name, keep_truncated=c.keep_truncated, max_failed_fraction=c.max_failed_fraction)
        ok, failed = res.ok, failed + res.failed
    if bad:
        ctx.log.info("%s: %d input rows set aside (empty or missing instruction)", name, len(bad))
    ctx.write_dataset("failed", failed)
    return ok, failed


IDENTICAL_WARN = 0.5  # share of prompts with all-identical candidates above which sampling looks off


def check_sampling(ctx: Any, candidate_sets: list[list[str]], n: int) -> float:
    """Log the share of prompts whose n sampled candidates are all the same text; above half,
    warn and note it in the run summary: the server is likely decoding greedily (a
    generation_config.json without do_sample), so every preference pair would be a tie."""
    if not candidate_sets:
        return 0.0
    same = sum(1 for texts in candidate_sets if len(set(texts)) == 1)
    share = same / len(candidate_sets)
    ctx.log.info("candidates: %d/%d prompts (%.0f%%) got %d identical samples", same, len(candidate_sets),
                 100 * share, n)
    if share > IDENTICAL_WARN:
        ctx.log.warning("candidates: %d/%d prompts got %d identical samples at temperature > 0; is the server "
                        "sampling? (transformers serve samples only when the model's generation_config.json "
                        "says do_sample: true)", same, len(candidate_sets), n)
        ctx.note(f"{same}/{len(candidate_sets)} prompts: {n} identical candidates")
    return share


class _ModelStep(Step):
    uses_replicas = True

    def resources(self) -> Resources:
        return backend_resources(self.config.backend)

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        return served_model_problem(self.config.backend, bound, "model", "model")


def _keep(record: dict[str, Any], passthrough: list[str]) -> dict[str, Any]:
    return {k: record[k] for k in passthrough if k in record and k not in ("instruction", "id")}


# ---------------------------------------------------------------------------- generate.responses
@register("generate.responses")
class GenerateResponses(_ModelStep):
    """One response per problem (greedy by default) → SFT rows."""

    version = "1"
    deterministic = False  # vLLM and remote servers do not promise bitwise-equal text

    class Config(_GenConfig):
        temperature: float = Field(0.0, ge=0)

    inputs = {"problems": Dataset, "model": In(Model, required=False)}
    outputs = {"responses": Dataset, "failed": Dataset}
    may_be_empty = ("failed",)  # rows set aside

    def run(self, ctx):
        ok, _ = _run_generation(self, ctx, n=1, name="responses")
        rows = [{"instruction": r["instruction"], "response": texts[0], "id": r["id"],
                 **_keep(r, self.config.passthrough)}
                for r, texts in ok]
        ctx.write_dataset("responses", rows)


# ---------------------------------------------------------------------------- generate.candidates
@register("generate.candidates")
class GenerateCandidates(_ModelStep):
    """n independent sampled responses per problem (default 5 at temperature 0.8)."""

    version = "1"
    deterministic = False

    class Config(_GenConfig):
        n: int = Field(5, ge=1)
        temperature: float = Field(0.8, ge=0)

    inputs = {"problems": Dataset, "model": In(Model, required=False)}
    outputs = {"candidates": Dataset, "failed": Dataset}
    may_be_empty = ("failed",)  # rows set aside

    def run(self, ctx):
        if self.config.n > 1 and self.config.temperature <= 0:
            ctx.log.warning("temperature 0 with n=%d: every candidate is the same greedy answer", self.config.n)
        ok, _ = _run_generation(self, ctx, n=self.config.n, name="candidates")
        if self.config.n > 1 and self.config.temperature > 0:
            check_sampling(ctx, [texts for _, texts in ok], self.config.n)
        rows = [{"instruction": r["instruction"], "responses": texts, "id": r["id"],
                 **_keep(r, self.config.passthrough)}
                for r, texts in ok]
        ctx.write_dataset("candidates", rows)
