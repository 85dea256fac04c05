"""The `recipe` subcommands. Each takes the parsed arguments and returns an exit code."""
from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
import typing
from typing import Any

from rich.table import Table

from engine.cache.runs import DamagedRecord, prefixed
from engine.cache.store import Store
from engine.recipe.errors import CacheError, RecipeError, did_you_mean

from . import fastpath
from .display import FOLD_OVER, Display, count_statuses, escape, groups, human_size, plural, start_line
from .display import console as _console

console = _console()


def _plan(args):
    from engine.recipe.plan import plan_file

    gc.freeze()  # the engine's modules live until exit: collections while planning need not walk them
    with no_collections():
        plan = plan_file(args.file, profile=args.profile, sets=args.sets)
    gc.freeze()  # nor the plan, which lives until exit too
    if plan.warnings:
        from rich.console import Console

        err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)
        for line in plan.warnings:
            err.print(f"warning: {line}")
    return plan


def _check_step_names(plan, names: list[str], option: str) -> None:
    """`--only`/`--force` name a step id or an instance label of the plan; a typo is an error."""
    ids = sorted({n.step_id for n in plan.nodes})
    for name in names:
        if name not in ids and name not in plan.by_label:
            step_id = name.partition("[")[0]  # an instance: the closest of that step's instances
            close = [label for label in plan.by_label if label.startswith(f"{step_id}[")] if "[" in name else ids
            raise RecipeError(f"{option} {name}: no step {name!r} in recipe {plan.name}"
                              f"{did_you_mean(name, close)} (steps: {', '.join(ids)})", plan.file)


@contextlib.contextmanager
def no_collections():
    """Planning and previewing make next to no reference cycles, but a plan of 100,000 instances
    makes millions of objects: collections while it grows walked them again and again (30% of
    the time of `recipe plan`)."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _make_folder(path, what: str) -> None:
    """A folder the run writes into, made now: a path that cannot be one fails here, not in every step."""
    try:
        os.makedirs(path, exist_ok=True)
        return
    except FileExistsError:
        why = "a file, not a folder"
    except OSError as e:
        why = e.strerror.lower()
    raise RecipeError(f"cannot use {os.path.abspath(path)} as {what}: {why}")


def cmd_run(args) -> int:
    from engine.run.executors import make_executor
    from engine.run.runid import new_run_id
    from engine.run.runner import Runner

    from .finish import Outcome, code_changed_line, finish

    plan = _plan(args)
    _check_step_names(plan, args.only, "--only")
    _check_step_names(plan, args.force, "--force")
    _make_folder(args.cache_dir, "the cache folder (--cache-dir, RECIPE_CACHE_DIR)")
    if args.out:
        _make_folder(args.out, "the --out folder")
    store = Store(args.cache_dir)
    run_id = new_run_id()
    display = Display(console, quiet=args.quiet, show_all=args.all)
    from .preflight import check

    # every known-at-start problem at once, before anything (an executor included) starts
    check(Runner(plan, store, force=set(args.force), only=set(args.only) or None))
    if store.read_only:
        _read_only_check(Runner(plan, store, force=set(args.force), only=set(args.only) or None,
                                rerun_changed_code=args.rerun_changed_code))
    from engine.run.capture import set_verbose

    set_verbose(getattr(args, "verbose", False))  # before an executor starts its workers
    executor = make_executor(_executor_spec(args, plan), args.jobs, log=store.runs.folder / f"{run_id}.ray.log")
    console.print(start_line(run_id, plan.name, len(plan.nodes), plan.profile, executor.name), markup=False)
    if getattr(executor, "output", None):
        console.print(f"  Ray's own output goes to {executor.output.path}", markup=False, soft_wrap=True)
    runner = Runner(plan, store, force=set(args.force), only=set(args.only) or None, display=display,
                    run_id=run_id, executor=executor, rerun_changed_code=args.rerun_changed_code,
                    artifacts_dir=args.artifacts_dir, out_dir=args.out)
    snapshot = fastpath.observe(args, plan)
    gc.freeze()  # imports and the plan live until exit: full collections need not walk them again
    try:
        results = runner.run()
    finally:
        display.stop()
        executor.close()
    if not args.quiet:
        _print_failed_logs(store, results)
    done = Outcome(run_id, plan.name, results, store.root, summaries=report_summaries(store, results.values()),
                   warnings=filter(None, [code_changed_line(runner.code_changed)]), unrecorded=runner.unrecorded,
                   read_only=store.read_only)
    code = finish(args, display, done)
    if args.force:  # a forced entry may have new output digests under its old key
        fastpath.forget(args)
    elif not done.failed and not args.only and not runner.code_changed:
        # stale code is warned about on every run: the fast path would skip the warning
        fastpath.remember(args, snapshot, runner, done.summaries)
    store.close()
    return code


def _executor_spec(args, plan) -> str | None:
    """`--executor`, else the recipe's `executor:`, its name checked (one named by the recipe: at its line)."""
    from engine.run.executors import check_executor

    spec = args.executor or plan.executor
    try:
        check_executor(spec)
    except RecipeError as e:
        if args.executor or e.where or not plan.executor_where:
            raise
        raise RecipeError(e.message, plan.executor_where) from None
    return spec


def _read_only_check(runner) -> None:
    """A read-only cache serves a fully cached run; a run with anything to compute stops here."""
    from engine.run.status import preview

    todo = [s.label for s in preview(runner) if s.label in runner.selection and not s.cached]
    if todo:
        raise CacheError(f"cache {runner.store.root} is read-only: {len(todo)} step(s) would run "
                         f"({', '.join(todo[:3])}{' ...' if len(todo) > 3 else ''})")


def _print_failed_logs(store, results, lines: int = 20) -> None:
    """Under each failure, the end of its step log (kept in cache/failed/ by the runner)."""
    from engine.run.capture import log_tail
    from engine.run.faults import failed_log

    for r in results.values():
        log = failed_log(store.root, r.key, r.label) if r.key else None
        if r.status != "failed" or log is None or not log.is_file():
            continue
        console.print(f"[bold red]{escape(r.node.label)}[/] failed; last {lines} lines of {log}:", soft_wrap=True)
        for line in log_tail(log, lines):
            console.print("  │ " + escape(line), soft_wrap=True, highlight=False)


def report_summaries(store, results) -> list[str]:
    """Reports of this recipe's own steps may carry a summary.md (e.g. a before/after
    table), printed after every run, so a cached run shows it too."""
    paths = []
    for r in results:
        if r.status not in ("ran", "cached") or "/" in r.node.label:
            continue
        for name, typ in r.node.step_cls.outputs.items():
            path = store.output_path(r.key, name) / "summary.md"
            if typ.kind == "Report" and path.is_file():
                paths.append(str(path))
    return paths


def cmd_plan(args) -> int:
    from engine.run.executors import make_executor
    from engine.run.runner import Runner
    from engine.run.status import preview

    plan = _plan(args)
    if (_executor_spec(args, plan) or "local") == "local":  # a Ray cluster's resources are checked when it runs
        local = make_executor("local")
        local.check([n for n in plan.nodes if n.resources_declared])
        try:  # a step type's default (a vLLM step's GPUs): planning on a login node is fine
            local.check([n for n in plan.nodes if not n.resources_declared])
        except RecipeError as e:
            console.print(f"[yellow]note:[/] {escape(e.message)} (this machine cannot run it)", soft_wrap=True)
    store = Store(args.cache_dir)
    with no_collections():
        statuses = preview(Runner(plan, store))
    table = Table(title=f"{plan.name}: {len(plan.nodes)} step instances", title_justify="left")
    for col in ("step", "uses", "makes", "status", "why", "key"):
        table.add_column(col, no_wrap=col in ("step", "uses", "key"))
    for label, uses, makes, state, why, key in _rows(statuses, plan.nodes, fold=not args.all):
        style = "dim" if state.endswith("cached") else "cyan"
        table.add_row(escape(label), uses, escape(makes), f"[{style}]{escape(state)}[/]", escape(why), key[:10])
    console.print(table)
    todo = sum(1 for s in statuses if not s.cached)
    console.print(f"{len(statuses) - todo} cached, {todo} to run")
    store.close()
    return 0


def _rows(statuses, nodes, fold: bool) -> list[tuple[str, str, str, str, str, str]]:
    """Table rows: one per node, or with `fold` one per step whose foreach has many instances
    (counts per status)."""
    def row(s):
        return s.label, s.uses, s.makes, s.state, "; ".join(s.why), s.key

    if not fold:
        return [row(s) for s in statuses]
    out = []
    for name, members in groups(zip(statuses, nodes), lambda sn: (sn[1].label, sn[1].step_id)).items():
        group = [s for s, _ in members]
        if len(group) <= FOLD_OVER:
            out += [row(s) for s in group]
            continue
        whys = sorted({"; ".join(s.why) for s in group if s.why})
        out.append((f"{name}[×{len(group)}]", group[0].uses, "", count_statuses(s.state for s in group),
                    "; ".join(whys[:2]) + (" ..." if len(whys) > 2 else ""), ""))
    return out


def cmd_show(args) -> int:
    store = Store(args.cache_dir)
    key = None
    try:
        record = store.runs.read(args.ref)
    except DamagedRecord:
        raise
    except CacheError as no_run:
        record = None
        key = store.find(args.ref)
        if key is None and prefixed(store.runs.ids(), args.ref):
            raise no_run from None  # the prefix names several runs: say which
        if key is None:
            raise CacheError(_not_found(store, args.ref)) from None
    if record:  # a record may come from a remote: its text is shown, never read as markup
        pulled = f"  pulled from {record['pulled_from']}" if "pulled_from" in record else ""
        head = (f"{record['run_id']}  recipe {record['recipe']} ({record['file']})  status {record['status']}  "
                f"profile {record.get('profile') or '-'}  sets {' '.join(record.get('sets') or ()) or '-'}{pulled}")
        console.print("[bold]run[/] " + escape(head))
        table = Table()
        for col in ("step", "uses", "status", "key", "outputs"):
            table.add_column(col)
        for n in record["nodes"]:
            table.add_row(escape(n["label"]), escape(n["uses"]), escape(n["status"]), (n["key"] or "")[:12],
                          escape(", ".join(f"{k}={v[:8]}" for k, v in n["outputs"].items())))
        console.print(table)
        return 0
    entry = store.read_entry(key)
    console.print(f"[bold]entry {key}[/]\n  " + escape(
        f"step {entry['uses']} v{entry['version']} ({entry.get('label', '')} of {entry.get('recipe')})  "
        f"seed {entry.get('seed')}  {entry.get('seconds')}s on {entry.get('host')}"))
    console.print("  config: " + escape(json.dumps(entry["config"], sort_keys=True)))
    for slot, d in entry["inputs"].items():
        console.print(escape(f"  input {slot}: {entry.get('input_refs', {}).get(slot)} {d}"))
    for name, o in entry["outputs"].items():
        console.print(escape(f"  output {name}: {o['type']} {human_size(o['size'])} {o['digest'][:16]}  "
                             f"{store.output_path(key, name)}"))
    log = store.entry_dir(key) / "log.txt"
    if log.exists():
        from engine.run.capture import log_tail

        lines = log_tail(log, args.log_lines) if args.log_lines else []  # read from its end: a log may be huge
        console.print("  log (tail):")
        for line in lines:
            console.print("    " + escape(line))
    return 0


def _not_found(store: Store, ref: str) -> str:
    """A failed step has a key but no entry: point at its newest log instead."""
    logs = sorted((store.root / "failed").glob(f"{ref}*.log"), key=os.path.getmtime) if ref.isalnum() else []
    if logs:
        return f"{ref!r} is a step that failed, so it has no entry; its log: {logs[-1]}"
    return f"{ref!r} is neither a run nor an entry key in {store.root}"


def cmd_ls(args) -> int:
    store = Store(args.cache_dir)
    if not store.runs.ids() and next(iter(store.keys()), None) is None:  # the wrong folder, or no run yet
        console.print(escape(f"no runs and no entries in {store.root} yet: `recipe run RECIPE` fills it "
                             "(--cache-dir or RECIPE_CACHE_DIR names another)"), soft_wrap=True)
        return 0
    runs = Table(title="runs", title_justify="left")
    for col in ("run", "recipe", "profile", "status", "steps", "when"):
        runs.add_column(col)
    for rid in store.runs.ids():
        r = store.runs.read(rid)
        status = r["status"] + (" (pulled)" if "pulled_from" in r else "")
        runs.add_row(rid, escape(r["recipe"]), escape(str(r.get("profile") or "")), escape(status),
                     str(len(r["nodes"])), time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])))
    console.print(runs)
    entries = Table(title="entries", title_justify="left")
    for col in ("key", "step", "label", "size", "when"):
        entries.add_column(col)
    total = 0
    for key in store.keys():
        e = store.read_entry(key)
        size = sum(o.get("size", 0) for o in e["outputs"].values())
        total += size
        entries.add_row(key[:12], escape(e["uses"]), escape(e.get("label", "")), human_size(size),
                        time.strftime("%Y-%m-%d %H:%M", time.localtime(e.get("end", 0))))
    console.print(entries)
    console.print(f"{plural(len(store.runs.ids()), 'run')}, {plural(entries.row_count, 'entry')}, {human_size(total)}")
    return 0


def cmd_verify(args) -> int:
    from engine.cache.remote import verify_entry

    store = Store(args.cache_dir)
    bad = []
    keys = list(store.keys())
    for key in list(keys):
        problems = verify_entry(store.entry_dir(key))
        if problems and not store.entry_dir(key).exists():  # removed by a gc meanwhile: not tampered
            keys.remove(key)
        elif problems:
            bad.append(key)
            console.print(f"[bold red]tampered[/] {key[:12]}: " + escape("; ".join(problems)))
    tampered = f", {len(bad)} tampered" if bad else ""
    console.print(f"{len(keys) - len(bad)} of {plural(len(keys), 'entry')} verified{tampered}")
    if args.recompute or args.sample is not None:
        from .recompute import recompute

        with store.hold():
            differ = recompute(store, console, args.sample, skip=set(bad))
        return 1 if bad or differ else 0
    return 1 if bad else 0


def cmd_gc(args) -> int:
    from .gc import cmd_gc as gc

    return gc(args, console)


def cmd_config(args) -> int:
    """`recipe config shared group|umask`: settings of a cache, in <cache>/config."""
    from engine.cache import perms

    store = Store(args.cache_dir)
    if args.value is None:
        console.print(f"shared = {perms.read_config(store.root).get('shared', 'umask')}")
        return 0
    changed = perms.set_shared(store.root, args.value)
    console.print(f"{store.root}: shared = {args.value}" + (f" ({changed} paths made group-writable)"
                                                             if args.value == "group" else ""))
    return 0


def cmd_push(args) -> int:
    from engine.cache.remote import push, safe_url

    store = Store(args.cache_dir)
    with store.hold() as hold:  # gc removes no entry this push keeps
        n_entries, n_runs, refused = push(store, args.remote, console, keep=hold.keep)
    console.print(f"pushed {plural(n_entries, 'entry')} and {plural(n_runs, 'run record')} to "
                  f"{escape(safe_url(args.remote))}"
                  + (f"; refused {len(refused)} (each named above)" if refused else ""), soft_wrap=True)
    return 1 if refused else 0


def cmd_pull(args) -> int:
    """Everything the remote has, or (--recipe, --run) only what one recipe or run needs."""
    from engine.cache.remote import Puller, safe_url

    from . import pull

    if (args.profile or args.sets) and not args.file:
        raise RecipeError("--profile and --set choose what `pull --recipe FILE` plans; give --recipe")
    plan = _plan(args) if args.file else None  # a recipe error stops the pull before the remote is listed
    store = Store(args.cache_dir)
    with store.hold():  # gc waits: staged entries are not taken for those of a killed run
        puller = Puller(store, args.remote, console)
        what, keys = "", None
        if plan:
            keys = pull.pull_recipe(plan, store, puller)
            what = f" for recipe {plan.name}" + (f" (profile {plan.profile})" if plan.profile else "")
        elif args.run:
            run_id, keys = pull.pull_run(args.run, store, puller)
            what = f" for run {run_id}"
        else:
            puller.entries(set(puller.keys))
            puller.runs(puller.run_ids)
        n_entries, n_runs, refused = puller.done()
    records = sum(r.startswith("runs/") for r in refused)
    console.print(f"pulled {plural(n_entries, 'entry')} and {plural(n_runs, 'run record')}{escape(what)} from "
                  f"{escape(safe_url(args.remote))}"
                  + (f"; refused {plural(len(refused) - records, 'tampered entry')}" if len(refused) > records else "")
                  + (f"; refused {plural(records, 'run record')}" if records else ""), soft_wrap=True)
    if keys is not None:
        console.print(pull.summary(keys, store))
    store.close()
    return 1 if refused else 0


def cmd_reproduce(args) -> int:
    from .reproduce import reproduce

    return reproduce(args, console)


def cmd_steps(args) -> int:
    from engine.recipe import step as registry

    reg = registry.load_all()
    if args.lock and args.name:
        raise RecipeError(f"--lock rewrites the lock of every built-in step; run `recipe steps --lock` "
                          f"without {args.name!r}")
    if args.lock:
        from engine.cache.source import lock_path, lock_text

        path = lock_path()
        path.write_text(lock_text(), encoding="utf-8")
        console.print(f"wrote {path}")
        return 0
    if args.name:
        cls = registry.get(args.name)
        console.print(f"[bold]{cls.name}[/] v{cls.version}  {escape(cls.summary())}")
        for k, v in cls.input_slots().items():
            console.print(f"  input  {k}: {v.describe()}")
        for k, v in cls.outputs.items():
            console.print(f"  output {k}: {v.kind}")
        table = Table(title="config (with:)", title_justify="left")
        for col in ("field", "type", "default", "description"):
            table.add_column(col, overflow="fold")
        for row in config_rows(cls.Config):
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return 0
    from engine.recipe.step import StepConfig

    table = Table(title=f"{len(reg)} step types", title_justify="left")
    for col in ("step", "inputs", "outputs", "config fields", "what it does"):
        table.add_column(col)
    for name in sorted(reg):
        cls = reg[name]
        fields = ", ".join(f"{k}{'' if f.is_required() else '=' + _short(_default(f))}"
                           for k, f in cls.Config.model_fields.items()
                           if k not in StepConfig.model_fields)  # every step's (allow_empty): not repeated
        table.add_row(name, ", ".join(f"{k}: {v.describe()}" for k, v in cls.input_slots().items()),
                      ", ".join(f"{k}: {v.kind}" for k, v in cls.outputs.items()), escape(fields),
                      escape(cls.summary()))
    console.print(table)
    return 0


def _short(v: Any, most: int = 20) -> str:
    s = repr(v)
    return s if len(s) <= most else s[:most - 3] + "..."


def _default(f) -> Any:
    return f.get_default(call_default_factory=True)  # `Field(default_factory=list)`: [], not PydanticUndefined


BOUNDS = {"ge": ">= ", "gt": "> ", "le": "<= ", "lt": "< ", "min_length": "length >= ", "max_length": "length <= "}


def config_rows(model, prefix: str = "", depth: int = 0) -> list[tuple[str, str, str, str]]:
    """One row per field of a step's config (name, type, default, description); the fields
    of a nested config (`backend:`) follow as `backend.kind`, ..."""
    from pydantic import BaseModel

    rows = []
    for name, f in model.model_fields.items():
        kind = getattr(f.annotation, "__name__", None) if not typing.get_args(f.annotation) else None
        kind = kind or str(f.annotation).replace("typing.", "").replace("NoneType", "None")
        bounds = [BOUNDS[a] + str(getattr(m, a)) for m in f.metadata for a in BOUNDS if hasattr(m, a)]
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        notes = [f.description or "", "a secret: never hashed or recorded" if extra.get("secret") else "",
                 "not part of the key" if extra.get("key") is False else ""]
        nested = [t for t in (f.annotation, *typing.get_args(f.annotation))
                  if isinstance(t, type) and issubclass(t, BaseModel)]
        default = "required" if f.is_required() else "(its fields below)" if nested else _short(_default(f), 40)
        rows.append((prefix + name, ", ".join([kind, *bounds]), default, "; ".join(n for n in notes if n)))
        if nested and depth < 2:
            rows += config_rows(nested[0], f"{prefix}{name}.", depth + 1)
    return rows


def cmd_dag(args) -> int:
    """The step graph as text (default), Mermaid or Graphviz dot."""
    from engine.recipe.dag import as_dot, as_mermaid, as_text, from_plan

    g = from_plan(_plan(args))
    out = {"text": as_text, "mermaid": as_mermaid, "dot": lambda g: as_dot(g).source.rstrip()}[args.format](g)
    try:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `recipe dag ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_report(args) -> int:
    from .report import cmd_report as report

    return report(args)
