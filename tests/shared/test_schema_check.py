"""The compiled argument checks (``shared.schema_check``) never call valid what ``jsonschema`` refuses, and do call
valid the ordinary submits they exist to speed up."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from bench.harness.processes import DEMO_TASK_MODULES
from shared.schema_check import compile_schema, is_number
from worker.tasks import load


class Size(enum.Enum):
    SMALL = "s"
    LARGE = "l"


class Box(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: Annotated[int, Field(ge=1, le=4096)]
    label: str | None = None


class Tree(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[a-z]+$")]
    children: list[Tree] = []


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    mode: Literal["fast", "slow"] = "fast"
    size: Size = Size.SMALL
    tags: Annotated[list[str], Field(max_length=3)] = []
    weights: dict[str, int] = {}
    box: Box | None = None
    tree: Tree | None = None
    anything: Any = None


def schemas() -> dict[str, dict[str, Any]]:
    """The demo tasks' published schemas and a model with every keyword pydantic writes for plain parameters."""
    found = {spec.name: spec.describe(300)["schema"] for spec in load(DEMO_TASK_MODULES.split(","))}
    return found | {"params": Params.model_json_schema()}


SCHEMAS = schemas()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(-2, 5000, allow_nan=False) | st.text(max_size=10)
    | st.sampled_from(["fast", "slow", "s", "l", "abc", "", "https://x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["name", "children", "width"]), inner),
    max_leaves=12,
)  # fmt: skip
KEYS = sorted({key for schema in SCHEMAS.values() for key in schema.get("properties", {})} | {"extra"})


@settings(max_examples=2000, deadline=None)
@given(name=st.sampled_from(sorted(SCHEMAS)), instance=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5))
def test_a_compiled_check_never_passes_what_jsonschema_refuses(name: str, instance: dict[str, Any]) -> None:
    check = compile_schema(SCHEMAS[name])
    assert check is not None
    if check(instance):
        assert not list(Draft202012Validator(SCHEMAS[name]).iter_errors(instance)), instance


@pytest.mark.parametrize(
    ("name", "instance"),
    [
        ("echo", {"message": "hello"}),
        ("add", {"x": 1, "y": 2.5}),
        ("count", {"n": 3}),
        ("tsum", {"numbers": [1, 2, 3]}),
        ("params", {"url": "u"}),
        (
            "params",
            {
                "url": "u",
                "ratio": 0.25,
                "mode": "slow",
                "size": "l",
                "tags": ["a"],
                "weights": {"a": 1},
                "box": {"width": 5, "label": None},
                "tree": {"name": "a", "children": [{"name": "b"}]},
                "anything": [{"x": 1}],
            },
        ),
    ],
)
def test_ordinary_submits_take_the_fast_path(name: str, instance: dict[str, Any]) -> None:
    assert not list(Draft202012Validator(SCHEMAS[name]).iter_errors(instance))
    check = compile_schema(SCHEMAS[name])
    assert check is not None
    assert check(instance)


@pytest.mark.parametrize(
    "instance",
    [
        {},  # url missing
        {"url": 1},
        {"url": "u", "ratio": 1},
        {"url": "u", "ratio": True},
        {"url": "u", "mode": "medium"},
        {"url": "u", "size": "m"},
        {"url": "u", "tags": ["a", "b", "c", "d"]},
        {"url": "u", "weights": {"a": 1.5}},
        {"url": "u", "box": {"width": 0}},
        {"url": "u", "box": {"width": 1, "depth": 2}},
        {"url": "u", "tree": {"name": "A"}},
        {"url": "u", "tree": {"name": "a", "children": [{"name": ""}]}},
        {"url": "u", "other": 1},
    ],
)
def test_each_broken_rule_is_caught(instance: dict[str, Any]) -> None:
    assert list(Draft202012Validator(SCHEMAS["params"]).iter_errors(instance))
    check = compile_schema(SCHEMAS["params"])
    assert check is not None
    assert not check(instance)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "date-time"},
        {"type": "number", "multipleOf": 0.5},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"$ref": "https://example.com/other.json"},
        {"prefixItems": [{"type": "string"}], "type": "array"},
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
        {"type": "object", "properties": {"when": {"type": "string", "format": "date"}}},
        {"minimum": "1"},
        False,
    ],
)
def test_what_it_does_not_compile_is_left_to_jsonschema(schema: Any) -> None:
    assert compile_schema(schema) is None


def test_integral_floats_are_integers_as_jsonschema_counts_them() -> None:
    schema = {"type": "integer", "minimum": 0}
    check = compile_schema(schema)
    assert check is not None
    for value, valid in [(1, True), (1.0, True), (1.5, False), (True, False), (-1, False), ("1", False)]:
        assert check(value) is valid
        assert (not list(Draft202012Validator(schema).iter_errors(value))) is valid


def test_an_integer_a_float_cannot_hold_is_no_number() -> None:
    # JSON allows any integer; a float parameter cannot take one beyond ~1.8e308, so it must not pass as valid
    # (the task was accepted with 202, then failed every try with InvalidArguments).
    check = compile_schema({"type": "number", "minimum": 0})
    assert check is not None
    for value, valid in [(10**308, True), (1.5, True), (10**400, False), (True, False), ("1", False)]:
        assert is_number(value) is valid
        assert check(value) is valid
    assert not is_number(-(10**400))
