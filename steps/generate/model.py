"""Generation steps: problems per domain, one response per problem, n candidates per problem.

    generate.problems    {instruction, id[, answer, domain]}     Magpie-style or programmatic
    generate.responses   {instruction, response, id, ...}        one answer each (SFT data; greedy by default)
    generate.candidates  {instruction, responses: [...], id, ...} n independent samples each

Every step writes a second Dataset `failed`: the rows set aside (backend error, timeout, cut
off at the token budget, empty text, duplicate, outside the length bounds) with the reason.
Nothing empty or None is passed on. Generation runs in checkpointed shards (`ctx.map_shards`
via `steps/backends/rows.py`), so a killed step resumes at its last finished shard.
"""
from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Literal

from pydantic import Field

from engine.artifacts import Dataset, Model
from engine.errors import StepError
from engine.step import In, Step, StepConfig, register
from steps.backends.base import BackendConfig, Sampling, served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD

# ---------------------------------------------------------------------------- Magpie templates
# Pre-query templates: the chat up to the point where the user's text would start. The model,
# given only this, writes a plausible user turn (a problem), which ends at `stop`.
# BOS is left out on purpose: backends tokenize plain-text prompts with the tokenizer's special
# tokens (vLLM and transformers both add BOS for Llama-3 and DeepSeek-R1-Distill), so writing
# it here would double it.
PRE_QUERY_TEMPLATES: dict[str, dict[str, Any]] = {
    "llama3": {
        "template": "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\n",
        "stop": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"],
    },
    "qwen2": {
        "template": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        "stop": ["<|im_end|>", "<|im_start|>", "<|endoftext|>"],
    },
    "qwen2.5": {
        "template": "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n",
        "stop": ["<|im_end|>", "<|im_start|>", "<|endoftext|>"],
    },
    "deepseek-r1-distill": {
        "template": "{system}<｜User｜>",
        "stop": ["<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<｜User｜>"],
    },
}

DOMAIN_TOPICS = {
    "algebra": "algebra (equations, inequalities, polynomials, functions, systems of equations)",
    "calculus": "calculus (limits, derivatives, integrals, series, optimisation)",
    "geometry": "geometry (plane and solid figures, areas, volumes, angles, coordinates, similarity)",
    "statistics": "statistics and probability (distributions, expectation, counting probabilities, data summaries)",
    "number_theory": "number theory (divisibility, primes, modular arithmetic, gcd and lcm, digits)",
    "discrete": "discrete mathematics (combinatorics, graphs, recurrences, logic, sets)",
}


def domain_system_prompt(domain: str) -> str:
    topic = DOMAIN_TOPICS.get(domain, domain.replace("_", " "))
    return (
        f"You are an AI assistant designed to provide helpful, step-by-step guidance on solving {topic} problems. "
        f"The user will ask you a wide range of challenging {domain.replace('_', ' ')} questions with a single, "
        "verifiable final answer.\nYour purpose is to assist users in understanding mathematical concepts, "
        "working through the problem, and arriving at the correct solution."
    )


def template_for_model(model: str) -> str | None:
    """The built-in template name for a model id, or None when it has none."""
    m = model.lower()
    if "deepseek-r1-distill" in m:
        return "deepseek-r1-distill"  # before qwen/llama: R1-Distill-Qwen is not Qwen's template
    if "llama-3" in m or "llama3" in m:
        return "llama3"
    if "qwen2.5" in m or "qwen-2.5" in m:
        return "qwen2.5"
    if "qwen2" in m or "qwen-2" in m:
        return "qwen2"
    return None


_PLACEHOLDER = "\x00MAGPIE-QUERY\x00"


def template_from_chat_template(tokenizer: Any, system: str) -> tuple[str, list[str]]:
    """Derive (pre-query template, stop strings) from a tokenizer's chat template.

    Renders a system + user exchange with a placeholder user text and cuts at it: what comes
    before is the pre-query template; what follows up to the end of the line is where the
    user turn ends (used as a stop string).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise StepError("generate.problems: model has no chat template and no built-in pre-query template; "
                        "set pre_query_template (with {system}) and stop in the step config")
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": _PLACEHOLDER}]
    try:
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    except Exception:  # templates that reject a system turn
        text = tokenizer.apply_chat_template(msgs[1:], tokenize=False, add_generation_prompt=False)
    prefix, _, after = text.partition(_PLACEHOLDER)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and prefix.startswith(bos):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:  # the tokenizer adds BOS itself
            prefix = prefix[len(bos):]
    end = after.strip().splitlines()[0].strip() if after.strip() else ""
    stop = [end] if end else []
    if tokenizer.eos_token and tokenizer.eos_token not in stop:
        stop.append(tokenizer.eos_token)
    return prefix, stop


def normalise(text: str) -> str:
    """Key for normalised deduplication: case, spacing and final punctuation do not count."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(r"\s+", "", t)
    return t.rstrip(".?!。？！")


def clean_magpie_query(text: str) -> str:
    """Strip what a pre-query sample drags along past the user turn (Magpie's assistant stops)."""
    t = text.strip()
    t = re.sub(r"\s*(assistant|Assistant)\s*:?\s*$", "", t)
    return t.strip()


# ---------------------------------------------------------------------------- shared helpers
def resolve_model(ctx: Any, config: Any, slot: str = "model", field: str = "model") -> str:
    """A bound Model input wins over the config's model path / Hub id / served name."""
    bound = ctx.inputs.get(slot) if isinstance(ctx.inputs, dict) else None
    if bound is not None:
        return str(bound.path)
    name = getattr(config, field, None)
    if not name:
        raise StepError(f"{ctx.step_name}: {field}: no model given; bind input `{slot}` from a step or set "
                        f"`{field}:` to a local model directory or a Hub id")
    return str(name)


def load_backend(config: BackendConfig, model: str):
    """Indirection so tests can substitute an in-process backend."""
    from steps.backends import load_backend as _load

    return _load(config, model)


def instruction_column(ctx: Any, rows: list[dict[str, Any]], configured: str | None, slot: str = "problems") -> str:
    if configured:
        col = configured
    else:
        cols = set(rows[0]) if rows else set()
        col = "instruction" if "instruction" in cols else "problem" if "problem" in cols else "instruction"
    for i, r in enumerate(rows):
        if col not in r:
            raise StepError(f"{ctx.step_name}: input {slot}: row {i} has no column {col!r} "
                            f"(columns: {', '.join(sorted(r))}); set instruction_column")
    return col


def problem_rows(ctx: Any, slot: str, configured: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Input problems as (usable rows normalised to have `instruction` and `id`, set-aside rows)."""
    rows = ctx.inputs[slot].read()
    col = instruction_column(ctx, rows, configured, slot)
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


def chat_prompt(instruction: str, system: str | None, chat: bool):
    if not chat:
        return instruction
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": instruction}]


class _ModelStep(Step):
    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        return served_model_problem(self.config.backend, bound, "model", "model")


class _GenConfig(StepConfig):
    model: str | None = None
    backend: BackendConfig = BackendConfig()
    system_prompt: str | None = None
    chat: bool = True  # render with the model's chat template; False sends the raw instruction
    top_p: float = 1.0
    max_new_tokens: int = 2048
    stop: list[str] = Field(default_factory=list)
    retries: int = Field(2, ge=0)
    max_failed_fraction: float = MAX_FAILED_FIELD
    keep_truncated: bool = False  # a response cut at max_new_tokens is set aside unless True
    instruction_column: str | None = None  # default: `instruction`, else `problem`
    passthrough: list[str] = Field(default_factory=lambda: ["answer", "domain"])
    shard_size: int | None = Field(None, ge=1)  # default: backend.shard_size
    seed: int = 0


def _run_generation(step: Step, ctx: Any, n: int, name: str) -> tuple[list[tuple[dict, list[str]]], list[dict]]:
    from steps.backends.rows import generate_rows

    c = step.config
    records, bad = problem_rows(ctx, "problems", c.instruction_column)
    model = resolve_model(ctx, c)
    sampling = Sampling(temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                        stop=list(c.stop), n=n, seed=c.seed)
    ok: list[tuple[dict, list[str]]] = []
    failed = list(bad)
    if records:
        backend = load_backend(c.backend, model)
        try:
            res = generate_rows(ctx, backend, records, prompt_of=lambda r: chat_prompt(r["instruction"], c.system_prompt, c.chat),
                                sampling=sampling, retries=c.retries, shard_size=c.shard_size or c.backend.shard_size,
                                name=name, keep_truncated=c.keep_truncated, max_failed_fraction=c.max_failed_fraction)
        finally:
            backend.close()
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
    ctx.log.info("candidates: %d/%d prompts (%.0f%%) got %d identical samples", same, len(candidate_sets), 100 * share, n)
    if share > IDENTICAL_WARN:
        ctx.log.warning("candidates: %d/%d prompts got %d identical samples at temperature > 0; is the server "
                        "sampling? (transformers serve samples only when the model's generation_config.json "
                        "says do_sample: true)", same, len(candidate_sets), n)
        ctx.note(f"{same}/{len(candidate_sets)} prompts: {n} identical candidates")
    return share


def _keep(record: dict[str, Any], passthrough: list[str]) -> dict[str, Any]:
    return {k: record[k] for k in passthrough if k in record and k not in ("instruction", "id")}


# ---------------------------------------------------------------------------- generate.responses
@register("generate.responses")
class GenerateResponses(_ModelStep):
    """One response per problem (greedy by default, like Magpie's gen_res) → SFT rows."""

    version = "1"
    deterministic = False  # vLLM and remote servers do not promise bitwise-equal text

    class Config(_GenConfig):
        temperature: float = 0.0

    inputs = {"problems": Dataset, "model": In(Model, required=False)}
    outputs = {"responses": Dataset, "failed": Dataset}

    def run(self, ctx):
        ok, _ = _run_generation(self, ctx, n=1, name="responses")
        rows = [{"instruction": r["instruction"], "response": texts[0], "id": r["id"], **_keep(r, self.config.passthrough)}
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
        temperature: float = 0.8

    inputs = {"problems": Dataset, "model": In(Model, required=False)}
    outputs = {"candidates": Dataset, "failed": Dataset}

    def run(self, ctx):
        if self.config.n > 1 and self.config.temperature <= 0:
            ctx.log.warning("temperature 0 with n=%d: every candidate is the same greedy answer", self.config.n)
        ok, _ = _run_generation(self, ctx, n=self.config.n, name="candidates")
        if self.config.n > 1 and self.config.temperature > 0:
            check_sampling(ctx, [texts for _, texts in ok], self.config.n)
        rows = [{"instruction": r["instruction"], "responses": texts, "id": r["id"], **_keep(r, self.config.passthrough)}
                for r, texts in ok]
        ctx.write_dataset("candidates", rows)


# ---------------------------------------------------------------------------- generate.problems
def _synthetic_version() -> str:
    from steps.problems.synthetic import Synthetic  # light: random, fractions, pydantic

    return Synthetic.version


@register("generate.problems")
class GenerateProblems(Step):
    """Problems for one domain: Magpie-style from a model's pre-query template, or programmatic."""

    # programmatic mode draws from problems.synthetic's generators: their version is part of ours,
    # so a change there reruns these steps instead of serving stale problems from the cache
    version = f"1+synthetic{_synthetic_version()}"
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

    def describe(self) -> str:
        return f"{self.config.count} {self.config.domain} problems ({self.config.mode})"

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
        """Draw from the synthetic generators of steps/problems/synthetic.py until `count` problems pass
        the filters; every answer is re-checked by the domain's independent checker."""
        import random

        from steps.problems import synthetic as gen

        c = self.config
        if c.domain not in gen.MAKERS:
            raise StepError(f"{ctx.step_name}: domain: programmatic mode has no generator for {c.domain!r}; "
                            f"expected one of {', '.join(gen.MAKERS)}")
        make = gen.MAKERS[c.domain]
        rng = random.Random(f"{c.seed}:{c.domain}")  # the same stream problems.synthetic uses
        kept: list[dict] = []
        failed: list[dict] = []
        counts: dict[str, int] = {"drawn": 0}
        seen_exact: set[str] = set()
        seen_norm: set[str] = set()
        budget = max(2000, 50 * c.count)
        while len(kept) < c.count and counts["drawn"] < budget:
            need = c.count - len(kept)
            cands = []
            for _ in range(min(need, budget - counts["drawn"])):
                problem, answer, think = make(rng, c.difficulty)
                counts["drawn"] += 1
                if not gen.verify_answer(c.domain, problem, answer):
                    counts["unverified"] = counts.get("unverified", 0) + 1
                    failed.append({"id": f"draw_{counts['drawn']:07d}", "instruction": problem,
                                   "reason": "unverified: the independent checker disagrees with the answer"})
                    continue
                cands.append({"instruction": problem.strip(), "draw": f"draw_{counts['drawn']:07d}",
                              "answer": answer, "domain": c.domain, "solution": gen.solution(think, answer)})
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
                raise StepError(f"{ctx.step_name}: pre_query_template: template is custom but no pre_query_template given")
            return c.pre_query_template.replace("{system}", system), list(c.stop)
        if name == "auto":
            name = template_for_model(model) or "chat_template"
        if name == "chat_template":
            from transformers import AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(model)
            except OSError as e:
                raise StepError(f"{ctx.step_name}: model: cannot load the tokenizer of {model!r} to derive a "
                                f"pre-query template ({str(e).splitlines()[0]}); set template or pre_query_template") from None
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
        model = resolve_model(ctx, c)
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
        backend = load_backend(c.backend, model)
        drawn = 0
        try:
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
        finally:
            backend.close()
        for r in kept:
            r.pop("draw", None)
        return kept, failed, counts
