"""`recipe reproduce RUN`: re-plan a past run from its record alone. Entries whose key is in
the cache are restored; missing ones are recomputed with the recorded configs (and so the
recorded seeds); output digests are compared for deterministic steps."""
from __future__ import annotations

from pathlib import Path

from engine.cache.names import shown
from engine.cache.records import RunRecord
from engine.cache.store import Store
from engine.recipe import step as registry
from engine.recipe.errors import CacheError
from engine.recipe.plan import Node, Plan, Ref
from engine.run.executors import make_executor
from engine.run.provenance import cpu_model
from engine.run.runner import Runner

from .display import Display


def plan_from_record(record: RunRecord) -> Plan:
    """The plan of the recorded run. A record may come from a remote: a step type, config or input
    that no longer fits is one error naming the run and step."""
    from pydantic import ValidationError

    nodes = []
    folder = str(Path(record.file).resolve().parent)
    labels: set[str] = set()  # of the steps so far: a run's record lists them in topological order
    for n in record.nodes:
        if n.label in labels or not labels.issuperset(n.needs):
            raise CacheError(f"run {record.run_id}: step {n.label} comes twice, or before a step it needs")
        cls = registry.get(n.uses)
        if cls.version != n.version:
            raise CacheError(f"step {n.label}: {n.uses} is now version {cls.version}, the run used "
                             f"{n.version}; check out the code of that run to reproduce it")
        inputs = {k: [_ref(record, n.label, labels, x) for x in v] if isinstance(v, list)
                  else _ref(record, n.label, labels, v) for k, v in n.inputs.items()}
        try:
            config = cls.Config.model_validate(n.config)
        except ValidationError as e:
            error = e.errors()[0]
            where = ".".join(map(str, error["loc"]))
            raise CacheError(f"run {record.run_id}: step {n.label}: its recorded config is no config of "
                             f"{n.uses} v{n.version} ({where}: {error['msg']})") from None
        config._recipe_dir = folder  # relative data paths: from the recipe's folder, as when it ran
        nodes.append(Node(n.label, n.recipe, n.uses, cls, config, inputs, n.needs, f"run {record.run_id}",
                          n.step_id, cls(config).resources()))
        labels.add(n.label)
    return Plan(record.recipe, record.file, nodes, record.profile, record.sets, record.vars)


def _ref(record: RunRecord, label: str, labels: set[str], text) -> Ref | None:
    """A recorded input, "label.output" of an earlier step of the run (or None: an optional slot left empty)."""
    if text is None:
        return None
    source, _, output = text.rpartition(".") if isinstance(text, str) else ("", "", "")
    if source not in labels:
        raise CacheError(f"run {record.run_id}: step {label} reads {shown(text)}, which no earlier step of the "
                         "run makes")
    return Ref(source, output)


def reproduce(args, console) -> int:
    store = Store(args.cache_dir)
    data = store.runs.read(args.run)
    if why := RunRecord.problem(data):  # its recipe name and labels become index names and paths
        raise CacheError(f"run {args.run}: {why}")
    record = RunRecord.from_json(data)
    plan = plan_from_record(record)
    console.print(f"reproducing run {record.run_id} of {record.recipe} ({len(plan.nodes)} steps) into {store.root}")
    display = Display()
    executor = make_executor(getattr(args, "executor", None), args.jobs)
    runner = Runner(plan, store, display=display, executor=executor)
    try:
        results = runner.run()
    finally:
        display.stop()
        executor.close()
    display.summary(results, runner.run_id)
    differ, failed = [], []
    other_hardware = (record.environment or {}).get("cpu", cpu_model()) != cpu_model()
    for n in record.nodes:
        r = results[n.label]
        if r.status in ("failed", "blocked"):
            failed.append(n.label)
        elif n.outputs and r.outputs != n.outputs:
            changed = [k for k in n.outputs if r.outputs.get(k) != n.outputs[k]]
            console.print(f"  [yellow]differs{_why_differs(n.deterministic, other_hardware)}[/] "
                          f"{n.label}: {', '.join(changed)}")
            if n.deterministic:
                differ.append(n.label)
    restored = sum(1 for r in results.values() if r.status == "cached")
    recomputed = sum(1 for r in results.values() if r.status == "ran")
    console.print(f"{restored} restored from cache, {recomputed} recomputed, "
                  f"{len(record.nodes) - len(differ) - len(failed)} match the record, {len(differ)} differ, "
                  f"{len(failed)} failed")
    return 1 if differ or failed else 0


def _why_differs(deterministic: bool, other_hardware: bool) -> str:
    """Training and sampling are bit-identical only on the same hardware, threads and libraries."""
    if deterministic:
        return ""
    return " (trained on other hardware)" if other_hardware else " (step is not deterministic)"
