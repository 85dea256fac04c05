"""mathrecipe's recipe engine: recipes -> typed graph -> content-addressed cache -> runs.

Nothing in this package imports torch, transformers, datasets or vllm at module level.
"""
__version__ = "0.1.0"
