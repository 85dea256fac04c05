"""tokenizer.train: loads with AutoTokenizer, round-trips the data, chat template = training format."""
import pytest

from engine.recipe.errors import StepError
from engine.run.testing import run_step
from steps.tokenizer.train import TAGS, prompt_text


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    arith = run_step("problems.arithmetic", {"count": 300, "seed": 0}, workdir=d / "a")["problems"]
    mixed = run_step("problems.synthetic", {"counts": {"algebra": 20, "calculus": 20, "geometry": 20,
                                                       "statistics": 20, "number_theory": 20, "discrete": 20}},
                     workdir=d / "s")["problems"]
    return {"arith": arith, "mixed": mixed}


@pytest.mark.parametrize("kind,vocab", [("sentencepiece", 150), ("bpe", 200)])
def test_tokenizer_loads_round_trips_and_renders_training_format(tmp_path, data, kind, vocab):
    from transformers import AutoTokenizer

    out = run_step("tokenizer.train", {"kind": kind, "vocab_size": vocab}, {"data": data["mixed"]},
                   workdir=tmp_path)["tokenizer"]
    tok = AutoTokenizer.from_pretrained(out.path)
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>"
    assert tok.pad_token_id != tok.eos_token_id
    assert len(tok) == vocab
    # the tags are single, ordinary tokens that survive skip_special_tokens
    for tag in TAGS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] not in tok.all_special_ids
    rows = data["mixed"].read()
    text = "".join(r["problem"] + "\n" + r["solution"] for r in rows)
    for r in rows:  # every character of the data comes back
        full = r["problem"] + "\n" + r["solution"]
        ids = tok(full, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == full
        assert tok.decode(ids, skip_special_tokens=True) == full
    assert set(text) <= set(tok.decode(tok(text, add_special_tokens=False)["input_ids"]))
    # digits are spelled one per token
    assert tok.convert_ids_to_tokens(tok("1234", add_special_tokens=False)["input_ids"]) == ["1", "2", "3", "4"]
    # the chat template renders exactly the format train.pretrain trains on
    msgs = [{"role": "user", "content": rows[0]["problem"]}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert prompt == prompt_text(rows[0]["problem"]) == rows[0]["problem"] + "\n"
    convo = tok.apply_chat_template(msgs + [{"role": "assistant", "content": rows[0]["solution"]}], tokenize=False)
    assert convo == prompt + rows[0]["solution"] + "</s>"
    assert (out.path / "vocab.csv").read_text().startswith("id,token,special\n0,")


def test_sentencepiece_keeps_seed_model_files(tmp_path, data):
    out = run_step("tokenizer.train", {"kind": "sentencepiece", "vocab_size": 33}, {"data": data["arith"]},
                   workdir=tmp_path)["tokenizer"]
    assert (out.path / "math_tokenizer.model").stat().st_size > 0
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=str(out.path / "math_tokenizer.model"))
    tok = AutoTokenizer.from_pretrained(out.path)
    for r in data["arith"].read()[:50]:  # the converted tokenizer segments exactly like sentencepiece
        text = r["problem"] + "\n" + r["solution"]
        assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)


def test_vocab_larger_than_data_supports_is_a_clear_error(tmp_path, data):
    with pytest.raises(StepError, match=r"tokenizer.train: vocab_size: 500 is larger than the data supports "
                                        r"\(at most \d+ pieces\)"):
        run_step("tokenizer.train", {"kind": "sentencepiece", "vocab_size": 500}, {"data": data["arith"]},
                 workdir=tmp_path / "sp")
    with pytest.raises(StepError, match="tokenizer.train: vocab_size: 500 is larger than the data supports"):
        run_step("tokenizer.train", {"kind": "bpe", "vocab_size": 500}, {"data": data["arith"]},
                 workdir=tmp_path / "bpe")
    # ... unless the user accepts a smaller vocabulary
    out = run_step("tokenizer.train", {"kind": "sentencepiece", "vocab_size": 500, "hard_vocab_limit": False},
                   {"data": data["arith"]}, workdir=tmp_path / "soft")["tokenizer"]
    assert (out.path / "tokenizer.json").exists()


def test_dataset_without_text_column_is_a_clear_error(tmp_path):
    from engine.recipe.artifact_types import write_records

    write_records(tmp_path / "d" / "data.jsonl", [{"instruction": "1+1", "response": "2"}])
    with pytest.raises(StepError, match=r"tokenizer.train: data: row 0 of .* has no 'problem' field "
                                        r"\(columns: instruction, response\)"):
        run_step("tokenizer.train", {}, {"data": tmp_path / "d"}, workdir=tmp_path / "w")
    # the generation workflow's columns (instruction, response) work when named
    write_records(tmp_path / "e" / "data.jsonl",
                  [{"instruction": f"{i}+{i}", "response": str(2 * i)} for i in range(200)])
    out = run_step("tokenizer.train", {"text_fields": ["instruction", "response"], "vocab_size": 20,
                                       "hard_vocab_limit": False}, {"data": tmp_path / "e"},
                   workdir=tmp_path / "w2")["tokenizer"]
    assert (out.path / "tokenizer.json").exists()
