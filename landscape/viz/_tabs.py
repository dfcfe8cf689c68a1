"""The explorers of a served explorer's pages: each page (browser tab) its own, on its own trame server.

trame keeps one state per server and sends every change of it to every page of that server: with one
server, a slider moved in one tab moved it in all, and a new tab opened at the last tab's u. Here each
page's websocket, once its hello is accepted, is given an explorer of its own (:meth:`Explorer.tab`: the
same scene and valleys, its own state and 3-D view, at the u the explorer was served at) on a trame
server of its own, and the page's going stops it.
"""

from __future__ import annotations

import asyncio
import contextlib

from .._errors import LandscapeError
from ._guard import TRY_AGAIN, Refused

#: Pages served at once with their own explorer (each holds a 3-D view and its frames: 60-100 MB measured
#: with a 932x730 view, Himmelblau at 51x51; a page's memory is reused by the next one).
MAX_TABS = 16
#: Seconds after a page took the spare explorer before the next spare is made (one page loads meanwhile).
SPARE_AFTER_S = 2.0


class Tab:
    """One page's explorer, served on its own trame server: ``explorer``, its wslink ``endpoint``, ``static``
    routes, and the ``running`` task of its server."""

    def __init__(self, explorer, endpoint, static: dict, running):
        self.explorer, self.endpoint, self.static, self.running = explorer, endpoint, static, running

    @classmethod
    async def start(cls, explorer, address) -> "Tab":
        """Start ``explorer``'s trame server on wslink's generic backend, with this launch's arguments."""
        server = explorer.server
        bound = []
        server.controller.on_server_bind.add(bound.append)
        trame_arguments(server, address)
        started = server.start(exec_mode="coroutine", backend="generic", open_browser=False,
                               show_connection_info=False, disable_logging=True, timeout=0)
        if not asyncio.iscoroutine(started):
            raise LandscapeError("this explorer is being served already; stop it (Ctrl-C) before starting it again")
        running = asyncio.ensure_future(started)
        await asyncio.sleep(0)  # the server binds its protocol: CoreServer.server is a class attribute
        if len(bound) != 1 or bound[0]["ws"] is None or getattr(server.protocol, "secret", None) != address.secret:
            running.cancel()
            raise LandscapeError("the installed trame/wslink did not start as expected (generic backend, this "
                                 "launch's secret); the explorer does not serve without them")
        return cls(explorer, bound[0]["ws"], bound[0].config.get("static", {}), running)

    async def stop(self, *, close: bool = True) -> None:
        """Stop its trame server, forget it, and (``close``) free its 3-D view."""
        server = self.explorer.server
        with contextlib.suppress(Exception):
            await server.stop()
        self.running.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.running
        if close:
            self.explorer.close()
            _forget(server)


def _forget(server) -> None:
    """Drop the registries' references to a stopped trame ``server`` (they keep it, its page and its 3-D view
    alive: each page opened would stay in memory)."""
    from trame.app.core import AVAILABLE_SERVERS
    from trame_vtk.modules import vtk

    for registry in (AVAILABLE_SERVERS, vtk.HELPERS_PER_SERVER):
        if registry.get(server.name) is not None:
            del registry[server.name]


class Tabs:
    """The explorers of the open pages: each page takes one of its own, at the u the explorer started at.

    ``first`` (the explorer that was started, already made) is the first spare; once a page takes the
    spare, the next one is made :data:`SPARE_AFTER_S` later (a page that comes before gets one made at
    once). At most :data:`MAX_TABS` pages are served at once.
    """

    def __init__(self, first: Tab, address):
        self.first, self.address = first, address
        self.spare, self.open = first, set()
        self._lock = asyncio.Lock()
        self._filling = None

    async def take(self) -> Tab:
        async with self._lock:
            if len(self.open) >= MAX_TABS:
                raise Refused(f"{MAX_TABS} pages are open already: close one", TRY_AGAIN)
            tab, self.spare = self.spare, None
            if tab is None:
                tab = await Tab.start(self.first.explorer.tab(), self.address)
            self.open.add(tab)
        if self._filling is None or self._filling.done():
            self._filling = asyncio.ensure_future(self._fill())
        return tab

    async def _fill(self) -> None:
        await asyncio.sleep(SPARE_AFTER_S)
        async with self._lock:
            if self.spare is None and len(self.open) < MAX_TABS:
                self.spare = await Tab.start(self.first.explorer.tab(), self.address)

    async def drop(self, tab: Tab) -> None:
        """The page of ``tab`` went: its explorer goes with it (the first one is its owner's to close)."""
        self.open.discard(tab)
        await tab.stop(close=tab is not self.first)

    async def close(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._filling
        for tab in [*self.open, *([self.spare] if self.spare is not None else [])]:
            await tab.stop(close=tab is not self.first)
        if self.first not in self.open and self.first is not self.spare:
            await self.first.stop(close=False)


def trame_arguments(server, address) -> list[str]:
    """Hand trame ``server`` this launch's arguments instead of ``sys.argv`` and ``TRAME_ARGS``."""
    argv = ["--server", "--host", address.host, "--port", str(address.port), "--timeout", "0",
            "--authKey", address.secret]
    parser = server.cli
    parse = type(parser).parse_known_args
    parser.parse_known_args = lambda args=None, namespace=None: parse(parser, argv if args is None else args,
                                                                      namespace)
    return argv
