"""problems.synthetic: problems in six domains (algebra ... discrete) with exact answers.

Every record is `{"id", "problem", "answer", "domain", "solution"}` with `solution` written as
`<think>worked steps</think><answer>answer</answer>`, so it doubles as SFT data. Answers are
integers or reduced fractions ("7", "-3", "17/5"). Each generated answer is recomputed by a
second, independent route before it is kept (steps/common/domain_checks.py: enumeration, stencils,
the shoelace formula; never the maker's formula again); a disagreement is a bug and stops the
step. Problems are unique by text (and optionally unseen in an `exclude` dataset, e.g. the
training set when drawing a held-out set).
"""
from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from engine.recipe.artifact_types import Dataset
from engine.recipe.errors import StepError
from engine.recipe.step import In, Step, StepConfig, register
from steps.common.domain_checks import CHECKERS
from steps.common.domains import DOMAINS, VERSION, domain_draw, verify_answer
from steps.common.draw import draw_unique, excluded, solution

# the six-domain generation workflow's per-domain counts at full scale (recipes/deepseek_all_domains.yaml)
FULL_SCALE_COUNTS = {"algebra": 10000, "calculus": 10000, "geometry": 6000,
                     "statistics": 6000, "number_theory": 4000, "discrete": 8000}


@register("problems.synthetic")
class Synthetic(Step):
    """Six-domain problems (algebra ... discrete) with exact answers checked by a second route."""

    version = VERSION  # the makers' (steps/common/domains.py): its rows are theirs

    class Config(StepConfig):
        counts: dict[str, int] = Field(
            default_factory=lambda: {d: 100 for d in DOMAINS},
            description="problems per domain (the six-domain generation workflow uses "
                        + ", ".join(f"{k}: {v}" for k, v in FULL_SCALE_COUNTS.items()) + ")",
        )
        domain: str | None = Field(None, description="generate one domain only (with `count`), e.g. in a foreach")
        count: int | None = Field(None, ge=0, description="problem count when `domain` is set")
        difficulty: int = Field(1, ge=1, le=3, description="1 = small numbers, 3 = larger ranges and degrees")
        seed: int = 0
        dedup: bool = True

        @field_validator("counts")
        @classmethod
        def _known(cls, v):
            unknown = sorted(set(v) - set(DOMAINS))
            if unknown:
                raise ValueError(f"unknown domain(s) {unknown}; expected some of {list(DOMAINS)}")
            if any(n < 0 for n in v.values()):
                raise ValueError("counts must be non-negative")
            return v

        @model_validator(mode="after")
        def _single(self):
            if self.domain is not None:
                if self.domain not in DOMAINS:
                    raise ValueError(f"domain {self.domain!r} is not one of {list(DOMAINS)}")
                if self.count is None:
                    raise ValueError("count is required when domain is set")
            return self

        def plan(self) -> dict[str, int]:
            return {self.domain: self.count} if self.domain is not None else dict(self.counts)

    inputs = {"exclude": In(Dataset, required=False)}
    outputs = {"problems": Dataset}

    def run(self, ctx):
        c = self.config
        seen = excluded(ctx.inputs.get("exclude"), "problems.synthetic")
        rows = []
        for domain, count in c.plan().items():
            draw = domain_draw(domain, c.difficulty, c.seed)
            if c.dedup:
                drawn = draw_unique(draw, count, seen, "problems.synthetic", domain)
            else:
                drawn = [draw() for _ in range(count)]
            for i, (problem, answer, think) in enumerate(drawn):
                if not verify_answer(domain, problem, answer):
                    raise StepError(f"problems.synthetic: {domain}: generated answer {answer!r} for {problem!r} "
                                    f"disagrees with the independent check ({CHECKERS[domain](problem)!r})")
                rows.append({"id": f"{domain}_{i:05d}", "problem": problem, "answer": answer,
                             "domain": domain, "solution": solution(think, answer)})
        ctx.log.info("generated %d problems over %d domain(s)", len(rows), len(c.plan()))
        ctx.write_dataset("problems", rows)
