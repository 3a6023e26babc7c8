"""Declared ranges (petkit.limits): the Range arithmetic, and a walk of every built-in component
that finds any numeric argument without a declared range."""

from __future__ import annotations

import inspect
import math
import typing

import pytest

from petkit.errors import PetkitError
from petkit.limits import Range, check_finite, checked, ranges_in
from petkit.registry import ALL_REGISTRIES

# facts petkit passes to factories (Registry.build's context), not user settings
CONTEXT = {"num_classes", "embedding_dim", "in_features", "steps_per_epoch", "epochs", "labels", "rank", "world_size",
           "image_size", "lr", "params", "optimizer"}


@pytest.mark.parametrize("declared, inside, outside, text", [
    (Range(0, low_open=True), [1e-9, 5, 1e9], [0, -1], "> 0"),
    (Range(1), [1, 2], [0, 0.999], ">= 1"),
    (Range(0, 1), [0, 0.5, 1], [-0.1, 1.01], "in [0, 1]"),
    (Range(0, 1, low_open=True, high_open=True), [0.01, 0.99], [0, 1], "in (0, 1)"),
    (Range(high=3, high_open=True), [-5, 2.9], [3, 4], "< 3"),
])
def test_range_bounds_and_description(declared, inside, outside, text):
    assert declared.describe() == text
    assert all(declared.contains(v) for v in inside)
    assert not any(declared.contains(v) for v in outside)
    assert not declared.contains(math.nan) and not declared.contains(math.inf)
    with pytest.raises(PetkitError, match=f"x is {outside[0]!r}; it must be {text.replace('(', '.').replace(')', '.').replace('[', '.').replace(']', '.')}"):
        declared.check(outside[0], "x")
    assert declared.check(list(inside), "x") == list(inside)  # every item of a list
    with pytest.raises(PetkitError):
        declared.check([inside[0], outside[0]], "x")


def test_non_finite_floats_are_refused_and_other_types_left_to_the_type_check():
    with pytest.raises(PetkitError, match="must be a finite number"):
        check_finite(float("nan"), "lr")
    with pytest.raises(PetkitError, match="must be a finite number"):
        check_finite([1.0, float("-inf")], "fars")
    assert Range(1).check("text", "x") == "text" and Range(1).check(True, "x") is True


def test_checked_functions_refuse_values_outside_their_declared_range():
    @checked
    def search(top_k: typing.Annotated[int, Range(1)] = 5, name: str = "") -> int:
        return top_k

    assert search(3) == 3 and search(top_k=1) == 1
    with pytest.raises(PetkitError, match="--top-k is 0; it must be >= 1"):
        search(0)


def _numeric(tp) -> bool:
    names = {getattr(t, "__name__", str(t)) for t in _leaves(tp)}
    return bool(names & {"int", "float"})


def _leaves(tp):
    if typing.get_origin(tp) is typing.Annotated:
        tp = tp.__origin__
    args = typing.get_args(tp)
    if not args:
        return [tp]
    return [leaf for arg in args for leaf in _leaves(arg)]


@pytest.mark.parametrize("registry", ALL_REGISTRIES, ids=lambda r: r.kind)
def test_every_numeric_argument_of_every_builtin_component_declares_a_range(registry):
    missing = []
    for entry in registry.entries():
        if entry.source != "petkit":
            continue
        hints = typing.get_type_hints(entry.obj, include_extras=True)
        for name in inspect.signature(entry.obj).parameters:
            tp = hints.get(name)
            if name in CONTEXT or tp is None or tp is bool or not _numeric(tp):
                continue
            if not ranges_in(tp):
                missing.append(f"{entry.name}.{name}")
    assert not missing, f"numeric arguments without a declared range: {missing}"
