"""The ``landscape`` command line (installed as the ``landscape_cli`` package)."""

import sys


def main() -> None:
    """The ``landscape`` command. ``--version``, ``--help`` and (after its first run) ``problems`` answer without
    importing torch (a second or more saved)."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        from ._index import help_text

        print(help_text(), end="")
        return
    if sys.argv[1:] in (["problems"], ["problems", "--json"]):  # from the cache the last full run left
        from ._index import cached_problems

        out = cached_problems(as_json=len(sys.argv) == 3)
        if out is not None:
            print(out)
            return
    if sys.argv[1:] in (["--version"], ["-V"]):
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"landscape, version {version('landscape')}")
            return
        except PackageNotFoundError:  # run from a source tree that is not installed: ask the package
            pass
    from ._startup import set_thread_policy

    set_thread_policy()  # waiting threads sleep instead of spinning: before torch is imported
    from landscape import keep_freed_memory

    keep_freed_memory()  # batched evaluations reuse their freed blocks instead of faulting them back in
    from .cli import main as cli

    cli()
