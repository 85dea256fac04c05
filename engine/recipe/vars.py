"""Vars that refer to vars: `model: ${vars.models[str(vars.model_choice)]}` is worked out once,
after profiles and `--set`, so every step sees the derived value.

The order in the file does not matter: a var is resolved after the vars it reads. That order is
found with a stack, not by recursion (500 vars each reading the next passed Python's recursion
limit): the vars an expression names (`vars.a`, `vars["a"]`) go first; a var read by a name
computed at run time (`vars[vars.choice]`) stops the evaluation, is resolved, and the
evaluation starts again. A var that needs itself, directly or through others, is an error naming
the chain and the var's line.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from .errors import RecipeError
from .expr import ExprError, resolve

# `vars.a` or `vars["a"]` in an expression: a hint of what to resolve first (one in a string or a
# branch not taken does no harm: the evaluation decides), far cheaper than parsing
_NAMED = re.compile(r"""\bvars\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*(["'])([^"'\\]*)\2\s*\])""")
_INLINE = 16  # vars resolved inside one another's evaluation, at most (each takes Python stack)


def _named(value: Any) -> list[str]:
    """The vars the `${...}` in `value` (and the dicts and lists inside it) seem to name."""
    if isinstance(value, dict):
        return [k for v in value.values() for k in _named(v)]
    if isinstance(value, list):
        return [k for v in value for k in _named(v)]
    if not isinstance(value, str) or "${" not in value:
        return []
    return [m.group(1) or m.group(3) for m in _NAMED.finditer(value)]


class _Needs(ExprError):
    """Raised inside an expression that read a var not resolved yet: an ExprError, so the
    evaluator passes it through unchanged. `chain`: the vars resolved inline that read it, then it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.chain = [name]


def resolve_vars(raw: dict[str, Any], where: Callable[[str], str]) -> dict[str, Any]:
    """The vars with every `${...}` evaluated; `where(name)` is the file:line of a var."""
    resolver = _Resolver(raw, where)
    for first in raw:
        resolver.resolve(first)
    return {name: resolver.done[name] for name in raw}


class _Resolver:
    """What resolve_vars knows: the vars done, those the stack waits for, those resolved inline."""

    def __init__(self, raw: dict[str, Any], where: Callable[[str], str]):
        self.raw, self.where = raw, where
        self.done: dict[str, Any] = {}
        self.on_stack: set[str] = set()
        self.reading: set[str] = set()  # vars being resolved inline, inside the evaluation of another
        self.hints_of: dict[str, list[str]] = {}  # var -> the vars its expressions name, resolved before it
        self.unhinted: set[str] = set()  # vars whose named vars led to a cycle the evaluation may not take
        self.next_hint: dict[str, int] = {}  # var -> where in its hints to look on
        done, inline = self.done, self.inline

        class Lookup(dict):  # a dict of the raw vars, so error messages can list the known names
            def __getitem__(self, name: str) -> Any:
                if name not in raw:
                    raise KeyError(name)
                if name not in done:
                    done[name] = inline(name)
                return done[name]

        self.names = {"vars": Lookup(raw)}

    def resolve(self, first: str) -> None:
        """Resolve `first` and every var it waits for, with a stack."""
        stack = [(first, True)]  # each var waits for the one after it; True: the evaluation read it
        on_stack, done = self.on_stack, self.done
        on_stack.clear()
        on_stack.add(first)
        while stack:
            name = stack[-1][0]
            if name in done:
                on_stack.discard(stack.pop()[0])
                continue
            if (needed := self._hint(name)) is not None:
                stack.append((needed, False))
                on_stack.add(needed)
                continue
            try:
                done[name] = resolve(self.raw[name], self.names)
                continue
            except _Needs as e:
                *between, needed = e.chain
            except ExprError as e:
                raise RecipeError(f"vars.{name}: {e}", self.where(name)) from None
            stack += [(k, True) for k in between]  # none is on the stack: inline() checked
            on_stack.update(between)
            if needed in on_stack:
                start = next(i for i, (k, _) in enumerate(stack) if k == needed)
                on_stack -= _cycle(stack, start, self.unhinted, self.where)
            else:
                stack.append((needed, True))
                on_stack.add(needed)

    def _hint(self, name: str) -> str | None:
        """The first var `name`'s expressions name that is not done and not waited for. Those before
        it stay so: a scan from the first each time made one var naming 10,000 others take 1.8 s."""
        if name not in self.hints_of:
            self.hints_of[name] = list(dict.fromkeys(k for k in _named(self.raw[name]) if k in self.raw))
        hints = () if name in self.unhinted else self.hints_of[name]
        i = self.next_hint.get(name, 0)
        while i < len(hints) and (hints[i] in self.done or hints[i] in self.on_stack):
            i += 1
        self.next_hint[name] = i
        return hints[i] if i < len(hints) else None

    def inline(self, name: str) -> Any:
        """A var read by a computed name, resolved where it is read (a restart of each reader per
        such var made 2,000 of them take 12 s): at most _INLINE deep, and never one the stack waits
        for (a cycle); past that, the stack takes the chain, and resolves it or names its error or cycle."""
        if name in self.on_stack or name in self.reading or len(self.reading) >= _INLINE:
            raise _Needs(name)
        self.reading.add(name)
        try:
            return resolve(self.raw[name], self.names)
        except _Needs as e:  # a var further on: the stack takes the whole chain
            e.chain.insert(0, name)
            raise
        except ExprError:  # its own error: the stack resolves it, and names the error at its line
            raise _Needs(name) from None
        finally:
            self.reading.discard(name)


def _cycle(stack: list[tuple[str, bool]], start: int, unhinted: set[str], where: Callable[[str], str]) -> set[str]:
    """The vars from stack[start] on read each other in a ring. Where a var was put on the stack
    only because an expression names it (maybe in a branch not taken), drop it (the names
    dropped are returned) and evaluate the var that named it without hints; otherwise it is a
    true cycle."""
    hinted = next((i for i in range(start + 1, len(stack)) if not stack[i][1]), None)
    if hinted is not None:
        unhinted.add(stack[hinted - 1][0])
        dropped = {k for k, _ in stack[hinted:]}
        del stack[hinted:]
        return dropped
    names = [k for k, _ in stack[start:]] + [stack[start][0]]
    raise RecipeError(f"vars refer to each other in a cycle: {' -> '.join(f'vars.{k}' for k in names)}",
                      where(names[0]))
