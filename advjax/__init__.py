"""advjax: adversarial robustness in JAX/Flax.

Pixels live in [0, 1]; a model is a flax.linen Module whose first layer normalizes; an attack is a
pure function ``attack(apply_fn, variables, x, y, key) -> x_adv``; a training method is a pure step
``step(state, batch, key) -> (state, metrics)``. See DESIGN.md for the map.
"""

__version__ = "0.1.0"
