"""Prompt texts the origin workflows used, shared by the steps that reproduce them."""

# OpenMathReasoning's solution prompt (generateFromSeed.py, the judge's inference pass)
OPENMATH_PROMPT = ("Solve the following math problem. Make sure to put the answer (and only answer) inside "
                   "\\boxed{}.\n\n{problem}")
