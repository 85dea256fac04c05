"""The step graph of a plan or a run record, as text, Mermaid or Graphviz dot (`recipe dag`).

The same graph feeds `recipe report`. A step whose `foreach` has more than FOLD_OVER
instances is drawn as one node (`responses[×10000]`), as `recipe plan` folds it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

FOLD_OVER = 12


@dataclass
class Box:
    """One node of the drawn graph: a step instance, or a folded group of instances."""

    id: str
    name: str
    uses: str
    members: list[str] = field(default_factory=list)  # instance labels


@dataclass
class Graph:
    title: str
    boxes: list[Box]
    edges: list[tuple[str, str]]  # box id -> box id

    def box_of(self) -> dict[str, Box]:
        return {label: b for b in self.boxes for label in b.members}


def build(title: str, steps: list[tuple[str, str, str, list[str]]], fold_over: int = FOLD_OVER) -> Graph:
    """`steps`: (label, step_id, uses, upstream labels) in topological order."""
    groups: dict[str, list[tuple[str, str, str, list[str]]]] = {}
    for s in steps:
        label, sid = s[0], s[1]
        prefix = label.rsplit("/", 1)[0] + "/" if "/" in label else ""
        groups.setdefault(prefix + (sid or label), []).append(s)
    boxes: list[Box] = []
    for name, members in groups.items():
        parts = [members] if len(members) > fold_over else [[m] for m in members]
        for part in parts:
            shown = f"{name}[×{len(part)}]" if len(part) > 1 else part[0][0]
            boxes.append(Box(f"n{len(boxes)}", shown, part[0][2], [m[0] for m in part]))
    where = {label: b for b in boxes for label in b.members}
    edges: list[tuple[str, str]] = []
    for label, _, _, ups in steps:
        for up in ups:
            if up in where:
                e = (where[up].id, where[label].id)
                if e not in edges and e[0] != e[1]:
                    edges.append(e)
    return Graph(title, boxes, edges)


def from_plan(plan) -> Graph:
    return build(plan.name, [(n.label, n.step_id, n.uses, n.upstream()) for n in plan.nodes])


def as_text(g: Graph) -> str:
    by_id = {b.id: b for b in g.boxes}
    ups: dict[str, list[str]] = {}
    for a, b in g.edges:
        ups.setdefault(b, []).append(by_id[a].name)
    width = max((len(b.name) for b in g.boxes), default=0)
    uses_w = max((len(b.uses) for b in g.boxes), default=0)
    n, e = len(g.boxes), len(g.edges)
    lines = [f"{g.title}: {n} node{'s' * (n != 1)}, {e} edge{'s' * (e != 1)}"]
    for b in g.boxes:
        after = f"  <- {', '.join(ups[b.id])}" if b.id in ups else ""
        lines.append(f"  {b.name:<{width}}  {b.uses:<{uses_w}}{after}".rstrip())
    return "\n".join(lines)


def as_mermaid(g: Graph) -> str:
    def text(s: str) -> str:
        return s.replace('"', "#quot;")

    lines = ["flowchart TD"]
    lines += [f'  {b.id}["{text(b.name)}<br/><small>{text(b.uses)}</small>"]' for b in g.boxes]
    lines += [f"  {a} --> {b}" for a, b in g.edges]
    return "\n".join(lines)


def as_dot(g: Graph, attrs: dict[str, dict[str, str]] | None = None):
    """A graphviz.Digraph; `attrs` adds per-box attributes (colour, tooltip) by box id."""
    import graphviz

    dot = graphviz.Digraph(g.title, graph_attr={"rankdir": "TB", "fontname": "Helvetica"},
                           node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white",
                                      "fontname": "Helvetica", "fontsize": "11"})
    for b in g.boxes:
        extra = dict((attrs or {}).get(b.id, {}))
        dot.node(b.id, extra.pop("label", f"{b.name}\n{b.uses}"), **extra)
    for a, b in g.edges:
        dot.edge(a, b)
    return dot

