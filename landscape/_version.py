"""The version of landscape, and of what it ran on (recorded in every file and study row it writes)."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """``{"landscape", "torch", "numpy", "python"}`` version strings of this process."""
    import numpy as np
    import torch

    return {"landscape": __version__, "torch": str(torch.__version__), "numpy": str(np.__version__),
            "python": sys.version.split()[0]}
