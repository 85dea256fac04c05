"""Recipe YAML read by libyaml (PyYAML's C parser) into dicts and lists that know where they
came from. ruamel's pure-Python round-trip parser took ~2.5 s of `plan` for a 1,000-step
recipe; this takes a tenth of that.

The result matches ruamel's (YAML 1.2: `yes` is a string) for the plain data recipes hold.
Anything else (a tag, a merge key, a duplicate key, a date, `0x1F`, a syntax error, a line
break other than "\n" and "\r\n": yamllines.py) returns None, and the loader reads the file with
ruamel, whose messages the recipe errors are made of.
"""
from __future__ import annotations

import math
import re
from typing import Any

from . import yamlcheck, yamllines
from .expr.limits import MAX_INT_DIGITS

try:
    import yaml
    from yaml import MappingNode, ScalarNode, SequenceNode
    from yaml._yaml import CParser
except ImportError:  # PyYAML without libyaml: ruamel does all the reading
    CParser = None

_PLAIN = "plain"  # a plain scalar, typed below by YAML 1.2's core schema
_QUOTED = "quoted"
_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"([-+]?)\.(?:inf|Inf|INF)")
_NAN = {".nan", ".NaN", ".NAN"}
MAX_REREAD = 200_000  # characters _too_deep_at reads again to name where nesting passes MAX_DEPTH
_NUMBERISH = re.compile(r"[-+.]?[0-9]")  # 1_000, 0x1F, 2020-01-01, 1:20: ruamel decides


class Unusual(Exception):
    """Something only ruamel reads the way users expect."""


class Positions:
    """The part of ruamel's `.lc` the loader uses: 0-based (line, col) of a node and its keys."""

    __slots__ = ("line", "col", "_at")

    def __init__(self, line: int, col: int):
        self.line, self.col, self._at = line, col, {}

    def key(self, key: Any) -> tuple[int, int]:
        return self._at[key]

    item = key


class PosDict(dict):
    __slots__ = ("lc",)


class PosList(list):
    __slots__ = ("lc",)


if CParser is not None:
    class _Parser(CParser):
        def resolve(self, kind, value, implicit):  # called by the C composer for untagged nodes
            if kind is ScalarNode:
                return _PLAIN if implicit[0] else _QUOTED
            return "seq" if kind is SequenceNode else "map"

        def descend_resolver(self, parent, index):  # path-based resolvers: none here
            pass

        def ascend_resolver(self):
            pass


def load(text: str, file: str = "<recipe>") -> Any | None:
    """The document as PosDict/PosList/builtins, or None where ruamel must read it. A YAML bomb
    (yamlcheck.py) is a RecipeError naming `file`."""
    if CParser is None or yamllines.ODD_BREAK.search(text):  # libyaml's lines are not an editor's
        return None
    parser = _Parser(text)
    try:
        node = parser.get_single_node()
        yamlcheck.check(node, file)
        return None if node is None else _build(node, {})
    except yaml.MarkedYAMLError as e:
        if e.problem == "exceeded maximum nesting depth":  # libyaml stops at 1,000; ruamel would take minutes
            yamlcheck.refuse(yamlcheck.TOO_DEEP, _too_deep_at(text) or e.problem_mark, file)
        return None
    except (yaml.YAMLError, Unusual):
        return None
    finally:
        parser.dispose()


def _too_deep_at(text: str) -> Any | None:
    """Where the nesting first passes MAX_DEPTH, so the error names the same place whichever
    parser found it. libyaml's scanner refuses the whole flow before emitting an event, so this
    reads events with PyYAML's pure-Python parser, which stops as soon as the place is found (in a
    text of at most MAX_REREAD characters: that parser reads ~0.5 MB/s; past it, libyaml's place)."""
    if len(text) > MAX_REREAD:
        return None
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > yamlcheck.MAX_DEPTH:
                    return event.start_mark
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None


def _build(node, built: dict[int, Any]) -> Any:
    if id(node) in built:  # an alias: the same object, as ruamel gives
        return built[id(node)]
    if isinstance(node, ScalarNode):
        return _scalar(node)
    if node.tag not in ("seq", "map"):
        raise Unusual
    out: Any
    if isinstance(node, SequenceNode):
        out = PosList()
        built[id(node)] = out
        out.lc = Positions(node.start_mark.line, node.start_mark.column)
        for i, item in enumerate(node.value):
            out.lc._at[i] = (item.start_mark.line, item.start_mark.column)
            out.append(_build(item, built))
        return out
    assert isinstance(node, MappingNode)
    out = PosDict()
    built[id(node)] = out
    out.lc = Positions(node.start_mark.line, node.start_mark.column)
    names: set[str] = set()
    for knode, vnode in node.value:
        if not isinstance(knode, ScalarNode) or (knode.tag == _PLAIN and knode.value == "<<"):
            raise Unusual
        key = _scalar(knode)
        if key in out or str(key) in names:
            raise Unusual  # ruamel names both places; keys that read as one name (1 and "1"): the loader's error
        names.add(str(key))
        out.lc._at[key] = (knode.start_mark.line, knode.start_mark.column)
        out[key] = _build(vnode, built)
    return out


def _scalar(node) -> Any:
    v = node.value
    if node.tag == _QUOTED:
        return v
    if node.tag != _PLAIN:
        raise Unusual
    if v in _NULL:
        return None
    if v in _BOOL:
        return _BOOL[v]
    if _INT.fullmatch(v):
        if len(v) > MAX_INT_DIGITS:  # more than Python reads: the loader's error names the place
            raise Unusual
        return int(v)
    if _FLOAT.fullmatch(v):
        return float(v)
    if v in _NAN:
        return math.nan
    if m := _INF.fullmatch(v):
        return -math.inf if m.group(1) == "-" else math.inf
    if _NUMBERISH.match(v):
        raise Unusual
    return v
