"""A one-line live report of a long computation on stderr: the stage it is in, how far it is through it and
the loss evaluations so far (``connect``, the valley search and ``bench`` show it unless told to be quiet)."""

from __future__ import annotations


class Progress:
    """``stage("search (string)")`` names what runs now; ``count(n)`` adds n evaluations.

    Disabled, it costs nothing and prints nothing. The line is removed when :meth:`close` is called.
    """

    def __init__(self, enabled: bool, what: str, *, evaluations: bool = True):
        self.bar = None
        self.what = what
        if enabled:
            from tqdm import tqdm

            counted = ": {n:,} loss evaluations" if evaluations else ""
            self.bar = tqdm(total=None, desc=what, leave=False, dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}" + counted + " [{elapsed}]")

    def stage(self, name: str, done: int | None = None, total: int | None = None) -> None:
        """Name the stage under way; with ``done`` (and ``total``), how far it is: ``"aligning 3/9"``."""
        if self.bar is not None:
            if done is not None:
                name = f"{name} {done}/{total}" if total is not None else f"{name} {done}"
            self.bar.set_description_str(f"{self.what}: {name}", refresh=True)

    def count(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(int(n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ShownTally(dict):
    """A dict of tallies whose ``"evaluations"`` entry feeds a :class:`Progress` as it grows."""

    def __init__(self, tally: dict, shown: Progress):
        super().__init__(tally)
        self.shown = shown

    def __setitem__(self, key, value):
        if key == "evaluations":
            self.shown.count(value - self.get(key, 0))
        super().__setitem__(key, value)
