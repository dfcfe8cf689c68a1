"""Flat parameter vectors: one layout maps named tensors to slices of a [..., D] vector."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch

from .._errors import LandscapeError


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the parameters packed, in order, into a flat vector.

    Parameters
    ----------
    names : tuple of str
        Parameter names, e.g. ``("0.weight", "0.bias")`` as ``nn.Module.named_parameters`` gives them.
    shapes : tuple of tuple of int
        The shape of each parameter; a tensor is stored row-major (``tensor.reshape(-1)``).

    Examples
    --------
    >>> layout = Layout(("w", "b"), ((2, 3), (2,)))
    >>> theta = torch.arange(8.0)
    >>> layout.unflatten(theta)["b"]
    tensor([6., 7.])
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self):
        if len(self.names) != len(self.shapes):
            raise ValueError("Layout needs one shape per name")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Layout names must be unique, got {self.names}")

    @classmethod
    def of(cls, tensors: Mapping[str, torch.Tensor]) -> "Layout":
        """The layout of a mapping of named tensors (e.g. ``dict(model.named_parameters())``)."""
        return cls(tuple(tensors), tuple(tuple(t.shape) for t in tensors.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """D, the length of the flat vector."""
        return sum(self.sizes)

    @property
    def offsets(self) -> dict[str, tuple[int, int]]:
        """``name -> (start, stop)`` of each parameter in the flat vector."""
        out, start = {}, 0
        for name, size in zip(self.names, self.sizes):
            out[name] = (start, start + size)
            start += size
        return out

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Pack named tensors of shapes ``[*batch, *shape]`` into one ``[*batch, D]`` tensor.

        Raises
        ------
        LandscapeError
            If a name is missing or a shape does not match the layout.
        """
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise LandscapeError(f"parameters {missing} are missing; expected {list(self.names)}")
        parts = []
        batch = None
        for name, shape in zip(self.names, self.shapes):
            t = tensors[name]
            nd = len(shape)
            if tuple(t.shape[t.dim() - nd:]) != shape or t.dim() < nd:
                raise LandscapeError(
                    f"parameter {name!r} has shape {tuple(t.shape)}, expected {shape}; "
                    "the checkpoint was made for another architecture"
                )
            b = tuple(t.shape[: t.dim() - nd])
            if batch is None:
                batch = b
            elif b != batch:
                raise LandscapeError(f"parameter {name!r} has batch shape {b}, expected {batch}")
            parts.append(t.reshape(*b, -1))
        return torch.cat(parts, dim=-1)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of a ``[*batch, D]`` tensor as named ``[*batch, *shape]`` tensors (no copy)."""
        if theta.shape[-1] != self.dim:
            raise LandscapeError(f"parameter vector has length {theta.shape[-1]}, expected D = {self.dim}")
        batch = theta.shape[:-1]
        out = {}
        for (name, (a, b)), shape in zip(self.offsets.items(), self.shapes):
            out[name] = theta[..., a:b].view(tuple(batch) + tuple(shape))
        return out

    def to_json(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}
