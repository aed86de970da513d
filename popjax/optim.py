"""Optimizers whose hyperparameters are read from the member's own arrays at every step.

The optimizer is rebuilt inside the traced step from the member's hyperparameters, so its state
holds only moments and the hyperparameters have one home: ``Population.hparams``. PBT changes
them by writing arrays, which never retraces the step. The family (popjax's SGD or Adam, any
optax optimizer, or a factory of one's own) is a static choice of the sweep; its numeric
arguments are per-member arrays, its other arguments are fixed for the sweep.

Rebuilding in the step rather than ``optax.inject_hyperparams`` (whose state carries a copy of
the values) was measured no slower to compile or run, with identical results, for AdamW, Lion
and Adafactor (``scripts/optimizer_rebuild_vs_inject.py``, ``docs/optimizers.md``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax
import optax

from popjax.errors import PopjaxError, shown, unknown_name_error
from popjax.hyperparameters import HYPERPARAMETERS
from popjax.imports import import_module

FAMILIES = ("sgd", "adam")  # popjax's own; any other name is optax's
# What each family reads of a member's hyperparameters, and the value it takes when the space
# does not name one (None: the space must). ``grad_clip`` (any family) clips the gradient's
# global norm first when the space names it.
FAMILY_HPARAMS = {
    "sgd": {"learning_rate": None, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"learning_rate": None, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
}
# optax optimizers whose update needs more than the gradients (the loss value, a loss function,
# per-example gradients), or that wrap or normalise rather than optimise: not offered by name.
NOT_BY_NAME = frozenset(
    {"lbfgs", "polyak_sgd", "momo", "momo_adam", "sophia", "dpsgd", "normalize"}
    | {"reduce_on_plateau", "differentially_private_aggregate"}
)
REQUIRED = "required"  # a default shown for an argument the member's hyperparameters must hold
OFF = "off"  # a default shown for an argument that acts only when the space names it


@dataclass(frozen=True)
class Family:
    """An optimizer family: what it reads of a member's hyperparameters and what is fixed.

    Attributes:
      name: as a config writes it ("adam", "lion", "optax.sgd", "mymodule:make_opt").
      factory: the function that returns the ``optax.GradientTransformation`` (None for
        popjax's own sgd and adam).
      reads: ``{argument: default}`` of the numeric arguments read per member; the default is
        a number, ``REQUIRED`` or ``OFF`` (left to the factory's own ``None``).
      fixed: the sweep's values of other arguments (structural ones, or numbers held fixed).
      static: the arguments that are never read per member (ints, flags, dtypes, masks).
    """

    name: str
    factory: Callable | None
    reads: dict = field(hash=False)
    fixed: dict = field(default_factory=dict, hash=False)
    static: tuple[str, ...] = ()

    @property
    def own(self) -> bool:
        return self.factory is None


@functools.cache
def optimizer_names() -> tuple[str, ...]:
    """Every optimizer a name chooses: popjax's sgd and adam, then optax's and optax.contrib's
    (``"optax.sgd"`` is optax's own SGD)."""
    names = [*FAMILIES]
    for module in (optax, optax.contrib):
        for name in sorted(dir(module)):
            if name not in FAMILIES and name not in names and _offered(module, name):
                names.append(name)
    return tuple(names)


def _offered(module, name: str) -> bool:
    function = getattr(module, name, None)
    if name.startswith(("_", "scale_by")) or name in NOT_BY_NAME:
        return False
    if not inspect.isfunction(function) or not _returns_transformation(function):
        return False
    # optax's optimizers live in its alias module; the rest of its top level are transforms.
    if module is optax and not function.__module__.endswith("alias"):
        return False
    _, static = _arguments(function)
    # A wrapper (sam, mechanize) needs another optimizer: no number stands in for it.
    return not any(p.default is p.empty for p in _parameters(function) if p.name in static)


def _returns_transformation(function) -> bool:
    try:
        annotation = inspect.signature(function).return_annotation
    except (TypeError, ValueError):
        return False
    return "GradientTransformation" in str(annotation)


def resolve_family(spec) -> Family:
    """The ``Family`` a config or a task names.

    Args:
      spec: "sgd" or "adam" (popjax's own), an optax optimizer's name ("lion", "adafactor",
        "optax.adamw", "muon" from optax.contrib), an import path "module:factory", a factory
        (a callable returning an ``optax.GradientTransformation``), a table
        ``{"name": ..., **fixed}`` holding arguments fixed for the sweep, or a ``Family``.

    Example:
      >>> resolve_family({"name": "adafactor", "factored": False}).reads["decay_rate"]
      0.8
    """
    if isinstance(spec, Family):
        return spec
    fixed = {}
    if isinstance(spec, Mapping):
        fixed = dict(spec)
        if "name" not in fixed:
            raise PopjaxError(
                f'an optimizer table needs its name: optimizer = {{name = "adafactor", ...}} '
                f"(got {shown(spec)})"
            )
        spec = fixed.pop("name")
    if isinstance(spec, str):
        return _named_family(spec, fixed)
    if callable(spec) and not isinstance(spec, type):
        name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', '?')}"
        return _factory_family(name, spec, fixed)
    raise PopjaxError(
        'optimizer must be a name such as "adam" or "lion", an import path '
        f'"module:factory" or a function returning an optax optimizer (got {shown(spec)})'
    )


def _named_family(name: str, fixed: dict) -> Family:
    if name in FAMILIES:
        if fixed:
            raise PopjaxError(
                f"popjax's {name} takes no fixed arguments ({', '.join(fixed)}): remove them, "
                f'or choose optax\'s own with name = "optax.{name}"'
            )
        return Family(name, None, dict(FAMILY_HPARAMS[name]))
    factory = _import(name) if ":" in name else _optax_factory(name)
    return _factory_family(name, factory, fixed)


@functools.cache
def _optax_factory(name: str) -> Callable:
    bare = name.removeprefix("optax.").removeprefix("contrib.")
    for module in (optax, optax.contrib):
        if _offered(module, bare):
            return getattr(module, bare)
    raise PopjaxError(unknown_name_error("optimizer", name, optimizer_names()))


def _factory_family(name: str, factory: Callable, fixed: dict) -> Family:
    reads, static = _arguments(factory)
    taken = (*reads, *static)
    for argument in fixed:
        if argument not in taken:
            raise PopjaxError(
                f"optimizer {name} takes no argument '{argument}': "
                + unknown_name_error("argument", argument, taken).split(": ", 1)[1]
            )
    reads = {n: d for n, d in reads.items() if n not in fixed}
    return Family(name, factory, reads, fixed, tuple(n for n in static if n not in fixed))


def _parameters(factory):
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return ()
    return [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _arguments(factory) -> tuple[dict, tuple[str, ...]]:
    """``({numeric argument: default}, (other arguments))`` of a factory, from its signature.

    A float default or a float annotation (without ``Any``: masks and dtypes are not numbers)
    marks a number a member can hold; ints (step counts, sizes), flags and the rest are fixed.
    Names that act elsewhere in popjax's built-in tasks (``dropout``, ``noise``, ...) and a
    random seed or key are never read from the member's hyperparameters. A schedule's parameter
    (Adafactor's ``decay_rate``) is: the search space refuses a space with both.
    """
    reads, static = {}, []
    for p in _parameters(factory):
        default, annotation = p.default, p.annotation
        if isinstance(default, bool) or (default is not p.empty and default is not None):
            numeric = isinstance(default, float)
        elif annotation is p.empty:
            numeric = default is p.empty  # an unannotated required argument: a number
        else:
            text = annotation if isinstance(annotation, str) else repr(annotation)
            numeric = "float" in text and "Any" not in text
        acts_in = HYPERPARAMETERS[p.name].acts_in if p.name in HYPERPARAMETERS else "optimizer"
        elsewhere = acts_in not in ("optimizer", "schedule") or p.name in ("key", "seed", "rng")
        if numeric and not elsewhere:
            reads[p.name] = (
                float(default)
                if isinstance(default, float)
                else REQUIRED
                if default is p.empty
                else OFF
            )
        else:
            static.append(p.name)
    return reads, tuple(static)


def _import(spec: str) -> Callable:
    module_name, _, attribute = spec.partition(":")
    # As for a task's module: one in the current folder imports by its bare name.
    module = import_module(module_name, f"optimizer '{spec}'")
    if not hasattr(module, attribute):
        raise PopjaxError(
            f"cannot import optimizer '{spec}': module '{module_name}' has no '{attribute}'; "
            'write it as "module:factory"'
        )
    made = getattr(module, attribute)
    if not callable(made):
        raise PopjaxError(f"optimizer '{spec}' is a {type(made).__name__}, not a function")
    return made


def sgdw(learning_rate, momentum, weight_decay) -> optax.GradientTransformation:
    """SGD with heavy-ball momentum and decoupled weight decay.

    The update is ``-lr * (m + wd * w)`` with ``m = momentum * m + g``: the decay is kept out of
    the momentum buffer (decoupled, as in SGDW), so with zero gradients a weight shrinks by
    ``1 - lr * wd`` per step. Momentum 0 is plain SGD.
    """
    return optax.chain(
        optax.trace(decay=momentum),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def adamw(learning_rate, b1, b2, eps, weight_decay) -> optax.GradientTransformation:
    """Adam with decoupled weight decay (AdamW), every coefficient possibly traced."""
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )


def member_optimizer(
    hparams: Mapping[str, jax.Array], learning_rate=None, family="sgd"
) -> optax.GradientTransformation:
    """The optimizer of one member, built from its (traced, scalar) hyperparameters.

    Args:
      hparams: the member's hyperparameters. The family reads those of its ``reads`` (for sgd
        and adam, ``FAMILY_HPARAMS``); a missing one takes its default there. With a
        ``grad_clip`` hyperparameter the gradient is first clipped to that global norm.
      learning_rate: this step's rate, instead of ``hparams["learning_rate"]``. Under a
        schedule in the search space, popjax already puts the step's rate in ``hparams``.
      family: "sgd" (heavy-ball momentum, decoupled weight decay), "adam" (AdamW), or any
        optimizer ``resolve_family`` takes: an optax name ("lion", "adafactor"), an import
        path, a factory, or a table with arguments fixed for the sweep.

    Example:
      >>> update = member_optimizer({"learning_rate": lr, "b1": b1}, family="lion")
    """
    chosen = resolve_family(family)
    if learning_rate is not None:
        hparams = {**hparams, "learning_rate": learning_rate}
    for name, default in chosen.reads.items():
        if (default is None or default == REQUIRED) and name not in hparams:
            raise PopjaxError(
                f"the {chosen.name} optimizer reads {name}, which the member's hyperparameters "
                f"lack: add {name} to the search space"
            )
    if chosen.own:
        update = _own_optimizer(chosen.name, hparams)
    else:
        update = _build(chosen, hparams)
    if "grad_clip" in hparams:
        return optax.chain(optax.clip_by_global_norm(hparams["grad_clip"]), update)
    return update


def _own_optimizer(name: str, hparams) -> optax.GradientTransformation:
    read = {n: hparams.get(n, default) for n, default in FAMILY_HPARAMS[name].items()}
    if name == "adam":
        return adamw(
            read["learning_rate"], read["b1"], read["b2"], read["eps"], read["weight_decay"]
        )
    return sgdw(read["learning_rate"], read["momentum"], read["weight_decay"])


def _build(family: Family, hparams) -> optax.GradientTransformation:
    """``factory(**fixed, **the member's values)``; what the space does not name keeps the
    factory's own default, so the state's structure depends on names, never on values."""
    arguments = {
        **family.fixed,
        **{name: hparams[name] for name in family.reads if name in hparams},
    }
    try:
        made = family.factory(**arguments)
    except jax.errors.ConcretizationTypeError:
        raise _fixed_only(family, arguments) from None
    if not isinstance(made, optax.GradientTransformation):
        raise PopjaxError(
            f"optimizer {family.name} returned a {type(made).__name__}: "
            "expected an optax.GradientTransformation"
        )

    def update(updates, state, params=None, **extra):
        try:
            return made.update(updates, state, params, **extra)
        except jax.errors.ConcretizationTypeError:
            raise _fixed_only(family, arguments) from None

    return made._replace(update=update)


def _fixed_only(family: Family, arguments) -> PopjaxError:
    tracer = getattr(jax.core, "Tracer", ())  # public on the jax versions popjax supports
    traced = [n for n, v in arguments.items() if isinstance(v, tracer)]
    return PopjaxError(
        f"optimizer {family.name} branches on the value of one of {', '.join(traced)}, so it "
        f"cannot differ per member: fix it for the sweep, optimizer = "
        f'{{name = "{family.name}", {traced[0] if traced else "argument"} = ...}}'
    )


def init_state(params, hparams: Mapping[str, jax.Array] | None = None, family="sgd"):
    """Optimizer state for ``params``: its shape depends on the family and on which
    hyperparameters there are (``grad_clip`` adds a stage), never on their values. An optax
    optimizer that starts from a value (Adagrad's ``initial_accumulator_value``) starts from
    the member's."""
    chosen = resolve_family(family)
    if chosen.own:
        zeros = {name: 0.0 for name in (*FAMILY_HPARAMS[chosen.name], *(hparams or ()))}
        return member_optimizer(zeros, family=chosen).init(params)
    values = {name: 0.0 for name, d in chosen.reads.items() if d == REQUIRED}
    return member_optimizer({**values, **(hparams or {})}, family=chosen).init(params)


def optimizer_table(names=None) -> str:
    """The Markdown table of ``docs/optimizers.md``: for each optimizer, the hyperparameters
    it reads per member with their defaults, and the arguments fixed for the sweep.

    Args:
      names: the optimizers to list; every one a name chooses (``optimizer_names()``) if None.
    """
    rows = [
        "| optimizer | read per member (default) | fixed for the sweep |",
        "| --- | --- | --- |",
    ]
    for name in names or optimizer_names():
        family = resolve_family(name)
        reads = ", ".join(
            f"`{n}` ({REQUIRED if d is None else d if isinstance(d, str) else f'{d:g}'})"
            for n, d in family.reads.items()
        )
        static = ", ".join(f"`{n}`" for n in family.static) or "-"
        where = "popjax" if family.own else _home(family.factory)
        rows.append(f"| `{name}` ({where}) | {reads} | {static} |")
    return "\n".join(rows)


def _home(factory) -> str:
    return "optax.contrib" if factory.__module__.startswith("optax.contrib") else "optax"
