"""Which models the steps still to run name, so that model replicas kept loaded for a run
(`--executor ray`) go once no step still to run uses their model.

A step names a model through a Model input (known by its content digest once the step that
makes it is done) or through a string field of its config whose name ends in `model` (a Hub
id or a served name: `model`, `judge_model`, `reward_model`). Counted once per step; each
settled step (ran, cached, failed, blocked) lowers the counts of what it named.
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Iterable, Iterator

from engine.recipe.artifact_types import Model
from engine.recipe.plan import Node, Plan, Ref

_Named = tuple[str, str, str]  # ("output", label, output) or ("name", text, "")


class ModelUse:
    """The models named by the chosen steps not settled yet, counted as they settle."""

    def __init__(self, plan: Plan, labels: Iterable[str], results: dict[str, Any]):
        self.results = results  # label -> Result: an output's digest once its step is done
        chosen = set(labels)
        self._named = {n.label: set(_names(n, plan)) for n in plan.nodes if n.label in chosen}
        self._count: Counter[_Named] = Counter(x for named in self._named.values() for x in named)
        self._lock = threading.Lock()

    def settle(self, label: str) -> list[str]:
        """Step `label` is settled: the models (digests, names) that no step still to run names."""
        with self._lock:
            gone = []
            for x in self._named.pop(label, ()):
                self._count[x] -= 1
                if not self._count[x]:
                    del self._count[x]
                    gone.append(x)
            if not gone:
                return []
            live = {self._model(x) for x in self._count}  # another output may hold the same model
            return sorted({m for m in map(self._model, gone) if m and m not in live})

    def _model(self, x: _Named) -> str | None:
        kind, a, b = x
        if kind == "name":
            return a
        res = self.results.get(a)
        return res.outputs.get(b) if res is not None and res.outputs else None


def _names(node: Node, plan: Plan) -> Iterator[_Named]:
    for value in node.inputs.values():
        for r in value if isinstance(value, list) else [value]:
            if isinstance(r, Ref) and issubclass(plan.by_label[r.label].step_cls.outputs[r.output], Model):
                yield ("output", r.label, r.output)
    for field, value in node.config:
        if field.endswith("model") and isinstance(value, str) and value:
            yield ("name", value, "")
