"""GRPO's temperature schedule (`initial_temperature → final_temperature` over the run).

trl's GRPOTrainer has one fixed `temperature`. The schedule moves it before every optimiser
step, for generation (the trainer's generation config and kwargs) and for the log-probs of the
loss. The latter lives in a closure: trl's `add_fused_lm_head` wraps the model's forward in a
function that closes over `temperature`. Rewriting that cell is the one place this project
reaches into trl's internals, so `attach` checks the shape first and fails loudly when a trl
release no longer has it, instead of training at a temperature nobody asked for.
"""
from __future__ import annotations

import math

from engine.recipe.errors import StepError

TESTED_TRL = "1.16"  # the trl release this patch was written against (`add_fused_lm_head`)


class TemperatureSchedule:
    def __init__(self, initial: float, final: float, kind: str = "linear"):
        self.initial, self.final, self.kind = initial, final, kind
        self.current, self.step = initial, 0
        self.trainer = None
        self.patched_logprobs = False

    def value(self, step: int, total: int) -> float:
        if self.kind == "constant" or total <= 1:
            return self.initial
        frac = min(max(step / (total - 1), 0.0), 1.0)
        if self.kind == "cosine":
            frac = (1 - math.cos(math.pi * frac)) / 2
        return self.initial + (self.final - self.initial) * frac

    def attach(self, trainer, step: str = "train.grpo") -> None:
        """Follow `trainer`; a schedule that moves needs trl's fused-head closure to exist."""
        self.trainer = trainer
        if self.kind != "constant" and self.initial != self.final and not fused_head_functions(trainer.model):
            import trl

            raise StepError(
                f"{step}: temperature_schedule: trl {trl.__version__} no longer wraps the model's forward in a "
                f"function closing over `temperature` (add_fused_lm_head, as trl {TESTED_TRL} does), so the loss "
                "would keep the initial temperature; set temperature_schedule: constant or install "
                f"trl=={TESTED_TRL}.*")

    def apply(self, temperature: float) -> None:
        self.current = temperature
        tr = self.trainer
        if tr is None:
            return
        tr.temperature = temperature
        if getattr(tr, "generation_config", None) is not None:
            tr.generation_config.temperature = temperature
        if isinstance(getattr(tr, "generation_kwargs", None), dict):
            tr.generation_kwargs["temperature"] = temperature
        vgen = getattr(tr, "vllm_generation", None)
        if vgen is not None and hasattr(vgen, "temperature"):
            vgen.temperature = temperature
        self.patched_logprobs = set_fused_head_temperature(tr.model, temperature) or self.patched_logprobs

    def callback(self):
        from transformers import TrainerCallback

        sched = self

        class TemperatureCallback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                sched.step = state.global_step
                sched.apply(sched.value(state.global_step, state.max_steps))
                return control

            def on_log(self, args, state, control, logs=None, **kw):
                # the Trainer copies `logs` into the history before callbacks run
                if state.log_history and "train_runtime" not in state.log_history[-1]:
                    state.log_history[-1]["temperature"] = sched.current
                return control

        return TemperatureCallback()


def fused_head_functions(model) -> list:
    """The forward functions of `model` (and its PEFT base / DDP module) closing over `temperature`."""
    found, seen = [], set()
    for m in (model, getattr(model, "get_base_model", lambda: None)(), getattr(model, "module", None)):
        fn = getattr(getattr(m, "forward", None), "__func__", None)
        if fn is None or id(fn) in seen or "temperature" not in fn.__code__.co_freevars:
            continue
        seen.add(id(fn))
        found.append(fn)
    return found


def set_fused_head_temperature(model, temperature: float) -> bool:
    """Update the `temperature` cell of trl's fused LM head. False if there is none."""
    fns = fused_head_functions(model)
    for fn in fns:
        fn.__closure__[fn.__code__.co_freevars.index("temperature")].cell_contents = float(temperature)
    return bool(fns)
