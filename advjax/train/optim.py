"""Optimizers and learning-rate schedules as optax chains, built from a small frozen config.

    tx, schedule = make_optimizer(OptimizerConfig(name="momentum", lr=0.1, schedule="piecewise",
                                                  milestones=(100, 150), weight_decay=5e-4),
                                  total_steps=200 * spe, steps_per_epoch=spe)

Chain order: gradient clipping (global norm) -> weight decay -> optimizer with the scheduled
learning rate. Weight decay is the coupled L2 form of PyTorch's ``weight_decay`` argument (added to
the gradient before momentum / Adam moments), which is what the papers' code uses; ``adamw`` is the
decoupled form (Loshchilov & Hutter 2019).

Schedules (all over optimizer steps):
* ``constant``;
* ``piecewise``: lr multiplied by ``decay`` at each epoch in ``milestones`` (Madry / TRADES / AWP);
* ``cyclic``: one cycle, linear 0 -> lr at ``cycle_peak`` of the run -> 0 (Wong et al. 2020,
  "Fast is better than free", Sec. 5.1; Smith & Topin 2019);
* ``cosine``: lr·½(1 + cos(π t / T)) after an optional linear warm-up.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import optax

__all__ = ["OptimizerConfig", "make_optimizer", "make_schedule", "OPTIMIZERS", "SCHEDULES"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "nadam")
SCHEDULES = ("constant", "piecewise", "cyclic", "cosine")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = "momentum"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    clip_norm: Optional[float] = None
    schedule: str = "constant"
    milestones: tuple = ()  # epochs (piecewise)
    decay: float = 0.1  # piecewise factor
    cycle_peak: float = 0.4  # cyclic: fraction of the run at which lr peaks
    warmup_steps: int = 0  # cosine
    b1: float = 0.9
    b2: float = 0.999
    adam_eps: float = 1e-8

    def validate(self) -> None:
        """Raise ValueError naming the bad setting (called before anything is compiled)."""
        if self.name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.schedule!r}; known schedules: {', '.join(SCHEDULES)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ValueError(f"learning rate lr={self.lr!r} is out of range (0, 10]")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum} is out of range [0, 1)")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm={self.clip_norm} must be > 0 (or None for no clipping)")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay={self.decay} is out of range (0, 1]")
        if not 0 < self.cycle_peak < 1:
            raise ValueError(f"cycle_peak={self.cycle_peak} is out of range (0, 1)")
        if any(m < 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones={self.milestones} must be non-negative and increasing (epochs)")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ValueError(f"Adam betas b1={self.b1}, b2={self.b2} must be in [0, 1)")


def make_schedule(cfg: OptimizerConfig, total_steps: int, steps_per_epoch: int = 1) -> optax.Schedule:
    cfg.validate()
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    lr = float(cfg.lr)
    if cfg.schedule == "constant":
        return optax.constant_schedule(lr)
    if cfg.schedule == "piecewise":
        bounds = {int(round(m * steps_per_epoch)): cfg.decay for m in cfg.milestones}
        return optax.piecewise_constant_schedule(lr, bounds)
    if cfg.schedule == "cyclic":
        peak = max(1, int(round(cfg.cycle_peak * total_steps)))
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, peak), optax.linear_schedule(lr, 0.0, max(1, total_steps - peak))],
            [peak])
    # cosine
    if cfg.warmup_steps:
        return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.warmup_steps, total_steps, end_value=0.0)
    return optax.cosine_decay_schedule(lr, total_steps)


def make_optimizer(cfg: OptimizerConfig, total_steps: int, steps_per_epoch: int = 1):
    """``(tx, schedule)``: the optax transformation and the lr schedule it uses (for logging)."""
    schedule = make_schedule(cfg, total_steps, steps_per_epoch)
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.weight_decay and cfg.name != "adamw":
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.name == "sgd":
        parts.append(optax.sgd(schedule))
    elif cfg.name in ("momentum", "nesterov"):
        parts.append(optax.sgd(schedule, momentum=cfg.momentum, nesterov=cfg.name == "nesterov"))
    elif cfg.name == "adam":
        parts.append(optax.adam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.adam_eps))
    elif cfg.name == "adamw":
        parts.append(optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.adam_eps, weight_decay=cfg.weight_decay))
    elif cfg.name == "nadam":
        parts.append(optax.nadam(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.adam_eps))
    return optax.chain(*parts), schedule
