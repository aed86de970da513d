"""PBT's settings: how a population exploits and explores, as plain values, read from a
config's ``[pbt]`` table and checked there. The core (``popjax.pbt``, ``popjax.round``) reads
them; this module imports no JAX, so a config can hold them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from popjax.amounts import MAX_COUNT, is_number, is_whole
from popjax.errors import ConfigError, shown, unknown_name_error

EXPLOIT_METHODS = ("truncation", "tournament", "halving", "frequencies")
RESTART_METHODS = ("prior", "copy")
EXPLORE_METHODS = ("perturb", "pb2")


@dataclass(frozen=True)
class PBTConfig:
    """How PBT exploits and explores.

    Attributes:
      exploit: "truncation" (the bottom ``fraction`` copy a random member of the top
        ``fraction``), "tournament" (each member meets a random other and copies it if it is
        better) or "halving" (successive halving: at each of the ``rungs``, the bottom
        ``fraction`` stop, and their slots ``restart``).
      fraction: the ``q`` of truncation selection; the share that stops at a rung.
      rungs: when successive halving decides (by default 1, 2, 4, 8, ...): rounds of a trial's
        own training with ``restart = "prior"`` (a trial is judged against every trial that
        reached the same rung, as ASHA; see ``popjax.halving``), rounds of the run with copies.
      restart: what a slot stopped by successive halving does next: "prior" (a new trial,
        fresh weights and hyperparameters from the priors, as ASHA's random search) or "copy"
        (a copy of a top member, explored, as PBT).
      perturb_factors: explore multiplies each copied hyperparameter by one of these.
      resample_probability: the chance that a copied hyperparameter is drawn anew from its prior.
      enabled: False runs the same population as a random search (no exploit, no explore).
      explore: "perturb" (the factors and resampling above) or "pb2" (a replaced member's
        hyperparameters maximise an upper confidence bound of a Gaussian process of the
        population's recent gains; see ``popjax.pb2``).
      window: the rounds of each member's gains that PB2's model learns from.
      frequencies: MF-PBT's sub-populations, one per entry (the members split into equal
        contiguous blocks): the rounds between two selections of each, increasing. The
        paper's default is ``(1, 10, 25, 50)``.
      burn_in: the steps the population trains before the first exploit (Ray Tune's
        ``burn_in_period``): early figures that say nothing yet (an off-policy agent's before
        its replay starts, a network's first steps) are not selected on.
    """

    exploit: str = "truncation"
    fraction: float = 0.25
    perturb_factors: tuple[float, ...] = (0.8, 1.2)
    resample_probability: float = 0.25
    enabled: bool = True
    explore: str = "perturb"
    window: int = 4
    rungs: tuple[int, ...] = tuple(2**k for k in range(16))
    restart: str = "prior"
    frequencies: tuple[int, ...] = (1, 10, 25, 50)
    burn_in: int = 0


def pbt_from_dict(table) -> PBTConfig:
    """The settings of a ``[pbt]`` table; unknown keys are refused, values checked later."""
    if not isinstance(table, dict):
        raise ConfigError("[pbt] must be a table")
    known = tuple(f.name for f in dataclasses.fields(PBTConfig))
    for key in table:
        if key not in known:
            raise ConfigError(unknown_name_error("pbt key", key, known))
    table = dict(table)
    factors = table.get("perturb_factors")
    if isinstance(factors, (list, tuple)) and all(is_number(f) for f in factors):
        table["perturb_factors"] = tuple(float(f) for f in factors)
    for key in ("rungs", "frequencies"):
        if isinstance(table.get(key), list):
            table[key] = tuple(table[key])
    return PBTConfig(**table)


def pbt_to_dict(pbt: PBTConfig) -> dict[str, Any]:
    """The ``[pbt]`` table of these settings, as TOML writes it."""
    table = dataclasses.asdict(pbt)
    table["perturb_factors"] = list(table["perturb_factors"])
    table["rungs"] = list(table["rungs"])
    table["frequencies"] = list(table["frequencies"])
    return table


def check_pbt(pbt: PBTConfig) -> None:
    """Every setting's type and range, and none that the run's methods would not use."""
    if not isinstance(pbt, PBTConfig):
        raise ConfigError(f"pbt must be a PBTConfig or a [pbt] table (got {type(pbt).__name__})")
    for key, methods in (
        ("exploit", EXPLOIT_METHODS),
        ("explore", EXPLORE_METHODS),
        ("restart", RESTART_METHODS),
    ):
        value = getattr(pbt, key)
        if not isinstance(value, str) or value not in methods:
            raise ConfigError(
                f"pbt.{key}: " + unknown_name_error(f"{key} method", str(value), methods)
            )
    if not is_whole(pbt.window) or not 1 <= pbt.window <= MAX_COUNT:
        raise ConfigError(
            f"pbt.window must be a whole number of rounds >= 1 (got {shown(pbt.window)})"
        )
    if (
        not isinstance(pbt.rungs, (tuple, list))
        or not pbt.rungs
        or not all(is_whole(r) and 1 <= r <= MAX_COUNT for r in pbt.rungs)
        or list(pbt.rungs) != sorted(set(pbt.rungs))
    ):
        raise ConfigError(
            f"pbt.rungs must be rounds >= 1 in increasing order, e.g. [1, 2, 4, 8] "
            f"(got {shown(pbt.rungs)})"
        )
    _check_frequencies(pbt.frequencies)
    if pbt.exploit == "halving" and pbt.restart == "prior":
        if not is_number(pbt.fraction) or not 0.0 < pbt.fraction < 1.0:
            raise ConfigError(
                f"pbt.fraction, the share that stops at a rung, must be in (0, 1) "
                f"(got {shown(pbt.fraction)})"
            )
    elif pbt.exploit == "frequencies":
        if not is_number(pbt.fraction) or not 0.0 < pbt.fraction <= 1 / 3:
            raise ConfigError(
                f"pbt.fraction, the share of a sub-population in each of MF-PBT's brackets, "
                f"must be in (0, 1/3] (got {shown(pbt.fraction)})"
            )
    elif not is_number(pbt.fraction) or not 0.0 < pbt.fraction <= 0.5:
        raise ConfigError(f"pbt.fraction must be in (0, 0.5] (got {shown(pbt.fraction)})")
    if not is_number(pbt.resample_probability) or not 0.0 <= pbt.resample_probability <= 1.0:
        raise ConfigError(
            f"pbt.resample_probability must be in [0, 1] (got {shown(pbt.resample_probability)})"
        )
    factors = pbt.perturb_factors
    if (
        not isinstance(factors, (list, tuple))
        or not factors
        or not all(is_number(f) and 0 < f < math.inf for f in factors)
    ):
        raise ConfigError(
            f"pbt.perturb_factors must be a list of finite numbers > 0, such as [0.8, 1.2] "
            f"(got {shown(factors)})"
        )
    if not isinstance(pbt.enabled, bool):
        raise ConfigError(f"pbt.enabled must be true or false (got {shown(pbt.enabled)})")
    if not is_whole(pbt.burn_in) or not 0 <= pbt.burn_in <= MAX_COUNT:
        raise ConfigError(
            f"pbt.burn_in must be a whole number of steps >= 0 (got {shown(pbt.burn_in)})"
        )
    if pbt.burn_in and pbt.exploit == "halving" and pbt.restart == "prior":
        raise ConfigError(
            "pbt.burn_in is for exploits that copy members: successive halving's rungs say "
            "when it first decides; remove burn_in or raise the first rung"
        )
    _refuse_unused(pbt)


def _refuse_unused(pbt: PBTConfig) -> None:
    """A setting of an exploit or explore method that the run does not use, changed from its
    default, would do nothing."""
    defaults = PBTConfig()
    for key, method, name in (
        ("rungs", "exploit", "halving"),
        ("restart", "exploit", "halving"),
        ("window", "explore", "pb2"),
        ("frequencies", "exploit", "frequencies"),
    ):
        value = getattr(pbt, key)
        value = tuple(value) if isinstance(value, list) else value
        if getattr(pbt, method) != name and value != getattr(defaults, key):
            raise ConfigError(
                f'pbt.{key} is for {method} = "{name}": remove it or set {method} = "{name}"'
            )


def check_rounds(pbt: PBTConfig, rounds: int, interval: int) -> None:
    """Successive halving that reaches none of its rungs, or a burn-in as long as the run,
    would never decide."""
    if pbt.enabled and pbt.exploit == "halving" and not any(r < rounds for r in pbt.rungs):
        raise ConfigError(
            f"pbt.rungs {list(pbt.rungs)}: the run has {rounds} round(s), so successive "
            f"halving would never decide: give rungs below {rounds}, or more steps"
        )
    last_exploit = (rounds - 1) * interval  # the steps trained when the last round begins
    if pbt.enabled and pbt.burn_in > last_exploit:
        raise ConfigError(
            f"pbt.burn_in {pbt.burn_in}: the last round begins after {last_exploit} steps, so "
            f"PBT would never exploit: give a burn_in of at most {last_exploit}, or more steps"
        )


def _check_frequencies(frequencies) -> None:
    if (
        not isinstance(frequencies, (tuple, list))
        or len(frequencies) < 2
        or not all(is_whole(f) and 1 <= f <= MAX_COUNT for f in frequencies)
        or list(frequencies) != sorted(set(frequencies))
    ):
        raise ConfigError(
            f"pbt.frequencies must be two or more rounds >= 1 in increasing order, one per "
            f"sub-population, e.g. [1, 10, 25, 50] (got {shown(frequencies)})"
        )


def check_frequencies(pbt: PBTConfig, population: int, group: str = "") -> None:
    """MF-PBT splits ``population`` into equal sub-populations, each of four brackets of at
    least one member: a population that cannot is refused, with the sizes that can."""
    if not pbt.enabled or pbt.exploit != "frequencies" or not is_whole(population):
        return
    blocks = len(pbt.frequencies)
    per_block = population // blocks
    count = int(pbt.fraction * per_block)
    where = f"group '{group}': " if group else ""
    if population % blocks:
        raise ConfigError(
            f"{where}population {population} does not split into {blocks} equal "
            f"sub-populations (one per pbt.frequencies): use a multiple of {blocks}"
        )
    if count < 1:
        smallest = blocks * math.ceil(1 / pbt.fraction - 1e-9)
        raise ConfigError(
            f"{where}population {population} gives sub-populations of {per_block} members, "
            f"too few for brackets of pbt.fraction {pbt.fraction:g}: use a population of at "
            f"least {smallest}, or fewer pbt.frequencies"
        )
