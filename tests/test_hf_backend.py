"""TransformersBackend on a tiny random Llama (CPU, built in the test; no Hub access)."""
import pytest

from engine.recipe.errors import StepError
from steps.backends import BackendConfig, Sampling, load_backend


def _tiny_model(path):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list("0123456789+-*/=() abcdefghijklmnopqrstuvwxyz:.?")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in chars:
        vocab[c] = len(vocab)
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    t.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>")
    tok.add_tokens(["<think>", "</think>", "<answer>", "</answer>"])
    tok.chat_template = ("{% for m in messages %}Q:{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}={% endif %}")
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("tiny_llama"))


PROMPTS = ["1+2=", "33*4=", "abc", "7-(8*9)=", "x"]


def test_greedy_batched_equals_one_at_a_time(model_dir):
    # left padding + attention mask: a prompt's greedy text must not depend on its batch mates
    batched = load_backend(BackendConfig(batch_size=8), model_dir).generate(PROMPTS, Sampling(max_new_tokens=12))
    single = load_backend(BackendConfig(batch_size=1), model_dir).generate(PROMPTS, Sampling(max_new_tokens=12))
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert all(len(c) == 1 for c in batched)


def test_length_finish_reason_and_budget(model_dir):
    out = load_backend(BackendConfig(), model_dir).generate(["1+2="], Sampling(max_new_tokens=5))
    comp = out[0][0]
    if comp.finish_reason == "length":
        assert len(comp.text) <= 5 * len("</answer>")
    assert comp.finish_reason in ("length", "stop")
    # the context is 64 positions: a huge budget is clamped rather than running past it
    out = load_backend(BackendConfig(), model_dir).generate(["1+2="], Sampling(max_new_tokens=10_000))
    assert out[0][0].finish_reason in ("length", "stop")


def test_sampling_n_independent_and_seeded(model_dir):
    backend = load_backend(BackendConfig(batch_size=4), model_dir)
    s = Sampling(temperature=1.0, top_p=0.95, n=3, seed=7, max_new_tokens=10)
    a = backend.generate(PROMPTS, s)
    b = backend.generate(PROMPTS, s)
    assert [len(x) for x in a] == [3] * len(PROMPTS)
    assert [[c.text for c in x] for x in a] == [[c.text for c in x] for x in b]
    # samples of one prompt are independent draws, not copies
    assert any(len({c.text for c in x}) > 1 for x in a)
    c = backend.generate(PROMPTS, s.model_copy(update={"seed": 8}))
    assert [[c_.text for c_ in x] for x in a] != [[c_.text for c_ in x] for x in c]


def test_greedy_n_copies_are_identical(model_dir):
    out = load_backend(BackendConfig(), model_dir).generate(["1+2="], Sampling(n=3, max_new_tokens=6))
    assert len(out[0]) == 3 and len({c.text for c in out[0]}) == 1


def test_stop_strings_are_cut(model_dir):
    backend = load_backend(BackendConfig(), model_dir)
    free = backend.generate(PROMPTS, Sampling(temperature=1.0, n=4, seed=3, max_new_tokens=20))
    stops = ["a", "1"]
    cut = backend.generate(PROMPTS, Sampling(temperature=1.0, n=4, seed=3, max_new_tokens=20, stop=stops))
    for comps in cut:
        for c in comps:
            assert not any(s in c.text for s in stops)
    hits = [c for comps in cut for c in comps if c.finish_reason == "stop"]
    assert hits, "with single-character stop strings at least one sample should stop on them"
    assert len(free) == len(cut)


def test_chat_messages_use_the_chat_template(model_dir):
    backend = load_backend(BackendConfig(), model_dir)
    assert backend.render([{"role": "user", "content": "5-6"}]) == ("Q:5-6=", False)
    a = backend.generate([[{"role": "user", "content": "5-6"}]], Sampling(max_new_tokens=8))
    b = backend.generate(["Q:5-6="], Sampling(max_new_tokens=8))
    assert a[0][0].text == b[0][0].text


def test_logprobs_one_per_token(model_dir):
    backend = load_backend(BackendConfig(), model_dir)
    out = backend.generate(["1+2="], Sampling(max_new_tokens=6, logprobs=True))
    lp = out[0][0].token_logprobs
    assert lp is not None and 1 <= len(lp) <= 6 and all(v <= 0 for v in lp)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(StepError, match="is not a model directory"):
        load_backend(BackendConfig(), str(tmp_path / "nope"))


def test_cuda_requested_without_gpu_is_a_clear_error(model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(StepError, match="no CUDA device"):
        load_backend(BackendConfig(device="cuda"), model_dir)


@pytest.mark.parametrize("damage, message", [
    ("truncated_weights", "backend: model m: cannot load it (SafetensorError: "),  # then safetensors' own words
    ("no_tokenizer", "backend: model m: no tokenizer next to it (expected tokenizer.json or "
                     "tokenizer_config.json, as save_pretrained writes)"),
    ("broken_config", "backend: tokenizer of model m: cannot load it (OSError: It looks like the config file at "
                      "'m/config.json' is not a valid JSON file.)"),
    ("foreign_tokenizer", "backend: model m: its tokenizer has {vocab} tokens but the model's embedding only 55 rows; "
                          "the tokenizer does not belong to this model"),
])
def test_damaged_model_directory_is_one_message_through_the_cli(cli, model_dir, damage, message):
    """A truncated safetensors file or a missing tokenizer once ended in a transformers traceback;
    another model's (larger) tokenizer in an IndexError on every row."""
    import json
    import shutil

    from conftest import write

    m = cli.tmp / "m"
    shutil.copytree(model_dir, m)
    if damage == "truncated_weights":
        w = (m / "model.safetensors").read_bytes()
        (m / "model.safetensors").write_bytes(w[: len(w) // 2])
    elif damage == "no_tokenizer":
        (m / "tokenizer.json").unlink()
        (m / "tokenizer_config.json").unlink()
    elif damage == "foreign_tokenizer":
        from _tiny import make_tokenizer

        tok = make_tokenizer()
        tok.save_pretrained(m)
        message = message.format(vocab=len(tok))
    else:
        (m / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    write(cli.tmp / "problems.jsonl", json.dumps({"id": "a", "instruction": "1+2"}) + "\n")
    write(cli.tmp / "gen.yaml", """recipe: gen
steps:
  - id: problems
    uses: data.from_file
    with: {path: problems.jsonl}
  - id: responses
    uses: generate.responses
    with: {model: ./m, max_new_tokens: 2, backend: {device: cpu}}
    inputs: {problems: "${steps.problems.data}"}
""")
    p = cli("run", "gen.yaml", check=1)
    out = p.stdout + p.stderr
    assert message in " ".join(out.split()), out
    assert "Traceback" not in out
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["problems"]


def test_a_prompt_longer_than_the_model_fails_alone_not_its_batch(tmp_path):
    """GPT-2 style learned positions: one prompt past n_positions raised an IndexError that failed
    every prompt batched with it (a rope model instead answered it with one token past its context)."""
    from _tiny import make_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = make_tokenizer()
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=32, n_layer=1, n_head=2,
                               bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    backend = load_backend(BackendConfig(device="cpu", batch_size=8), str(tmp_path))
    long = "what is " + "1+1 " * 30
    short, too_long = backend.generate(["1+1", long], Sampling(max_new_tokens=3, n=2, temperature=1.0))
    assert [c.finish_reason for c in short] != ["error", "error"] and all(c.error is None for c in short)
    n = len(backend.encode(long))
    assert n >= 16
    assert [c.error for c in too_long] == [f"prompt is {n} tokens; the model takes at most 16 positions"] * 2
