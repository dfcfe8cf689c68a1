"""The explorer's web server: a trame application served on one address the user chose, to one page.

trame runs on wslink's *generic* backend (its application, state and remote calls, without a web
server of its own); the web server here is aiohttp's, and it decides what reaches trame:

- it listens on the socket :func:`listen` bound (never where ``sys.argv`` or ``TRAME_ARGS`` say:
  trame is handed an explicit argument list);
- every request must name this server in ``Host`` (``127.0.0.1:PORT``, ``localhost:PORT``), and a
  request with an ``Origin`` must come from this page: another site's page, or a name rebound to
  127.0.0.1, is refused with 403 before anything else;
- a websocket's first message must be wslink's hello with this launch's random secret (it travels in
  the printed address, then in a same-site cookie so that a reload works); each later frame is read by
  :func:`~landscape.viz._guard.read_frame` (one whole message of at most 64 KiB, finite values);
- error replies leave without Python traces, and every bad request is at most one log line.

Each page (browser tab) has its own explorer: its own trame server, state and 3-D view, made for its
websocket once the hello is accepted and dropped when the page goes (trame's state is one per server,
shared by every page of it; see :class:`Tabs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import secrets
import signal
import socket
import sys
import webbrowser
from pathlib import Path as FilePath

from .._errors import LandscapeError
from ._tabs import Tab, Tabs
from ._guard import HEADER, MAX_MESSAGE, POLICY, UNSUPPORTED, Refused, check_hello, log, one_line, \
    read_frame, scrub_reply

#: The longest request target served (the page's own are under 200 characters).
MAX_URL = 2048
#: Pages (websockets) open at once.
MAX_PAGES = 256
#: Seconds a new websocket has to send its hello.
HELLO_S = 30.0



def listen(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on ``host``:``port`` now (0: a free port), for :meth:`Explorer.start`.

    Parameters
    ----------
    port : int
        0 to 65535; 0 lets the system choose a free one.
    host : str
        An IP address of one interface (``127.0.0.1``, ``::1``) or ``localhost`` (127.0.0.1); not
        ``0.0.0.0`` nor ``::`` (every interface).

    Raises
    ------
    LandscapeError
        The port is in use or not allowed, or the host is not an address of this machine.
    """
    try:
        ip = ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)
    except ValueError:
        raise LandscapeError(f"host {host!r}: give an IP address of this machine (127.0.0.1, ::1) or "
                             "localhost") from None
    if ip.is_unspecified:
        raise LandscapeError(f"host {host}: that is every interface of the machine; give the address of one "
                             "(127.0.0.1 for this machine only)")
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT; never a listened one
    try:
        sock.bind((str(ip), int(port)))
        sock.listen(64)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise LandscapeError(f"port {port} on {ip} is in use (another program listens there); choose another "
                                 "--port, or 0 for a free one") from None
        raise LandscapeError(f"cannot listen on {ip} port {port} ({err.strerror}); choose another --port, or 0 "
                             "for a free one") from None
    sock.setblocking(False)
    return sock


class Address:
    """Where a socket listens, the secret of this launch, and which ``Host``/``Origin`` headers are its own."""

    def __init__(self, sock: socket.socket, secret: str | None = None):
        host, port = sock.getsockname()[:2]
        self.host, self.port = host, port
        self.secret = secret or "k" + secrets.token_urlsafe(24)  # a letter first: the page reads it as text
        ip = ipaddress.ip_address(host)
        netloc = f"[{host}]:{port}" if ip.version == 6 else f"{host}:{port}"
        hosts = {netloc} | ({f"localhost:{port}"} if ip.is_loopback else set())
        if port == 80:  # a browser leaves the default port out
            hosts |= {h.rsplit(":", 1)[0] for h in hosts}
        self.hosts = frozenset(hosts)
        self.origins = frozenset(f"http://{h}" for h in hosts)
        self.url = f"http://{netloc}/?secret={self.secret}"
        self.cookie = f"landscape-explore-{port}"

    def refusal(self, request) -> str | None:
        """Why ``request`` is not from this page (None: it is)."""
        hosts = request.headers.getall("Host", [])
        if len(hosts) != 1 or hosts[0].lower() not in self.hosts:
            return f"Host {one_line(','.join(hosts), 80)!r} is not this server ({sorted(self.hosts)[0]})"
        origins = request.headers.getall("Origin", [])
        if origins and (len(origins) != 1 or origins[0].lower() not in self.origins):
            return f"Origin {one_line(','.join(origins), 80)!r} is not this page"
        return None


class Frame:
    """A websocket message as wslink's handler reads it (``.data``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class PageServer:
    """The aiohttp application in front of one trame server (its wslink endpoint and static files)."""

    def __init__(self, address: Address, tabs: Tabs, static: dict):
        from aiohttp import web

        self.address, self.tabs = address, tabs
        self.pages = set()
        self.app = web.Application(middlewares=[web.middleware(lambda request, handler: self._guard(request, handler))],
                                   client_max_size=64 * 1024)
        self.app.router.add_get("/ws", self._websocket)
        self.app.router.add_get("/", self._root)
        self.app.router.add_get("/index.html", self._index)
        self._index_file = FilePath(static.get("/", "")) / "index.html"
        for route in sorted(static, reverse=True):  # the longer prefixes first, "/" last
            self.app.router.add_static("/" + route.strip("/") if route != "/" else "/", static[route],
                                       follow_symlinks=False, show_index=False)

    # ------------------------------------------------------------------ http
    async def _guard(self, request, handler):
        from aiohttp import web

        refusal = self.address.refusal(request)
        if refusal is not None:
            log.warning("refused %s %s: %s", request.method, one_line(request.path, 80), refusal)
            return web.Response(status=403, text="refused: not this page's server\n")
        if len(request.raw_path) > MAX_URL:
            log.warning("refused a request for a %d-character address (at most %d)", len(request.raw_path), MAX_URL)
            return web.Response(status=414, text="address too long\n")
        if request.path not in ("/", "/ws") and not self._has_secret(request):  # every file, however spelled
            log.warning("refused %s %s: no key of this launch", request.method, one_line(request.path, 80))
            return web.Response(status=403, text="open the address that landscape explore printed: it carries "
                                                 "this launch's key\n")
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except ConnectionError:  # the client left: nobody to answer
            return web.Response(status=400)
        except Exception as err:  # a bad request must not print a trace: one line, and a plain answer
            why = err.strerror if isinstance(err, OSError) and err.strerror else one_line(err)
            log.warning("%s %s failed: %s: %s", request.method, one_line(request.path, 80), type(err).__name__, why)
            return web.Response(status=404 if isinstance(err, OSError) else 500, text="not served\n")

    def _has_secret(self, request) -> bool:
        import hmac

        given = request.query.get("secret") or request.cookies.get(self.address.cookie) or ""
        return hmac.compare_digest(given.encode(), self.address.secret.encode())

    async def _root(self, request):
        from aiohttp import web

        raise web.HTTPFound("index.html" + (f"?{request.query_string}" if request.query_string else ""))

    async def _index(self, request):
        from aiohttp import web

        if not self._has_secret(request):
            return web.Response(status=403, text="open the address that landscape explore printed: it carries "
                                                 "the key of this launch\n")
        if "secret" not in request.query:  # a reload: the page reads the secret from its address
            raise web.HTTPFound(f"index.html?secret={self.address.secret}")
        response = web.FileResponse(self._index_file)
        response.set_cookie(self.address.cookie, self.address.secret, httponly=True, samesite="Strict", path="/")
        return response

    # ------------------------------------------------------------- websocket
    async def _websocket(self, request):
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(max_msg_size=HEADER.size + MAX_MESSAGE, compress=False, heartbeat=30)
        if not ws.can_prepare(request).ok:
            log.warning("refused a request for /ws that is not a websocket handshake")
            return web.Response(status=400, text="not a websocket handshake\n")
        if len(self.pages) >= MAX_PAGES:
            log.warning("refused a websocket: %d pages are open already", MAX_PAGES)
            return web.Response(status=503, text="too many pages open\n")
        await ws.prepare(request)
        self.pages.add(ws)
        tab = conn = None
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=None if tab is not None else HELLO_S)
                except asyncio.TimeoutError:
                    raise Refused(f"no hello in {HELLO_S:g} s") from None
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if msg.type == WSMsgType.ERROR:  # aiohttp closed it (a frame over the size limit, bad framing)
                    log.warning("closed a websocket: %s", one_line(ws.exception() or "bad frame"))
                    break
                if msg.type != WSMsgType.BINARY:
                    raise Refused("a text frame (the page sends binary frames)", UNSUPPORTED)
                call = read_frame(msg.data)
                if tab is None:  # the hello: only then is this page given an explorer of its own
                    check_hello(call, self.address.secret)
                    tab = await self.tabs.take()
                    conn = await tab.endpoint.connect()
                    conn.on_message(lambda _binary, data: self._send(ws, data))
                await conn.send(True, Frame(msg.data))
                if not tab.endpoint.isClientAuthenticated(conn.client_id):
                    raise Refused("the hello was not accepted")
        except Refused as refused:
            log.warning("closed a websocket: %s", refused.reason)
            with contextlib.suppress(ConnectionError):
                await ws.close(code=refused.code, message=refused.reason[:120].encode())
        except ConnectionError:  # the tab went away
            pass
        except Exception as err:  # a call that broke the protocol: one line, the page is closed
            log.warning("closed a websocket: %s: %s", type(err).__name__, one_line(err))
            with contextlib.suppress(ConnectionError):
                await ws.close(code=POLICY)
        finally:
            self.pages.discard(ws)
            if conn is not None:
                await conn.close()
                await tab.endpoint.onClose(conn.client_id)
                getattr(tab.endpoint, "authentified_client_ids", set()).discard(conn.client_id)
            if tab is not None:
                await self.tabs.drop(tab)
        return ws

    @staticmethod
    async def _send(ws, data: bytes) -> None:
        if ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):  # a tab that closed meanwhile: nothing to tell
            await ws.send_bytes(scrub_reply(data))

    async def close(self) -> None:
        from aiohttp import WSCloseCode

        for ws in list(self.pages):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopped")


def serve(explorer, sock: socket.socket, *, ready=None, open_browser: bool = False) -> None:
    """Serve ``explorer`` (an :class:`~landscape.viz.Explorer`) on the listening ``sock`` until Ctrl-C (SIGINT)
    or SIGTERM: each page gets its own explorer (:meth:`Explorer.tab`), the first page this one.

    ``ready(url)`` is called once the page can be opened (the url carries this launch's secret).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # none: the usual case
        pass
    else:
        raise LandscapeError("Explorer.start serves until Ctrl-C and cannot run inside a running event loop (a "
                             "notebook): display the explorer there instead")
    address = Address(sock)
    with one_line_logs():
        try:
            asyncio.run(_serve(explorer, sock, address, ready, open_browser))
        except KeyboardInterrupt:
            pass


async def _serve(explorer, sock, address, ready, open_browser):
    from aiohttp import web

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_one_line_exception)
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread: Ctrl-C only
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    first = await Tab.start(explorer, address)
    tabs = Tabs(first, address)
    pages = PageServer(address, tabs, first.static)
    runner = web.AppRunner(pages.app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        if ready is not None:
            ready(address.url)
        if open_browser:
            webbrowser.open(address.url)
        stopped = asyncio.ensure_future(stop.wait())
        # until SIGTERM, or Ctrl-C (which cancels this task)
        await stopped
    finally:
        await pages.close()
        await tabs.close()
        await runner.cleanup()


def _one_line_exception(loop, context) -> None:
    err = context.get("exception")
    log.warning("%s%s", context.get("message", "error"), f": {type(err).__name__}: {one_line(err)}" if err else "")


class _OneLine(logging.Filter):
    """Each record one line: no traces, no multi-line messages (wslink logs a call's trace as a record)."""

    def filter(self, record):
        message = record.getMessage()
        if message.startswith("Traceback (most recent call last)") or message == "Exception raised":
            return False
        if record.exc_info and record.exc_info[1] is not None:  # aiohttp's parser errors span lines: joined
            err = record.exc_info[1]
            message = f"{message}: {type(err).__name__}: {' '.join(str(err).split())}"
        record.msg, record.args, record.exc_info, record.exc_text, record.stack_info = one_line(message, 300), (), \
            None, None, None
        return True


@contextlib.contextmanager
def one_line_logs(names=("landscape.explore", "aiohttp", "wslink", "trame_server", "trame_client", "asyncio")):
    """While serving: the libraries' log records as single lines on stderr, ``landscape explore: ...``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_OneLine())
    handler.setFormatter(logging.Formatter("landscape explore: %(message)s"))
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.propagate, logger.level))
        logger.addHandler(handler)
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, propagate, level in saved:
            logger.removeHandler(handler)
            logger.propagate, logger.level = propagate, level
