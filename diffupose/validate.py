"""Range checks of config values (ModelConfig, DiffusionConfig): a JSON config is user input, and a
value out of range must be refused before anything is built from it (a d_model of 20000 allocates
gigabytes; a pose_scale of 1e30 lifts poses of 1e30 m). One line, naming the field and the range."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence


def whole_number(name: str, value: Any, lo: int, hi: int) -> None:
    """value is an integer (not a bool, not 16.0) within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be within [{lo}, {hi}], got {value}")


def real_number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> None:
    """value is a finite real number within [lo, hi] ((lo, hi] with lo_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value > hi or value < lo or (lo_open and value == lo):
        raise ValueError(f"{name} must be within {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")


def one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
