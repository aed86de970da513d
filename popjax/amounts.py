"""Amounts as a config gives them: whole numbers, real numbers and sizes in bytes ("2GiB"),
read and checked as plain values, before anything is built."""

from __future__ import annotations

import math
import re

from popjax.errors import PopjaxError

# JAX's PRNGKey takes 32 bits on jax 0.7 and 0.10 alike: a larger seed wraps round to a smaller
# one's key, and numpy refuses a negative one.
MAX_SEED = 2**32 - 1
# Steps and member indices are int32 on the device.
MAX_COUNT = 2**31 - 1
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number that compares as one: no bool, no NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def parse_bytes(text: str | int) -> int:
    """``"2GiB"``, ``"512 MB"`` or a whole number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b|b)?\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise PopjaxError(
            f'memory_limit must be an amount such as "2GiB" or "512MB" (got {text!r})'
        )
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"
