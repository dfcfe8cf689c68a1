"""``landscape explore`` against a hostile client and a hostile environment, on 127.0.0.1 only.

One server is started as a user would start it, with ``TRAME_ARGS`` asking trame for every interface,
the library's default secret and a folder of the system, and with ``-p tilt=0.3`` (a problem parameter
that trame's own parser used to read as its port). A raw websocket client then tries what another web
page, another user of the machine or a broken browser could: foreign ``Origin`` and ``Host`` headers,
the default secret, chunk headers claiming 512 MiB, frames over the limit, non-finite numbers, calls that
raise, malformed handshakes, an 8,000-character address and tabs that vanish mid-reply. Every loop is
bounded; each socket operation times out.
"""

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import pytest
from _servers import interrupt

pytest.importorskip("trame_pyvista", reason="the explorer needs the viz extra (trame-pyvista)")

TIMEOUT = 20.0
HEADER = struct.Struct("<III")


def _landscape(*args):
    return [sys.executable, "-m", "landscape_cli.cli", *args]


class Page:
    """A raw websocket client: handshakes and frames exactly as written, nothing checked on our side."""

    opened = []

    def __init__(self, port, *, host=None, origin="same", path="/ws", extra=""):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        Page.opened.append(self)
        host = host or f"127.0.0.1:{port}"
        origin = f"http://127.0.0.1:{port}" if origin == "same" else origin
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   + (f"Origin: {origin}\r\n" if origin else "") + extra + "\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0

    def send(self, payload: bytes, opcode=2, declared=None):
        mask = os.urandom(4)
        n = len(payload) if declared is None else declared
        head = bytes([0x80 | opcode])
        head += (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536
                 else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if len(payload) < 65536 else \
            (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (len(payload) // 4 + 1))[:len(payload)], "big")
             ).to_bytes(len(payload), "big")
        try:
            self.sock.sendall(head + mask + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed first: what it answered is read by recv

    def call(self, method, *args, ident=None, claim=None):
        ident = ident or f"rpc:c:{method}"
        packed = msgpack.packb({"wslink": "1.0", "id": ident, "method": method, "args": list(args), "kwargs": {}})
        self.send(HEADER.pack(7, 0, len(packed) if claim is None else claim) + packed)
        return ident

    def _exact(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def recv(self):
        """(opcode, payload): a binary message's msgpack object, or a close frame's (code, reason)."""
        b0, b1 = self._exact(2)
        n = b1 & 0x7F
        n = int.from_bytes(self._exact(2 if n == 126 else 8), "big") if n >= 126 else n
        payload = self._exact(n)
        if b0 & 0x0F == 8:
            return 8, (int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None, payload[2:].decode())
        return b0 & 0x0F, msgpack.unpackb(payload[HEADER.size:], raw=False)

    def reply(self, ident, limit=50):
        """The reply to call ``ident`` (publications in between are skipped), or the close frame."""
        for _ in range(limit):
            opcode, message = self.recv()
            if opcode == 8 or (isinstance(message, dict) and message.get("id") == ident):
                return opcode, message
        raise AssertionError(f"no reply to {ident} in {limit} messages")

    def hello(self, secret):
        return self.reply(self.call("wslink.hello", {"secret": secret}, ident="system:c0:0"))

    def close(self):
        self.sock.close()


@pytest.fixture(autouse=True)
def _close_pages():
    yield
    while Page.opened:
        Page.opened.pop().close()


def _http(port, target, host=None, origin=None):
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall((f"GET {target} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\nConnection: close\r\n"
                   + (f"Origin: {origin}\r\n" if origin else "") + "\r\n").encode())
        data = b""
        while len(data) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def _rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _listening(port):
    """Local addresses (hex, as /proc/net/tcp* writes them) that listen on ``port``."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for row in Path(table).read_text().splitlines()[1:]:
                local, state = row.split()[1], row.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    out.append(local.rsplit(":", 1)[0])
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("explore")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LANDSCAPE_CACHE": str(work / "cache"),
           "TRAME_ARGS": f"--host 0.0.0.0 --authKey wslink-secret --fs-endpoints etc={work}"}
    (work / "secret.txt").write_text("not to be served\n")
    proc = subprocess.Popen(_landscape("explore", "--problem", "double_well", "-p", "tilt=0.3", "--grid", "11x11",
                                       "--no-browser"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=work)
    line = {}
    reader = threading.Thread(target=lambda: line.setdefault("url", proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(300)
    url = line.get("url", "").strip()
    log = {}
    try:
        match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/\?secret=([\w-]+)", url)
        assert match, (url, proc.poll(), proc.poll() is not None and proc.stderr.read()[-2000:])
        yield {"proc": proc, "port": int(match.group(1)), "secret": match.group(2), "log": log, "bad": 0}
    finally:
        interrupt(proc)
        log["stderr"] = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()


def test_it_listens_on_127_0_0_1_only_whatever_trame_args_say(served):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system: the listening sockets cannot be listed")
    assert _listening(served["port"]) == ["0100007F"]  # 127.0.0.1, not 0.0.0.0 (00000000) nor ::


def test_foreign_hosts_and_origins_get_nothing(served):
    port, secret = served["port"], served["secret"]
    assert _http(port, f"/index.html?secret={secret}") == 200
    assert _http(port, f"/index.html?secret={secret}", host=f"localhost:{port}") == 200
    assert _http(port, "/index.html") == 403  # without the secret: the page says where to find the address
    for spelling in ("/index.html/", "/./index.html", "/index.html%2F", "/a/../index.html"):  # the file, however named
        assert _http(port, spelling) == 403, spelling
    for host in ("evil.example.com", f"evil.example.com:{port}", f"127.0.0.1:{port + 1}"):  # DNS rebinding
        assert _http(port, f"/index.html?secret={secret}", host=host) == 403
    assert _http(port, f"/index.html?secret={secret}", origin="http://evil.example.com") == 403
    assert _http(port, f"/etc/secret.txt?secret={secret}") == 404  # TRAME_ARGS' --fs-endpoints: not served
    assert _http(port, "/etc/secret.txt") == 403  # and nothing at all without the key
    page = Page(port)
    assert page.status == 101  # the page itself
    page.close()
    served["bad"] += 15  # the 10 bad requests above and the 5 websockets below
    for page in (Page(port, origin="http://evil.example.com"), Page(port, origin="null"),
                 Page(port, origin=f"http://127.0.0.1:{port}.evil.example.com"), Page(port, host="evil.example.com"),
                 Page(port, host=f"evil.example.com:{port}")):
        assert page.status == 403, page.status
        page.close()


def test_only_this_launchs_secret_opens_the_state(served):
    port, secret = served["port"], served["secret"]
    served["bad"] += 2
    page = Page(port)
    opcode, (code, _) = page.hello("wslink-secret")  # the library's default, asked for in TRAME_ARGS
    assert (opcode, code) == (8, 1008)
    page = Page(port)
    opcode, (code, _) = page.reply(page.call("trame.state.get"))  # no hello: nothing
    assert (opcode, code) == (8, 1008)
    page = Page(port)
    assert page.hello(secret)[1]["result"]["clientID"]
    state = page.reply(page.call("trame.state.get"))[1]["result"]["state"]
    assert state["counts"].startswith("valleys: ")
    page.close()


def _state(port, secret):
    page = Page(port)
    page.hello(secret)
    state = page.reply(page.call("trame.state.get"))[1]["result"]["state"]
    page.close()
    return state


def test_claims_past_what_the_page_sends_are_refused_without_growth(served):
    port, secret, pid = served["port"], served["secret"], served["proc"].pid
    _state(port, secret)
    served["bad"] += 4
    before = _rss_kib(pid)
    for size in (512 << 20, 64 * 1024 + 1):
        page = Page(port)
        page.hello(secret)
        for ident in (1, 2):  # two 17-byte frames, each claiming `size` bytes
            page.send(HEADER.pack(ident, 0, size) + b"\x90" * 5)
        opcode, (code, reason) = page.recv()
        assert (opcode, code) == (8, 1009) and "claims" in reason
        page.close()
    page = Page(port)
    page.hello(secret)
    page.send(b"\x00" * (1 << 20))  # a frame over the limit: aiohttp refuses it before it is buffered whole
    opcode, (code, _) = page.reply("never")
    assert (opcode, code) == (8, 1009)
    page.close()
    page = Page(port)
    page.hello(secret)
    page.send(b"", declared=1 << 40)  # a frame header declaring a terabyte, then nothing
    assert page.reply("never")[1][0] == 1009
    page.close()
    grown = _rss_kib(pid) - before
    print(f"server RSS after the oversized claims and frames: {grown:+d} KiB")
    assert grown < 32 * 1024, f"the server grew by {grown} KiB"  # wslink alone allocated 1 GiB here


def _triggers(state):
    template = state["trame__template_main"]
    goto = re.search(r"trigger\('(\w+)', \[[-+0-9.e]+\]\)", template).group(1)
    select = re.search(r"trigger\('(\w+)', \[0\]\)", template).group(1)
    return goto, select


def test_non_finite_values_and_raising_calls_are_refused_without_traces(served):
    port, secret = served["port"], served["secret"]
    before = _state(port, secret)
    goto, select = _triggers(before)
    served["bad"] += 10
    for method, args in (("trame.trigger", (goto, [float("inf")], {})), ("trame.trigger", (goto, [float("nan")], {})),
                         ("trame.state.update", ([{"key": "position", "value": float("nan")}],))):
        page = Page(port)
        page.hello(secret)
        opcode, (code, reason) = page.reply(page.call(method, *args))
        assert (opcode, code) == (8, 1007) and "non-finite" in reason
        page.close()
    for method, args in (("trame.trigger", (goto, ["inf"], {})), ("trame.trigger", (goto, [1e308, 2], {})),
                         ("trame.trigger", (select, [10 ** 6], {})), ("trame.trigger", (select, ["0"], {})),
                         ("trame.state.update", ([{"key": "position", "value": "abc"}],)),
                         ("trame.state.update", ([{"key": "log_scale", "value": 7}],)),
                         ("viewport.mouse.interaction", ({"view": "no such view"},))):
        page = Page(port)
        page.hello(secret)
        opcode, message = page.reply(page.call(method, *args))
        # a call that raised answers an error; a refused state change is undone (trame ignores its error)
        assert opcode == 2 and ("error" in message or method == "trame.state.update"), (method, args, message)
        assert "Traceback" not in repr(message) and "File \"" not in repr(message), message
        assert "trace" not in message.get("error", {}).get("data", {}), message
        after = page.reply(page.call("trame.state.get", ident="rpc:c:after"))[1]["result"]["state"]  # this page's
        assert all(after[k] == before[k] for k in ("position", "log_scale", "level_text", "counts")), (method, args)
        page.close()


def test_bad_requests_are_one_log_line_each_at_most(served):
    port, secret = served["port"], served["secret"]
    bad = served["bad"]  # what the tests before this one did wrong (none when it runs alone)
    for extra, drop in (("", "Sec-WebSocket-Key"), ("", "Sec-WebSocket-Version: 13"), ("", "Upgrade: websocket")):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:  # malformed upgrades
            lines = [f"GET /ws HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
            s.sendall(("\r\n".join(ln for ln in lines if not ln.startswith(drop)) + "\r\n\r\n").encode())
            assert s.recv(64).split(b" ")[1] in (b"400", b"426")
        bad += 1
    for raw in (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00" + bytes(64),
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil\r\n\r\n".encode(),
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nBad Header\r\n\r\n".encode()):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:  # not HTTP, or broken HTTP
            s.sendall(raw)
            assert s.recv(64).split(b" ")[1] == b"400"
        bad += 1
    assert _http(port, "/" + "a" * 8000) in (414, 431, 400)
    assert _http(port, f"/{'b' * 1000}?secret={secret}") == 404  # a long name: not a 500 with ENAMETOOLONG
    assert _http(port, "/..%2f..%2fetc/passwd") in (403, 404)
    bad += 3
    for _ in range(8):  # tabs closed while the server writes to them
        page = Page(port)
        page.hello(secret)
        page.call("trame.state.get")
        page.call("viewport.image.push", {"view": "-1"})
        page.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, no close frame
        page.close()
        bad += 1
    page = Page(port)
    page.send(b"hello", opcode=1)  # a text frame
    assert page.recv()[1][0] == 1003
    page.close()
    bad += 1
    assert _state(port, secret)["counts"].startswith("valleys: ")  # still serving
    proc = served["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    err = proc.stderr.read()
    served["log"]["stderr"] = err
    after = err.split("(Ctrl-C stops)", 1)[1].splitlines()
    lines = [ln for ln in after if ln.strip() and ln != "landscape explore: stopped"]
    assert "Traceback" not in err and not any(ln.startswith((" ", "\t")) for ln in lines), err[-3000:]
    assert all(ln.startswith("landscape explore: ") for ln in lines), lines
    print(f"{len(lines)} log lines for {bad} bad requests:", *lines, sep="\n")
    assert 4 <= len(lines) <= bad, lines  # the refusals are said, once each
