"""Prompt texts shared by the steps that use them (one place, so two steps never drift apart)."""

# OpenMathReasoning's solution prompt (generate.from_seed, and filter.llm_judge's inference pass)
OPENMATH_PROMPT = ("Solve the following math problem. Make sure to put the answer (and only answer) inside "
                   "\\boxed{}.\n\n{problem}")
