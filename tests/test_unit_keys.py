"""Step keys, in process: every part of a KeyParts changes the key, execution-only and secret
fields do not, an entry's recorded parts give back its key, and `plan`'s "why" names each
changed part with its old and new value."""
from dataclasses import replace

import pytest
from pydantic import BaseModel, Field

from engine.cache.keys import KeyParts, code_key, config_for_key, step_key
from engine.cache.records import Entry
from engine.recipe.step import EXECUTION_ONLY, StepConfig

BASE = KeyParts("data.map", "1", {"n": 2, "where": "x > 0"}, {"data": "d" * 64}, ["e" * 64])


@pytest.mark.parametrize("change", [
    {"uses": "data.filter"}, {"version": "2"}, {"config": {"n": 3, "where": "x > 0"}},
    {"config": {"n": 2}}, {"inputs": {"data": "f" * 64}}, {"inputs": {"data": "d" * 64, "extra": None}},
    {"external": []}, {"external": ["a" * 64]}, {"source": "ast2:abc"}, {"schema": 1},
], ids=lambda c: next(iter(c)))
def test_every_part_changes_the_key(change):
    assert replace(BASE, **change).key != BASE.key


def test_equal_parts_give_equal_keys_whatever_the_order_of_config_fields():
    shuffled = replace(BASE, config={"where": "x > 0", "n": 2})
    assert shuffled.key == BASE.key and len(BASE.key) == 64


def test_the_source_digest_makes_the_code_key_of_the_step_key():
    recomputed = replace(BASE, source="ast2:abc")
    assert recomputed.step_key == BASE.key
    assert recomputed.key == code_key(BASE.key, "ast2:abc")
    assert step_key(BASE.uses, BASE.version, BASE.config, BASE.inputs, BASE.external) == BASE.key


class Backend(BaseModel):
    model: str = "m"
    concurrency: int = Field(8, json_schema_extra=EXECUTION_ONLY)


class Config(StepConfig):
    n: int = 2
    timeout_s: float = Field(30.0, json_schema_extra=EXECUTION_ONLY)
    api_key: str = Field("", json_schema_extra={"secret": True})
    backend: Backend = Field(default_factory=Backend)
    other_kind_only: int = 0

    def unkeyed_fields(self):
        return [*super().unkeyed_fields(), "other_kind_only"]


def key_of(config: StepConfig) -> str:
    return replace(BASE, config=config_for_key(config)).key


def test_execution_only_secret_and_unkeyed_fields_leave_the_key():
    same = key_of(Config())
    assert config_for_key(Config()) == {"n": 2, "backend": {"model": "m"}}
    for changed in (Config(timeout_s=1), Config(api_key="sk-live-0123456789"), Config(other_kind_only=5),
                    Config(backend=Backend(concurrency=64))):
        assert key_of(changed) == same
    assert key_of(Config(n=3)) != same and key_of(Config(backend=Backend(model="other"))) != same


def test_an_entry_gives_back_the_key_it_was_made_under():
    def entry(parts: KeyParts) -> Entry:
        return Entry(key=parts.key, uses=parts.uses, version=parts.version, config=parts.config,
                     inputs=parts.inputs, outputs={}, external=parts.external, source=parts.source or "ast2:now",
                     extra={"source_in_key": True} if parts.source else {})

    for parts in (BASE, replace(BASE, source="ast2:abc")):
        made = entry(parts)
        assert made.expected_key() == parts.key
        assert KeyParts.of_entry(made.to_json()) == parts


def test_why_is_the_difference_of_two_key_parts_with_old_and_new_values():
    new = replace(BASE, version="2", config={"n": 3, "where": "x > 0", "seed": 7}, inputs={"data": "f" * 64})
    assert new.diff(BASE) == ["version 1 -> 2", "with.n: 2 -> 3", "with.seed: (unset) -> 7", "input data changed"]
    nested = replace(BASE, config={"n": 2, "where": "x > 0", "backend": {"model": "a" * 60}})
    old = replace(BASE, config={"n": 2, "where": "x > 0", "backend": {"model": "b"}})
    assert nested.diff(old) == [f'with.backend.model: "b" -> "{"a" * 36}...']
    assert replace(BASE, uses="data.filter", external=[]).diff(BASE) == ["step type data.map -> data.filter",
                                                                        "external file changed"]
    assert replace(BASE, source="ast2:abc").diff(BASE) == ["code changed (--rerun-changed-code)"]
    assert BASE.diff(BASE) == []
