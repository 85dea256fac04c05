"""Where more torch threads start to pay for training on this machine: a training step (forward,
backward, AdamW) of quickstart-shaped Llamas of growing width on 1 thread and on all usable cores,
alternating, and what train.pretrain / train.finetune's ThreadTuner would keep.

    python benchmarks/bench_train_threads.py                 # hidden 128 (the quickstart's), 256, 512, 1024
    python benchmarks/bench_train_threads.py --hidden 128 --rounds 5

A batch is 32 examples of 15-60 tokens, packed as steps/train/packing.py packs them. There is
no parameter threshold to tune: the crossover depends on the CPU, the batch and what else runs,
which is why training measures its own steps (steps/common/threads.py). Figures are medians of
`--rounds` alternated windows of `--steps` steps; the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time


def make_model(hidden: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def make_batch(seed: int = 0):
    from steps.train.packing import collate

    rng = random.Random(seed)
    examples = []
    for _ in range(32):
        n = rng.randint(15, 60)
        ids = [rng.randrange(10, 512) for _ in range(n)]
        examples.append({"input_ids": ids, "labels": [-100] * (n // 2) + ids[n // 2:]})
    return collate(0, packed=True)(examples)


def step_seconds(model, optimizer, batch, threads: int, steps: int) -> float:
    import torch

    torch.set_num_threads(threads)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch

    from steps.train.thread_tuning import ThreadTuner, usable_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="*", default=[128, 256, 512, 1024])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    many = usable_cores()
    margin = ThreadTuner(many).margin
    batch = make_batch()
    print(f"{many} usable cores, load {os.getloadavg()[0]:.2f}; a step is 32 packed examples")
    print(f"{'hidden':>7} {'params':>10} {'1 thread ms':>12} {f'{many} threads ms':>14} {'ratio':>6}  tuner keeps")
    for hidden in a.hidden:
        model = make_model(hidden)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step_seconds(model, optimizer, batch, 1, 2)  # warm up
        one, more = [], []
        for _ in range(a.rounds):
            one.append(step_seconds(model, optimizer, batch, 1, a.steps))
            more.append(step_seconds(model, optimizer, batch, many, a.steps))
        t1, tn = statistics.median(one), statistics.median(more)
        params = sum(p.numel() for p in model.parameters())
        keeps = many if tn < margin * t1 else 1
        print(f"{hidden:>7} {params:>10,} {t1 * 1000:>12.1f} {tn * 1000:>14.1f} {tn / t1:>6.2f}  {keeps} thread(s)")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
