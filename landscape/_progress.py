"""A one-line live report of a long computation on stderr: the stage it is in, how far it is through it and
the loss evaluations so far (``connect``, the valley search and ``bench`` show it unless told to be quiet)."""

from __future__ import annotations

import re
import sys
import time

#: Seconds between redraws of a progress line on a terminal, and into a file or a pipe (where every redraw is one
#: more line of the log).
TERMINAL_INTERVAL, PIPE_INTERVAL = 0.5, 10.0


def redraw_interval(stream=None) -> float:
    """How often a progress line on ``stream`` (stderr) is redrawn: :data:`TERMINAL_INTERVAL` on a terminal,
    :data:`PIPE_INTERVAL` into a file or a pipe."""
    stream = sys.stderr if stream is None else stream
    try:
        return TERMINAL_INTERVAL if stream.isatty() else PIPE_INTERVAL
    except (AttributeError, ValueError):  # a closed or odd stream
        return PIPE_INTERVAL


class Progress:
    """``stage("search (string)")`` names what runs now; ``count(n)`` adds n evaluations.

    Disabled, it costs nothing and prints nothing. The line is removed when :meth:`close` is called. Into a file or a
    pipe it is redrawn at most every :data:`PIPE_INTERVAL` seconds while a stage only counts on, but every stage is
    shown when it starts and as it ended (its last count), so a log keeps each stage once or twice, not once a step.
    """

    def __init__(self, enabled: bool, what: str, *, evaluations: bool = True):
        self.bar = None
        self.what = what
        if enabled:
            from tqdm import tqdm

            counted = ": {n:,} loss evaluations" if evaluations else ""
            self.interval = redraw_interval()
            self.bar = tqdm(total=None, desc=what, leave=False, dynamic_ncols=True, mininterval=self.interval,
                            bar_format="{desc}" + counted + " [{elapsed}]")
        self._kind, self._pending, self._shown = None, False, 0.0

    def stage(self, name: str, done: int | None = None, total: int | None = None) -> None:
        """Name the stage under way; with ``done`` (and ``total``), how far it is: ``"aligning 3/9"``."""
        if self.bar is not None:
            if done is not None:
                name = f"{name} {done}/{total}" if total is not None else f"{name} {done}"
            kind = re.split(r"[\d]", name, maxsplit=1)[0]  # the stage without its counts
            if self.interval == TERMINAL_INTERVAL:
                self.bar.set_description_str(f"{self.what}: {name}", refresh=True)
                return
            now = time.monotonic()
            if kind != self._kind and self._pending:
                self.bar.refresh()  # the stage that ends, as it ended
            self.bar.set_description_str(f"{self.what}: {name}", refresh=False)
            self._pending = True
            if kind != self._kind or now - self._shown >= self.interval:
                self.bar.refresh()
                self._pending, self._shown = False, now
            self._kind = kind

    def count(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.update(int(n))

    def close(self) -> None:
        if self.bar is not None:
            if self._pending:
                self.bar.refresh()
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
