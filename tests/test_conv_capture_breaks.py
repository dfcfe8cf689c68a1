"""Users' conv nets written the ways people write them, against the module's own call in float64: what used to
crash with a traceback, or to compute a gradient nothing checked. Ground truths: autograd through a deep copy of the
module holding θ (recomputed BatchNorm written out: the training split's mean and unbiased variance, then the
evaluation-mode formula) and ``capture.reference``."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape
from landscape.problems.capture import check, reference


def _digits(n=24, classes=3):
    from landscape.problems.networks import digits_splits

    x, y = digits_splits(0.2, 0, images=True, n_train=n)["train"]
    return x, y % classes


def _one_line_then_frozen(err, model):
    """The refusal is one line naming bn='frozen', and under bn='frozen' the model is the module's function."""
    assert "\n" not in str(err.value) and "bn='frozen'" in str(err.value)
    p = landscape.from_module(model, _digits(), "cross_entropy", bn="frozen")
    thetas = p.init(torch.Generator().manual_seed(3), n=3, dtype=torch.float64)
    ref_loss, ref_grad, _ = reference(p, thetas)
    _close(p, thetas, ref_loss, ref_grad)


def _close(p, thetas, ref_loss, ref_grad):
    loss, grad = p.loss_and_grad(thetas)
    assert torch.allclose(loss, ref_loss, rtol=1e-11, atol=0)
    assert ref_grad.abs().max() > 1e-3
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))


class PoolThenSubtract(nn.Module):
    """conv → ReLU → MaxPool, then ``h -= 0.1`` on the pooled values: legal for torch (max pooling's backward does
    not read its output), not for a copy that runs the ReLU after the pooling (ReLU's backward reads its output)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x):
        h = self.pool(self.relu(self.c2(torch.tanh(self.c1(x)))))
        h -= 0.1
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("k", [1, 3])
def test_an_in_place_op_after_max_pooling_builds_and_gives_the_modules_gradient(k):
    """from_module raised the backward's RuntimeError (a traceback) from its own differential check."""
    torch.manual_seed(0)
    p = landscape.from_module(PoolThenSubtract(), _digits(), "cross_entropy")
    thetas = p.init(torch.Generator().manual_seed(k), n=k, dtype=torch.float64)
    ref_loss, ref_grad, _ = reference(p, thetas)
    _close(p, thetas, ref_loss, ref_grad)


class ReluInPlaceThenNorm(nn.Module):
    """conv of the data → ReLU(inplace=True) → BatchNorm (activation before normalization)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.bn(self.act(self.conv(x))).mean((2, 3)))


def _recomputed_by_hand(model, p, theta, x, y):
    """The loss of ReluInPlaceThenNorm at θ with statistics recomputed on x (written out) and its gradient."""
    m = copy.deepcopy(model).double()
    params = list(m.parameters())
    torch.nn.utils.vector_to_parameters(theta, params)
    h = torch.relu(m.conv(x.double()))
    mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3))  # the unbiased variance, as momentum=None stores it
    h = (h - mean[:, None, None]) / torch.sqrt(var[:, None, None] + m.bn.eps) * m.bn.weight[:, None, None] \
        + m.bn.bias[:, None, None]
    loss = F.cross_entropy(m.fc(h.mean((2, 3))), y)
    return loss.detach(), torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])


@pytest.mark.parametrize("k", [1, 3])
def test_relu_in_place_before_recomputed_batchnorm_gives_its_gradient(k):
    """The statistics pass's output of the first convolution, kept for the loss pass, was changed in place by the
    ReLU: the loss was right, its gradient a RuntimeError traceback (the check compared no gradient under
    recomputed statistics)."""
    torch.manual_seed(0)
    model = ReluInPlaceThenNorm()
    x, y = _digits()
    p = landscape.from_module(model, (x, y), "cross_entropy")
    assert p.bn == "recompute" and isinstance(p.capture["grad"], float) and p.capture["grad"] <= 1
    thetas = p.init(torch.Generator().manual_seed(k), n=k, dtype=torch.float64)
    want = [_recomputed_by_hand(model, p, t, x, y) for t in thetas]
    ref_loss, ref_grad = torch.stack([w[0] for w in want]), torch.stack([w[1] for w in want])
    _close(p, thetas, ref_loss, ref_grad)
    loss, grad, _ = reference(p, thetas)  # the check's own reference: torch's value, the statistics' gradient
    assert torch.allclose(loss, ref_loss, rtol=1e-12) and torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-13)


def test_the_check_sees_a_wrong_gradient_under_recomputed_statistics():
    torch.manual_seed(0)
    p = landscape.from_module(ReluInPlaceThenNorm(), _digits(), "cross_entropy")
    right = p.loss_and_grad
    p.loss_and_grad = lambda thetas: (lambda lg: (lg[0], lg[1] * 1.001))(right(thetas))
    report = check(p, p.init(torch.Generator().manual_seed(1), n=1, dtype=torch.float64))
    assert "grad" in report["failed"] and "loss" not in report["failed"]


class ReadsRunningMean(nn.Module):
    """forward reads a BatchNorm layer's buffer (recomputed statistics replace the layer)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)) + self.bn.running_mean)


def test_a_forward_reading_batchnorm_buffers_is_a_one_line_error_under_recompute_and_runs_frozen():
    torch.manual_seed(0)
    model = ReadsRunningMean()
    model.bn.running_mean.uniform_(-0.5, 0.5)
    with pytest.raises(landscape.LandscapeError) as err:  # was an AttributeError traceback
        landscape.from_module(model, _digits(), "cross_entropy")
    _one_line_then_frozen(err, model)


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch's vmap of _weight_norm
def test_a_weight_normed_conv_starts_at_finite_points():
    """weight_norm's direction v was drawn as zeros (its name does not end in "weight"): w = g·v/‖v‖ was NaN at
    every initial point (``landscape train`` said "diverged at step 0")."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    torch.nn.utils.parametrizations.weight_norm(model[0])
    p = landscape.from_module(model, _digits(), "cross_entropy")
    thetas = p.init(torch.Generator().manual_seed(0), n=3, dtype=torch.float64)
    loss, grad = p.loss_and_grad(thetas)
    ref_loss, ref_grad, _ = reference(p, thetas)
    assert bool(torch.isfinite(ref_loss).all()) and torch.allclose(loss, ref_loss, rtol=1e-11)
    assert torch.allclose(grad, ref_grad, rtol=1e-10, atol=1e-12 * float(ref_grad.abs().max()))


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated", "ignore:There is a performance drop")
def test_torchs_older_weight_norm_starts_at_finite_points():
    """The hook-style weight_norm (parameters weight_g, weight_v) likewise; its module holds a computed weight that
    torch cannot deep-copy, so the ground truth is the module itself, called with θ's g and v."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    torch.nn.utils.weight_norm(model[0])
    x, y = _digits()
    p = landscape.from_module(model, (x, y), "cross_entropy")
    assert [n for n in p.layout.names if n.startswith("0.")] == ["0.bias", "0.weight_g", "0.weight_v"]
    theta = p.init(torch.Generator().manual_seed(0), n=2)[1]
    values = p.layout.unflatten(theta)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(values[name])
        want = F.cross_entropy(model(x), y)
    assert torch.isfinite(want) and torch.isclose(p.loss(theta), want, rtol=1e-5)


class ScaledNorm(nn.BatchNorm2d):
    def forward(self, x):
        return 2.0 * super().forward(x)


def test_a_batchnorm_of_its_own_under_recompute_names_the_layer_and_runs_frozen():
    """Recomputed statistics replace each BatchNorm layer by torch's normalization: a subclass's own forward is lost.
    The error blamed functional_call (a parameter kept in a list? random operations?)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), ScaledNorm(4), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 4, 3))
    with pytest.raises(landscape.LandscapeError, match="BatchNorm layer 1 normalizes its own way") as err:
        landscape.from_module(model, _digits(), "cross_entropy")
    _one_line_then_frozen(err, model)


def _steeper_relu():
    """A ReLU instance whose forward was replaced: ReLU below 3, slope 5 above (the same function at small
    pre-activations, where the differential check looks at initial points)."""
    import types

    relu = nn.ReLU()
    relu.forward = types.MethodType(lambda self, x: torch.relu(x) + 4.0 * torch.relu(x - 3.0), relu)
    return relu


@pytest.mark.parametrize("where", ["instance", "class"])
@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_an_activation_with_a_forward_of_its_own_is_not_taken_for_its_type(kind, where, monkeypatch):
    """The wide evaluator (ReLU taken into the average pooling), the hand-batched MLP and the bound graph matched the
    layer by type: they computed, and bounded, ReLU where the module computes its own forward; at θ×10 the wide loss
    was 63% off and the bound of the zero-length piece 63-77% below the module's loss (a false proof), and the
    check at the initial points saw nothing. The same with ``nn.ReLU.forward`` replaced on the class."""
    torch.manual_seed(0)
    x, y = _digits()
    if where == "class":
        monkeypatch.setattr(nn.ReLU, "forward", _steeper_relu().forward.__func__)
    relu = _steeper_relu if where == "instance" else nn.ReLU
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1), relu(),
                              nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    else:
        model, x = nn.Sequential(nn.Linear(64, 16), relu(), nn.Linear(16, 3)), x.reshape(len(x), 64)
    p = landscape.from_module(model, (x, y), "cross_entropy")
    thetas = 10.0 * p.init(torch.Generator().manual_seed(1), n=3, dtype=torch.float64)
    ref_loss, ref_grad, _ = reference(p, thetas)
    _close(p, thetas, ref_loss, ref_grad)
    bound = p.segment_bounds(thetas, thetas)
    assert bound is None or bool((bound >= ref_loss * (1 - 1e-12)).all())


class LeNetView(nn.Module):
    """The tutorial CNN: ``x.view(x.size(0), -1)`` after conv → ReLU → max pooling (values the wide evaluator keeps
    channels last, which view cannot flatten: it falls back to functional_call)."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.view(x.size(0), -1))


def test_a_fast_path_dropped_on_the_checks_subset_is_dropped_for_the_problem():
    """With more than 64 training samples the check runs on a copy of the problem: the wide evaluator it dropped
    stayed on the problem, which said "wide" until its first evaluation failed again (and noted it twice)."""
    x, y = _digits(n=100)
    p = landscape.from_module(LeNetView(), (x, y), "cross_entropy")
    if p.evaluator != "wide":  # the wide evaluator could not run it: said once, and everywhere
        assert p.capture["evaluator"] == p.evaluator == "vmap" and len(p.capture["notes"]) == 1
    thetas = p.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    ref_loss, ref_grad, _ = reference(p, thetas)
    _close(p, thetas, ref_loss, ref_grad)
    assert p.capture["evaluator"] == p.evaluator and len(p.capture["notes"]) <= 1


def test_more_classes_than_outputs_is_said_as_such():
    """Targets 0-9 for a model of 3 outputs: the error said the model's forward fails in float64."""
    with pytest.raises(landscape.LandscapeError, match="indices 0 to 2 .the model's outputs., got targets 0 to 9"):
        landscape.from_module(LeNetView(), _digits(classes=10), "cross_entropy")
    x, y = _digits()
    y[::5] = -100  # ignored by F.cross_entropy, not by the named loss: said, with the way out
    with pytest.raises(landscape.LandscapeError, match="got targets -100 to 2; .* loss function"):
        landscape.from_module(LeNetView(), (x, y), "cross_entropy")
    p = landscape.from_module(LeNetView(), (x, y), lambda out, t: F.cross_entropy(out, t))
    thetas = p.init(torch.Generator().manual_seed(0), n=2, dtype=torch.float64)
    assert torch.allclose(p.loss(thetas), reference(p, thetas, grad=False)[0], rtol=1e-12)


class Checkpointed(nn.Module):
    """A residual block under activation checkpointing: torch re-runs it in the backward pass, after the batched
    evaluators have put the module's own parameters back (so neither has the module's gradient)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.stem(x)
        h = h + torch.utils.checkpoint.checkpoint(self.block, h, use_reentrant=False)
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("bn", ["recompute", "frozen"])
def test_activation_checkpointing_is_a_one_line_error(bn):
    """It was an AttributeError traceback from the check (frozen), or a problem built whose first gradient was a
    RuntimeError traceback (recompute: the check compared no gradient)."""
    torch.manual_seed(0)
    with pytest.raises(landscape.LandscapeError, match="its gradient fails") as err:
        landscape.from_module(Checkpointed(), _digits(), "cross_entropy", bn=bn)
    assert "\n" not in str(err.value)


class ScaledInPlace(nn.Module):
    """``h.mul_(0.5)`` on a ReLU's output: torch itself cannot differentiate this forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.relu(self.bn(self.conv(x)))
        h.mul_(0.5)
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("bn", ["recompute", "frozen"])
def test_a_forward_torch_cannot_differentiate_is_a_one_line_error_under_both_policies(bn):
    """Under recompute the check had no reference gradient and did not run the problem's: the problem was built and
    its first gradient was a RuntimeError traceback."""
    torch.manual_seed(0)
    with pytest.raises(landscape.LandscapeError, match="modified by an inplace operation") as err:
        landscape.from_module(ScaledInPlace(), _digits(), "cross_entropy", bn=bn)
    assert "\n" not in str(err.value)


def test_from_module_keeps_its_own_copy_of_the_model():
    """``from_module`` set the user's model to evaluation mode (a training loop run afterwards had dropout off,
    silently) and read its BatchNorm buffers by reference: a later training step changed the frozen problem's
    function. The problem now keeps a copy; the model is left as it was."""
    torch.manual_seed(0)
    x, y = _digits()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                          nn.Linear(4 * 64, 3)).train()
    model(x)  # running statistics of its own
    p = landscape.from_module(model, (x, y), "cross_entropy", bn="frozen")
    assert model.training and all(m.training for m in model.modules())
    theta = p.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    before = p.loss(theta)
    model(3.0 * x + 1.0)  # a training step's forward: moves the model's running statistics in place
    model.eval()
    assert torch.equal(p.loss(theta), before)
