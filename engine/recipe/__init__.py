"""The recipe language: loading YAML (with `extends`, profiles and `--set`), vars and `${}`
expressions, the step contract (`Step`, its config, artifact types, resources), and planning a
recipe into a validated, ordered list of step instances (the DAG).

Imports nothing from the other engine packages: it is the bottom layer, and a recipe is planned
without touching the cache.
"""
