"""One registry for every closed choice: names, one lookup, one check of a choice's options.

Every registry of the package (``METHODS``, ``PROBLEMS``, ``PLANES``, ``ALIGNERS``, ``TASKS``,
``LOSSES``, ``OPTIMIZERS``, ``DYNAMICS``, and the closed options such as ``BN_POLICIES``) is a
:class:`Registry`: a plain dict, so ``sorted(METHODS)``, ``name in METHODS`` and
``click.Choice(list(METHODS))`` work as before, that knows what it holds, so that an unknown name or
option fails everywhere with the same message, listing the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping

from ._errors import LandscapeError


class Registry(dict):
    """Names of one kind of choice, mapped to their implementations (or to None for plain names).

    Parameters
    ----------
    kind : str
        What one entry is, in words, as error messages name it: ``"path method"``, ``"BatchNorm policy"``.
    entries : mapping, or iterable of functions or of str
        Functions are keyed by their ``__name__`` (registry keys equal function names); plain names
        (the values of a closed option) map to None; a mapping is taken as it is.
    shared : iterable of str
        The parameters every entry receives from its caller (``problem``, ``start``, ``level``...):
        not options a user may set.
    word : str
        What an option is called in messages: ``"option"`` or ``"parameter"``.
    hint : str
        Added after the list of valid names (another accepted form, e.g. ``"package.module:factory"``).
    options : callable, optional
        ``options(entry) -> dict`` of the options an entry accepts and their defaults. By default,
        read from the entry's signature: every named parameter that is not ``shared``.

    Examples
    --------
    >>> COLOURS = Registry("colour", ("red", "green"))
    >>> COLOURS.lookup("blue")
    Traceback (most recent call last):
    ...
    landscape._errors.LandscapeError: unknown colour 'blue'; choose one of ['green', 'red']
    """

    def __init__(self, kind: str, entries: Mapping | Iterable = (), *, shared: Iterable[str] = (),
                 word: str = "option", hint: str = "", options: Callable[[object], dict] | None = None):
        if isinstance(entries, Mapping):
            items = dict(entries)
        else:
            items = {e if isinstance(e, str) else e.__name__: None if isinstance(e, str) else e for e in entries}
        super().__init__(items)
        self.kind, self.shared, self.word, self.hint = kind, frozenset(shared), word, hint
        self._options = options or self._signature_options

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self)})"

    def choices(self) -> str:
        """``"choose one of [...]"``: the valid names, sorted, and the hint."""
        return f"choose one of {sorted(self)}" + (f" or {self.hint}" if self.hint else "")

    def lookup(self, name, *, where: str = ""):
        """The entry registered as ``name``.

        Raises
        ------
        LandscapeError
            ``"unknown <kind> 'name'; choose one of [...]"`` (prefixed by ``where:`` when given).
        """
        try:
            return self[name]
        except (KeyError, TypeError):
            raise LandscapeError(f"{_at(where)}unknown {self.kind} {name!r}; {self.choices()}") from None

    def options(self, name=None, *, where: str = "") -> dict:
        """The options entry ``name`` accepts, with their defaults; of all entries (the union) when None."""
        if name is None:
            return {k: v for entry in self.values() for k, v in self._options(entry).items()}
        return self._options(self.lookup(name, where=where))

    def check_options(self, name, given: Iterable[str], *, where: str = "") -> dict:
        """Refuse options entry ``name`` does not take; returns what it accepts (:meth:`options`).

        With ``name=None`` the options are checked against those of every entry together (for a
        caller that picks the entry later).

        Raises
        ------
        LandscapeError
            For an unknown name, or ``"<kind> 'name' has no option(s) [...]; it takes [...]"``.
        """
        accepted = self.options(name, where=where)
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            if name is None:
                raise LandscapeError(f"{_at(where)}unknown {self.kind} {self.word}(s) {unknown}; "
                                     f"{self.kind}s take {sorted(accepted)}")
            raise LandscapeError(f"{_at(where)}{self.kind} {name!r} has no {self.word}(s) {unknown}; "
                                 f"it takes {sorted(accepted)}")
        return accepted

    def _signature_options(self, entry) -> dict:
        if not callable(entry):
            return {}
        params = inspect.signature(entry).parameters.values()
        return {p.name: p.default for p in params
                if p.name not in self.shared and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _at(where: str) -> str:
    return f"{where}: " if where else ""


__all__ = ["Registry"]
