"""Amounts as a config gives them: whole numbers, real numbers and sizes in bytes ("2GiB"),
read and checked as plain values, before anything is built."""

from __future__ import annotations

import math

# JAX's PRNGKey takes 32 bits on jax 0.7 and 0.10 alike: a larger seed wraps round to a smaller
# one's key, and numpy refuses a negative one.
MAX_SEED = 2**32 - 1
# Steps and member indices are int32 on the device.
MAX_COUNT = 2**31 - 1


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A real number that compares as one: no bool, no NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
