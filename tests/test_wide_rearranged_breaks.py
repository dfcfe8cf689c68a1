"""Breaks found by a second skeptical pass over the wide evaluator's rearrangements (issue 29)."""
import pytest
import torch
from torch import nn

import landscape


def test_lazy_layer_not_initialized_is_a_one_line_error():
    """A model with a lazy layer not yet run (nn.LazyLinear) has no shapes to lay out: a one-line error naming the
    layer and the fix (running the model once), not torch's traceback from the layout."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x, y = torch.randn(6, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(landscape.LandscapeError, match=r"3\.weight is not initialized.*run the model once"):
        landscape.from_module(model, (x, y), "cross_entropy")
    model(x[:2])  # the fix the error names: the same model then builds, its loss the module's
    p = landscape.from_module(model, (x, y), "cross_entropy")
    theta = p.init(torch.Generator().manual_seed(0), n=1, dtype=torch.float64)
    m = p.to_module(theta[0]).double()
    expected = torch.nn.functional.cross_entropy(m(x.double()), y)
    assert torch.allclose(p.loss(theta)[0], expected, rtol=1e-12, atol=0)


def test_ignored_targets_error_names_a_loss_function_that_works():
    """Targets torch ignores (-100) under the named 'cross_entropy': the error gives the loss function to pass
    instead (it said 'or a loss function, e.g. -100s'), and that function gives torch's loss, the -100s ignored."""
    import re

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    x, y = torch.randn(9, 5), torch.tensor([0, 1, -100, 2, 1, 0, -100, 2, 2])
    with pytest.raises(landscape.LandscapeError) as err:
        landscape.from_module(model, (x, y), "cross_entropy")
    fix = re.search(r"(lambda out, y: torch\.nn\.functional\.cross_entropy\(out, y\))", str(err.value))
    assert fix is not None, str(err.value)
    p = landscape.from_module(model, (x, y), eval(fix.group(1)))  # noqa: S307 - the text of the error itself
    theta = p.init(torch.Generator().manual_seed(1), n=2, dtype=torch.float64)
    for t, value in zip(theta, p.loss(theta)):
        with torch.no_grad():
            out = p.to_module(t).double()(x.double())
        keep = y != -100
        expected = torch.nn.functional.cross_entropy(out[keep], y[keep])
        assert abs(float(value) - float(expected)) <= 1e-12 * abs(float(expected))
