"""Training: members trained together match members trained alone, and every hyperparameter
has the effect it should."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from popjax import optim
from popjax.nn import MLP, dropout
from popjax.population import select
from popjax.tasks.supervised import cross_entropy
from popjax.train import make_evaluate

from conftest import classifier, hparams_for, members, segment_of, tree_allclose, tree_equal


def make(small_data, model, hparams, steps=5, loss_fn=cross_entropy):
    task = classifier(small_data, model, loss=loss_fn)
    return members(task, hparams), segment_of(task, steps)


def test_members_together_match_members_alone(small_data, small_model):
    hparams = hparams_for(
        4,
        learning_rate=[0.05, 0.1, 0.2, 0.3],
        momentum=[0.0, 0.5, 0.9, 0.3],
        dropout=[0.0, 0.1, 0.3, 0.5],
        weight_decay=[0.0, 1e-3, 1e-2, 1e-4],
    )
    population, segment = make(small_data, small_model, hparams, steps=10)
    together, _ = segment(population)
    for member in range(4):
        alone, _ = segment(select(population, jnp.array([member])))
        assert tree_allclose(select(together, jnp.array([member])), alone, rtol=1e-5, atol=1e-6)


def test_members_start_different_and_sample_their_own_batches(small_data, small_model):
    population, segment = make(small_data, small_model, hparams_for(2))
    w = population.params["Dense_0"]["kernel"]
    assert not np.allclose(w[0], w[1])
    assert not np.array_equal(population.rng[0], population.rng[1])


def test_learning_rate_zero_does_not_move(small_data, small_model):
    hparams = hparams_for(2, learning_rate=[0.0, 0.1], momentum=0.9, weight_decay=1e-2)
    population, segment = make(small_data, small_model, hparams)
    trained, _ = segment(population)
    before, after = select(population, 0).params, select(trained, 0).params
    assert tree_equal(before, after)
    assert not tree_allclose(select(population, 1).params, select(trained, 1).params)


def test_dropout_zero_is_deterministic_and_positive_is_not(small_data):
    model = MLP(hidden=(64,), num_classes=3)
    x = jnp.asarray(small_data.x_train[:32])
    variables = model.init(jax.random.PRNGKey(0), x)

    def forward(rate, seed):
        return model.apply(
            variables,
            x,
            dropout_rate=jnp.float32(rate),
            train=True,
            rngs={"dropout": jax.random.PRNGKey(seed)},
        )

    assert np.array_equal(forward(0.0, 1), forward(0.0, 2))
    assert np.array_equal(forward(0.0, 1), model.apply(variables, x, train=False))
    assert not np.allclose(forward(0.5, 1), forward(0.5, 2))
    # Traced per-member rates under vmap: each member drops its own share of units.
    rates = jnp.array([0.0, 0.2, 0.8])
    hidden = jnp.ones((3, 10_000))
    masks = jax.vmap(lambda r, k: dropout(hidden[0], r, k))(
        rates, jax.random.split(jax.random.PRNGKey(0), 3)
    )
    dropped = np.mean(np.asarray(masks) == 0, axis=1)
    assert np.allclose(dropped, rates, atol=0.02)


def test_weight_decay_shrinks_weights_under_zero_gradients(small_data, small_model):
    def zero_loss(logits, labels):
        return 0.0 * logits.sum()

    lr, wd, steps = 0.5, 0.1, 4
    hparams = hparams_for(2, learning_rate=lr, momentum=0.9, weight_decay=[0.0, wd])
    population, segment = make(small_data, small_model, hparams, steps=steps, loss_fn=zero_loss)
    trained, _ = segment(population)
    assert tree_equal(select(population, 0).params, select(trained, 0).params)
    shrink = (1 - lr * wd) ** steps
    expected = jax.tree_util.tree_map(lambda w: w * shrink, select(population, 1).params)
    assert tree_allclose(select(trained, 1).params, expected, rtol=1e-5)


def test_momentum_follows_heavy_ball_sgd():
    # Constant gradient g: after k steps with momentum m the weight has moved
    # -lr * g * sum_{i=1..k} (1 - m^i) / (1 - m).
    lr, m, g, steps = 0.1, 0.9, 2.0, 6
    tx = optim.member_optimizer({"learning_rate": lr, "momentum": m, "weight_decay": 0.0})
    w = jnp.zeros(3)
    state = optim.init_state(w)
    update = jax.jit(tx.update)
    for _ in range(steps):
        updates, state = update(jnp.full(3, g), state, w)
        w = optax.apply_updates(w, updates)
    expected = -lr * g * sum((1 - m**i) / (1 - m) for i in range(1, steps + 1))
    assert np.allclose(w, expected, rtol=1e-5)


def test_momentum_changes_the_trajectory_from_the_second_step(small_data, small_model):
    hparams = hparams_for(2, momentum=[0.0, 0.9])
    population, one_step = make(small_data, small_model, hparams, steps=1)
    # Same weights and key stream for both members: only momentum differs.
    population = population._replace(
        state=jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), population.state),
        rng=jnp.stack([population.rng[0], population.rng[0]]),
    )
    after_one, _ = one_step(population)
    assert tree_allclose(select(after_one, 0).params, select(after_one, 1).params, rtol=1e-6)
    after_two, _ = one_step(after_one)
    assert not tree_allclose(select(after_two, 0).params, select(after_two, 1).params)


def test_evaluate_reports_per_member_accuracy(small_data, small_model):
    task = classifier(small_data, small_model)
    trained, _ = segment_of(task, 200)(members(task, hparams_for(3, learning_rate=[0, 0.3, 0.3])))
    _, metrics = jax.jit(make_evaluate(task))(trained, task.data.val)
    accuracy = np.asarray(metrics["accuracy"])
    assert accuracy.shape == (3,)
    assert accuracy[1] > accuracy[0] + 0.2
    # Against numpy: member 1's accuracy is the share of argmax logits equal to the labels.
    params = jax.tree_util.tree_map(lambda leaf: leaf[1], trained.params)
    logits = np.asarray(small_model.apply({"params": params}, small_data.x_val))
    assert accuracy[1] == pytest.approx(np.mean(logits.argmax(-1) == small_data.y_val), abs=1e-6)


def test_evaluation_in_chunks_equals_evaluation_at_once(small_data, small_model):
    hparams = hparams_for(2, learning_rate=[0.1, 0.3])
    whole = classifier(small_data, small_model)
    chunked = classifier(small_data, small_model, eval_chunk=7)  # 60 examples: 9 chunks, padded
    trained, _ = segment_of(whole, 20)(members(whole, hparams))
    _, at_once = jax.jit(make_evaluate(whole))(trained, whole.data.val)
    _, in_chunks = jax.jit(make_evaluate(chunked))(trained, chunked.data.val)
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(in_chunks[name], at_once[name], rtol=1e-5)
