"""The layer every generation step uses: prompts for a list of records → completions, in
checkpointed shards, with failed rows retried and then set aside (never passed on empty).

    from steps.backends.rows import generate_rows
    result = generate_rows(ctx, BackendSpec(config, model), records, prompt_of=lambda r: [...], sampling=Sampling(n=5),
                           retries=2, name="candidates")
    result.ok       # [(record, [text, ...]), ...]  every text non-empty, exactly sampling.n of them
    result.finish_reasons  # per ok record, each text's finish reason ("stop", "length")
    result.failed   # [{"id", "instruction", "reason", "attempts"}, ...]
    result.counts   # {"rows": .., "ok": .., "failed": .., "retried": .., "reasons": {...}}

A completion fails when the backend reports an error (timeout, server error), when the
token budget cut it off (finish_reason "length", unless `keep_truncated`), when its text is
empty after stripping (unless `keep_empty`), or when `validate(text)` returns a reason. An
evaluation keeps both: a cut-off or empty answer is the model's answer, only an error is not. Only the failed samples of
a row are asked for again, with a fresh seed per attempt, so a greedy row that is cut off
fails the same way (and is set aside with its reason) while a sampled one gets a new draw.

A step passes its `max_failed_fraction` (`MAX_FAILED_FIELD`, default 0.5): more failed rows
than that, or no good row at all, fails the step with the reasons counted ("16/16 failed:
error: server error 400: model 'x' not found"), so nothing is cached and the log is kept;
fewer become a note in the run summary ("3/16 failed"). Never silent.

Each shard's seed is derived from the step seed and the shard's first row, not from what ran
before it, so a resumed run (ctx.map_shards loads finished shards from scratch) produces the
same rows as an uninterrupted one.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pydantic import Field

from engine.cache.secrets import scrub
from engine.recipe.errors import StepError
from engine.recipe.step import EXECUTION_ONLY

from . import BackendSpec
from .base import Backend, Completion, Prompt, Sampling

# Seeds of retries and shards are spread with large odd strides so they never collide.
_SHARD_STRIDE = 1_000_003
_ATTEMPT_STRIDE = 7_919


# not in the key: it decides whether the step fails, never what a successful one writes
MAX_FAILED_FIELD = Field(0.5, ge=0.0, le=1.0, json_schema_extra=EXECUTION_ONLY, description=(
    "fail the step when more than this share of its rows failed, or none succeeded; 0: any failure fails it"))


@dataclass
class RowsResult:
    ok: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)
    finish_reasons: list[list[str | None]] = field(default_factory=list)  # one list per `ok` row
    failed: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


def failure_reason(c: Completion, keep_truncated: bool = False,
                   validate: Callable[[str], str | None] | None = None, keep_empty: bool = False) -> str | None:
    """Why this completion cannot be used, or None when it can."""
    if not c.ok:  # a backend's error may quote a request: no secret goes on into failed rows
        return f"error: {scrub(c.error) if c.error else 'backend error'}"
    if c.finish_reason == "length" and not keep_truncated:
        return "length: cut off at max_new_tokens"
    if not (c.text or "").strip() and not keep_empty:
        return "empty: the model returned no text"
    if validate is not None:
        why = validate(c.text)
        if why:
            return f"invalid: {why}"
    return None


def _row_id(record: dict[str, Any], index: int) -> Any:
    return record.get("id", index)


def generate_shard(
    backend: Backend,
    records: Sequence[dict[str, Any]],
    prompts: Sequence[Prompt],
    sampling: Sampling,
    *,
    retries: int,
    shard_seed: int,
    keep_truncated: bool = False,
    validate: Callable[[str], str | None] | None = None,
    strip: bool = True,
    keep_empty: bool = False,
) -> list[dict[str, Any]]:
    """Generate `sampling.n` good texts for every record of one shard.

    Returns one JSON-able dict per record: {"ok": True, "texts": [...], "finish_reasons": [...], "attempts": k} or
    {"ok": False, "reason": ..., "attempts": k, "texts": [...good ones so far...]}.
    """
    n = max(1, sampling.n)
    good: list[list[str]] = [[] for _ in records]
    finish: list[list[str | None]] = [[] for _ in records]
    last_reason: list[str | None] = [None] * len(records)
    attempts = [0] * len(records)
    pending = list(range(len(records)))
    for attempt in range(retries + 1):
        if not pending:
            break
        # rows missing the same number of samples go in one call
        by_need: dict[int, list[int]] = {}
        for i in pending:
            by_need.setdefault(n - len(good[i]), []).append(i)
        for need, rows in sorted(by_need.items()):
            s = sampling.model_copy(update={"n": need, "seed": shard_seed + attempt * _ATTEMPT_STRIDE})
            try:
                outs = backend.generate([prompts[i] for i in rows], s)
            except StepError:
                raise  # a user mistake (no chat template, bad model) is not a row failure
            except Exception as e:  # a backend that raises fails the whole call: every row gets the reason
                outs = [[Completion(text="", finish_reason="error", error=f"{type(e).__name__}: {e}")] * need
                        for _ in rows]
            if len(outs) != len(rows):
                raise RuntimeError(f"backend returned {len(outs)} results for {len(rows)} prompts")
            for i, comps in zip(rows, outs):
                attempts[i] += 1
                for c in comps[:need]:
                    why = failure_reason(c, keep_truncated, validate, keep_empty)
                    if why is None:
                        good[i].append((c.text or "").strip() if strip else c.text or "")
                        finish[i].append(c.finish_reason)
                    else:
                        last_reason[i] = why
        pending = [i for i in pending if len(good[i]) < n]
    out = []
    for i, rec in enumerate(records):
        if len(good[i]) >= n:
            out.append({"ok": True, "texts": good[i][:n], "finish_reasons": finish[i][:n], "attempts": attempts[i]})
        else:
            out.append({"ok": False, "texts": good[i], "attempts": attempts[i],
                        "reason": last_reason[i] or "no completion returned"})
    return out


def generate_rows(
    ctx: Any,
    backend: Backend | BackendSpec,
    records: Sequence[dict[str, Any]],
    *,
    prompt_of: Callable[[dict[str, Any]], Prompt],
    sampling: Sampling,
    retries: int = 2,
    shard_size: int = 256,
    name: str = "generate",
    keep_truncated: bool = False,
    keep_empty: bool = False,
    strip: bool = True,
    validate: Callable[[str], str | None] | None = None,
    instruction_of: Callable[[dict[str, Any]], Any] = lambda r: r.get("instruction"),
    max_failed_fraction: float | None = None,
) -> RowsResult:
    """Run `generate_shard` over `records` through `ctx.map_shards` and split ok / failed.

    Given a BackendSpec, the model is loaded by map_shards' setup: once in this process, or
    once per replica actor on Ray, so the shards run data-parallel over model replicas."""
    indexed = list(enumerate(records))
    spec = backend if isinstance(backend, BackendSpec) else None

    def work(chunk: list[tuple[int, dict[str, Any]]], loaded: Backend | None = None) -> list[dict[str, Any]]:
        first = chunk[0][0]
        recs = [r for _, r in chunk]
        res = generate_shard(
            loaded if spec else backend, recs, [prompt_of(r) for r in recs], sampling, retries=retries,
            shard_seed=sampling.seed + (first // max(1, shard_size) + 1) * _SHARD_STRIDE,
            keep_truncated=keep_truncated, validate=validate, strip=strip, keep_empty=keep_empty,
        )
        return [dict(r, index=i) for (i, _), r in zip(chunk, res)]

    shards = dict(setup=spec, replica=spec.replica()) if spec else {}
    done = ctx.map_shards(indexed, work, shard_size=max(1, shard_size), name=name, **shards) if indexed else []
    result = _split(done, records, instruction_of)
    ctx.log.info("%s: %d rows, %d ok, %d set aside as failed (%s), %d needed a retry", name,
                 len(records), len(result.ok), len(result.failed),
                 ", ".join(f"{k}={v}" for k, v in result.counts["reasons"].items()) or "none", result.counts["retried"])
    if max_failed_fraction is not None:
        check_failures(ctx, name, len(records), result.failed, max_failed_fraction)
    return result


def _split(done: list[dict[str, Any]], records: Sequence[dict[str, Any]],
           instruction_of: Callable[[dict[str, Any]], Any]) -> RowsResult:
    """Shard results -> ok (record, texts) and failed rows, with counts by reason."""
    result = RowsResult()
    reasons: Counter[str] = Counter()
    retried = 0
    for entry in done:
        rec = records[entry["index"]]
        if entry["attempts"] > 1:
            retried += 1
        if entry["ok"]:
            result.ok.append((rec, entry["texts"]))
            result.finish_reasons.append(entry.get("finish_reasons") or [None] * len(entry["texts"]))
        else:
            kind = entry["reason"].split(":", 1)[0]
            reasons[kind] += 1
            result.failed.append({
                "id": _row_id(rec, entry["index"]),
                "instruction": instruction_of(rec),
                "reason": entry["reason"],
                "attempts": entry["attempts"],
                "good_samples": len(entry["texts"]),
            })
    result.counts = {"rows": len(records), "ok": len(result.ok), "failed": len(result.failed),
                     "retried": retried, "reasons": dict(sorted(reasons.items()))}
    return result


def check_failures(ctx: Any, name: str, total: int, failed: list[dict[str, Any]], max_failed_fraction: float) -> None:
    """Fail the step when more than `max_failed_fraction` of `total` rows failed, or all did
    (unless the fraction is 1.0, which lets every row of an optional stage fail); otherwise put
    the failed count in the run summary."""
    if not failed:
        return
    summary = f"{len(failed)}/{total} failed"
    if len(failed) / total > max_failed_fraction or (len(failed) == total and max_failed_fraction < 1.0):
        raise StepError(f"{ctx.step_name or name}: {name}: {summary}: {failure_summary(failed)} "
                        f"(max_failed_fraction {max_failed_fraction:g})")
    ctx.log.warning("%s: %s: %s", name, summary, failure_summary(failed))
    ctx.note(f"{name}: {summary}")


def failure_summary(failed: list[dict[str, Any]], top: int = 3) -> str:
    """The most common reasons with their counts, attempt counts left out so equal reasons group."""
    reasons = Counter(re.sub(r" \(\d+ attempts?\)$", "", str(f.get("reason", "unknown"))) for f in failed)
    parts = [reason if len(reasons) == 1 else f"{n}x {reason}" for reason, n in reasons.most_common(top)]
    more = len(reasons) - top
    return "; ".join(parts) + (f"; and {more} other reason(s)" if more > 0 else "")
