"""Native (C++) kernels behind ``jax.ffi``, optional: see :mod:`advjax.native.onednn`."""
