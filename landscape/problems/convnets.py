"""Embedded convolutional problems on scikit-learn's bundled digits as 1×8×8 images (no download).

- :func:`digits_cnn` — conv–BatchNorm–ReLU blocks with max pooling and a linear head (a chain).
- :func:`digits_resnet` — a small pre-activation ResNet (He et al., ECCV 2016, "Identity Mappings in
  Deep Residual Networks"; the PreResNet of Garipov et al. 2018) with identity and projection skips.

Both have BatchNorm, so their loss is evaluated with the ``recompute`` policy by default: every
point θ normalizes with statistics recomputed at θ from the training split (Garipov et al. 2018).
"""

from __future__ import annotations

import torch
from torch import nn

from .._errors import LandscapeError
from .module import NetworkProblem
from .networks import digits_splits


def _check(width: int, depth: int, most: int):
    if not (isinstance(width, int) and width >= 1) or not (isinstance(depth, int) and 1 <= depth <= most):
        raise LandscapeError(f"width must be an integer >= 1 and depth one in [1, {most}], got width={width!r}, "
                             f"depth={depth!r}")


#: Pooling of :func:`digits_cnn` by name.
POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


def cnn(width: int = 8, depth: int = 2, in_channels: int = 1, size: int = 8, classes: int = 10,
        pool: str = "avg") -> nn.Sequential:
    """``depth`` blocks Conv3×3 (no bias) → BatchNorm → ReLU → 2×2 pooling, channels ``width·2^i``; Flatten → Linear."""
    if pool not in POOLS:
        raise LandscapeError(f"pool must be one of {sorted(POOLS)}, got {pool!r}")
    layers, c_in = [], in_channels
    for i in range(depth):
        c = width * 2**i
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), POOLS[pool](2)]
        c_in, size = c, size // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in * size * size, classes))


class PreActBlock(nn.Module):
    """BN → ReLU → Conv3×3 → BN → ReLU → Conv3×3, plus the input (identity) or a 1×1 projection of the
    pre-activated input when the width or the resolution changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x):
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreResNet(nn.Module):
    """Stem conv, two stages of ``depth`` pre-activation blocks (``width`` channels, then ``2·width`` at half the
    resolution), BN → ReLU → global average pooling → Linear."""

    def __init__(self, width: int = 8, depth: int = 1, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        blocks = [PreActBlock(width, width) for _ in range(depth)]
        blocks += [PreActBlock(width, 2 * width, stride=2)] + [PreActBlock(2 * width, 2 * width)
                                                                for _ in range(depth - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(2 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        out = self.blocks(self.stem(x))
        out = self.pool(torch.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))


def digits_cnn(width: int = 8, depth: int = 2, pool: str = "avg", test_fraction: float = 0.2,
               n_train: int | None = None, weight_decay: float = 0.0, data_seed: int = 0) -> NetworkProblem:
    """A CNN classifying the digits as 1×8×8 images: conv–BN–ReLU–pool blocks, a linear head, cross-entropy.

    Block i has ``width·2^i`` channels and halves the resolution (8 → 4 → 2 at depth 2). ``n_train``
    keeps the first n training images (all 1,438 when None); the split is drawn from ``data_seed``.
    ``pool="avg"`` (the default) or ``"max"``: with max pooling the digits' blank background makes
    ties inside pooling windows, where the loss has no gradient (measured at trained points: the
    directional derivative differs from ∇L·d by 30%), so minima cannot meet the stationarity criterion.
    """
    _check(width, depth, 3)
    params = dict(width=width, depth=depth, pool=pool, test_fraction=test_fraction, n_train=n_train,
                  weight_decay=weight_decay, data_seed=data_seed)
    return NetworkProblem("digits_cnn", params, cnn(width, depth, pool=pool),
                          digits_splits(test_fraction, data_seed, images=True, n_train=n_train), "cross_entropy",
                          weight_decay=weight_decay, summary="conv-BN-ReLU net on the digits as 8x8 images")


def digits_resnet(width: int = 8, depth: int = 1, test_fraction: float = 0.2, n_train: int | None = None,
                  weight_decay: float = 0.0, data_seed: int = 0) -> NetworkProblem:
    """A pre-activation ResNet classifying the digits as 1×8×8 images, cross-entropy.

    Stem conv to ``width`` channels; ``depth`` blocks at 8×8 with identity skips; a block to ``2·width``
    channels at 4×4 with a 1×1 projection skip, then ``depth − 1`` more with identity skips; BN → ReLU →
    average pooling → Linear (He et al., ECCV 2016). Units tied by the skips share one permutation
    (:func:`landscape.symmetry`).
    """
    _check(width, depth, 4)
    params = dict(width=width, depth=depth, test_fraction=test_fraction, n_train=n_train,
                  weight_decay=weight_decay, data_seed=data_seed)
    return NetworkProblem("digits_resnet", params, PreResNet(width, depth),
                          digits_splits(test_fraction, data_seed, images=True, n_train=n_train), "cross_entropy",
                          weight_decay=weight_decay, summary="pre-activation ResNet on the digits as 8x8 images")
