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
import uuid
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
from ray import cloudpickle
from ray.util import ActorPool

from engine.cache.secrets import SECRET_NAME, known_secrets
from engine.recipe.errors import StepError
from engine.recipe.resources import Resources
from engine.run.context import Bar
from engine.run.shards import InProcessShards, Shard, compute_shard
from engine.run.step_process import StepFailed, describe_error

from .base import Executor
from .ray_replicas import TASK_RETRIES, ReplicaPools, pool_key, start_pools

MAX_SHIPPED = 64 << 20  # a shard function bigger than this (a loaded model) stays in its step's task
ROOT = Path(__file__).resolve().parents[3]  # the directory holding `engine` and `steps`


def worker_env() -> dict[str, str]:
    """What Ray workers need to import this code and the user's step modules; never secrets."""
    env = {k: v for k, v in os.environ.items() if k.startswith("RECIPE_") and not SECRET_NAME.search(k)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return env


def start_ray(address: str | None) -> None:
    """Join `address` (else $RAY_ADDRESS), its workers given `worker_env` through the job's
    runtime_env; or start a cluster of this run's own, whose processes inherit it instead. A job
    without a runtime_env is served by the workers Ray starts with its cluster; one with a
    runtime_env waits for workers of its own (~1 s before the first tasks, and each replica
    actor a fresh process)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address:
        ray.init(address=address, runtime_env={"env_vars": worker_env()}, **options)
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = worker_env()["PYTHONPATH"]  # the RECIPE_ variables are there already
    try:  # "local": never a cluster that `ray start` left on this machine
        ray.init(address="local", **options)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def stop_ray() -> None:
    """ray.shutdown, without its 1-s wait for the autoscaler monitor of a cluster started here,
    which outlives SIGTERM by that second and is then killed: killed at once."""
    from ray._private import ray_constants, worker

    node = getattr(worker, "_global_node", None)
    for info in getattr(node, "all_processes", {}).get(ray_constants.PROCESS_TYPE_MONITOR, []):
        info.process.kill()
    ray.shutdown()


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


class RayExecutor(Executor):
    name = "ray"
    remote = True  # a step's task may run on another node: its progress comes back through a file
    counts_cpus = True
    keeps_replicas = True

    def __init__(self, address: str | None = None, jobs: int = 1, log: Path | None = None):
        self.started = not ray.is_initialized()
        # Ray's own output goes to `log`, not the run's: only where this executor starts Ray
        self.output = RayOutput(log) if log is not None and self.started else None
        if self.started:  # a session that already called ray.init (a notebook, the tests) keeps its own
            try:
                with self.output.starting() if self.output else nullcontext():
                    start_ray(address)
            except BaseException:
                if self.output:
                    self.output.close()
                raise
        self.pools = start_pools(self.capacity())  # the run's model replicas (ray_replicas.py)
        self._in_use = Resources(0, 0)  # what the step tasks submitted here hold
        self._tasks: dict[Future, tuple[Resources, str | None]] = {}  # submitted, not yet waited for
        self._lock = threading.Lock()

    @classmethod
    def open(cls, address: str | None, jobs: int, log: Path | None = None) -> "RayExecutor":
        return cls(address, jobs, log)

    def capacity(self) -> Resources:
        total = ray.cluster_resources()
        return Resources(cpus=total.get("CPU", 0), gpus=total.get("GPU", 0))

    def submit(self, fn: Callable[..., Any], *args: Any, resources: Resources = Resources()) -> Future:
        """Before the task asks Ray for `resources`, idle replicas that hold them make way; when
        it ends, what its step leased from the pools goes back."""
        self._hold(resources)
        task = ray.remote(_call).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                         max_retries=TASK_RETRIES, retry_exceptions=False)
        fut = _unwrapped(task.remote(fn, *args).future())
        shards = getattr(args[0], "shards", None) if args else None
        self._tasks[fut] = (resources, shards.step if isinstance(shards, RayShards) else None)
        return fut

    def wait(self, fut: Future, staging: Path, on_progress: Callable[[Bar], None] | None) -> Any:
        try:
            return super().wait(fut, staging, on_progress)
        finally:
            resources, step = self._tasks.pop(fut, (Resources(0, 0), None))
            self._hold(Resources(-resources.cpus, -resources.gpus))
            if step:  # a task that died may have left replicas leased
                self.pools.end_step.remote(step)

    def _hold(self, change: Resources) -> None:
        if change.cpus or change.gpus:
            with self._lock:  # the calls reach the pools in the order they were made
                self._in_use += change
                self.pools.plain.remote(self._in_use)

    def shard_runner(self, resources: Resources, inputs: dict[str, Any] | None = None) -> "RayShards":
        """Shards as Ray tasks of the cluster the step's task runs on; replicas within `resources`,
        from the run's pools, where a model input is known by its digest."""
        return RayShards(resources, self.pools, input_digests(inputs or {}))

    def release_models(self, models: Sequence[str]) -> None:
        """No step still to run uses these models: their idle replicas go."""
        self.pools.release.remote(models=list(models))

    def close(self) -> None:
        try:
            close_pools(self.pools)
            if self.started:
                stop_ray()
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


class RayShards:
    """`ctx.map_shards` on the Ray cluster this step runs on; results collected with ray.wait.
    With a `setup`, the shards run on replicas leased from the run's pools (ray_replicas.py),
    as many as `budget` (the step's resources) holds; they stay loaded after the step."""

    def __init__(self, budget: Resources | None = None, pools: Any = None, digests: dict[str, str] | None = None):
        self.budget = budget
        self.pools = pools  # the run's ReplicaPools actor; None: one of this step's own, made when needed
        self.digests = digests or {}  # input paths -> content digests: a model's pool is keyed by its digest
        self.step = uuid.uuid4().hex  # the pools' name for this step's job
        self._own_pools = False

    def run(self, todo: Sequence[Shard], fn: Callable, done: Callable[[Shard, list], None],
            setup: Callable[[], Any] | None = None, replica: Resources | None = None) -> None:
        if not todo:
            return
        _, why = _shipped(fn, "the shard function")
        setup_payload = None
        if setup is not None and not why:
            setup_payload, why = _shipped(setup, "the replicas' setup")
        if why:  # e.g. fn holds a loaded model, an HTTP client or a secret: run the shards right here
            logging.getLogger("mathrecipe.ray").warning("shards run inside the step's task: %s", why)
            return InProcessShards().run(todo, fn, done, setup)
        if setup is not None:
            return self._on_replicas(todo, fn, done, setup, setup_payload, replica or Resources())
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

    def _on_replicas(self, todo, fn, done, setup, setup_payload: bytes, replica: Resources) -> None:
        """On replicas of the run's pool for what `setup` loads: loaded already when an earlier
        step (or an earlier call of this one, magpie's rounds) used the same model."""
        key, model = pool_key(setup, self.digests, self.step)
        want = replicas(replica, len(todo), self.budget)
        leased = _get(self._pools().acquire.remote(self.step, key, model, setup_payload, replica, want))
        pool = ActorPool(leased)
        by_index = {s.index: s for s in todo}
        fn_ref = ray.put(fn)
        for s in todo:
            pool.submit(lambda a, s: a.run.remote(fn_ref, s.index, s.items, str(s.path)), s)
        ok = False
        try:
            while pool.has_next():
                try:
                    index, rows = pool.get_next_unordered()
                except ray.exceptions.RayError as e:
                    raise step_error(e) from None
                done(by_index[index], rows)
            ok = True
        finally:  # idle again, still loaded; after a failure (its other shards may still run) stopped
            ray.get(self._pools().give_back.remote(self.step, ok))

    def _pools(self) -> Any:
        if self.pools is None:  # used outside an executor's run (a benchmark): pools of its own
            have = self.budget or Resources(*(ray.cluster_resources().get(k, 0) for k in ("CPU", "GPU")))
            self.pools, self._own_pools = ReplicaPools.remote(have), True
        return self.pools

    def release(self, setup: Callable[[], Any] | None) -> None:
        """ctx.release: stop the idle replicas of what `setup` loads, to free their memory now."""
        if setup is not None and self.pools is not None:
            key, _ = pool_key(setup, self.digests, self.step)
            self.pools.release.remote(keys=[key])

    def close(self) -> None:
        """ctx.close: the step ended; the replicas of setups that were its own go."""
        if self._own_pools:
            close_pools(self.pools)
            self.pools, self._own_pools = None, False
        elif self.pools is not None:
            self.pools.end_step.remote(self.step)


def close_pools(pools: Any) -> None:
    """Close the idle replicas (their vLLM engines end with them), then kill the pools actor and
    with it any replica still leased. Pools lost with their node have nothing left to close."""
    try:
        ray.get(pools.release.remote())
    except ray.exceptions.RayError:
        pass
    ray.kill(pools)


def _shipped(obj: Any, what: str) -> tuple[bytes | None, str | None]:
    """`obj` pickled for other workers, or why it must not travel: it cannot be pickled, it is big,
    or it holds a secret this process knows (a closure over a step's ctx holds its redactor, a
    loaded backend its API key): Ray would copy that into its object store and onto every worker."""
    try:
        payload = cloudpickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - any pickling failure means: keep it here
        return None, f"{what} cannot be pickled ({type(e).__name__})"
    if len(payload) > MAX_SHIPPED:  # setup= is the way for a shard function, not for the setup itself
        advice = "; pass setup= to ctx.map_shards to load it on replicas" if what == "the shard function" else ""
        return None, f"{what} holds {len(payload) >> 20} MB{advice}"
    if held := next((name for value, name in known_secrets().items() if value.encode() in payload), None):
        return None, f"{what} holds a secret this process knows ({held}'s value; it stays out of Ray's object store)"
    return payload, None


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


def input_digests(inputs: dict[str, Any]) -> dict[str, str]:
    """A step's input artifacts: path -> content digest."""
    arts = [a for v in inputs.values() for a in (v if isinstance(v, list) else [v]) if a is not None]
    return {str(a.path): a.digest for a in arts if getattr(a, "digest", None)}
