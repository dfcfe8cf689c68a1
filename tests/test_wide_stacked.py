"""The wide evaluator's stacked first layers (landscape.problems.wide_conv): a convolution of the shared data and the
per-channel layers after it run on the K networks' channels side by side. Ground truths: the module's own call in
float64 (``capture.reference``; with recomputed BatchNorm the generic evaluator's gradient), and torch's gradcheck
for the two autograd functions written out."""

import pytest
import torch
from torch import nn

import landscape
from landscape.problems.capture import reference
from landscape.problems.wide_ops import StackedProduct, Unstack


def _data(shape, n=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _equals_the_module(p, thetas):
    """``p``'s float64 loss and gradient at ``thetas`` against the module's own call (``capture.reference``); where that
    has no gradient, against functional_call under vmap (recomputed statistics as functions of θ)."""
    loss, grad = p.loss_and_grad(thetas)
    ref, ref_grad, _ = reference(p, thetas)
    if ref_grad is None:
        wide, p._wide = p._wide, None
        try:
            ref_grad = p.loss_and_grad(thetas)[1]
        finally:
            p._wide = wide
    assert ref_grad.abs().max() > 1e-3 and torch.allclose(loss, ref, rtol=1e-12, atol=1e-13)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))


def chained_cnn():
    """Two chains from convolutions of the data (a module called twice would not be chained): conv (bias, stride 2) →
    BatchNorm → ReLU(inplace) → AvgPool, and conv → Tanh → MaxPool(ceil_mode) → LeakyReLU, summed after."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                   nn.AvgPool2d(2))
            self.b = nn.Sequential(nn.Conv2d(2, 4, (3, 2), padding=(2, 0), bias=False), nn.Tanh(),
                                   nn.MaxPool2d(3, stride=3, ceil_mode=True), nn.LeakyReLU(0.1))
            self.head = nn.Linear(4 * 2 * 2 + 4 * 4 * 3, 3)

        def forward(self, x):
            return self.head(torch.cat([self.a(x).flatten(1), self.b(x).flatten(1)], 1))

    return Net()


@pytest.mark.parametrize("bn", ["frozen", "recompute"])
@pytest.mark.parametrize("k", [1, 5])
def test_stacked_chains_give_the_modules_loss_and_gradient(bn, k):
    torch.manual_seed(0)
    model = chained_cnn()
    model.a[1].running_mean.uniform_(-0.5, 0.5)
    model.a[1].running_var.uniform_(0.5, 2.0)
    p = landscape.from_module(model, _data((2, 8, 8)), "cross_entropy", bn=bn)
    assert p.evaluator == "wide" and p._wide.chains == {"a.0": ["a.1", "a.2", "a.3"], "b.0": ["b.1", "b.2", "b.3"]}
    thetas = p.init(torch.Generator().manual_seed(k), n=k, dtype=torch.float64)
    thetas = thetas + 0.3 * torch.randn(thetas.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _equals_the_module(p, thetas)
    assert p.evaluator == "wide"


@pytest.mark.parametrize("name", ["digits_cnn", "digits_resnet"])
def test_the_conv_problems_equal_their_module_in_float64(name):
    """The built-in conv nets (small, 40 images) with recomputed BatchNorm: loss and gradient of the module's own call
    (the statistics pass in training mode, then evaluation mode) to ~1e-12."""
    p = landscape.make_problem(name, width=2, n_train=40)
    thetas = p.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    loss, grad = p.loss_and_grad(thetas)
    ref = reference(p, thetas, grad=False)[0]
    wide, p._wide = p._wide, None
    ref_loss, ref_grad = p.loss_and_grad(thetas)
    p._wide = wide
    assert torch.allclose(loss, ref, rtol=1e-12) and torch.allclose(ref_loss, ref, rtol=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))


def test_the_written_out_gradients_pass_gradcheck():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(12, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: StackedProduct.apply(data, w, b), (weight, bias))
    x = torch.randn(3, 6, 2, 4, generator=g, dtype=torch.float64)
    for values in (x, x.contiguous(memory_format=torch.channels_last)):
        values = values.detach().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda v: Unstack.apply(v, 2), (values,))
        out = Unstack.apply(values, 2)  # network k's channel c is stacked channel k·C + c
        assert torch.equal(out[3 + 2], values[2, 3:6].detach())


def test_a_pooling_returning_indices_ends_no_chain_and_the_loss_is_the_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()
            self.pool, self.fc = nn.MaxPool2d(2, return_indices=True), nn.Linear(3 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(self.pool(self.relu(self.conv(x)))[0].flatten(1))

    p = landscape.from_module(Net(), _data((1, 8, 8)), "cross_entropy")
    assert p.evaluator == "wide" and p._wide.chains == {"conv": ["relu"]}
    thetas = p.init(torch.Generator().manual_seed(0), n=4, dtype=torch.float64)
    _equals_the_module(p, thetas)
    assert p.evaluator == "wide"


def pooled_cnn():
    """Activations before max pooling in the ways they commute with it and the ways they must not be moved: a
    torchvision-style stem (conv → BatchNorm → in-place ReLU → MaxPool(3, 2, 1)), ReLU6 → MaxPool(ceil_mode), Hardtanh
    → MaxPool; LeakyReLU → MaxPool (rounding can tie), an in-place ReLU whose input is read again, a ReLU called twice."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
            self.b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU6(), nn.MaxPool2d(3, ceil_mode=True))
            self.c = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Hardtanh(-0.5, 0.5), nn.MaxPool2d(2))
            self.d = nn.Sequential(nn.Conv2d(1, 2, 3), nn.LeakyReLU(0.01), nn.MaxPool2d(2))
            self.conv, self.relu, self.pool = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)
            self.conv2, self.reused, self.pool2 = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            self.head = nn.Linear(4 * 2 * 2 + 2 * 4 * 4 + 2 * 3 * 3 + 2 * 4 * 4 * 2, 3)

        def forward(self, x):
            h = self.conv(x)
            e = self.pool(self.relu(h)) + h[:, :, ::2, ::2]  # the in-place ReLU changed h: not moved
            f = self.pool2(self.reused(self.reused(self.conv2(x))))
            parts = [self.b(self.stem(x)), self.c(x), self.d(x), e, f]
            return self.head(torch.cat([t.flatten(1) for t in parts], 1))

    return Net()


def test_max_pooling_runs_before_the_activations_that_commute_with_it():
    """ReLU, ReLU6 and Hardtanh run after the max pooling that follows them (fewer values; the 1M-parameter CNN's
    gradient 1.34 -> 1.23 CPU s): the loss and gradient equal the module's in float64, and in float32 equal the plan
    that keeps the module's order to the last bit, on digits-like images whose flat background ties the pooling."""
    torch.manual_seed(0)
    model = pooled_cnn()
    model.stem[1].running_mean.uniform_(-0.5, 0.5)
    x, y = _data((1, 8, 8), n=12)
    x = torch.where(x > 0.3, x, torch.zeros(()))  # a flat background: ties inside pooling windows
    p = landscape.from_module(model, (x, y), "cross_entropy", bn="frozen")
    assert p.evaluator == "wide" and p._wide.pool_first == {"stem.2": "stem.3", "b.1": "b.2", "c.1": "c.2"}
    thetas = p.init(torch.Generator().manual_seed(3), n=3, dtype=torch.float64)
    _equals_the_module(p, thetas)
    _bitwise_as_in_the_modules_order(p, model, (x, y))


def _bitwise_as_in_the_modules_order(p, model, data):
    """``p``'s float32 loss and gradient equal, to the last bit, those of a plan that runs the module's layers in its own
    order (nothing rearranged), at K = 1 and 4."""
    from landscape.problems import wide_conv

    kept = wide_conv.pool_first, wide_conv.block_means
    wide_conv.pool_first = wide_conv.block_means = lambda *args: {}
    try:
        q = landscape.from_module(model, data, "cross_entropy", bn=p.bn)
    finally:
        wide_conv.pool_first, wide_conv.block_means = kept
    assert q.evaluator == "wide" and q._wide.pool_first == {} and q._wide.block_means == {}
    for k in (1, 4):
        t32 = p.init(torch.Generator().manual_seed(k), n=k)
        a, b = p.loss_and_grad(t32), q.loss_and_grad(t32)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def averaged_cnn():
    """Average pooling of blocks that tile the input, after a ReLU (in place, in a chain of the data's convolution;
    after BatchNorm in a later layer), without one, with a kernel of 3 (divisor 9); and average poolings that must run as
    they are: overlapping windows, padding, sizes the kernel does not divide (a fallback at run time)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                                   nn.ReLU(inplace=True), nn.AvgPool2d(2),
                                   nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2))
            self.b = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AvgPool2d(3))  # 6x6: blocks of 3
            self.c = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, stride=1))
            self.d = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2, padding=1))
            self.e = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.AvgPool2d(2))  # 7x7: not divisible
            self.f = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(3))  # 6x6: a ReLU and blocks of 3
            self.head = nn.Linear(4 * 2 * 2 + 2 * 2 * 2 + 2 * 7 * 7 + 2 * 5 * 5 + 2 * 3 * 3 + 2 * 2 * 2, 3)

        def forward(self, x):
            parts = (self.a, self.b, self.c, self.d, self.e, self.f)
            return self.head(torch.cat([m(x).flatten(1) for m in parts], 1))

    return Net()


@pytest.mark.parametrize("bn", ["frozen", "recompute"])
def test_average_pooling_of_blocks_takes_its_relu_in(bn):
    """Average pooling over blocks (kernel = stride, no padding) has its gradient written in one pass with the ReLU
    before it: the module's loss and gradient in float64, and to the last bit the float32 ones of the module's order."""
    torch.manual_seed(0)
    model = averaged_cnn()
    for layer in (model.a[1], model.a[5]):
        layer.running_mean.uniform_(-0.5, 0.5)
        layer.running_var.uniform_(0.5, 2.0)
    x, y = _data((1, 8, 8), n=12)
    p = landscape.from_module(model, (x, y), "cross_entropy", bn=bn)
    assert p.evaluator == "wide"
    assert p._wide.block_means == {"a.3": "a.2", "a.7": "a.6", "b.2": None, "e.2": "e.1", "f.2": "f.1"}
    thetas = p.init(torch.Generator().manual_seed(3), n=3, dtype=torch.float64)
    _equals_the_module(p, thetas)
    _bitwise_as_in_the_modules_order(p, model, (x, y))


@pytest.mark.parametrize("act", [nn.ReLU(inplace=True), nn.ReLU6(inplace=True), nn.Hardtanh(-0.3, 0.4)])
def test_pooling_moved_before_its_activation_allows_in_place_changes_after_it(act):
    """``h -= 0.1`` on a max pooling's output is legal in the module (max pooling's gradient does not read its output):
    the activation moved after the pooling runs out of place and its gradient reads its input, so the wide evaluator
    keeps the layout change and gives the module's gradient (torch's ReLU read its output: a RuntimeError)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act, self.pool, self.fc = act, nn.MaxPool2d(2), nn.Linear(4 * 16, 3)

        def forward(self, x):
            h = self.pool(self.act(self.c2(torch.tanh(self.c1(x)))))
            h -= 0.1
            return self.fc(h.flatten(1))

    torch.manual_seed(0)
    p = landscape.from_module(Net(), _data((1, 8, 8), n=12), "cross_entropy")
    assert p.evaluator == "wide" and p._wide.pool_first == {"act": "pool"} and not p.capture.get("notes")
    thetas = p.init(torch.Generator().manual_seed(2), n=3, dtype=torch.float64)
    _equals_the_module(p, thetas)


def test_an_output_changed_in_place_is_not_reused_by_the_loss_pass():
    """conv of the data → ReLU(inplace=True) → BatchNorm, recomputed statistics: the statistics pass's convolution
    output (kept for the loss pass, which runs that layer on the same data) is changed in place by the ReLU; the loss
    pass runs the layer again (its version counter moved) and the wide evaluator gives the module's gradient (it reused
    the changed output: autograd's RuntimeError, and the evaluator was dropped)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4 * 64, 3))
    p = landscape.from_module(model, _data((1, 8, 8), n=12), "cross_entropy")
    assert p.bn == "recompute" and p.evaluator == "wide" and not p.capture.get("notes")
    thetas = p.init(torch.Generator().manual_seed(2), n=3, dtype=torch.float64)
    _equals_the_module(p, thetas)


class InPlaceAfterChain(nn.Module):
    """conv of the data → BatchNorm (a chain), then an in-place op on its values (``F.relu(..., inplace=True)``,
    ``h.add_(1)``): legal for torch; the chain's values were a view made inside a custom Function, which torch refuses
    to change in place (the wide evaluator was dropped, 2.2x slower)."""

    def __init__(self, relu: bool):
        super().__init__()
        self.relu, self.c1, self.b1, self.fc = relu, nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 36, 3)

    def forward(self, x):
        h = self.b1(self.c1(x))
        h = torch.nn.functional.relu(h, inplace=True) if self.relu else h.add_(1.0)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("bn", ["frozen", "recompute"])
@pytest.mark.parametrize("relu", [True, False])
def test_an_in_place_change_after_a_chain_keeps_the_wide_evaluator(bn, relu):
    torch.manual_seed(0)
    p = landscape.from_module(InPlaceAfterChain(relu), _data((1, 6, 6), n=12), "cross_entropy", bn=bn)
    assert p.evaluator == "wide" and not p.capture.get("notes") and p._wide.chains == {"c1": ["b1"]}
    thetas = p.init(torch.Generator().manual_seed(1), n=3, dtype=torch.float64)
    _equals_the_module(p, thetas)
