"""Numeric run arguments checked at parse time: every number finite, each range checked on its own field.

    check_finite_numbers(args)                       # any float field (or list of floats) that is NaN or inf
    check_range("momentum", args.momentum, low=0, high=1, high_open=True)

A failure is one `ConfigError` naming ONE field and its value ("config field 'weight_decay' must be a finite
number, got nan"), so a message never blames a field that is fine.
"""

from __future__ import annotations

from dataclasses import fields
import math
from typing import Any

from .arguments import ConfigError


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, (int, float)) and not isinstance(item, bool)]
    return []


def check_finite_numbers(arguments: Any) -> None:
    """Raise `ConfigError` for the first dataclass field holding a NaN or infinite number (alone or in a list)."""
    for item in fields(arguments):
        value = getattr(arguments, item.name)
        if any(not math.isfinite(number) for number in _numbers(value)):
            raise ConfigError(f"config field '{item.name}' must be a finite number, got {value!r}")


def check_range(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> None:
    """Raise `ConfigError` unless every number of `value` (a number or a list) lies in the range; None passes."""
    if value is None:
        return
    for number in _numbers(value):
        too_low = low is not None and (number <= low if low_open else number < low)
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high or not math.isfinite(number):
            raise ConfigError(
                f"config field '{name}' must be {_describe(low, high, low_open, high_open)}, got {value!r}{hint}"
            )


def _describe(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    return f"{'<' if high_open else '<='} {high:g}"


__all__ = ["check_finite_numbers", "check_range"]
