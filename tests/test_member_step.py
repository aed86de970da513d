"""The per-member hyperparameters that act on a member's batch or network (augmentation,
class-balanced sampling, activation) change the training step of the member that has them,
and evaluation uses each member's own activation.

Members here start from the same weights with the same key stream, so whatever differs between
their steps comes from their hyperparameters. Each step is rebuilt independently: the batch
from the member's keys, each augmentation in NumPy, and plain SGD on a one-hidden-layer network
written out by hand (not popjax's model), with the activation written out too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popjax import data as datasets
from popjax.nn import MLP
from popjax.train import make_evaluate

from conftest import classifier, hparams_for, members, segment_of

pytestmark = pytest.mark.timeout(120)

BATCH = 16
LEARNING_RATE = 0.5
AUGMENTATIONS = {"shift": 3.0, "noise": 0.5, "scale": 0.5, "flip": 0.5}


# The activations by hand, in the order of their indices (relu, gelu, tanh, silu); gelu is the
# tanh approximation, flax's default.
def gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


HAND_ACTIVATIONS = (
    lambda x: jnp.maximum(x, 0.0),
    gelu,
    jnp.tanh,
    lambda x: x / (1.0 + jnp.exp(-x)),
)


def np_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


NUMPY_ACTIVATIONS = (
    lambda x: np.maximum(x, 0.0),
    np_gelu,
    np.tanh,
    lambda x: x / (1.0 + np.exp(-x)),
)


def twins(task, hparams: dict[str, list[float]], seed=3):
    """A population whose members all have member 0's initial weights and key stream, member i
    having the i-th value of each hyperparameter."""
    size = len(next(iter(hparams.values())))
    values = {
        **hparams_for(size, learning_rate=LEARNING_RATE),
        **{name: jnp.asarray(v, jnp.float32) for name, v in hparams.items()},
    }
    first = members(task, {name: v[:1] for name, v in values.items()}, seed=seed)
    population = jax.tree.map(lambda a: jnp.repeat(a, size, axis=0), first)
    return population._replace(hparams=values, member_ids=jnp.arange(size, dtype=jnp.int32))


def member(tree, index):
    return jax.tree.map(lambda leaf: np.asarray(leaf[index]), tree)


def step_keys(rng):
    """The keys of a member's next step from its stream: the step's key is split off the stream,
    then split into the batch's and dropout's; augmentation folds 2 into the batch's."""
    _, key = jax.random.split(rng)
    batch_key, _ = jax.random.split(key)
    return batch_key, jax.random.fold_in(batch_key, 2)


def uniform_batch(batch_key, split, size=BATCH):
    """The batch a uniform draw takes: ``size`` example indices uniform with replacement."""
    index = np.asarray(jax.random.randint(batch_key, (size,), 0, len(split["x"])))
    return np.asarray(split["x"])[index], np.asarray(split["y"])[index]


def sgd_step(params, x, y, activation=0):
    """One plain SGD step of cross-entropy on a Dense -> activation -> Dense network."""

    def loss(p):
        hidden = x.reshape(len(x), -1) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        logits = HAND_ACTIVATIONS[activation](hidden) @ p["Dense_1"]["kernel"]
        logits = logits + p["Dense_1"]["bias"]
        log_p = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(log_p, jnp.asarray(y)[:, None], axis=1))

    grads = jax.grad(loss)(jax.tree.map(jnp.asarray, params))
    return jax.tree.map(lambda w, g: np.asarray(w - LEARNING_RATE * g), params, grads)


def augmented_in_numpy(x, aug_key, name, strength):
    """``x`` [B, ...] with one augmentation applied to each example, from the example's own
    draws: a shift of round(U(-1, 1) * strength) positions along every spatial axis, a factor
    of U(1 - s, 1 + s), Gaussian noise of std s, the last axis reversed with chance s."""
    out = np.array(x)
    spatial = tuple(range(x.ndim - 1))  # of one example: every axis of these inputs
    for i, key in enumerate(jax.random.split(aug_key, len(x))):
        shift_key, noise_key, scale_key, flip_key = jax.random.split(key, 4)
        if name == "shift":
            draws = np.asarray(jax.random.uniform(shift_key, (len(spatial),), minval=-1, maxval=1))
            out[i] = np.roll(out[i], tuple(np.round(draws * strength).astype(int)), axis=spatial)
        elif name == "scale":
            out[i] = out[i] * float(
                jax.random.uniform(scale_key, (), minval=1 - strength, maxval=1 + strength)
            )
        elif name == "noise":
            out[i] = out[i] + strength * np.asarray(jax.random.normal(noise_key, out[i].shape))
        elif name == "flip" and bool(jax.random.bernoulli(flip_key, strength)):
            out[i] = np.flip(out[i], axis=-1)
    return out


def biggest_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_params_close(actual, expected, what):
    for (path, a), e in zip(
        jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=True
    ):
        np.testing.assert_allclose(
            a, e, rtol=1e-4, atol=1e-5, err_msg=f"{what}: {jax.tree_util.keystr(path)}"
        )


def arrays(x, y):
    """Train, validation and test splits of ``x, y`` (the last 60 examples held out)."""
    return datasets.from_arrays(x[:-60], y[:-60], x[-60:], y[-60:], val_fraction=0.25)


@pytest.fixture(scope="module")
def images():
    """A 3-class problem on 4 x 3 single-channel images (height and width differ)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4, 3)).astype(np.float32)
    return arrays(x, x[:, :3, 0].argmax(axis=1).astype(np.int32))


@pytest.mark.parametrize("layout", ["sequence", "image"])
def test_each_augmentation_changes_the_step_as_numpy_rebuilds_it(
    layout, small_data, images, small_model
):
    data = small_data if layout == "sequence" else images
    task = classifier(data, small_model, batch_size=BATCH)
    names = list(AUGMENTATIONS)
    # Member 0 has every augmentation at 0; member i + 1 has augmentation i alone switched on.
    hparams = {
        name: [0.0] + [AUGMENTATIONS[name] if other == name else 0.0 for other in names]
        for name in names
    }
    population = twins(task, hparams)
    after = segment_of(task, 1)(population)[0].params
    start = member(population.params, 0)
    batch_key, aug_key = step_keys(population.rng[0])
    x, y = uniform_batch(batch_key, task.data.train)

    plain = member(after, 0)
    assert_params_close(plain, sgd_step(start, x, y), "no augmentation")
    for i, name in enumerate(names, start=1):
        augmented = augmented_in_numpy(x, aug_key, name, AUGMENTATIONS[name])
        assert biggest_difference(augmented, x) > 0.1, name
        if name == "flip":  # some examples reversed and some not, at chance 0.5
            reversed_ = [np.array_equal(a, np.flip(b, -1)) for a, b in zip(augmented, x)]
            assert 0 < sum(reversed_) < BATCH
        assert_params_close(member(after, i), sgd_step(start, augmented, y), name)
        assert biggest_difference(member(after, i), plain) > 1e-3, name


def test_balanced_sampling_draws_classes_evenly_and_changes_the_step():
    """A linear classifier at zero weights predicts 1/3 for each class, so one SGD step at rate
    1 moves its bias by each class's share of the batch minus 1/3: its batch's class counts."""
    rng = np.random.default_rng(2)
    y = rng.choice(3, size=500, p=[0.75, 0.2, 0.05]).astype(np.int32)
    x = rng.normal(size=(500, 4)).astype(np.float32)
    data = arrays(x, y)
    batch, pairs = 64, 96
    task = classifier(data, MLP(hidden=(), num_classes=3), batch_size=batch)
    # Members i and pairs + i share a key stream; the first half samples uniformly.
    population = members(task, hparams_for(pairs, learning_rate=1.0), seed=5)
    population = jax.tree.map(lambda a: jnp.concatenate([a, a]), population)
    population = population._replace(
        state={**population.state, "params": jax.tree.map(jnp.zeros_like, population.params)},
        hparams={**population.hparams, "sampling": jnp.repeat(jnp.array([0.0, 1.0]), pairs)},
    )
    after = segment_of(task, 1)(population)[0]
    counts = batch * (np.asarray(after.params["Dense_0"]["bias"], np.float64) + 1 / 3)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # whole examples
    counts = np.round(counts).astype(int)
    assert (counts.sum(axis=1) == batch).all()

    # Uniform members draw exactly the uniform batch of their keys.
    train = task.data.train
    for m in range(pairs):
        _, labels = uniform_batch(step_keys(population.rng[m])[0], train, batch)
        np.testing.assert_array_equal(counts[m], np.bincount(labels, minlength=3))
    # The same weights and keys, another batch: the steps differ.
    assert (counts[:pairs] != counts[pairs:]).any(axis=1).mean() > 0.9

    draws = pairs * batch
    data_share = np.bincount(train["y"], minlength=3) / len(train["y"])
    assert data_share.min() < 0.1  # the data are imbalanced
    for share, expected in (
        (counts[:pairs].sum(axis=0) / draws, data_share),
        (counts[pairs:].sum(axis=0) / draws, np.full(3, 1 / 3)),
    ):
        standard_error = np.sqrt(expected * (1 - expected) / draws)
        np.testing.assert_array_less(np.abs(share - expected), 5 * standard_error)


def test_each_members_activation_acts_in_its_step(small_data, small_model):
    task = classifier(small_data, small_model, batch_size=BATCH)
    population = twins(task, {"activation": [0.0, 1.0, 2.0, 3.0]})
    after = segment_of(task, 1)(population)[0].params
    start = member(population.params, 0)
    x, y = uniform_batch(step_keys(population.rng[0])[0], task.data.train)
    steps = [member(after, m) for m in range(4)]
    for m, step in enumerate(steps):
        assert_params_close(step, sgd_step(start, x, y, activation=m), f"activation {m}")
    for a in range(4):
        for b in range(a + 1, 4):
            assert biggest_difference(steps[a], steps[b]) > 1e-4, (a, b)


def test_evaluation_uses_each_members_activation(small_data, small_model):
    """Validation loss and accuracy of members trained with relu, gelu, tanh and silu match a
    NumPy forward pass of each member's weights through its own activation, and not through
    another's. Evaluated in chunks of 16 examples (the split has 60)."""
    task = classifier(small_data, small_model, batch_size=BATCH, eval_chunk=16)
    population = twins(task, {"activation": [0.0, 1.0, 2.0, 3.0]})
    population = segment_of(task, 5)(population)[0]
    evaluate = make_evaluate(task)
    _, metrics = jax.jit(lambda p, split: evaluate(p, split))(population, task.data.val)
    x = np.asarray(task.data.val["x"], np.float64)
    y = np.asarray(task.data.val["y"])

    def numpy_metrics(params, activation):
        p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        hidden = NUMPY_ACTIVATIONS[activation](x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        logits = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(y)), y].mean(), (logits.argmax(axis=1) == y).mean()

    for m in range(4):
        params = member(population.params, m)
        loss, accuracy = numpy_metrics(params, m)
        assert float(metrics["loss"][m]) == pytest.approx(loss, rel=1e-5)
        assert float(metrics["accuracy"][m]) == pytest.approx(accuracy, abs=1e-6)
        for other in set(range(4)) - {m}:  # another activation is at least 10x the tolerance off
            assert float(metrics["loss"][m]) != pytest.approx(
                numpy_metrics(params, other)[0], rel=1e-4
            ), (m, other)
