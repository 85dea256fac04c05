"""How train.pretrain / train.finetune batch and thread their training: packed rows give the
padded batch's loss and gradients, a model that would let packed examples see each other is
trained padded, and the thread count follows measured step times (the decision logic, fed
made-up times: no timing is measured here)."""
import pytest
from _tiny import dataset, make_tiny_model, problem_rows

from engine.recipe.artifact_types import Tokenizer
from engine.run.testing import run_step
from steps.train import thread_tuning as threads
from steps.train.packing import collate, pack_rows, packs_exactly
from steps.train.thread_tuning import ThreadTuner


def test_pack_rows_places_every_example_once_within_the_longest():
    lengths = [60, 15, 15, 30, 44, 16, 28, 60, 9]
    rows = pack_rows(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 60 for row in rows)
    assert len(rows) == 5  # 60 | 60 | 44+16 | 30+28 | 15+15+9
    assert pack_rows([7]) == [[0]] and len(pack_rows([10, 10, 10])) == 3


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = make_tiny_model(tmp_path_factory.mktemp("m") / "model", hidden=32)
    return AutoModelForCausalLM.from_pretrained(path, dtype="float32"), path


def examples(lengths, vocab=200):
    """Token ids with the first third of each example a prompt (label -100), as encode_examples makes them."""
    out = []
    for k, n in enumerate(lengths):
        ids = [(7 * k + 3 * j) % (vocab - 10) + 10 for j in range(n)]
        out.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    return out


def loss_and_grads(model, batch):
    model.zero_grad()
    n = (batch["labels"][:, 1:] != -100).sum()
    loss = model(**batch, num_items_in_batch=n).loss
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def test_packed_batch_trains_exactly_as_the_padded_one(llama):
    model, _ = llama
    batch = examples([40, 12, 9, 25, 14, 40, 7, 30])
    padded, packed = collate(0, packed=False)(batch), collate(0, packed=True)(batch)
    assert packed["input_ids"].shape[0] < padded["input_ids"].shape[0] == 8
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert (packed["labels"] != -100).sum() == (padded["labels"][:, 1:] != -100).sum()
    (l1, g1), (l2, g2) = loss_and_grads(model, padded), loss_and_grads(model, packed)
    assert l2 == pytest.approx(l1, rel=1e-5)
    assert all(a.sub(b).abs().max() <= 1e-5 * (1 + a.abs().max()) for a, b in zip(g1, g2))
    assert packs_exactly(model, batch, 0)


def test_a_model_whose_packed_examples_see_each_other_trains_padded(llama):
    from transformers import LlamaForCausalLM

    class NoPositionIds(LlamaForCausalLM):
        """Ignores position_ids: packed examples would attend to the ones before them."""

        def forward(self, *args, position_ids=None, **kwargs):
            return super().forward(*args, **kwargs)

    model = NoPositionIds.from_pretrained(llama[1], dtype="float32")
    assert not packs_exactly(model, examples([40, 12, 9]), 0)
    assert not packs_exactly(llama[0], examples([20, 12, 9]), 0)  # nothing would pack: no check needed


def test_a_single_example_is_padded_not_packed(llama):
    assert not packs_exactly(llama[0], examples([20]), 0)


def test_pretrain_packs_resumes_and_writes_no_checkpoint_of_its_last_step(llama, tmp_path):
    rows = problem_rows(12)
    for r in rows[::3]:  # long and short problems: two short ones share a row
        r["problem"] += " Add the two numbers, then write the sum in the answer tag, after the reasoning."
    cfg = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 128,
           "max_steps": 4, "save_steps": 2, "batch_size": 6, "logging_steps": 1, "warmup_steps": 0}
    inputs = {"data": dataset(tmp_path, "d", rows), "tokenizer": Tokenizer(llama[1])}
    m = run_step("train.pretrain", cfg, inputs, workdir=tmp_path / "w")["report"].metrics()
    assert m["packed"] is True and m["resumed_from_step"] == 0 and m["threads"] >= 1
    checkpoints = tmp_path / "w" / "scratch" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-2"]  # none of step 4: the model is saved
    again = run_step("train.pretrain", cfg, inputs, workdir=tmp_path / "w")["report"].metrics()
    assert again["resumed_from_step"] == 2 and [c["step"] for c in again["curve"]] == [1, 2, 3, 4]


def test_every_loss_curve_has_points_and_logging_leaves_the_model_as_it_is(llama, tmp_path, monkeypatch):
    """20 steps at the default interval of 25 logged no loss at all (an empty loss.png): a run
    shorter than ten intervals logs every max_steps // 10 steps. How often a run logs never
    changes what it trains: the model's bytes are the same when it logs at every step."""
    monkeypatch.setenv("RECIPE_CPU_THREADS", "1")  # one thread count for both runs, so bytes can be compared
    cfg = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 128,
           "max_steps": 20, "batch_size": 4, "warmup_steps": 0}
    inputs = {"data": dataset(tmp_path, "d", problem_rows(12)), "tokenizer": Tokenizer(llama[1])}
    default = run_step("train.pretrain", cfg, inputs, workdir=tmp_path / "default")
    every = run_step("train.pretrain", {**cfg, "logging_steps": 1}, inputs, workdir=tmp_path / "every")
    assert [c["step"] for c in default["report"].metrics()["curve"]] == list(range(2, 21, 2))
    assert [c["step"] for c in every["report"].metrics()["curve"]] == list(range(1, 21))
    weights = [(out["model"].path / "model.safetensors").read_bytes() for out in (default, every)]
    assert weights[0] == weights[1]


def test_cores_read_as_busy_only_when_others_take_what_the_threads_need(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    for load, own, busy in [(7.0, 1, True), (1.0, 1, False), (1.8, 1, False), (2.1, 2, False), (3.2, 1, True)]:
        monkeypatch.setattr(threads.os, "getloadavg", lambda load=load: (load, load, load))
        assert threads.cores_busy(2, own) is busy, (load, own)


def feed(tuner, times_by_threads, steps):
    """Run `steps` steps whose time depends on the thread count; the counts used, step by step."""
    used = []
    threads = tuner.threads
    for i in range(steps):
        used.append(threads)
        t = times_by_threads(threads, i)
        threads = tuner.record(t)
    return used


def quiet(*_):
    return False


def test_tuner_keeps_more_threads_where_they_are_measured_faster():
    tuner = ThreadTuner(2, busy=quiet, warmup=3, window=4, every=50)
    used = feed(tuner, lambda n, i: {1: 0.10, 2: 0.06}[n], 60)
    assert used[:7] == [1] * 7  # warmup, then one thread timed
    assert used[7:11] == [2] * 4  # two threads timed
    assert used[11:61] == [2] * 49  # kept
    assert tuner.chosen == 2 and tuner.medians == {1: 0.10, 2: 0.06}


def test_tuner_stays_on_one_thread_when_more_are_not_clearly_faster():
    tuner = ThreadTuner(2, busy=quiet, warmup=3, window=4, every=50, margin=0.9)
    used = feed(tuner, lambda n, i: {1: 0.10, 2: 0.095}[n], 30)
    assert used[7:11] == [2] * 4 and set(used[11:]) == {1}


def test_tuner_stops_a_probe_at_its_first_oversubscribed_step():
    tuner = ThreadTuner(2, busy=quiet, warmup=3, window=4, every=50)
    used = feed(tuner, lambda n, i: {1: 0.10, 2: 2.5}[n], 30)
    assert used.count(2) == 1 and used[7] == 2 and tuner.chosen == 1


def test_tuner_does_not_probe_while_the_cores_are_busy():
    asked = []

    def busy(want, own):
        asked.append((want, own))
        return True

    tuner = ThreadTuner(2, busy=busy, warmup=3, window=4, every=10)
    used = feed(tuner, lambda n, i: {1: 0.10, 2: 0.01}[n], 40)
    assert set(used) == {1} and asked and asked[0] == (2, 1)


def test_tuner_probes_again_and_follows_a_change_in_load():
    tuner = ThreadTuner(2, busy=quiet, warmup=3, window=4, every=20)
    # two threads win until step 20, then other work arrives and they become 5x slower
    used = feed(tuner, lambda n, i: 0.10 if n == 1 else (0.06 if i < 20 else 0.5), 60)
    assert used[11:31] == [2] * 20  # chosen, until the next probe
    assert used[31:35] == [1] * 4 and used[35] == 2  # probe: one thread timed, then one step on two
    assert set(used[36:]) == {1} and tuner.chosen == 1
