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
from .user_transformer import user_symmetry

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
        operation between hidden layers that is not known to commute with permutations, and running it finds no
        unit either (:mod:`.user_transformer`: attention heads, fused qkv, ``x.size()``-dependent forwards).
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
        built = _walked(problem, module, frozen)
    _CACHE.setdefault(problem, {})[frozen] = built
    return built


def _walked(problem, module, frozen):
    """The torch.fx walk of the module's layers; where torch.fx cannot trace the module (``x.size()``-dependent
    code), or the walk does not understand it and running the module meets attention, the units found by
    running it (:mod:`.user_transformer`). Otherwise the walk's refusal stands."""
    try:
        gm = traced(module, problem.data("train")[0][:2])
    except LandscapeError:
        if getattr(problem, "bn", None) is not None:
            raise
        return user_symmetry(problem, module)
    walk = walk_chain if is_chain(gm) else walk_graph
    try:
        return walk(gm, problem.layout, type(module).__name__, frozen_statistics=frozen)
    except LandscapeError:
        if getattr(problem, "bn", None) is not None:
            raise
        try:
            found = user_symmetry(problem, module)
        except LandscapeError:
            found = None
        if found is not None and found.scores:  # attention, which the walk does not read
            return found
        raise
