"""Which nodes of a plan a run covers (`--only STEP`: those instances and everything upstream)
and which it recomputes although they are cached (`--force STEP`)."""
from __future__ import annotations

from engine.recipe.plan import Node, Plan


class Selection:
    def __init__(self, plan: Plan, only: set[str] | None = None, force: set[str] = frozenset()):
        self.force = set(force)
        self.labels = _upstream_closure(plan, only) if only else plan.by_label.keys()  # not a copy: 100,000 labels

    def __contains__(self, label: str) -> bool:
        return label in self.labels

    def forced(self, node: Node) -> bool:
        return node.step_id in self.force or node.label in self.force


def _upstream_closure(plan: Plan, only: set[str]) -> set[str]:
    chosen: set[str] = set()
    stack = [n.label for n in plan.nodes if n.step_id in only or n.label in only]
    while stack:
        label = stack.pop()
        if label not in chosen:
            chosen.add(label)
            stack += plan.by_label[label].upstream()
    return chosen
