"""rank.preferences: score every candidate, keep the best and the worst as a preference pair.

    in   candidates {instruction, responses: [...], id[, answer]}
    out  preferences {instruction, chosen, rejected, score_chosen, score_rejected, id}
         scored      every candidate with its per-scorer scores (for audits and filters)
         skipped     problems that yield no pair, with the reason
         report      metrics.json: counts per reason, pairs, mean margin

Scorers, combined in the order given (the first decides, later ones break its ties):
- `verifiable`: the final answer (steps.common.mathcheck.extract_answer) checked against the row's
  reference answer or, where there is none, the majority answer among the candidates → 1 / 0.
- `reward_model`: a sequence-classification reward model through transformers (ArmoRM-style:
  `output.score` if the model has it, else the first logit), batched by length.
- `llm_judge`: a model through any backend rates each candidate 1-10.
- `format`: 1 when the whole response is `<think>…</think><answer>…</answer>`, else 0 (a cheap
  tie-breaker after `verifiable` for models trained on that format, like the tiny profile's).
- `length`: the response's length in characters, longer wins. A reward model's score is
  continuous, so preference pairs made with one (its highest- against its lowest-scored
  candidate) almost never tie; where no reward model is at hand (a CPU smoke run), `length`
  as the last scorer keeps that shape: two different texts rarely have the same length.
  Reward models favour fuller answers too, but this is a stand-in, not a judge of quality.

The reported score is one number that orders exactly as the combination does: the first
scorer's value plus each later scorer's value squashed into [0, 1) and scaled down by 2 per
level, so "correct with a low reward" still beats "wrong with a high reward".

Where Magpie's scripts go wrong, this does not: a problem whose candidates all score the
same yields no pair (counted, not a random pick), chosen never has the same text as rejected,
a minimum margin is configurable, and ties are broken by candidate position (first wins for
chosen, first wins for rejected), so reruns give the same pairs.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.recipe.artifact_types import Dataset, Model, Report
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.recipe.step import In, Step, StepConfig, register
from steps.backends import BackendConfig, BackendSpec, Sampling, backend_resources
from steps.backends.base import served_model_problem
from steps.backends.rows import MAX_FAILED_FIELD, check_failures
from steps.common.chat import fill, user_messages
from steps.common.models import load_pretrained, load_tokenizer_of, resolve_model

# problems without a pair because a candidate failed, not because the candidates tie
FAILED_REASONS = ("empty_candidate", "judge_failed")

Scorer = Literal["verifiable", "reward_model", "llm_judge", "format", "length"]

DEFAULT_JUDGE_PROMPT = (
    "Please act as an impartial judge. Rate the response to the math problem below for "
    "correctness first, then clarity of reasoning, on a scale of 1 to 10.\n"
    "Reply with exactly one line: Rating: <number>\n\n"
    "[Problem]\n{instruction}\n\n[Response]\n{response}"
)
_RATING_RE = re.compile(r"rating\s*[:=]?\s*\[*\s*(\d+(?:\.\d+)?)", re.I)


def parse_rating(text: str, low: float = 1.0, high: float = 10.0) -> float | None:
    """`Rating: 7` (or a lone number) → 7.0; None when absent or outside [low, high]."""
    m = _RATING_RE.search(text)
    if m is None:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*\.?\s*", text)
    if m is None:
        return None
    v = float(m.group(1))
    return v if low <= v <= high else None


# ---------------------------------------------------------------------------- pairing
def squash(value: float, scorer: str) -> float:
    """Map a scorer's value into [0, 1), monotonically."""
    if scorer in ("verifiable", "format"):
        return 0.5 * value  # 0 or 1 → 0 or 0.5
    if scorer == "llm_judge":
        return 0.999 * (value - 1.0) / 9.0
    if scorer == "length":
        return value / (value + 256.0)  # characters: 256 → 0.5
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, value))))  # reward: logistic, clamped


def combined(values: list[float], scorers: list[str]) -> float:
    """One number that sorts exactly as the tuple `values` does, lexicographically."""
    total = values[0]
    scale = 1.0
    for v, s in zip(values[1:], scorers[1:]):
        scale /= 2.0
        total += scale * min(squash(v, s), 0.999999)
    return total


def choose_pair(texts: list[str], scores: list[float], min_margin: float) -> tuple[int, int] | str:
    """Indices (chosen, rejected), or the reason why there is no pair."""
    if len(texts) < 2:
        return "too_few_candidates"
    if max(scores) == min(scores):
        return "all_tied"
    best = max(range(len(texts)), key=lambda i: (scores[i], -i))
    rivals = [i for i in range(len(texts)) if texts[i].strip() != texts[best].strip() and scores[i] < scores[best]]
    if not rivals:
        return "identical_texts"  # everything below the best is the best's own text again
    worst = min(rivals, key=lambda i: (scores[i], i))
    if scores[best] - scores[worst] < min_margin:
        return "below_margin"
    return best, worst


# ---------------------------------------------------------------------------- scorers
def verifiable_scores(responses: list[str], reference: Any | None, use_majority: bool, min_votes: int
                      ) -> tuple[list[float], str | None, str]:
    """(1/0 per response, the reference used, where it came from: reference|majority|none)."""
    from steps.common.mathcheck import extract_answer, is_correct

    answers = [extract_answer(r) for r in responses]
    source = "reference"
    if reference is None or (isinstance(reference, str) and not reference.strip()):
        reference, source = None, "none"
        if use_majority:
            clusters: list[list[int]] = []  # answers grouped by mathematical equality
            for i, a in enumerate(answers):
                if a is None:
                    continue
                for cl in clusters:
                    if is_correct(a, answers[cl[0]]):
                        cl.append(i)
                        break
                else:
                    clusters.append([i])
            clusters.sort(key=lambda cl: (-len(cl), cl[0]))
            if (clusters and len(clusters[0]) >= min_votes
                    and (len(clusters) == 1 or len(clusters[1]) < len(clusters[0]))):
                reference, source = answers[clusters[0][0]], "majority"
    if reference is None:
        return [0.0] * len(responses), None, source
    return [1.0 if is_correct(a, reference) else 0.0 for a in answers], str(reference), source


def reward_model_scores(model_path: str, pairs: list[tuple[str, str]], batch_size: int, max_length: int,
                        device: str, trust_remote_code: bool = False) -> list[float]:
    """Score (instruction, response) pairs with a sequence-classification reward model, batched."""
    import torch
    from transformers import AutoModelForSequenceClassification

    who = "rank.preferences: reward_model"
    tok = load_tokenizer_of(who, model_path)
    model = load_pretrained(who, "model", model_path, AutoModelForSequenceClassification.from_pretrained,
                            trust_remote_code=trust_remote_code)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    tok.padding_side = "right"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id  # needed to find each row's last token
    chat = bool(getattr(tok, "chat_template", None))

    def render(ins: str, res: str) -> str:
        if chat:
            return tok.apply_chat_template([{"role": "user", "content": ins}, {"role": "assistant", "content": res}],
                                           tokenize=False)
        return f"{ins}\n\n{res}"

    texts = [render(i, r) for i, r in pairs]
    order = sorted(range(len(texts)), key=lambda k: len(texts[k]))  # similar lengths share a batch
    scores = [0.0] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start : start + batch_size]
            enc = tok([texts[k] for k in idx], return_tensors="pt", padding=True, truncation=True,
                      max_length=max_length, add_special_tokens=not chat).to(device)
            out = model(**enc)
            vals = getattr(out, "score", None)
            if vals is None:
                vals = out.logits[:, 0]
            for k, v in zip(idx, vals.float().reshape(len(idx), -1)[:, 0].tolist()):
                scores[k] = float(v)
    del model
    return scores


# ---------------------------------------------------------------------------- the step
@register("rank.preferences")
class RankPreferences(Step):
    """Score candidates (verifiable / reward model / LLM judge) into chosen/rejected pairs."""

    version = "1"
    deterministic = False  # an llm_judge through a GPU server need not repeat itself

    class Config(StepConfig):
        scorers: list[Scorer] = Field(default_factory=lambda: ["verifiable"], min_length=1)
        min_margin: float = Field(0.0, ge=0.0)
        # verifiable
        reference_column: str = "answer"
        majority_fallback: bool = True  # no reference: the majority answer among candidates
        min_majority_votes: int = Field(2, ge=1)
        # reward_model
        reward_model: str | None = None  # path or Hub id; a bound `reward_model` input wins
        reward_batch_size: int = Field(8, ge=1)
        reward_max_length: int = Field(4096, ge=8)
        reward_device: str = "auto"
        reward_trust_remote_code: bool = False  # ArmoRM ships its own model class: set true for it
        # llm_judge
        judge_model: str | None = None  # path, Hub id or served name; a bound `judge_model` input wins
        judge_backend: BackendConfig = BackendConfig()
        judge_prompt: str = DEFAULT_JUDGE_PROMPT  # {instruction} and {response}
        judge_max_new_tokens: int = Field(32, ge=1)
        judge_retries: int = Field(2, ge=0)
        # of the problems (a candidate empty, none at all, or one the judge could not rate), and of the
        # judge's requests
        max_failed_fraction: float = MAX_FAILED_FIELD
        seed: int = 0

        @field_validator("scorers")
        @classmethod
        def _unique(cls, v: list[str]) -> list[str]:
            if len(set(v)) != len(v):
                raise ValueError("each scorer may appear once")
            return v

    inputs = {"candidates": Dataset, "reward_model": In(Model, required=False),
              "judge_model": In(Model, required=False), "references": In(Dataset, required=False)}
    outputs = {"preferences": Dataset, "scored": Dataset, "skipped": Dataset, "report": Report}
    may_be_empty = ("skipped",)  # problems without a pair

    @property
    def uses_replicas(self) -> bool:
        """The judge runs on replicas unless a reward model scores in this step's own task too."""
        return "llm_judge" in self.config.scorers and "reward_model" not in self.config.scorers

    def resources(self) -> Resources:
        return backend_resources(self.config.judge_backend) if "llm_judge" in self.config.scorers else Resources()

    def check_bindings(self, bound: set[str]) -> tuple[str, str] | None:
        return served_model_problem(self.config.judge_backend, bound, "judge_model", "judge_model")

    def _rows(self, ctx) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = ctx.inputs["candidates"].read()
        ok, bad = [], []
        for i, r in enumerate(rows):
            for col in ("instruction", "responses"):
                if col not in r:
                    raise StepError(f"{ctx.step_name}: input candidates: row {i} has no column {col!r} "
                                    f"(columns: {', '.join(sorted(r))}); expected generate.candidates rows")
            resp = r["responses"]
            if not isinstance(resp, list):
                raise StepError(f"{ctx.step_name}: input candidates: row {i}: responses is "
                                f"{type(resp).__name__}, expected a list of strings")
            usable = [x for x in resp if isinstance(x, str) and x.strip()]
            if len(usable) != len(resp):
                bad.append({"id": r.get("id", i), "reason": "empty_candidate",
                            "detail": f"{len(resp) - len(usable)} empty or non-text responses"})
                continue
            ok.append(dict(r, id=r.get("id", i)))
        return ok, bad

    def _references(self, ctx) -> dict[Any, Any]:
        ref = ctx.inputs.get("references")
        if ref is None:
            return {}
        col = self.config.reference_column
        out = {}
        for i, r in enumerate(ref.rows()):
            if "id" not in r or col not in r:
                raise StepError(f"{ctx.step_name}: input references: row {i} needs columns id and {col!r}")
            out[r["id"]] = r[col]
        return out

    # ------------------------------------------------------------------ scoring
    def _judge(self, ctx, rows: list[dict[str, Any]]) -> tuple[list[list[float | None]], dict[Any, str]]:
        from steps.backends.rows import generate_rows

        c = self.config
        model = resolve_model(ctx, c, slot="judge_model", field="judge_model", backend=c.judge_backend)
        items = [{"id": f"{r['id']}#{k}", "row": n, "k": k, "instruction": r["instruction"], "response": resp}
                 for n, r in enumerate(rows) for k, resp in enumerate(r["responses"])]

        def prompt_of(it: dict[str, Any]):
            return user_messages(fill(c.judge_prompt, instruction=it["instruction"], response=it["response"]))

        # loaded by map_shards (once here, or per replica on Ray), or here, beside the reward model
        spec = BackendSpec(c.judge_backend, model)
        backend = spec if self.uses_replicas else spec()
        try:
            res = generate_rows(ctx, backend, items, prompt_of=prompt_of,
                                sampling=Sampling(temperature=0.0, max_new_tokens=c.judge_max_new_tokens, seed=c.seed),
                                retries=c.judge_retries, shard_size=c.judge_backend.shard_size, name="judge",
                                validate=lambda t: (None if parse_rating(t) is not None
                                                    else "no rating 1-10 in the reply"),
                                max_failed_fraction=c.max_failed_fraction)
        finally:
            if backend is not spec:
                backend.close()
        ratings: list[list[float | None]] = [[None] * len(r["responses"]) for r in rows]
        for it, texts in res.ok:
            ratings[it["row"]][it["k"]] = parse_rating(texts[0])
        row_of = {it["id"]: it["row"] for it in items}
        failed: dict[Any, str] = {}
        for f in res.failed:
            failed.setdefault(rows[row_of[f["id"]]]["id"], f["reason"])
        return ratings, failed

    def _scores(self, ctx, rows: list[dict[str, Any]], meta: list[dict[str, Any]]):
        """Per scorer, one value per candidate of every row; and the rows the judge could not rate."""
        c = self.config
        refs = self._references(ctx)
        values: dict[str, list[list[float]]] = {}
        judge_failed: dict[Any, str] = {}
        for scorer in c.scorers:
            if scorer == "verifiable":
                vals = []
                for m, r in zip(meta, rows):
                    ref = refs.get(r["id"], r.get(c.reference_column))
                    v, used, source = verifiable_scores(r["responses"], ref, c.majority_fallback, c.min_majority_votes)
                    m.update(reference=used, reference_source=source)
                    vals.append(v)
                values[scorer] = vals
            elif scorer == "format":
                from steps.common.mathcheck import has_think_answer_format

                values[scorer] = [[1.0 if has_think_answer_format(x) else 0.0 for x in r["responses"]] for r in rows]
            elif scorer == "length":
                values[scorer] = [[float(len(x.strip())) for x in r["responses"]] for r in rows]
            elif scorer == "reward_model":
                values[scorer] = self._rewards(ctx, rows)
            else:
                ratings, judge_failed = self._judge(ctx, rows)
                values[scorer] = [[v if v is not None else 0.0 for v in rr] for rr in ratings]
        return values, judge_failed

    def _rewards(self, ctx, rows: list[dict[str, Any]]) -> list[list[float]]:
        c = self.config
        model = resolve_model(ctx, c, slot="reward_model", field="reward_model")
        pairs = [(r["instruction"], resp) for r in rows for resp in r["responses"]]
        flat = reward_model_scores(model, pairs, c.reward_batch_size, c.reward_max_length, c.reward_device,
                                   c.reward_trust_remote_code) if pairs else []
        vals, pos = [], 0
        for r in rows:
            vals.append(flat[pos : pos + len(r["responses"])])
            pos += len(r["responses"])
        return vals

    def _pairs(self, rows, values, meta, judge_failed, skipped: list[dict[str, Any]]):
        """(preference pairs, every scored row, margins); rows without a pair go to `skipped`."""
        c = self.config
        prefs, scored, margins = [], [], []
        for n, r in enumerate(rows):
            per = {s: values[s][n] for s in c.scorers}
            scores = [combined([per[s][k] for s in c.scorers], list(c.scorers)) for k in range(len(r["responses"]))]
            scored.append({"id": r["id"], "instruction": r["instruction"], "responses": r["responses"],
                           "scores": scores, **{f"score_{s}": per[s] for s in c.scorers}, **meta[n]})
            if r["id"] in judge_failed:
                outcome: tuple[int, int] | str = "judge_failed"
                detail = judge_failed[r["id"]]
            else:
                outcome = choose_pair(r["responses"], scores, c.min_margin)
                detail = None
            if isinstance(outcome, str):
                skipped.append({"id": r["id"], "reason": outcome,
                                "detail": detail or f"scores {', '.join(f'{x:g}' for x in scores)}"})
                continue
            b, w = outcome
            margins.append(scores[b] - scores[w])
            prefs.append({"instruction": r["instruction"], "chosen": r["responses"][b], "rejected": r["responses"][w],
                          "score_chosen": scores[b], "score_rejected": scores[w], "id": r["id"]})
        return prefs, scored, margins

    def run(self, ctx):
        c = self.config
        rows, skipped = self._rows(ctx)
        meta: list[dict[str, Any]] = [{} for _ in rows]
        values, judge_failed = self._scores(ctx, rows, meta)
        prefs, scored, margins = self._pairs(rows, values, meta, judge_failed, skipped)
        reasons: Counter[str] = Counter(s["reason"] for s in skipped)
        total = len(rows) + reasons["empty_candidate"]
        # what failed upstream, as generate.* count their rows: mostly failed fails the step, caching nothing
        failed = [s for s in skipped if s["reason"] in FAILED_REASONS] + [
            {"reason": "no candidates"} for r in rows if not r["responses"]]
        check_failures(ctx, "candidates", total, failed, c.max_failed_fraction)
        metrics = {
            "problems": total, "pairs": len(prefs), "no_pair": dict(sorted(reasons.items())),
            "scorers": list(c.scorers), "mean_margin": (sum(margins) / len(margins)) if margins else None,
        }
        if "verifiable" in values:
            flat = [v for vals in values["verifiable"] for v in vals]
            metrics["candidate_accuracy"] = (sum(flat) / len(flat)) if flat else None
            metrics["reference_sources"] = dict(Counter(m.get("reference_source") for m in meta))
        no_pair = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items()))
        ctx.log.info("rank.preferences: %d problems → %d pairs; no pair: %s", total, len(prefs), no_pair or "none")
        ctx.note(f"{len(prefs)} pair{'' if len(prefs) == 1 else 's'} from {total} prompt{'' if total == 1 else 's'}"
                 + (f"; no pair: {no_pair}" if no_pair else ""))
        ctx.write_dataset("preferences", prefs)
        ctx.write_dataset("scored", scored)
        ctx.write_dataset("skipped", skipped)
        ctx.write_metrics("report", metrics)
