"""PyTorch peers of advjax's flax models, for the benchmarks only.

* :class:`TorchModelB`: the LSA paper's MNIST CNN exactly as ``advjax.models.ModelB`` (VALID 5x5
  convs 16-32-64, ReLU, 2x2 max pools after conv 2 and 3, dense 100, dense 10).
* :class:`TorchResNet` / :func:`torch_resnet18`: ResNet-18 with the CIFAR stem exactly as
  ``advjax.models.resnet18`` (3x3 stem, no max pool, basic blocks [2, 2, 2, 2], 1x1-conv + BN
  projection shortcuts, input normalization with the CIFAR-10 mean/std as its first layer).
* :class:`TorchSDIGenerator`: FGSM-SDI's generator, ``advjax.models.SDIGenerator(arch="paper")``
  (6-channel input, conv3x3 64 + BN + ReLU, a 64-channel residual block, conv3x3 + BN, tanh);
  only its cost matters (bench_sdi), so no weight copy.
* :func:`copy_flax_to_torch` copies a flax variables pytree (``{"params", "batch_stats"}``) into
  the torch module so both compute the same logits; :func:`max_logit_diff` checks it.

Layouts: flax convs are NHWC/HWIO, torch NCHW/OIHW (kernel transposed (3, 2, 0, 1)); flax dense
kernels are [in, out], torch weights [out, in]. Model B's first dense layer reads a flattened
NHWC feature map in flax and an NCHW one in torch, so its rows are permuted from (h, w, c) to
(c, h, w) order. Batch norm: flax momentum 0.9 = torch momentum 0.1, epsilon 1e-5 in both.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class TorchModelB(nn.Module):
    """advjax ModelB in PyTorch (NCHW input in [0, 1]; optional mean/std normalization)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, mean=None, std=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.conv3 = nn.Conv2d(32, 64, 5)
        self.fc1 = nn.Linear(3 * 3 * 64, 100)
        self.fc2 = nn.Linear(100, num_classes)
        self._set_norm(mean, std, in_channels)

    def _set_norm(self, mean, std, c):
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", None if std is None else torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, x):
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = F.relu(self.conv3(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TorchResNet(nn.Module):
    """CIFAR-stem ResNet with basic blocks and projection shortcuts (as advjax ``ResNet(shortcut="conv")``)."""

    def __init__(self, stage_sizes: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 128, 256, 512),
                 num_classes: int = 10, in_channels: int = 3,
                 mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616)):
        super().__init__()
        c = in_channels
        self.register_buffer("mean", None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("std", None if std is None else torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1))
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers = []
        in_planes = widths[0]
        for s, (n, w) in enumerate(zip(stage_sizes, widths)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, w, (1 if s == 0 else 2) if j == 0 else 1))
                in_planes = w
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(layers)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in self.layers:
            x = layer(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def torch_resnet18(num_classes: int = 10, **kw) -> TorchResNet:
    return TorchResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes=num_classes, **kw)


class TorchSDIGenerator(nn.Module):
    """FGSM-SDI's generator g(x, S_x) as ``SDIGenerator(arch="paper")``; NCHW, output in [-1, 1]."""

    def __init__(self, channels: int = 3, features: int = 64):
        super().__init__()
        conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False)
        self.conv_in, self.bn_in = conv(2 * channels, features), nn.BatchNorm2d(features)
        self.res_conv1, self.res_bn1 = conv(features, features), nn.BatchNorm2d(features)
        self.res_conv2, self.res_bn2 = conv(features, features), nn.BatchNorm2d(features)
        self.conv_out, self.bn_out = conv(features, channels), nn.BatchNorm2d(channels)

    def forward(self, x, s):
        h = F.relu(self.bn_in(self.conv_in(torch.cat([x, s], 1))))
        r = F.relu(self.res_bn1(self.res_conv1(h)))
        h = F.relu(h + self.res_bn2(self.res_conv2(r)))
        return torch.tanh(self.bn_out(self.conv_out(h)))


def torch_peer(name: str, flax_model) -> nn.Module:
    """The torch module matching an advjax model (``model_b`` or ``resnet18``), same fields."""
    if name == "model_b":
        return TorchModelB(flax_model.num_classes, flax_model.input_shape[-1], flax_model.mean, flax_model.std)
    if name == "resnet18":
        if tuple(flax_model.stage_sizes) != (2, 2, 2, 2) or flax_model.shortcut != "conv":
            raise ValueError("torch_peer: only ResNet-18 with projection shortcuts is mirrored")
        return torch_resnet18(flax_model.num_classes, in_channels=flax_model.input_shape[-1],
                              mean=flax_model.mean, std=flax_model.std)
    raise ValueError(f"no torch peer for model {name!r} (have: model_b, resnet18)")


# ------------------------------------------------------------------------------------------------
# weight copy
# ------------------------------------------------------------------------------------------------
def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))


def _conv(dst: nn.Conv2d, p: dict) -> None:
    k = np.asarray(p["kernel"])  # HWIO
    if tuple(dst.weight.shape) != (k.shape[3], k.shape[2], k.shape[0], k.shape[1]):
        raise ValueError(f"conv kernel shape {k.shape} does not match torch weight {tuple(dst.weight.shape)}")
    dst.weight.data.copy_(_t(k.transpose(3, 2, 0, 1)))
    if dst.bias is not None:
        dst.bias.data.copy_(_t(p["bias"]))
    elif "bias" in p:
        raise ValueError("flax conv has a bias, torch conv has none")


def _dense(dst: nn.Linear, p: dict, perm: np.ndarray | None = None) -> None:
    k = np.asarray(p["kernel"])  # [in, out]
    if perm is not None:
        k = k[perm]
    if tuple(dst.weight.shape) != (k.shape[1], k.shape[0]):
        raise ValueError(f"dense kernel shape {k.shape} does not match torch weight {tuple(dst.weight.shape)}")
    dst.weight.data.copy_(_t(k.T))
    dst.bias.data.copy_(_t(p["bias"]))


def _bn(dst: nn.BatchNorm2d, p: dict, s: dict) -> None:
    dst.weight.data.copy_(_t(p["scale"]))
    dst.bias.data.copy_(_t(p["bias"]))
    dst.running_mean.data.copy_(_t(s["mean"]))
    dst.running_var.data.copy_(_t(s["var"]))
    dst.eps = 1e-5
    dst.momentum = 0.1


def copy_flax_to_torch(variables, module: nn.Module) -> nn.Module:
    """Copy a flax variables pytree of advjax ModelB / ResNet-18 into ``module`` (in place)."""
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    with torch.no_grad():
        if isinstance(module, TorchModelB):
            for i, conv in enumerate((module.conv1, module.conv2, module.conv3)):
                _conv(conv, params[f"Conv_{i}"])
            # flax flattens (h, w, c); torch (c, h, w): row r_torch = c*9 + h*3 + w of the flax row
            h = w = 3
            c = 64
            perm = np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
            _dense(module.fc1, params["Dense_0"], perm)
            _dense(module.fc2, params["Dense_1"])
        elif isinstance(module, TorchResNet):
            _conv(module.conv1, params["conv1"])
            _bn(module.bn1, params["bn1"], stats["bn1"])
            for s, layer in enumerate(module.layers, start=1):
                for j, block in enumerate(layer):
                    fp, fs = params[f"layer{s}"][f"block{j}"], stats[f"layer{s}"][f"block{j}"]
                    _conv(block.conv1, fp["conv1"])
                    _bn(block.bn1, fp["bn1"], fs["bn1"])
                    _conv(block.conv2, fp["conv2"])
                    _bn(block.bn2, fp["bn2"], fs["bn2"])
                    if len(block.shortcut):
                        _conv(block.shortcut[0], fp["shortcut_conv"])
                        _bn(block.shortcut[1], fp["shortcut_bn"], fs["shortcut_bn"])
                    elif "shortcut_conv" in fp:
                        raise ValueError(f"flax block layer{s}/block{j} has a projection, torch block has none")
            _dense(module.fc, params["fc"])
        else:
            raise ValueError(f"copy_flax_to_torch: unsupported module {type(module).__name__}")
    return module


def nhwc_to_nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))


def max_logit_diff(apply_fn, variables, module: nn.Module, x_nhwc) -> float:
    """max |logits_flax - logits_torch| on ``x_nhwc`` (both in eval mode)."""
    lj = np.asarray(apply_fn(variables, x_nhwc))
    was_training = module.training
    module.eval()
    with torch.no_grad():
        lt = module(nhwc_to_nchw(x_nhwc)).numpy()
    module.train(was_training)
    return float(np.max(np.abs(lj - lt)))


def forward_flops(module: nn.Module, input_shape_nchw: Sequence[int]) -> float:
    """Multiply-add FLOPs (2 x MACs) of one forward pass of ONE example through the convs and
    dense layers (element-wise ops not counted: the matmul-equivalent work)."""
    total = [0.0]

    def conv_hook(m, inp, out):
        kh, kw = m.kernel_size
        total[0] += 2.0 * out.numel() / out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def lin_hook(m, inp, out):
        total[0] += 2.0 * m.in_features * m.out_features

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    was_training = module.training
    module.eval()
    with torch.no_grad():
        module(torch.zeros(1, *input_shape_nchw))
    module.train(was_training)
    for h in hooks:
        h.remove()
    return total[0]


if __name__ == "__main__":  # self-check: same logits after the copy
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax

    from advjax.models import get_model, init_variables, logits_fn

    for name, shape in (("model_b", (28, 28, 1)), ("resnet18", (32, 32, 3))):
        m = get_model(name)
        v = init_variables(m, jax.random.PRNGKey(0))
        if "batch_stats" in v:  # non-trivial running statistics, so the copy of them is checked
            v["batch_stats"] = jax.tree.map(lambda a: a + 0.1 * jax.random.uniform(jax.random.PRNGKey(1), a.shape),
                                            v["batch_stats"])
        t = copy_flax_to_torch(v, torch_peer(name, m))
        x = np.random.default_rng(0).uniform(size=(4, *shape)).astype(np.float32)
        d = max_logit_diff(logits_fn(m), v, t, x)
        print(f"{name}: max |logit diff| = {d:.2e}, forward GFLOP/image = "
              f"{forward_flops(t, (shape[2], shape[0], shape[1])) / 1e9:.4f}")
