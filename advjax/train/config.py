"""Run configuration: small frozen dataclasses, read from flags or a JSON/TOML file (data only).

``TrainConfig.from_file(path)`` parses ``.json`` or ``.toml`` (never Python); unknown keys are
errors listing the known ones; ``validate()`` checks ranges before anything is compiled.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import tomllib
from typing import Optional

from advjax.train.optim import OptimizerConfig

__all__ = ["TrainConfig", "OptimizerConfig", "config_diff"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # what to train
    model: str = "model_b"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    dataset: str = "mnist"
    data_dir: Optional[str] = None  # named: only this directory is searched (advjax.data.load)
    shuffle_seed: Optional[int] = None  # None: slices of class-sorted sources are stratified; int: permute first
    train_split: str = "train"
    test_split: str = "test"
    num_classes: Optional[int] = None  # None: from the dataset
    input_shape: Optional[tuple] = None  # None: from the dataset
    # how
    method: str = "pgd_at"
    method_kwargs: dict = dataclasses.field(default_factory=dict)
    eps: Optional[float] = None  # threat-model radius: the method's eps and the evaluation's
    epochs: int = 10
    batch_size: int = 128
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    augment: bool = False  # random crop (pad 4) + horizontal flip
    seed: int = 0
    # monitoring (clean + PGD accuracy on held-out train and test subsets after every epoch)
    eval_size: int = 1000
    eval_steps: int = 10
    eval_eps: Optional[float] = None  # None: eps (or the method's eps)
    eval_alpha: Optional[float] = None  # None: eval_eps / 4
    eval_batch_size: Optional[int] = None  # None: batch_size
    # bookkeeping
    ckpt_every: int = 0  # also checkpoint every N steps (0: only at epoch ends)
    keep: int = 2  # last checkpoints kept
    devices: Optional[int] = None  # None: all
    run_dir: Optional[str] = "runs/default"  # relative: to the current directory; None: in memory (no files)

    # -- parsing -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        if "optimizer" in d and isinstance(d["optimizer"], dict):
            oknown = {f.name for f in dataclasses.fields(OptimizerConfig)}
            bad = sorted(set(d["optimizer"]) - oknown)
            if bad:
                raise ValueError(f"unknown optimizer config key(s) {bad}; known keys: {sorted(oknown)}")
            o = dict(d["optimizer"])
            if "milestones" in o:
                o["milestones"] = tuple(o["milestones"])
            d["optimizer"] = OptimizerConfig(**o)
        if d.get("input_shape") is not None:
            d["input_shape"] = tuple(d["input_shape"])
        return cls(**d)

    @classmethod
    def from_file(cls, path) -> "TrainConfig":
        p = pathlib.Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} not found")
        text = p.read_text()
        try:
            if p.suffix == ".toml":
                data = tomllib.loads(text)
            elif p.suffix == ".json":
                data = json.loads(text)
            else:
                raise ValueError(f"config file {p}: use a .json or .toml file (configs are data, not code)")
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"config file {p} is not valid {p.suffix[1:].upper()}: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["optimizer"]["milestones"] = list(self.optimizer.milestones)
        if self.input_shape is not None:
            d["input_shape"] = list(self.input_shape)
        return d

    def replace(self, **kw) -> "TrainConfig":
        return dataclasses.replace(self, **kw)

    # -- checks and builders ---------------------------------------------------------------------
    def validate(self) -> None:
        """ValueError naming the bad setting; nothing is compiled or loaded."""
        def pos_int(name, v, zero=False):
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if zero else 1):
                raise ValueError(f"{name} must be an integer >= {0 if zero else 1}, got {v!r}")
        pos_int("epochs", self.epochs)
        pos_int("batch_size", self.batch_size)
        pos_int("eval_size", self.eval_size, zero=True)
        pos_int("eval_steps", self.eval_steps)
        pos_int("ckpt_every", self.ckpt_every, zero=True)
        pos_int("keep", self.keep)
        pos_int("seed", self.seed, zero=True)
        if self.eval_batch_size is not None:
            pos_int("eval_batch_size", self.eval_batch_size)
        if self.devices is not None:
            pos_int("devices", self.devices)
        bounded = self.dataset not in ("moons", "moon")
        for name in ("eps", "eval_eps"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (bounded and v > 1):
                raise ValueError(f"{name}={v!r} is out of range: pixels live in [0, 1], so eps must be in [0, 1] "
                                 f"(e.g. 8/255 = {8 / 255:.4f}, not 8)")
        if self.shuffle_seed is not None:
            pos_int("shuffle_seed", self.shuffle_seed, zero=True)
        if self.eval_alpha is not None and not self.eval_alpha > 0:
            raise ValueError(f"eval_alpha={self.eval_alpha!r} must be > 0")
        self.optimizer.validate()
        if self.optimizer.schedule == "piecewise" and not self.optimizer.milestones:
            raise ValueError("the piecewise lr schedule needs milestones (the epochs at which the lr is multiplied "
                             "by decay, e.g. --milestones 100,105): without them it would be a constant schedule")
        self.build_method()  # unknown method names / settings

    def build_method(self, dataset=None):
        """The method, its domain taken from ``dataset`` (an ``advjax.data.Dataset``; default: the
        config's dataset name, when advjax knows it; False: left "auto") unless ``method_kwargs``
        sets one, which must then agree with it."""
        from advjax.methods.base import get_method

        kw = dict(self.method_kwargs)
        if "domain" in kw and isinstance(kw["domain"], list):
            kw["domain"] = tuple(kw["domain"])
        if dataset is not False:
            kw["dataset"] = self.dataset if dataset is None else dataset
        if self.eps is not None and "eps" not in kw:
            try:
                return get_method(self.method, eps=self.eps, **kw)
            except ValueError as e:
                if "'eps'" not in str(e):
                    raise
        return get_method(self.method, **kw)

    def build_model(self):
        from advjax.models import get_model

        kw = dict(self.model_kwargs)
        if self.num_classes is not None:
            kw.setdefault("num_classes", self.num_classes)
        if self.input_shape is not None:
            kw.setdefault("input_shape", tuple(self.input_shape))
        return get_model(self.model, **kw)

    def resolved_eval_eps(self, method=None) -> float:
        if self.eval_eps is not None:
            return float(self.eval_eps)
        if self.eps is not None:
            return float(self.eps)
        m = method if method is not None else self.build_method()
        for obj in (m, getattr(m, "base", None)):
            if obj is not None and getattr(obj, "eps", None) is not None:
                return float(obj.eps)
        return 8 / 255


def config_diff(a: dict, b: dict, ignore=("run_dir", "devices")) -> list[str]:
    """Keys (dotted) whose values differ between two config dicts, compared as they read back from
    JSON (a tuple in ``model_kwargs`` equals the list config.json stores)."""
    a, b = json.loads(json.dumps(a, default=str)), json.loads(json.dumps(b, default=str))
    out = []
    for k in sorted(set(a) | set(b)):
        if k in ignore:
            continue
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{k}.{s}" for s in config_diff(va, vb, ignore=())]
        elif va != vb:
            out.append(k)
    return out
