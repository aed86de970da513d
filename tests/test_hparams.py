"""Every optional hyperparameter: at its neutral value a run equals one without it, and a value
that must change the result does."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import popjax
from popjax import data as datasets
from popjax.augment import augment
from popjax.nn import MLP
from popjax.round import SelectionState, make_round
from popjax.space import NEUTRAL_VALUES, SearchSpace, Uniform

from conftest import classifier, hparams_for, members, segment_of, tree_allclose, tree_equal


def train(small_data, model, hparams, steps=4, optimizer="sgd"):
    task = classifier(small_data, model, optimizer=optimizer)
    population = members(task, hparams, seed=7)
    return population, segment_of(task, steps)(population)[0]


def with_extra(size, **extra):
    hparams = hparams_for(size, learning_rate=0.2, momentum=0.5, dropout=0.1, weight_decay=1e-3)
    hparams.update(
        {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (size,)) for k, v in extra.items()}
    )
    return hparams


# A neutral infinite clip or patience is written as a huge number: priors must be finite.
NEUTRAL = {
    name: (1e30 if math.isinf(v) else v) for name, v in NEUTRAL_VALUES.items() if name != "patience"
}


@pytest.fixture(scope="module")
def without_extras(small_data, small_model):
    """The members before and after training without any hyperparameter of NEUTRAL."""
    return train(small_data, small_model, with_extra(2))


@pytest.mark.parametrize("name", sorted(NEUTRAL))
def test_neutral_value_matches_a_run_without_it(name, small_data, small_model, without_extras):
    start, plain = without_extras
    start_n, neutral = train(small_data, small_model, with_extra(2, **{name: NEUTRAL[name]}))
    assert tree_equal(start.params, start_n.params)  # init_* at neutral: the same weights
    assert tree_allclose(plain.params, neutral.params, rtol=1e-5, atol=1e-6)


def moved(before, after):
    return float(
        sum(
            jnp.abs(a - b).sum()
            for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(before.params))
        )
    )


def test_grad_clip_bounds_the_first_update(small_data, small_model):
    hparams = with_extra(2, grad_clip=[1e-3, 1e30], momentum=0.0, weight_decay=0.0)
    start, after = train(small_data, small_model, hparams, steps=1)
    norms = [
        float(
            jnp.sqrt(
                sum(
                    jnp.sum((a[m] - b[m]) ** 2)
                    for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(start.params))
                )
            )
        )
        for m in (0, 1)
    ]
    assert norms[0] == pytest.approx(0.2 * 1e-3, rel=1e-3)  # lr x clip norm
    assert norms[1] > 10 * norms[0]


def test_adam_takes_learning_rate_sized_first_steps_and_b1_matters(small_data, small_model):
    space = SearchSpace(optimizer="adam")
    assert {"b1", "b2", "eps"} <= set(space.names) and "momentum" not in space.names
    hparams = {
        "learning_rate": jnp.full(2, 0.01),
        "b1": jnp.array([0.9, 0.5]),
        "b2": jnp.full(2, 0.999),
        "eps": jnp.full(2, 1e-8),
        "dropout": jnp.zeros(2),
        "weight_decay": jnp.zeros(2),
    }
    start, one = train(small_data, small_model, hparams, steps=1, optimizer="adam")
    step = np.abs(np.asarray(one.params["Dense_0"]["kernel"] - start.params["Dense_0"]["kernel"]))
    # Adam's first update is lr * g / (|g| + eps): lr wherever the gradient is not tiny.
    assert np.median(step[step > 1e-4]) == pytest.approx(0.01, rel=1e-3)
    _, later = train(small_data, small_model, hparams, steps=5, optimizer="adam")
    w = later.params["Dense_0"]["kernel"]
    w0 = start.params["Dense_0"]["kernel"]
    assert not np.allclose(w[0] - w0[0], w[1] - w0[1])  # b1 0.9 and 0.5 part ways


def test_l1_shrinks_the_weights(small_data, small_model):
    start, after = train(small_data, small_model, with_extra(2, l1=[0.0, 0.05]), steps=20)
    l1 = [
        float(sum(jnp.abs(leaf[m]).sum() for leaf in jax.tree.leaves(after.params))) for m in (0, 1)
    ]
    assert l1[1] < 0.8 * l1[0]


def test_label_smoothing_lowers_confidence(small_data, small_model):
    _, after = train(
        small_data, small_model, with_extra(2, label_smoothing=[0.0, 0.6], dropout=0.0), steps=60
    )
    x = jnp.asarray(small_data.x_val)
    confidence = [
        float(
            jax.nn.softmax(
                small_model.apply({"params": jax.tree.map(lambda leaf: leaf[m], after.params)}, x)
            )
            .max(-1)
            .mean()
        )
        for m in (0, 1)
    ]
    assert confidence[1] < confidence[0] - 0.05


def test_activation_choice_is_per_member():
    model = MLP(hidden=(8,), num_classes=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    outputs = jax.vmap(lambda a: model.apply({"params": params}, x, activation=a))(jnp.arange(4.0))
    dense = params["Dense_0"]
    hidden = x @ dense["kernel"] + dense["bias"]
    for index, act in enumerate((jax.nn.relu, jax.nn.gelu, jnp.tanh, jax.nn.silu)):
        expected = act(hidden) @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
        np.testing.assert_allclose(outputs[index], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outputs[0], outputs[2])


def test_initialization_mode_distribution_and_scale():
    model = MLP(hidden=(512,), num_classes=256)
    x, y = np.ones((2, 256), np.float32), np.zeros(2, np.int32)
    task = classifier(datasets.Dataset(x, y, x, y, x, y), model)
    hparams = {
        "init_mode": jnp.array([0.0, 1.0, 2.0, 0.0]),
        "init_distribution": jnp.array([0.0, 0.0, 0.0, 1.0]),
        "init_scale": jnp.array([1.0, 1.0, 1.0, 3.0]),
        **hparams_for(4),
    }
    population = members(task, hparams, seed=0)
    w = np.asarray(population.params["Dense_0"]["kernel"])  # fan_in 256, fan_out 512
    lecun = np.sqrt(1 / 256)
    assert w[0].std() == pytest.approx(lecun, rel=0.02)
    assert w[1].std() == pytest.approx(lecun * np.sqrt(2), rel=0.02)  # He
    assert w[2].std() == pytest.approx(np.sqrt(2 / (256 + 512)), rel=0.02)  # Glorot
    limit = 3 * np.sqrt(3) * lecun  # uniform, scaled by 3
    assert np.abs(w[3]).max() <= limit * (1 + 1e-5)
    assert np.abs(w[3]).max() > 0.99 * limit and w[3].std() == pytest.approx(3 * lecun, rel=0.02)


def test_augmentation_shifts_flips_scales_and_adds_noise():
    x = jnp.tile(jnp.arange(10.0), (64, 1))
    key = jax.random.PRNGKey(0)
    flipped = augment(key, x, {"flip": jnp.float32(1.0)})
    np.testing.assert_array_equal(flipped, x[:, ::-1])
    shifted = np.asarray(augment(key, x, {"shift": jnp.float32(2.0)}))
    rolls = {int(np.argmin(row)) for row in shifted}  # where each row's 0 went
    assert rolls <= {0, 1, 2, 8, 9} and len(rolls) > 1
    scaled = np.asarray(augment(key, x, {"scale": jnp.float32(0.5)}))
    ratio = scaled[:, 1] / x[:, 1]
    assert ratio.min() >= 0.5 and ratio.max() <= 1.5 and ratio.std() > 0.1
    noisy = np.asarray(augment(key, x, {"noise": jnp.float32(0.1)}))
    assert (noisy - x).std() == pytest.approx(0.1, rel=0.1)
    image = jnp.tile(jnp.arange(16.0).reshape(4, 4), (8, 1, 1))
    moved_image = np.asarray(augment(key, image, {"shift": jnp.float32(1.0)}))
    zeros = [divmod(int(np.argmin(m)), 4) for m in moved_image]  # (row, column) of the 0
    assert {r for r, _ in zeros} - {0} and {c for _, c in zeros} - {0}  # both axes move


def test_balanced_sampling_evens_out_classes():
    y = np.array([0] * 90 + [1] * 10, np.int32)
    split = {"x": np.zeros((100, 3), np.float32), "y": y, **datasets.class_index(y)}
    sample = jax.jit(lambda key, balanced: datasets.sample_balanced(key, split, 2000, balanced))
    _, uniform = sample(jax.random.PRNGKey(0), 0.0)
    _, balanced = sample(jax.random.PRNGKey(0), 1.0)
    assert np.mean(np.asarray(uniform) == 1) == pytest.approx(0.1, abs=0.03)
    assert np.mean(np.asarray(balanced) == 1) == pytest.approx(0.5, abs=0.04)


def test_batch_fraction_counts_only_the_first_examples(small_data, small_model):
    task = classifier(small_data, small_model)
    one = jax.tree.map(lambda leaf: leaf[0], members(task, with_extra(1), seed=1))
    step = jax.jit(task.train)
    key = jax.random.PRNGKey(5)
    losses = {}
    for fraction in (1.0, 0.25):
        hparams = {**one.hparams, "batch_fraction": jnp.float32(fraction)}
        losses[fraction] = float(step(one.state, hparams, key, 0, task.data.train)[1]["loss"])
    # The batch the step drew, rebuilt from the same key split.
    batch_key, dropout_key = jax.random.split(key)
    x, y = datasets.sample_uniform(batch_key, task.data.train, 16)
    logits = small_model.apply(
        {"params": one.params}, x, dropout_rate=0.1, train=True, rngs={"dropout": dropout_key}
    )
    per_example = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    assert losses[1.0] == pytest.approx(per_example.mean(), rel=1e-5)
    assert losses[0.25] == pytest.approx(per_example[:4].mean(), rel=1e-5)


def test_early_stopped_member_freezes_and_is_replaced_first(small_data, small_model):
    space = SearchSpace({"patience": popjax.Fixed(2.0)})
    task = classifier(small_data, small_model)
    round_fn = jax.jit(make_round(task, 5, space, popjax.PBTConfig(), jax.random.PRNGKey(0)))
    population = popjax.population.init_population(jax.random.PRNGKey(0), task, space, 4)
    selection = SelectionState(
        jnp.array([0.9, 0.5, 0.6, 0.7]), jnp.array([0.9, 0.5, 0.6, 0.7]), jnp.array([0, 5, 0, 0])
    )  # member 1: 5 rounds without improving
    # Round 0 runs no PBT: member 1 is stopped, so its weights do not move.
    after, _, output = round_fn(population, selection, 0, task.data)
    assert output.stopped.tolist() == [False, True, False, False]
    w, w0 = after.params["Dense_0"]["kernel"], population.params["Dense_0"]["kernel"]
    assert np.array_equal(w[1], w0[1]) and not np.array_equal(w[0], w0[0])
    # At a PBT round it is replaced even though its last fitness is not the worst.
    selection = SelectionState(
        jnp.array([0.9, 0.8, 0.6, 0.7]), jnp.array([0.9, 0.8, 0.6, 0.7]), jnp.array([0, 5, 0, 0])
    )
    _, _, output = round_fn(population, selection, 1, task.data)
    assert int(output.parents[1]) != 1 and not bool(output.stopped[1])


def test_epoch_budget_and_epochs_in_the_lineage(small_data, tiny_run):
    space = SearchSpace({"batch_fraction": popjax.Choice((0.5, 1.0))})
    result = tiny_run(
        interval=5,
        steps=5,
        batch_size=20,
        epochs=2.0,
        space=space,
    )
    n = len(small_data.x_train)
    assert result.config.steps == round(2.0 * n / (20 * 5)) * 5
    last = result.history[-1]
    for member in range(4):
        history = result.lineage.history(member)
        expected = sum(5 * round(20 * h["hparams"]["batch_fraction"]) / n for h in history)
        assert last["epochs"][member] == pytest.approx(expected, rel=1e-5)
        assert history[-1]["epochs"] == pytest.approx(expected, rel=1e-5)


def test_named_choices_read_and_write_by_name():
    table = {
        "optimizer": "adam",
        "activation": {"prior": "choice", "values": ["relu", "silu"]},
        "init_mode": "he",
        "sampling": {"prior": "choice", "values": ["uniform", "balanced"]},
    }
    space = SearchSpace.from_dict(table)
    assert space.priors["activation"].values == (0.0, 3.0)
    assert space.priors["init_mode"].value == 1.0
    assert SearchSpace.from_dict(space.to_dict()).to_dict() == space.to_dict()
    with pytest.raises(popjax.PopjaxError, match="did you mean 'gelu'"):
        SearchSpace.from_dict({"activation": "gelo"})
    with pytest.raises(popjax.PopjaxError, match="parameter of the adam optimizer"):
        SearchSpace({"b2": Uniform(0.9, 0.99)})
