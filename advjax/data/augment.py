"""The standard CIFAR augmentation as a jitted function of a PRNG key.

Random crop with zero padding and random horizontal flip, per example (He et al. 2016, "Deep
Residual Learning for Image Recognition", Sec. 4.2: pad 4 pixels on each side, take a random
32x32 crop of the padded image or its horizontal flip; the recipe of every AT paper built on
CIFAR). For each example, offsets (dy, dx) are uniform in {0, ..., 2*pad} and the output is the
window ``padded[dy:dy+H, dx:dx+W]`` of the zero-padded image, mirrored left-right with
probability 1/2 when ``flip``. Runs on device inside jit (vmap over examples), no host round trip.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["augment"]


def _augment_one(key: jax.Array, img: jax.Array, pad: int, flip: bool) -> jax.Array:
    h, w, c = img.shape
    k_crop, k_flip = jax.random.split(key)
    if pad > 0:
        dy, dx = jax.random.randint(k_crop, (2,), 0, 2 * pad + 1)
        padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        img = lax.dynamic_slice(padded, (dy, dx, jnp.zeros_like(dy)), (h, w, c))
    if flip:
        img = jnp.where(jax.random.bernoulli(k_flip), img[:, ::-1, :], img)
    return img


@functools.partial(jax.jit, static_argnames=("pad", "flip"))
def augment(key: jax.Array, x: jax.Array, pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop (zero padding ``pad``) and horizontal flip of each image in ``x``.

    Args:
      key: a PRNG key; the same key and input always give the same output.
      x: images [N, H, W, C] (any dtype; usually float32 in [0, 1]).
      pad: zero padding on each side before cropping back to H x W (0 disables cropping).
      flip: mirror each example left-right with probability 1/2.

    Returns:
      An array of the same shape and dtype as ``x``.
    """
    if x.ndim != 4:
        raise ValueError(f"augment expects images [N, H, W, C], got shape {x.shape}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda k, im: _augment_one(k, im, pad, bool(flip)))(keys, x)
