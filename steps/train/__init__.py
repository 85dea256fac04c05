"""Training steps, in two kinds, each module named by its kind:

- `small_lm_*`: a small Llama trained from scratch (`train.pretrain`) and fine-tuned on its own
  errors (`train.finetune`) by one CPU-safe loop on transformers' Trainer (small_lm_common.py,
  with packing.py and thread_tuning.py);
- `trl_*`: trl's trainers for any Hugging Face model (`train.sft`, `train.dpo`, `train.grpo`,
  `train.reward_model`), run in the step's process or under `accelerate launch`
  (trl_common.py; GRPO's reward and temperature schedule in rewards.py and temperature.py).
"""
