"""HGD: the high-level-representation guided denoiser (Liao et al., "Defense against adversarial
attacks using high-level representation guided denoiser", CVPR 2018) as Schwartz & Ditzler use it
(their feature guided denoiser, FGD, in front of the HLDR VGG).

* :class:`Denoiser` -- the U-Net-like denoising autoencoder D: an encoder of five stages (the first
  two 3x3 convs at full resolution, each later stage a stride-2 3x3 conv then two 3x3 convs), a
  decoder of three stages (concatenate the skip, a stride-2 3x3 transposed conv, two 3x3 convs), a
  last stage at full resolution (concatenate the first skip, two 3x3 convs) and a 1x1 conv to the
  image's channels. Each conv is followed by batch norm and ReLU (Liao et al.'s Conv-BN-ReLU; the
  released code, dmschwar/robust-ldr ``HLRGD_VGG_16.py``, has the same layers and widths
  64-128-256-256-256 / 256-256-128-64 but orders Conv-ReLU-BN and puts a ReLU on the output, which
  makes D >= 0; the parameter count is the same either way). Input sides must be divisible by 16.
* :class:`HGDDefended` -- the ONE defended module: ``target(clip(x - D(x)))``. Every attack and the
  evaluator take it unchanged (``model.apply(variables, x, train=False) -> logits``), so it is
  attacked white-box through the denoiser. The target always runs in eval mode (frozen batch norm);
  ``train=True`` only puts the denoiser's batch norm in training mode. The denoised image is
  clipped to [0, 1] (``clip=True``; Liao et al. do not clip; our models take pixels in [0, 1]).

Parameters: with the paper's VGG on 32x32x1 Fashion-MNIST the paper counts 26,028,363 (">11 million"
in the denoiser). That number is exactly the released Keras model's trainable parameters (kernels,
biases and BN gamma/beta; the BN moving statistics excluded) of denoiser + VGG. Ours
(:func:`advjax.models.param_count`, the ``params`` collection) is 26,023,115, 5,248 (0.02 %) fewer:
our VGG convs have no bias before batch norm (13 convs, 4,224 biases, redundant with BN's beta) and
the paper's VGG has no BN after the dense-512 layer (the code's has: 1,024). The denoiser alone
matches the code's 11,037,569 trainable parameters exactly (1 input channel).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import ops

__all__ = ["Denoiser", "HGDDefended", "hgd_defended", "numpy_init"]

ENCODER_WIDTHS = (64, 128, 256, 256, 256)
DECODER_WIDTHS = (256, 256, 128, 64)


class Denoiser(nn.Module):
    """D(x): the estimated adversarial noise (same shape as x); see the module docstring."""
    channels: int = 1
    encoder_widths: Sequence[int] = ENCODER_WIDTHS
    decoder_widths: Sequence[int] = DECODER_WIDTHS
    width_factor: float = 1.0
    dtype: Any = jnp.float32
    # stock flax conv / BN by default: measured on the 2-core CPU (eighth width, batch 32, HGD step) 18 ms per
    # sample and 49 s compile, against 35 ms and 87 s with advjax's custom-VJP conv (same session, loaded machine)
    fast_conv: bool = False

    def _w(self, w):
        return max(1, int(round(w * self.width_factor)))

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[-1] != self.channels:
            raise ValueError(f"Denoiser: input has {x.shape[-1]} channels, the denoiser was built for {self.channels}")
        if len(self.encoder_widths) != 5 or len(self.decoder_widths) != 4:
            raise ValueError("Denoiser: encoder_widths needs 5 entries and decoder_widths 4")
        for side in x.shape[-3:-1]:
            if side % 16:
                raise ValueError(f"Denoiser: image sides must be divisible by 16 (four stride-2 stages), got "
                                 f"{tuple(x.shape[-3:-1])}; pad the images (e.g. Fashion-MNIST 28 -> 32)")

        def cbr(h, width, stride=1, transpose=False, name=None):
            if transpose:
                h = nn.ConvTranspose(width, (3, 3), strides=(stride, stride), padding="SAME", dtype=self.dtype,
                                     name=name)(h)
            else:
                h = ops.Conv(width, 3, strides=stride, padding="SAME", dtype=self.dtype, fast=self.fast_conv, name=name)(h)
            h = ops.batch_norm(train, self.dtype, name=None if name is None else name + "_bn", fast=self.fast_conv)(h)
            return nn.relu(h)

        e = [self._w(w) for w in self.encoder_widths]
        d = [self._w(w) for w in self.decoder_widths]
        h = x.astype(self.dtype)
        h = cbr(h, e[0], name="enc0_conv0")
        h = cbr(h, e[0], name="enc0_conv1")
        skips = [h]
        for s in range(1, 5):
            h = cbr(h, e[s], stride=2, name=f"enc{s}_conv0")
            h = cbr(h, e[s], name=f"enc{s}_conv1")
            h = cbr(h, e[s], name=f"enc{s}_conv2")
            skips.append(h)
        # the deepest map is brought to the next skip's size by nearest upsampling (as the code)
        n, hh, ww, c = h.shape
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        for s, skip in zip(range(3), (skips[3], skips[2], skips[1])):
            h = jnp.concatenate([h, skip], axis=-1)
            h = cbr(h, d[s], stride=2, transpose=True, name=f"dec{s}_up")
            h = cbr(h, d[s], name=f"dec{s}_conv0")
            h = cbr(h, d[s], name=f"dec{s}_conv1")
        h = jnp.concatenate([h, skips[0]], axis=-1)
        h = cbr(h, d[3], name="dec3_conv0")
        h = cbr(h, d[3], name="dec3_conv1")
        out = ops.Conv(self.channels, 1, dtype=self.dtype, fast=self.fast_conv, name="out")(h)
        return out.astype(jnp.float32)


class HGDDefended(nn.Module):
    """``target(clip(x - D(x)))``: the HGD-defended classifier (one flax module, params
    ``{"denoiser": ..., "target": ...}``)."""
    denoiser: nn.Module
    target: nn.Module
    clip: bool = True

    @property
    def input_shape(self):
        return tuple(self.target.input_shape)

    @property
    def num_classes(self):
        return self.target.num_classes

    def denoise(self, x, train: bool = False):
        x_hat = x - self.denoiser(x, train=train)
        return jnp.clip(x_hat, 0.0, 1.0) if self.clip else x_hat

    def __call__(self, x, train: bool = False):
        ops.check_input(x, self.input_shape, name="HGDDefended")
        return self.target(self.denoise(x, train=train), train=False)


def hgd_defended(target: nn.Module, *, width_factor: float = 1.0, clip: bool = True, **denoiser_kw) -> HGDDefended:
    """The HGD-defended ``target``: a :class:`Denoiser` for its input channels in front of it."""
    shape = getattr(target, "input_shape", None)
    if shape is None:
        raise ValueError("hgd_defended: the target model needs an input_shape field")
    den = Denoiser(channels=int(shape[-1]), width_factor=width_factor, **denoiser_kw)
    return HGDDefended(denoiser=den, target=target, clip=clip)


def numpy_init(module: nn.Module, seed: int, input_shape, batch_size: int = 1):
    """Variables of ``module`` with the shapes of ``module.init`` (from ``jax.eval_shape``: nothing is
    compiled) filled on the host: kernels LeCun-normal N(0, 1 / fan_in) (flax's default without the
    truncation), biases 0, batch-norm scale 1 / bias 0 / mean 0 / var 1, other parameters 0.
    Compiling flax's initializers for the denoiser's ~50 layers took minutes on the 2-core CPU."""
    import jax
    import numpy as np

    shapes = jax.eval_shape(lambda k: module.init(k, jnp.zeros((batch_size, *tuple(input_shape)), jnp.float32),
                                                  train=False), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        names = [getattr(p, "key", "") for p in path]
        last, shape = names[-1], tuple(leaf.shape)
        if last == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            return (rng.standard_normal(shape) / np.sqrt(max(fan_in, 1))).astype(leaf.dtype)
        if last in ("scale", "var"):
            return np.ones(shape, leaf.dtype)
        return np.zeros(shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, dict(shapes))
