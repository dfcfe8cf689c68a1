"""A user's own torchvision-style ResNet, trained by plain torch code, explored by ``landscape``.

The model is written as torchvision writes ``resnet18`` (``BasicBlock``: conv3×3–BN–ReLU–conv3×3–BN,
plus the input or a ``downsample`` projection conv1×1–BN, ReLU after the sum), shrunk for 1×8×8
digit images (scikit-learn's bundled digits: no download). ``build`` is the factory landscape calls:

    python user_resnet.py runs                       # two checkpoints, torch.save(model.state_dict())
    landscape connect runs/a.pt runs/b.pt --problem user_resnet:build
    landscape align runs/a.pt runs/b.pt --problem user_resnet:build -o runs/b_aligned.pt
    landscape render runs/a.pt runs/b_aligned.pt --problem user_resnet:build -o resnet.png

(``python user_resnet.py runs 30 4 128`` trains 30 steps at width 4 on 128 images; then pass
``--width 4 -p n_train=128`` to every command.)

(run from this folder, or put it on ``PYTHONPATH``). Nothing here imports landscape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock``: two 3×3 convolutions with BatchNorm, a skip, ReLU after the sum."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ``ResNet`` layout for 8×8 inputs: a 3×3 stem (no max pool), stages of ``BasicBlock`` at widths
    ``width·2^i`` (each later stage halves the resolution through a ``downsample`` projection), average pool, fc."""

    def __init__(self, layers=(1, 1), width: int = 8, num_classes: int = 10):
        super().__init__()
        self.inplanes = width
        self.conv1 = conv3x3(1, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.stages = nn.Sequential(*[self._make_layer(width * 2**i, n, stride=1 if i == 0 else 2)
                                      for i, n in enumerate(layers)])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.stages(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def digits(n_train: int = 512, seed: int = 0):
    """(x, y): ``n_train`` of scikit-learn's digits as 1×8×8 images in [0, 1], in an order drawn from ``seed``."""
    from sklearn.datasets import load_digits

    xs, ys = load_digits(return_X_y=True)
    order = torch.randperm(len(xs), generator=torch.Generator().manual_seed(seed))[:n_train]
    x = torch.tensor(xs, dtype=torch.float32)[order].reshape(-1, 1, 8, 8) / 16.0
    return x, torch.tensor(ys)[order]


def build(width: int = 8, n_train: int = 512):
    """The factory: ``(model, (x, y), loss)``; landscape turns it into a problem (``--problem user_resnet:build``)."""
    return ResNet((1, 1), width), digits(n_train), "cross_entropy"


def train(seed: int, *, width: int = 8, n_train: int = 512, steps: int = 200, lr: float = 0.05) -> nn.Module:
    """Ordinary torch training: full-batch SGD with momentum, BatchNorm in training mode, from seed ``seed``."""
    torch.manual_seed(seed)
    model, (x, y), _ = build(width, n_train)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def main(folder: str = "runs", steps: int = 200, width: int = 8, n_train: int = 512) -> list[Path]:
    """Train two seeds and save each with ``torch.save(model.state_dict(), ...)``."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, seed in (("a", 0), ("b", 1)):
        model = train(seed, width=width, n_train=n_train, steps=steps)
        torch.save(model.state_dict(), out / f"{name}.pt")
        files.append(out / f"{name}.pt")
    return files


if __name__ == "__main__":
    main(*sys.argv[1:2], *map(int, sys.argv[2:5]))  # python user_resnet.py FOLDER [STEPS [WIDTH [N_TRAIN]]]
