"""`recipe`: run, plan, inspect, reproduce and share recipe runs. `recipe COMMAND --help`."""
from __future__ import annotations

import argparse
import os
import re
import sys

from engine.recipe.errors import did_you_mean

EXAMPLES = """examples:
  recipe run recipes/quickstart.yaml                      run, reusing every cached step
  recipe run recipes/deepseek_all_domains.yaml --profile tiny --set vars.scale=0.01
  recipe plan recipes/arithmetic_llm.yaml --set steps.pretrain.with.max_steps=500
  recipe run recipes/qstar.yaml --only analyze -j 2       one step and what it needs
  recipe run recipes/quickstart.yaml --executor ray       steps and shards as tasks on a local Ray
  recipe show 20261123-101500                            a run (or an entry key prefix)
  recipe reproduce 20261123-101500                       re-plan a past run from its record
  recipe dag recipes/quickstart.yaml --format mermaid    the step graph, for a README
  recipe report                                          the latest run as one HTML page
  recipe push file:///mnt/team/cache && recipe pull s3://bucket/cache
  recipe pull s3://bucket/cache --recipe recipes/quickstart.yaml --profile tiny   only what it needs

exit codes: 0 ok, 1 a step failed, 2 the recipe or the command line is invalid
"""


class _Parser(argparse.ArgumentParser):
    """argparse, plus the closest name after a misspelt command, choice or flag."""

    def error(self, message: str):
        choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)", message)
        if choice:
            message += did_you_mean(choice[1], re.findall(r"'(.*?)'", choice[2]))
        super().error(message)

    def unknown(self, extra: list[str]):
        flags = [flag for action in self._actions for flag in action.option_strings]
        hint = next((did_you_mean(a.split("=")[0], flags) for a in extra if a.startswith("-")), "")
        self.error(f"unrecognized arguments: {' '.join(extra)}" + hint)


def _count(least: int):
    """An argparse type: an integer of at least `least`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value
    return parse


COMMAND_EXAMPLES = {
    "run": ["recipe run recipes/demo.yaml", "recipe run recipes/quickstart.yaml --profile tiny -j 2",
            "recipe run recipes/arithmetic_llm.yaml --profile tiny --only eval0 --set vars.pretrain_steps=50",
            "recipe run recipes/deepseek_all_domains.yaml --profile tiny --out data"],
    "plan": ["recipe plan recipes/quickstart.yaml --profile tiny",
             "recipe plan recipes/deepseek_all_domains.yaml --set vars.scale=0.1"],
    "show": ["recipe show 20261123-101500", "recipe show 3f9a2c"],
    "reproduce": ["recipe reproduce 20261123-101500", "recipe reproduce cache/runs/20261123-101500-ab12.json"],
    "ls": ["recipe ls", "recipe ls --cache-dir /mnt/team/cache"],
    "verify": ["recipe verify", "recipe verify --recompute --sample 0.1"],
    "config": ["recipe config shared group", "recipe config shared"],
    "gc": ["recipe gc --keep-last 5 --dry-run", "recipe gc --keep-last 1 --keep 20261123-101500"],
    "push": ["recipe push s3://bucket/cache", "recipe push file:///mnt/team/cache"],
    "pull": ["recipe pull s3://bucket/cache", "recipe pull s3://bucket/cache --recipe recipes/quickstart.yaml "
             "--profile tiny", "recipe pull s3://bucket/cache --run 20261123-101500"],
    "dag": ["recipe dag recipes/quickstart.yaml", "recipe dag recipes/quickstart.yaml --format mermaid"],
    "report": ["recipe report", "recipe report 20261123-101500 -o report.html", "recipe report --bundle report/"],
    "steps": ["recipe steps", "recipe steps data.map"],
}


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with its examples."""
    epilog = "examples:\n" + "".join(f"  {line}\n" for line in COMMAND_EXAMPLES[name])
    return sub.add_parser(name, help=help, description=help, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=os.environ.get("RECIPE_CACHE_DIR", "cache"),
                   help="the content-addressed store (default: ./cache or $RECIPE_CACHE_DIR)")
    p.add_argument("--artifacts-dir", default=os.environ.get("RECIPE_ARTIFACTS_DIR", "artifacts"),
                   help="where runs link outputs under readable names (default: ./artifacts)")


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the recipe YAML file")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="sets",
                   help="override a value before hashing, e.g. vars.scale=0.1 or steps.train.with.lr=3e-4")
    p.add_argument("--profile", help="apply a named profile of the recipe (e.g. tiny)")


def _executor_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", metavar="local|ray[=ADDRESS]",
                   help="where steps run (default: the recipe's `executor:`, else local); never part of a key")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="recipe", description="Declarative math-LLM recipes with content-addressed caching.",
                 epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version="mathrecipe 0.1.0")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub)
    _view_parsers(sub)
    _cache_parsers(sub)
    _tool_parsers(sub)
    return ap


def _run_parser(sub) -> None:
    p = _command(sub, "run", help="run a recipe; only steps whose key has no cache entry compute")
    _recipe_args(p)
    p.add_argument("--only", action="append", default=[], metavar="STEP", help="run STEP and what it needs")
    p.add_argument("--force", action="append", default=[], metavar="STEP", help="recompute STEP even if cached")
    p.add_argument("-j", "--jobs", type=_count(1), default=1,
                   help="CPU budget of the local executor: steps (1 CPU each unless `resources:` says) at once "
                        "(default 1)")
    _executor_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the run id, failures and the final line")
    p.add_argument("--all", action="store_true", help="a line and a summary row for every foreach instance")
    p.add_argument("--rerun-changed-code", action="store_true",
                   help="recompute cached entries whose step code changed without a version bump")
    p.add_argument("--out", metavar="DIR", help="also copy every export's files (export.files) into DIR; "
                   "they are always under <artifacts>/<recipe>/<step>/files")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="stream each step's own output (library warnings, progress, loss lines) live; "
                        "otherwise it goes to the step's log.txt")
    _common(p)


def _view_parsers(sub) -> None:
    p = _command(sub, "plan", help="what would run, and why (the changed field, input or version)")
    _recipe_args(p)
    p.add_argument("--all", action="store_true", help="list every foreach instance instead of one row per step")
    _executor_arg(p)
    _common(p)

    p = _command(sub, "show", help="a run (id or prefix) or a cache entry (key prefix)")
    p.add_argument("ref")
    p.add_argument("--log-lines", type=_count(0), default=20)
    _common(p)


def _cache_parsers(sub) -> None:
    p = _command(sub, "reproduce", help="re-plan a past run from its record; restore or recompute; compare digests")
    p.add_argument("run", help="run id, unique prefix, or a path to a run record .json")
    p.add_argument("-j", "--jobs", type=_count(1), default=1)
    _executor_arg(p)
    _common(p)

    p = _command(sub, "ls", help="runs and cache entries with sizes")
    _common(p)
    p = _command(sub, "verify", help="rehash every entry and report tampered ones")
    p.add_argument("--recompute", action="store_true",
                   help="also recompute deterministic entries in a scratch folder and compare digests "
                        "(like `nix build --check`)")
    p.add_argument("--sample", type=_fraction, metavar="F",
                   help="with --recompute: a random fraction F (0 < F <= 1) of those entries")
    _common(p)

    p = _command(sub, "config", help="a cache's settings: `shared group` makes a team cache group-writable")
    p.add_argument("name", choices=("shared",))
    p.add_argument("value", nargs="?", choices=("group", "umask"), help="group: group-writable files, setgid folders "
                   "(like git's core.sharedRepository); umask: as each user's umask makes them (default)")
    _common(p)

    p = _command(sub, "gc", help="delete entries not reachable from the kept runs")
    p.add_argument("--keep-last", type=_count(0), default=5,
                   help="keep entries of the last N runs made here; pulled records do not count (default 5)")
    p.add_argument("--keep", action="append", default=[], metavar="RUN", help="also keep this run's entries")
    p.add_argument("--dry-run", action="store_true")
    _common(p)

    p = _command(sub, "push", help="copy entries and run records to REMOTE (any fsspec URL)")
    p.add_argument("remote", help="e.g. s3://bucket/cache, hf://buckets/org/cache, file:///mnt/team-cache")
    _common(p)
    p = _command(sub, "pull", help="fetch entries and run records from REMOTE, verifying digests; "
                                    "--recipe or --run: only what that recipe or run needs")
    p.add_argument("remote", help="e.g. s3://bucket/cache, hf://buckets/org/cache, file:///mnt/team-cache")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--recipe", dest="file", metavar="FILE",
                        help="only the entries of this recipe's steps (with --profile and --set as for run)")
    target.add_argument("--run", metavar="ID", help="only the entries of this run (an id or unique prefix)")
    p.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", dest="sets",
                   help="with --recipe: an override, as for run")
    p.add_argument("--profile", help="with --recipe: a profile of the recipe, as for run")
    _common(p)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1]")
    return value


def _tool_parsers(sub) -> None:
    p = _command(sub, "dag", help="the recipe's step graph as text, Mermaid or Graphviz dot")
    _recipe_args(p)
    p.add_argument("--format", choices=("text", "mermaid", "dot"), default="text")
    _common(p)

    p = _command(sub, "report", help="one HTML page of a run: results, graph, timeline, each step's log and metrics")
    p.add_argument("run", nargs="?", help="run id or unique prefix (default: the latest run)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", help="the HTML file to write, figures embedded, linking into this "
                                              "machine's cache (default: <artifacts>/<recipe>/report-<run>.html)")
    where.add_argument("--bundle", metavar="DIR", help="write DIR/index.html with the logs, figures and small "
                                                       "outputs it links copied beside it, to send to a teammate")
    _common(p)

    p = _command(sub, "steps", help="the step library, with config schemas and I/O types")
    p.add_argument("name", nargs="?", help="show one step type in full")
    p.add_argument("--lock", action="store_true",
                   help="rewrite steps/versions.lock (version and source digest of every built-in step)")

def main(argv: list[str] | None = None) -> int:
    ap = parser()
    commands = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction)).choices
    argv = sys.argv[1:] if argv is None else argv
    command = next((word for word in argv if word in commands), None)
    if argv and argv[0] not in ("-h", "--help", "--version") and argv[0].startswith("-") and command:
        ap.error(f"{argv[0]} goes after the command: recipe {command} ... {argv[0]}")
    args, extra = ap.parse_known_args(argv)
    if extra:  # the command's own usage and its closest flag, not the top-level usage
        (commands.get(args.command) or ap).unknown(extra)
    if not args.command:
        ap.print_help()
        return 0
    from engine.recipe.errors import CacheError, RecipeError, StepError

    try:
        if args.command == "run":
            from .fastpath import noop_run

            code = noop_run(args)  # nothing changed since the last run: no parse, no import
            if code is not None:
                return code
            if args.jobs > 1 and (args.executor or "local") == "local":  # while the recipe is planned
                from engine.run.executors.local import prestart

                prestart()
        from . import commands

        return getattr(commands, f"cmd_{args.command}")(args)
    except (RecipeError, CacheError, StepError) as e:
        from rich.console import Console
        from rich.text import Text

        from engine.cache.names import printable

        err = Console(stderr=True, highlight=False, markup=False)
        err.print(Text("error: ", style="bold red") + Text(printable(str(e))), soft_wrap=True)  # may quote a remote
        return e.exit_code
    except KeyboardInterrupt:
        # sys.stderr is the capture's router while a step runs: the real stream, straight to the user
        print("interrupted: no entry was written for the step that was running; rerun to resume", file=sys.__stderr__)
        sys.stdout.flush()
        # a step's daemon thread may be inside torch: finalizing the interpreter under it aborts
        # ("terminate called without an active exception", exit -6)
        os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
