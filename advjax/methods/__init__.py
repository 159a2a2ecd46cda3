"""Training methods: one file per method, each a frozen dataclass with
``step(state, batch, key) -> (state, metrics)``; ``get_method(name, **settings)`` builds one by name.
See ``advjax.methods.base`` for the protocol and ``advjax.methods.regularized`` for AT + regularizer."""
import importlib

_EXPORTS = {"Method": "base", "AdversarialMethod": "base", "get_method": "base", "list_methods": "base",
            "register_method": "base", "Regularized": "regularized", "EpsWarmup": "eps_warmup",
            "SmoothAT": "smooth_at", "SmoothBackward": "smooth_at", "LayerwiseAT": "layerwise",
            "SAT": "sat", "HLDR": "hldr", "FIMR": "fimr", "AGNT": "agnt", "HGD": "hgd"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"advjax.methods.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'advjax.methods' has no attribute {name!r}")
