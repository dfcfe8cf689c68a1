"""The differential check of a captured module: the fast evaluators and the bound graph against the module's own
``forward`` and loss, in float64, at a few points.

A fast path (the hand-batched MLP, the written-out gradient, the traced bound graph) is a claim that it computes
the module's function. Reading ``forward`` (:func:`.mlp.mlp_plan`, :func:`.traced.graph_plan`) makes the claim
likely; this check makes it tested, at every problem built from a module and at the endpoints of every
connection, and catches the slips no reading sees (``x += y`` on a value used elsewhere, state kept between
calls). It compares, at each point θ:

- the loss of :meth:`Problem.loss` with the module's own call: a deep copy holding θ in its parameters, called as
  ``copy(x)`` (hooks included; a parameter also kept in a list is θ there too; with recomputed BatchNorm its
  BatchNorm layers reset, run once in training mode on the training split with ``momentum=None``, then evaluated:
  what torch itself computes), and torch's own loss (``F.cross_entropy``, ``F.mse_loss``, ``F.l1_loss``, or the
  user's function);
- the gradient of :meth:`Problem.loss_and_grad` with autograd through that call; with recomputed BatchNorm,
  whose statistics torch stores outside autograd, through the same statistics taken as functions of θ
  (:func:`.capture_stats.differentiable_statistics`; not for a subclass of torch's BatchNorm layers);
- where the problem bounds its loss, the bound of the zero-length pieces [θ, θ], two or more bounded together
  (the bound graph's centre: it must equal the loss, up to the bound's rounding guard), and of pieces from θ to a
  nearby and a farther point (at least the loss at both ends and the midpoint).

All in float64, on :data:`SAMPLES` training samples at most: the tolerance is what float64 rounding warrants
(:data:`RTOL` relative, plus :data:`ATOL` times the size of the outputs), far below any difference between two
functions.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import LandscapeError
from .bounds import ROUNDING
from .capture_stats import differentiable_statistics, recompute_statistics
from .operations import NORMS as _NORMS

#: Relative and absolute (times 1 + the largest |output|) tolerances of the loss; the gradient's are 100× wider
#: in absolute terms (a sum over samples of products). Float64 gives ~1e-15; a different function ≫ 1e-8.
RTOL, ATOL = 1e-10, 1e-12
#: A difference between ``functional_call`` of the module and its own call (the same computation, batched
#: differently) up to this relative size is float64 rounding amplified by an ill-conditioned model (inputs of
#: mean 1e9 and spread 10 before a BatchNorm reach 1e-10), accepted with a note; more is another function.
CONDITIONING = 1e-7
#: Points near each checked point: θ + NEAR·rms(θ)·z, z standard normal; and farther along the same z (FAR), the
#: ends of the longer pieces whose bound is checked too.
NEAR, FAR = 1e-2, 0.3
#: Training samples the check runs on: a fixed random subset (:meth:`Problem.subset`, seed 0) of a larger split.
#: The check compares two computations of one function, row by row the same code: a few dozen inputs show a
#: difference as well as thousands, at a fraction of the cost (a 1M-parameter CNN's bound graph in float64 costs
#: ~8 s a piece on 500 images).
SAMPLES = 64


def _torch_loss(name_or_fn, out, y):
    if callable(name_or_fn):
        return name_or_fn(out, y)
    if name_or_fn == "cross_entropy":
        return F.cross_entropy(out, y.long())
    if name_or_fn == "mse":
        return F.mse_loss(out, y.reshape(out.shape).to(out.dtype))
    if name_or_fn == "l1":
        return F.l1_loss(out, y.reshape(out.shape).to(out.dtype))
    if name_or_fn == "exponential":
        return torch.exp(-y.reshape(out.shape).to(out.dtype) * out).mean()
    raise ValueError(name_or_fn)


def _float64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64) if t.is_floating_point() else t


def reference(problem, thetas: torch.Tensor, *, split: str = "train", grad: bool = True):
    """The module's own loss (and autograd gradient) at each θ, float64, on the CPU: a deep copy of the module
    with θ copied into its parameters in place (so a parameter also held elsewhere, in a list or an attribute,
    is θ there too, as torch's own ``vector_to_parameters`` would have it), called as ``copy(x)``.

    Returns
    -------
    loss : Tensor, shape (K,)
    grad : Tensor, shape (K, D), or None (``grad=False``, or recomputed statistics of a BatchNorm subclass)
    scale : float
        1 + the largest |output| seen (sets the absolute tolerance).
    """
    m = copy.deepcopy(problem.module_).double()  # floating tensors only (.to(float64) drops a complex buffer's imag.)
    names = problem.layout.names
    params = [m.get_parameter(name) for name in names]
    x, y = (_float64(t) for t in problem.data(split))
    recompute = problem.bn == "recompute"
    norms = [b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    # recomputed statistics with their gradient: torch's own layers only (a subclass may normalize otherwise)
    grad = grad and not (recompute and any(type(b) not in _NORMS for b in norms))
    x_train = _float64(problem.data("train")[0]) if recompute else None
    values, grads, scale = [], [], 1.0
    for theta in thetas.detach().cpu().to(torch.float64):
        with torch.no_grad():
            for p, value in zip(params, problem.layout.unflatten(theta).values()):
                p.copy_(value)
                p.requires_grad_(grad)
        value, out = _call(problem, m, x, y, x_train, grad and not recompute)
        if isinstance(out, torch.Tensor):
            scale = max(scale, 1.0 + float(out.detach().abs().max()))
        values.append(value.detach())
        if grad and recompute:  # the value stays torch's own; the gradient through the statistics as functions of θ
            try:
                with differentiable_statistics(m, norms):
                    grads.append(_gradient(_call(problem, m, x, y, x_train, True)[0], params))
            except RuntimeError as err:  # activation checkpointing (forward re-run in another mode): not compared;
                if "inplace operation" in str(err):  # torch cannot differentiate the forward: said as under frozen
                    raise
                grad, grads = False, []
        elif grad:
            grads.append(_gradient(value, params))
    return torch.stack(values), torch.stack(grads) if grad else None, scale


def _gradient(value, params) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, allow_unused=True,
                                                                 materialize_grads=True)])


def _call(problem, m, x, y, x_train, grad: bool):
    """The module ``m``'s loss on ``(x, y)`` (its statistics recomputed on ``x_train`` first, unless None) and its
    outputs, with autograd or not."""
    with torch.set_grad_enabled(grad):
        if x_train is not None:
            recompute_statistics(m, x_train)
        out = m(x)
        _check_output(problem, out, y)
        value = _torch_loss(problem._loss_ref, out, y)
        if problem.weight_decay:
            decayed = [m.get_parameter(name) for name in problem.layout.names if name.endswith("weight")]
            value = value + 0.5 * problem.weight_decay * sum(p.pow(2).sum() for p in decayed)
    return value, out


def same_function(problem, before: torch.Tensor, after: torch.Tensor, *, rtol: float = 1e-5) -> str | None:
    """Whether the module computes the same outputs at ``after`` as at ``before`` (K, D) on up to :data:`SAMPLES`
    training samples, float64: None if so (within ``rtol`` of the outputs' size, for the rounding of a rescaled
    float32 point), else a one-line description of the largest difference."""
    view = problem.subset(SAMPLES) if problem.n_samples("train") > SAMPLES else problem
    m = copy.deepcopy(view.module_).double()
    params = [m.get_parameter(name) for name in view.layout.names]
    x = _float64(view.data("train")[0])
    outs = []
    with torch.no_grad():
        for theta in torch.cat([before.reshape(-1, view.dim), after.reshape(-1, view.dim)]).cpu().double():
            for p, value in zip(params, view.layout.unflatten(theta).values()):
                p.copy_(value)
            if view.bn == "recompute":
                recompute_statistics(m, _float64(view.data("train")[0]))
            out = m(x)
            outs.append(out if isinstance(out, torch.Tensor) else torch.cat([t.reshape(-1) for t in
                                                                           torch.utils._pytree.tree_leaves(out)]))
    k = len(outs) // 2
    for i in range(k):
        a, b = outs[i], outs[k + i]
        if a.shape != b.shape:
            return f"the outputs' shapes differ ({tuple(a.shape)} and {tuple(b.shape)})"
        finite = torch.isfinite(a)
        if not torch.equal(finite, torch.isfinite(b)) or not torch.equal(a[~finite].nan_to_num(0.0),
                                                                          b[~finite].nan_to_num(0.0)):
            return "the outputs differ in where they are NaN or infinite"
        if not bool(finite.any()):
            continue
        gap = float((a[finite] - b[finite]).abs().max())
        if gap > rtol * (1.0 + float(a[finite].abs().max())):
            return f"the outputs differ by up to {gap:.3g} (largest output {float(a[finite].abs().max()):.3g})"
    return None


def _check_output(problem, out, y):
    """A named loss takes one tensor of outputs shaped as it expects; anything else is a one-line error."""
    name = problem._loss_ref
    if not isinstance(name, str):
        return
    what = f"problem {problem.name!r}: the loss {name!r} needs"
    if not isinstance(out, torch.Tensor):
        raise LandscapeError(f"{what} one tensor of outputs, the model returns a {type(out).__name__}; pass a loss "
                             "function loss(output, target) instead")
    if name == "cross_entropy" and (out.dim() != 2 or y.dim() != 1 or y.is_floating_point()
                                    and not bool((y == y.round()).all())):
        raise LandscapeError(f"{what} outputs (N, classes) and class indices (N,), got outputs "
                             f"{tuple(out.shape)} and targets {tuple(y.shape)}; pass a loss function for other shapes "
                             "(e.g. lambda out, y: torch.nn.functional.cross_entropy(out, y))")
    if name == "cross_entropy" and y.numel() and not bool(((y >= 0) & (y < out.shape[1])).all()):
        raise LandscapeError(f"{what} class indices 0 to {out.shape[1] - 1} (the model's outputs), got targets "
                             f"{int(y.min())} to {int(y.max())}; one output per class (targets torch ignores, -100, need a loss "
                             "function: lambda out, y: torch.nn.functional.cross_entropy(out, y))")
    if name != "cross_entropy" and out.numel() != y.numel():
        raise LandscapeError(f"{what} one target per output, got outputs {tuple(out.shape)} and targets "
                             f"{tuple(y.shape)}")


def check(problem, points: torch.Tensor, *, generator: torch.Generator | None = None) -> dict:
    """Compare the problem's evaluation with the module's own at ``points`` (K, D) and near them, on at most
    :data:`SAMPLES` training samples.

    Returns a report: ``{"points", "loss", "grad", "bound", "seconds"}`` — each entry the largest difference
    over its tolerance (≤ 1 passes), or a string saying why it was not compared — plus ``"failed"``: the
    parts that did not pass (``"loss"``, ``"grad"``, ``"bound"``) with a one-line reason each.
    """
    began = time.perf_counter()
    whole, problem = problem, problem.subset(SAMPLES) if problem.n_samples("train") > SAMPLES else problem
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    base = points.detach().cpu().to(torch.float64)
    rms = base.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-3)
    near = base + NEAR * rms * torch.randn(base.shape, generator=gen, dtype=torch.float64)
    thetas = torch.cat([base, near])
    report, failed = {"points": int(thetas.shape[0])}, {}
    try:
        ref, ref_grad, scale = reference(problem, thetas)
    except LandscapeError:
        raise
    except Exception as err:  # noqa: BLE001 - the module's own call failing in float64: said in one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise LandscapeError(f"problem {problem.name!r}: the model's own forward and backward fail in float64 "
                             f"({type(err).__name__}: {first[:160]}); landscape checks and proves in float64 with "
                             "gradients: make forward run there") from None
    finite = torch.isfinite(ref)
    if not bool(finite.all()):
        report["not_finite"] = int((~finite).sum())
        if not bool(finite.any()):
            report.update(loss="not compared: the loss is not finite at the checked points", failed={},
                          seconds=time.perf_counter() - began)
            return report
    try:
        fast = problem.loss(thetas)
    except (RuntimeError, AttributeError, TypeError, ValueError, IndexError, KeyError) as err:  # e.g. random
        # operations or .item() under vmap; a forward reading a BatchNorm layer's buffers, which recomputed
        # statistics replace
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = "; with recomputed BatchNorm statistics its BatchNorm layers are replaced: a forward that reads " \
               "their attributes needs bn='frozen' (--bn frozen)" if problem.bn == "recompute" else ""
        raise LandscapeError(f"problem {problem.name!r}: the model cannot be evaluated batched ({type(err).__name__}: "
                             f"{first[:160]}); forward must be a deterministic function of its registered parameters, "
                             f"buffers and inputs{hint}") from None
    # a non-finite fast value where torch's is finite counts as a difference
    report["loss"] = float(torch.nan_to_num(((fast - ref).abs() / (RTOL * ref.abs() + ATOL * scale))[finite],
                                            nan=math.inf).max())
    if report["loss"] > 1:
        i = int((fast - ref).abs().argmax())
        failed["loss"] = f"its loss {float(fast[i]):.10g} differs from the module's own {float(ref[i]):.10g}"
    try:  # run even where there is no reference to compare with: a gradient that fails is found here
        g, broken = problem.loss_and_grad(thetas)[1], None
    except (RuntimeError, AttributeError, TypeError, ValueError, IndexError, KeyError) as err:  # e.g. a value
        # saved for the backward pass modified in place, a forward re-run by checkpointing in the backward pass
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        g, broken = torch.full((len(thetas), problem.dim), math.nan), f"its gradient fails ({first[:160]})"
    if ref_grad is None:
        report["grad"] = ("not compared (recomputed statistics with no gradient of their own: a BatchNorm subclass, "
                          "or a forward re-run in the backward pass)")
        if broken and "loss" not in failed:
            failed["grad"] = broken
    else:
        both = torch.isfinite(g) & torch.isfinite(ref_grad)  # the same non-finite entry in both agrees
        same = both | (g.isnan() & ref_grad.isnan()) | (g == ref_grad)
        diff = torch.where(both, g - ref_grad, torch.where(same, 0.0, math.inf)).abs()
        err = diff.amax(1) / (RTOL * torch.where(both, ref_grad, 0.0).abs().amax(1) + 100 * ATOL * scale)
        report["grad"] = float(torch.nan_to_num(err[finite], nan=math.inf).max())
        if report["grad"] > 1 and "loss" not in failed:
            failed["grad"] = broken or (f"its gradient differs from autograd through the module's own forward by "
                                        f"{float((g - ref_grad).abs().max()):.3g}")
    if getattr(problem, "_wide", None) is None and getattr(whole, "_wide", None) is not None:
        whole._wide = None  # the subset's copy dropped the wide evaluator (a forward it cannot run): so does the whole
    rel = ((fast - ref).abs() / (ref.abs() + ATOL * scale))[finite]
    if ref_grad is not None:
        rel = torch.cat([rel, (diff.amax(1) / (torch.where(both, ref_grad, 0.0).abs().amax(1)
                                               + 100 * ATOL * scale))[finite]])
    report["relative"] = float(torch.nan_to_num(rel, nan=math.inf).max()) if rel.numel() else 0.0
    report["bound"] = _check_bounds(problem, base, near, ref, scale, failed)
    report["failed"], report["seconds"] = failed, time.perf_counter() - began
    return report


def _check_bounds(problem, base, near, ref, scale, failed):
    """The bound graph against the reference: zero-length pieces equal the loss, short pieces hold it."""
    why = problem.bounds_unavailable()
    if why is not None:
        return f"not compared: {why}"
    k = base.shape[0]
    pts = torch.cat([base, near])
    same = problem.segment_bounds(pts, pts, at_once=True)  # ≥ 2 pieces bounded together
    if same is None:
        return f"not compared: {problem.bounds_unavailable()}"
    rel, absolute = ROUNDING
    slack = (2 * rel + RTOL) * ref.abs() + 2 * absolute + ATOL * scale
    err = torch.maximum(ref - same, same - ref - slack).clamp_min(0) / (RTOL * ref.abs() + ATOL * scale)
    err = torch.where(same == ref, 0.0, err)  # an infinite loss bounded by inf agrees (inf − inf is no difference)
    worst = float(err.max()) if math.isfinite(float(err.max())) else math.inf
    if worst > 1:
        i = int(err.argmax())
        failed["bound"] = (f"the bound graph gives {float(same[i]):.10g} on the zero-length piece at a point where "
                           f"the module's loss is {float(ref[i]):.10g}")
        return worst
    # pieces to the nearby points and to points FAR away: the bound holds the loss at both ends and the midpoint
    far = base + (FAR / NEAR) * (near - base)
    ends, _, _ = reference(problem, torch.cat([far, (base + near) / 2, (base + far) / 2]), grad=False)
    pieces = problem.segment_bounds(torch.cat([base, base]), torch.cat([near, far]))
    if pieces is None:
        return f"not compared: {problem.bounds_unavailable()}"
    need = torch.stack([torch.cat([ref[:k], ref[:k]]), torch.cat([ref[k:], ends[:k]]), ends[k:]]).max(0).values
    if bool((pieces < need).any()):
        i = int((need - pieces).argmax())
        failed["bound"] = (f"the bound of a piece, {float(pieces[i]):.10g}, lies below the module's loss on it, "
                           f"{float(need[i]):.10g}")
    return worst


def check_and_settle(problem, points: torch.Tensor, generator=None) -> dict:
    """:meth:`NetworkProblem.check_capture`: :func:`check` at the points not checked yet; a part that differs drops
    its fast path (with a note) and the check runs again, until everything left agrees with the module."""
    import hashlib

    from .footprint import measure_activations

    points, _ = problem._check(points)
    digests = [hashlib.blake2b(p.detach().cpu().to(torch.float64).numpy().tobytes(), digest_size=16).digest()
               for p in points]
    fresh = [i for i, d in enumerate(digests) if d not in problem._checked]
    if not fresh:
        return {}
    notes = problem.capture["notes"]
    report = check(problem, points[fresh], generator=generator)
    while report["failed"]:
        part, why = next(iter(report["failed"].items()))
        if part == "bound":
            problem._bound_refused = f"the bound graph is not the module's function: {why}"
            notes.append(problem._bound_refused)
        elif problem._mlp is not None and part == "grad" and problem._by_hand:
            problem._by_hand = False
            notes.append(f"the written-out MLP gradient is not the module's: {why}; autograd runs instead")
        elif problem._mlp is not None:
            problem._mlp, problem._by_hand = None, False
            named = dict(problem.module_.named_parameters())
            problem._act_numel = measure_activations(problem.module_, named, problem._buffers,
                                                     problem.data("train")[0][:1])
            notes.append(f"the hand-batched MLP evaluator is not the module's function: {why}; "
                         "functional_call runs instead")
        elif getattr(problem, "_wide", None) is not None:
            problem._wide = None
            notes.append(f"the wide evaluator is not the module's function: {why}; functional_call runs instead")
        elif report.get("relative", math.inf) <= CONDITIONING and not why.startswith("its gradient fails"):  # (the
            # functional_call of the module itself: rounding, amplified)
            notes.append(f"functional_call of the module differs from its own call by {report['relative']:.2g} "
                         "relative (float64 rounding amplified by the model's conditioning); accepted")
            del report["failed"][part]
            continue
        elif part == "grad" and problem.bn == "recompute" and not why.startswith("its gradient fails"):  # the
            # reference's gradient through the statistics may be the one at fault (torch has none)
            notes.append(f"the gradient with recomputed statistics is not compared: {why}")
            del report["failed"][part]
            continue
        elif problem.bn == "recompute" and (own := [n for n, b in problem.module_.named_modules() if isinstance(
                b, nn.modules.batchnorm._BatchNorm) and (type(b) not in _NORMS or "forward" in vars(b))]):
            raise LandscapeError(f"problem {problem.name!r}: {why}, with recomputed statistics: BatchNorm layer "
                                 f"{own[0]} normalizes its own way (a subclass or a forward of its own), which "
                                 "recomputed statistics replace by torch's; use bn='frozen' (--bn frozen)")
        else:
            raise LandscapeError(f"problem {problem.name!r}: {why}, with torch.func.functional_call of the module "
                                 "itself: forward uses a tensor functional_call does not replace (a parameter kept "
                                 "in a list or a plain attribute?) or is not deterministic (random operations? state "
                                 "kept between calls?); make it a function of its registered parameters and buffers")
        report = check(problem, points[fresh], generator=generator)
    problem._checked.update(digests[i] for i in fresh)
    problem.capture.update(evaluator=problem.evaluator, points=problem.capture["points"] + report["points"],
                           seconds=problem.capture["seconds"] + report["seconds"],
                           **{k: report[k] for k in ("loss", "grad", "bound") if k in report})
    return report
