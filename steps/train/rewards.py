"""The R1 verifiable reward (DeepSeek-R1-style training): format first, then correctness.

    0   the response is not `<think>…</think><answer>…</answer>`
    1   well-formed but the answer is wrong
    10  well-formed and the answer is right (checked with steps.common.mathcheck / math-verify)

The three values are configurable. `make_trl_reward` wraps the scorer in the signature trl's
GRPOTrainer calls: `f(prompts, completions, **dataset_columns) -> list[float]`.
This module registers no steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from steps.common.mathcheck import extract_answer, has_think_answer_format, is_correct


@dataclass(frozen=True)
class R1Reward:
    bad_format: float = 0.0
    wrong: float = 1.0
    correct: float = 10.0

    def __call__(self, response: str, answer: Any) -> float:
        if not has_think_answer_format(response):
            return self.bad_format
        return self.correct if is_correct(extract_answer(response), answer) else self.wrong

    def outcome(self, response: str, answer: Any) -> str:
        """'bad_format' | 'wrong' | 'correct' (for logging counts next to the mean)."""
        if not has_think_answer_format(response):
            return "bad_format"
        return "correct" if is_correct(extract_answer(response), answer) else "wrong"


def completion_text(completion: Any) -> str:
    """trl passes a string (standard format) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def make_trl_reward(reward: R1Reward, answer_column: str = "answer",
                    on_batch: Callable[[list[str]], None] | None = None) -> Callable[..., list[float]]:
    """A GRPO reward function reading the reference answer from the dataset column `answer_column`."""

    def r1_reward(prompts, completions, **columns) -> list[float]:
        answers = columns.get(answer_column)
        if answers is None:
            raise KeyError(f"reward needs the dataset column {answer_column!r}; got {sorted(columns)}")
        texts = [completion_text(c) for c in completions]
        if on_batch is not None:
            on_batch([reward.outcome(t, a) for t, a in zip(texts, answers)])
        return [float(reward(t, a)) for t, a in zip(texts, answers)]

    r1_reward.__name__ = "r1_reward"  # trl names the logged metric after the function
    return r1_reward
