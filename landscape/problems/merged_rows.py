"""Hugging Face's GPT-2 in the traced bound graph: its ``Conv1D`` (``torch.addmm(b, x.view(-1, x.size(-1)), W)``,
weight [in, out], then ``.view(size_out)``) and its causal mask (``torch.where(mask, w, finfo(w.dtype).min)``).

- A ``view``/``reshape`` that merges the P·N rows with the dimensions right after them ([R, T, in] → [R·T, in]:
  each sample's rows stay one block, in order) gives a :class:`Merged` value: the value kept unmerged, with the
  shape ``forward`` sees. Only ``torch.addmm`` with a parameter matrix (a map of the last dimension, position by
  position: the same numbers on the unmerged value) and a ``view``/``reshape`` that puts the rows back in front
  take it; anything else refuses it (no other rule knows the type).
- ``torch.where(constant boolean mask, value, number)`` is ``masked_fill`` (either way round).
- ``.to(dtype, device)`` of a value is the value itself where the dtype is float64, the bound's (``w.to(w.dtype)``);
  a conversion to another dtype rounds and is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import attention_ops as ao
from . import operations as ops
from .operations import Rule, _arg, _rule
from .relaxed import Model, Param, Unsupported


@dataclass
class Merged:
    """A value whose rows a ``view`` merged with the dimensions after them: ``value`` unmerged, ``shape`` as seen."""

    value: Model
    shape: tuple


def _target(a, k, numel: int) -> tuple:
    dims = a[1] if len(a) == 2 and isinstance(a[1], (tuple, list)) else a[1:] or k.get("shape", k.get("size", ()))
    dims = list(dims)
    if not all(isinstance(d, int) for d in dims) or dims.count(-1) > 1:
        raise Unsupported("a view of a value to a shape that is not integers")
    if -1 in dims:
        dims[dims.index(-1)] = numel // max(1, math.prod(d for d in dims if d != -1))
    if math.prod(dims) != numel:
        raise Unsupported("a view to a shape of another size")
    return tuple(dims)


def _view(name):
    plain = ao.METHODS[name].handler

    def handler(w, a, k):
        x = a[0]
        if isinstance(x, Merged):
            shape = _target(a, k, x.value.c.numel())
            if shape[0] != w.rows:
                raise Unsupported("a view of merged rows that does not put the rows back in front")
            return w.reshaped(x.value, lambda t: t.reshape(shape))
        if isinstance(x, Model) and x.c.dim() > 2:
            shape, have = _target(a, k, x.c.numel()), tuple(x.c.shape)
            merges = any(shape[0] == math.prod(have[:j]) and shape[1:] == have[j:] for j in range(2, len(have)))
            if shape[0] != w.rows and merges:
                return Merged(x, shape)
        return plain(w, a, k)
    return handler


def _addmm(w, a, k):
    bias, x, weight = (_arg(a, k, i, name, None) for i, name in enumerate(("input", "mat1", "mat2")))
    if k.get("beta", 1) != 1 or k.get("alpha", 1) != 1:
        raise Unsupported("addmm with beta or alpha")
    one_row = isinstance(bias, Param) and w.pair(bias)[0].dim() == 2 or isinstance(bias, (int, float)) or (
        isinstance(bias, torch.Tensor) and not isinstance(bias, Model) and bias.dim() <= 1)
    if not isinstance(weight, Param) or not one_row:
        raise Unsupported("addmm other than a bias vector plus a value times a parameter matrix")
    z = w.combine(ops._matmul(w, (x.value if isinstance(x, Merged) else w.model(x), weight), {}), bias, 1.0)
    return Merged(z, (*x.shape[:-1], z.c.shape[-1])) if isinstance(x, Merged) else z


def _where(w, a, k):
    mask, x, other = (_arg(a, k, i, name, None) for i, name in enumerate(("condition", "input", "other")))
    if not isinstance(mask, torch.Tensor) or isinstance(mask, Model) or mask.dtype != torch.bool:
        raise Unsupported("torch.where with a condition that is not a constant boolean tensor")
    if not isinstance(x, (Model, ao.Moved)):
        mask, x, other = ~mask, other, x
    if isinstance(other, torch.Tensor) and not isinstance(other, Model) and other.dim() == 0:
        other = float(other)
    if not isinstance(other, (int, float)):
        raise Unsupported("torch.where of a value and something other than a number")
    return ao.masked_fill(x, ~mask, other)


def _to(w, a, k):
    for v in (*a[1:], *k.values()):
        if isinstance(v, torch.dtype) and v != torch.float64 or not isinstance(v, (torch.dtype, torch.device, str,
                                                                                  bool)):
            raise Unsupported(f".to({v!r}) of a value (the bound runs in float64)")
    return w.model(a[0])


FUNCTIONS = {torch.addmm: _rule(_addmm, 3, "beta", "alpha"), torch.where: _rule(_where, 3)}
METHODS = {**{name: Rule(_view(name), ao.METHODS[name].positional, ao.METHODS[name].keywords) for name in
              ("view", "reshape")}, "to": _rule(_to, 4, "dtype", "device", "non_blocking", "copy")}
__all__ = ["FUNCTIONS", "METHODS", "Merged"]
