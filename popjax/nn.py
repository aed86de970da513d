"""Flax layers and models whose dropout rate and activation are traced, per-member arrays.

flax's own ``Dropout`` branches on ``rate == 0.0`` in Python, which fails on a traced rate, so
popjax has its own. A model used by popjax is a linen module called as
``model.apply(variables, x, dropout_rate=rate, train=train, rngs={"dropout": key})``, and,
when the search space tunes the activation, with ``activation=index`` too. A model with batch
normalization keeps running statistics in its ``batch_stats`` collection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _mix(x):
    """A 32-bit integer hash with full avalanche (Chris Wellons' "lowbias32"): a bijection."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x7FEB352D)
    x = (x ^ (x >> 15)) * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def mask_bits(key, shape):
    """32 random bits per unit, counter-based: each unit's index hashed twice under 64 bits drawn
    from ``key`` by JAX's threefry.

    A dropout mask needs bits that are uniform and independent of the data, not of
    cryptographic strength; threefry spends about ten times more on each unit (its 20 rounds
    took a quarter of an MLP's training step), this hash two multiplies and three shifts.
    Distinct units of one mask never share their bits (the hash is a bijection of the index).
    """
    seed = jax.random.bits(key, (2,), jnp.uint32)
    index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape)
    return _mix(_mix(index ^ seed[0]) ^ seed[1])


def dropout(x, rate, key):
    """Inverted dropout with a traced ``rate`` in [0, 1).

    A unit is kept when its top 24 random bits fall below ``keep * 2**24``, so the rate is
    exact to 6e-8. Rate 0 keeps every unit and returns ``x`` unchanged, bit for bit.
    """
    keep = 1.0 - rate
    threshold = jnp.round(keep * 2.0**24).astype(jnp.uint32)
    mask = (mask_bits(key, x.shape) >> 8) < threshold
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


ACTIVATIONS = (
    nn.relu,
    nn.gelu,
    jnp.tanh,
    nn.silu,
)  # the order of its options in popjax.hyperparameters


def activate(x, index=None):
    """relu, or the activation a member's traced ``index`` picks (see ``ACTIVATIONS``)."""
    if index is None:
        return nn.relu(x)
    return jax.lax.switch(jnp.asarray(index, jnp.int32), ACTIVATIONS, x)


def reinitialize(params, mode, distribution, scale):
    """Turns flax's default kernels (LeCun truncated normal) into another initialization.

    He and Glorot differ from LeCun by a factor on the standard deviation; the uniform
    distribution is the same draw mapped through the truncated normal's CDF. The transform is
    exact, so ``mode=0`` (lecun), ``distribution=0`` (normal), ``scale=1`` gives back the very
    same weights. Biases are left at zero. All three may be traced, per member.
    """
    from jax.scipy.special import ndtr

    def kernel(path, w):
        if getattr(path[-1], "key", None) != "kernel" or w.ndim < 2:
            return w
        receptive = float(np.prod(w.shape[:-2])) if w.ndim > 2 else 1.0
        fan_in, fan_out = receptive * w.shape[-2], receptive * w.shape[-1]
        factor = jnp.asarray([1.0, np.sqrt(2.0), np.sqrt(2.0 * fan_in / (fan_in + fan_out))])
        lecun_std = np.sqrt(1.0 / fan_in)
        # flax draws truncated_normal(-2, 2) / 0.8796 * std; z is that standard draw.
        z = w / (lecun_std / 0.87962566103423978)
        low, high = ndtr(-2.0), ndtr(2.0)
        as_uniform = (2.0 * (ndtr(z) - low) / (high - low) - 1.0) * np.sqrt(3.0) * lecun_std
        shaped = jnp.where(jnp.asarray(distribution) > 0.5, as_uniform, w)
        return shaped * factor[jnp.asarray(mode, jnp.int32)] * scale

    return jax.tree_util.tree_map_with_path(kernel, params)


def normalize_batch(x, train: bool):
    """Batch normalization that keeps running statistics (``batch_stats``) in the member's
    state: training normalizes with the batch's statistics and updates the running ones;
    evaluation uses the running ones, so an example's output does not depend on the others
    evaluated with it."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)


class Dropout(nn.Module):
    """Dropout whose rate is passed at call time and may be traced."""

    @nn.compact
    def __call__(self, x, rate, train: bool):
        if not train:
            return x
        return dropout(x, rate, self.make_rng("dropout"))


class MLP(nn.Module):
    """Fully connected network: Dense -> relu -> dropout, then a linear read-out."""

    hidden: Sequence[int] = (256, 256)
    num_classes: int = 10
    dtype: Any = "float32"  # compute dtype; weights stay float32 ("bfloat16" for speed)
    batch_norm: bool = False  # normalize each hidden layer before its activation

    @nn.compact
    def __call__(self, x, *, dropout_rate=0.0, train: bool = False, activation=None):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.Dense(width, dtype=self.dtype)(x)
            x = activate(normalize_batch(x, train) if self.batch_norm else x, activation)
            x = Dropout()(x, dropout_rate, train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class Conv1D(nn.Module):
    """A 1-D convolution with SAME padding, computed as a matmul over its patches.

    Same parameters (``kernel [size, in, out]``, ``bias``) and outputs as ``flax.linen.Conv``,
    but XLA's CPU backend runs a convolution inside a scanned training loop about ten times
    slower than the same contraction written as a matmul, which vmaps into one batched matmul.
    """

    features: int
    kernel_size: int = 5
    stride: int = 1
    dtype: Any = "float32"

    @nn.compact
    def __call__(self, x):
        length, channels = x.shape[-2:]
        out_length = -(-length // self.stride)
        pad = max((out_length - 1) * self.stride + self.kernel_size - length, 0)
        x = jnp.pad(x, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
        # One strided slice per kernel tap, not a gather: the gradient of a slice is a pad,
        # where a gather's is a scatter-add, which took a third of the CNN's step on the CPU.
        end = (out_length - 1) * self.stride + 1
        patches = jnp.stack(
            [x[:, tap : tap + end : self.stride] for tap in range(self.kernel_size)], axis=2
        )  # [batch, out_length, kernel_size, channels]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (self.kernel_size, channels, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        patches, kernel, bias = nn.dtypes.promote_dtype(patches, kernel, bias, dtype=self.dtype)
        return jnp.einsum("bokc,kcf->bof", patches, kernel) + bias


class CNN1D(nn.Module):
    """A small 1-D convolutional network for sequences of shape ``[batch, length]``."""

    channels: Sequence[int] = (32, 32, 32)
    hidden: int = 128
    num_classes: int = 10
    dtype: Any = "float32"  # compute dtype; weights stay float32 ("bfloat16" for speed)
    batch_norm: bool = False  # normalize each convolution's output before its activation

    @nn.compact
    def __call__(self, x, *, dropout_rate=0.0, train: bool = False, activation=None):
        if x.ndim not in (2, 3):
            raise ValueError(
                f"the 1-D CNN takes [length] or [length, channels] examples, "
                f"not {tuple(x.shape[1:])}: use the MLP or reshape the data"
            )
        if x.ndim == 2:
            x = x[..., None]  # [batch, length] -> [batch, length, 1 channel]
        for channels in self.channels:
            x = Conv1D(channels, kernel_size=5, stride=2, dtype=self.dtype)(x)
            x = activate(normalize_batch(x, train) if self.batch_norm else x, activation)
        x = x.reshape((x.shape[0], -1))
        x = activate(nn.Dense(self.hidden, dtype=self.dtype)(x), activation)
        x = Dropout()(x, dropout_rate, train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS = {"mlp": MLP, "cnn": CNN1D}
