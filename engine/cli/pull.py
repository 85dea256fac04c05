"""`recipe pull REMOTE --recipe FILE` and `--run ID`: only the entries that one recipe or one run
needs, as `dvc pull TARGET` does, instead of the whole remote.

A step's key depends on the digests of its inputs, so a recipe's keys are known only as far as
its upstream entries are: the recipe is planned, the keys that can be worked out are pulled,
and that repeats with the digests the pulled entries bring, until no key is left to fetch. A
run's record names every key, so those are pulled in one go (with the record, if only the
remote has it)."""
from __future__ import annotations

from engine.cache.remote import Puller
from engine.cache.runs import prefixed
from engine.recipe.errors import CacheError


def pull_recipe(plan, store, puller: Puller) -> dict[str, str | None]:
    """Pull the entries of the plan's keys; returns label -> key (None: an input is on neither side)."""
    from engine.run.runner import Runner

    runner = Runner(plan, store)
    asked: set[str] = set()
    while True:
        keys = _known_keys(runner)
        wanted = {k for k in keys.values() if k and k in puller.keys and k not in asked}
        if not wanted:
            return keys
        asked |= wanted
        puller.entries(wanted)


def _known_keys(runner) -> dict[str, str | None]:
    """Each node's key where its inputs' digests are known (from entries in the local cache)."""
    keys: dict[str, str | None] = {}
    for node in runner.plan.nodes:  # in topological order: one pass reaches as far as the cache does
        res = runner.results[node.label]
        parts = None if res.outputs else runner.keys.parts(node)
        if parts is not None:
            res.key = parts.key
            if runner.store.has(res.key):
                res.outputs = {k: v["digest"] for k, v in runner.store.read_entry(res.key)["outputs"].items()}
        keys[node.label] = res.key
    return keys


def pull_run(ref: str, store, puller: Puller) -> tuple[str, dict[str, str | None]]:
    """The run `ref` (an id or a unique prefix; its record pulled too if only the remote has it):
    (its id, label -> key), after pulling its entries."""
    try:
        record = store.runs.read(ref)
    except CacheError:
        hits = prefixed(puller.run_ids, ref)
        if len(hits) != 1:
            what = f"is ambiguous ({', '.join(hits[:5])})" if hits else "matches no run here or on the remote"
            raise CacheError(f"run {ref!r} {what}") from None
        puller.runs(hits)
        if not store.runs.path(hits[0]).exists():
            puller.done()  # says why it was refused
            raise CacheError(f"run {hits[0]}: its record on the remote was refused") from None
        record = store.runs.read(hits[0])
    keys = {n["label"]: n["key"] for n in record["nodes"] if n.get("key")}  # a failed step has none
    puller.entries(set(keys.values()))
    return record["run_id"], keys


def summary(keys: dict[str, str | None], store) -> str:
    """"6 of 6 step entries are in the cache" and what is missing."""
    here = sum(1 for k in keys.values() if k and store.has(k))
    missing = sum(1 for k in keys.values() if k and not store.has(k))
    waiting = sum(1 for k in keys.values() if not k)
    text = f"{here} of {len(keys)} step entries are in the cache"
    if missing:
        text += f"; {missing} {'is' if missing == 1 else 'are'} on neither side (they will run)"
    if waiting:
        text += f"; {waiting} more need{'s' if waiting == 1 else ''} those first"
    return text
