"""SPEC §3: a fixed, discoverable set of task types whose params are enforced."""

import pytest

from gridmesh.common.errors import InvalidArgument
from gridmesh.core.builtin_tasks import BURN_ITERS_PER_UNIT, burn_units
from gridmesh.core.tasktypes import TaskType, TaskTypeRegistry, default_registry

MAX = 1 << 20


@pytest.fixture(scope="module")
def registry() -> TaskTypeRegistry:
    return default_registry()


def test_the_six_builtins_are_registered(registry):
    assert {"noop", "echo", "sleep", "burn", "word_count", "primes"} <= set(registry.names())


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("noop", {"payload": "x" * 100}, None),
        ("echo", {"a": [1, "b"]}, {"a": [1, "b"]}),
        ("sleep", {"ms": 1}, {"slept_ms": 1}),
        ("word_count", {"text": "the cat and The hat"}, {"words": 5, "unique": 4}),
        ("primes", {"n": 100}, {"n": 100, "count": 25}),
        ("primes", {"n": 1}, {"n": 1, "count": 0}),
    ],
)
def test_builtin_results(registry, name, params, expected):
    task_type = registry.validate(name, params, MAX)
    result = task_type.run(params)
    if isinstance(expected, dict):
        assert expected.items() <= result.items()
    else:
        assert result == expected


def test_burn_units_is_the_peers_loop(registry):
    expected = sum(i * i for i in range(BURN_ITERS_PER_UNIT * 2))  # one loop of 2 x 96,000, as the peers run it
    assert burn_units(2) == expected
    assert registry.get("burn").run({"units": 2}) == {"units": 2, "x": expected}
    assert registry.get("burn").run({"ms": 5})["iterations"] > 0


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("sleep", {}, "params.ms"),
        ("sleep", {"ms": -1}, "params.ms"),
        ("sleep", {"ms": "ten"}, "params.ms"),
        ("sleep", {"ms": 1, "extra": 2}, "params"),
        ("burn", {"ms": 1, "units": 1}, "params"),
        ("burn", {}, "params"),
        ("primes", {"n": 10**12}, "params.n"),
        ("word_count", {"text": 5}, "params.text"),
    ],
)
def test_params_that_do_not_fit_are_refused_naming_the_param(registry, name, params, field):
    with pytest.raises(InvalidArgument) as info:
        registry.validate(name, params, MAX)
    assert info.value.field == field
    assert name in info.value.message


def test_unknown_task_type_names_the_known_ones(registry):
    with pytest.raises(InvalidArgument, match="'nope' is unknown; known types: burn, echo"):
        registry.validate("nope", {}, MAX)
    with pytest.raises(InvalidArgument, match="task_type is required"):
        registry.validate("", {}, MAX)


def test_oversized_params_are_refused(registry):
    with pytest.raises(InvalidArgument, match="the limit is 100 bytes"):
        registry.validate("echo", {"blob": "x" * 200}, 100)


def test_plugins_register_like_builtins():
    registry = TaskTypeRegistry([TaskType("double", "doubles x", {"type": "object"}, lambda p: p["x"] * 2)])
    assert registry.get("double").run({"x": 2}) == 4
    with pytest.raises(ValueError, match="twice"):
        registry.add(TaskType("double", "again", {"type": "object"}, lambda p: None))
