"""What every saved causal LM carries beyond its weights."""
from __future__ import annotations

from typing import Any


def sample_by_default(model: Any) -> None:
    """generation_config.json gets `do_sample: true`: servers that follow it (`transformers
    serve`) otherwise answer greedily however high the request's temperature, so n
    candidates come back identical. Our own backends pass do_sample explicitly per request."""
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.do_sample = True
