"""The ray executor: `--executor ray` (start Ray on this machine, or join $RAY_ADDRESS) or
`--executor ray=ADDRESS` (an existing cluster, e.g. one started inside a Slurm allocation).

The driver keeps keys, cache checks, locks and commits. A step's work (`run_job`) runs as a
Ray task with the step's resources, writing into a staging folder on the cache root (a
shared filesystem on a cluster) and returning its output digests. Inside it, `ctx.map_shards`
sends the missing shards out as Ray tasks (or to a pool of actors that each load a model
once). Ray retries a task whose worker or node died; an error raised by the step's own code
fails at once and is not retried.

This module is imported only when the ray executor is chosen.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
from ray.util import ActorPool

from engine.cache.secrets import SECRET_NAME
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.run.shards import InProcessShards, Shard, compute_shard
from engine.run.step_process import StepFailed, describe_error

from .base import Executor

# Ray retries tasks whose worker or node died (infrastructure), never the step's own errors.
TASK_RETRIES = 3
MAX_SHIPPED = 64 << 20  # a shard function bigger than this (a loaded model) stays in its step's task
ROOT = Path(__file__).resolve().parents[3]  # the directory holding `engine` and `steps`


def worker_env() -> dict[str, str]:
    """What Ray workers need to import this code and the user's step modules; never secrets."""
    env = {k: v for k, v in os.environ.items() if k.startswith("RECIPE_") and not SECRET_NAME.search(k)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return env


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class RayExecutor(Executor):
    name = "ray"
    remote = True  # a step's task may run on another node: its progress comes back through a file
    counts_cpus = True

    def __init__(self, address: str | None = None, jobs: int = 1, log: Path | None = None):
        self.started = not ray.is_initialized()
        # Ray's own output goes to `log`, not the run's: only where this executor starts Ray
        self.output = RayOutput(log) if log is not None and self.started else None
        if self.started:  # a session that already called ray.init (a notebook, the tests) keeps its own
            try:
                with self.output.starting() if self.output else nullcontext():
                    ray.init(address=address, runtime_env={"env_vars": worker_env()}, include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
            except BaseException:
                if self.output:
                    self.output.close()
                raise

    @classmethod
    def open(cls, address: str | None, jobs: int, log: Path | None = None) -> "RayExecutor":
        return cls(address, jobs, log)

    def capacity(self) -> Resources:
        total = ray.cluster_resources()
        return Resources(cpus=total.get("CPU", 0), gpus=total.get("GPU", 0))

    def submit(self, fn: Callable[..., Any], *args: Any, resources: Resources = Resources()) -> Future:
        task = ray.remote(_call).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                         max_retries=TASK_RETRIES, retry_exceptions=False)
        return _unwrapped(task.remote(fn, *args).future())

    def shard_runner(self, resources: Resources) -> "RayShards":
        """Shards as Ray tasks of the cluster the step's task runs on; replicas within `resources`."""
        return RayShards(resources)

    def close(self) -> None:
        try:
            if self.started:
                ray.shutdown()
        finally:
            if self.output:
                self.output.close()


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class RayOutput:
    """Ray's own output, ANSI colours removed, in one log file: what its processes (raylet,
    GCS) write to the stdout and stderr they inherit from the driver, the "(raylet) ..." error
    messages it prints on the driver (a worker died, with a `[state-dump]`), and its logger."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8", errors="replace")
        self._lock = threading.Lock()
        self._handler = logging.StreamHandler(self)
        self._logger = logging.getLogger("ray")
        self._logger.addHandler(self._handler)
        self._propagate, self._logger.propagate = self._logger.propagate, False
        from ray._private import worker

        # the driver's thread that prints errors pushed by the raylet calls this module function
        self._printer = getattr(worker, "print_to_stdstream", None)
        if self._printer is not None:
            worker.print_to_stdstream = self._print

    def write(self, text: str) -> int:
        with self._lock:
            self._file.write(ANSI.sub("", text))
            self._file.flush()
        return len(text)

    def flush(self) -> None:
        pass

    def _print(self, data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            self.write(f"({data.get('pid', 'ray')}) {line}\n")

    @contextmanager
    def starting(self):
        """While Ray starts: file descriptors 1 and 2 are the log, so the processes it starts
        inherit the log as their stdout and stderr (and what it prints meanwhile lands there)."""
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            for fd in (1, 2):
                os.dup2(self._file.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)

    def close(self) -> None:
        from ray._private import worker

        if self._printer is not None:
            worker.print_to_stdstream = self._printer
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
        self._file.close()


def _unwrapped(ray_future: Future) -> Future:
    """A future whose exception is the step's own (StepError, StepFailed), not Ray's wrapper."""
    fut: Future = Future()

    def relay(done: Future) -> None:
        e = done.exception()
        if e is None:
            fut.set_result(done.result())
        else:
            fut.set_exception(step_error(e))

    ray_future.add_done_callback(relay)
    return fut


def step_error(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    if isinstance(cause, (StepError, StepFailed)):
        return type(cause)(str(cause))
    if cause is not None:
        return StepFailed(describe_error(cause))
    return StepFailed(f"Ray gave up on the task: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


# ---------------------------------------------------------------------- shards

@ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)
def _shard_task(fn: Callable, items: list[Any], path: str) -> list[dict[str, Any]]:
    return compute_shard(fn, items, Path(path))


@ray.remote(max_restarts=2, max_task_retries=TASK_RETRIES)
class _Replica:
    """One model replica: `setup()` runs once, then shard after shard."""

    def __init__(self, setup: Callable[[], Any]):
        self.state = setup()

    def run(self, fn: Callable, index: int, items: list[Any], path: str) -> tuple[int, list[dict[str, Any]]]:
        return index, compute_shard(fn, items, Path(path), self.state, with_state=True)


class RayShards:
    """`ctx.map_shards` on the Ray cluster this step runs on; results collected with ray.wait.
    Replicas (map_shards with `setup=`) share `budget`, the step's resources."""

    def __init__(self, budget: Resources | None = None):
        self.budget = budget
        self._pools: list[tuple[Callable[[], Any], Resources, list]] = []  # replicas kept for the step

    def run(self, todo: Sequence[Shard], fn: Callable, done: Callable[[Shard, list], None],
            setup: Callable[[], Any] | None = None, replica: Resources | None = None) -> None:
        if not todo:
            return
        if setup is not None:
            return self._on_replicas(todo, fn, done, setup, replica or Resources())
        why = _not_shippable(fn)
        if why:  # e.g. fn holds a loaded model or an HTTP client: run the shards right here
            logging.getLogger("mathrecipe.ray").warning("shards run inside the step's task: %s; pass "
                                                        "setup= to ctx.map_shards to spread them over replicas", why)
            return InProcessShards().run(todo, fn, done)
        fn_ref = ray.put(fn)  # shipped once, not with every shard
        pending = {_shard_task.remote(fn_ref, s.items, str(s.path)): s for s in todo}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    done(pending.pop(ref), _get(ref))
        finally:
            for ref in pending:  # a failed shard fails the step at once; stop the others
                ray.cancel(ref)

    def _on_replicas(self, todo, fn, done, setup, replica: Resources) -> None:
        """On the replicas a map_shards call of this step already started with the same setup
        (magpie's rounds load the model once), plus any more the shards can use."""
        actors = self._replicas(setup, replica, replicas(replica, len(todo), self.budget))
        pool = ActorPool(list(actors))
        by_index = {s.index: s for s in todo}
        fn_ref = ray.put(fn)
        for s in todo:
            pool.submit(lambda a, s: a.run.remote(fn_ref, s.index, s.items, str(s.path)), s)
        try:
            while pool.has_next():
                try:
                    index, rows = pool.get_next_unordered()
                except ray.exceptions.RayError as e:
                    raise step_error(e) from None
                done(by_index[index], rows)
        except BaseException:
            self.release(setup)  # a failed shard fails the step: stop its other shards
            raise

    def _replicas(self, setup: Callable[[], Any], replica: Resources, want: int) -> list:
        for known, size, actors in self._pools:
            if known == setup and size == replica:
                break
        else:
            actors = []
            self._pools.append((setup, replica, actors))
        actors += [_replica(setup, replica) for _ in range(want - len(actors))]
        return actors

    def release(self, setup: Callable[[], Any] | None) -> None:
        """Stop the replicas of `setup` (ctx.release), or of every setup (None: ctx.close)."""
        for known, _, actors in self._pools:
            if setup is None or known == setup:
                for a in actors:
                    ray.kill(a)
        self._pools = [p for p in self._pools if setup is not None and p[0] != setup]

    def close(self) -> None:
        self.release(None)


def _not_shippable(fn: Callable) -> str | None:
    """Why `fn` should not travel to other workers: it cannot be pickled, or it is big."""
    from ray import cloudpickle

    try:
        size = len(cloudpickle.dumps(fn))
    except Exception as e:  # noqa: BLE001 - any pickling failure means: keep it here
        return f"the shard function cannot be pickled ({type(e).__name__})"
    return f"the shard function holds {size >> 20} MB" if size > MAX_SHIPPED else None


def _get(ref) -> list[dict[str, Any]]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        raise step_error(e) from None


def replicas(replica: Resources, shards: int, budget: Resources | None = None) -> int:
    """As many replicas as the step's resources hold (gpus: 8 with 2 per replica is four),
    or without a budget as many as the cluster holds; never more than there are shards."""
    have = budget or Resources(*(ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")))
    fit = [have.cpus // replica.cpus if replica.cpus else shards,
           have.gpus // replica.gpus if replica.gpus else shards]
    return max(1, int(min(shards, *fit)))


def _replica(setup: Callable[[], Any], replica: Resources):
    """A replica with more than one GPU (vLLM tensor parallelism) gets them on one node, in a
    STRICT_PACK placement group."""
    options: dict[str, Any] = {"num_cpus": replica.cpus, "num_gpus": replica.gpus}
    if replica.gpus > 1:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundles = [{"GPU": 1.0, "CPU": replica.cpus / replica.gpus}] * int(replica.gpus)
        pg = placement_group(bundles, strategy="STRICT_PACK")
        ray.get(pg.ready())
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg)
    return _Replica.options(**options).remote(setup)
