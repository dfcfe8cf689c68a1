"""The ``landscape`` command line (installed as the ``landscape_cli`` package)."""

import sys


def main() -> None:
    """The ``landscape`` command. ``--version`` and ``--help`` answer without importing torch (a second saved)."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        from ._index import help_text

        print(help_text(), end="")
        return
    if sys.argv[1:] in (["--version"], ["-V"]):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"landscape, version {version('landscape')}")
            return
        except PackageNotFoundError:  # run from a source tree that is not installed: ask the package
            pass
    from .cli import main as cli

    cli()
