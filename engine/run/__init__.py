"""Running a plan: the runner (key, cache check, compute, commit per node), the scheduler, the
executors (local, Ray), the process a step runs in, the `ctx` a step sees, shards and the capture
of a step's output into its log.

May import `engine.recipe` and `engine.cache`; never `engine.cli`.
"""
