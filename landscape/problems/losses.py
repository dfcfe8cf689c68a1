"""The losses of network problems, batched over K networks: their values (:data:`LOSSES`, row-major outputs, the
autograd path) and their values with the derivative with respect to the outputs (:data:`LOSS_GRADS`,
feature-major outputs, the hand-written MLP gradient of :func:`landscape.problems.mlp.mlp_loss_and_grad`)."""

from __future__ import annotations

import torch

from .._errors import LandscapeError
from .._registry import Registry

# Each takes outputs [k, N, C] and targets [k, N] or [k, N, C]; returns [k].


def cross_entropy(out, y):
    """Mean cross-entropy of logits ``out`` [k, N, C] against class indices ``y`` [k, N].

    On a CPU, fewer classes than :data:`SHORT_ROWS` are normalized with the classes along the rows ([k, C, N]):
    torch's CPU ``log_softmax`` runs a vector per row from 16 values on, scalar code below (10 classes: 59 against
    13 ms for the loss and its gradient of [4, 60000, 10], one thread; 32 classes: 5 ms)."""
    if out.shape[-1] < SHORT_ROWS and out.device.type == "cpu" and out.dim() > 1:
        logp = torch.log_softmax(out.transpose(-1, -2).contiguous(), dim=-2)
        return -logp.gather(-2, y.long().unsqueeze(-2)).squeeze(-2).mean(-1)
    logp = torch.log_softmax(out, dim=-1)
    return -logp.gather(-1, y.long().unsqueeze(-1)).squeeze(-1).mean(-1)


#: Classes below which :func:`cross_entropy` normalizes along the rows on a CPU.
SHORT_ROWS = 16


def mse(out, y):
    """Mean squared error."""
    return (out - y.reshape(out.shape)).pow(2).flatten(1).mean(-1)


def l1(out, y):
    """Mean absolute error."""
    return (out - y.reshape(out.shape)).abs().flatten(1).mean(-1)


def exponential(out, y):
    """Mean exponential loss exp(−y·out) of labels y = ±1 (Soudry et al., JMLR 2018)."""
    return torch.exp(-y.reshape(out.shape) * out).flatten(1).mean(-1)


#: Loss functions by name; ``y`` is a class index for cross-entropy and ±1 for exponential.
LOSSES = Registry("loss", (cross_entropy, mse, l1, exponential), shared=("out", "y"))


def check_targets(loss, y, *, split: str = "train") -> None:
    """Refuse targets a named loss is not defined for: the exponential loss needs labels ±1.

    exp(−y·f(x)) is the margin loss of labels y = ±1, and its bound over a segment
    (:mod:`landscape.problems.bounds`) widens the exponent by the radius of f(x) alone, which holds for
    |y| = 1 only: labels 0 (a constant loss of 1) or 2 (a bound that is not one) are a mistake.

    Parameters
    ----------
    loss : str or callable
        The problem's loss (a key of :data:`LOSSES`); a callable is the user's own and is not checked.
    y : Tensor
        The targets of one data split.
    split : str
        Its name, for the message.

    Raises
    ------
    LandscapeError
        One line naming the split, the labels found and the fix.
    """
    if loss != "exponential":
        return
    y = torch.as_tensor(y)
    bad = ~((y == 1) | (y == -1))
    if bool(bad.any()):
        found = torch.unique(y[bad].to(torch.float64))
        shown = ", ".join(f"{v:g}" for v in found[:4].tolist()) + (", ..." if found.numel() > 4 else "")
        raise LandscapeError(f"the exponential loss needs labels -1 and +1, but the {split} targets hold {shown}; "
                             "map labels 0/1 to -1/+1 with y = 2 * y - 1")


# ---------------------------------------------------------------- with their gradients, feature-major

def _ce_grad(out, y, grad):
    logp = torch.log_softmax(out, dim=1)  # [k, C, N]: over the classes, N long rows (fast; the last axis of C is not)
    index = y.unsqueeze(1)  # [k, 1, N]
    loss = -logp.gather(1, index).mean((1, 2))
    if not grad:
        return loss, None
    g = logp.exp_()
    g.scatter_add_(1, index, torch.full_like(index, -1, dtype=g.dtype))
    return loss, g.div_(out.shape[2])


def _mse_grad(out, y, grad):
    diff = out - y
    return diff.pow(2).mean((1, 2)), diff.mul_(2 / (out.shape[1] * out.shape[2])) if grad else None


def _l1_grad(out, y, grad):
    diff = out - y
    return diff.abs().mean((1, 2)), diff.sign_().div_(out.shape[1] * out.shape[2]) if grad else None


def _exponential_grad(out, y, grad):
    e = torch.exp(-y * out)
    return e.mean((1, 2)), e.mul_(-y).div_(out.shape[1] * out.shape[2]) if grad else None


#: Losses with a hand-written gradient: ``loss(out [k, C, N], y, grad) -> (values [k], dvalues/dout or None)``,
#: the targets given feature-major (class indices [k, N] for cross-entropy, [k, C, N] otherwise).
LOSS_GRADS = {"cross_entropy": _ce_grad, "mse": _mse_grad, "l1": _l1_grad, "exponential": _exponential_grad}
