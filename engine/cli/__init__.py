"""The `recipe` command: one function per subcommand, the console display, the HTML report,
preflight checks, `reproduce`, and the no-op fast path of `recipe run`.

The top layer: may import every other engine package; nothing imports it.
"""
