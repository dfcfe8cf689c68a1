"""The wide evaluator (landscape.problems.grouped) against the module's own call, float64.

Ground truths: the loss of a deep copy of the module holding θ, called as torch calls it (with recomputed
BatchNorm: statistics reset, one training-mode pass with momentum=None, then evaluation mode:
``capture.reference``), and the gradient of autograd through that call (frozen BatchNorm); with recomputed
statistics the gradient of ``functional_call`` under ``vmap`` (the generic evaluator, its own tests), since
torch updates running statistics outside autograd. K = 1, 3, 16; strides, paddings, dilations, groups,
rectangular kernels and images, biases, BatchNorm without affine parameters, BatchNorm1d after a linear layer.
"""

import pytest
import torch
from torch import nn

import landscape
from landscape.problems.capture import reference
from landscape.problems.grouped import wide_plan


def _data(shape, n=12, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def odd_cnn():
    """Stride 2 without padding, a 2×3 kernel with dilation, groups, biases, a BatchNorm without affine
    parameters, max and average pooling, on 7×5 images of 2 channels; BatchNorm1d after a linear layer."""
    return nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=0, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, (2, 3), padding=(1, 2), dilation=(1, 2), groups=2),
                         nn.BatchNorm2d(6, affine=False),
                         nn.Tanh(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(6 * 2 * 1, 5),
                         nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))


class Residual(nn.Module):
    """A skip around a conv–BN pair and a BatchNorm before the convolution (not taken into its weights)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        h = self.stem(x)
        h = h + self.conv(torch.relu(self.bn(h)))
        return self.fc(h.mean((2, 3)))


def _problem(model, data, bn, loss="cross_entropy"):
    p = landscape.from_module(model, data, loss, bn=bn)
    assert p.evaluator == "wide", p._wide_refused
    return p


def _vmap(p, thetas):
    wide, p._wide = p._wide, None
    try:
        return p.loss_and_grad(thetas)
    finally:
        p._wide = wide


CASES = {"odd_cnn": (odd_cnn, (2, 7, 5)), "residual": (Residual, (1, 6, 6)),
         "digits_cnn_like": (lambda: landscape.problems.convnets.cnn(3, 2), (1, 8, 8))}


@pytest.mark.parametrize("bn", ["frozen", "recompute"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("k", [1, 3, 16])
def test_wide_equals_the_module_loop(case, bn, k):
    build, shape = CASES[case]
    torch.manual_seed(0)
    model = build()
    for m in model.modules():  # running statistics other than the defaults: frozen BatchNorm reads them
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    p = _problem(model, _data(shape), bn)
    thetas = p.init(torch.Generator().manual_seed(k), n=k, dtype=torch.float64)
    thetas = thetas + 0.3 * torch.randn(thetas.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p.max_points = 5  # several chunks at K = 16
    loss, grad = p.loss_and_grad(thetas)
    ref, ref_grad, _ = reference(p, thetas)
    assert torch.allclose(loss, ref, rtol=1e-11, atol=1e-12)
    assert torch.allclose(p.loss(thetas), ref, rtol=1e-11, atol=1e-12)
    if ref_grad is None:  # recomputed statistics: the generic evaluator's gradient
        ref_grad = _vmap(p, thetas)[1]
    assert ref_grad.abs().max() > 1e-3
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-11 * float(ref_grad.abs().max()))


def test_recomputed_statistics_on_another_split():
    """The loss on a test split normalizes with the training split's statistics: nothing is shared between the
    statistics pass and the loss pass, and the loss is the module's."""
    torch.manual_seed(0)
    p = landscape.from_module(odd_cnn(), _data((2, 7, 5)), "cross_entropy", test_data=_data((2, 7, 5), n=9, seed=3))
    thetas = p.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    assert torch.allclose(p.loss(thetas, split="test"), reference(p, thetas, split="test", grad=False)[0],
                          rtol=1e-11, atol=1e-12)


def test_minibatch_and_sample_chunks_fall_back_to_the_same_function():
    """A minibatch per point (data differ between the points) runs the generic evaluator; shared minibatches run
    the wide one: both give the module's loss on those samples."""
    torch.manual_seed(0)
    p = _problem(Residual(), _data((1, 6, 6)), "frozen")
    thetas = p.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    rows = torch.tensor([[0, 3, 5], [1, 2, 7], [4, 6, 8]])
    each = p.loss(thetas, batch=rows)
    for i in range(3):
        shared = p.loss(thetas[i:i + 1], batch=rows[i])
        assert torch.allclose(each[i], shared[0], rtol=1e-12)
    assert p.evaluator == "wide"


def test_plans_refused_where_parameters_sit_elsewhere():
    """Parameters outside convolutions, linear and BatchNorm layers (LayerNorm), and a parameter shared by two
    layers, leave the generic evaluator, with the reason."""
    plan, why = wide_plan(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)),
                          landscape.from_module(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)),
                                                (torch.randn(5, 3), torch.randn(5, 1))).layout)
    assert plan is None and "LayerNorm" in why
    a, b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
    b.weight = a.weight
    tied = nn.Sequential(a, nn.ReLU(), b, nn.Flatten(), nn.Linear(16, 2))
    p = landscape.from_module(tied, (torch.randn(6, 1, 4, 4), torch.randint(0, 2, (6,))), "cross_entropy")
    assert p.evaluator == "vmap" and "shares a parameter" in p._wide_refused


def test_a_forward_mixing_data_and_network_values_falls_back():
    """A forward adding the input to a value of the K networks cannot run on K·N rows: the wide evaluator is
    dropped with a note and the loss is still the module's."""

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x) + x, 1))

    p = landscape.from_module(Skip(), (torch.randn(6, 1, 4, 4), torch.randint(0, 2, (6,))),
                              "cross_entropy")
    thetas = p.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    assert torch.allclose(p.loss(thetas), reference(p, thetas, grad=False)[0], rtol=1e-11)
    assert p.evaluator == "vmap"
    assert any("wide evaluator" in note for note in p.capture["notes"])


def test_frozen_statistics_follow_the_problems_buffers():
    """Running statistics copied into the problem's module later (a state_dict's) are what frozen BatchNorm uses."""
    torch.manual_seed(0)
    p = _problem(landscape.problems.convnets.cnn(3, 1), _data((1, 8, 8)), "frozen")
    theta = p.init(torch.Generator().manual_seed(0), dtype=torch.float64)
    before = p.loss(theta)
    with torch.no_grad():
        p.module_.get_submodule("1").running_var.mul_(4.0)
    after = p.loss(theta)
    assert not torch.isclose(before, after)
    assert torch.isclose(after, reference(p, theta[None], grad=False)[0][0], rtol=1e-11)


def test_blocks_of_samples_give_the_same_loss_and_gradient(monkeypatch):
    """Without BatchNorm the wide evaluator takes a split in blocks of samples whose activations the allocator
    reuses (grouped.SAMPLE_BLOCK_BYTES): the blocks' weighted sum is the module's loss and gradient, weight decay
    included; with BatchNorm, or the user's own sample_chunk, the split is not cut by it."""
    from landscape.problems import grouped

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 3))
    p = landscape.from_module(model, _data((1, 6, 6), n=23), "cross_entropy", weight_decay=0.01)
    monkeypatch.setattr(grouped, "SAMPLE_BLOCK_BYTES", 4 * p._act_numel * 5)  # blocks of 5 samples
    blocks = grouped.sample_blocks(p, "train", None)
    assert [b[0].stop - b[0].start for b in blocks] == [5, 5, 5, 5, 3] and abs(sum(b[1] for b in blocks) - 1) < 1e-15
    thetas = p.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    loss, grad = p.loss_and_grad(thetas)
    ref, ref_grad, _ = reference(p, thetas)
    assert torch.allclose(loss, ref, rtol=1e-12) and torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)
    p.sample_chunk = 7
    assert grouped.sample_blocks(p, "train", None) is None and len(p._sample_slices("train", None)) == 4
    bn = _problem(landscape.problems.convnets.cnn(2, 1), _data((1, 8, 8), n=23), "frozen")
    assert grouped.sample_blocks(bn, "train", None) is None


def _matches_module(p, k=3):
    thetas = p.init(torch.Generator().manual_seed(k), n=k, dtype=torch.float64)
    loss, grad = p.loss_and_grad(thetas)
    ref, ref_grad, _ = reference(p, thetas)
    assert ref_grad.abs().max() > 1e-3 and torch.allclose(loss, ref, rtol=1e-12, atol=1e-13)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))


class LeNetStyle(nn.Module):
    """The tutorial's conv net: ``x.view(x.size(0), -1)`` after the convolutions, one after a chain (conv → ReLU →
    pooling: stacked values) and one after a functional chain (``F.relu``: K·N rows of the data's convolution)."""

    def __init__(self, chained: bool):
        super().__init__()
        self.chained = chained
        self.conv, self.relu, self.pool = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        f = torch.nn.functional
        if self.chained is None and x.shape[0] == 0:  # control flow torch.fx cannot trace
            return x
        x = self.pool(self.relu(self.conv(x))) if self.chained else f.max_pool2d(f.relu(self.conv(x)), 2)
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("chained", [True, False, None])
def test_a_forward_that_views_its_values_keeps_the_wide_evaluator(chained):
    """The wide evaluator's K·N rows were channels last, so ``x.view(x.size(0), -1)`` failed and the problem fell back
    to functional_call (1.6x slower on a LeNet, K = 16): where forward calls view they are contiguous (seen in the
    torch.fx graph, or, where forward does not trace, at the first view that fails)."""
    torch.manual_seed(0)
    p = landscape.from_module(LeNetStyle(chained), _data((1, 8, 8)), "cross_entropy")
    assert p.evaluator == "wide" and not p.capture.get("notes") and p._wide.channels_last is False
    _matches_module(p)


def test_a_view_of_the_input_alone_keeps_the_rows_channels_last():
    """``x = x.view(-1, 1, 8, 8)`` on the input (the MNIST examples' first line) needs nothing contiguous after the
    first layer: the rows stay channels last (1.4x faster on a conv net than contiguous)."""

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), \
                nn.Linear(4 * 16, 3)

        def forward(self, x):
            x = x.view(-1, 1, 8, 8)
            return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))

    torch.manual_seed(0)
    p = landscape.from_module(Flat(), _data((64,)), "cross_entropy")
    assert p.evaluator == "wide" and not p.capture.get("notes") and p._wide.channels_last is True
    _matches_module(p)


def test_a_grouped_convolution_of_the_data_keeps_each_network_in_its_groups():
    """A grouped (depthwise) first convolution of the shared data ran as one call of K·C outputs with g groups, which
    gave group j network-major channels of other networks (wrong at K >= 2, caught by the check: the evaluator was
    dropped); the channels are ordered (group, network, unit) for the call and put back."""
    torch.manual_seed(0)
    for model in (nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, groups=3), nn.ReLU(), nn.Conv2d(6, 4, 1),
                                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)),
                  nn.Sequential(nn.Conv1d(2, 4, 3, padding=1, groups=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 3))):
        p = landscape.from_module(model, _data((3, 6, 6) if isinstance(model[0], nn.Conv2d) else (2, 6)),
                                  "cross_entropy")
        assert p.evaluator == "wide" and not p.capture.get("notes")
        _matches_module(p)


class ConvTwice(nn.Module):
    """One convolution of the data called twice, one of its calls feeding a BatchNorm: the BatchNorm belongs to that call
    only (it was taken into both: another function, caught by the check, the evaluator dropped)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        a = torch.relu(self.bn(self.conv(x)))
        return self.fc((a + torch.relu(self.conv(x.flip(-1)))).mean((2, 3)))


def test_a_layer_called_twice_has_no_batchnorm_taken_into_it():
    torch.manual_seed(0)
    model = ConvTwice()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    p = landscape.from_module(model, _data((1, 8, 8)), "cross_entropy", bn="frozen")
    assert p.evaluator == "wide" and not p.capture.get("notes") and p._wide.folds == {}
    _matches_module(p)


def test_a_layer_at_two_places_runs_the_wide_layer_at_both():
    """One convolution at two places of a Sequential (weights shared, as in recurrent or ALBERT-style conv nets): only
    its first name was replaced, so the second place ran the module's own weights (another function, caught by the
    check: the evaluator was dropped). A BatchNorm at two places is refused with its reason."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), conv, nn.Tanh(), conv, nn.Flatten(),
                          nn.Linear(3 * 64, 3))
    p = landscape.from_module(model, _data((1, 8, 8)), "cross_entropy")
    assert p.evaluator == "wide" and not p.capture.get("notes") and p.dim == sum(v.numel() for v in model.parameters())
    _matches_module(p)
    bn = nn.BatchNorm2d(3)
    twice = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), bn, nn.Tanh(), nn.Conv2d(3, 3, 3, padding=1), bn,
                          nn.Flatten(), nn.Linear(3 * 64, 3))
    plan, why = wide_plan(twice, landscape.from_module(twice, _data((1, 8, 8)), "cross_entropy", bn="frozen").layout)
    assert plan is None and "BatchNorm layer is reached by two names" in why
