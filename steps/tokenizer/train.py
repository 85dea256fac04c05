"""`tokenizer.train`: a small tokenizer for a from-scratch math model, with a CSV of its
vocabulary.

Two kinds, both saved as a `tokenizers` fast tokenizer that
`transformers.AutoTokenizer.from_pretrained(dir)` loads without protobuf or sentencepiece:

- `sentencepiece` (the default): a unigram model trained by sentencepiece, its pieces
  and scores carried over into a `tokenizers` Unigram model (this sidesteps transformers'
  converter, which needs protobuf and crashed on BPE models). The original
  `math_tokenizer.model` / `.vocab` are kept next to it.
- `bpe`: byte-pair encoding trained by the `tokenizers` library.

Both split digits one per token (so numbers are spelled digit by digit), keep every character
of the data (round-trip checked on the whole dataset), and have `<pad> <unk> <s> </s>` as
special tokens and `<think> </think> <answer> </answer>` as ordinary added tokens: trl's GRPO
decodes completions with `skip_special_tokens=True`, so special tags would vanish before scoring.

The chat template is the training format: a user message renders as its text plus a newline,
an assistant message as its text plus `</s>`; the generation prompt adds nothing. So
`[{"role": "user", "content": "12+(-7)"}]` renders to "12+(-7)\\n", exactly what
`train.pretrain` puts before the `<think>…</think><answer>…</answer>` solution.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Tokenizer
from engine.recipe.errors import StepError
from engine.recipe.step import Step, StepConfig, register

SPECIALS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{ message['content'] }}{{ eos_token }}"
    "{%- else -%}{{ message['content'] }}{{ '\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def prompt_text(problem: str) -> str:
    """What the chat template renders for one user message with the generation prompt."""
    return f"{problem}\n"


def corpus_texts(data: Dataset, fields: list[str], step: str) -> list[str]:
    texts = []
    for i, row in enumerate(data.rows()):
        missing = [f for f in fields if f not in row or row[f] is None]
        if missing:
            cols = ", ".join(sorted(row)) or "none"
            raise StepError(
                f"{step}: data: row {i} of {data.path} has no {missing[0]!r} field (columns: {cols}); "
                f"set text_fields to the columns holding the text"
            )
        texts.append("\n".join(str(row[f]) for f in fields))
    if not texts:
        raise StepError(f"{step}: data: {data.path} holds no rows to train a tokenizer on")
    return texts


def _untagged(texts: list[str]) -> list[str]:
    pattern = "|".join(re.escape(t) for t in TAGS)
    return [re.sub(pattern, " ", t) for t in texts]


def _pre_and_decoder():
    from tokenizers import decoders, pre_tokenizers

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    return pre, decoders.Metaspace(replacement="▁", prepend_scheme="never")


def train_sentencepiece(texts: list[str], vocab_size: int, hard_limit: bool, out: Path, step: str):
    import sentencepiece as spm
    from tokenizers import Tokenizer as TkTokenizer
    from tokenizers import models

    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, hard_vocab_limit=hard_limit,
            model_type="unigram", character_coverage=1.0, split_digits=True, user_defined_symbols=TAGS,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>",
            eos_piece="</s>", normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, allow_whitespace_only_pieces=True, max_sentence_length=1 << 16,
            num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        m = re.search(r"Please set it to a value <= (\d+)", msg)
        if m:
            raise StepError(
                f"{step}: vocab_size: {vocab_size} is larger than the data supports (at most {m.group(1)} pieces); "
                "lower vocab_size or set hard_vocab_limit: false"
            ) from None
        m = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg)
        if m:
            raise StepError(
                f"{step}: vocab_size: {vocab_size} is smaller than the {m.group(2)} distinct characters and special "
                "pieces the data needs; raise vocab_size"
            ) from None
        raise StepError(f"{step}: sentencepiece training failed: {msg.splitlines()[-1]}") from None
    proto = buf.getvalue()
    (out / "math_tokenizer.model").write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    (out / "math_tokenizer.vocab").write_text("".join(f"{p}\t{s:g}\n" for p, s in pieces), encoding="utf-8")
    tk = TkTokenizer(models.Unigram(pieces, unk_id=1, byte_fallback=False))
    tk.pre_tokenizer, tk.decoder = _pre_and_decoder()
    return tk


def train_bpe(texts: list[str], vocab_size: int, hard_limit: bool, step: str):
    from tokenizers import Tokenizer as TkTokenizer
    from tokenizers import models, trainers

    tk = TkTokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer, tk.decoder = _pre_and_decoder()
    plain = _untagged(texts)
    alphabet = sorted({c for t in plain for c in t.replace(" ", "▁")} | {"\n"})
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIALS.values()) + TAGS,
        initial_alphabet=alphabet, limit_alphabet=len(alphabet) + 1, show_progress=False,
    )
    tk.train_from_iterator(plain, trainer=trainer)
    got = tk.get_vocab_size()
    if got < vocab_size and hard_limit:
        raise StepError(
            f"{step}: vocab_size: {vocab_size} is larger than the data supports (BPE stopped at {got} tokens); "
            "lower vocab_size or set hard_vocab_limit: false"
        )
    if got < len(alphabet) + len(SPECIALS) + len(TAGS):
        raise StepError(f"{step}: vocab_size: {vocab_size} is smaller than the {len(alphabet)} distinct characters "
                        "the data needs plus 8 special tokens; raise vocab_size")
    return tk


def to_transformers(tk):
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tk, model_max_length=1 << 20, **SPECIALS)
    hf.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAGS])
    hf.padding_side = "left"  # the tokenizer mostly serves batched generation
    hf.chat_template = CHAT_TEMPLATE
    return hf


def check_round_trip(hf, texts: list[str], step: str) -> None:
    ids = hf(texts, add_special_tokens=False)["input_ids"]
    unk = hf.unk_token_id
    for text, row in zip(texts, ids):
        back = hf.decode(row, skip_special_tokens=False)
        if back != text or unk in row:
            lost = sorted({c for c in text if c not in back}) or ["(whitespace or order)"]
            raise StepError(f"{step}: the trained tokenizer does not round-trip {text[:60]!r}; lost {lost}")


def write_vocab_csv(hf, path: Path) -> None:
    """The vocabulary for inspection: every id with its token, as CSV."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "token", "special"])
        special = set(hf.all_special_ids)
        for tok, i in sorted(hf.get_vocab().items(), key=lambda kv: kv[1]):
            w.writerow([i, tok, i in special])


@register("tokenizer.train")
class TrainTokenizer(Step):
    """Train a sentencepiece (unigram) or BPE tokenizer with digit splitting and a chat template."""

    version = "1"

    class Config(StepConfig):
        kind: Literal["sentencepiece", "bpe"] = "sentencepiece"
        vocab_size: int = Field(128, ge=16, description="35 is enough for pure arithmetic")
        hard_vocab_limit: bool = Field(True, description="false: accept a smaller vocabulary when the data "
                                                         "supports fewer pieces than vocab_size")
        text_fields: list[str] = Field(default_factory=lambda: ["problem", "solution"],
                                       description="columns joined (newline) into the training text")

    inputs = {"data": Dataset}
    outputs = {"tokenizer": Tokenizer}

    def run(self, ctx):
        c = self.config
        step = "tokenizer.train"
        texts = corpus_texts(ctx.inputs["data"], c.text_fields, step)
        out = ctx.out("tokenizer")
        if c.kind == "sentencepiece":
            tk = train_sentencepiece(texts, c.vocab_size, c.hard_vocab_limit, out, step)
        else:
            tk = train_bpe(texts, c.vocab_size, c.hard_vocab_limit, step)
        hf = to_transformers(tk)
        check_round_trip(hf, texts, step)
        hf.save_pretrained(out)
        write_vocab_csv(hf, out / "vocab.csv")
        ctx.log.info("trained %s tokenizer: %d tokens on %d texts", c.kind, len(hf), len(texts))
