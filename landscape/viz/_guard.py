"""What the explorer's server accepts from a page, and what it sends back: checks with no networking in them.

The page (trame's client, through wslink) sends msgpack messages in binary websocket frames, each behind a
12-byte chunk header (message id, offset, total size; little-endian uint32). The page's messages are
small (a slider position, a click, a mouse event of the 3-D view: under a kilobyte) and each fits in one
frame, so a frame here must carry one whole message of at most :data:`MAX_MESSAGE` bytes: a header that
claims more than its frame carries is refused before anything is allocated for it (wslink's own
un-chunker allocates what the header claims, up to 4 GiB a message). A message must be a remote call
(``id`` and ``method`` strings, ``args`` a list, ``kwargs`` a dict) of plain values nested at most
:data:`MAX_DEPTH` deep, every number finite. Error replies leave without the server's Python trace.
"""

from __future__ import annotations

import hmac
import logging
import math
import struct

#: Bytes one message from the page may hold (its largest, a mouse event of the view, is under 1 KiB).
MAX_MESSAGE = 64 * 1024
#: Lists and dicts one in another in a message, the message itself included (the page's deepest: 4).
MAX_DEPTH = 16
#: The chunk header: message id, offset of this chunk, total size of the message.
HEADER = struct.Struct("<III")

#: websocket close codes (RFC 6455, 7.4.1)
POLICY, TOO_BIG, BAD_DATA, UNSUPPORTED, TRY_AGAIN = 1008, 1009, 1007, 1003, 1013

log = logging.getLogger("landscape.explore")


class Refused(Exception):
    """A message the server does not take: ``reason`` (one line) and the websocket close ``code``."""

    def __init__(self, reason: str, code: int = POLICY):
        super().__init__(reason)
        self.reason, self.code = reason, code


def read_frame(frame: bytes, *, limit: int = MAX_MESSAGE) -> dict:
    """The remote call one binary frame from the page carries, checked.

    Parameters
    ----------
    frame : bytes
        A binary websocket frame: the 12-byte chunk header, then the msgpack message.
    limit : int
        The most bytes a message may hold.

    Returns
    -------
    dict
        The call: ``id`` and ``method`` (str), ``args`` (list) and ``kwargs`` (dict) where given.

    Raises
    ------
    Refused
        A frame shorter than its header, a header that claims more than ``limit`` or more or less than
        the frame carries, bytes that are not one msgpack message, or a message that is not a call of
        plain, finite values (see :func:`check_call`).
    """
    if len(frame) < HEADER.size:
        raise Refused(f"a frame of {len(frame)} bytes, shorter than the {HEADER.size}-byte chunk header", BAD_DATA)
    _, offset, total = HEADER.unpack_from(frame)
    body = len(frame) - HEADER.size
    if total > limit:
        raise Refused(f"a message that claims {total} bytes (the page sends at most {limit})", TOO_BIG)
    if offset != 0 or total != body:
        raise Refused(f"a chunk at offset {offset} of a {total}-byte message carrying {body} bytes (the page "
                      "sends each message whole, in one frame)", BAD_DATA)
    import msgpack  # wslink's, with the viz extra

    try:
        call = msgpack.unpackb(memoryview(frame)[HEADER.size:], raw=False)
    except Exception as err:  # msgpack raises several types: bad bytes, extra data, nesting too deep
        raise Refused(f"a frame that is not one msgpack message ({type(err).__name__})", BAD_DATA) from None
    check_call(call)
    return call


def check_call(call) -> None:
    """Refuse (:class:`Refused`) a message that is not a remote call of plain, finite values.

    A call is a dict with ``id`` and ``method`` strings, ``args`` a list and ``kwargs`` a dict where
    present. Values are None, booleans, integers, finite floats, strings, bytes, lists and dicts, at
    most :data:`MAX_DEPTH` of them one in another (the call included): ``inf``, ``nan``, extension types
    and timestamps are refused.
    """
    if not isinstance(call, dict):
        raise Refused(f"a message that is a {type(call).__name__}, not a call", BAD_DATA)
    if not isinstance(call.get("id"), str) or not isinstance(call.get("method"), str):
        raise Refused("a call without a string 'id' and 'method'", BAD_DATA)
    if not isinstance(call.get("args", []), list) or not isinstance(call.get("kwargs", {}), dict):
        raise Refused(f"{call['method'][:60]!r}: 'args' must be a list and 'kwargs' a dict", BAD_DATA)
    stack = [(call, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                raise Refused(f"{call['method'][:60]!r}: a non-finite number ({value}); values must be finite",
                              BAD_DATA)
        elif isinstance(value, (list, dict)):
            if depth >= MAX_DEPTH:
                raise Refused(f"{call['method'][:60]!r}: values nested deeper than {MAX_DEPTH}", BAD_DATA)
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
        elif value is not None and not isinstance(value, (bool, int, str, bytes)):
            raise Refused(f"{call['method'][:60]!r}: a value of type {type(value).__name__}", BAD_DATA)


def check_hello(call: dict, secret: str) -> None:
    """Refuse (:class:`Refused`) a first call that is not wslink's hello with this launch's ``secret``."""
    if call["method"] != "wslink.hello" or not call["id"].startswith("system:"):
        raise Refused(f"{call['method'][:60]!r} before the hello that carries the secret")
    args = call.get("args") or [None]
    given = args[0].get("secret") if isinstance(args[0], dict) else None
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), secret.encode()):
        raise Refused("a hello without this launch's secret (open the address landscape explore printed)")


def scrub_reply(chunk: bytes) -> bytes:
    """A chunk for the page, with an error reply's Python trace and exception text replaced by one line.

    wslink answers a call that raised with ``error.data = {method, exception, trace}``: the page gets
    ``error.data = {method, exception}`` instead, the exception as ``"Type: first line"`` (at most 200
    characters). Other chunks are returned as they are.
    """
    if b"error" not in chunk or len(chunk) < HEADER.size:
        return chunk
    import msgpack
    ident, offset, total = HEADER.unpack_from(chunk)
    if offset != 0 or total != len(chunk) - HEADER.size:
        return chunk  # a part of a long reply: results are long, error replies are not
    try:
        reply = msgpack.unpackb(memoryview(chunk)[HEADER.size:], raw=False)
    except Exception:  # not ours to judge: it leaves as it came
        return chunk
    error = reply.get("error") if isinstance(reply, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("data"), dict):
        return chunk
    data = error["data"]
    error["data"] = {"method": str(data.get("method", ""))[:100], "exception": one_line(data.get("exception", ""))}
    packed = msgpack.packb(reply)
    return HEADER.pack(ident, 0, len(packed)) + packed


def one_line(text, limit: int = 200) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"
