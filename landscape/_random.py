"""Randomness is passed in: the one rule for a missing generator.

Every function of landscape that draws takes a keyword-only ``generator: torch.Generator | None``
and calls :func:`resolve_generator` on it before its first draw. None means a fresh CPU
generator seeded :data:`DEFAULT_SEED`: a call without a generator repeats exactly, and the
library never reads or sets torch's global random state. Pass a generator to draw anything else
(and one generator to several calls for independent draws).
"""

from __future__ import annotations

import torch

from ._errors import LandscapeError

#: The seed of the generator a function uses when it is given none.
DEFAULT_SEED = 0


def resolve_generator(generator: torch.Generator | None = None) -> torch.Generator:
    """The caller's generator, or a fresh one seeded :data:`DEFAULT_SEED` when None.

    Raises
    ------
    LandscapeError
        When ``generator`` is neither None nor a ``torch.Generator``.
    """
    if generator is None:
        return torch.Generator().manual_seed(DEFAULT_SEED)
    if not isinstance(generator, torch.Generator):
        raise LandscapeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


__all__ = ["DEFAULT_SEED", "resolve_generator"]
