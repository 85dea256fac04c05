"""mathrecipe's step library: one module per family. Heavy imports happen inside `run`."""
