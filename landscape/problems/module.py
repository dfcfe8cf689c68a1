"""Problems built from an ``nn.Module``, a dataset and a loss.

Three evaluators, one contract. A plain ``nn.Sequential`` of ``Linear`` layers and elementwise
activations runs on a hand-batched path: every layer of K networks is one batched product, and with a
named loss its gradient is written out by hand (:func:`.mlp.mlp_loss_and_grad`). A module whose parameters
all sit in convolutions, linear and BatchNorm layers runs K networks in one forward (:mod:`.grouped`).
Anything else runs ``torch.func.functional_call`` (:mod:`.fcall`) under ``torch.func.vmap``. All are cut into
chunks by :meth:`Problem.chunk_size`; a chunk of one point is the plain loop."""

from __future__ import annotations

import functools
import json
import math
from typing import Mapping

import torch
from torch import nn
from torch.func import vmap

from . import bounds
from .losses import LOSSES, check_targets
from .mlp import by_hand, mlp_forward, mlp_loss_and_grad, mlp_loss_on_plane, mlp_plan
from .batchnorm import Tape, chunked_loss, chunked_statistics, norm_calls, recomputed_loss, recomputing_copy
from .footprint import forward_flops, measure_activations, saved_values
from .fastpath import fused_attention_off
from .fcall import functional_call
from .grouped import CHUNK_BYTES as WIDE_CHUNK_BYTES, sample_blocks, wide_loss, wide_plan
from .._errors import LandscapeError
from .._registry import Registry
from .layout import Layout
from .problem import Problem
from .traced import Unsupported, graph_plan, traced_segment_bounds


#: What BatchNorm layers do at a point θ of a path or a plane: ``"recompute"`` normalizes with
#: statistics recomputed at θ from the training data (Garipov et al. 2018: a point between two
#: minima has its own activation statistics); ``"frozen"`` uses the module's running statistics.
BN_POLICIES = Registry("BatchNorm policy", ("recompute", "frozen"))

#: Embedded problems (by spec) whose differential check passed when first built in this process.
_PASSED: dict[str, dict] = {}

class NetworkProblem(Problem):
    """Loss of a network on a dataset, over the network's flattened parameters.

    Parameters
    ----------
    name, params
        See :class:`Problem`.
    module : nn.Module
        The architecture. Its parameter values are ignored (θ supplies them); its buffers are
        used as they are (e.g. BatchNorm running statistics, in evaluation mode).
    splits : dict of str to (x, y)
        Data splits; ``x`` of shape (N, ...) and ``y`` of shape (N, ...).
    loss : str or callable
        A key of :data:`LOSSES`, or ``loss(output[N, ...], target[N, ...]) -> scalar`` for one network.
    weight_decay : float
        Adds ``weight_decay / 2 · Σ ‖W‖²`` over the parameters named ``*weight``.
    bn : {"recompute", "frozen"}, optional
        For modules with BatchNorm layers (see :data:`BN_POLICIES`): ``"recompute"`` (the default)
        evaluates every θ with normalization statistics recomputed from the full training split at
        that θ, as ``torch`` would after resetting the running statistics and one training-mode
        pass over the training data (mean, unbiased variance), then evaluation mode; ``"frozen"``
        uses the module's buffers. None for modules without BatchNorm.
    """

    def __init__(self, name, params, module: nn.Module, splits: Mapping[str, tuple], loss="mse",
                 weight_decay: float = 0.0, summary: str = "", bn: str | None = None):
        module = fused_attention_off(module.eval())  # no fused kernel: it has no derivative
        named = dict(module.named_parameters())
        if not named:
            raise LandscapeError(f"module {type(module).__name__} has no parameters")
        super().__init__(name, params, Layout.of(named))
        self.summary = summary
        self.module_ = module
        self._buffers = dict(module.named_buffers())
        self._splits = {k: tuple(torch.as_tensor(t) for t in v) for k, v in splits.items()}
        if "train" not in self._splits:
            raise LandscapeError("a network problem needs a 'train' split of (x, y)")
        for split, pair in self._splits.items():
            check_targets(loss, pair[1], split=split)  # e.g. exponential-loss labels other than ±1
        self._loss_ref = loss  # what the differential check evaluates (torch's own loss for a name)
        if isinstance(loss, str):
            self.loss_name, self._batched_loss = loss, LOSSES.lookup(loss)
        else:
            self.loss_name, self._batched_loss = getattr(loss, "__name__", "custom"), vmap(loss)
        self.weight_decay = float(weight_decay)
        self._decay = torch.cat([torch.full((s,), name.endswith("weight")) for name, s in
                                 zip(self.layout.names, self.layout.sizes)])
        self._bn_layers = [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._bn_calls = norm_calls(module, self._bn_layers, self._splits["train"][0][:2])
        self._bn = None
        self._recomputing = None
        self.bn = bn if bn is not None else ("recompute" if self._bn_layers else None)
        # the hand-batched MLP takes inputs (N, features); other shapes run the generic path
        self._mlp = mlp_plan(module) if self._splits["train"][0].dim() == 2 else None
        # a plain MLP with a named loss: its loss and gradient are computed by hand (mlp.mlp_loss_and_grad)
        self._by_hand = self._mlp is not None and isinstance(loss, str) and by_hand(self._mlp, loss)
        # other modules of conv, linear and BatchNorm layers: K networks in one forward (grouped.WidePlan)
        self._wide, self._wide_refused = wide_plan(module, self.layout) if self._mlp is None else (None, "an MLP")
        self.chunk_bytes["cpu"] = WIDE_CHUNK_BYTES if self._wide is not None else self.chunk_bytes["cpu"]
        self._traced = None  # (traced plan, reason): traced when first asked for bounds
        self._widths = [p.shape[0] for n, p in named.items() if n.endswith("weight")]
        if self._mlp is None:
            self._act_numel = measure_activations(module, named, self._buffers, self._splits["train"][0][:1])
        self._bound_refused = None  # why the bound graph is not the module's function (the differential check)
        self._checked = set()  # digests of the points the differential check passed at
        #: The differential check's findings (:meth:`check_capture`): evaluator, points checked, worst errors, notes.
        self.capture = {"evaluator": self.evaluator, "points": 0, "seconds": 0.0, "notes": []}
        key = None if name in ("module", "user") else json.dumps(self.spec, sort_keys=True)
        if key in _PASSED:  # an embedded problem of this spec passed in this process: the same module and data
            self.capture = {**_PASSED[key], "notes": []}
        else:
            self.check_capture(self.init(torch.Generator().manual_seed(0), n=1, dtype=torch.float64))
            if key is not None and not self.capture["notes"]:
                _PASSED[key] = dict(self.capture)

    @property
    def bn(self) -> str | None:
        """The BatchNorm policy, one of :data:`BN_POLICIES` (None when the module has no BatchNorm)."""
        return self._bn

    @bn.setter
    def bn(self, policy: str | None):
        if policy is not None and not self._bn_layers:
            raise LandscapeError(f"problem {self.name!r} has no BatchNorm layers; a BatchNorm policy (--bn) "
                                 "applies only to models with BatchNorm")
        if policy is None and self._bn_layers:
            raise LandscapeError(f"problem {self.name!r} has BatchNorm layers; choose a policy in {list(BN_POLICIES)}")
        if policy is not None:
            BN_POLICIES.lookup(policy)
        conflict = getattr(self, "_buffer_conflict", None)  # set when two state_dicts' statistics differ
        if policy == "frozen" and conflict:
            raise LandscapeError(f"{conflict}: frozen statistics define the loss of one of them only; use --bn "
                                 "recompute (statistics recomputed at every point from the data)")
        again = [f"{name} ({k} calls)" for name, k in self._bn_calls.items() if k > 1]
        if policy == "recompute" and again:
            raise LandscapeError(f"problem {self.name!r}: BatchNorm layer {', '.join(again)} is called more than once "
                                 "in forward; statistics recomputed at every point are defined for one call a layer: "
                                 "use bn='frozen' (--bn frozen)")
        self._bn = policy

    @property
    def evaluator(self) -> str:
        """``"bmm"`` (hand-batched MLP), ``"wide"`` (:mod:`.grouped`) or ``"vmap"`` (generic functional_call)."""
        return "bmm" if self._mlp is not None else "wide" if self._wide is not None else "vmap"

    def module(self) -> nn.Module:
        """The architecture as an ``nn.Module`` (a shared instance; load θ with :meth:`to_module`)."""
        return self.module_

    def to_module(self, theta: torch.Tensor) -> nn.Module:
        """A fresh copy of the module holding the parameters θ of shape (D,)."""
        import copy

        m = copy.deepcopy(self.module_)
        theta = theta.detach().cpu()
        with torch.no_grad():
            for name, value in self.layout.unflatten(theta).items():
                m.get_parameter(name).copy_(value)
            if self._bn == "recompute":  # running statistics of θ itself, as the loss uses them
                for name, (mean, var) in self.batchnorm_statistics(theta).items():
                    layer = m.get_submodule(name)
                    layer.running_mean.copy_(mean)
                    layer.running_var.copy_(var)
        return m

    def batchnorm_statistics(self, theta: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per BatchNorm layer, the (mean, unbiased variance) of its input over the training split at θ (D,)
        (:attr:`sample_chunk` samples at a time when set, exactly)."""
        if not self._bn_layers:
            return {}
        tape, module = Tape(collecting=True), self._recompute_module()
        x = self._device_data("train", theta.device, theta.dtype)[0]
        with torch.no_grad():
            if len(self._sample_slices("train", None)) > 1:
                stats, n = chunked_statistics(module, self.layout.unflatten, theta.detach()[None], x, self.sample_chunk)
                return {k: (m[0], v[0] * n[k] / max(n[k] - 1, 1)) for k, (m, v) in stats.items()}
            with tape.active(module):
                functional_call(module, self.layout.unflatten(theta.detach()), (x,))
        return dict(tape.stats)

    def flops_per_point(self, n_samples: int | None = None) -> float:
        """Multiply-add FLOPs of one forward pass over a split, for throughput figures: 2·N·Σ(weights) for an MLP,
        else the convolutions' and linear layers' (:func:`.footprint.forward_flops`, each weight at every position)."""
        n = self.n_samples("train") if n_samples is None else n_samples
        if self._mlp is None:
            return n * forward_flops(self.module_, dict(self.module_.named_parameters()), self._buffers,
                                     self._splits["train"][0][:1])
        weights = sum(s for name, s in zip(self.layout.names, self.layout.sizes) if name.endswith("weight"))
        return 2.0 * n * weights

    def activations_per_sample(self) -> int:
        """Values autograd keeps per sample for the backward pass of the module (measured once, on 1 and 2 samples)."""
        if getattr(self, "_saved_per_sample", None) is None:
            x = self._splits["train"][0]
            params = {k: v.detach().requires_grad_(True) for k, v in self.module_.named_parameters()}
            counts = [saved_values(self.module_, params, self._buffers, x[:n]) for n in (1, 2)] if len(x) > 1 else [0, 0]
            self._saved_per_sample = max(counts[1] - counts[0], int(x[:1].numel()), 1)
        return self._saved_per_sample

    # ---------------------------------------------------------------- evaluation
    def loss(self, thetas, *, split="train", batch=None):
        """See :meth:`Problem.loss`. With recomputed BatchNorm and :attr:`sample_chunk`, the statistics too are taken
        a chunk of samples at a time (exact); a differentiable loss (``thetas`` requiring grad) reads them whole."""
        if not (torch.is_grad_enabled() and isinstance(thetas, torch.Tensor) and thetas.requires_grad):
            out = self._chunked_bn(thetas, split, batch, grad=False)
            if out is not None:
                return out[0]
        return super().loss(thetas, split=split, batch=batch)

    def loss_and_grad(self, thetas, *, split="train", batch=None):
        """See :meth:`Problem.loss_and_grad`; with recomputed BatchNorm and :attr:`sample_chunk`, exact in chunks
        of samples throughout (:func:`landscape.problems.batchnorm.chunked_loss`)."""
        out = self._chunked_bn(thetas, split, batch, grad=True)
        return out if out is not None else super().loss_and_grad(thetas, split=split, batch=batch)

    def _chunked_bn(self, thetas, split, batch, grad):
        """Loss (and gradient) with BatchNorm statistics in chunks of samples; None where that does not apply."""
        if self._bn != "recompute" or batch is not None or len(self._sample_slices("train", None)) < 2:
            return None
        thetas, single = self._check(thetas)
        size = self.chunk_size(self.sample_chunk, thetas.device, thetas.dtype)
        parts = [chunked_loss(self, t, split, grad) for t in thetas.split(size)]
        loss, g = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]) if grad else None
        if self.weight_decay:
            mask = self._decay.to(thetas.device)
            loss = loss + 0.5 * self.weight_decay * thetas[:, mask].pow(2).sum(-1)
            if grad:
                g[:, mask] += self.weight_decay * thetas[:, mask]
        return (loss[0], None if g is None else g[0]) if single else (loss, g)

    def _sample_slices(self, split, batch):  # the wide evaluator: blocks of samples the allocator reuses
        return sample_blocks(self, split, batch) or super()._sample_slices(split, batch)

    def _activation_numel(self, n_samples):
        if self._mlp is not None:
            return n_samples * max(self._widths)
        if self._wide is not None:  # one pass at a time (the statistics pass ends before the loss pass)
            return n_samples * self._act_numel
        if self._bn == "recompute":  # each point also runs the statistics pass over the training split
            return (n_samples + min(self.n_samples("train"), self.sample_chunk or n_samples)) * self._act_numel
        return n_samples * self._act_numel

    def _evaluate(self, thetas, data):
        x, y = data
        if self._by_hand and not torch.is_grad_enabled():
            value = mlp_loss_and_grad(self._mlp, self.layout, self.loss_name, thetas, x, y, grad=False)[0]
        elif self._mlp is not None:
            out = mlp_forward(self._mlp, self.layout.unflatten(thetas), x)
            value = self._batched_loss(out, y)
        else:  # K networks in one forward (grouped.wide_loss), else functional_call under vmap
            value = wide_loss(self, thetas, x, y)
            if value is None and self._bn == "recompute":
                value = recomputed_loss(self, thetas, x, y)
            elif value is None:
                value = self._vmap_loss(thetas, x, y)
        if self.weight_decay:
            mask = self._decay.to(thetas.device)
            value = value + 0.5 * self.weight_decay * thetas[:, mask].pow(2).sum(-1)
        return value

    def _evaluate_with_grad(self, thetas, data):
        if not self._by_hand:
            return super()._evaluate_with_grad(thetas, data)
        value, grad = mlp_loss_and_grad(self._mlp, self.layout, self.loss_name, thetas, *data)
        if self.weight_decay:
            mask = self._decay.to(thetas.device)
            value = value + 0.5 * self.weight_decay * thetas[:, mask].pow(2).sum(-1)
            grad[:, mask] += self.weight_decay * thetas[:, mask]
        return value, grad

    def segment_bounds(self, start, end, *, split="train", at_once=False):
        """Upper bounds of the loss over whole segments; see :meth:`Problem.segment_bounds`.

        Plain MLPs run the hand-batched propagation of :mod:`.bounds`; other modules a ``torch.fx`` trace
        (:mod:`.traced`: convolutions, pooling, residual additions, frozen BatchNorm, ...). None where
        :meth:`bounds_unavailable` gives a reason. ``at_once``: all pieces in one propagation, however large
        (the differential check bounds two or more together), else as many as fit :data:`.bounds.BOUND_BYTES`.
        """
        if self.bounds_unavailable() is not None:
            return None
        start, _ = self._check(start)
        end, _ = self._check(end)
        data = self._device_data(split, start.device, torch.float64)
        width = max(self._widths + [data[0].shape[-1]]) if self._mlp is not None else 2 * self._act_numel
        size = start.shape[0] if at_once else bounds.pieces_per_batch(data[0].shape[0], width, start.device)
        run = functools.partial(bounds.mlp_segment_bounds, self._mlp) if self._mlp is not None else \
            functools.partial(traced_segment_bounds, self._traced[0])
        try:
            return torch.cat([run(self.layout, data, self.loss_name, a, b, decay_mask=self._decay,
                                  weight_decay=self.weight_decay) for a, b in zip(start.split(size), end.split(size))])
        except Unsupported as err:  # found only while running: no proof from now on, and why
            self._traced = (None, f"{err} has no bound propagation")
            return None
        except (RuntimeError, ValueError, TypeError, IndexError, ZeroDivisionError) as err:  # no proof, not a crash
            self._traced = (None, f"the bound propagation failed ({type(err).__name__}: {str(err)[:80]})")
            return None

    def bounds_unavailable(self) -> str | None:
        """Why :meth:`segment_bounds` cannot bound this problem's loss, or None when it can."""
        if self.loss_name not in bounds.LOSS_BOUNDS or not isinstance(self._loss_ref, str):
            return f"the loss {self.loss_name!r} has no bound (cross-entropy, MSE, L1 and exponential have)"
        if self._bound_refused is not None:
            return self._bound_refused
        if self._bn == "recompute":
            return ("BatchNorm statistics recomputed at every point depend on the parameters and are not bounded; "
                    "the proof covers frozen statistics (bn='frozen')")
        if self._mlp is not None:
            return None if bounds.supported(self._mlp, self.loss_name) else "an activation of the MLP has no bound"
        if self._traced is None:
            self._traced = graph_plan(self.module_, self._splits["train"][0][:2])
        return self._traced[1]

    def check_capture(self, points: torch.Tensor, *, generator: torch.Generator | None = None) -> dict:
        """Check the fast evaluation against the module's own ``forward`` and loss at ``points`` and near them.

        The differential check of :mod:`.capture`, float64: the loss, the gradient and the bound graph. A fast
        path that differs is dropped for good, with a one-line note in :attr:`capture` (``"notes"``): the
        hand-batched MLP for ``functional_call`` under ``vmap``, the bound for the dense check (its reason in
        :meth:`bounds_unavailable`). Points already checked are skipped, so the endpoints of many connections
        cost one check each. Runs when the problem is built (at two random points) and at the endpoints of
        every :func:`landscape.connect`.

        Parameters
        ----------
        points : Tensor, shape (K, D) or (D,)

        Returns
        -------
        dict
            The report of :func:`landscape.problems.capture.check` for the new points (``{}`` if none were new).

        Raises
        ------
        LandscapeError
            When even the generic evaluation differs from the module's own call: the module is then not a
            deterministic function of its parameters and inputs (random operations, state kept between calls).
        """
        from .capture import check_and_settle

        return check_and_settle(self, points, generator)

    def loss_on_plane(self, origin, directions, coords, *, split="train"):
        """Loss at ``origin + coords @ directions``; see :meth:`Problem.loss_on_plane`.

        For a plain MLP the first layer is computed once for the whole plane
        (:func:`landscape.problems.mlp.mlp_loss_on_plane`).
        """
        if self._mlp is None or origin.shape != (self.dim,) or directions.dim() != 2 \
                or directions.shape[1] != self.dim or coords.dim() != 2 or coords.shape[1] != directions.shape[0]:
            return super().loss_on_plane(origin, directions, coords, split=split)  # (raises any shape error)
        x, y = self._device_data(split, coords.device, coords.dtype)
        decay = (self.weight_decay, self._decay.to(coords.device)) if self.weight_decay else None
        return mlp_loss_on_plane(self._mlp, self.layout, self.loss_name if self._by_hand else self._batched_loss,
                                 x, y, origin, directions, coords,
                                 self.chunk_size(x.shape[0], coords.device, coords.dtype), decay)

    def _vmap_loss(self, thetas, x, y):
        buffers = {k: v.to(thetas.device, thetas.dtype) if v.is_floating_point() else v.to(thetas.device)
                   for k, v in self._buffers.items()}

        def one(theta, xi, yi):
            out = functional_call(self.module_, (self.layout.unflatten(theta), buffers), (xi,))
            return self._one_loss(out, yi)

        return vmap(one)(thetas, x, y)

    def _one_loss(self, out, y):
        """The loss of one network's outputs (whatever a user's loss function takes: a tuple, a dict)."""
        if not isinstance(self._loss_ref, str):
            return self._loss_ref(out, y)
        return self._batched_loss(out.unsqueeze(0), y.unsqueeze(0))[0]

    def _recompute_module(self) -> nn.Module:
        """A copy of the module whose BatchNorm layers normalize with statistics taken from a :class:`Tape`."""
        if self._recomputing is None:
            self._recomputing = recomputing_copy(self.module_, self._bn_layers)
        return self._recomputing

    def _init_one(self, generator):
        """PyTorch's default init for Linear/Conv layers, U(−1/√fan_in, 1/√fan_in), drawn from ``generator``."""
        parts = []
        fan_in = None  # None after a normalization layer's scale: its shift starts at zero
        for name, shape in zip(self.layout.names, self.layout.shapes):
            size = math.prod(shape)  # a reparametrized weight's tensors (weight_norm's g and v) drawn as weights
            if (name.endswith(("weight", "weight_g", "weight_v", "weight_orig")) or ".parametrizations." in name) \
                    and len(shape) >= 2:
                fan_in = math.prod(shape[1:])
            elif name.endswith("weight"):
                parts.append(torch.ones(size))
                fan_in = None
                continue
            if fan_in is None:
                parts.append(torch.zeros(size))
                continue
            bound = 1.0 / math.sqrt(fan_in)
            parts.append((torch.rand(size, generator=generator) * 2 - 1) * bound)
        return torch.cat(parts)
