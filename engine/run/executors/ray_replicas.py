"""Model replicas on Ray that stay loaded for the whole run (`--executor ray`).

A replica is an actor that loads its model once (`setup()`, e.g. a backend spec) and then runs
shard after shard. One `ReplicaPools` actor per run owns them all, keyed by what they load:
for a backend spec, its kind and loading settings and its model's content digest (a Hub id
by name). Steps that load the same model share its replicas, as distilabel's Ray pipeline
keeps one set of LLM actors for a pipeline's whole run instead of one per batch:

    acquire(step, key, ...)    a step's map_shards leases up to `want` replicas of `key`: idle
                               ones first, new ones for the rest
    give_back(step)            they are idle again, still loaded
    end_step(step)             the step ended: what it still holds (a killed task's) goes
    release(models=..)         the driver: no step still to run names these models; their idle
                               replicas go
    plain(in_use)              the driver: its steps' own tasks now hold `in_use`

A replica holds its resources (a GPU, a CPU) while idle, so room is made when something else
needs them: idle replicas of other models go, least recently used first, before a new replica
or a step's task would wait for resources that only an idle replica holds. The pool actor is
owned by the driver: a killed driver takes it, and with it every replica, along.

This module imports ray; only the ray executor imports it.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import ray
from ray import cloudpickle

from engine.recipe.resources import Resources
from engine.run.shards import compute_shard

TASK_RETRIES = 3  # as engine/run/executors/ray.py: a dead replica's shard is retried on its restart
NOTHING = Resources(0, 0)
CLOSE_S = 60  # a replica's close (a vLLM engine waits up to 10 s for its processes to end)


@ray.remote(max_restarts=2, max_task_retries=TASK_RETRIES)
class _Replica:
    """One model replica: `setup()` runs once (again only if Ray restarts it), then shards."""

    def __init__(self, setup_pickled: bytes):
        self.state = cloudpickle.loads(setup_pickled)()

    def run(self, fn: Callable, index: int, items: list[Any], path: str) -> tuple[int, list[dict[str, Any]]]:
        return index, compute_shard(fn, items, Path(path), self.state, with_state=True)

    def close(self) -> None:
        """Close what `setup` loaded: a vLLM backend ends its engine's processes, which a killed
        actor would leave running (they are in a session of their own)."""
        close = getattr(self.state, "close", None)
        if callable(close):
            close()


def pool_key(setup: Callable[[], Any], digests: dict[str, str], step: str) -> tuple[str, str | None]:
    """(key, model): a setup that names what it loads (`replica_key`, e.g. BackendSpec) is pooled
    for the run under that name; any other is its step's own, released when the step ends."""
    named = getattr(setup, "replica_key", None)
    if callable(named):
        what, model = named(digests)
        return f"{what}|{model}", model
    return f"step:{step}|{hashlib.sha256(cloudpickle.dumps(setup)).hexdigest()[:16]}", None


@dataclass
class _Held:
    key: str
    model: str | None
    size: Resources
    actor: Any
    group: Any = None  # the placement group of a replica with more than one GPU
    lease: str | None = None  # the step using it now; None: idle
    used: float = 0.0  # when it was last given back (least recently used goes first)


@ray.remote(num_cpus=0, max_restarts=0)
class ReplicaPools:
    """The run's replicas, by key. Its methods block only to close an idle replica before it
    goes; creating one only asks Ray, which starts it once the resources it waits for are free."""

    def __init__(self, capacity: Resources):
        self.capacity = capacity
        self.in_use = NOTHING  # by the driver's own step tasks
        self.held: list[_Held] = []

    def acquire(self, step: str, key: str, model: str | None, setup_pickled: bytes, size: Resources,
                want: int) -> list[Any]:
        """`want` replicas of `key` for one map_shards call of `step`: idle ones first, new ones
        for the rest. A step calls map_shards one at a time, so replicas it still holds are a
        killed earlier attempt's (their shards may still run): they are stopped first."""
        for h in [h for h in self.held if h.lease == step]:
            self._stop(h)
        idle = [h for h in self.held if h.key == key and h.size == size and h.lease is None]
        for h in idle[:want]:
            h.lease = step
        new = max(0, want - len(idle))
        self._make_room(Resources(size.cpus * new, size.gpus * new), keep=key)
        for _ in range(new):
            actor, group = _start(setup_pickled, size)
            self.held.append(_Held(key, model, size, actor, group, step))
        return [h.actor for h in self.held if h.lease == step]

    def give_back(self, step: str, ok: bool = True) -> None:
        """The call is over: its replicas are idle, still loaded (after a failure, when shards
        may still run on them, stopped). Idle ones go if what waits for resources needs theirs."""
        for h in [h for h in self.held if h.lease == step]:
            if ok:
                h.lease, h.used = None, time.monotonic()
            else:
                self._stop(h)
        self._make_room(NOTHING)  # a replica or step task waiting for what idle ones hold starts

    def end_step(self, step: str) -> None:
        """A step ended (its task may have died with replicas leased): what it still holds, and
        the replicas of setups that were its own, go."""
        for h in [h for h in self.held if h.lease == step or h.key.startswith(f"step:{step}|")]:
            self._stop(h)

    def release(self, models: list[str] | None = None, keys: list[str] | None = None) -> None:
        """Stop the idle replicas of these models or keys (None and None: all of them)."""
        for h in [h for h in self.held if h.lease is None]:
            if (models is None and keys is None) or h.model in (models or ()) or h.key in (keys or ()):
                self._stop(h)

    def plain(self, in_use: Resources) -> None:
        """The driver's step tasks now hold `in_use`; idle replicas make way if they must."""
        self.in_use = in_use
        self._make_room(NOTHING)

    def _make_room(self, need: Resources, keep: str | None = None) -> None:
        idle = sorted((h for h in self.held if h.lease is None), key=lambda h: (h.key == keep, h.used))
        for h in idle:
            if need.fits(self._free()):
                return
            self._stop(h)

    def _free(self) -> Resources:
        held = self.in_use
        for h in self.held:
            held += h.size
        return self.capacity - held

    def _stop(self, h: _Held) -> None:
        """An idle replica is closed first (up to CLOSE_S); a leased one may still be running a
        shard of a failed or killed step, so it is killed as it is."""
        self.held.remove(h)
        if h.lease is None:
            try:
                ray.get(h.actor.close.remote(), timeout=CLOSE_S)
            except Exception:  # noqa: BLE001 - dead already or stuck: killed below either way
                pass
        ray.kill(h.actor)
        if h.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(h.group)


def _start(setup_pickled: bytes, size: Resources) -> tuple[Any, Any]:
    """A replica with more than one GPU (vLLM tensor parallelism) gets them on one node, in a
    STRICT_PACK placement group; Ray starts it once the group fits (nothing here waits)."""
    options: dict[str, Any] = {"num_cpus": size.cpus, "num_gpus": size.gpus}
    group = None
    if size.gpus > 1:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = placement_group([{"GPU": 1.0, "CPU": size.cpus / size.gpus}] * int(size.gpus), strategy="STRICT_PACK")
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group)
    return _Replica.options(**options).remote(setup_pickled), group


def start_pools(capacity: Resources) -> Any:
    """The run's pool actor, on the driver's node (it lives as long as the driver does)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ReplicaPools.options(scheduling_strategy=here).remote(capacity)
