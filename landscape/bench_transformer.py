"""``landscape bench``'s transformer rows: the loss and gradient of K transformers
(:func:`~landscape.problems.transformer.modadd_transformer`) three ways, at K = 1, 16, 64.

- **batched**: the problem's own ``loss_and_grad`` (:func:`landscape.problems.attention.transformer_logits`: every
  layer of the K networks one batched product, attention one product over K·N·heads; autograd backward);
- **module loop**: the ``nn.Module`` itself, one point at a time (θ copied in, forward, loss, ``backward``), as a
  user's loop runs it;
- **torch.func**: ``vmap(grad_and_value(loss))`` of ``functional_call`` on the module, the generic batched way.

All three compute one thing (the figures carry the largest difference of their gradients at K points); the
timings are wall and CPU seconds a point (:func:`landscape.bench.clocks`; ``landscape.bench`` re-exports
:func:`transformer_speed`).
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, grad_and_value, vmap

from ._timing import clocks, label
from .problems.embedded import make_problem

#: The K of the rows.
KS = (1, 16, 64)


def _ways(problem, thetas):
    """The three evaluations of (loss [K], grad [K, D]) at ``thetas`` [K, D], as functions of nothing."""
    module = copy.deepcopy(problem.module_).to(device=thetas.device, dtype=thetas.dtype)
    x, y = (t.to(thetas.device) for t in problem.data("train"))
    mask = problem._decay.to(thetas.device)
    decay = problem.weight_decay
    names = problem.layout.names

    def loss_of(out, theta):
        return torch.nn.functional.cross_entropy(out, y) + 0.5 * decay * theta[mask].pow(2).sum()

    def loop():
        losses, grads = [], []
        params = [module.get_parameter(n) for n in names]
        for theta in thetas:
            with torch.no_grad():
                for p, value in zip(params, problem.layout.unflatten(theta).values()):
                    p.copy_(value)
            module.zero_grad(set_to_none=True)
            value = torch.nn.functional.cross_entropy(module(x), y)
            value = value + 0.5 * decay * sum(p.pow(2).sum() for n, p in zip(names, params) if n.endswith("weight"))
            value.backward()
            losses.append(value.detach())
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
        return torch.stack(losses), torch.stack(grads)

    def one(theta):
        return loss_of(functional_call(module, problem.layout.unflatten(theta), (x,)), theta)

    func = vmap(grad_and_value(one))

    def torch_func():
        g, value = func(thetas)
        return value, g

    return {"batched": lambda: problem.loss_and_grad(thetas), "module loop": loop, "torch.func": torch_func}


def transformer_speed(problem=None, ks=KS, *, device="cpu", min_seconds: float = 0.5) -> dict:
    """Loss and gradient of K transformers: batched, a loop over the module, torch.func; per K in ``ks``.

    Parameters
    ----------
    problem : TransformerProblem, optional
        Default: ``modadd_transformer`` at its default size.
    ks : sequence of int
    device : str or torch.device
    min_seconds : float
        Least wall time of each timing.

    Returns
    -------
    dict
        ``label``, ``dim``, ``samples``; ``rows``: per K, ``k``, ``us`` and ``cpu_us`` (wall and CPU µs a point) of
        each way, ``fastest`` (the way of least wall time), ``difference`` (the largest relative difference of the
        ways' gradients, float32).
    """
    problem = make_problem("modadd_transformer") if problem is None else problem
    rows = []
    for k in ks:
        thetas = problem.init(torch.Generator().manual_seed(0), n=k, device=device)
        ways = _ways(problem, thetas)
        grads = {name: fn()[1] for name, fn in ways.items()}
        ref = grads["module loop"]
        diff = max(float((g - ref).abs().max() / ref.abs().max()) for g in grads.values())
        row = {"k": k, "difference": diff}
        for name, fn in ways.items():
            wall, cpu = clocks(fn, min_seconds=min_seconds, min_repeats=1)
            row[name] = {"us": wall / k * 1e6, "cpu_us": cpu / k * 1e6}
        row["fastest"] = min(ways, key=lambda n: row[n]["us"])
        rows.append(row)
    return {"label": label(problem), "dim": problem.dim, "samples": problem.n_samples(),
            "rows": rows}

