"""The ``landscape`` command line (installed as the ``landscape_cli`` package)."""
