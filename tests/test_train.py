"""Training: members trained together match members trained alone, and every hyperparameter
has the effect it should."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import hparams_for, tree_allclose, tree_equal
from popjax import data as datasets
from popjax import optim
from popjax.nn import MLP, dropout
from popjax.population import init_members, member_keys, select
from popjax.train import cross_entropy, make_evaluate, make_train_segment


def make(small_data, model, hparams, steps=5, loss_fn=cross_entropy, size=None):
    train = datasets.to_device(small_data.x_train, small_data.y_train)
    sample_x = jnp.asarray(small_data.x_train[:8])
    size = size or hparams["learning_rate"].shape[0]
    keys = member_keys(jax.random.PRNGKey(42), size)
    population = init_members(model, sample_x, keys, hparams)
    segment = jax.jit(make_train_segment(model, loss_fn, train, 16, steps))
    return population, segment


def test_members_together_match_members_alone(small_data, small_model):
    hparams = hparams_for(4, learning_rate=[0.05, 0.1, 0.2, 0.3], momentum=[0.0, 0.5, 0.9, 0.3],
                          dropout=[0.0, 0.1, 0.3, 0.5], weight_decay=[0.0, 1e-3, 1e-2, 1e-4])
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
        return model.apply(variables, x, dropout_rate=jnp.float32(rate), train=True,
                           rngs={"dropout": jax.random.PRNGKey(seed)})

    assert np.array_equal(forward(0.0, 1), forward(0.0, 2))
    assert np.array_equal(forward(0.0, 1), model.apply(variables, x, train=False))
    assert not np.allclose(forward(0.5, 1), forward(0.5, 2))
    # Traced per-member rates under vmap: each member drops its own share of units.
    rates = jnp.array([0.0, 0.2, 0.8])
    hidden = jnp.ones((3, 10_000))
    masks = jax.vmap(lambda r, k: dropout(hidden[0], r, k))(
        rates, jax.random.split(jax.random.PRNGKey(0), 3))
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
    expected = -lr * g * sum((1 - m ** i) / (1 - m) for i in range(1, steps + 1))
    assert np.allclose(w, expected, rtol=1e-5)


def test_momentum_changes_the_trajectory_from_the_second_step(small_data, small_model):
    hparams = hparams_for(2, momentum=[0.0, 0.9])
    population, one_step = make(small_data, small_model, hparams, steps=1)
    # Same weights and key stream for both members: only momentum differs.
    population = population._replace(
        params=jax.tree_util.tree_map(lambda x: jnp.stack([x[0], x[0]]), population.params),
        rng=jnp.stack([population.rng[0], population.rng[0]]))
    after_one, _ = one_step(population)
    assert tree_allclose(select(after_one, 0).params, select(after_one, 1).params, rtol=1e-6)
    after_two, _ = one_step(after_one)
    assert not tree_allclose(select(after_two, 0).params, select(after_two, 1).params)


def test_evaluate_reports_per_member_accuracy(small_data, small_model):
    population, segment = make(small_data, small_model, hparams_for(3, learning_rate=[0, .3, .3]),
                               steps=200)
    trained, _ = segment(population)
    val = datasets.to_device(small_data.x_val, small_data.y_val)
    metrics = jax.jit(make_evaluate(small_model, cross_entropy))(trained.params, val)
    assert metrics.accuracy.shape == (3,)
    assert float(metrics.accuracy[1]) > float(metrics.accuracy[0]) + 0.2
