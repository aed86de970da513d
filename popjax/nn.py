"""Flax layers and models whose dropout rate is a traced, per-member array.

flax's own ``Dropout`` branches on ``rate == 0.0`` in Python, which fails on a traced rate, so
popjax has its own. A model used by popjax is a linen module called as
``model.apply({"params": p}, x, dropout_rate=rate, train=train, rngs={"dropout": key})``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def dropout(x, rate, key):
    """Inverted dropout with a traced ``rate`` in [0, 1).

    Rate 0 keeps every unit and returns ``x`` unchanged, bit for bit.
    """
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


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

    @nn.compact
    def __call__(self, x, *, dropout_rate=0.0, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
            x = Dropout()(x, dropout_rate, train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


class Conv1D(nn.Module):
    """A 1-D convolution with SAME padding, computed as a matmul over gathered patches.

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
        window = (jnp.arange(out_length)[:, None] * self.stride
                  + jnp.arange(self.kernel_size)[None, :])
        patches = x[:, window, :]  # [batch, out_length, kernel_size, channels]
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel_size, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        patches, kernel, bias = nn.dtypes.promote_dtype(patches, kernel, bias, dtype=self.dtype)
        return jnp.einsum("bokc,kcf->bof", patches, kernel) + bias


class CNN1D(nn.Module):
    """A small 1-D convolutional network for sequences of shape ``[batch, length]``."""

    channels: Sequence[int] = (32, 32, 32)
    hidden: int = 128
    num_classes: int = 10
    dtype: Any = "float32"  # compute dtype; weights stay float32 ("bfloat16" for speed)

    @nn.compact
    def __call__(self, x, *, dropout_rate=0.0, train: bool = False):
        if x.ndim not in (2, 3):
            raise ValueError(f"the 1-D CNN takes [length] or [length, channels] examples, "
                             f"not {tuple(x.shape[1:])}: use the MLP or reshape the data")
        if x.ndim == 2:
            x = x[..., None]  # [batch, length] -> [batch, length, 1 channel]
        for channels in self.channels:
            x = nn.relu(Conv1D(channels, kernel_size=5, stride=2, dtype=self.dtype)(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        x = Dropout()(x, dropout_rate, train)
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


MODELS = {"mlp": MLP, "cnn": CNN1D}
