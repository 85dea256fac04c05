"""qstar.sample on a real local Ray cluster: its shards run on replica actors that each load the
model pair once and sample with the stacked forward (steps/qstar/stacked.py), giving the
samples the same digests as a local run; a second run reuses everything.

What runs inside the actor is seen through a trace: `sitecustomize.py` in a folder on the
PYTHONPATH that the run hands its Ray workers (Python imports it in every process it starts)
wraps the real `Stacked.__init__` and `Stacked.forward` to write one line per batch sampled
with a stack: the process, whether it is a Ray actor, whether every parameter of both models is a
view into the stack's tensors, the stacks built in that process and torch's thread count."""
import pytest
from _tiny import make_tiny_model
from conftest import write

pytestmark = pytest.mark.ray

HOOK = '''
import json
import os
import weakref

from steps.qstar import stacked

_init, _forward = stacked.Stacked.__init__, stacked.Stacked.forward
built = []  # the stacks this process built


def init(self, models):
    _init(self, models)
    self.traced_models = [weakref.ref(m) for m in models]
    built.append(1)


def forward(self, state, ids, positions, mask, padded):
    if ids.shape[1] == mask.shape[1]:  # a batch's first step (its prompts): one line per batch
        trace(self)
    return _forward(self, state, ids, positions, mask, padded)


def views(s) -> bool:
    """Every parameter of every model lies in the storage of one of the stack's tensors."""
    tensors = [s.embed, s.head, s.head_b, s.norm, *(t for layer in s.layers for t in layer.values())]
    storages = {t.untyped_storage().data_ptr() for t in tensors if hasattr(t, "untyped_storage")}
    return all(p.untyped_storage().data_ptr() in storages for m in s.traced_models for p in m().parameters())


def trace(s):
    import ray
    import torch

    actor = ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None
    line = {"pid": os.getpid(), "actor": bool(actor), "views": views(s), "threads": torch.get_num_threads(),
            "built": len(built)}
    with open(os.environ["RECIPE_QSTAR_TRACE"], "a") as f:
        f.write(json.dumps(line) + "\\n")


stacked.Stacked.__init__, stacked.Stacked.forward = init, forward
'''

RECIPE = """recipe: qray
steps:
  - {id: problems, uses: problems.arithmetic, with: {count: 6, seed: 1}}
  - id: sample
    uses: qstar.sample
    with: {model_theta: THETA, model_t: PI_T, alpha_method: kl_symmetry, n: 2, max_new_tokens: 6,
           shard_size: 2, batch_size: 4}
    resources: {cpus: 2}
    inputs: {problems: "${steps.problems.problems}"}
"""


@pytest.fixture
def qcli(cli, tmp_path):
    hook = write(tmp_path / "hook" / "sitecustomize.py", HOOK).parent
    cli.env["PYTHONPATH"] = f"{hook}:{cli.env['PYTHONPATH']}"
    cli.env["RECIPE_QSTAR_TRACE"] = str(tmp_path / "stacked.jsonl")
    return cli


def batches(cli) -> list[dict]:
    import json

    path = cli.tmp / "stacked.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def outputs(cli, cache=None) -> dict:
    return {n["label"]: (n["key"], n["outputs"]) for n in cli.last_run(cache)["nodes"]}


def test_qstar_samples_on_a_ray_replica_with_the_stacked_forward(qcli, ray_address, tmp_path):
    theta = make_tiny_model(tmp_path / "theta", seed=0, logit_scale=14.0)
    t = make_tiny_model(tmp_path / "t", seed=1, logit_scale=14.0)
    f = write(tmp_path / "qray.yaml", RECIPE.replace("THETA", str(theta)).replace("PI_T", str(t)))

    qcli("run", f, "--executor", f"ray={ray_address}")
    assert qcli.statuses() == {"problems": "ran", "sample": "ran"}
    on_ray = batches(qcli)
    # 6 prompts in shards of 2, 2 samples each: three shards of one batch of 4 rows, on the two
    # replicas that `cpus: 2` gives, each of which built its stack once (the one that ran two
    # shards reused it)
    assert len(on_ray) == 3 and all(b["actor"] for b in on_ray), on_ray
    assert len({b["pid"] for b in on_ray}) == 2
    assert all(b["built"] == 1 and b["views"] and b["threads"] == 1 for b in on_ray), on_ray

    qcli("run", f, cache=tmp_path / "local")
    local = batches(qcli)
    assert len(local) == 3 and not any(b["actor"] for b in local), local
    assert all(b["built"] == 1 and b["views"] and b["threads"] == 1 for b in local), local
    assert outputs(qcli, tmp_path / "local") == outputs(qcli)  # same keys, same samples digests

    qcli("run", f, "--executor", f"ray={ray_address}")
    assert qcli.statuses() == {"problems": "cached", "sample": "cached"}
    assert not batches(qcli)
