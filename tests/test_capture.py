"""Users' own models: the loss is exactly the model's, and every proof is sound, or it is refused with a reason.

A zoo of the ways people write models (torchvision-style residual blocks, functional calls, modules used twice,
subclasses with their own forward, in-place operations, tied weights, buffers, hooks, LayerNorm, attention), each
checked two ways against torch itself in float64: the problem's loss and gradient equal the module's own
``forward`` and torch's loss (the parameters loaded with ``vector_to_parameters``, nothing of the project's), and
a proof never claims a level below the loss seen on a dense float64 grid of the segment; where the bound is
offered, it proves a level a little above that maximum.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import landscape
from landscape.paths.proof import prove_below

N = 16  # samples


# ---------------------------------------------------------------- the zoo
class Scaled(nn.Linear):
    """A Linear whose forward scales its output (matched by isinstance, not by what it computes)."""

    def forward(self, x):
        return 2.0 * super().forward(x)


class HalvedSequential(nn.Sequential):
    def forward(self, x):
        return 0.5 * super().forward(x)


class AddAlpha(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.add(self.a(x), self.b(x), alpha=-1)
        h = torch.relu(h).add(self.b(x), alpha=0.5)
        return self.c(torch.sub(h, self.a(x), alpha=2.0))


class BatchScaled(nn.Module):
    def __init__(self, use_shape: bool = False):
        super().__init__()
        self.fc, self.use_shape = nn.Linear(4, 3), use_shape

    def forward(self, x):
        return self.fc(x) * 4 / (x.shape[0] if self.use_shape else x.size(0))


class VGGish(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(3 * 3 * 3, 8), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(8, 3))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = F.relu(self.l1(x))
        h = F.gelu(self.l2(h)) + F.softplus(self.l2(h), beta=2.0)
        h = F.leaky_relu(self.l3(h), 0.1) + torch.tanh(h)
        return self.l4(torch.sigmoid(h))


class InPlaceAliased(nn.Module):
    """``F.relu(h, inplace=True)`` while ``h`` is used again: the module computes 2·relu(h)."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc(x)
        y = F.relu(h, inplace=True)
        return self.out(y + h)


class IAddAliased(nn.Module):
    """``h += 1`` on a value also kept as ``skip``: torch.fx records ``h + 1``, the module adds 1 to both."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.fc(x)
        skip = h
        h += 1.0
        return self.out(torch.relu(h + skip))


class TiedModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0, self.fc1, self.head = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.fc2 = nn.Linear(5, 5)
        self.fc2.weight = self.fc1.weight  # one parameter, two layers

    def forward(self, x):
        h = torch.relu(self.fc0(x))
        h = torch.relu(self.fc1(h))
        return self.head(torch.relu(self.fc2(h)) + F.linear(h, self.fc1.weight))


class Buffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-0.5, 0.5, 4))
        self.register_buffer("inv_std", torch.linspace(0.5, 2.0, 4))
        self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 3)
        self.gamma, self.beta = nn.Parameter(torch.ones(6)), nn.Parameter(torch.zeros(6))

    def forward(self, x):
        h = self.fc((x - self.mean) * self.inv_std)
        return self.out(torch.relu(h * self.gamma + self.beta))


class Normed(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.out = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.fc(x))))


class Attention(nn.Module):
    """One head of self-attention over 3 tokens of 4 features, mean-pooled."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        t = x.view(x.size(0), 3, 4)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(-2, -1) / 2.0, dim=-1)
        return self.out((a @ self.v(t)).mean(1))


def hooked_mlp():
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    m[0].register_forward_hook(lambda module, inputs, out: out * 3.0)
    return m


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, as written there: one ReLU module called twice, an optional downsample."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: ``self.relu`` called three times."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 2, 1, bias=False), nn.BatchNorm2d(planes * 2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, planes=(3, 4)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, planes[0], 3, padding=1, bias=False), nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        expansion = 2 if block is Bottleneck else 1
        inplanes, layers = planes[0], []
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != p * expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, p * expansion, 1, stride, bias=False),
                                     nn.BatchNorm2d(p * expansion))
            layers.append(block(inplanes, p, stride, down))
            inplanes = p * expansion
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, 3)
        for m in self.modules():  # frozen statistics that are not the identity
            if isinstance(m, nn.BatchNorm2d):
                g = torch.Generator().manual_seed(m.num_features)
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class Context(nn.Module):
    """GCNet-style: a per-channel context [N, C, 1, 1] added to a feature map, then a padded 3×3 conv."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.ctx = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3))
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        h = self.conv1(x)
        c = self.ctx(h.mean((2, 3)))
        h = h + c.view(c.size(0), 3, 1, 1)
        return self.fc(torch.relu(self.conv2(h)).flatten(1))


class Broadcasts(nn.Module):
    """A per-sample gate [N, 1] added to features, a learned offset widening [N, 1] to [N, 4], a broadcast mean."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.out = nn.Linear(4, 1), nn.Linear(4, 1), nn.Linear(4, 6), nn.Linear(4, 3)
        self.offset = nn.Parameter(torch.linspace(-1, 1, 4))

    def forward(self, x):
        h = x + self.a(x)
        h = torch.relu(self.b(h) + self.offset) + torch.relu(self.c(h)).mean(1, keepdim=True)
        return self.out(h)


class KeywordsAndPool(nn.Module):
    """Layers called with their input by keyword; MaxPool1d over the features of an [N, 8] value."""

    def __init__(self):
        super().__init__()
        self.fc, self.pool, self.out = nn.Linear(4, 8), nn.MaxPool1d(2), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(input=self.pool(torch.relu(self.fc(input=x))))


class NegativeDivisor(nn.Module):
    """Average pooling with a negative ``divisor_override``: its weights are negative, not an average."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.AvgPool2d(2, divisor_override=-1), \
            nn.Linear(18, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x) + 5.0)).flatten(1))


class AugmentedAlias(nn.Module):
    """``h += v`` while ``out`` holds the same tensor: forward returns the changed h, the trace a new value."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        h = self.fc1(x)
        out = h
        h += torch.relu(self.fc2(x) - 1.0)
        return out


class IdentityInPlace(nn.Module):
    """An in-place ReLU reaching its input through ``nn.Identity``, which returns the input itself."""

    def __init__(self):
        super().__init__()
        self.fc1, self.proj, self.act, self.fc2 = nn.Linear(4, 3), nn.Identity(), nn.ReLU(inplace=True), \
            nn.Linear(3, 3)

    def forward(self, x):
        h = self.fc1(x) + 1.0
        return self.fc2(self.act(self.proj(h))) + h


class IntegerDivisor(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)
        self.register_buffer("k", torch.tensor(49))

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x))) * 30.0 / self.k


class Concatenated(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.w2 = nn.Parameter(torch.randn(2, 4)), nn.Parameter(torch.randn(1, 4))

    def forward(self, x):
        return F.linear(x, torch.cat([self.w1, self.w2], 0))


def reused_relu():
    act = nn.ReLU()
    return nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 6), act, nn.Linear(6, 3))


#: name -> (builder, input shape, bound expected: True, or a phrase of the reason it is refused)
ZOO = {
    "reused_relu": (reused_relu, (4,), True),
    "subclass_linear": (lambda: nn.Sequential(Scaled(4, 6), nn.ReLU(), nn.Linear(6, 3)), (4,), True),
    "subclass_sequential": (lambda: HalvedSequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), (4,), True),
    "add_alpha": (AddAlpha, (4,), True),
    "batch_size": (BatchScaled, (4,), "batch size"),
    "batch_shape": (lambda: BatchScaled(use_shape=True), (4,), "batch size"),
    "vgg_view": (VGGish, (1, 6, 6), True),
    "functional": (Functional, (4,), True),
    "inplace_aliased": (InPlaceAliased, (4,), "in-place"),
    "iadd_aliased": (IAddAliased, (4,), "in-place operator"),
    "dropout_identity": (lambda: nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.ReLU(inplace=True),
                                               nn.Identity(), nn.Linear(6, 3)), (4,), True),
    "tied": (TiedModule, (4,), True),
    "buffers": (Buffers, (4,), True),
    "layernorm": (Normed, (4,), True),
    "attention": (Attention, (12,), True),
    "hooked": (hooked_mlp, (4,), "hook"),
    "context_broadcast": (Context, (1, 4, 4), True),
    "broadcasts": (Broadcasts, (4,), True),
    "keywords_and_pool": (KeywordsAndPool, (4,), True),
    "negative_divisor": (NegativeDivisor, (1, 6, 6), "divisor_override"),
    "augmented_alias": (AugmentedAlias, (4,), "in-place operator"),
    "identity_in_place": (IdentityInPlace, (4,), "in-place"),
    "integer_divisor": (IntegerDivisor, (4,), True),
    "concatenated_parameters": (Concatenated, (4,), "concatenation"),
    "basic_block_resnet": (lambda: ResNet(BasicBlock), (1, 6, 6), True),
    "bottleneck_resnet": (lambda: ResNet(Bottleneck, (2, 3)), (1, 6, 6), True),
}


def data(shape, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, *shape, generator=g), torch.randint(0, classes, (N,), generator=g)


def build(name, bn="frozen"):
    maker, shape, _ = ZOO[name]
    model = maker()
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    problem = landscape.from_module(model, data(shape), "cross_entropy", bn=bn if has_bn else None)
    return model, problem


def torch_loss(model, theta, x, y, *, grad=False, recompute=False):
    """The loss as torch computes it: the module's own call, float64, parameters by ``vector_to_parameters``
    (recomputed BatchNorm: reset statistics, one training-mode pass with ``momentum=None``, then evaluation)."""
    m = copy.deepcopy(model).double()
    t = theta.detach().double().clone().requires_grad_(grad)
    named = list(m.named_parameters())
    with torch.no_grad():
        nn.utils.vector_to_parameters(t.detach(), [p for _, p in named])
        if recompute:
            norms = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
            for b in norms:
                b.reset_running_stats()
                b.momentum = None
                b.train()
            m(x.double())
    m.eval()
    with torch.set_grad_enabled(grad):
        params = {n: v.view_as(p) for (n, p), v in zip(named, t.split([p.numel() for _, p in named]))}
        value = F.cross_entropy(torch.func.functional_call(m, params, (x.double(),)), y)
    return (value.item(), torch.autograd.grad(value, t)[0]) if grad else value.item()


def points(problem, k=2, seed=1):
    return problem.init(torch.Generator().manual_seed(seed), n=k, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_the_loss_and_gradient_are_the_modules_own(name):
    model, problem = build(name)
    x, y = problem.data("train")
    thetas = points(problem, 3)
    loss, grad = problem.loss_and_grad(thetas)
    for i, theta in enumerate(thetas):
        value, g = torch_loss(model, theta, x, y, grad=True)
        assert float(problem.loss(theta)) == pytest.approx(value, rel=1e-12, abs=1e-14)
        assert float(loss[i]) == pytest.approx(value, rel=1e-12, abs=1e-14)
        assert torch.allclose(grad[i], g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_proof_is_sound_or_refused_with_its_reason(name):
    model, problem = build(name)
    x, y = problem.data("train")
    a, b = points(problem, 2, seed=2)
    t = torch.linspace(0, 1, 401, dtype=torch.float64)
    dense = [torch_loss(model, a + s * (b - a), x, y) for s in t]
    peak = max(dense)
    expected = ZOO[name][2]
    proof = prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=400)
    assert proof.status != "proven"  # a level below a loss torch computes on the segment is never proven
    if expected is True:
        assert problem.bounds_unavailable() is None
        assert float(problem.segment_bounds(a[None], b[None])[0]) >= peak
        above = prove_below(problem, torch.stack([a, b]), peak + 0.05 * abs(peak) + 1e-3, budget=4000)
        assert above.status == "proven" and above.bound >= peak
    else:
        assert proof.status == "unsupported" and expected in proof.reason
        assert expected in problem.bounds_unavailable()


@pytest.mark.parametrize("name", ["basic_block_resnet", "bottleneck_resnet"])
def test_recomputed_batchnorm_is_what_torch_computes_after_one_training_pass(name):
    model, problem = build(name, bn="recompute")
    x, y = problem.data("train")
    for theta in points(problem, 2):
        assert float(problem.loss(theta)) == pytest.approx(torch_loss(model, theta, x, y, recompute=True), rel=1e-11)
    assert "frozen" in problem.bounds_unavailable()


def test_the_four_reported_cases_give_the_modules_loss():
    """Issue figures: a reused ReLU dropped, a subclass evaluated as its parent, alpha dropped, x.size(0) batched."""
    for name in ("reused_relu", "subclass_linear", "add_alpha", "batch_size"):
        model, problem = build(name)
        x, y = problem.data("train")
        theta = points(problem, 1)[0]
        assert float(problem.loss(theta)) == pytest.approx(torch_loss(model, theta, x, y), rel=1e-12)
    assert build("reused_relu")[1].evaluator == "bmm"  # still the fast path, now with both ReLUs
    assert build("subclass_linear")[1].evaluator == "vmap"


class Doubled(nn.Module):
    """``__call__`` overridden: the module's own call doubles what ``forward`` (all torch.fx reads) returns."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x))

    def __call__(self, x):
        return 2.0 * super().__call__(x)


def test_the_check_catches_what_reading_forward_does_not():
    model = Doubled()
    problem = landscape.from_module(model, data((4,)), "cross_entropy")
    assert any("bound graph is not the module's function" in note for note in problem.capture["notes"])
    assert "not the module's function" in problem.bounds_unavailable()
    x, y = problem.data("train")
    theta = points(problem, 1)[0]
    assert float(problem.loss(theta)) == pytest.approx(torch_loss(model, theta, x, y), rel=1e-12)


def test_a_wrong_fast_path_is_dropped_at_the_next_checked_points():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    problem = landscape.from_module(model, data((4,)), "cross_entropy")
    assert problem.evaluator == "bmm" and problem.capture["notes"] == []
    problem._mlp[0][2].clear()  # a plan that lost its ReLU: another network
    problem._by_hand = False
    report = problem.check_capture(points(problem, 1, seed=5))
    assert report["failed"] == {} and problem.evaluator == "vmap"
    assert "hand-batched MLP evaluator is not the module's function" in problem.capture["notes"][0]
    x, y = problem.data("train")
    theta = points(problem, 1, seed=6)[0]
    assert float(problem.loss(theta)) == pytest.approx(torch_loss(model, theta, x, y), rel=1e-12)


class Counting(nn.Module):
    """State kept between calls: every call scales the output differently."""

    def __init__(self):
        super().__init__()
        self.fc, self.calls = nn.Linear(4, 3), 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) * self.calls


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) + 0.1 * torch.rand(1)


@pytest.mark.parametrize("model, says", [(Counting, "not deterministic"), (Noisy, "cannot be evaluated")])
def test_a_forward_that_is_not_a_function_is_refused_with_one_line(model, says):
    with pytest.raises(landscape.LandscapeError, match=says) as err:
        landscape.from_module(model(), data((4,)), "cross_entropy")
    assert "\n" not in str(err.value)


def test_a_broadcast_context_keeps_its_bound_through_a_convolution():
    """A remainder left at the context's [N, C, 1, 1] shape reached only the centre tap of the next 3×3 conv:
    bounds fell below the loss at the segment's own end. Segments where only the context moves, centre taps 0."""
    model = Context()
    problem = landscape.from_module(model, data((1, 4, 4)), "cross_entropy")
    x, y = problem.data("train")
    g = torch.Generator().manual_seed(7)
    for _ in range(40):
        a = 2 * problem.init(g, n=1, dtype=torch.float64)[0]
        problem.layout.unflatten(a)["conv2.weight"][:, :, 1, 1] = 0  # views into a
        b = a.clone()
        for name, view in problem.layout.unflatten(b).items():
            if name.startswith("ctx.0."):
                view += 4 * torch.randn(view.shape, generator=g, dtype=torch.float64)
        assert not torch.equal(a, b) and float(problem.layout.unflatten(a)["conv2.weight"][0, 0, 1, 1]) == 0
        mid = (a + b) / 2
        bounds = problem.segment_bounds(torch.stack([a, a, mid]), torch.stack([b, mid, b]))
        losses = [torch_loss(model, t, x, y) for t in (a, mid, b)]
        assert float(bounds[0]) >= max(losses) and float(bounds[1]) >= max(losses[:2])
        assert float(bounds[2]) >= max(losses[1:])


def test_models_beyond_the_bound_get_the_modules_loss_or_one_line():
    x, y = data((4,))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            f = torch.relu(self.fc(x))
            return self.head(f), f

    model = Pair()
    problem = landscape.from_module(model, (x, y), lambda out, t: F.cross_entropy(out[0], t))
    theta = points(problem, 1)[0]
    m = copy.deepcopy(model).double()
    with torch.no_grad():
        nn.utils.vector_to_parameters(theta, m.parameters())
        assert float(problem.loss(theta)) == pytest.approx(float(F.cross_entropy(m(x.double())[0], y)), rel=1e-12)
    cases = [(Pair(), (x, y), "cross_entropy", "one tensor of outputs"),
             (nn.Sequential(nn.Linear(4, 3)), (x, torch.softmax(torch.randn(N, 3), 1)), "cross_entropy",
              "class indices"),
             (nn.Conv1d(2, 3, 1), (torch.randn(N, 2, 5), torch.randint(0, 3, (N, 5))), "cross_entropy",
              r"got outputs \(16, 3, 5\)")]

    class Listed(nn.Module):  # a parameter also kept in a list: functional_call would not replace it there
        def __init__(self):
            super().__init__()
            self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 3)
            self.cache = [self.out.weight]

        def forward(self, x):
            return F.linear(torch.relu(self.fc(x)), self.cache[0], self.out.bias)

    class TwiceNormed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn, self.out = nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)

        def forward(self, x):
            return self.out(torch.relu(self.bn(self.fc(torch.relu(self.bn(x))))))

    cases += [(nn.Linear(4, 1), (x, (y > 0).double()[:, None]), "exponential", "labels -1 and \\+1"),
              (Listed(), (x, y), "cross_entropy", "registered parameters"),
              (TwiceNormed(), (x, y), "cross_entropy", "called more than once"),
              (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 3)), (x, y),
               "cross_entropy", "track_running_stats=True")]
    for model, pair, loss, says in cases:
        with pytest.raises(landscape.LandscapeError, match=says) as err:
            landscape.from_module(model, pair, loss)
        assert "\n" not in str(err.value)
    frozen = landscape.from_module(TwiceNormed(), (x, y), "cross_entropy", bn="frozen")  # frozen: defined, proven
    assert frozen.capture["loss"] <= 1 and frozen.bounds_unavailable() is None
    wide = landscape.from_module(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
                                 (torch.randn(N, 5, 3), torch.randn(N, 5, 2)), "mse")
    assert wide.evaluator == "wide" and wide.capture["loss"] <= 1  # the hand-batched MLP takes (N, features)


def test_checked_points_are_checked_once():
    _, problem = build("reused_relu")
    pts = points(problem, 2, seed=7)
    first = problem.check_capture(pts)
    assert first["points"] == 4 and problem.check_capture(pts) == {}


# ---------------------------------------------------------------- random compositions
BLOCKS = ["linear_relu", "reused_act", "functional_gelu", "softplus", "residual_alpha", "scaled_subclass",
          "dropout", "identity", "tied", "buffer_shift", "learned_scale", "leaky", "square"]


class Composed(nn.Module):
    """A random chain of the zoo's pieces at width 5."""

    def __init__(self, blocks, loss):
        super().__init__()
        self.blocks = list(blocks)
        self.inp, self.out = nn.Linear(3, 5), nn.Linear(5, 1 if loss != "cross_entropy" else 3)
        self.act = nn.Tanh()
        self.layers = nn.ModuleList(Scaled(5, 5) if b == "scaled_subclass" else nn.Linear(5, 5) for b in blocks)
        self.drop = nn.Dropout(0.3)
        self.register_buffer("shift", torch.linspace(-0.3, 0.3, 5))
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 5))

    def forward(self, x):
        h = self.act(self.inp(x))
        for kind, layer in zip(self.blocks, self.layers):
            if kind == "linear_relu":
                h = torch.relu(layer(h))
            elif kind == "reused_act":
                h = self.act(layer(h))
            elif kind == "functional_gelu":
                h = F.gelu(layer(h))
            elif kind == "softplus":
                h = F.softplus(layer(h), beta=1.5)
            elif kind == "residual_alpha":
                h = torch.add(h, torch.relu(layer(h)), alpha=-0.5)
            elif kind == "scaled_subclass":
                h = torch.relu(layer(h))
            elif kind == "dropout":
                h = self.drop(torch.relu(layer(h)))
            elif kind == "identity":
                h = layer(h) + h
            elif kind == "tied":
                h = torch.relu(F.linear(h, layer.weight) + layer(h))  # one parameter used twice
            elif kind == "buffer_shift":
                h = torch.relu(layer(h) - self.shift)
            elif kind == "learned_scale":
                h = torch.relu(layer(h) * self.gamma)
            elif kind == "leaky":
                h = F.leaky_relu(layer(h), 0.2)
            elif kind == "square":
                h = 0.3 * layer(h) * layer(h)
        return self.out(h)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4), loss=st.sampled_from(
    ["cross_entropy", "mse", "l1", "exponential"]), seed=st.integers(0, 2**16))
def test_random_compositions_are_evaluated_exactly_and_proven_soundly(blocks, loss, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 3, generator=g)
    y = {"cross_entropy": torch.randint(0, 3, (12,), generator=g), "mse": torch.randn(12, 1, generator=g),
         "l1": torch.randn(12, 1, generator=g),
         "exponential": torch.randint(0, 2, (12, 1), generator=g).double() * 2 - 1}[loss]
    model = Composed(blocks, loss)
    problem = landscape.from_module(model, (x, y), loss)
    ref = {"cross_entropy": lambda o: F.cross_entropy(o, y), "mse": lambda o: F.mse_loss(o, y.double()),
           "l1": lambda o: F.l1_loss(o, y.double()), "exponential": lambda o: torch.exp(-y.double() * o).mean()}[loss]
    a, b = problem.init(g, n=2, dtype=torch.float64)

    def torch_value(theta):
        m = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            nn.utils.vector_to_parameters(theta, m.parameters())
            return float(ref(m(x.double())))

    dense = [torch_value(a + s * (b - a)) for s in torch.linspace(0, 1, 201, dtype=torch.float64)]
    assert float(problem.loss(a)) == pytest.approx(dense[0], rel=1e-12, abs=1e-14)
    assert float(problem.loss(b)) == pytest.approx(dense[-1], rel=1e-12, abs=1e-14)
    peak = max(dense)
    assert prove_below(problem, torch.stack([a, b]), peak * (1 - 1e-9), budget=200).status != "proven"
    bound = problem.segment_bounds(a[None], b[None])
    if bound is not None:
        assert float(bound[0]) >= peak or not math.isfinite(float(bound[0]))


def test_an_alignment_that_changes_the_function_is_refused():
    """A hook adding a per-unit offset: the trace sees a plain Linear, so unit permutations look like symmetries;
    the aligned point is checked against the module's outputs and refused in one line."""
    x, y = data((4,))
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    offset = torch.linspace(-1, 1, 6)
    model[0].register_forward_hook(lambda module, inputs, out: out + offset)
    problem = landscape.from_module(model, (x, y), "cross_entropy")
    a, b = points(problem, 2).float()
    with pytest.raises(landscape.LandscapeError, match="changed the network's function") as err:
        landscape.align(problem, a, b)
    assert "\n" not in str(err.value)
    plain = landscape.from_module(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), (x, y), "cross_entropy")
    aligned = landscape.align(plain, a, b)  # a true symmetry passes the same check
    assert float(plain.loss(aligned.theta.double())) == pytest.approx(float(plain.loss(b.double())), rel=1e-5)


def test_a_state_dict_brings_its_own_batchnorm_statistics(tmp_path):
    """A plain state_dict holds the running statistics its network was saved with: frozen BatchNorm evaluates
    with them (not the factory's fresh ones), and two files with different statistics refuse the frozen policy."""
    x, y = data((4,))

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))

    trained = []
    for k in range(2):
        m = net()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.3 * (k + 1) * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
            m[1].running_mean.copy_(torch.linspace(-1, 1, 6) * (k + 1))
            m[1].running_var.copy_(torch.linspace(0.5, 2, 6) * (k + 1))
        torch.save(m.state_dict(), tmp_path / f"m{k}.pt")
        trained.append(m.eval())
    same = trained[0].state_dict()
    same = {**trained[1].state_dict(), **{k: v for k, v in same.items() if "running" in k}}
    torch.save(same, tmp_path / "m1_same_stats.pt")
    problem, a, b = landscape.load_endpoints(tmp_path / "m0.pt", tmp_path / "m1_same_stats.pt",
                                             problem=landscape.from_module(net(), (x, y), "cross_entropy", bn="frozen"))
    with torch.no_grad():
        own = F.cross_entropy(trained[0].double()(x.double()), y).item()
    assert float(problem.loss(a.double())) == pytest.approx(own, rel=1e-6)
    with pytest.raises(landscape.LandscapeError, match="different BatchNorm running statistics") as err:
        landscape.load_endpoints(tmp_path / "m0.pt", tmp_path / "m1.pt",
                                 problem=landscape.from_module(net(), (x, y), "cross_entropy", bn="frozen"))
    assert "\n" not in str(err.value) and "--bn recompute" in str(err.value)
    problem, a, b = landscape.load_endpoints(tmp_path / "m0.pt", tmp_path / "m1.pt",
                                             problem=landscape.from_module(net(), (x, y), "cross_entropy"))
    assert problem.bn == "recompute"
    with pytest.raises(landscape.LandscapeError, match="different BatchNorm running statistics"):
        problem.bn = "frozen"


def test_rounding_amplified_by_an_ill_conditioned_model_is_accepted_with_a_note():
    """Unix timestamps (mean 1.7e9, spread 1 s) into a recomputed BatchNorm: torch's batch statistics and the
    problem's differ by float64 rounding times ~1e9; the model is a function, accepted, and the note says why."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([1.7e9 + torch.rand(64, 1, generator=g, dtype=torch.float64),
                   torch.randn(64, 3, generator=g, dtype=torch.float64)], 1)
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    problem = landscape.from_module(model, (x, torch.randint(0, 3, (64,), generator=g)), "cross_entropy")
    assert problem.capture["loss"] > 1  # beyond plain float64 rounding ...
    assert any("conditioning" in note for note in problem.capture["notes"])  # ... and said to be the model's


def test_same_function_sees_a_nan_or_an_infinity_where_there_was_none():
    """A NaN never compares greater than a tolerance: the check must see it (and a -inf logit kept in place is
    the same function)."""
    from torch import nn

    from landscape.problems.capture import same_function

    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    problem = landscape.from_module(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (x, x[:, :2]), "mse")
    b = problem.init(torch.Generator().manual_seed(1)).double()
    assert same_function(problem, b[None], b[None]) is None
    for bad in (float("nan"), float("inf")):
        moved = b.clone()
        moved[-1] = bad  # the last output's bias
        assert "NaN or infinite" in same_function(problem, b[None], moved[None])
    assert same_function(problem, moved[None], moved[None]) is None  # the same +inf in the same places


def test_a_module_shared_between_layers_is_captured_and_left_as_it_was():
    """ALBERT-style sharing (the same block at two places): torch's functional_call put the shared block's
    parameters back as plain tensors, and the differential check then refused the model; now the problem is the
    module's function and the module keeps its parameters."""
    from torch import nn

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            block = nn.Linear(4, 4)
            self.inp, self.blocks, self.out = nn.Linear(3, 4), nn.ModuleList([block, block]), nn.Linear(4, 2)

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            for block in self.blocks:
                h = h + torch.tanh(block(h))
            return self.out(h)

    model = Shared()
    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    problem = landscape.from_module(model, (x, torch.sin(x[:, :2])), "mse")
    assert problem.dim == sum(p.numel() for p in model.parameters())  # the shared block counted once
    theta = problem.init(torch.Generator().manual_seed(1), n=3, dtype=torch.float64)
    loss, grad = problem.loss_and_grad(theta)
    own = copy.deepcopy(model).double()
    for k in range(3):
        torch.nn.utils.vector_to_parameters(theta[k], own.parameters())
        torch.testing.assert_close(loss[k], torch.nn.functional.mse_loss(own(x.double()), torch.sin(x[:, :2]).double()))
    assert all(isinstance(p, nn.Parameter) for m in problem.module_.modules() for p in m._parameters.values())
    assert problem.module_.blocks[0] is problem.module_.blocks[1]


@pytest.mark.filterwarnings("ignore:.*weight_norm")
def test_a_tensor_kept_as_a_plain_attribute_is_left_readable_after_a_batched_call():
    """The hook-style ``torch.nn.utils.weight_norm`` keeps ``module.weight`` as a plain attribute set by a pre-hook:
    functional_call under vmap left a batched tensor there, so the next deep copy of the module failed (``connect``
    refused the pair: "forward and backward fail in float64 ... BatchedTensorImpl"). Now the problem is the module's
    function and the module can be copied after any number of calls."""
    from torch import nn

    from landscape.problems.capture import reference

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 16, 3))
    torch.nn.utils.weight_norm(model[0])
    g = torch.Generator().manual_seed(0)
    problem = landscape.from_module(model, (torch.randn(8, 1, 4, 4, generator=g), torch.randint(0, 3, (8,), generator=g)),
                                    "cross_entropy")
    theta = problem.init(torch.Generator().manual_seed(1), n=3, dtype=torch.float64)
    loss, grad = problem.loss_and_grad(theta)
    kept = vars(problem.module_[0])["weight"]
    assert not torch._C._functorch.is_batchedtensor(kept) and kept.grad_fn is None
    copy.deepcopy(problem.module_)
    ref, ref_grad, _ = reference(problem, theta)
    assert torch.allclose(loss, ref, rtol=1e-12) and torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)
