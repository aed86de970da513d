"""The models: popjax's patch convolution equals flax's, bfloat16 compute keeps float32
weights, and dropout's hashed mask bits behave as independent fair coins."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from popjax.nn import CNN1D, MLP, Conv1D, dropout, mask_bits


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("length", [40, 39])
def test_conv1d_matches_flax_conv(stride, length):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, length, 2))
    ours, flax_conv = Conv1D(6, kernel_size=5, stride=stride), nn.Conv(6, (5,), (stride,))
    variables = ours.init(jax.random.PRNGKey(1), x)
    # Same parameter shapes and init, so flax's layer runs on popjax's parameters.
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, flax_conv.init(jax.random.PRNGKey(1), x)
    )
    np.testing.assert_allclose(
        ours.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("model", [MLP(hidden=(16,)), CNN1D(channels=(4,), hidden=8)])
def test_bfloat16_compute_keeps_float32_weights_and_logits(model):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 40))
    variables = model.init(jax.random.PRNGKey(1), x)
    low = model.clone(dtype="bfloat16")
    assert all(
        leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(low.init(jax.random.PRNGKey(1), x))
    )
    full, half = model.apply(variables, x), low.apply(variables, x)
    assert half.dtype == jnp.float32
    assert not np.array_equal(full, half)  # computed in bfloat16 ...
    np.testing.assert_allclose(full, half, atol=0.1)  # ... to bfloat16's precision


def test_mask_bits_are_fair_and_independent():
    n = 1 << 20
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    bits = np.asarray(jax.vmap(lambda k: mask_bits(k, (n,)))(keys))
    # Every bit position is a fair coin: within 5 binomial standard errors of one half.
    positions = (bits[0][:, None] >> np.arange(32, dtype=np.uint32)) & 1
    assert np.all(np.abs(positions.mean(axis=0) - 0.5) < 5 * 0.5 / np.sqrt(n))
    # Neighbouring units, and the same unit under two keys, are uncorrelated.
    top = (bits >> 31).astype(np.float64)
    for a, b in [(top[0][:-1], top[0][1:]), (top[0], top[1])]:
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
    # No two units of one mask share their 32 bits: the hash is a bijection of the index.
    assert len(np.unique(bits[0])) == n


@pytest.mark.parametrize("rate", [0.05, 0.5, 0.9])
def test_dropout_drops_its_rate_and_keeps_the_mean(rate):
    n = 1 << 20
    out = np.asarray(dropout(jnp.ones(n), jnp.float32(rate), jax.random.PRNGKey(3)))
    dropped = np.mean(out == 0)
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)
    # Inverted dropout: kept units scaled by 1 / (1 - rate), so the mean stays 1.
    assert np.allclose(out[out != 0], 1 / (1 - rate), rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / n)
