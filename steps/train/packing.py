"""Packed training batches: several examples share a row, so a batch of short and long examples
computes few padding positions (padding was 45% of the quickstart's training compute: random
batches of 15-60 tokens padded to their longest).

Examples in a row are told apart by position ids restarting at 0 and no attention mask;
transformers then masks attention per example. A batch holds the same examples and its loss
the same targets as the padded one; `packs_exactly` checks that on the model at hand before
training uses it (a model without that masking would let examples see each other).
"""
from __future__ import annotations


def pack_rows(lengths: list[int]) -> list[list[int]]:
    """Example indices grouped into rows no longer than the longest example (first fit, longest first)."""
    width = max(lengths)
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, f in enumerate(free) if f >= lengths[i]), len(rows))
        if r == len(rows):
            rows.append([])
            free.append(width)
        rows[r].append(i)
        free[r] -= lengths[i]
    return rows


def collate(pad_id: int, packed: bool):
    """The Trainer's data collator: padded rows of one example each, or packed rows."""
    import torch

    def batch_of(examples):
        lengths = [len(e["input_ids"]) for e in examples]
        rows = pack_rows(lengths) if packed else [[i] for i in range(len(examples))]
        width = max(sum(lengths[i] for i in row) for row in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = lengths[i]
                ids[r, at:at + n] = torch.tensor(examples[i]["input_ids"])
                # position 0 is never a target: packed, its label would be scored on the previous example
                labels[r, at + 1:at + n] = torch.tensor(examples[i]["labels"][1:])
                mask[r, at:at + n] = 1
                positions[r, at:at + n] = torch.arange(n)
                at += n
            positions[r, at:] = torch.arange(width - at)  # the padding: a sequence of its own
        if packed:
            return {"input_ids": ids, "labels": labels, "position_ids": positions, "use_cache": False}
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return batch_of


def packs_exactly(model, examples: list[dict[str, list[int]]], pad_id: int) -> bool:
    """Whether packing changes nothing for this model: the loss of the longest example and the
    two shortest ones, packed, equals their loss padded. False when nothing would pack anyway."""
    import torch

    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    probe = [examples[i] for i in dict.fromkeys([order[-1], *order[:2]])]
    if len(pack_rows([len(e["input_ids"]) for e in probe])) == len(probe):
        return False
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout: the two losses must be comparable
    try:
        with torch.no_grad():
            losses = [model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                               for k, v in collate(pad_id, packed)(probe).items()}).loss for packed in (False, True)]
    finally:
        model.train(was_training)
    return bool(torch.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-6))
