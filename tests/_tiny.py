"""A tiny Llama + byte-level BPE tokenizer with a chat template, built in seconds, for the
training and q* tests. `<think>`/`<answer>` tags are ordinary added tokens (they survive
`skip_special_tokens=True` decoding, as with the project's own tokenizer).

    from _tiny import make_tiny_model
    path = make_tiny_model(tmp_path / "m", seed=0)
"""
from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
    "{% else %}<|assistant|>{{ m['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|pad|>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]
TAGS = ["<think>", "</think>", "<answer>", "</answer>"]

PROBLEMS = [(f"{a}+{b}", str(a + b)) for a in range(1, 10) for b in range(1, 10)]


def solution(problem: str, answer: str) -> str:
    return f"<think>{problem}={answer}</think><answer>{answer}</answer>"


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"{p}={a} " + solution(p, a) for p, a in PROBLEMS] * 2
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>",
                                   additional_special_tokens=SPECIAL[2:])
    fast.add_tokens(TAGS)  # ordinary, not special
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(path: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2,
                    logit_scale: float = 1.0, tokenizer=None) -> Path:
    """Save a randomly initialised tiny Llama and its tokenizer into `path` (a Model dir).

    `logit_scale` > 1 sharpens its next-token distributions (a fresh model is nearly uniform),
    so two seeds give clearly different π_θ and π_t for the q* tests.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.norm.weight.mul_(logit_scale)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def problem_rows(n: int = 8) -> list[dict]:
    return [{"id": f"p{i}", "problem": f"What is {p}?", "answer": a, "domain": "arithmetic",
             "solution": solution(p, a)} for i, (p, a) in enumerate(PROBLEMS[:n])]


def dataset(root: Path, name: str, rows: list[dict]):
    """`rows` written as a Dataset artifact in `root/name`."""
    from engine.recipe.artifact_types import Dataset, write_records

    write_records(Path(root) / name / "data.jsonl", rows)
    return Dataset(Path(root) / name)


def preference_rows(n: int = 8) -> list[dict]:
    """Rows shaped like rank.preferences' output."""
    rows = []
    for i, (p, a) in enumerate(PROBLEMS[:n]):
        wrong = str(int(a) + 1)
        rows.append({"id": f"p{i}", "instruction": f"What is {p}?", "chosen": solution(p, a),
                     "rejected": solution(p, wrong), "score_chosen": 1.0, "score_rejected": 0.0})
    return rows


# ---------------------------------------------------------------------------- the project's own tiny model

def arithmetic_tiny_cache(tmp_path_factory) -> Path:
    """A recipe cache holding recipes/arithmetic_llm.yaml's tiny pretrain and finetune1 models.

    Built once per pytest session (under its base temp dir, behind a file lock) by running the
    recipe through the CLI, so every end-to-end test module that builds on the tiny model pays
    for it once. Callers copy it (`copy_cache`) rather than write into it.
    """
    from conftest import ROOT, RecipeCLI
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp() / "arithmetic_llm_tiny"
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        done = root / "done"
        if not done.exists():
            cli = RecipeCLI(root)
            cli("run", str(ROOT / "recipes" / "arithmetic_llm.yaml"), "--profile", "tiny",
                "--only", "finetune1", "-q")
            done.write_text("ok")
    return root / "cache"


def copy_cache(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("locks", "tmp", "runs", "scratch"))
    return dst


def run_tiny_profile(tmp_path_factory, recipe: Path, name: str):
    """Run `recipe --profile tiny` in its own cache seeded with the shared tiny model;
    returns the RecipeCLI with the first run's statuses as `first_statuses`."""
    from conftest import RecipeCLI

    cli = RecipeCLI(tmp_path_factory.mktemp(name))
    copy_cache(arithmetic_tiny_cache(tmp_path_factory), cli.cache)
    cli("run", str(recipe), "--profile", "tiny", "-q")
    cli.first_statuses = cli.statuses()
    return cli


def quickstart_tiny_run(tmp_path_factory):
    """recipes/quickstart.yaml --profile tiny, run once per pytest session through the CLI
    (behind a file lock), its console output kept: `first_stdout`, `first_stderr`, `run_id`.
    Callers read its cache and write their own files elsewhere (copy_cache to rerun)."""
    from conftest import ROOT, RecipeCLI
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp() / "quickstart_tiny"
    root.mkdir(exist_ok=True)
    cli = RecipeCLI(root)
    with FileLock(str(root) + ".lock"):
        if not (root / "run_id").exists():
            p = cli("run", str(ROOT / "recipes" / "quickstart.yaml"), "--profile", "tiny")
            (root / "stdout.txt").write_text(p.stdout)
            (root / "stderr.txt").write_text(p.stderr)
            (root / "run_id").write_text(cli.last_run()["run_id"])
    cli.first_stdout, cli.first_stderr = (root / "stdout.txt").read_text(), (root / "stderr.txt").read_text()
    cli.run_id = (root / "run_id").read_text()
    cli.first_run = json.loads((cli.cache / "runs" / f"{cli.run_id}.json").read_text())
    return cli


def quickstart_tiny_model(tmp_path_factory) -> Path:
    """The quickstart's tiny fine-tuned model (recipes/quickstart.yaml --profile tiny --only
    finetune: tokenizer, pretrain, error fine-tuning; ~15 s), built once per pytest session
    behind a file lock. Returns its Model directory; callers only read it."""
    from conftest import ROOT, RecipeCLI
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp() / "quickstart_tiny_model"
    root.mkdir(exist_ok=True)
    cli = RecipeCLI(root)
    with FileLock(str(root) + ".lock"):
        if not (root / "done").exists():
            cli("run", str(ROOT / "recipes" / "quickstart.yaml"), "--profile", "tiny", "--only", "finetune", "-q")
            (root / "done").write_text("ok")
    return (cli.artifacts / "quickstart" / "finetune" / "model").resolve()
