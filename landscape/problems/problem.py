"""`Problem`: a loss as a batched function of flat parameter vectors.

Everything downstream (paths, valleys, planes, training) sees a problem only through
``loss(thetas[K, D]) -> [K]`` and ``loss_and_grad``. K points are evaluated in one call; the
call is cut into chunks whose intermediate activations stay in cache on the CPU (measured:
on the digits MLP at full batch, chunks of ~4 MiB of activations run 1.2x faster than a
loop over points and 2x faster than one giant batch; see ``landscape bench``).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Mapping

import torch

from .._errors import LandscapeError
from .._random import resolve_generator
from .layout import Layout

#: Activation bytes a chunk of points may produce per layer, by device type.
#: On the CPU the optimum sits where the intermediates stay in cache (measured with the hand-written MLP
#: gradient: the digits MLP's loss and gradient cost 2.0 ms a point at 1–3 points a chunk, 2.9 at 7).
CHUNK_BYTES = {"cpu": 2 << 20, "cuda": 1 << 30}


class Problem:
    """A loss L(θ) over flat parameter vectors θ ∈ R^D, evaluated K points at a time.

    Subclasses implement :meth:`_evaluate` (a batched loss over a chunk of points) and may
    hold data splits. Device and dtype always come from the input tensor; data are moved
    (once, then cached) to match.

    Parameters
    ----------
    name : str
        Registry name, or ``"module"`` / ``"user"`` for problems built outside the registry.
    params : dict
        JSON-able keyword arguments that rebuild the problem: ``PROBLEMS[name](**params)``.
    layout : Layout
        How the flat vector splits into named parameters.
    """

    #: one-line description, shown by ``landscape problems``
    summary: str = ""

    def __init__(self, name: str, params: Mapping[str, Any], layout: Layout):
        self.name = name
        self.params = _jsonable(dict(params), where=f"parameters of problem {name!r}")
        self.layout = layout
        self._splits: dict[str, tuple[torch.Tensor, ...]] = {}
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self.chunk_bytes: dict[str, int] = dict(CHUNK_BYTES)
        #: Most samples one call evaluates at once (None: the whole split). The loss, a mean over the split,
        #: is then the sum of chunk means weighted by chunk size, gradients accumulated the same way: exact
        #: up to rounding for losses that are means over samples (every loss of ``LOSSES``).
        self.sample_chunk: int | None = None
        #: Most points one call evaluates at once (None: as many as the cache heuristic takes); set from a
        #: memory budget by :func:`landscape.problems.memory.budgeted`.
        self.max_points: int | None = None

    # ----------------------------------------------------------------- description
    @property
    def dim(self) -> int:
        """D, the number of parameters."""
        return self.layout.dim

    @property
    def spec(self) -> dict:
        """A JSON-able description, ``{"name": ..., "params": {...}}``, that rebuilds this problem."""
        return {"name": self.name, "params": copy.deepcopy(self.params)}

    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the data splits (``("train", "test")`` for most networks, ``()`` if no data)."""
        return tuple(self._splits)

    def data(self, split: str = "train") -> tuple[torch.Tensor, ...]:
        """The tensors of a data split, on the CPU, as generated."""
        if split not in self._splits:
            raise LandscapeError(f"problem {self.name!r} has no data split {split!r}; it has {list(self._splits)}")
        return self._splits[split]

    def n_samples(self, split: str = "train") -> int:
        return 0 if not self._splits else int(self.data(split)[0].shape[0])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<Problem {self.name}({args}), D={self.dim}>"

    def subset(self, n: int, *, seed: int = 0) -> "Problem":
        """This problem with its training split cut to a fixed random subset of ``n`` samples.

        The subset is drawn without replacement by ``torch.Generator().manual_seed(seed)``, so the same
        ``n`` and ``seed`` give the same samples on any machine. The result shares the module and the
        spec (it is a cheaper stand-in for searching, e.g. ``connect(..., search_samples=n)``; certify on
        the problem itself). Returns ``self`` when ``n`` covers the split.
        """
        total = self.n_samples("train")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise LandscapeError(f"a subset needs a positive number of samples, got {n!r}")
        if not self._splits or n >= total:
            return self
        rows = torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:n]
        view = copy.copy(self)
        view._splits = {**self._splits, "train": tuple(t[rows] for t in self._splits["train"])}
        view._cache = {}
        return view

    # ----------------------------------------------------------------- evaluation
    def loss(self, thetas: torch.Tensor, *, split: str = "train", batch: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of K parameter vectors at once.

        Parameters
        ----------
        thetas : Tensor, shape (K, D) or (D,)
            Points in parameter space; their device and dtype decide where and how the loss is computed.
        split : str
            Data split to evaluate on (``"train"`` or ``"test"``); ignored by analytic problems.
        batch : Tensor of int, shape (B,) or (K, B), optional
            Sample indices of a minibatch, shared by all points or one row per point. Full batch when None.

        Returns
        -------
        Tensor, shape (K,) (or a scalar for a single (D,) input)
            Differentiable when ``thetas`` requires grad (curve training); otherwise computed without building a
            graph. Second derivatives (Hessian-vector products): :func:`landscape.minima.curvature.hvp`, which sets
            aside an evaluator that writes its gradient out (the conv nets' wide evaluator refuses a second one).
        """
        thetas, single = self._check(thetas)
        with torch.set_grad_enabled(torch.is_grad_enabled() and thetas.requires_grad):
            out = sum(w * torch.cat([self._evaluate(t, d) for t, d in self._chunks(thetas, split, batch, rows)])
                      for rows, w in self._sample_slices(split, batch))
        return out[0] if single else out

    def loss_and_grad(
        self, thetas: torch.Tensor, *, split: str = "train", batch: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and gradient of K parameter vectors at once.

        With :attr:`sample_chunk` set, the data are taken that many samples at a time and the chunks'
        losses and gradients summed with weights n_chunk / N: the same mean, in bounded memory.

        Returns
        -------
        loss : Tensor, shape (K,)
        grad : Tensor, shape (K, D)
        """
        thetas, single = self._check(thetas)
        loss = thetas.new_zeros(thetas.shape[0])
        grad = torch.zeros_like(thetas)  # filled chunk by chunk: no list of chunks to concatenate
        for rows, w in self._sample_slices(split, batch):
            start = 0
            for t, d in self._chunks(thetas, split, batch, rows):
                value, g = self._evaluate_with_grad(t, d)
                stop = start + t.shape[0]
                loss[start:stop] += w * value
                grad[start:stop] += w * g
                start = stop
        return (loss[0], grad[0]) if single else (loss, grad)

    def _evaluate_with_grad(self, thetas: torch.Tensor, data: tuple[torch.Tensor, ...]):
        """Loss and gradient of a chunk (see :meth:`_evaluate`): autograd through :meth:`_evaluate` unless overridden."""
        with torch.enable_grad():
            t = thetas.detach().requires_grad_(True)
            value = self._evaluate(t, data)
            (g,) = torch.autograd.grad(value.sum(), t)
        return value.detach(), g

    def loss_on_plane(self, origin: torch.Tensor, directions: torch.Tensor, coords: torch.Tensor, *,
                      split: str = "train") -> torch.Tensor:
        """Loss at the K points ``origin + coords @ directions`` of an affine family (a plane's grid).

        Parameters
        ----------
        origin : Tensor, shape (D,)
        directions : Tensor, shape (k, D)
        coords : Tensor, shape (K, k)
            All three on one device and dtype, which decide where and how the loss is computed.
        split : str

        Returns
        -------
        Tensor, shape (K,)
            The same values as ``loss(origin + coords @ directions)``. This default builds the points
            and calls :meth:`loss`; a subclass may use the structure of the family
            (:class:`NetworkProblem` computes the first layer of an MLP once for all points).
        """
        if directions.dim() != 2 or origin.shape != (self.dim,) or directions.shape[1] != self.dim \
                or coords.dim() != 2 or coords.shape[1] != directions.shape[0]:
            raise LandscapeError(f"loss_on_plane needs origin ({self.dim},), directions (k, {self.dim}) and coords "
                                 f"(K, k); got {tuple(origin.shape)}, {tuple(directions.shape)}, {tuple(coords.shape)}")
        return self.loss(origin + coords @ directions, split=split)

    def segment_bounds(self, start: torch.Tensor, end: torch.Tensor, *, split: str = "train") -> torch.Tensor | None:
        """Upper bounds of the loss over whole segments, or None where this problem has none.

        Parameters
        ----------
        start, end : Tensor, shape (P, D)

        Returns
        -------
        Tensor, shape (P,), or None
            B_p ≥ L(start[p] + t·(end[p] − start[p])) for every t in [0, 1]: a proof, not an estimate
            (non-finite where it could not be computed). The base class has none: a problem defined
            by its own formula is certified by dense evaluation (:func:`landscape.certify`).
        """
        return None

    def check_capture(self, points: torch.Tensor, *, generator: torch.Generator | None = None) -> dict:
        """Check the evaluation against an independent one at ``points`` (K, D); returns a report.

        A problem built from an ``nn.Module`` compares its fast paths with the module's own ``forward``
        (:meth:`landscape.NetworkProblem.check_capture`). The base class evaluates its own formula: nothing to
        compare, an empty report.
        """
        return {}

    def bounds_unavailable(self) -> str | None:
        """Why :meth:`segment_bounds` gives no bounds here (said next to a dense check), or None when it does."""
        return "the loss is its own formula, with no bound propagation"

    def init(
        self,
        generator: torch.Generator | None = None,
        *,
        n: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Random initial parameters.

        Parameters
        ----------
        generator : torch.Generator, optional
            Source of randomness (a CPU generator); the same seed gives the same point on any device.
            Seeded 0 when None (``landscape._random``).
        n : int, optional
            Number of points; returns shape (n, D) if given, else (D,).
        """
        k = 1 if n is None else n
        generator = resolve_generator(generator)
        theta = torch.stack([self._init_one(generator) for _ in range(k)]).to(device=device, dtype=dtype)
        return theta[0] if n is None else theta

    # ----------------------------------------------------------------- subclass hooks
    def _evaluate(self, thetas: torch.Tensor, data: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Loss of a chunk ``thetas[k, D]`` on ``data`` (tensors with a leading k axis). Override."""
        raise NotImplementedError

    def _init_one(self, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def activations_per_sample(self) -> int:
        """Values one forward pass creates per sample, summed over the layers (0 without data): sets memory budgets."""
        return 0

    def _activation_numel(self, n_samples: int) -> int:
        """Largest number of intermediate values one point creates in one layer (sets chunk sizes)."""
        return max(n_samples, 1)

    # ----------------------------------------------------------------- plumbing
    def _check(self, thetas) -> tuple[torch.Tensor, bool]:
        if not isinstance(thetas, torch.Tensor):
            raise LandscapeError(f"parameters must be a torch.Tensor of shape (K, {self.dim}), got {type(thetas).__name__}")
        single = thetas.dim() == 1
        if single:
            thetas = thetas.unsqueeze(0)
        if thetas.dim() != 2 or thetas.shape[1] != self.dim:
            raise LandscapeError(
                f"parameters have shape {tuple(thetas.shape)}, but problem {self.name!r} needs (K, {self.dim})"
            )
        if not thetas.is_floating_point():
            raise LandscapeError(f"parameters must be floating point, got {thetas.dtype}")
        return thetas, single

    def _device_data(self, split: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        if not self._splits:
            return ()
        key = (split, str(device), dtype)
        if key not in self._cache:
            self._cache[key] = tuple(
                t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device) for t in self.data(split)
            )
        return self._cache[key]

    def chunk_size(self, n_samples: int, device: torch.device, dtype: torch.dtype = torch.float32) -> int:
        """How many points one batched call takes so its activations fit ``chunk_bytes`` (at most :attr:`max_points`)."""
        budget = self.chunk_bytes.get(torch.device(device).type, CHUNK_BYTES["cuda"])
        per_point = self._activation_numel(n_samples) * torch.finfo(dtype).bits // 8
        size = max(1, budget // max(per_point, 1))
        return size if self.max_points is None else max(1, min(size, self.max_points))

    def _sample_slices(self, split, batch):
        """``(rows, weight)`` of each chunk of samples: ``(None, 1.0)`` when the split is taken whole."""
        n = self.n_samples(split) if self._splits else 0
        size = self.sample_chunk
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise LandscapeError(f"sample_chunk must be a positive integer or None, got {size!r}")
        if batch is not None or size is None or n <= size:
            return [(None, 1.0)]
        return [(slice(a, min(n, a + size)), (min(n, a + size) - a) / n) for a in range(0, n, size)]

    def _chunks(self, thetas, split, batch, rows=None):
        data = self._device_data(split, thetas.device, thetas.dtype)
        if rows is not None:
            data = tuple(t[rows] for t in data)
        k = thetas.shape[0]
        if batch is not None and data:
            batch = batch.to(thetas.device)
            if batch.dim() == 1:
                data = tuple(t[batch] for t in data)
            elif batch.dim() == 2 and batch.shape[0] == k:
                data = tuple(t[batch] for t in data)  # [k, B, ...]: one minibatch per point
                return self._split_rows(thetas, data, per_row=True)
            else:
                raise LandscapeError(f"batch indices must have shape (B,) or ({k}, B), got {tuple(batch.shape)}")
        return self._split_rows(thetas, data, per_row=False)

    def _split_rows(self, thetas, data, per_row):
        k = thetas.shape[0]
        n = (data[0].shape[1] if per_row else data[0].shape[0]) if data else 0
        size = self.chunk_size(n, thetas.device, thetas.dtype)
        for start in range(0, k, size):
            stop = min(k, start + size)
            if per_row:
                chunk = tuple(t[start:stop] for t in data)
            else:
                chunk = tuple(t.expand(stop - start, *t.shape) for t in data)
            yield thetas[start:stop], chunk


def _jsonable(value, *, where: str):
    """Check that ``value`` survives a JSON round trip unchanged (tuples become lists)."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise LandscapeError(f"{where} must be JSON values (numbers, strings, lists, dicts): {err}") from None
    return json.loads(text)
