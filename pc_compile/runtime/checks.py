"""Checks of option values, shared by the config and the rules' options dataclasses.

A misspelled or out-of-range option must never be ignored silently: each check raises a
``ValueError`` that names the option and says what is valid.
"""

from __future__ import annotations


def number(name: str, value, low: float, high: float, low_open: bool = False) -> None:
    """``value`` is a real number in [low, high] (or (low, high] with ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")


def integer(name: str, value, low: int) -> None:
    """``value`` is an integer (not a bool) >= ``low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def choice(name: str, value, valid) -> None:
    """``value`` is one of ``valid``."""
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")
