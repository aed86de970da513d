"""Models written with flax linen, flax nnx or equinox, each turned into the one pure form that
the built-in tasks train: ``init(key, x) -> variables`` and ``apply(variables, x, ...)``, as a
linen module has them, where ``variables`` are plain dicts of arrays (``params``, and the
running statistics of batch normalization in ``batch_stats``).

So vmap over members, PBT's copies and checkpoints see the same kind of state whatever the API:
an nnx module is split into its parameters and other variables (``nnx.split``) and merged back
for each call; an equinox module is partitioned into its floating-point arrays and the rest
(``eqx.partition``), the rest shared by every member.

What ``model=`` takes (``as_model``):

- a linen module (``popjax.nn.MLP(hidden=(64,))``), called with ``dropout_rate=`` and ``train=``;
- an nnx module class, built as ``Net(rngs=nnx.Rngs(key))``, or an equinox module class, built
  as ``Net(key=key)``, one per member from the member's key;
- a function ``key -> module`` returning either (``lambda key: Net(64, rngs=nnx.Rngs(key))``).

Every ``nnx.Dropout`` and ``eqx.nn.Dropout`` in such a model drops at the member's ``dropout``
rate (a traced, per-member value), whatever rate it was built with.
"""

from __future__ import annotations

import inspect
import sys

import flax.linen as linen
import jax
import jax.numpy as jnp

from popjax.errors import PopjaxError
from popjax.imports import first_line, import_module
from popjax.nn import dropout as member_dropout

# The collection holding an nnx model's variables that are not parameters (nnx.BatchStat).
NNX_STATE = "batch_stats"


def as_model(model, what: str = "model="):
    """``model`` in the linen-like form the built-in tasks call (see the module's docstring).

    A linen module comes back as it is; an nnx or equinox class, or a function that builds one
    from a key, comes back wrapped. Anything else is a one-line ``PopjaxError``.
    """
    if isinstance(model, (linen.Module, NnxModel, EquinoxModel)):
        return model
    if isinstance(model, type):
        if _is_nnx(model):
            return NnxModel(lambda key: model(rngs=_nnx().Rngs(key)), model.__name__)
        if _is_equinox(model):
            return EquinoxModel(lambda key: model(key=key), model.__name__)
        if issubclass(model, linen.Module):
            raise PopjaxError(
                f"{what} takes a flax linen module, not its class: give {model.__name__}(...)"
            )
    elif _is_nnx(type(model)) or _is_equinox(type(model)):
        raise PopjaxError(
            f"{what} takes the class of a {type(model).__name__} or a function key -> module, "
            "not a built module: each member builds its own weights from its own key"
        )
    elif callable(model):
        return _from_builder(model, what)
    raise PopjaxError(
        f"{what} takes a flax linen module, an nnx or equinox module class, or a function "
        f"key -> module (got a {type(model).__name__})"
    )


def check_model_argument(model) -> None:
    """What ``model=`` was given, by kind alone (nothing built): see ``as_model``."""
    if isinstance(model, (linen.Module, NnxModel, EquinoxModel)):
        return
    if isinstance(model, type) and (_is_nnx(model) or _is_equinox(model)):
        return
    if callable(model) and not isinstance(model, type) and not _is_nnx(type(model)):
        if not _is_equinox(type(model)):
            return
    as_model(model)  # raises the error that says what to give


def takes_keyword(model, name: str) -> bool:
    """Whether the model's call takes ``name`` (``activation``, ``key``) as a keyword."""
    call = model.call if isinstance(model, (NnxModel, EquinoxModel)) else type(model).__call__
    try:
        parameters = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return True  # a signature Python cannot read: let the call itself tell
    return name in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def api_of(model) -> str:
    """ "linen", "nnx" or "equinox": the API ``as_model(model)`` was written with."""
    return {NnxModel: "nnx", EquinoxModel: "equinox"}.get(type(model), "linen")


def load_model(spec: str, fields: dict):
    """The model a config names by import path, ``"package.module:Name"``, with its fields:
    a class built with them (nnx: and ``rngs=``, equinox: and ``key=``), or a function called
    as ``function(key, **fields)``. The current folder is searched first."""
    module_name, _, attribute = spec.partition(":")
    module = import_module(module_name, f"model module '{module_name}'")
    if not attribute or not hasattr(module, attribute):
        raise PopjaxError(
            f"module '{module_name}' has no '{attribute}': name a module class or a function "
            'key -> module, as model = {name = "package.module:Name"}'
        )
    made = getattr(module, attribute)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    if isinstance(made, linen.Module) or not callable(made):
        if fields:
            raise PopjaxError(
                f"{spec} is a built {type(made).__name__}: it takes no fields "
                f"({', '.join(sorted(fields))}); name its class instead"
            )
        return made
    extra = {}
    if isinstance(made, type) and _is_nnx(made):
        extra = {"rngs": None}
    elif isinstance(made, type) and _is_equinox(made):
        extra = {"key": None}
    elif not isinstance(made, type):
        extra = {"key": None}  # a function takes the key first
    try:
        if isinstance(made, type):  # nnx's metaclass hides the class's own signature
            inspect.signature(made.__init__).bind_partial(None, **fields, **extra)
        else:
            inspect.signature(made).bind_partial(**fields, **extra)
    except TypeError as error:
        raise PopjaxError(
            f"model {spec} does not take its fields ({error}): give the arguments it takes"
        ) from None
    except ValueError:
        pass  # no signature to check: the build itself will tell
    if isinstance(made, type) and issubclass(made, linen.Module):
        return made(**fields)
    if isinstance(made, type):
        return made if not fields else _bound_class(made, fields)
    return lambda key: made(key, **fields)


def _bound_class(cls, fields):
    if _is_nnx(cls):
        return NnxModel(lambda key: cls(**fields, rngs=_nnx().Rngs(key)), cls.__name__)
    if _is_equinox(cls):
        return EquinoxModel(lambda key: cls(**fields, key=key), cls.__name__)
    raise PopjaxError(
        f"{cls.__name__} is not a flax linen, nnx or equinox module: name a module class or a "
        "function key -> module"
    )


class NnxModel:
    """An nnx module, built per member by ``build(key)``, in linen's ``init``/``apply`` form."""

    def __init__(self, build, name: str = "model"):
        nnx = _nnx()
        self.build, self.name = build, name
        abstract = _built(lambda: nnx.eval_shape(lambda: build(jax.random.PRNGKey(0))), name)
        self.graphdef, self._params, rngs, self._rest = nnx.split(
            abstract, nnx.Param, nnx.RngState, ...
        )
        # The model's own key streams stay out of a member's state: popjax gives each step's
        # randomness (dropout) from the member's key. Any key fills their place in a merge.
        self._rngs = jax.tree_util.tree_map(_placeholder, rngs)
        self.call = type(abstract).__call__

    def init(self, key, x, train: bool = False):
        nnx = _nnx()
        _, params, _, rest = nnx.split(self.build(key), nnx.Param, nnx.RngState, ...)
        rest = nnx.to_pure_dict(rest)
        return {"params": nnx.to_pure_dict(params), **({NNX_STATE: rest} if rest else {})}

    def apply(self, variables, x, *, dropout_rate=0.0, train=False, mutable=False, rngs=None, **kw):
        nnx = _nnx()
        params = _filled(self._params, variables["params"])
        rest = _filled(self._rest, variables.get(NNX_STATE, {}))
        model = nnx.merge(self.graphdef, params, self._rngs, rest)
        swapped = _set_mode(model, train, dropout_rate, (rngs or {}).get("dropout"))
        out = model(x, **kw)
        for node, cls in swapped:  # the model is a plain nnx model again, for nnx.split
            node.__class__ = cls
            object.__delattr__(node, "_popjax_member")
        if mutable is False:
            return out
        rest = nnx.to_pure_dict(nnx.split(model, nnx.Param, nnx.RngState, ...)[3])
        return out, ({NNX_STATE: rest} if rest else {})


class EquinoxModel:
    """An equinox module, built per member by ``build(key)``, in linen's ``init``/``apply``
    form. It is called on one example at a time (as equinox's layers are), vmapped over the
    batch, with a key of its own when its call takes ``key``."""

    def __init__(self, build, name: str = "model"):
        eqx = sys.modules["equinox"]
        self.build, self.name = build, name
        template = _built(lambda: build(jax.random.PRNGKey(0)), name)
        if any(isinstance(leaf, eqx.nn.StateIndex) for leaf in _nodes(template, eqx)):
            raise PopjaxError(
                f"{name} has stateful equinox layers (eqx.nn.BatchNorm or another eqx.nn.State "
                "user): write the model without them, or in flax linen or nnx"
            )
        params, self.static = eqx.partition(template, eqx.is_inexact_array)
        paths, self.treedef = jax.tree_util.tree_flatten_with_path(params)
        self.names = [tuple(_key_name(k) for k in path) for path, _ in paths]
        self.call = type(template).__call__

    def init(self, key, x, train: bool = False):
        eqx = sys.modules["equinox"]
        leaves = jax.tree_util.tree_leaves(eqx.filter(self.build(key), eqx.is_inexact_array))
        params: dict = {}
        for names, leaf in zip(self.names, leaves, strict=True):
            node = params
            for name in names[:-1]:
                node = node.setdefault(name, {})
            node[names[-1]] = leaf
        return {"params": params}

    def apply(self, variables, x, *, dropout_rate=0.0, train=False, mutable=False, rngs=None, **kw):
        eqx = sys.modules["equinox"]
        leaves = []
        for names in self.names:
            node = variables["params"]
            for name in names:
                node = node[name]
            leaves.append(node)
        model = eqx.combine(jax.tree_util.tree_unflatten(self.treedef, leaves), self.static)
        model = eqx.nn.inference_mode(model, value=not train)

        def member_rate(layer):
            if not isinstance(layer, eqx.nn.Dropout):
                return layer
            return eqx.tree_at(lambda d: (d.p, d.inference), layer, (dropout_rate, not train))

        model = jax.tree_util.tree_map(
            member_rate, model, is_leaf=lambda n: isinstance(n, eqx.nn.Dropout)
        )
        key = (rngs or {}).get("dropout")
        if key is not None and takes_keyword(self, "key"):
            keys = jax.random.split(key, x.shape[0])
            out = jax.vmap(lambda xi, ki: model(xi, key=ki, **kw))(x, keys)
        else:
            out = jax.vmap(lambda xi: model(xi, **kw))(x)
        return out if mutable is False else (out, {})


def _from_builder(build, what):
    """A function key -> module: which API, told by what it builds (shapes only)."""
    built = []

    def probe(key):
        built.append(type(build(key)))
        return jnp.zeros(())

    _built(lambda: jax.eval_shape(probe, jax.random.PRNGKey(0)), what)
    name = getattr(build, "__name__", "model")
    if _is_nnx(built[0]):
        return NnxModel(build, name)
    if _is_equinox(built[0]):
        return EquinoxModel(build, name)
    if issubclass(built[0], linen.Module):
        return build(jax.random.PRNGKey(0))
    raise PopjaxError(
        f"{what} built a {built[0].__name__}: the function must return a flax linen, nnx or "
        "equinox module"
    )


def _built(make, name):
    try:
        return make()
    except PopjaxError:
        raise
    except Exception as error:  # the user's constructor may fail in any way
        raise PopjaxError(
            f"building {name} failed ({type(error).__name__}: {first_line(error)}): check its "
            "arguments"
        ) from None


def _member_dropout_call(self, inputs, *, deterministic=None, rngs=None):
    """``nnx.Dropout.__call__`` on a merged model: drops at the member's traced rate, where
    flax's own branches on ``rate == 0.0`` in Python."""
    rate, key, train, index = self._popjax_member
    if not train or key is None:
        return inputs
    shape = list(inputs.shape)
    for dim in self.broadcast_dims:
        shape[dim] = 1
    kept = member_dropout(jnp.ones(shape, inputs.dtype), rate, jax.random.fold_in(key, index))
    return inputs * kept


_MEMBER_DROPOUT_CLASSES: dict = {}


def _set_mode(model, train: bool, rate, key) -> list:
    """Training or evaluation for every layer of a freshly merged nnx model, and the member's
    dropout rate and key for its dropout layers (each with a key of its own); returns each
    dropout layer with its own class, to be put back after the call."""
    nnx = _nnx()
    swapped = []
    for _, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        if isinstance(node, nnx.Dropout):
            cls = type(node)
            if cls not in _MEMBER_DROPOUT_CLASSES:
                _MEMBER_DROPOUT_CLASSES[cls] = type(
                    cls.__name__, (cls,), {"__slots__": (), "__call__": _member_dropout_call}
                )
            object.__setattr__(node, "_popjax_member", (rate, key, train, len(swapped)))
            node.__class__ = _MEMBER_DROPOUT_CLASSES[cls]
            swapped.append((node, cls))
            continue
        # What nnx's own Module.train()/eval() set: attention's dropout, batch norm's statistics.
        for attribute in ("deterministic", "use_running_average"):
            if isinstance(getattr(node, attribute, 0), (bool, type(None))):
                setattr(node, attribute, not train)
    return swapped


def _filled(template, pure: dict):
    """A copy of an nnx state ``template`` holding the arrays of ``pure`` (its pure dict)."""
    state = jax.tree_util.tree_map(lambda leaf: leaf, template)
    _nnx().replace_by_pure_dict(state, pure)
    return state


def _placeholder(shape):
    if jax.dtypes.issubdtype(shape.dtype, jax.dtypes.prng_key):
        return jnp.broadcast_to(jax.random.key(0), shape.shape)
    return jnp.zeros(shape.shape, shape.dtype)


def _nodes(tree, eqx):
    return jax.tree_util.tree_leaves(tree, is_leaf=lambda n: isinstance(n, eqx.nn.StateIndex))


def _key_name(key) -> str:
    for attribute in ("name", "key", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _nnx():
    import flax.nnx as nnx

    return nnx


def _is_nnx(cls) -> bool:
    return isinstance(cls, type) and issubclass(cls, _nnx().Module)


def _is_equinox(cls) -> bool:
    # equinox is optional: a model written with it has imported it already.
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(cls, type) and issubclass(cls, eqx.Module)
