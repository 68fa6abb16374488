"""Durations written by people: ``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``.

Used by the command-line options and by the node file (no ``rich`` import here: the
node file is read by ``trioblock.open_gateway_from_config`` too).
"""

from __future__ import annotations

import math


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` or ``1h30m`` → seconds; ``ValueError``.

    The result is finite and more than zero: ``inf``, ``nan``, ``0`` and negative values
    are refused.
    """
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        total = float(value)
    except ValueError:
        total = _with_units(value, text)
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"bad duration {text!r}: a finite number of seconds more than zero")
    return total


def _with_units(value: str, text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    total = 0.0
    number = ""
    for char in value:
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total += _number(number, text) * units[char]
            number = ""
        else:
            raise ValueError(f"bad duration {text!r}: use e.g. 90s, 15m, 2h, 1d or 1h30m")
    if number:
        raise ValueError(f"bad duration {text!r}: a number needs a unit (s, m, h, d, w)")
    return total


def _number(digits: str, text: str) -> float:
    try:
        return float(digits)
    except ValueError:
        raise ValueError(f"bad duration {text!r}: {digits!r} is not a number") from None


__all__ = ["parse_duration"]
