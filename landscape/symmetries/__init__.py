"""Symmetries of a network's parameters and alignment of minima modulo them (Ainsworth et al., ICLR 2023).

- :mod:`.groups` — :class:`Symmetry`: hidden-unit permutations and positive rescalings of flat parameters.
- :mod:`.derive` — :func:`symmetry`: derived from the module by tracing it with ``torch.fx``; chains are
  walked by :mod:`.trace`, graphs with skip connections by :mod:`.residual` (units added together share a permutation).
- :mod:`.align` — :func:`align`: weight or activation matching (``ALIGNERS``), the same function after.
"""

from .align import ALIGNERS, Alignment, align
from .groups import Symmetry, UnitGroup
from .derive import symmetry

__all__ = ["ALIGNERS", "Alignment", "Symmetry", "UnitGroup", "align", "symmetry"]
