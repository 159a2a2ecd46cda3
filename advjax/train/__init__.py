"""Training engine: TrainState, optimizers and schedules, the loop, checkpoints, the device mesh.

Names are loaded lazily (``from advjax.train import fit`` imports the loop only then).
"""
import importlib

_EXPORTS = {
    "TrainState": "state", "create_train_state": "state", "apply_model": "state",
    "OptimizerConfig": "optim", "make_optimizer": "optim", "make_schedule": "optim",
    "TrainConfig": "config",
    "fit": "loop", "FitResult": "loop", "plot_curves": "loop",
    "save_checkpoint": "checkpoint", "restore_checkpoint": "checkpoint", "load_for_eval": "checkpoint",
    "CheckpointCorruptionWarning": "checkpoint",
    "make_mesh": "mesh", "shard_batch": "mesh", "replicate": "mesh", "initialize_distributed": "mesh",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"advjax.train.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'advjax.train' has no attribute {name!r}")
