"""An MLP classifier in equinox on MNIST-1D, as a popjax task.

Written with popjax's public interface alone, to be copied. The patterns it shows:

- ``params, static = eqx.partition(model, eqx.is_array)``: the task's state holds only the
  arrays; the static part is made once in the factory and ``eqx.combine(params, static)``
  rebuilds the model inside ``train`` and ``evaluate`` (one member at a time, under popjax's
  ``vmap``);
- dropout with a traced, per-member rate written with ``jax.random.bernoulli`` (equinox's
  ``eqx.nn.Dropout`` takes its rate as a Python float, fixed when the model is built);
- SGD with per-member learning rate, momentum and weight decay from
  ``popjax.optim.member_optimizer``, the learning rate read at every step.

    cd experiments/own_tasks && popjax run equinox_mlp.toml
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import popjax


@functools.cache
def mnist1d_generated() -> dict:
    """MNIST-1D made by its generator with the default arguments (a few seconds, once)."""
    from mnist1d.data import get_dataset_args, make_dataset

    return make_dataset(get_dataset_args())


def mnist1d_arrays(val_fraction: float = 0.1, seed: int = 0):
    """MNIST-1D generated on this machine with the generator's default arguments (4,000 training
    and 1,000 test sequences of 40 values, 10 classes); nothing is downloaded. The validation
    split is taken at random from the training sequences."""
    raw = mnist1d_generated()
    x, y = raw["x"].astype(np.float32), raw["y"].astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    val, train = order[: int(val_fraction * len(y))], order[int(val_fraction * len(y)) :]
    mean, std = x[train].mean(), x[train].std()

    def split(xs, ys):
        return {"x": (xs - mean) / std, "y": ys}

    return (
        split(x[train], y[train]),
        split(x[val], y[val]),
        split(raw["x_test"].astype(np.float32), raw["y_test"].astype(np.int32)),
    )


def dropout(x, rate, key):
    """Inverted dropout whose ``rate`` may be traced (a member's hyperparameter)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


class MLP(eqx.Module):
    layers: list

    def __init__(self, sizes, key):
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes, sizes[1:], keys)]

    def __call__(self, x, rate, key):
        """Logits of one example; dropout after every hidden layer (``rate = 0`` to evaluate)."""
        keys = jax.random.split(key, len(self.layers))
        for layer, k in zip(self.layers[:-1], keys):
            x = dropout(jax.nn.relu(layer(x)), rate, k)
        return self.layers[-1](x)


def classifier(hidden: tuple[int, ...] = (256, 256), batch_size: int = 128, seed: int = 0):
    """An equinox MLP (40 -> ``hidden`` -> 10, relu, dropout) classifying MNIST-1D sequences.

    A step trains on ``batch_size`` random training examples with SGD (momentum, decoupled
    weight decay); ``evaluate`` gives the accuracy (%) and loss on its whole split, and popjax
    selects on the validation accuracy. Per-member hyperparameters: ``learning_rate``,
    ``momentum``, ``weight_decay``, ``dropout``. ``seed`` picks the validation split.
    """
    train_split, val_split, test_split = mnist1d_arrays(seed=seed)
    sizes = (train_split["x"].shape[1], *hidden, 10)
    # The static part once; a member's state holds only its arrays.
    _, static = eqx.partition(MLP(sizes, jax.random.key(0)), eqx.is_array)

    def logits_of(params, x, rate, key):
        model = eqx.combine(params, static)
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(model, in_axes=(0, None, 0))(x, rate, keys)

    def loss_fn(params, batch, rate, key):
        logits = logits_of(params, batch["x"], rate, key)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    def init(key, hparams, train):
        params, _ = eqx.partition(MLP(sizes, key), eqx.is_array)
        return {"params": params, "opt_state": popjax.optim.init_state(params, hparams)}

    def train(state, hparams, key, step, train):
        sample_key, dropout_key = jax.random.split(key)
        index = jax.random.randint(sample_key, (batch_size,), 0, train["y"].shape[0])
        batch = {name: value[index] for name, value in train.items()}
        loss, grads = jax.value_and_grad(loss_fn)(
            state["params"], batch, hparams["dropout"], dropout_key
        )
        optimizer = popjax.optim.member_optimizer(hparams)  # SGD: learning rate, momentum
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state}, {"loss": loss}

    def evaluate(state, hparams, key, split):
        logits = logits_of(state["params"], split["x"], 0.0, key)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, split["y"]).mean()
        accuracy = 100.0 * jnp.mean(jnp.argmax(logits, -1) == split["y"])
        return {"accuracy": accuracy, "loss": loss}

    space = {
        "learning_rate": popjax.LogUniform(1e-3, 0.3),
        "momentum": popjax.Uniform(0.0, 0.95),
        "weight_decay": popjax.LogUniform(1e-6, 1e-2),
        "dropout": popjax.Uniform(0.0, 0.5),
    }
    examples = train_split["y"].shape[0]
    return popjax.Task(
        init,
        train,
        evaluate,
        fitness="accuracy",
        data=popjax.TaskData(train_split, val_split, test_split),
        space=space,
        epochs_per_step=lambda h: np.full(len(h["learning_rate"]), batch_size / examples),
        name="equinox-mlp",
    )
