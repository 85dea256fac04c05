"""One scheduler for every executor: a node starts as soon as its upstream nodes are done and
its declared resources fit in what is free. No waves: a long step never holds back the
dependents of a short one.

The scheduler knows nothing about keys, caches or executors. It is given two callables:

    prepare(node) -> bool     in the scheduler's thread, when the node's inputs are ready;
                              False when the node is already settled (cached, failed, blocked)
    start(node) -> Future     begin computing it; the node holds its resources until the
                              future is done

so the same loop drives threads on this machine and tasks on a Ray cluster.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Callable, Sequence

from engine.recipe.plan import Node
from engine.recipe.resources import Resources


class Scheduler:
    def __init__(self, nodes: Sequence[Node], capacity: Resources,
                 prepare: Callable[[Node], bool], start: Callable[[Node], Future]):
        self.nodes = list(nodes)  # topological order; ties start in this order
        self.capacity = capacity
        self.prepare, self.start = prepare, start
        chosen = {n.label for n in self.nodes}
        self._waiting_on = {n.label: {u for u in n.upstream() if u in chosen} for n in self.nodes}
        self._dependents: dict[str, list[Node]] = {n.label: [] for n in self.nodes}
        for n in self.nodes:
            for u in self._waiting_on[n.label]:
                self._dependents[u].append(n)

    def need(self, node: Node) -> Resources:
        """A step asking for more CPUs than the whole budget runs alone rather than never."""
        return Resources(min(node.resources.cpus, self.capacity.cpus), node.resources.gpus)

    def run(self) -> None:
        free = self.capacity
        queued: list[Node] = []
        running: dict[Future, Node] = {}
        ready = [n for n in self.nodes if not self._waiting_on[n.label]]
        while ready or queued or running:
            while ready:
                node = ready.pop(0)
                if self.prepare(node):
                    queued.append(node)
                else:  # settled at once (cached, blocked): its dependents may be ready now
                    ready += self._settle(node)
            for node in list(queued):
                if free.cpus < 1e-9 and free.gpus < 1e-9:
                    break  # nothing left to give: 10,000 queued nodes must not be scanned per completion
                if self.need(node).fits(free):
                    queued.remove(node)
                    free -= self.need(node)
                    running[self.start(node)] = node
            if not running:
                if queued:  # nothing runs and nothing fits: the executor's check should have said so
                    raise RuntimeError(f"step {queued[0].label} needs {queued[0].resources}, more than {self.capacity}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                node = running.pop(fut)
                free += self.need(node)
                ready += self._settle(node)

    def _settle(self, node: Node) -> list[Node]:
        """Mark `node` done; return the dependents that have nothing left to wait for."""
        now_ready = []
        for d in self._dependents[node.label]:
            self._waiting_on[d.label].discard(node.label)
            if not self._waiting_on[d.label]:
                now_ready.append(d)
        return now_ready
