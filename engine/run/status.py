"""What the engine knows of each node of a plan: during a run (`Result`) and before one
(`NodeStatus`, from `preview`: what `recipe plan`, preflight and a read-only cache ask)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.cache.source import CODE_CHANGED, code_changed
from engine.recipe.plan import Node

if TYPE_CHECKING:
    from .runner import Runner


@dataclass(slots=True)  # no __dict__: a plan may have 100,000 nodes
class Result:
    node: Node
    status: str = "pending"  # cached | ran | failed | skipped | blocked
    key: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # name -> digest
    seconds: float = 0.0
    size: int = 0
    error: str | None = None
    why: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # a step's own lines for the summary (ctx.note)

    @property
    def label(self) -> str:
        return self.node.label

    @property
    def step_id(self) -> str:
        return self.node.step_id


@dataclass(slots=True)
class NodeStatus:
    """One node before a run: cached, will run (and why), or waits (on a step that will run)."""

    label: str
    uses: str
    makes: str  # what the step makes, in its own words (`Step.describe`)
    state: str  # cached | will run | waits
    why: list[str] = field(default_factory=list)
    key: str = ""

    @property
    def cached(self) -> bool:
        return self.state == "cached"


def preview(runner: "Runner") -> list[NodeStatus]:
    """Each node's status, in plan order, as a run with this runner would find it. Settles the
    runner's results as it goes (a cached node's outputs key its dependents), so a runner
    that previewed does not run."""
    out = []
    for node in runner.plan.nodes:
        res = runner.results[node.label]
        makes = node.step_cls(node.config).describe()
        parts = runner.keys.parts(node)
        if parts is None:
            ups = [u for u in node.upstream() if not runner.results[u].outputs]
            out.append(NodeStatus(node.label, node.uses, makes, "waits", [f"input from {', '.join(ups[:3])}"]))
            continue
        resolved, entry = runner.lookup.resolve(node, parts)
        res.key = resolved.key
        if entry is not None:
            res.outputs = {k: v["digest"] for k, v in entry["outputs"].items()}
            why = [CODE_CHANGED] if code_changed(entry, node.step_cls) else []
            out.append(NodeStatus(node.label, node.uses, makes, "cached", why, res.key))
        else:
            out.append(NodeStatus(node.label, node.uses, makes, "will run", runner.lookup.why(node, resolved), res.key))
    return out
