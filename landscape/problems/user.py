"""Users' problems: built from any ``nn.Module`` (:func:`from_module`), or named like ``package.module:factory``
(as uvicorn names ``module:app``)."""

from __future__ import annotations

import copy

import importlib
import inspect
import sys
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .._errors import LandscapeError
from .module import NetworkProblem
from .problem import Problem


def load_user_problem(ref: str, **kwargs) -> Problem:
    """Import ``package.module:factory`` and call ``factory(**kwargs)``.

    The factory returns a :class:`Problem`, or a tuple ``(model, data, loss)`` (optionally
    ``(model, data, loss, test_data)``) turned into one by :func:`landscape.from_module`.
    The current directory is importable, so ``--problem mynet:build`` finds ``./mynet.py``.

    This runs the user's code by the user's explicit request only: a checkpoint naming a
    factory never triggers an import by itself (see :func:`landscape.load_checkpoint`).
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise LandscapeError(f"--problem {ref!r} must look like package.module:factory")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise LandscapeError(f"cannot import {module_name!r} for --problem {ref}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise LandscapeError(f"{module_name!r} has no callable {attr!r} for --problem {ref}")
    _check_accepts(factory, ref, kwargs)
    made = factory(**kwargs)
    if isinstance(made, Problem):
        problem = made
    elif isinstance(made, tuple) and len(made) in (3, 4):
        problem = from_module(made[0], made[1], made[2], test_data=made[3] if len(made) == 4 else None)
    else:
        raise LandscapeError(f"{ref} returned {type(made).__name__}; return a Problem or (model, data, loss)")
    if problem.name == "module":  # not rebuildable from the registry: remember the factory instead
        problem.name = "user"
        problem.params = {"factory": ref, **problem.params, **kwargs}
    return problem


def _check_accepts(factory, ref: str, kwargs: Mapping) -> None:
    """Refuse, in one line, parameters (``-w``, ``-p key=value``) that the factory does not take."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return
    params = sig.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in named]
    if unknown:
        given = ", ".join("-w" if k == "width" else f"-p {k}=..." for k in unknown)
        accepts = ", ".join(named) if named else "no parameters"
        raise LandscapeError(f"--problem {ref}: the factory takes {accepts}, not {', '.join(unknown)} "
                             f"(given by {given}); drop them or add them to {ref.partition(':')[2]}'s signature")


def from_module(model: nn.Module, data, loss="mse", *, test_data=None, weight_decay: float = 0.0,
                name: str = "module", params: Mapping | None = None, bn: str | None = None) -> NetworkProblem:
    """Build a :class:`Problem` from any ``nn.Module``.

    Parameters
    ----------
    model : nn.Module
        The network. The problem keeps its own copy (``copy.deepcopy``), used functionally
        (``torch.func.functional_call``) in evaluation mode: the model is not modified, and changing it later
        (its mode, buffers such as BatchNorm's running statistics, parameters) does not change the problem.
    data : (Tensor, Tensor) or torch.utils.data.Dataset
        Training inputs of shape (N, ...) and targets of shape (N, ...); or a map-style dataset whose
        items are ``(x, y)`` pairs, read once into tensors (the loss is the mean over all of it; set
        ``problem.sample_chunk`` to evaluate it a chunk of samples at a time).
    loss : str or callable
        A key of ``landscape.LOSSES`` or a function ``loss(output, target) -> scalar``.
    test_data : (Tensor, Tensor), optional
    weight_decay : float
    bn : {"recompute", "frozen"}, optional
        BatchNorm policy for models with BatchNorm layers (default ``"recompute"``; see :class:`NetworkProblem`).

    Returns
    -------
    NetworkProblem
        Its ``spec`` names the class only: such a problem is rebuilt by the user's own factory
        (``--problem package.module:factory``), never from a file.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    >>> x = torch.randn(20, 3); y = x.sum(1, keepdim=True)
    >>> problem = from_module(model, (x, y), "mse")
    >>> problem.loss(problem.init(torch.Generator().manual_seed(0), n=5)).shape
    torch.Size([5])
    """
    lazy = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if nn.parameter.is_lazy(t)]
    if lazy:  # their shapes come at the first call: the problem's layout could not be read (a traceback)
        raise LandscapeError(f"the model's {lazy[0]} is not initialized yet (a lazy layer, nn.LazyLinear and the like): "
                             f"run the model once on a batch (model(x[:2])) before from_module")
    # the problem's own copy: it sets evaluation mode, and it reads buffers a later training step would change; a
    # tensor kept as a plain attribute and computed from parameters (hook-style weight_norm: not deep-copyable, and
    # recomputed at every call) is copied detached
    plain = {id(v): v.detach().clone() for m in model.modules() for v in vars(m).values()
             if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and v.grad_fn is not None}
    try:
        model = copy.deepcopy(model, plain)
    except Exception as err:  # noqa: BLE001 — any failure of a user's __deepcopy__ / unpicklable attribute
        raise LandscapeError(f"the model cannot be copied ({type(err).__name__}: {err}); from_module keeps a copy so "
                             "that later changes to the model do not change the problem: make it deep-copyable") from None
    splits = {"train": as_tensors(data, "data")}
    if test_data is not None:
        splits["test"] = as_tensors(test_data, "test_data")
    return NetworkProblem(name, dict(params or {"class": type(model).__name__}), model, splits, loss,
                          weight_decay=weight_decay, bn=bn)


def as_tensors(data, what: str) -> tuple:
    """``(x, y)`` tensors from a pair of tensors or arrays, or from a map-style ``torch.utils.data.Dataset`` of pairs."""
    from torch.utils.data import Dataset

    if isinstance(data, Dataset):
        try:
            items = [data[i] for i in range(len(data))]
            return tuple(torch.stack([torch.as_tensor(item[j]) for item in items]) for j in range(2))
        except (TypeError, IndexError, RuntimeError) as err:
            raise LandscapeError(f"{what}: a Dataset must have a length and (x, y) items of one shape each "
                                 f"({type(err).__name__}: {err})") from None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise LandscapeError(f"{what} must be (x, y) tensors or a torch.utils.data.Dataset of (x, y) items")
    return tuple(data)
