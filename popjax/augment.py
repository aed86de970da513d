"""Data augmentation with per-member, traced strengths: shift, noise, scale, flip.

Every strength at 0 returns the batch unchanged, bit for bit. Inputs ``[B, L]`` are 1-D
sequences, ``[B, H, W]`` grayscale images, ``[B, H, W, C]`` images with channels; shifts move
every spatial axis, a flip reverses the last one (time for a sequence, left-right for an image).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from popjax.hyperparameters import acting_in

AUGMENT_HPARAMS = acting_in("augmentation")


def spatial_axes(x) -> tuple[int, ...]:
    """The spatial axes of one example (no batch axis)."""
    return (0,) if x.ndim == 1 else (0, 1) if x.ndim == 2 else tuple(range(x.ndim - 1))


def augment_example(key, x, hparams: Mapping[str, jax.Array]):
    shift_key, noise_key, scale_key, flip_key = jax.random.split(key, 4)
    axes = spatial_axes(x)
    if "shift" in hparams:  # circular shift by a whole number of positions in [-shift, shift]
        amounts = jax.random.uniform(shift_key, (len(axes),), minval=-1.0, maxval=1.0)
        amounts = jnp.round(amounts * hparams["shift"]).astype(jnp.int32)
        for axis, amount in zip(axes, amounts):
            x = jnp.roll(x, amount, axis=axis)
    if "scale" in hparams:
        x = x * jax.random.uniform(
            scale_key, (), minval=1.0 - hparams["scale"], maxval=1.0 + hparams["scale"]
        )
    if "noise" in hparams:
        x = x + hparams["noise"] * jax.random.normal(noise_key, x.shape, x.dtype)
    if "flip" in hparams:
        x = jnp.where(
            jax.random.bernoulli(flip_key, hparams["flip"]), jnp.flip(x, axis=axes[-1]), x
        )
    return x


def augment(key, x, hparams: Mapping[str, jax.Array]):
    """Augments a batch ``[B, ...]`` with the member's strengths; a no-op without any."""
    if not any(name in hparams for name in AUGMENT_HPARAMS):
        return x
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(augment_example, in_axes=(0, 0, None))(keys, x, hparams)
