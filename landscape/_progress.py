"""A one-line live report of a long computation on stderr: the stage it is in and the loss
evaluations so far (``connect`` and the valley search show it unless told to be quiet)."""

from __future__ import annotations


class Progress:
    """``stage("search (string)")`` names what runs now; ``count(n)`` adds n evaluations.

    Disabled, it costs nothing and prints nothing. The line is removed when :meth:`close` is called.
    """

    def __init__(self, enabled: bool, what: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.what = what
            self.bar = tqdm(total=None, desc=what, leave=False, dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}: {n:,} loss evaluations [{elapsed}]")

    def stage(self, name: str) -> None:
        if self.bar is not None:
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
