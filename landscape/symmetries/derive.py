""":func:`symmetry`: a network problem's permutation (and rescaling) symmetry, derived from its module.

The module is traced once (:func:`.trace.traced`); a chain of layers is walked by
:func:`.trace.walk_chain`, a graph with skip connections or branches by :func:`.residual.walk_graph`.
"""

from __future__ import annotations

import weakref

from .._errors import LandscapeError
from .groups import Symmetry
from .residual import walk_graph
from .trace import is_chain, traced, walk_chain
from .transformer import transformer_symmetry

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def symmetry(problem) -> Symmetry:
    """The permutation (and rescaling) symmetry of a network problem, derived from its module.

    The module is traced with ``torch.fx`` and its shapes recorded on two training samples; its
    layers are then walked. Understood: ``Linear``, ``Conv1d/2d/3d`` (groups = 1),
    ``BatchNorm1d/2d/3d`` (affine parameters permuted; with the ``frozen`` BatchNorm policy the
    stored running statistics constrain which units may trade places, with ``recompute`` they
    follow θ), ``LayerNorm`` over the unit axis and all after it, ``Flatten`` of channels
    into features, pooling, dropout, elementwise activations as modules, functions or
    methods (ReLU, leaky ReLU, PReLU, identity, the square, sigmoid, tanh, GELU, SiLU, ...), and
    additions of tensors (skip connections): the units added together share one permutation
    (:mod:`.residual`).

    Parameters
    ----------
    problem : NetworkProblem

    Returns
    -------
    Symmetry
        One :class:`UnitGroup` per hidden layer (per residual stream), in forward order (the output layer
        has none).

    Raises
    ------
    LandscapeError
        If the problem is not a network, or its module has shared weights, a grouped convolution, or an
        operation between hidden layers that is not known to commute with permutations.
    """
    frozen = getattr(problem, "bn", None) == "frozen"
    cached = _CACHE.get(problem, {})
    if frozen in cached:
        return cached[frozen]
    module = getattr(problem, "module", None)
    if not callable(module):
        raise LandscapeError(f"problem {problem.name!r} is not a network; permutation alignment needs a network "
                             "problem (an embedded MLP or landscape.from_module)")
    module = module()
    built = transformer_symmetry(problem, module)  # the built-in transformer: heads couple two groups
    if built is None:
        gm = traced(module, problem.data("train")[0][:2])
        walk = walk_chain if is_chain(gm) else walk_graph
        built = walk(gm, problem.layout, type(module).__name__, frozen_statistics=frozen)
    _CACHE.setdefault(problem, {})[frozen] = built
    return built
