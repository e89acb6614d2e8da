"""Helpers shared by every block's parameter dataclass and golden model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from .errors import ParameterError


def require(condition: bool, name: str, value, allowed: str) -> None:
    """Raise ParameterError naming `name`, its `value` and the `allowed` range unless `condition` holds."""
    if not condition:
        raise ParameterError(name, value, allowed)


def int_range(width: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest value of a `width`-bit integer."""
    if signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def product_range(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """Smallest and largest product of a value in [a] and a value in [b] (the extremes lie at the corners)."""
    corners = [x * y for x in a for y in b]
    return min(corners), max(corners)


def bits_for_range(lo: int, hi: int, signed: bool) -> int:
    """Fewest bits whose (signed or unsigned) range holds every integer in [lo, hi]."""
    width = 1
    while True:
        w_lo, w_hi = int_range(width, signed)
        if w_lo <= lo and hi <= w_hi:
            return width
        width += 1


def wrap(values, width: int, signed: bool) -> np.ndarray:
    """Two's-complement wrap of int64 values into `width` bits: what a `width`-bit register holds."""
    v = np.asarray(values, dtype=np.int64)
    if width >= 64:
        return v
    mask = np.int64((1 << width) - 1)
    v = v & mask
    if signed:
        v = np.where(v >= (1 << (width - 1)), v - (1 << width), v)
    return v.astype(np.int64)


def to_json_dict(obj) -> dict:
    """A dataclass as a JSON-ready dict (nested dataclasses included)."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def is_int(value) -> bool:
    """A Python int that is not a bool (parameters typed int must not silently accept True or 2.0)."""
    return isinstance(value, int) and not isinstance(value, bool)
