"""Executors run a step's work where its resources are: `local` (this machine; `-j N` is its
CPU budget) or `ray` (`--executor ray[=ADDRESS]`, a Ray cluster). The interface and the
registry are in base.py; only the ray executor imports ray, and only when chosen.
"""
from .base import Executor, check_executor, check_fits, make_executor, register_executor

__all__ = ["Executor", "check_executor", "check_fits", "make_executor", "register_executor"]
