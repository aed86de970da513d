"""Supervised learning as a task: a flax model trained on arrays, classification or regression.

One member's state is ``{"params", "opt_state", ...}`` plus any mutable collection of the
model (``batch_stats`` of batch normalization), so PBT copies running statistics with the
weights. Each optional hyperparameter (see ``popjax.hyperparameters``) switches its part
of the step on; at its neutral value it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from popjax import optim
from popjax.augment import augment
from popjax.dataset import (
    Dataset,
    class_index,
    sample_balanced,
    sample_uniform,
    window_class_index,
)
from popjax.hyperparameters import acting_in
from popjax.models import as_model
from popjax.nn import reinitialize
from popjax.stream import Stream
from popjax.task import Task, TaskData

LossFn = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy against integer labels: the default classification loss."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def squared_error(logits, labels):
    """Mean squared distance between the outputs and one-hot targets (a classification loss
    without the softmax)."""
    targets = jax.nn.one_hot(labels, logits.shape[-1])
    return jnp.mean(jnp.sum((logits - targets) ** 2, axis=-1))


def mean_squared_error(outputs, targets):
    """Mean squared error against real-valued targets: the regression loss."""
    return jnp.mean((outputs - targets.reshape(outputs.shape)) ** 2)


LOSSES = {"cross_entropy": cross_entropy, "squared_error": squared_error}

# Hyperparameters that need per-example losses, so only the built-in cross-entropy takes them.
PER_EXAMPLE_HPARAMS = acting_in("per-example loss")
# Hyperparameters that change the model's function, passed to ``model.apply`` by name (dropout
# has its own argument).
MODEL_HPARAMS = tuple(name for name in acting_in("model") if name != "dropout")
INIT_HPARAMS = acting_in("init")
# Examples per chunk when a member is evaluated on a split: memory grows with this, not the split.
EVAL_CHUNK = 1024


def model_kwargs(hparams) -> dict:
    """What a member's hyperparameters pass to ``model.apply`` besides the dropout rate."""
    return {name: hparams[name] for name in MODEL_HPARAMS if name in hparams}


def classification(
    model,
    data: Dataset,
    *,
    batch_size: int = 128,
    loss: LossFn = cross_entropy,
    optimizer: str | Callable | Mapping = "sgd",
    metric: str = "accuracy",
    eval_chunk: int = EVAL_CHUNK,
) -> Task:
    """A classifier: ``model`` maps inputs to logits; PBT selects on validation ``metric``
    ("accuracy", or "loss" to minimise).

    Args:
      model: a flax linen module called as ``model.apply(variables, x, dropout_rate=r,
        train=b, rngs={"dropout": key})``; or an nnx or equinox module class, or a function
        ``key -> module``, each member built from its own key (see ``popjax.models``).
      data: the splits, labels being integer classes.
      batch_size: examples per member per step.
      loss: ``loss(logits, labels) -> mean loss``.
      optimizer: the family: "sgd" (with momentum), "adam", any optax optimizer by name
        ("lion", "adafactor"), a factory, or a table with arguments fixed for the sweep (see
        ``popjax.optim.resolve_family``); its numeric arguments are hyperparameters.
      eval_chunk: examples evaluated at once per member.
    """
    return _supervised(
        model,
        data,
        batch_size,
        loss,
        optimizer,
        eval_chunk,
        classify=True,
        fitness=metric,
        minimize=metric == "loss",
    )


def regression(
    model,
    data: Dataset,
    *,
    batch_size: int = 128,
    loss: LossFn = mean_squared_error,
    optimizer: str | Callable | Mapping = "sgd",
    eval_chunk: int = EVAL_CHUNK,
) -> Task:
    """A regression of real-valued targets; PBT selects the lowest validation loss.

    ``model`` outputs as many values as a target has (its ``num_classes`` field sets that for
    popjax's own models). Arguments as for ``classification``.
    """
    return _supervised(
        model,
        data,
        batch_size,
        loss,
        optimizer,
        eval_chunk,
        classify=False,
        fitness="loss",
        minimize=True,
    )


def _supervised(
    model,
    data: Dataset,
    batch_size,
    loss_fn,
    optimizer,
    eval_chunk,
    *,
    classify: bool,
    fitness: str,
    minimize: bool,
) -> Task:
    model = as_model(model)
    if data.window is not None:
        train = streamed_train(data, classify)
    else:
        train = {"x": np.asarray(data.x_train), "y": np.asarray(data.y_train)}
        if classify:
            train.update(class_index(data.y_train))  # for class-balanced sampling
    splits = TaskData(
        train, {"x": data.x_val, "y": data.y_val}, {"x": data.x_test, "y": data.y_test}
    )
    num_train = len(data.x_train)
    optimizer = optim.resolve_family(optimizer)  # once, not at every trace

    def apply(state, x, hparams, train_mode, key=None, rate=0.0):
        variables = {"params": state["params"], **_collections(state)}
        mutable = list(_collections(state)) if train_mode else False
        kwargs = {"rngs": {"dropout": key}} if key is not None else {}
        out = model.apply(
            variables,
            x,
            dropout_rate=rate,
            train=train_mode,
            mutable=mutable,
            **kwargs,
            **model_kwargs(hparams),
        )
        return out if train_mode else (out, {})

    def init(key, hparams, train_split):
        variables = model.init(key, train_split["x"][:batch_size], train=False)
        params = variables["params"]
        if any(name in hparams for name in INIT_HPARAMS):
            params = reinitialize(
                params,
                hparams.get("init_mode", 0),
                hparams.get("init_distribution", 0),
                hparams.get("init_scale", 1.0),
            )
        return {
            "params": params,
            "opt_state": optim.init_state(params, hparams, optimizer),
            **{name: value for name, value in variables.items() if name != "params"},
        }

    def sample(key, hparams, train_split):
        if "sampling" in hparams:
            return sample_balanced(key, train_split, batch_size, hparams["sampling"])
        return sample_uniform(key, train_split, batch_size)

    def batch_loss(outputs, y, hparams):
        if loss_fn is not cross_entropy:
            return loss_fn(outputs, y)
        if "label_smoothing" in hparams:
            targets = optax.smooth_labels(
                jax.nn.one_hot(y, outputs.shape[-1]), hparams["label_smoothing"]
            )
            per_example = optax.softmax_cross_entropy(outputs, targets)
        else:
            per_example = optax.softmax_cross_entropy_with_integer_labels(outputs, y)
        if "batch_fraction" in hparams:
            # The effective batch: the first ``used`` examples count, the rest are masked out.
            used = jnp.clip(jnp.round(hparams["batch_fraction"] * batch_size), 1, batch_size)
            return jnp.sum(jnp.where(jnp.arange(batch_size) < used, per_example, 0.0)) / used
        return per_example.mean()

    def train_step(state, hparams, key, step, train_split):
        batch_key, dropout_key = jax.random.split(key)
        x, y = sample(batch_key, hparams, train_split)
        x = augment(jax.random.fold_in(batch_key, 2), x, hparams)
        params = state["params"]

        def objective(p):
            outputs, updates = apply(
                {**state, "params": p}, x, hparams, True, dropout_key, hparams["dropout"]
            )
            loss = batch_loss(outputs, y, hparams)
            total = loss
            if "l1" in hparams:
                l1 = sum(jnp.abs(leaf).sum() for leaf in jax.tree_util.tree_leaves(p))
                total = loss + hparams["l1"] * l1
            return total, (loss, updates)

        (_, (loss, updates)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        # hparams["learning_rate"] is this step's rate: popjax applies the space's schedule.
        member_optimizer = optim.member_optimizer(hparams, family=optimizer)
        param_updates, opt_state = member_optimizer.update(grads, state["opt_state"], params)
        new_state = {
            **state,
            **updates,
            "params": optax.apply_updates(params, param_updates),
            "opt_state": opt_state,
        }
        return new_state, {"loss": loss}

    def evaluate(state, hparams, key, split):
        x, y = jnp.asarray(split["x"]), jnp.asarray(split["y"])
        count = x.shape[0]
        chunk = min(count, eval_chunk)
        chunks = -(-count // chunk)
        pad = chunks * chunk - count

        def chunked(a):
            a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
            return a.reshape((chunks, chunk) + a.shape[1:])

        valid = (jnp.arange(chunks * chunk) < count).reshape(chunks, chunk)

        def body(totals, batch):
            xc, yc, keep = batch
            outputs, _ = apply(state, xc, hparams, False)
            # Per example, so padding drops out of the mean whatever the loss.
            losses = jax.vmap(lambda o, t: loss_fn(o[None], t[None]))(outputs, yc)
            loss_sum = totals["loss"] + jnp.sum(jnp.where(keep, losses, 0.0))
            if not classify:
                return {"loss": loss_sum}, None
            correct = jnp.sum(keep & (jnp.argmax(outputs, axis=-1) == yc))
            return {"loss": loss_sum, "accuracy": totals["accuracy"] + correct}, None

        start = {"loss": jnp.float32(0.0), **({"accuracy": jnp.float32(0.0)} if classify else {})}
        totals, _ = jax.lax.scan(body, start, (chunked(x), chunked(y), valid))
        return {name: total / count for name, total in totals.items()}

    def epochs_per_step(hparams):
        fraction = np.asarray(hparams.get("batch_fraction", 1.0))
        return np.clip(np.round(fraction * batch_size), 1, batch_size) / num_train

    return Task(
        init=init,
        train=train_step,
        evaluate=evaluate,
        fitness=fitness,
        minimize=minimize,
        data=splits,
        epochs_per_step=epochs_per_step,
        name="classification" if classify else "regression",
    )


def streamed_train(data: Dataset, classify: bool) -> Stream:
    """The training split of a streamed ``data`` (``data.window`` set), as a ``Stream``."""
    classes = data.num_classes

    def with_class_tables(window):
        if not classify:
            return window
        if len(window["y"]) == len(data.y_train):  # the whole split: as if it were resident
            return {**window, **class_index(window["y"])}
        return {**window, **window_class_index(window["y"], classes)}

    arrays = {"x": data.x_train, "y": data.y_train}
    return Stream(arrays, data.window, seed=data.seed, finish=with_class_tables)


def _collections(state) -> dict:
    """The model's mutable collections kept in a member's state (``batch_stats``)."""
    return {k: v for k, v in state.items() if k not in ("params", "opt_state")}
