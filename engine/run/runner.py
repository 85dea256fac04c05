"""Run a plan: for each selected node, once its inputs exist, compute its key, reuse the cache
entry if one serves, otherwise run the step through the executor into a staging folder and
commit it. The runner schedules and commits; its collaborators each have one job:

    Selection   which nodes run (--only) and which recompute although cached (--force)
    NodeKeys    each node's KeyParts from its upstream outputs and external files
    Lookup      whether an entry serves a key, and why a node computes
    Provenance  node records, the run record, ctx.run_info
    Scheduler   when a node starts (inputs ready, resources free)
    Executor    where its work runs (local, Ray)
"""
from __future__ import annotations

import json
import shutil
import socket
import time
from concurrent.futures import Future
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any, Callable

from engine.cache.keys import KeyParts
from engine.cache.records import Entry, RunInfo
from engine.cache.reuse import remember_outputs
from engine.cache.secrets import Redactor
from engine.cache.source import code_changed, source_digest
from engine.cache.store import Store
from engine.recipe.errors import StepError
from engine.recipe.plan import Node, Plan
from engine.recipe.resources import Resources
from engine.recipe.step import Step

from . import faults
from .executors import Executor
from .lookup import Lookup
from .model_use import ModelUse
from .node_keys import NodeKeys
from .provenance import Provenance, library_versions, refs_json
from .runid import new_run_id
from .scheduler import Scheduler
from .selection import Selection
from .status import Result
from .step_process import Hooks, StepJob, describe_error, run_job, seed_for
from .threads import in_thread

_HOST = socket.gethostname()


class Runner:
    def __init__(self, plan: Plan, store: Store, *, force: set[str] = frozenset(), only: set[str] | None = None,
                 jobs: int = 1, display=None, run_id: str | None = None, executor: Executor | None = None,
                 rerun_changed_code: bool = False, artifacts_dir: str | Path | None = None,
                 out_dir: str | None = None):
        from engine.run.executors.local import LocalExecutor

        self.plan, self.store, self.display = plan, store, display
        self.executor = executor or LocalExecutor(jobs)
        self.run_id = run_id or new_run_id()
        self.artifacts_dir = artifacts_dir  # where outputs are linked as each entry is committed
        self.out_dir = out_dir  # `--out DIR`: where steps that place files (exports) also copy them
        self.redactor = Redactor()
        self.results: dict[str, Result] = {n.label: Result(n) for n in plan.nodes}
        self.selection = Selection(plan, only, force)
        self.hold = store.hold()  # opened by run(): `recipe gc` spares what this run uses
        self.keys = NodeKeys(self.results, store.stat_cache)
        self.lookup = Lookup(store, self.hold, plan, self.selection, rerun_changed_code)
        self.provenance = Provenance(plan, self.results, self.keys, self.redactor)
        # model replicas that outlive a step (Ray) go once no step still to run names their model
        self.models = ModelUse(plan, self.selection.labels, self.results) if self.executor.keeps_replicas else None
        self.code_changed: list[str] = []  # cached entries reused although their step's code changed
        self.unrecorded: str | None = None  # why the run record could not be written
        self._parts: dict[str, KeyParts] = {}  # label -> its key parts (_prepare to _build)
        self._sealing: dict[str, Future] = {}  # label -> its entry being written (Runner._seal)

    # ------------------------------------------------------------------ scheduling
    def run(self) -> dict[str, Result]:
        """Schedule the selected nodes: each starts once its inputs exist and its resources fit."""
        nodes = [n for n in self.plan.nodes if n.label in self.selection]
        for n in self.plan.nodes:
            if n.label not in self.selection:
                self.results[n.label].status = "skipped"
        self.executor.check(nodes)  # before anything runs: a step that can never fit is a recipe error
        started = time.time()
        self.hold.open()
        if self.display:
            self.display.start(self)
        try:
            Scheduler(nodes, self.executor.capacity(), self._prepare, self._start).run()
        finally:
            try:
                self._finish(started)
            finally:
                self.hold.close()
        return self.results

    def _prepare(self, node: Node) -> bool:
        """In the scheduler's thread: key and cache check. True when the node must compute."""
        res = self.results[node.label]
        blocked = [u for u in node.upstream() if self.results[u].status in ("failed", "blocked", "skipped")
                   and not self.results[u].outputs]
        if blocked:
            res.status, res.error = "blocked", f"upstream {blocked[0]} did not finish"
            self._show("blocked", res)
            return self._settled(node)
        try:
            parts = self.keys.parts(node)
            assert parts is not None
            res.external = parts.external
            resolved, entry = self.lookup.resolve(node, parts)
            res.key = resolved.key
            if entry is not None:
                self._take_cached(res, entry)
                self._place(node, res)
                return self._settled(node)
            res.why = self.lookup.why(node, resolved)
            self._parts[node.label] = parts
            return True
        except Exception as e:  # noqa: BLE001 - reported on the node, never half-committed
            self._fail(res, e)
            self._show("failed", res)
            return self._settled(node)

    def _start(self, node: Node) -> Future:
        return in_thread(self._build, node)

    def _build(self, node: Node) -> None:
        """In the node's driver thread: lock the key, compute through the executor, commit."""
        res = self.results[node.label]
        t0 = time.time()
        parts = self._parts.pop(node.label)
        try:
            with ExitStack() as held:
                held.enter_context(self.store.lock(res.key))
                resolved, entry = self.lookup.resolve(node, parts)
                if entry is not None:  # another process made it
                    res.key = resolved.key
                    self._take_cached(res, entry)
                    self._place(node, res)
                    return
                if node.label in self.lookup.damaged and self.store.has(res.key):
                    self._quarantine(res)
                res.status = "running"
                self._show("running", res)
                entry = self._compute(node, res, resolved)
                self.hold.keep(res.key)
                if entry is not None:  # downstream steps start while the entry is flushed to disk
                    seal = self.store.sealer(res.key, entry)
                    self._sealing[res.label] = in_thread(self._seal, seal, held.pop_all())
                    self._link(entry)
            self._place(node, res)
            res.status = "ran"
        except BaseException as e:  # noqa: BLE001 - reported, never half-committed
            self._fail(res, e)
        finally:
            res.seconds = time.time() - t0
            if res.status in ("ran", "failed"):
                self._show(res.status, res)
            self._settled(node)

    def _settled(self, node: Node) -> bool:
        """Node done with (False: nothing left to compute): models no step still to run names go."""
        gone = self.models.settle(node.label) if self.models else None
        if gone:
            self.executor.release_models(gone)
        return False

    def _take_cached(self, res: Result, data: dict[str, Any]) -> None:
        entry = Entry.from_json(data)
        if code_changed(entry, res.node.step_cls):
            self.code_changed.append(res.node.label)
        res.status = "cached"
        res.notes = entry.notes
        res.outputs = entry.digests()
        res.size = entry.size()
        self._show("cached", res)

    def _place(self, node: Node, res: Result) -> None:
        if node.step_cls.place is Step.place:  # nothing to place: skip building artifacts
            return
        outputs = {name: typ(self.store.output_path(res.key, name), res.outputs[name])
                   for name, typ in node.step_cls.outputs.items()}
        node.step_cls(node.config).place(outputs, self.out_dir)

    # ------------------------------------------------------------------ computing and committing
    def _compute(self, node: Node, res: Result, parts: KeyParts) -> Entry | None:
        """Run the step into a staging folder and place it under its key. Returns the entry to
        seal, or None when another process committed the key first."""
        key = res.key
        staging = self.store.staging(key)
        try:
            start = time.time()
            outputs = self._run_job(node, key, staging)
            end = time.time()
            self.keys.check_read(node)
            files = {name: o.pop("files", {}) for name, o in outputs.items()}
            entry = Entry(
                key=key, uses=node.uses, version=node.step_cls.version, label=node.label, recipe=node.recipe,
                config=parts.config, inputs=parts.inputs, input_refs=refs_json(node.inputs),
                external=parts.external, outputs=outputs, seed=seed_for(node.config, key),
                deterministic=node.step_cls.deterministic, start=start, end=end, seconds=round(end - start, 3),
                host=_HOST, libraries=library_versions(), run_id=self.run_id,
                source=source_digest(node.step_cls), notes=_notes(staging),
                extra={"source_in_key": True} if parts.source is not None else {})
            res.notes = entry.notes
            placed = self.store.place(key, staging, replace=self.selection.forced(node))
        except BaseException as e:
            log = faults.keep_log(self.store.root, staging, key, node.label)  # for the user to read; never an entry
            shutil.rmtree(staging, ignore_errors=True)
            fault = faults.fault_line(e, self.store.root)
            if fault:
                output = faults.written_output(staging, e, list(node.step_cls.outputs))
                raise StepError(f"{fault} while writing {node.label}'s {output}"
                                + (f"; log: {log}" if log else "")) from None
            raise
        if placed:
            remember_outputs(self.store.root, key, files, self.store.stat_cache)
        res.outputs = {k: v["digest"] for k, v in outputs.items()}
        res.size = sum(v["size"] for v in outputs.values())
        return entry if placed else None

    def _run_job(self, node: Node, key: str, staging: Path) -> dict[str, dict[str, Any]]:
        """The step's job through the executor: its outputs' digests, sizes and files."""
        artifacts = {slot: self._artifacts(node, slot) for slot in node.inputs}
        show = (lambda bar: self.display.progress(node.label, bar)) if self.display else None
        # no stat cache for outputs: the staging path is renamed away, its stats never asked again
        job = StepJob(node.step_cls, node.config, artifacts, staging, self.store.scratch(key), key, node.label,
                      RunInfo(lambda: self.provenance.run_info(node, key)), Hooks(self.redactor, show),
                      shards=self.executor.shard_runner(node.resources, artifacts), progress_file=self.executor.remote)
        # a step whose model runs on replicas only coordinates them: the replicas hold its resources
        task = Resources(0, 0) if node.step_cls(node.config).uses_replicas else node.resources
        return self.executor.wait(self.executor.submit(run_job, job, resources=task), staging, show)

    def _artifacts(self, node: Node, slot: str) -> Any:
        value = node.inputs[slot]
        if value is None:
            return None
        arts = []
        for r in value if isinstance(value, list) else [value]:
            up = self.results[r.label]
            out_type = self.plan.by_label[r.label].step_cls.outputs[r.output]
            arts.append(out_type(self.store.output_path(up.key, r.output), up.outputs[r.output]))
        return arts if isinstance(value, list) else arts[0]

    @staticmethod
    def _seal(seal: Callable[[], None], held: ExitStack) -> None:
        with held:  # the key's lock, let go once the key is an entry
            seal()

    def _sealed(self) -> None:
        """Wait for the entries being flushed; a step whose entry could not be written failed."""
        for label, fut in list(self._sealing.items()):  # after Ctrl-C, steps may still be adding theirs
            if (e := fut.exception()) is not None:
                res = self.results[label]
                res.status, res.outputs = "failed", {}
                res.error = faults.commit_fault(e, self.store.root, res.key, res.label) or self.redactor.scrub(
                    f"its entry could not be written: {describe_error(e)}")
        self._sealing.clear()

    def _link(self, entry: Entry) -> None:
        """Its outputs, readable under artifacts/ while the run goes on."""
        if self.artifacts_dir is not None:
            from engine.cache.links import link_outputs

            with suppress(OSError):  # linked again, and reported, at the end of the run
                link_outputs(self.artifacts_dir, self.store.root,
                             [(self.plan.name, entry.label, entry.key, entry.outputs)])

    # ------------------------------------------------------------------ failures
    def _fail(self, res: Result, e: BaseException) -> None:
        res.status = "failed"
        res.error = faults.commit_fault(e, self.store.root, res.key, res.label) or self.redactor.scrub(
            describe_error(e))
        if res.key and not isinstance(e, StepError) and "; log: " not in res.error:
            res.error += f"; log: {faults.failed_log(self.store.root, res.key, res.label)}"

    def _quarantine(self, res: Result) -> None:
        """Under the key's lock: the damaged entry goes aside, never to be served again."""
        where = self.store.quarantine(res.key)
        self._warn(f"{res.label}: cached entry {res.key[:12]} is damaged ({self.lookup.damaged[res.label]}); "
                   f"moved to {where}, recomputing")

    def _warn(self, line: str) -> None:
        if self.display:
            self.display.warn(line)

    def _show(self, event: str, res: Result) -> None:
        if self.display:
            self.display.event(event, res)

    # ------------------------------------------------------------------ afterwards
    def _finish(self, started: float) -> None:
        self._sealed()
        self.store.flush()
        done = {(self.plan.name, r.node.label): r.key for r in self.results.values()
                if r.status in ("cached", "ran") and r.key}
        if done:
            self.store.last_keys.set(done)
        try:
            self.store.runs.write(self.provenance.run_record(self.run_id, self.executor.name, started))
        except OSError as e:  # a read-only cache serves a cached run; a full disk fails the write
            self.unrecorded = faults.fault_line(e, self.store.root) or describe_error(e)


def _notes(staging: Path) -> list[str]:
    from .context import NOTES_FILE

    path = staging / NOTES_FILE
    return json.loads(path.read_text()) if path.exists() else []
