"""Range checks for user-given values: each failure is one ``XasrError`` line naming the option,
the value given and what is allowed, raised where the option's dataclass is built, before any
work starts."""

from __future__ import annotations

import math
from collections.abc import Iterable

from xasr.errors import XasrError


def is_number(value) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(name: str, value, at_least: int | None = None, at_most: int | None = None) -> None:
    """``value`` is an int (not a bool) within [at_least, at_most]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise XasrError(f"{name} must be a whole number, got {value!r}")
    if at_least is not None and value < at_least:
        raise XasrError(f"{name} must be at least {at_least}, got {value}")
    if at_most is not None and value > at_most:
        raise XasrError(f"{name} must be at most {at_most}, got {value}")


def number(
    name: str,
    value,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
) -> None:
    """``value`` is a finite int or float within the given open/closed bounds."""
    if not is_number(value) or not math.isfinite(value):
        raise XasrError(f"{name} must be a finite number, got {value!r}")
    if above is not None and not value > above:
        raise XasrError(f"{name} must be greater than {above:g}, got {value:g}")
    if at_least is not None and value < at_least:
        raise XasrError(f"{name} must be at least {at_least:g}, got {value:g}")
    if below is not None and not value < below:
        raise XasrError(f"{name} must be less than {below:g}, got {value:g}")
    if at_most is not None and value > at_most:
        raise XasrError(f"{name} must be at most {at_most:g}, got {value:g}")


def one_of(name: str, value, choices: Iterable) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise XasrError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def boolean(name: str, value) -> None:
    if not isinstance(value, bool):
        raise XasrError(f"{name} must be true or false, got {value!r}")
