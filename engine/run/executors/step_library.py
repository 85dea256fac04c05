"""Imported once by the forkserver of a `-j N` run (`local._forkserver`): the step library and
the executor, so that each step's process is forked with them instead of importing them, which
took ~35 ms of a trivial step's ~50 ms. The library imports no heavy package (steps import torch
and the like inside `run`)."""
from engine.recipe.step import load_all

from . import local  # noqa: F401 - the child's entry point, `local._child`

load_all()
