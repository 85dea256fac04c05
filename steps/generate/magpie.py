"""Magpie's pre-query templates: the chat up to where the user's text would start, so that a
model given only this writes a plausible user turn (a problem). Used by generate.problems."""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from engine.recipe.errors import StepError

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
