"""Load a recipe file: YAML with positions, `extends`, `profiles` and `--set` overrides.

Every error is a RecipeError that names file:line:col. Values keep a note of where they came
from (the file, a profile, or `--set`), so the planner can point at them too.

Precedence, lowest first, in layers: each `extends` parent (itself layered the same way, with
its own part of the chosen profile), then this file, then this file's part of the profile, and
`--set` last. So a profile patches the file that defines it and everything that file extends;
a value a child file writes wins over its parents' profiles, and a child's profile of the same
name wins over its parents' key by key (profiles merge by name).
"""
from __future__ import annotations

import copy
import json
import re
import stat
import sys
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import yamlcheck, yamlfast, yamllines
from .errors import RecipeError, did_you_mean
from .expr.limits import MAX_INT_DIGITS

TOP_KEYS = {"recipe", "description", "extends", "vars", "defaults", "profiles", "steps", "executor"}
STEP_KEYS = {"id", "uses", "with", "inputs", "foreach", "needs", "description", "resources"}
PROFILE_KEYS = {"vars", "defaults", "set", "steps", "description", "executor"}
PLAIN_TYPES = (dict, list, str, int, float, bool, type(None))
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")  # a folder name under artifacts/, with room for an instance id


def _yaml(typ: str = "rt"):
    """ruamel's YAML, with dates read as the text written (YAML 1.2 has no timestamps, nor does
    yamlfast.py; a date object reached the run record and failed it after every step ran)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import RoundTripConstructor, SafeConstructor

    base = RoundTripConstructor if typ == "rt" else SafeConstructor
    constructor = type("TextDates", (base,), {})
    constructor.add_constructor("tag:yaml.org,2002:timestamp", base.construct_yaml_str)
    y = YAML(typ=typ, pure=True)
    y.Constructor = constructor
    y.Reader = yamllines.reader()
    y.allow_duplicate_keys = False
    return y


def _pos(node: Any, key: Any = None) -> tuple[int, int] | None:
    """0-based (line, col) of `key` inside `node`, or of the node itself."""
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        if key is None:
            return lc.line, lc.col
        if isinstance(key, int):
            return lc.item(key)
        return lc.key(key)
    except (KeyError, IndexError, TypeError, AttributeError):
        return (lc.line, lc.col) if lc.line is not None else None


def where(file: str, node: Any, key: Any = None) -> str:
    p = _pos(node, key)
    return f"{file}:{p[0] + 1}:{p[1] + 1}" if p else file


def plain(node: Any) -> Any:
    """ruamel containers and scalars -> dict/list/builtins (tags were rejected on load)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if type(node).__module__.startswith("ruamel"):
        # ScalarFloat, ScalarInt, ScalarBoolean, LiteralScalarString ... -> builtins
        for t in (bool, int, float, str):
            if isinstance(node, t):
                return t(node)
    return node


def _reject_tags(node: Any, file: str) -> None:
    """No YAML tag may build an object: recipes hold plain data only."""
    if "ruamel.yaml.comments" not in sys.modules:  # libyaml read every file: it hands tagged ones to ruamel
        return
    from ruamel.yaml.comments import TaggedScalar

    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    if isinstance(node, dict):
        _one_name_per_key(node, file)
    for k, v in items:
        tag = getattr(getattr(v, "tag", None), "value", None)
        if isinstance(v, TaggedScalar) or (tag and tag not in PLAIN_TAGS) or not isinstance(v, PLAIN_TYPES):
            # !!binary, !!set and !!pairs build objects that keep no tag
            tag = tag or {bytes: "!!binary", tuple: "!!pairs"}.get(type(v)) or ("!!set" if isinstance(v, AbstractSet)
                                                                                 else type(v).__name__)
            raise RecipeError(f"YAML tag {tag} is not allowed (recipes hold plain data only)", where(file, node, k))
        _reject_tags(v, file)


def _one_name_per_key(node: dict, file: str) -> None:
    """Keys are names (`plain` makes them text): 1 and "1" in one mapping would silently be one."""
    seen: dict[str, Any] = {}
    for k in node:
        if str(k) in seen:
            raise RecipeError(f"keys {seen[str(k)]!r} and {k!r} are the same name {str(k)!r}; keep one",
                              where(file, node, k))
        seen[str(k)] = k


@dataclass
class StepDecl:
    id: str
    uses: str
    with_: dict[str, Any]
    inputs: dict[str, Any]
    foreach: Any
    needs: list[str]
    file: str
    node: Any  # the ruamel mapping, for positions
    origins: dict[tuple, str] = field(default_factory=dict)  # overridden paths -> where
    resources: dict[str, Any] | None = None  # scheduling only, never part of the key
    patched_by: str | None = None  # "profile 'tiny' of base.yaml", when a profile patched this step

    def where(self, *path: Any) -> str:
        """Best position for a path such as ("with", "lr") inside this step."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        node, last = self.node, self.node
        key = None
        for part in path:
            if isinstance(node, (dict, list)):
                try:
                    nxt = node[part]
                except (KeyError, IndexError, TypeError):
                    break
                last, key, node = node, part, nxt
            else:
                break
        return where(self.file, last, key) if key is not None else where(self.file, self.node)


@dataclass
class Recipe:
    name: str
    description: str
    file: str
    vars: dict[str, Any]
    defaults: dict[str, dict[str, Any]]
    profiles: dict[str, Any]
    steps: list[StepDecl]
    node: Any
    profile: str | None = None
    sets: list[str] = field(default_factory=list)
    executor: str | None = None  # `executor: ray` in the recipe or a profile; never part of a key
    executor_where: str | None = None  # the file:line that chose it, for an executor no one knows
    extends: list[str] = field(default_factory=list)  # names of the recipes it extends, nearest first
    notes: list[str] = field(default_factory=list)  # what a user may not expect, shown by `plan` and `run`

    def step(self, sid: str) -> StepDecl | None:
        return next((s for s in self.steps if s.id == sid), None)


# every recipe file read (the recipe, its `extends` parents, recipes it refers to): the no-op
# fast path reuses a plan only while all of them are unchanged
SOURCES: list[Path] = []


def read_text(path: Path) -> str:
    """A recipe file's text, or a RecipeError naming the file for anything that is not UTF-8 text."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise RecipeError(f"{path} is a directory, expected a recipe .yaml file")
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block, /dev/zero fill the memory
            raise RecipeError(f"{path} is not a regular file, expected a recipe .yaml file")
        if st.st_size > yamlcheck.MAX_FILE_BYTES:  # a data file named by mistake, or minutes of parsing
            raise RecipeError(f"{path} is {st.st_size:,} bytes, over the limit of {yamlcheck.MAX_FILE_BYTES:,} for a "
                              "recipe file (MAX_FILE_BYTES); expected a recipe .yaml file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} not found") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe file ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(data, e.start)
        raise RecipeError(f"{path}:{line}:{col}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                          "expected a recipe .yaml file saved as UTF-8") from None
    if "\x00" in text:
        line, col = _line_col(data, data.index(b"\x00"))
        raise RecipeError(f"{path}:{line}:{col}: NUL byte in the file; expected a recipe .yaml text file") from None
    return text


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    return before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1


def read_yaml(path: Path) -> Any:
    SOURCES.append(Path(path).absolute())
    text = read_text(path)
    doc = yamlfast.load(text, str(path))
    return doc if doc is not None else _ruamel_load(text, path)


def _ruamel_load(text: str, path: Path) -> Any:
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        return _checked(_yaml(), str(path)).load(text)
    except RecursionError:  # only without libyaml, which refuses deep nesting first
        raise RecipeError(yamlcheck.TOO_DEEP, str(path)) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise RecipeError(f"malformed YAML: {what}", loc) from None
    except ValueError as e:  # an integer of more digits than Python reads
        raise _long_integer(text, str(path)) or RecipeError(f"malformed YAML: {e}", str(path)) from None
    except (YAMLError, TypeError) as e:  # TypeError: an alias inside a mapping key
        raise RecipeError(f"malformed YAML: {e}", str(path)) from None


def _long_integer(text: str, file: str, located: bool = True) -> RecipeError | None:
    """The error for an integer of more digits than Python reads, at its line and column of
    `file` when `located`."""
    digits = re.search(rf"[0-9]{{{MAX_INT_DIGITS + 1},}}", text)
    if not digits:
        return None
    line, col = _line_col(text.encode(), len(text[: digits.start()].encode()))
    return RecipeError(f"an integer of {len(digits.group()):,} digits; at most {MAX_INT_DIGITS:,} are read "
                       "(quote it to keep it as text)", f"{file}:{line}:{col}" if located else file)


def _checked(y: Any, file: str) -> Any:
    """ruamel's YAML `y`, checking the composed nodes (yamlcheck.py) before it builds them."""
    construct = y.constructor.construct_document

    def checked(node: Any) -> Any:
        yamlcheck.check(node, file)
        return construct(node)

    y.constructor.construct_document = checked
    return y


def _expect_map(value: Any, what: str, loc: str) -> None:
    if not isinstance(value, dict):
        raise RecipeError(f"{what} must be a mapping, found {_typename(value)}", loc)


def _typename(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(
        type(plain(v)), type(v).__name__)


def load(path: str | Path, profile: str | None = None, _seen: tuple[Path, ...] = ()) -> Recipe:
    """The recipe in `path` with its `extends` parents, `profile` applied layer by layer."""
    path = Path(path)
    file = str(path)
    doc = read_yaml(path)
    if doc is None:
        raise RecipeError("the recipe is empty; expected a mapping with `recipe:` and `steps:`", f"{file}:1:1")
    _expect_map(doc, "a recipe", f"{file}:1:1")
    _reject_tags(doc, file)
    for k in doc:
        if k not in TOP_KEYS:
            raise RecipeError(f"unknown top-level key {k!r}; expected one of {', '.join(sorted(TOP_KEYS))}",
                              where(file, doc, k))
    try:
        parents = _load_parents(doc, path, _seen + (path.resolve(),), profile)
        name = doc.get("recipe")
        if name is None and not parents:
            raise RecipeError("missing `recipe:` (the recipe's name)", f"{file}:1:1")
        if name is not None and (not isinstance(name, str) or not ID_RE.match(str(name))):
            raise RecipeError(f"`recipe` must be a name of letters, digits, - and _ (at most 100), found "
                              f"{plain(name)!r}", where(file, doc, "recipe"))
        vars_, defaults, profiles = _sections(doc, file)
        steps_node = doc.get("steps")
        if steps_node is None and not parents:
            raise RecipeError("missing `steps:` (a list of steps)", f"{file}:1:1")
        if steps_node is not None and not isinstance(steps_node, list):
            raise RecipeError(f"`steps` must be a list, found {_typename(steps_node)}", where(file, doc, "steps"))
        steps = [_step(file, s, i, steps_node) for i, s in enumerate(steps_node or [])]
        executor = _executor(doc, file)
    except RecipeError as e:
        if e.where is None:
            e.where = file
            e.args = (f"{file}: {e.message}",)
        raise

    recipe = Recipe(
        name=str(name) if name is not None else parents[-1].name,
        description=str(doc.get("description") or (parents[-1].description if parents else "")),
        file=file, vars={}, defaults={}, profiles={}, steps=[], node=doc,
    )
    for parent in parents:
        _inherit(recipe, parent)
    if executor:
        recipe.executor, recipe.executor_where = executor, where(file, doc, "executor")
    _check_ids(steps)
    own = Recipe(recipe.name, recipe.description, file, plain(vars_), plain(defaults), dict(profiles), steps, doc)
    _merge_into(recipe, own)
    recipe.extends = [n for n in recipe.extends if n != recipe.name]
    if profile in profiles:
        apply_profile(recipe, profile, profiles[profile])
    if profile and not _seen and profile not in recipe.profiles:
        known = ", ".join(sorted(recipe.profiles)) or "none defined"
        raise RecipeError(f"unknown profile {profile!r}{did_you_mean(profile, recipe.profiles)} (profiles: {known})",
                          file)
    return recipe


def _inherit(recipe: Recipe, parent: Recipe) -> None:
    """Merge a parent (its profile already applied) into the recipe being loaded."""
    _merge_into(recipe, parent)
    if parent.executor:
        recipe.executor, recipe.executor_where = parent.executor, parent.executor_where
    recipe.profile = parent.profile or recipe.profile
    recipe.notes += parent.notes
    recipe.extends += [n for n in [parent.name, *parent.extends] if n not in recipe.extends]


def _sections(doc: Any, file: str) -> tuple[Any, Any, Any]:
    """`vars`, `defaults` and `profiles`, each checked to be a mapping of the right shape."""
    vars_ = doc.get("vars") or {}
    _expect_map(vars_, "`vars`", where(file, doc, "vars"))
    defaults = doc.get("defaults") or {}
    _expect_map(defaults, "`defaults`", where(file, doc, "defaults"))
    for k, v in defaults.items():
        _expect_map(v, f"`defaults.{k}` (the default config of step type {k})", where(file, defaults, k))
    profiles = doc.get("profiles") or {}
    _expect_map(profiles, "`profiles`", where(file, doc, "profiles"))
    for pname, prof in profiles.items():
        _expect_map(prof, f"profile {pname!r}", where(file, profiles, pname))
        _check_profile(pname, prof, file)
    return vars_, defaults, profiles


def _check_profile(pname: str, prof: Any, file: str) -> None:
    """A profile's keys are known and its `vars`, `defaults`, `steps` and `set` are mappings
    (of mappings, for `defaults` and `steps`), as apply_profile reads them."""
    for k, v in prof.items():
        if k not in PROFILE_KEYS:
            raise RecipeError(f"unknown key {k!r} in profile {pname!r}; expected one of "
                              f"{', '.join(sorted(PROFILE_KEYS))}", where(file, prof, k))
        if k in ("vars", "defaults", "steps", "set") and v is not None:
            _expect_map(v, f"`{k}` of profile {pname!r}", where(file, prof, k))
            if k in ("defaults", "steps"):
                for name, inner in v.items():
                    what = "step type" if k == "defaults" else "step"
                    _expect_map(inner, f"`{k}.{name}` of profile {pname!r} (a patch of {what} {name})",
                                where(file, v, name))


def _executor(doc: Any, file: str) -> str | None:
    value = doc.get("executor")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise RecipeError(f"`executor` must be local, ray or ray=ADDRESS, found {plain(value)!r}",
                          where(file, doc, "executor"))
    return plain(value)


def _load_parents(doc: Any, path: Path, seen: tuple[Path, ...], profile: str | None) -> list[Recipe]:
    ext = doc.get("extends")
    if ext is None:
        return []
    items = ext if isinstance(ext, list) else [ext]
    parents = []
    for i, item in enumerate(items):
        loc = where(str(path), ext, i) if isinstance(ext, list) else where(str(path), doc, "extends")
        if not isinstance(item, str):
            raise RecipeError(f"`extends` takes a path or a list of paths, found {_typename(item)}", loc)
        ppath = (path.parent / item) if not Path(item).is_absolute() else Path(item)
        if not ppath.exists():
            raise RecipeError(f"`extends` names {item}, which does not exist (looked at {ppath})", loc)
        if ppath.resolve() in seen:
            raise RecipeError(f"`extends` loops back to {item}", loc)
        try:
            parents.append(load(ppath, profile, seen))
        except RecipeError as e:
            if e.where is not None:
                raise
            raise RecipeError(e.message, loc) from None  # the parent as a whole (a directory, not found): this line
    return parents


def _merge_into(base: Recipe, other: Recipe) -> None:
    base.vars = deep_merge(base.vars, other.vars)
    base.defaults = deep_merge(base.defaults, other.defaults)
    base.profiles = {**base.profiles, **other.profiles}  # by name: each file applies its own part
    ids = {s.id: i for i, s in enumerate(base.steps)}
    for s in other.steps:
        if s.id in ids:
            old = base.steps[ids[s.id]]
            if old.patched_by:
                base.notes.append(f"{s.where('id')}: step {s.id!r} replaces the one in {old.file}, so "
                                  f"{old.patched_by} does not apply to it (patch it in this file's profile)")
            base.steps[ids[s.id]] = s
        else:
            ids[s.id] = len(base.steps)
            base.steps.append(s)


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _step(file: str, node: Any, index: int, parent: Any) -> StepDecl:
    loc = where(file, parent, index)
    if not isinstance(node, dict):
        raise RecipeError(f"each step must be a mapping with `id` and `uses`, found {_typename(node)}", loc)
    for k in node:
        if k not in STEP_KEYS:
            raise RecipeError(f"unknown key {k!r} in a step; expected one of {', '.join(sorted(STEP_KEYS))}",
                              where(file, node, k))
    sid = node.get("id")
    if sid is None:
        raise RecipeError("step has no `id`", loc)
    if not isinstance(sid, str) or not ID_RE.match(sid):
        raise RecipeError(f"step id must be letters, digits, - and _ (starting with a letter, at most 100), found "
                          f"{plain(sid)!r}",
                          where(file, node, "id"))
    uses = _check_uses(node.get("uses"), sid, where(file, node, "uses") if "uses" in node else loc)
    with_ = node.get("with") or {}
    if not isinstance(with_, dict):
        raise RecipeError(f"`with` of step {sid!r} must be a mapping, found {_typename(with_)}",
                          where(file, node, "with"))
    inputs = node.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise RecipeError(f"`inputs` of step {sid!r} must be a mapping of input name to "
                          f"'${{steps.ID.OUTPUT}}', found {_typename(inputs)}", where(file, node, "inputs"))
    needs = _check_needs(node.get("needs"), sid, where(file, node, "needs"))
    return StepDecl(sid, uses, plain(with_), plain(inputs), plain(node.get("foreach")), needs, file, node,
                    resources=plain(node.get("resources")))


def _check_uses(uses: Any, sid: str, loc: str) -> str:
    if uses is None or uses == "":
        raise RecipeError(f"step {sid!r} has no `uses:` naming its step type (e.g. `uses: data.from_file`)", loc)
    if not isinstance(uses, str):
        raise RecipeError(f"`uses` of step {sid!r} must name a step type (e.g. data.from_file), "
                          f"found {_typename(uses)}", loc)
    return uses


def _check_needs(needs: Any, sid: str, loc: str) -> list[str]:
    needs = [needs] if isinstance(needs, str) else needs or []
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise RecipeError(f"`needs` of step {sid!r} must be a step id or a list of ids", loc)
    return list(needs)


def _check_ids(steps: list[StepDecl]) -> None:
    seen: dict[str, StepDecl] = {}
    for s in steps:
        if s.id in seen:
            raise RecipeError(f"duplicate step id {s.id!r} (first defined at {seen[s.id].where()})", s.where("id"))
        seen[s.id] = s


# ------------------------------------------------------------------ overrides

def parse_value(text: str, origin: str = "--set") -> Any:
    """A --set value, read as YAML so `0.1`, `true`, `[a, b]` get their types. What a recipe file
    may not hold (a YAML bomb, a tag, keys that read as one name, a duplicate key, a huge
    integer) is an error naming `origin`, the --set argument; text that is not YAML is the text."""
    from ruamel.yaml.constructor import DuplicateKeyError

    try:
        doc = _checked(_yaml(), origin).load(text)
        _reject_tags([doc], origin)  # in a list, so a tag on the value itself is found too
    except RecipeError as e:  # located in the value's own text: the argument is the place
        raise RecipeError(e.message, origin) from None
    except RecursionError:
        raise RecipeError(yamlcheck.TOO_DEEP, origin) from None
    except DuplicateKeyError as e:
        raise RecipeError(f"malformed YAML: {e.problem}", origin) from None
    except ValueError:
        if error := _long_integer(text, origin, located=False):
            raise error from None
        return text
    except Exception:  # not YAML (`Solve: x: y`, `*`): the text itself
        return text
    return plain(doc)


def coerce(old: Any, new: Any) -> Any:
    """Keep the type of the value being overridden where the new one converts cleanly."""
    if isinstance(old, bool) or old is None or isinstance(new, bool):
        return new
    if isinstance(old, float) and isinstance(new, int):
        return float(new)
    if isinstance(old, str) and isinstance(new, (int, float)):
        return str(new)
    return new


def apply_profile(recipe: Recipe, name: str, prof: Any) -> None:
    """This file's profile `name` (`prof`, its YAML mapping) over the recipe merged so far."""
    loc = lambda node, key: where(recipe.file, node, key)  # noqa: E731
    by = f"profile {name!r} of {recipe.file}"
    for k, v in (prof.get("vars") or {}).items():
        if k not in recipe.vars:  # a typo would otherwise change nothing, as with --set
            raise RecipeError(f"profile {name!r} sets var {k!r}, which the recipe does not have"
                              f"{did_you_mean(k, recipe.vars)} (vars: {', '.join(recipe.vars) or 'none'})",
                              loc(prof["vars"], k))
        recipe.vars[k] = (deep_merge(recipe.vars[k], plain(v))
                          if isinstance(recipe.vars.get(k), dict) and isinstance(v, dict) else plain(v))
    recipe.defaults = deep_merge(recipe.defaults, plain(prof.get("defaults") or {}))
    for sid, patch in (prof.get("steps") or {}).items():
        step = recipe.step(str(sid))
        if step is None:
            raise RecipeError(f"profile {name!r} patches step {sid!r}, which the recipe does not have"
                              f"{did_you_mean(sid, [s.id for s in recipe.steps])}", loc(prof["steps"], sid))
        for field_, value in plain(patch).items():
            _set_path(recipe, ["steps", str(sid), field_], value, loc(prof["steps"], sid))
        step.patched_by = by
    for path, value in (prof.get("set") or {}).items():
        parts = str(path).split(".")
        _set_path(recipe, parts, plain(value), loc(prof["set"], path))
        if parts[0] == "steps" and recipe.step(parts[1]):
            recipe.step(parts[1]).patched_by = by
    if prof.get("executor") is not None:
        recipe.executor, recipe.executor_where = _executor(prof, recipe.file), where(recipe.file, prof, "executor")
    recipe.profile = name


def apply_set(recipe: Recipe, assignment: str) -> None:
    path, sep, text = assignment.partition("=")
    if not sep or not path.strip():
        raise RecipeError(f"--set expects PATH=VALUE (e.g. vars.scale=0.1), got {assignment!r}")
    value = parse_value(text, f"--set {path.strip()}")
    _set_path(recipe, path.strip().split("."), value, f"--set {path.strip()}")
    recipe.sets.append(assignment)


def apply_value(recipe: Recipe, path: str, value: Any, origin: str) -> None:
    """`--set path=value` with the value given as data (recipe()'s `vars=` and `set=`)."""
    _set_path(recipe, path.split("."), value, origin)
    recipe.sets.append(f"{path}={json.dumps(value)}")


HEADS = ("vars", "defaults", "steps")
STEP_FIELDS = ("with", "inputs", "uses", "foreach", "needs", "resources")


def _set_path(recipe: Recipe, parts: list[str], value: Any, origin: str) -> None:
    """Override one value; a path that names nothing in the recipe is an error with the closest
    name (a typo would otherwise change nothing, silently)."""
    if "" in parts:  # `vars.x.=1` added a key "" to x: a typo that changed nothing, silently
        raise RecipeError(f"{'.'.join(parts)!r} has an empty name (a dot at an end, or two in a row)", origin)
    head, rest = parts[0], ".".join(parts[2:])
    if head == "vars" and len(parts) >= 2:
        if parts[1] not in recipe.vars:
            raise RecipeError(f"the recipe has no var {parts[1]!r}"
                              f"{did_you_mean(parts[1], recipe.vars, 'vars.', rest)} "
                              f"(vars: {', '.join(recipe.vars) or 'none'})", origin)
        _assign(recipe.vars, parts[1:], value, origin, "vars")
    elif head == "defaults" and len(parts) >= 3:
        stype = ".".join(parts[1:3])
        used = sorted({s.uses for s in recipe.steps})
        if stype not in used:
            raise RecipeError(f"no step of the recipe uses {stype!r}, so its defaults apply to nothing"
                              f"{did_you_mean(stype, used, 'defaults.', '.'.join(parts[3:]))} "
                              f"(step types: {', '.join(used)})", origin)
        recipe.defaults.setdefault(stype, {})
        _assign(recipe.defaults, [stype] + parts[3:], value, origin, "defaults")
    elif head == "steps" and len(parts) >= 3:
        step = recipe.step(parts[1])
        if step is None:
            ids = [s.id for s in recipe.steps]
            raise RecipeError(f"no step with id {parts[1]!r}{did_you_mean(parts[1], ids, 'steps.', rest)} "
                              f"(ids: {', '.join(ids)})", origin)
        _set_step(step, parts[2:], value, origin)
    else:
        raise RecipeError(f"cannot override {'.'.join(parts)!r}{did_you_mean(head, HEADS, '', '.'.join(parts[1:]))}"
                          f" (expected vars.NAME, defaults.FAMILY.STEP.FIELD or steps.ID.with.FIELD)", origin)


def _set_step(step: StepDecl, parts: list[str], value: Any, origin: str) -> None:
    field_ = parts[0]
    if field_ in ("with", "inputs") and len(parts) > 1:
        _assign(getattr(step, "with_" if field_ == "with" else "inputs"), parts[1:], value, origin,
                f"steps.{step.id}.{field_}")
    elif field_ in ("with", "inputs") and isinstance(value, dict):
        target = step.with_ if field_ == "with" else step.inputs
        for k, v in value.items():
            _assign(target, [k], v, origin, f"steps.{step.id}.{field_}")
            step.origins[(field_, k)] = origin
        return
    elif field_ in ("with", "inputs"):
        raise RecipeError(f"steps.{step.id}.{field_} must be a mapping, found {_typename(value)}", origin)
    elif field_ in ("uses", "needs", "foreach") and len(parts) > 1:
        raise RecipeError(f"steps.{step.id}.{field_} takes a whole value, not a field (got "
                          f"steps.{step.id}.{'.'.join(parts)})", origin)
    elif field_ == "uses":
        step.uses = _check_uses(value, step.id, origin)
    elif field_ == "needs":
        step.needs = _check_needs(value, step.id, origin)
    elif field_ == "foreach":
        step.foreach = value
    elif field_ == "resources":
        if len(parts) > 1:
            step.resources = dict(step.resources or {})
            _assign(step.resources, parts[1:], value, origin, f"steps.{step.id}.resources")
        else:
            step.resources = value  # checked by the planner, which names this origin
    else:
        rest = ".".join(parts[1:])
        raise RecipeError(f"cannot set steps.{step.id}.{field_}"
                          f"{did_you_mean(field_, STEP_FIELDS, f'steps.{step.id}.', rest)} "
                          f"(expected with.FIELD, inputs.NAME, uses, foreach, needs or resources)", origin)
    step.origins[tuple(parts)] = origin


def _assign(container: dict, parts: list[str], value: Any, origin: str, prefix: str) -> None:
    for i, p in enumerate(parts[:-1]):
        nxt = container.get(p)
        if nxt is None:
            nxt = container[p] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"{prefix}.{'.'.join(parts[: i + 1])} is not a mapping", origin)
        container = nxt
    container[parts[-1]] = coerce(container.get(parts[-1]), value)
