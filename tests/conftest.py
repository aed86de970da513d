"""Small shared pieces: tests use tiny populations and few steps to stay quick on a CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popjax import data as datasets
from popjax.nn import MLP


@pytest.fixture(scope="session")
def mnist1d():
    return datasets.mnist1d()


@pytest.fixture(scope="session")
def small_data():
    """A small 3-class problem; enough to take real gradients."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x[:, :3].argmax(axis=1)).astype(np.int32)
    return datasets.from_arrays(x[:240], y[:240], x[240:], y[240:], val_fraction=0.25)


@pytest.fixture(scope="session")
def small_model():
    return MLP(hidden=(16,), num_classes=3)


def hparams_for(size, learning_rate=0.1, momentum=0.0, dropout=0.0, weight_decay=0.0):
    """Per-member hyperparameter arrays; each argument is a scalar or a list of ``size``."""
    values = dict(learning_rate=learning_rate, momentum=momentum, dropout=dropout,
                  weight_decay=weight_decay)
    return {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (size,)) for k, v in values.items()}


def tree_allclose(a, b, **tolerance):
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x, y: np.allclose(np.asarray(x), np.asarray(y), **tolerance), a, b))
    return all(leaves)


def tree_equal(a, b):
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b))
    return all(leaves)


def classifier(data, model, **options):
    """popjax's classification task on ``data``; batches of 16 unless told otherwise."""
    from popjax.tasks import supervised

    return supervised.classification(model, data, **{"batch_size": 16, **options})


def members(task, hparams, seed=42):
    """A population of the task, one member per entry of the ``[P]`` hyperparameter arrays."""
    from popjax.population import init_members, member_keys

    size = next(iter(hparams.values())).shape[0]
    return init_members(task, member_keys(jax.random.PRNGKey(seed), size), hparams)


def segment_of(task, steps):
    """The jitted training segment of ``steps`` steps, taking the population alone."""
    from popjax.train import make_segment

    segment = make_segment(task, steps)
    return jax.jit(lambda population: segment(population, task.data.train))
