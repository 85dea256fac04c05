"""Turn a loaded recipe into a validated, ordered list of step instances (nodes).

Checked here, before anything runs: step types exist, configs validate (errors mapped back
to YAML lines), inputs bind to existing outputs of a compatible type, `foreach` is over a
collection, ids are unique, and the graph has no cycle. Keys are computed by the runner,
because they need the digests of upstream outputs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from . import paths
from . import step as registry
from .errors import RecipeError, did_you_mean
from .expr import ExprError, has_expr, resolve
from .expr.limits import INSTANCES_ENV, MAX_RECIPE_DEPTH, max_instances, planning
from .expr.template import borrowed, mentions
from .loader import SOURCES, Recipe, StepDecl, apply_set, apply_value, deep_merge, load, where
from .resources import Resources, parse_resources
from .step import Step, StepConfig
from .vars import resolve_vars


@dataclass(frozen=True, slots=True)
class Ref:
    """An output of a step instance: `steps.ID[key].OUTPUT`."""

    label: str
    output: str

    def __str__(self) -> str:
        return f"{self.label}.{self.output}"


@dataclass(slots=True)  # no __dict__: a plan may hold 100,000 of them
class Node:
    label: str  # "train" or "problems[algebra]"; "other_recipe/train" for another recipe's step
    recipe: str
    uses: str
    step_cls: type[Step]
    config: StepConfig
    inputs: dict[str, Any]  # slot -> Ref | list[Ref] | None; shared by a foreach's instances: never changed in place
    needs: list[str]
    where: str
    step_id: str = ""
    resources: Resources = field(default_factory=Resources)  # scheduling only, never in the key
    resources_declared: bool = False  # by the recipe's `resources:`, not only the step type's default

    def upstream(self) -> list[str]:
        labels: list[str] = []
        for v in self.inputs.values():
            for r in v if isinstance(v, list) else [v]:
                if isinstance(r, Ref) and r.label not in labels:
                    labels.append(r.label)
        return labels + [n for n in self.needs if n not in labels]


@dataclass
class Plan:
    name: str  # the recipe's name
    file: str
    nodes: list[Node]  # topological order
    profile: str | None = None
    sets: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    by_label: dict[str, Node] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)  # the recipe files read to make it
    profiles: list[str] = field(default_factory=list)  # the recipe's profile names (for hints)
    executor: str | None = None  # from the recipe or its profile; --executor overrides it
    executor_where: str | None = None  # where the recipe chose it
    extends: list[str] = field(default_factory=list)  # names of the recipes it extends, nearest first
    warnings: list[str] = field(default_factory=list)  # one line each, printed before the plan

    def __post_init__(self) -> None:
        self.by_label = {n.label: n for n in self.nodes}


@dataclass(frozen=True)
class _Template:
    """What all instances of one step declaration share, worked out once: a foreach may have
    100,000 of them."""

    step_cls: type[Step]
    raw: dict[str, Any]  # the step type's recipe defaults, then `with`; `${}` not yet evaluated
    folder: str  # the recipe's folder, where relative paths are read from
    where: str  # its `uses:` line
    resources_where: str
    slots: dict[str, Any]  # the step type's input slots


# ------------------------------------------------------------------ names for expressions

class _Steps:
    """`steps` in an expression: `steps.ID`, `steps.ID[key]`, `steps.ID.OUTPUT`."""

    def __init__(self, planner: "_Planner", prefix: str = ""):
        self._p, self._prefix = planner, prefix

    def __getitem__(self, sid: str) -> "_StepHandle":
        decl = self._p.decls.get(sid)
        if decl is None:
            raise ExprError(f"no step {sid!r} in recipe {self._p.recipe.name}{did_you_mean(sid, self._p.decls)} "
                            f"(ids: {', '.join(self._p.decls)})")
        return _StepHandle(self._p, decl, self._prefix)

    def __repr__(self) -> str:  # in "found ..." of an error, where a step output was expected
        return "steps (all steps, not one step's output)"


class _StepHandle:
    def __init__(self, planner: "_Planner", decl: StepDecl, prefix: str, instance: str | None = None):
        self._p, self._d, self._prefix, self._instance = planner, decl, prefix, instance

    def __repr__(self) -> str:
        name = self._d.id + (f"[{self._instance}]" if self._instance is not None else "")
        return f"steps.{name} (a step, not one of its outputs: {', '.join(self._outputs()) or 'none'})"

    def _outputs(self) -> dict:
        return self._p._template(self._d).step_cls.outputs

    def __getitem__(self, key: Any) -> Any:
        instances = self._p.instances[self._d.id]
        if self._instance is None and self._d.foreach is not None and str(key) in instances:
            return _StepHandle(self._p, self._d, self._prefix, str(key))
        if key == "outputs":
            return self
        outputs = self._outputs()
        if key in outputs:
            if self._instance is not None:
                return self._p.shared(Ref(self._prefix + f"{self._d.id}[{self._instance}]", key))
            if self._d.foreach is not None:  # all instances, in foreach order
                return [self._p.shared(Ref(self._prefix + f"{self._d.id}[{k}]", key)) for k in instances]
            return self._p.shared(Ref(self._prefix + self._d.id, key))
        if self._d.foreach is not None and self._instance is None:
            raise ExprError(f"step {self._d.id!r} has no instance {key!r} (instances: "
                            f"{', '.join(list(instances)[:10])}) and no output {key!r} (outputs: {', '.join(outputs)})")
        raise ExprError(f"step {self._d.id!r} ({self._d.uses}) has no output {key!r}{did_you_mean(key, outputs)} "
                        f"(outputs: {', '.join(outputs) or 'none'})")


# ------------------------------------------------------------------ planning

def plan_file(path: str | Path, profile: str | None = None, sets: list[str] | tuple = (),
              _foreign: dict | None = None) -> Plan:
    SOURCES.clear()
    from_cwd, token = paths.collecting()
    try:
        with planning():
            recipe = load(path, profile)
            for s in sets:
                apply_set(recipe, s)
            planner = _Planner(recipe, _foreign if _foreign is not None else {})
            if not recipe.steps:  # it ran and did nothing, exit 0: a typo'd or truncated file looked fine
                raise RecipeError("`steps` is empty; a recipe needs at least one step", _steps_where(recipe))
            plan = planner.plan()
    finally:
        paths.done(token)
    plan.sources = list(dict.fromkeys(SOURCES))
    plan.profiles = list(recipe.profiles)
    plan.extends = recipe.extends
    plan.warnings = recipe.notes + [paths.cwd_warning(p, folder) for p, folder in from_cwd]
    return plan


def _steps_where(recipe: Recipe) -> str:
    """The recipe's `steps:` line, or its first line when only an `extends` parent has one."""
    doc = recipe.node
    return where(recipe.file, doc, "steps") if isinstance(doc, dict) and "steps" in doc else f"{recipe.file}:1:1"


class _Planner:
    def __init__(self, recipe: Recipe, foreign: dict, prefix: str = "", depth: int = 0):
        self.recipe = recipe
        self.prefix = prefix
        self.depth = depth  # how many recipe() references lead here
        self.decls = {d.id: d for d in recipe.steps}
        self.instances: dict[str, dict[str, Any]] = {}
        self.foreign = foreign  # (path, profile, sets) -> Plan, shared across nested references
        self.extra_nodes: dict[str, Node] = {}
        self._templates: dict[str, _Template] = {}  # step id -> what its instances share
        self._shared: dict[Any, Any] = {}  # one object for equal Refs and Resources of many instances
        self._same_inputs: dict[str, dict[str, Any]] = {}  # step id -> inputs that do not read `item`
        self.vars = resolve_vars(recipe.vars, self._var_where)

    def shared(self, value: Any) -> Any:
        """One object for equal frozen values (`steps.load.data` in each of 100,000 instances)."""
        return self._shared.setdefault(value, value)

    def _var_where(self, name: str) -> str:
        node = self.recipe.node.get("vars") if isinstance(self.recipe.node, dict) else None
        return where(self.recipe.file, node, name) if isinstance(node, dict) and name in node else self.recipe.file

    # a function available in expressions: recipe("path.yaml", profile="tiny", vars={"n": 5},
    # set={"steps.make.with.seed": 2}): what `recipe run path.yaml --profile tiny --set ...` plans
    def _recipe_fn(self, path: str, profile: str | None = None, vars: Any = None, set: Any = None,  # noqa: A002
                   **other: Any) -> dict:
        if other:
            raise ExprError(f"recipe() takes profile=, vars= and set=, not {', '.join(f'{k}=' for k in other)}"
                            f"{did_you_mean(next(iter(other)), ['profile', 'vars', 'set'])}")
        assignments = _overrides(vars, "vars.") + _overrides(set, "")
        names = [name for name, _ in assignments]
        if twice := next((name for i, name in enumerate(names) if name in names[:i]), None):
            raise ExprError(f"recipe({path!r}): {twice} is given twice (in vars= and in set=)")
        resolved = self._find(path)
        key = (str(resolved.resolve()), profile, json.dumps(assignments))
        if key not in self.foreign and self.depth >= MAX_RECIPE_DEPTH:
            raise ExprError(f"recipe({path!r}): recipe() references nest more than {MAX_RECIPE_DEPTH} deep "
                            "(a recipe that refers to itself with other overrides never ends)")
        if key not in self.foreign:
            self.foreign[key] = None  # "in progress": catches recipes that refer to each other
            sub = load(resolved, profile)
            self.recipe.notes += sub.notes
            for name, value in assignments:
                apply_value(sub, name, value, f"recipe({path!r}) {name}")
            prefix = f"{_tag(sub.name, profile, assignments)}/"
            self._one_meaning(prefix, key, path)
            planner = _Planner(sub, self.foreign, prefix=prefix, depth=self.depth + 1)
            self.foreign[key] = (planner, planner.plan())
        elif self.foreign[key] is None:
            raise ExprError(f"recipe({path!r}) refers back to a recipe that refers to it")
        planner, sub_plan = self.foreign[key]
        self.extra_nodes.update(sub_plan.by_label)
        return {"steps": _Steps(planner, planner.prefix), "vars": sub_plan.vars}

    def _one_meaning(self, prefix: str, key: tuple, path: str) -> None:
        """Two references planned differently (two files named alike, a digest that collided) must
        not share a label: their steps would be one node, and one of them would read the other's outputs."""
        labels = self.foreign.setdefault(_LABELS, {})
        if labels.setdefault(prefix, key) != key:
            raise ExprError(f"recipe({path!r}) would label its steps {prefix}..., as a reference to "
                            f"{labels[prefix][0]} with other overrides does; give the recipes different names")

    def _find(self, path: str) -> Path:
        found = Path(paths.locate(path, Path(self.recipe.file).resolve().parent)[1])
        if found.is_file():
            return found
        raise ExprError(f"recipe({path!r}): no such file (looked next to {self.recipe.file} and in the folders "
                        f"above it)")

    def names(self, item: Any = None) -> dict[str, Any]:
        n = {"vars": self.vars, "steps": _Steps(self, self.prefix)}
        if item is not None:
            n["item"] = item
        return n

    def plan(self) -> Plan:
        # pass 1: expand foreach into instances, counted before any is planned
        limit, total = max_instances(), 0
        for d in self.recipe.steps:
            self.instances[d.id] = self._expand(d)
            total += len(self.instances[d.id])
            if total > limit:
                raise RecipeError(f"step {d.id!r}: with this foreach the recipe has {total:,} step instances, over the "
                                  f"limit of {limit:,} (set {INSTANCES_ENV}=N to raise it)", d.where("foreach"))
        self._check_defaults()
        # pass 2: configs and inputs
        nodes: list[Node] = []
        for d in self.recipe.steps:
            self._template(d)  # its step type is known before its first instance is planned
            for key, item in self.instances[d.id].items():
                label = self.prefix + (f"{d.id}[{key}]" if d.foreach is not None else d.id)
                nodes.append(self._node(d, label, item))
        all_nodes = {n.label: n for n in nodes}
        for label, n in self.extra_nodes.items():
            all_nodes.setdefault(label, n)
        r = self.recipe
        return Plan(r.name, r.file, _toposort(nodes, all_nodes), r.profile, list(r.sets), self.vars,
                    executor=r.executor, executor_where=r.executor_where)

    def _check_defaults(self) -> None:
        """A `defaults` entry names a step type (a typo would otherwise set nothing); one no step
        uses yet is fine, for recipes that extend this one."""
        used = {d.uses for d in self.recipe.steps}
        for stype in self.recipe.defaults:
            if stype not in used:
                try:
                    registry.get(stype, self._defaults_where(stype))
                except RecipeError as e:
                    raise RecipeError(f"defaults: {e.message}", e.where) from None

    def _set_by_defaults(self, d: StepDecl, field_: str) -> str | None:
        """Where `defaults` gives the step `field_`, when the step's own `with` does not."""
        if field_ in d.with_ or ("with", field_) in d.origins or field_ not in self.recipe.defaults.get(d.uses, {}):
            return None
        found = self._defaults_where(d.uses, field_)
        return d.where("with") if found == self.recipe.file else found

    def _defaults_where(self, stype: str, field_: str | None = None) -> str:
        """Where this file (its part of the profile first) writes `defaults.STYPE[.FIELD]`; the
        file when elsewhere (a parent, --set)."""
        r = self.recipe
        own = r.node.get("profiles") if isinstance(r.node, dict) else None  # this file's, for its lines
        profile = own.get(r.profile) if isinstance(own, dict) and r.profile else None
        for top in (profile, r.node):
            node = top.get("defaults") if isinstance(top, dict) else None
            if isinstance(node, dict) and stype in node:
                inner = node[stype]
                return where(r.file, inner, field_) if isinstance(inner, dict) and field_ in inner else \
                    where(r.file, node, stype)
        return r.file

    def _expand(self, d: StepDecl) -> dict[str, Any]:
        if d.foreach is None:
            return {"": None}
        try:
            coll = resolve(d.foreach, self.names(), {"recipe": self._recipe_fn})
        except ExprError as e:
            raise RecipeError(f"step {d.id!r}: foreach: {e}", d.where("foreach")) from None
        if isinstance(coll, dict):
            return _instance_ids(d, {str(k): {"key": k, "value": v} for k, v in coll.items()})
        if isinstance(coll, list):
            scalar = all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in coll)
            keys = [str(x) for x in coll] if scalar else [str(i) for i in range(len(coll))]
            if len(set(keys)) != len(keys):
                raise RecipeError(f"step {d.id!r}: foreach has repeated items, so instance ids would clash",
                                  d.where("foreach"))
            return _instance_ids(d, dict(zip(keys, coll)))
        kind = f"{type(coll).__name__} " if type(coll).__module__ == "builtins" else ""  # not "_StepHandle"
        raise RecipeError(f"step {d.id!r}: foreach must be a list or a mapping, found {kind}{coll!r}",
                          d.where("foreach"))

    def _template(self, d: StepDecl) -> "_Template":
        t = self._templates.get(d.id)
        if t is None:
            step_cls = registry.get(d.uses, d.where("uses"))
            t = self._templates[d.id] = _Template(
                step_cls, deep_merge(self.recipe.defaults.get(d.uses, {}), d.with_), str(Path(d.file).resolve().parent),
                d.where("uses"), d.where("resources"), step_cls.input_slots())
        return t

    def _node(self, d: StepDecl, label: str, item: Any) -> Node:
        t, names, fns = self._template(d), self.names(item), {"recipe": self._recipe_fn}
        with borrowed(names, fns) as ev:  # one evaluator for the instance's config and inputs
            config = self._config(d, t, label, names, fns, ev)
            step = t.step_cls(config)
            inputs = self._inputs(d, t, label, names, fns, ev)
        bound = {k for k, v in inputs.items() if v not in (None, [])}
        problem = step.check_bindings(bound)
        if problem is not None:
            raise RecipeError(f"step {label}: {problem[1]}", d.where("inputs", problem[0]))
        needs = []
        for n in d.needs:
            if n not in self.decls:
                raise RecipeError(f"step {label}: needs {n!r}, which is not a step of this recipe"
                                  f"{did_you_mean(n, self.decls)}", d.where("needs"))
            needs += [self.prefix + (f"{n}[{k}]" if self.decls[n].foreach is not None else n)
                      for k in self.instances[n]]
        resources = self.shared(parse_resources(d.resources, t.resources_where, step.resources()))
        return Node(label, self.recipe.name, d.uses, t.step_cls, config, inputs, needs, t.where, d.id, resources,
                    d.resources is not None)

    def _config(self, d: StepDecl, t: "_Template", label: str, names: dict, fns: dict, ev) -> StepConfig:
        """The step type's recipe defaults, then `with`, evaluated and validated; its files exist."""
        try:
            cfg_dict = resolve(t.raw, names, fns, ev)
        except ExprError as e:
            field_ = next((k for k, v in d.with_.items() if _holds_expr(v)), None)
            raise RecipeError(f"step {label}: {e}", d.where("with", field_) if field_ else d.where("with")) from None
        _no_refs(cfg_dict, label, d)
        for k, v in cfg_dict.items():
            if type(v) is bool and registry.takes_number(t.step_cls.Config, k):  # pydantic reads `true` as 1
                raise RecipeError(f"step {label}: config field {k!r} takes a number, found {str(v).lower()}",
                                  self._set_by_defaults(d, k) or d.where("with", k))
        try:
            config = t.step_cls.Config.model_validate(cfg_dict)
        except ValidationError as e:
            raise _config_error(e, label, d, t.step_cls, self._set_by_defaults) from None
        config._recipe_dir = folder = t.folder  # where its relative paths are read from
        for f in t.step_cls(config).external_files():
            if not os.path.exists(f):
                shown = f[len(folder) + 1:] if f.startswith(folder + os.sep) else f  # as the recipe writes it
                raise RecipeError(f"step {label}: file {shown} not found (looked next to {d.file} and in the "
                                  f"folders above it)", d.where("with"))
        return config

    def _inputs(self, d: StepDecl, t: "_Template", label: str, names: dict, fns: dict, ev) -> dict[str, Any]:
        """Each input slot bound to the outputs its expression names (None or [] when unbound)."""
        if d.id in self._same_inputs:
            return self._same_inputs[d.id]
        slots = t.slots
        inputs: dict[str, Any] = {}
        for name, expr in d.inputs.items():
            if name not in slots:
                raise RecipeError(f"step {label}: {d.uses} has no input {name!r}{did_you_mean(name, slots)} (inputs: "
                                  f"{', '.join(f'{k}: {v.describe()}' for k, v in slots.items()) or 'none'})",
                                  d.where("inputs", name))
            try:
                value = resolve(expr, names, fns, ev)
            except ExprError as e:
                raise RecipeError(f"step {label}: input {name}: {e}", d.where("inputs", name)) from None
            inputs[name] = self._check_input(value, slots[name], label, name, d)
        for name, slot in slots.items():
            if name not in inputs:
                if slot.required:
                    raise RecipeError(f"step {label}: input {name!r} ({slot.describe()}) is not bound; add "
                                      f"`inputs: {{{name}: ${{steps.ID.OUTPUT}}}}`",
                                      d.where("inputs") if d.inputs else d.where("uses"))
                inputs[name] = [] if slot.many else None
        if d.foreach is not None and all(isinstance(e, str) and not mentions(e, "item") for e in d.inputs.values()):
            self._same_inputs[d.id] = inputs  # `${steps.load.data}`: the same dict for every instance
        return inputs

    def _check_input(self, value: Any, slot, label: str, name: str, d: StepDecl) -> Any:
        refs = value if isinstance(value, list) else [value]
        if value == [] and slot.many and slot.required:  # `[]`, or a foreach over nothing: the step gets no input
            raise RecipeError(f"step {label}: input {name!r} ({slot.describe()}) is bound to an empty list; it "
                              f"takes at least one output", d.where("inputs", name))
        if isinstance(value, list) and not slot.many and len(value) != 1:
            raise RecipeError(f"step {label}: input {name!r} takes one {slot.type.kind}, got a list of {len(value)}",
                              d.where("inputs", name))
        for r in refs:
            if not isinstance(r, Ref):
                raise RecipeError(f"step {label}: input {name!r} must be bound to a step output like "
                                  f"'${{steps.ID.OUTPUT}}', found {r!r}", d.where("inputs", name))
            out_type = self._output_type(r)
            if not slot.type.accepts(out_type):
                raise RecipeError(f"step {label}: input {name!r} expects {slot.type.kind} but {r} is a "
                                  f"{out_type.kind}", d.where("inputs", name))
        if slot.many:
            return refs
        return refs[0]

    def _output_type(self, r: Ref):
        if r.label in self.extra_nodes:
            return self.extra_nodes[r.label].step_cls.outputs[r.output]
        local = r.label[len(self.prefix):] if r.label.startswith(self.prefix) else r.label
        return registry.get(self.decls[local.split("[")[0]].uses).outputs[r.output]


MAX_ID_BYTES = 150  # the step id (100) and the instance id make one folder name, at most 255 bytes
_NOT_IN_IDS = re.compile(r"[/\\\[\]\x00-\x1f\x7f]")


def _instance_ids(d: StepDecl, instances: dict[str, Any]) -> dict[str, Any]:
    """`instances`, once every id is fit for a label (`make[add]`) and an artifacts folder name
    (`make.add`): no '/', backslash, bracket or control character."""
    for key in instances:
        bad = _NOT_IN_IDS.search(key)
        if bad or len(key.encode()) > MAX_ID_BYTES:
            why = f"{bad.group()!r} is not allowed in one" if bad else f"at most {MAX_ID_BYTES} bytes"
            raise RecipeError(f"step {d.id!r}: foreach item {_shown(key)} cannot be an instance id, which names its "
                              f"artifacts folder ({why}); use a mapping of plain ids to items, e.g. "
                              f"{{a: {_shown(key)}}}", d.where("foreach"))
    return instances


def _shown(text: str, limit: int = 60) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def _holds_expr(value: Any) -> bool:
    if isinstance(value, dict):
        return any(has_expr(k) or _holds_expr(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_holds_expr, value))
    return has_expr(value)


def _no_refs(value: Any, label: str, d: StepDecl) -> None:
    if isinstance(value, Ref) or (isinstance(value, list) and any(isinstance(v, Ref) for v in value)):
        raise RecipeError(f"step {label}: a step output ({value}) is used in `with`; bind outputs under `inputs:`",
                          d.where("with"))
    if isinstance(value, dict):
        for v in value.values():
            _no_refs(v, label, d)
    elif isinstance(value, list):
        for v in value:
            _no_refs(v, label, d)


def _config_error(e: ValidationError, label: str, d: StepDecl, step_cls: type[Step],
                  set_by_defaults: Callable[[StepDecl, str], str | None]) -> RecipeError:
    errs = e.errors()
    # an unknown field first: `pth` for `path` is one typo, which pydantic reports after "path is required"
    first = next((x for x in errs if x["type"] == "extra_forbidden"), errs[0])
    loc = tuple(str(x) for x in first["loc"])
    path = ".".join(loc) or "(config)"
    got = (f" (got {first['input']!r})"
           if first["type"] not in ("missing", "extra_forbidden") and not isinstance(first.get("input"), dict) else "")
    if first["type"] == "extra_forbidden":
        fields = _fields_at(step_cls.Config, loc[:-1])
        msg = (f"step {label}: {d.uses} has no config field {path!r}"
               f"{did_you_mean(loc[-1], fields, '.'.join(loc[:-1]) + '.' if loc[:-1] else '')} "
               f"(fields{' of ' + '.'.join(loc[:-1]) if loc[:-1] else ''}: {', '.join(fields)})")
    elif first["type"] == "missing":
        msg = f"step {label}: config field {path!r} is required by {d.uses}"
    else:
        msg = f"step {label}: config field {path!r}: {first['msg']}{got}"
    if len(errs) > 1:
        msg += f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''} in this step's config)"
    if loc and (at := set_by_defaults(d, loc[0])):
        return RecipeError(f"{msg} (set by defaults.{d.uses})", at)
    return RecipeError(msg, d.where("with", *loc) if loc else d.where("with"))


def _fields_at(model: type, loc: tuple[str, ...]) -> list[str]:
    """The field names of the config model at `loc` inside `model` (a nested pydantic model,
    possibly optional); the deepest model's where a level below it is not a model."""
    from pydantic import BaseModel

    fields = list(model.model_fields)
    for part in loc:
        f = model.model_fields.get(part)
        kinds = [f.annotation, *getattr(f.annotation, "__args__", ())] if f else []
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if model is None:
            return fields
        fields = list(model.model_fields)
    return fields


def _toposort(nodes: list[Node], all_nodes: dict[str, Node]) -> list[Node]:
    """Depth-first order over `nodes` and the other recipes' nodes they reach; cycles are errors."""
    order: list[Node] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(label: str, path: list[str]) -> None:
        if state.get(label) == 2:
            return
        if state.get(label) == 1:
            cycle = path[path.index(label):] + [label]
            raise RecipeError(f"the steps form a cycle: {' -> '.join(cycle)}", all_nodes[label].where)
        node = all_nodes.get(label)
        if node is None:
            raise RecipeError(f"step {path[-1]} depends on {label!r}, which is not planned", all_nodes[path[-1]].where)
        state[label] = 1
        for up in node.upstream():
            visit(up, path + [label])
        state[label] = 2
        order.append(node)

    for n in nodes:
        visit(n.label, [])
    return order


def _overrides(given: Any, head: str) -> list[tuple[str, Any]]:
    """recipe()'s `vars=` or `set=`: (dotted path, plain value) pairs, sorted (one key per meaning)."""
    if given is None:
        return []
    what, example = ("vars", '{"n": 5}') if head else ("set", '{"vars.n": 5}')
    if not isinstance(given, dict) or not all(isinstance(k, str) and k for k in given):
        raise ExprError(f"recipe(): {what}= takes a mapping of names to values, e.g. {what}={example}, "
                        f"got {type(given).__name__}")
    try:
        return sorted((head + k, json.loads(json.dumps(v))) for k, v in given.items())
    except (TypeError, ValueError):
        raise ExprError(f"recipe(): {what}= values must be plain data (text, numbers, lists, mappings)") from None


def _tag(name: str, profile: str | None, assignments: list[tuple[str, Any]]) -> str:
    """How another recipe's steps are labelled (and their artifacts folders named): base,
    base[tiny], base[tiny,vars.n=5]. Overrides that would not read well as a folder name (a
    slash, a quote, a list, in a value or in a path) or run long show as a digest of them: a
    label names one meaning. So does a profile named like `ti/ny` (with its overrides)."""
    texts = [_plain_text(v) for _, v in assignments]
    shown = ",".join(f"{p}={t}" for (p, _), t in zip(assignments, texts))
    if profile is not None and not _WORD.fullmatch(profile):
        profile, shown = None, "set-" + hashlib.sha256(json.dumps([profile, assignments]).encode()).hexdigest()[:8]
    elif None in texts or len(shown) > 60 or not all(_WORD.fullmatch(p) for p, _ in assignments):
        shown = "set-" + hashlib.sha256(json.dumps(assignments).encode()).hexdigest()[:8]
    parts = [x for x in (profile, shown) if x]
    return f"{name}[{','.join(parts)}]" if parts else name


def _plain_text(value: Any) -> str | None:
    """A value's text when it is short and unambiguous: a number or bool as JSON writes it, a
    word as it is (it starts with a letter, so it reads as no number); None otherwise."""
    if isinstance(value, str):  # not a word JSON writes for another value: true, Infinity (a float), ...
        word = _WORD.fullmatch(value) and len(value) <= 41 and value not in ("true", "false", "null", "Infinity", "NaN")
        return value if word else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return json.dumps(value) if isinstance(value, (bool, int, float)) or value is None else None


_WORD = re.compile(r"[A-Za-z_][\w.-]*", re.ASCII)  # reads as no number, holds no slash or quote
_LABELS = "labels"  # foreign's entry of {label prefix: the key of the reference planned under it}
