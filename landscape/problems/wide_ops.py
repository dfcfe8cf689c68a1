"""Autograd functions of the wide evaluator (:mod:`.grouped`) with their gradients written out: BatchNorm of K
networks with batch statistics, and the K networks' first layer on data that needs no gradient."""

from __future__ import annotations

import functools
import math

import torch


def first_order(backward):
    """A written-out gradient has no derivative of its own: differentiating it (``create_graph=True``) raises.
    torch's ``once_differentiable`` raises only where the incoming gradient requires grad: with it, a
    Hessian-vector product through these functions took them as constants and was 67% off, silently."""

    @functools.wraps(backward)
    def checked(ctx, *grads):
        if torch.is_grad_enabled():  # a backward with create_graph=True
            raise RuntimeError("the wide evaluator's written-out gradient has no second derivative: take "
                               "Hessian-vector products with landscape.minima.curvature.hvp, which sets it aside")
        return backward(ctx, *grads)

    return checked


class BatchNorm(torch.autograd.Function):
    """BatchNorm with the statistics of its input ``v`` (reduced over ``dims``, broadcast as ``shape``): the normalized
    output (biased variance, as training mode), the mean and the biased variance, all three differentiable; the
    gradient in four passes over ``v`` (autograd through the same ops takes about ten). Two passes forward (mean,
    then squared deviations: ``var_mean`` is 10x slower on a CPU).

    With d = v − μ, s = w / √(σ² + ε): ∂/∂v = g·s + d·2G/n + (g_μ − s·Σg)/n, where G = g_σ² − ½·w·Σ(g·d)/(σ² + ε)^{3/2}.
    ``need_out=False`` (the statistics pass's last BatchNorm layer: nothing reads its output) returns an empty output
    and the gradient in one pass, (g_μ + 2·d·g_σ²)/n."""

    @staticmethod
    def forward(ctx, v, weight, bias, dims, shape, eps, need_out=True):
        ctx.set_materialize_grads(False)
        count = v.numel() // math.prod(shape)  # values per channel
        mean = v.sum(dims) / count
        centred = v - mean.reshape(shape)
        var = (centred * centred).sum(dims) / count
        inv = torch.rsqrt(var + eps)
        scale = inv if weight is None else inv * weight
        out = v.new_empty(0) if not need_out else centred * scale.reshape(shape) if bias is None else \
            torch.addcmul(bias.reshape(shape), centred, scale.reshape(shape))
        ctx.save_for_backward(centred, inv, weight)
        ctx.dims, ctx.shape, ctx.count = dims, shape, count
        return out, mean, var

    @staticmethod
    @first_order
    def backward(ctx, grad, grad_mean, grad_var):
        centred, inv, weight = ctx.saved_tensors
        dims, shape, n = ctx.dims, ctx.shape, ctx.count
        if grad is None:  # only the statistics are read
            mean_part = (torch.zeros_like(inv) if grad_mean is None else grad_mean / n).reshape(shape)
            if grad_var is None:
                return mean_part.expand(centred.shape).clone(), None, None, None, None, None, None
            return torch.addcmul(mean_part, centred, (2.0 * grad_var / n).reshape(shape)), None, None, None, None, \
                None, None
        scale = inv if weight is None else inv * weight
        total = grad.sum(dims)
        dot = (grad * centred).sum(dims)
        big = -0.5 * dot * inv.pow(3) * (1.0 if weight is None else weight)
        if grad_var is not None:
            big = big + grad_var
        shift = -scale * total if grad_mean is None else grad_mean - scale * total
        grad_v = torch.addcmul((shift / n).reshape(shape), grad, scale.reshape(shape))
        grad_v.addcmul_(centred, (2.0 * big / n).reshape(shape))
        grad_w = dot * inv if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = total if ctx.needs_input_grad[2] else None
        return grad_v, grad_w, grad_b, None, None, None, None


class DataProduct(torch.autograd.Function):
    """``data @ weight[k] + bias[k]`` for each of K networks, [K, M, C], for data [M, F] that needs no gradient: the
    products written into one [K, M, C] tensor (no permutation of a [M, K·C] product) and the weights' gradients
    ``dataᵀ @ grad[k]`` (autograd takes ``(gradᵀ @ data)ᵀ``, 10x slower on a CPU for a long, thin ``data``)."""

    @staticmethod
    def forward(ctx, data, weight, bias):
        ctx.save_for_backward(data)
        out = data.new_empty(weight.shape[0], data.shape[0], weight.shape[2])
        for k in range(weight.shape[0]):
            if bias is None:
                torch.mm(data, weight[k], out=out[k])
            else:
                torch.addmm(bias[k], data, weight[k], out=out[k])
        return out

    @staticmethod
    @first_order
    def backward(ctx, grad):
        (data,) = ctx.saved_tensors
        grad_weight = torch.stack([torch.mm(data.t(), g) for g in grad]) if ctx.needs_input_grad[1] else None
        return None, grad_weight, grad.sum(1) if ctx.needs_input_grad[2] else None


class StackedProduct(torch.autograd.Function):
    """``data @ weight + bias`` for data [M, F] that needs no gradient, weight [F, K·C] (the K networks' columns side
    by side): one product; the weight's gradient ``dataᵀ @ grad`` (autograd takes ``(gradᵀ @ data)ᵀ``, 6x slower
    on a CPU for a long, thin ``data``: 14 against 2.1 ms at M = 92,032, F = 9, K·C = 32, one thread)."""

    @staticmethod
    def forward(ctx, data, weight, bias):
        ctx.save_for_backward(data)
        return data @ weight if bias is None else torch.addmm(bias, data, weight)

    @staticmethod
    @first_order
    def backward(ctx, grad):
        (data,) = ctx.saved_tensors
        grad = grad.contiguous()
        grad_weight = data.t() @ grad if ctx.needs_input_grad[1] else None
        return None, grad_weight, grad.sum(0) if ctx.needs_input_grad[2] else None


class ReluOfInput(torch.autograd.Function):
    """ReLU whose gradient reads its input (torch's reads its output, which the module may change in place after a max
    pooling it was moved before: :func:`.wide_conv.pool_first`): the mask x > 0 is relu(x) > 0, the same gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.relu(x)

    @staticmethod
    @first_order
    def backward(ctx, grad):
        return torch.ops.aten.threshold_backward(grad, ctx.saved_tensors[0], 0)


class BlockMean(torch.autograd.Function):
    """2-D average pooling over the k_h×k_w blocks that tile the input (stride = kernel, no padding, sizes divisible),
    of the input or of its ReLU: the values of ``F.avg_pool2d``, the gradient written in one pass (torch's zero-fills
    the input's gradient and then adds each window's share, and the ReLU's gradient is one more pass), each share
    ``g / (k_h·k_w)`` as torch divides it: the same numbers. On digits_cnn's shapes (one thread) the 2×2 backward
    takes 1.55 ms ([1438, 32, 8, 8]) and 0.73 ms ([5752, 16, 4, 4]) against 2.44 and 0.79 ms for torch's pooling and
    ReLU gradients."""

    @staticmethod
    def forward(ctx, x, kernel, relu):
        y = torch.relu(x) if relu else x
        ctx.save_for_backward(y if relu else None)
        ctx.kernel, ctx.shape, ctx.relu = kernel, x.shape, relu
        ctx.last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return torch.nn.functional.avg_pool2d(y, kernel)

    @staticmethod
    @first_order
    def backward(ctx, grad):
        (kh, kw), (n, c, h, w) = ctx.kernel, ctx.shape
        share = grad / (kh * kw)
        if (kh, kw) == (2, 2):  # nearest upsampling doubles exactly (index >> 1), then the ReLU's mask in place
            share = share.contiguous(memory_format=torch.channels_last if ctx.last else torch.contiguous_format)
            out = torch.nn.functional.interpolate(share, scale_factor=2, mode="nearest")
            if ctx.relu:
                torch.ops.aten.threshold_backward.grad_input(out, ctx.saved_tensors[0], 0, grad_input=out)
            return out, None, None
        if ctx.last:  # [N, H, W, C] in memory
            blocks, where = (n, h // kh, kh, w // kw, kw, c), lambda t: t.permute(0, 2, 3, 1)
            share = where(share).reshape(n, h // kh, 1, w // kw, 1, c)
        else:
            blocks, where = (n, c, h // kh, kh, w // kw, kw), lambda t: t
            share = share.reshape(n, c, h // kh, 1, w // kw, 1)
        share = share.expand(blocks)
        if ctx.relu:
            out = torch.ops.aten.threshold_backward(share, where(ctx.saved_tensors[0]).reshape(blocks), 0)
        else:
            out = share.contiguous()
        out = out.reshape(n, h, w, c).permute(0, 3, 1, 2) if ctx.last else out.reshape(n, c, h, w)
        return out, None, None


class Unstack(torch.autograd.Function):
    """Stacked values [N, K·C, ...] as K·N rows [K·N, C, ...]: contiguous, or channels last where the stacked values
    are (the layers after it — pooling, ReLU, BatchNorm, the next convolution — run on [K·N, H, W, C] in memory:
    ReLU + 2×2 pooling on [5752, 16, 4, 4] took 8-11 ms channels first against 1.8-2.9 ms channels last, forward and
    backward, one thread); the gradient goes back in the memory format the stacked values had."""

    @staticmethod
    def forward(ctx, x, k, rows_last=True):
        n, kc = x.shape[:2]
        ctx.k, ctx.last = k, x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        # written into a fresh tensor, never a view (the module may change it in place, which torch refuses for a
        # view made inside a Function): channels last where the stacked values are and the module views nothing
        fmt = torch.channels_last if ctx.last and rows_last else torch.contiguous_format
        out = torch.empty(k * n, kc // k, *x.shape[2:], dtype=x.dtype, device=x.device, memory_format=fmt)
        out.view(k, n, kc // k, *x.shape[2:]).copy_(x.unflatten(1, (k, kc // k)).transpose(0, 1))
        return out

    @staticmethod
    @first_order
    def backward(ctx, grad):
        k = ctx.k
        n, c = grad.shape[0] // k, grad.shape[1]
        if ctx.last:  # back to [N, H, W, K, C] in memory
            h, w = grad.shape[2:]
            g = grad.permute(0, 2, 3, 1).reshape(k, n, h, w, c).permute(1, 2, 3, 0, 4)
            return g.reshape(n, h, w, k * c).permute(0, 3, 1, 2), None, None
        g = grad.reshape(k, n, c, *grad.shape[2:])
        return g.transpose(0, 1).reshape(n, k * c, *grad.shape[2:]), None, None
