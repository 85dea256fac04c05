"""generate.problems: problems for one domain, Magpie-style from a model or programmatic.

    generate.problems    {instruction, id[, answer, domain, solution]}

Magpie mode samples user turns from the model's pre-query template (steps/generate/magpie.py);
programmatic mode draws from the six domains' makers (steps/common/domains.py, which
problems.synthetic uses too). Both filter by length and deduplicate (exact and normalised);
the rows set aside go to `failed` with the reason.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Model
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.backends import BackendConfig, BackendSpec, Sampling, backend_resources
from steps.common import domains
from steps.common.models import resolve_model
from steps.generate.magpie import (
    PRE_QUERY_TEMPLATES,
    clean_magpie_query,
    domain_system_prompt,
    normalise,
    template_for_model,
    template_from_chat_template,
)


# ---------------------------------------------------------------------------- generate.problems
@register("generate.problems")
class GenerateProblems(Step):
    """Problems for one domain: Magpie-style from a model's pre-query template, or programmatic."""

    # programmatic mode draws from the six domains' makers: their version is part of ours, so a
    # change there reruns these steps instead of serving stale problems from the cache
    version = f"1+synthetic{domains.VERSION}"
    deterministic = False  # Magpie sampling; programmatic mode alone would be

    class Config(StepConfig):
        domain: str
        count: int = Field(..., ge=0)
        mode: Literal["magpie", "programmatic"] = "magpie"
        id_prefix: str | None = None  # default: the domain → algebra_000001
        seed: int = 0
        # filters (both modes)
        min_chars: int = Field(10, ge=0)
        max_chars: int = Field(2000, ge=1)
        dedup: bool = True  # exact and normalised (case / spacing / final punctuation)
        # programmatic
        difficulty: int = Field(1, ge=1, le=3)
        # magpie
        model: str | None = None
        backend: BackendConfig = BackendConfig()
        template: str = "auto"  # auto | llama3 | qwen2 | qwen2.5 | deepseek-r1-distill | chat_template | custom
        pre_query_template: str | None = None  # with template: custom; may contain {system}
        system_prompt: str | None = None  # default: a domain system prompt
        stop: list[str] = Field(default_factory=list)  # added to the template's own stops
        stop_at_newline: bool = False  # Magpie's early stopping; off: math problems span lines
        temperature: float = 1.0
        top_p: float = 1.0
        max_new_tokens: int = 512
        oversample: float = Field(1.5, ge=1.0)  # draws per missing problem in a round
        max_rounds: int = Field(5, ge=1)

    inputs = {"model": In(Model, required=False)}
    outputs = {"problems": Dataset, "failed": Dataset}
    may_be_empty = ("failed",)  # rows set aside

    uses_replicas = True  # magpie mode; programmatic mode needs no model

    def describe(self) -> str:
        return f"{self.config.count} {self.config.domain} problems ({self.config.mode})"

    def resources(self) -> Resources:
        return backend_resources(self.config.backend) if self.config.mode == "magpie" else Resources()

    def run(self, ctx):
        c = self.config
        prefix = c.id_prefix if c.id_prefix is not None else c.domain
        if c.mode == "programmatic":
            kept, failed, counts = self._programmatic(ctx)
        else:
            kept, failed, counts = self._magpie(ctx)
        rows = []
        for i, r in enumerate(kept[: c.count], 1):
            row = {"instruction": r["instruction"], "id": f"{prefix}_{i:06d}"}
            row.update({k: v for k, v in r.items() if k not in ("instruction", "id", "problem")})
            rows.append(row)
        counts.update(kept=len(rows), requested=c.count)
        if len(rows) < c.count:
            ctx.log.warning("generate.problems[%s]: only %d of %d problems after %s", c.domain, len(rows), c.count,
                            "filters and deduplication")
        ctx.log.info("generate.problems[%s]: %s", c.domain, ", ".join(f"{k}={v}" for k, v in counts.items()))
        ctx.write_dataset("failed", failed)
        ctx.write_dataset("problems", rows)

    # ---------------------------------------------------------------- filtering
    def _filter(self, candidates: list[dict[str, Any]], seen_exact: set[str], seen_norm: set[str],
                kept: list[dict], failed: list[dict], counts: dict[str, int]) -> None:
        c = self.config
        for r in candidates:
            text = r["instruction"]
            reason = None
            if len(text) < c.min_chars:
                reason = f"too_short: {len(text)} < min_chars {c.min_chars}"
            elif len(text) > c.max_chars:
                reason = f"too_long: {len(text)} > max_chars {c.max_chars}"
            elif c.dedup and text in seen_exact:
                reason = "duplicate: exact"
            elif c.dedup and normalise(text) in seen_norm:
                reason = "duplicate: normalised"
            if reason:
                counts[reason.split(":")[0]] = counts.get(reason.split(":")[0], 0) + 1
                failed.append({"id": r.get("draw"), "instruction": text, "reason": reason})
                continue
            seen_exact.add(text)
            seen_norm.add(normalise(text))
            kept.append(r)

    # ---------------------------------------------------------------- programmatic
    def _programmatic(self, ctx):
        """Draw from the domain's maker (steps/common/domains.py) until `count` problems pass the
        filters; every answer is re-checked by the domain's independent checker."""
        from steps.common.draw import solution

        c = self.config
        if c.domain not in domains.MAKERS:
            raise StepError(f"{ctx.step_name}: domain: programmatic mode has no generator for {c.domain!r}; "
                            f"expected one of {', '.join(domains.MAKERS)}")
        draw = domains.domain_draw(c.domain, c.difficulty, c.seed)
        kept, failed, counts = [], [], {"drawn": 0}
        seen_exact: set[str] = set()
        seen_norm: set[str] = set()
        budget = max(2000, 50 * c.count)
        while len(kept) < c.count and counts["drawn"] < budget:
            cands = []
            for _ in range(min(c.count - len(kept), budget - counts["drawn"])):
                problem, answer, think = draw()
                counts["drawn"] += 1
                tag = f"draw_{counts['drawn']:07d}"
                if not domains.verify_answer(c.domain, problem, answer):
                    counts["unverified"] = counts.get("unverified", 0) + 1
                    failed.append({"id": tag, "instruction": problem,
                                   "reason": "unverified: the independent checker disagrees with the answer"})
                    continue
                cands.append({"instruction": problem.strip(), "draw": tag, "answer": answer, "domain": c.domain,
                              "solution": solution(think, answer)})
            self._filter(cands, seen_exact, seen_norm, kept, failed, counts)
        for r in kept:
            r.pop("draw", None)
        return kept, failed, counts

    # ---------------------------------------------------------------- magpie
    def _template(self, ctx, model: str) -> tuple[str, list[str]]:
        c = self.config
        system = c.system_prompt if c.system_prompt is not None else domain_system_prompt(c.domain)
        name = c.template
        if name == "custom" or (name == "auto" and c.pre_query_template):
            if not c.pre_query_template:
                raise StepError(f"{ctx.step_name}: pre_query_template: template is custom "
                                "but no pre_query_template given")
            return c.pre_query_template.replace("{system}", system), list(c.stop)
        if name == "auto":
            name = template_for_model(model) or "chat_template"
        if name == "chat_template":
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(model)
            except OSError as e:
                raise StepError(f"{ctx.step_name}: model: cannot load the tokenizer of {model!r} to derive a "
                                f"pre-query template ({str(e).splitlines()[0]}); "
                                "set template or pre_query_template") from None
            tmpl, stop = template_from_chat_template(tok, system)
            return tmpl, stop + [s for s in c.stop if s not in stop]
        if name not in PRE_QUERY_TEMPLATES:
            raise StepError(f"{ctx.step_name}: template: unknown template {name!r}; expected auto, "
                            f"{', '.join(PRE_QUERY_TEMPLATES)}, chat_template or custom")
        t = PRE_QUERY_TEMPLATES[name]
        return t["template"].replace("{system}", system), t["stop"] + [s for s in c.stop if s not in t["stop"]]

    def _magpie(self, ctx):
        from steps.backends.rows import generate_rows

        c = self.config
        model = resolve_model(ctx, c, backend=c.backend)
        template, stop = self._template(ctx, model)
        if c.stop_at_newline and "\n" not in stop:
            stop = stop + ["\n"]
        ctx.log.info("magpie pre-query template for %s: %r (stop %r)", model, template, stop)
        sampling = Sampling(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                            stop=stop, n=1, seed=c.seed)
        kept: list[dict] = []
        failed: list[dict] = []
        counts: dict[str, int] = {"drawn": 0}
        seen_exact: set[str] = set()
        seen_norm: set[str] = set()
        if c.count == 0:
            return kept, failed, counts
        backend = BackendSpec(c.backend, model)  # loaded once for all rounds in process, by map_shards
        drawn = 0
        for round_ in range(c.max_rounds):
            need = c.count - len(kept)
            if need <= 0:
                break
            draws = [{"id": f"draw_{drawn + j:07d}"} for j in range(math.ceil(need * c.oversample))]
            drawn += len(draws)
            res = generate_rows(ctx, backend, draws, prompt_of=lambda _r: template,
                                sampling=sampling.model_copy(update={"seed": c.seed + round_ * 7_777_777}),
                                retries=0, shard_size=c.backend.shard_size, name=f"magpie_round{round_}",
                                instruction_of=lambda _r: None)
            counts["drawn"] += len(draws)
            for f in res.failed:
                kind = f["reason"].split(":", 1)[0]
                counts[kind] = counts.get(kind, 0) + 1
                failed.append({"id": f["id"], "instruction": None, "reason": f["reason"]})
            cands = []
            for r, texts in res.ok:
                text = clean_magpie_query(texts[0])
                cands.append({"instruction": text, "draw": r["id"], "domain": c.domain})
            self._filter(cands, seen_exact, seen_norm, kept, failed, counts)
        for r in kept:
            r.pop("draw", None)
        return kept, failed, counts
