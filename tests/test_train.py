"""train.sft / train.dpo / train.grpo / train.reward_model on a tiny Llama (CPU, a few steps each)."""
import json

import pytest
from _tiny import dataset, make_tiny_model, preference_rows, problem_rows

from engine.recipe.artifact_types import Model
from engine.recipe.errors import StepError
from engine.run.testing import run_step
from steps.train.rewards import R1Reward, make_trl_reward
from steps.train.temperature import TemperatureSchedule
from steps.train.trl_common import LaunchSettings, launch_command

FAST = {"max_steps": 2, "learning_rate": 1e-4, "per_device_train_batch_size": 4, "max_length": 64}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_r1_reward_values():
    r = R1Reward()
    assert r("<think>1+2=3</think><answer>3</answer>", "3") == 10
    assert r("<think>1+2=4</think><answer>4</answer>", "3") == 1
    assert r("the answer is 3", "3") == 0
    assert r("<answer>3</answer>", "3") == 0
    custom = R1Reward(bad_format=-1, wrong=0, correct=2)
    assert custom("<think>x</think><answer>0.5</answer>", "1/2") == 2


def test_trl_reward_reads_answer_column_and_chat_completions():
    seen = []
    fn = make_trl_reward(R1Reward(), on_batch=seen.append)
    comps = [[{"role": "assistant", "content": "<think>a</think><answer>5</answer>"}], "junk"]
    assert fn(prompts=["p", "p"], completions=comps, answer=["5", "5"]) == [10.0, 0.0]
    assert seen == [["correct", "bad_format"]]
    with pytest.raises(KeyError, match="answer"):
        fn(prompts=["p"], completions=["x"])


def test_temperature_schedule_linear_and_cosine():
    s = TemperatureSchedule(1.0, 0.1)
    assert [round(s.value(i, 4), 4) for i in range(4)] == [1.0, 0.7, 0.4, 0.1]
    c = TemperatureSchedule(1.0, 0.0, "cosine")
    assert c.value(0, 3) == 1.0 and c.value(1, 3) == pytest.approx(0.5) and c.value(2, 3) == pytest.approx(0.0)
    assert TemperatureSchedule(0.7, 0.1, "constant").value(5, 10) == 0.7


def test_launch_command_for_accelerate_fakes_no_gpu():
    cmd = launch_command("job.json",
                         LaunchSettings(num_processes=8, config_file="fsdp.yaml", extra=["--num_machines", "2"]))
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--num_processes", "8", "--config_file", "fsdp.yaml",
                       "--num_machines", "2", "-m", "steps.train.trl_common", "job.json"]


def test_sft_trains_saves_model_with_tokenizer_and_report(tiny, tmp_path):
    data = dataset(tmp_path, "d", problem_rows(8))
    out = run_step("train.sft", FAST, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")
    model_dir = out["model"].path
    assert (model_dir / "config.json").exists() and (model_dir / "tokenizer.json").exists()
    metrics = out["report"].metrics()
    assert metrics["global_step"] == 2
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_second"] > 0
    assert [h["step"] for h in metrics["log_history"] if "loss" in h] == [1, 2]
    assert (out["report"].path / "loss.png").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(model_dir)
    assert "<think>" in AutoTokenizer.from_pretrained(model_dir).get_vocab()


def test_sft_with_lora_merges_adapter(tiny, tmp_path):
    data = dataset(tmp_path, "d", problem_rows(4))
    cfg = {**FAST, "max_steps": 1, "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    out = run_step("train.sft", cfg, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")
    assert not (out["model"].path / "adapter_config.json").exists()
    assert (out["model"].path / "config.json").exists()


def test_sft_missing_column_is_one_clear_error(tiny, tmp_path):
    data = dataset(tmp_path, "d", [{"text": "hello"}])
    with pytest.raises(StepError, match=r"train.sft: .*none of the prompt columns prompt, problem"):
        run_step("train.sft", FAST, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")


def test_missing_model_path_is_one_clear_error(tmp_path):
    data = dataset(tmp_path, "d", problem_rows(2))
    with pytest.raises(StepError, match="train.sft: model: ./nowhere: not a model directory"):
        run_step("train.sft", {**FAST, "model": "./nowhere"}, {"data": data}, workdir=tmp_path / "w")


def test_dpo_on_rank_preferences_rows(tiny, tmp_path):
    data = dataset(tmp_path, "d", preference_rows(8))
    out = run_step("train.dpo", {**FAST, "learning_rate": 1e-5}, {"data": data, "model": Model(tiny)},
                   workdir=tmp_path / "w")
    metrics = out["report"].metrics()
    assert metrics["global_step"] == 2
    assert any("rewards/margins" in h for h in metrics["log_history"])
    assert (out["model"].path / "tokenizer.json").exists()


def test_dpo_missing_rejected_column(tiny, tmp_path):
    data = dataset(tmp_path, "d", [{"instruction": "x", "chosen": "y"}])
    with pytest.raises(StepError, match="column 'rejected' not found"):
        run_step("train.dpo", FAST, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")


def test_reward_model_is_a_sequence_classifier(tiny, tmp_path):
    data = dataset(tmp_path, "d", preference_rows(8))
    out = run_step("train.reward_model", {**FAST, "learning_rate": 1e-3}, {"data": data, "model": Model(tiny)},
                   workdir=tmp_path / "w")
    cfg = json.loads((out["model"].path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"] and len(cfg["id2label"]) == 1
    assert 0.0 <= out["report"].metrics()["preference_accuracy"] <= 1.0


def test_grpo_logs_reward_per_step_and_follows_temperature_schedule(tiny, tmp_path):
    data = dataset(tmp_path, "d", problem_rows(8))
    cfg = {"max_steps": 3, "learning_rate": 1e-5, "per_device_train_batch_size": 4,
           "gradient_accumulation_steps": 1, "num_generations": 4, "max_completion_length": 8,
           "initial_temperature": 1.0, "final_temperature": 0.2}
    out = run_step("train.grpo", cfg, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")
    m = out["report"].metrics()
    assert m["global_step"] == 3
    assert [round(p["temperature"], 3) for p in m["reward_per_step"]] == [1.0, 0.6, 0.2]
    assert all(p["reward_mean"] is not None and p["reward_std"] is not None for p in m["reward_per_step"])
    assert m["temperature_patched_logprobs"] is True
    assert sum(m["outcome_counts"].values()) == 3 * 4  # every completion was scored
    assert (out["report"].path / "reward.png").exists()


def test_grpo_rejects_batch_not_divisible_by_generations(tiny, tmp_path):
    data = dataset(tmp_path, "d", problem_rows(4))
    cfg = {"max_steps": 1, "per_device_train_batch_size": 3, "gradient_accumulation_steps": 1, "num_generations": 2}
    with pytest.raises(StepError, match="must be a multiple of num_generations = 2"):
        run_step("train.grpo", cfg, {"data": data, "model": Model(tiny)}, workdir=tmp_path / "w")


def test_killed_training_resumes_from_last_checkpoint_in_scratch(tiny, tmp_path):
    import shutil

    data = dataset(tmp_path, "d", problem_rows(8))
    cfg = {**FAST, "save_steps": 1, "save_total_limit": 5}
    inputs = {"data": data, "model": Model(tiny)}
    first = run_step("train.sft", cfg, inputs, workdir=tmp_path / "a", scratch=tmp_path / "scratch")
    assert first["report"].metrics()["resumed_from"] is None
    # simulate a kill after step 1: only checkpoint-1 survives in the scratch of the same key
    shutil.rmtree(tmp_path / "scratch" / "checkpoints" / "checkpoint-2")
    again = run_step("train.sft", cfg, inputs, workdir=tmp_path / "b", scratch=tmp_path / "scratch")
    m = again["report"].metrics()
    assert m["resumed_from"] == "checkpoint-1" and m["global_step"] == 2


# ---------------------------------------------------------------------------- the project's own tiny model

@pytest.fixture(scope="module")
def project_tiny(tmp_path_factory):
    """tokenizer.train + train.pretrain at test sizes: the sentencepiece tokenizer and chat template
    the recipes use (the recipe tests cover SFT, GRPO and q* on it; DPO and reward models here)."""
    d = tmp_path_factory.mktemp("project_tiny")
    data = run_step("problems.arithmetic",
                    {"count": 100, "min_value": 0, "max_value": 9, "operators": ["+"], "seed": 0},
                    workdir=d / "data")["problems"]
    tok = run_step("tokenizer.train", {"vocab_size": 30, "hard_vocab_limit": False}, {"data": data},
                   workdir=d / "tok")["tokenizer"]
    pre = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 48,
           "max_steps": 10, "logging_steps": 5}
    model = run_step("train.pretrain", pre, {"data": data, "tokenizer": tok}, workdir=d / "pretrain")["model"]
    pairs = [{"instruction": r["problem"], "chosen": r["solution"],
              "rejected": r["solution"].replace(f"<answer>{r['answer']}<", f"<answer>{int(r['answer']) + 1}<"),
              "score_chosen": 1.0, "score_rejected": 0.0} for r in data.read()[:8]]
    return {"model": model, "pairs": dataset(d, "pairs", pairs)}


def test_dpo_and_reward_model_train_on_the_project_tiny_model(project_tiny, tmp_path):
    from transformers import AutoTokenizer

    inputs = {"data": project_tiny["pairs"], "model": project_tiny["model"]}
    dpo = run_step("train.dpo", {**FAST, "learning_rate": 1e-5}, inputs, workdir=tmp_path / "dpo")
    assert dpo["report"].metrics()["global_step"] == 2
    tok = AutoTokenizer.from_pretrained(dpo["model"].path)
    assert tok.apply_chat_template([{"role": "user", "content": "3+4"}], tokenize=False,
                                   add_generation_prompt=True) == "3+4\n"
    rm = run_step("train.reward_model", FAST, inputs, workdir=tmp_path / "rm")
    cfg = json.loads((rm["model"].path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"]
    assert 0.0 <= rm["report"].metrics()["preference_accuracy"] <= 1.0


def test_trl_exports_keep_the_problem_as_the_prompt(project_tiny, tmp_path):
    """Issue 9 finding 3: the generation workflow's preference file has no prompt, so trl takes the common prefix
    of chosen and rejected; export.files' trl shapes carry the problem as `prompt`."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational, maybe_extract_prompt

    pairs = project_tiny["pairs"]
    sft = dataset(tmp_path, "sft", [{"instruction": r["instruction"], "response": r["chosen"], "id": i}
                                    for i, r in enumerate(pairs.read())])
    cfg = {"files": [{"name": "dpo/p_dpo.jsonl", "trl": "preference"}, {"name": "sft/p_sft.jsonl", "trl": "sft"}]}
    files = run_step("export.files", cfg, {"datasets": [pairs, sft]}, workdir=tmp_path / "export")["files"].path
    source = pairs.read()
    seed_shape = {"chosen": source[0]["chosen"], "rejected": source[0]["rejected"]}
    assert maybe_extract_prompt(seed_shape)["prompt"].startswith("<think>")  # what trl took as the prompt before
    dpo_rows = [json.loads(line) for line in (files / "dpo" / "p_dpo.jsonl").read_text().splitlines()]
    sft_rows = [json.loads(line) for line in (files / "sft" / "p_sft.jsonl").read_text().splitlines()]
    for row, src in zip(dpo_rows, source):
        assert is_conversational(row) and maybe_extract_prompt(row) == row  # nothing left for trl to guess
        assert row["prompt"] == [{"role": "user", "content": src["instruction"]}]
        assert row["chosen"] == [{"role": "assistant", "content": src["chosen"]}]
    for row, src in zip(sft_rows, source):
        assert is_conversational(row) and set(row) == {"prompt", "completion"}
        assert row["prompt"][0]["content"] == src["instruction"]

    # trl's own trainer on the file as written, on the project's tiny model: 2 steps
    train = load_dataset(str(files / "dpo"))["train"]  # the folder, as trl's --dataset_name reads it
    tok = AutoTokenizer.from_pretrained(project_tiny["model"].path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(project_tiny["model"].path)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=4, max_length=64,
                     report_to=[], logging_steps=1, save_strategy="no", use_cpu=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tok)
    prompt = tok.decode(trainer.train_dataset[0]["prompt_ids" if "prompt_ids" in trainer.train_dataset.column_names
                                                 else "prompt_input_ids"])
    assert source[0]["instruction"] in prompt
    assert trainer.train().global_step == 2


SFT_RECIPE = """recipe: sft
steps:
  - id: data
    uses: data.from_file
    with: {path: data.jsonl}
  - id: sft
    uses: train.sft
    with: {model: ./model, WITH}
    inputs: {data: "${steps.data.data}"}
"""


def sft_recipe(cli, tiny, settings: str) -> str:
    import shutil

    shutil.copytree(tiny, cli.tmp / "model")
    (cli.tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in problem_rows(4)))
    (cli.tmp / "r.yaml").write_text(SFT_RECIPE.replace("WITH", settings))
    return "r.yaml"


@pytest.mark.parametrize("bad, message", [
    ("learning_rate: -1", "config field 'learning_rate': Input should be greater than 0 (got -1)"),
    ("per_device_train_batch_size: 0",
     "config field 'per_device_train_batch_size': Input should be greater than or equal to 1 (got 0)"),
    ("gradient_accumulation_steps: 0",
     "config field 'gradient_accumulation_steps': Input should be greater than or equal to 1 (got 0)"),
    ("max_steps: 0", "config field 'max_steps': Value error, 0 trains nothing; expected a positive number of "
                     "steps, or -1 to train num_train_epochs (got 0)"),
    ("num_train_epochs: 0", "config field 'num_train_epochs': Input should be greater than 0 (got 0)"),
])
def test_training_settings_that_make_no_sense_are_plan_time_errors(cli, tiny, bad, message):
    """A negative learning rate, batch 0 or accumulation 0 once crashed inside torch/transformers with a
    traceback; 0 steps or 0 epochs 'trained' and cached the untouched model."""
    p = cli("run", sft_recipe(cli, tiny, bad), check=2)
    assert "error: r.yaml:8:" in p.stderr and f"step sft: {message}" in p.stderr, p.stderr
    assert not list(cli.cache.rglob("entry.json"))


def test_max_length_that_leaves_no_completion_is_one_message_and_caches_nothing(cli, tiny):
    """trl drops every row whose prompt fills max_length; torch then failed on an empty sampler."""
    p = cli("run", sft_recipe(cli, tiny, "max_steps: 2, per_device_train_batch_size: 2, max_length: 2"), check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert ("train.sft: no row left to train on: trl dropped all 4 rows while tokenizing "
            "(max_length 2 leaves no completion tokens?)") in out, out
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["data"]


@pytest.mark.parametrize("row, message", [
    ({"problem": "1+1", "solution": None}, "row 1: 'solution' is null; expected non-empty text"),
    ({"problem": "1+1", "solution": " "}, "row 1: 'solution' is empty; expected non-empty text"),
    ({"problem": 7, "solution": "7"}, "row 1: 'problem' is int 7; expected non-empty text"),
    ({"problem": "1+1"}, "row 1: 'solution' is missing; expected non-empty text"),
])
def test_a_row_without_text_to_train_on_is_one_message_and_caches_nothing(cli, tiny, row, message):
    """str(None) was trained on as the completion "None" and the model cached; a column missing
    from a later row was a KeyError traceback."""
    f = sft_recipe(cli, tiny, "max_steps: 1, per_device_train_batch_size: 2")
    rows = problem_rows(2)
    rows[1] = row
    (cli.tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = cli("run", f, check=1)
    out = " ".join((p.stdout + p.stderr).split())
    assert "failed sft " in out and f"/outputs/data: {message}" in out, out
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["data"]


@pytest.mark.parametrize("damage, message", [
    ("truncated_weights", "train.reward_model: model model: cannot load it (SafetensorError: "),  # safetensors' words
    ("no_weights", "train.reward_model: model model: cannot load it (OSError: "),
])
def test_a_damaged_reward_model_base_is_one_message_naming_it(cli, tiny, damage, message):
    """train.reward_model loaded its base with its own handler: a message unlike every other loader's,
    transformers' words over several lines."""
    f = sft_recipe(cli, tiny, "max_steps: 1, per_device_train_batch_size: 2")
    (cli.tmp / "r.yaml").write_text((cli.tmp / "r.yaml").read_text().replace("id: sft", "id: rm")
                                    .replace("train.sft", "train.reward_model"))
    (cli.tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in preference_rows(4)))
    weights = cli.tmp / "model" / "model.safetensors"
    if damage == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    p = cli("run", f, check=1)
    out = p.stdout + p.stderr
    line = next((x for x in out.splitlines() if message in x), None)
    assert line is not None, out
    assert damage == "truncated_weights" or "model.safetensors" in line, line
    assert "Traceback" not in out
    assert [json.loads(e.read_text())["label"] for e in cli.cache.rglob("entry.json")] == ["data"]
