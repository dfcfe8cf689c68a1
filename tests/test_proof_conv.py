"""Proofs beyond plain MLPs: bounds through traced conv nets, residual nets, frozen BatchNorm and pooling.

Ground truths: dense evaluation of the exact network over each piece (257 grid points and 64 random ones),
the relaxations checked pointwise on random inputs, and a conv net whose loss along a segment is a narrow
ReLU hat known in closed form.
"""

import math

import pytest
import torch
from torch import nn

import landscape
from landscape.paths.proof import prove_below
from landscape.problems import bounds
from landscape.problems.mlp import Square


class Residual(nn.Module):
    """Two pre-activation blocks: an identity skip, then a 1×1 projection skip; tanh, sigmoid and square inside."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.proj = nn.Conv2d(3, 4, 1, stride=2, bias=False)
        self.square = Square()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.conv1(torch.tanh(self.bn1(x)))
        out = torch.relu(self.bn2(x))
        x = self.conv2(torch.sigmoid(out)) - 0.5 * self.proj(out)
        x = nn.functional.adaptive_avg_pool2d(self.square(x), 1)
        return self.fc(torch.flatten(x, 1).mean(-1, keepdim=True) + torch.flatten(x, 1))


def _nets():
    return {
        "conv2d-bn-relu-maxpool-leaky": (lambda: nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2, padding=1),
            nn.Conv2d(3, 4, 2, dilation=2), nn.LeakyReLU(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4, 3)), (2, 6, 6), "cross_entropy"),
        "conv1d-gelu-avgpool": (lambda: nn.Sequential(
            nn.Conv1d(2, 4, 3, stride=2, groups=2), nn.GELU(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(8, 2)),
            (2, 9), "mse"),
        "conv3d-softplus-adaptive-maxpool": (lambda: nn.Sequential(
            nn.Conv3d(1, 2, 2), nn.BatchNorm3d(2), nn.Softplus(beta=2.0, threshold=1.0), nn.AdaptiveMaxPool3d(1),
            nn.Flatten(), nn.Linear(2, 2)), (1, 3, 3, 3), "l1"),
        "residual": (Residual, (1, 4, 4), "cross_entropy"),
    }


NETS = _nets()


def random_problem(name, *, seed=0, n=5):
    build, shape, loss = NETS[name]
    g = torch.Generator().manual_seed(seed)
    model = build()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):  # frozen statistics far from 0 and 1
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.3, 3.0, generator=g)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 3 if loss == "cross_entropy" else 2, (n,), generator=g) if loss == "cross_entropy" \
        else torch.randn(n, 2, generator=g)
    bn = "frozen" if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else None
    return landscape.from_module(model, (x, y), loss, bn=bn)


def piece_max(problem, a, b, *, generator):
    """The max loss over a piece from 257 grid points and 64 random ones (a lower bound of the true max)."""
    t = torch.cat([torch.linspace(0, 1, 257, dtype=torch.float64), torch.rand(64, generator=generator,
                                                                              dtype=torch.float64)])
    return problem.loss(a + t[:, None] * (b - a)).max()


@pytest.mark.parametrize("name", sorted(NETS))
def test_bounds_hold_on_random_pieces_of_random_segments(name):
    problem = random_problem(name)
    assert problem.bounds_unavailable() is None
    g = torch.Generator().manual_seed(2)
    thetas = problem.init(g, n=8).double() * 2
    a, b = thetas[:4], thetas[4:]
    t = torch.rand(4, 2, generator=g, dtype=torch.float64).sort(1).values
    starts, ends = a + t[:, :1] * (b - a), a + t[:, 1:] * (b - a)
    for pa, pb in ((a, b), (starts, ends)):
        found = problem.segment_bounds(pa, pb)
        dense = torch.stack([piece_max(problem, pa[k], pb[k], generator=g) for k in range(4)])
        assert found.dtype == torch.float64 and bool(torch.isfinite(found).all())
        assert bool((found >= dense).all()), (found, dense)


@pytest.mark.parametrize("name", sorted(NETS))
def test_bounds_tend_to_the_larger_endpoint_loss_as_pieces_shrink(name):
    problem = random_problem(name, seed=1)
    g = torch.Generator().manual_seed(3)
    thetas = problem.init(g, n=4).double() * 2
    gaps = []
    for frac in (1.0, 0.1, 0.01, 0.001):
        a, b = thetas[:2], thetas[:2] + frac * (thetas[2:] - thetas[:2])
        found = problem.segment_bounds(a, b)
        dense = torch.stack([piece_max(problem, a[k], b[k], generator=g) for k in range(2)])
        assert bool((found >= dense).all())
        gaps.append(float(((found - dense) / dense.abs().clamp_min(1e-12)).max()))
    assert all(later <= 0.5 * earlier + 1e-8 for earlier, later in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-2, gaps


RELAXED = {"relu": (torch.relu, bounds.leaky_relu(0.0)), "leaky": (lambda z: nn.functional.leaky_relu(z, 0.2),
                                                                  bounds.leaky_relu(0.2)),
           "tanh": (torch.tanh, bounds.RELAXATIONS[torch.tanh]), "sigmoid": (torch.sigmoid, bounds.RELAXATIONS[torch.sigmoid]),
           "gelu": (nn.functional.gelu, bounds.GELU), "square": (bounds.square, bounds.RELAXATIONS[bounds.square]),
           "softplus": (lambda z: nn.functional.softplus(z, 1.5, 2.0), bounds.softplus(1.5, 2.0))}


@pytest.mark.parametrize("name", sorted(RELAXED))
def test_each_activation_relaxation_contains_the_function_everywhere_on_its_piece(name):
    """σ(c + s·v + e) ∈ [c' + s·v' − r', c' + s·v' + r'] for every s ∈ [−1, 1] and |e| ≤ r, on 4,000 random units."""
    fn, relax = RELAXED[name]
    g = torch.Generator().manual_seed(4)
    zc = torch.randn(4000, generator=g, dtype=torch.float64) * 3
    zs = torch.randn(4000, generator=g, dtype=torch.float64) * torch.rand(4000, generator=g, dtype=torch.float64)
    zr = torch.rand(4000, generator=g, dtype=torch.float64) * 0.5
    c, v, r = relax(zc, zs, zr)
    for _ in range(50):
        s = torch.rand(4000, generator=g, dtype=torch.float64) * 2 - 1
        e = (torch.rand(4000, generator=g, dtype=torch.float64) * 2 - 1) * zr
        s[:2], e[:2] = torch.tensor([-1.0, 1.0]), zr[:2]  # the corners too
        gap = (fn(zc + s * zs + e) - (c + s * v)).abs() - r
        assert float(gap.max()) <= 1e-12


def conv_hat_problem(centre: float, width: float = 0.02, height: float = 9.0):
    """Conv1d(1→3, k=1) → frozen BatchNorm (identity statistics) → ReLU → Conv1d(3→1, k=1) → MaxPool1d(2) → Flatten,
    one input of length 2 (both positions 1), MSE to 0. Along the segment the loss is a hat of the given height
    and width (in t) centred at ``centre``, 0 elsewhere (the conv version of tests/test_proof.py's hat)."""
    delta = width / 2
    slope = math.sqrt(height) / delta
    model = nn.Sequential(nn.Conv1d(1, 3, 1), nn.BatchNorm1d(3), nn.ReLU(), nn.Conv1d(3, 1, 1), nn.MaxPool1d(2),
                          nn.Flatten())
    model[1].running_var.fill_(1 - model[1].eps)
    problem = landscape.from_module(model, (torch.ones(1, 1, 2), torch.zeros(1, 1)), "mse", bn="frozen")
    offsets = torch.tensor([0.0, delta, 2 * delta]) + centre - delta
    ends = []
    for t in (0.0, 1.0):
        params = {"0.weight": torch.zeros(3, 1, 1), "0.bias": slope * (t - offsets), "1.weight": torch.ones(3),
                  "1.bias": torch.zeros(3), "3.weight": torch.tensor([[[1.0], [-2.0], [1.0]]]), "3.bias": torch.zeros(1)}
        ends.append(problem.layout.flatten({k: params[k] for k in problem.layout.names}).double())
    return problem, ends[0], ends[1]


@pytest.mark.parametrize("centre", [0.07 + 0.17 * k for k in range(6)])
def test_a_narrow_hat_in_a_conv_net_is_never_proven_below_it(centre):
    problem, a, b = conv_hat_problem(centre)
    assert problem.loss(torch.stack([a, a + centre * (b - a), b])).tolist() == pytest.approx([0, 9, 0], abs=1e-3)
    proof = prove_below(problem, torch.stack([a, b]), 1.0)
    assert proof.status == "refuted" and proof.witness["loss"] > 1.0 and abs(proof.witness["t"] - centre) < 0.01
    assert prove_below(problem, torch.stack([a, b]), 9.5).status == "proven"
    path = landscape.connect(problem, a, b, method="linear", level=1.0)
    assert path.status == "not_found" and path.max_loss > 1.0  # by the grid or by the proof's witness


def test_unsupported_layers_and_recomputed_batchnorm_keep_the_dense_check_and_say_why():
    model = nn.Sequential(nn.Conv1d(1, 2, 1), nn.ELU(), nn.Flatten(), nn.Linear(2, 1))
    problem = landscape.from_module(model, (torch.ones(3, 1, 1), torch.zeros(3, 1)), "mse")
    thetas = problem.init(torch.Generator().manual_seed(0), n=2)
    assert "ELU" in problem.bounds_unavailable() and problem.segment_bounds(thetas[:1], thetas[1:]) is None
    path = landscape.connect(problem, thetas[0], thetas[1], method="linear", level=1e6)
    assert path.certificate == "grid" and path.info["proof"]["status"] == "unsupported"
    assert "ELU" in path.info["proof"]["reason"]
    cnn = landscape.make_problem("digits_cnn", width=1, depth=1, n_train=8)
    assert "frozen" in cnn.bounds_unavailable()  # the default policy recomputes the statistics
    cnn.bn = "frozen"
    assert cnn.bounds_unavailable() is None


def dense_max(problem, points, per_segment=2000):
    s = torch.linspace(0, 1, per_segment + 1, dtype=points.dtype)[:, None]
    return max(float(problem.loss(a + s * (b - a)).max()) for a, b in zip(points[:-1], points[1:]))


def test_a_digits_cnn_pair_is_proven_with_frozen_batchnorm_and_checked_densely_when_recomputed():
    """Two briefly trained minima of a tiny digits_cnn: the straight path is proven 5% above its dense max (2,001
    points) and refuted 5% below it; with statistics recomputed at every point the dense check stands, and says why."""
    problem = landscape.make_problem("digits_cnn", width=2, depth=1, n_train=32)
    problem.bn = "frozen"
    minima = landscape.train(problem, [0, 1], steps=150, lr=0.03, polish_steps=0)
    a, b = minima.thetas.double()
    peak = dense_max(problem, torch.stack([a, b]))
    path = landscape.connect(problem, a, b, method="linear", level=1.05 * peak)
    assert path.status == "connected" and path.certificate == "bound" and path.info["proof"]["status"] == "proven"
    assert peak <= path.bound <= 1.05 * peak
    below = landscape.connect(problem, a, b, method="linear", level=0.95 * peak)
    assert below.status == "not_found" and below.max_loss > 0.95 * peak
    problem.bn = "recompute"
    recomputed = landscape.connect(problem, a, b, method="linear", level=1e3)
    assert recomputed.status == "connected" and recomputed.certificate == "grid" and recomputed.spacing > 0
    assert recomputed.info["proof"]["status"] == "unsupported" and "frozen" in recomputed.info["proof"]["reason"]


class BatchMean(nn.Module):
    """Subtracts the mean over the batch: traced fine, refused while propagating (the check at capture does)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x):
        return self.fc(x - x.mean(0, keepdim=True))


def test_an_operation_refused_while_propagating_turns_the_proof_off_with_its_reason():
    problem = landscape.from_module(BatchMean(), (torch.randn(4, 2), torch.zeros(4, 1)), "mse")
    # the differential check at capture bounds a few pieces: the refusal is known before any proof
    assert problem.capture["bound"] == f"not compared: {problem.bounds_unavailable()}"
    thetas = problem.init(torch.Generator().manual_seed(0), n=2)
    proof = prove_below(problem, thetas, 1e6)
    assert proof.status == "unsupported" and "mean over the batch" in proof.reason
    assert "mean over the batch" in problem.bounds_unavailable()
