"""The scheduler, in process, with stand-in nodes (it reads only a node's label, upstream
labels and resources): a node starts when its inputs are ready and its resources fit, ties
start in plan order, a settled node frees its dependents at once."""
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from engine.recipe.resources import Resources
from engine.run.scheduler import Scheduler


class Node:
    def __init__(self, label: str, after: tuple[str, ...] = (), cpus: float = 1, gpus: float = 0):
        self.label, self.after, self.resources = label, list(after), Resources(cpus, gpus)

    def upstream(self) -> list[str]:
        return self.after


class Log:
    """Records what the scheduler asks for; each started node works `seconds` in a thread."""

    def __init__(self, seconds: float = 0.05, settled: set[str] = frozenset()):
        self.seconds, self.settled = seconds, settled
        self.prepared: list[str] = []
        self.spans: dict[str, tuple[float, float]] = {}
        self.done: set[str] = set()
        self._pool = ThreadPoolExecutor(16)
        self._lock = threading.Lock()

    def prepare(self, node: Node) -> bool:
        assert all(u in self.done for u in node.upstream()), f"{node.label} prepared before its inputs"
        self.prepared.append(node.label)
        if node.label in self.settled:
            self.done.add(node.label)
            return False
        return True

    def start(self, node: Node) -> Future:
        def work():
            t0 = time.monotonic()
            time.sleep(self.seconds)
            with self._lock:
                self.spans[node.label] = (t0, time.monotonic())
                self.done.add(node.label)
        return self._pool.submit(work)

    def most_at_once(self, nodes: list[Node], what: str) -> float:
        """The largest sum of `what` (cpus or gpus) over nodes running at one moment."""
        moments = [t for s in self.spans.values() for t in s]
        return max(sum(getattr(n.resources, what) for n in nodes if n.label in self.spans
                       and self.spans[n.label][0] <= t < self.spans[n.label][1]) for t in moments)


def run(nodes: list[Node], capacity: Resources, **kw) -> Log:
    log = Log(**kw)
    Scheduler(nodes, capacity, log.prepare, log.start).run()
    return log


def test_a_node_starts_when_its_inputs_are_ready_not_when_a_wave_ends():
    nodes = [Node("slow"), Node("fast"), Node("after_fast", ("fast",))]
    log = Log()
    log.seconds = 0.0
    slow_gate, waited = threading.Event(), []
    start = log.start

    def slow():
        waited.append(slow_gate.wait(2))  # False: the gate never opened, after_fast waited for slow
        log.done.add("slow")

    def start_gated(node):
        if node.label == "slow":
            return log._pool.submit(slow)
        fut = start(node)
        if node.label == "after_fast":
            fut.add_done_callback(lambda _: slow_gate.set())  # slow ends only after after_fast ran
        return fut

    Scheduler(nodes, Resources(2, 0), log.prepare, start_gated).run()
    assert waited == [True], "after_fast waited for the unrelated slow node"
    assert log.prepared == ["slow", "fast", "after_fast"] and log.done == {"slow", "fast", "after_fast"}


def test_ties_start_in_plan_order_and_dependents_after_their_inputs():
    nodes = [Node("a"), Node("b"), Node("c", ("a",)), Node("d", ("c", "b")), Node("e")]
    log = run(nodes, Resources(1, 0), seconds=0.01)
    assert log.prepared[:3] == ["a", "b", "e"] and log.prepared.index("d") > log.prepared.index("c")
    starts = sorted(log.spans, key=lambda label: log.spans[label][0])
    assert starts == ["a", "b", "e", "c", "d"]


def test_what_runs_at_once_fits_the_cpus_and_gpus():
    nodes = [Node("a", cpus=2), Node("b", cpus=2), Node("c"), Node("d"), Node("g1", gpus=1), Node("g2", gpus=1)]
    log = run(nodes, Resources(3, 1))
    assert log.most_at_once(nodes, "cpus") <= 3 and log.most_at_once(nodes, "gpus") <= 1
    assert set(log.spans) == {n.label for n in nodes}


def test_a_node_larger_than_the_cpu_budget_runs_alone_rather_than_never():
    nodes = [Node("big", cpus=8), Node("small")]
    log = run(nodes, Resources(2, 0))
    big, small = log.spans["big"], log.spans["small"]
    assert big[1] <= small[0] or small[1] <= big[0]


def test_a_settled_node_frees_its_dependents_without_starting():
    nodes = [Node("cached"), Node("next", ("cached",)), Node("last", ("next",))]
    log = run(nodes, Resources(1, 0), settled={"cached"})
    assert log.prepared == ["cached", "next", "last"] and set(log.spans) == {"next", "last"}


def test_a_node_that_can_never_fit_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="step gpu needs"):
        run([Node("gpu", gpus=2)], Resources(4, 1))
