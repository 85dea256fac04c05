"""train.pretrain: a small Llama with random weights, trained from scratch on problems.

Defaults are the sizes measured on a 2-core CPU: hidden 128, 2 layers, 4 heads, FFN 512,
tied embeddings, context 64, batch 32, lr 1e-3 cosine. Training itself is the loop in small_lm_common.py.
"""
from __future__ import annotations

from pydantic import Field

from engine.recipe.artifact_types import Dataset, Model, Report, Tokenizer
from engine.recipe.errors import StepError
from engine.recipe.step import Step, register
from steps.train.small_lm_common import FitSettings, encode_examples, fit, load_tokenizer, save_model, write_report


@register("train.pretrain")
class Pretrain(Step):
    """Build a small Llama with random weights and train it from scratch on problems."""

    version = "2"  # 2: generation_config.json says do_sample: true
    deterministic = False  # float reductions differ across devices and thread counts

    class Config(FitSettings):
        hidden_size: int = Field(128, ge=8)
        num_layers: int = Field(2, ge=1)
        num_heads: int = Field(4, ge=1)
        intermediate_size: int = Field(512, ge=8)
        max_length: int = Field(64, ge=8, description="context length (positions) of the model")
        tie_embeddings: bool = True

    inputs = {"data": Dataset, "tokenizer": Tokenizer}
    outputs = {"model": Model, "report": Report}

    def run(self, ctx):
        import torch
        from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

        c = self.config
        step = "train.pretrain"
        if c.hidden_size % c.num_heads:
            raise StepError(f"{step}: num_heads: hidden_size {c.hidden_size} is not divisible by {c.num_heads} heads")
        tok = load_tokenizer(step, ctx.inputs["tokenizer"].path, "tokenizer")
        data = ctx.inputs["data"]
        rows = data.read()
        if not rows:
            raise StepError(f"{step}: data: {data.path} holds no rows")
        examples, too_long = encode_examples(step, rows, tok, c, c.max_length, data.path, ctx.log)
        torch.manual_seed(c.seed)
        mcfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads, num_key_value_heads=c.num_heads,
            max_position_embeddings=c.max_length, tie_word_embeddings=c.tie_embeddings,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        )
        model = LlamaForCausalLM(mcfg)
        model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                                   bos_token_id=tok.bos_token_id)
        params = sum(p.numel() for p in model.parameters())
        ctx.log.info("model: %d parameters; %d examples (%d set aside as too long)", params, len(examples), too_long)
        metrics = fit(ctx, step, model, tok, examples, c)
        metrics.update(parameters=params, rows=len(rows), too_long=too_long, max_length=c.max_length)
        save_model(ctx, model, tok)
        write_report(ctx, step, metrics)
