"""Declared valid ranges for numeric settings, checked by one mechanism.

A setting declares its range where it is declared: ``Annotated[int, Range(1)]`` on a config field
(petkit.config), on a component factory's parameter (checked by ``Registry.build``) or on an API
function's parameter (checked by :func:`checked`). A value outside its range, and any float that
is NaN or infinite, is refused with one line naming the setting, the value and the range, before
anything runs: ``train.grad_clip=-1`` would be gradient ascent, ``--top-k 0`` would return every
identity, ``ks=[0]`` would put ``precision@0: inf`` in metrics.json.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from petkit.errors import PetkitError


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``low_open``/``high_open``: strict); either end may be open-ended (None).

    Applied to a list or tuple, every item must be in range.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def check(self, value: Any, where: str) -> Any:
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                continue  # the type check names wrong types; a range speaks only about numbers
            if not self.contains(item):
                raise PetkitError(f"{where} is {item!r}; it must be {self.describe()}", self.hint or None)
        return value


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)  # a share, both ends allowed
OPEN_FRACTION = Range(0, 1, low_open=True, high_open=True)
RATE = Range(0, 1, low_open=True, high_open=True, hint="a rate such as 0.01 for 1 %")
IMAGE_SIZE = Range(16, 4096, hint="the side in pixels images are resized to, e.g. 112 or 224")
EMBEDDING_DIM = Range(1, 65536)
SIMILARITY = Range(-1, 1, hint="a cosine similarity threshold lies in [-1, 1]")
# torch.onnx's exporter writes opset 18 and newer natively (asked for 5-17 it silently wrote 18);
# onnxruntime 1.31 loads 18-24 (measured)
OPSETS = Range(18, 24, hint="--opset 18 is the default and loads in every onnxruntime since 1.14")

PositiveInt = Annotated[int, AT_LEAST_ONE]
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]
NonNegativeInt = Annotated[int, NON_NEGATIVE]


def ranges_in(tp: Any) -> list[Range]:
    """The ranges an annotation declares (inside Optional/Union too)."""
    found: list[Range] = []
    if typing.get_origin(tp) is Annotated:
        found += [m for m in tp.__metadata__ if isinstance(m, Range)]
        tp = tp.__origin__
    for arg in typing.get_args(tp):
        found += ranges_in(arg)
    return found


def check_finite(value: Any, where: str) -> Any:
    """Every float a user gives must be a number: NaN and infinity train or score nonsense."""
    for item in (value if isinstance(value, (list, tuple)) else [value]):
        if isinstance(item, float) and not math.isfinite(item):
            raise PetkitError(f"{where} is {item!r}; it must be a finite number")
    return value


def check_annotated(tp: Any, value: Any, where: str) -> Any:
    check_finite(value, where)
    for declared in ranges_in(tp):
        declared.check(value, where)
    return value


@functools.cache
def _parameter_hints(fn: Callable) -> dict[str, Any]:
    target = fn if dataclasses.is_dataclass(fn) or not inspect.isclass(fn) else fn.__init__
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # a plugin with unresolvable annotations: nothing declared, only finiteness checked
        return {}


def check_args(fn: Callable, values: dict[str, Any], where: Callable[[str], str]) -> None:
    """Check ``values`` (parameter -> value) against ``fn``'s declared ranges; ``where(name)`` names a setting."""
    hints = _parameter_hints(fn)
    for name, value in values.items():
        check_annotated(hints.get(name), value, where(name))


def checked(fn: Callable) -> Callable:
    """Decorator: the function's arguments are checked against its declared ranges on every call."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        check_args(fn, {k: v for k, v in bound.arguments.items() if v is not None}, lambda name: _option(name))
        return fn(*args, **kwargs)

    return wrapper


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"
