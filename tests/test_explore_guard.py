"""What the explorer's server takes from a page, without a server: frames, calls, replies, addresses, values.

The hostile client against a running server is ``tests/test_explore_hostile.py``; here each check is
called directly, and the ``Explorer`` refuses what a page (or a caller) should never send.
"""

import asyncio
import math
import socket
import subprocess
import sys
import time

import msgpack
import pytest

import landscape

pytest.importorskip("trame_pyvista", reason="the explorer needs the viz extra (trame-pyvista)")

from landscape.viz._guard import HEADER, MAX_DEPTH, MAX_MESSAGE, Refused, check_hello, read_frame, scrub_reply  # noqa: E402
from landscape.viz._serve import Address, listen  # noqa: E402


def frame(call, *, ident=3, claim=None, offset=0):
    packed = msgpack.packb(call)
    return HEADER.pack(ident, offset, len(packed) if claim is None else claim) + packed


def call(method="trame.trigger", *args, **kwargs):
    return {"wslink": "1.0", "id": "rpc:c1:4", "method": method, "args": list(args), "kwargs": kwargs}


def test_a_frame_carries_one_whole_small_call():
    got = read_frame(frame(call("trame.trigger", "trigger__1", [1.5, 2], {"a": [None, True, "x", b"\x00"]})))
    assert got["args"] == ["trigger__1", [1.5, 2], {"a": [None, True, "x", b"\x00"]}]
    too_big = frame(call("x", "a" * MAX_MESSAGE))
    for bad, code, words in [
        (HEADER.pack(1, 0, 512 << 20) + b"\x90" * 5, 1009, "claims 536870912 bytes"),  # 17 bytes claiming 512 MiB
        (too_big, 1009, "claims"),
        (frame(call(), offset=4), 1007, "offset 4"),
        (frame(call(), claim=len(msgpack.packb(call())) + 1), 1007, "carrying"),
        (b"\x01\x02", 1007, "shorter than"),
        (HEADER.pack(1, 0, 3) + b"\xc1\xc1\xc1", 1007, "not one msgpack message"),
        (HEADER.pack(1, 0, 4) + b"\x91" * 3 + b"\xc0", 1007, "list, not a call"),
    ]:
        with pytest.raises(Refused, match=words) as err:
            read_frame(bad)
        assert err.value.code == code


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, [1.0, [2.0, {"k": math.nan}]]])
def test_non_finite_numbers_anywhere_are_refused(value):
    with pytest.raises(Refused, match="non-finite"):
        read_frame(frame(call("trame.state.update", [{"key": "position", "value": value}])))


def test_odd_shapes_and_deep_nesting_are_refused():
    def nested(k):  # k lists, one in another
        return [nested(k - 1)] if k else 0

    with pytest.raises(Refused, match="nested deeper"):
        read_frame(frame(call("m", nested(MAX_DEPTH - 1))))  # with the call and its args: one too many
    read_frame(frame(call("m", nested(MAX_DEPTH - 2))))
    with pytest.raises(Refused, match="'args' must be a list"):
        read_frame(frame({"id": "a", "method": "m", "args": {"x": 1}}))
    with pytest.raises(Refused, match="string 'id' and 'method'"):
        read_frame(frame({"id": 5, "method": "m"}))
    with pytest.raises(Refused, match="Timestamp"):
        read_frame(frame(call("m", msgpack.Timestamp(0))))
    with pytest.raises(Refused, match="ExtType"):
        read_frame(frame(call("m", msgpack.ExtType(5, b"x"))))


def test_the_first_call_must_be_the_hello_with_this_secret():
    hello = call("wslink.hello", {"secret": "k-right"})
    hello["id"] = "system:c0:0"
    check_hello(hello, "k-right")
    for bad in ({"secret": "wslink-secret"}, {"secret": 5}, {}, "k-right"):
        with pytest.raises(Refused, match="without this launch's secret"):
            check_hello({**hello, "args": [bad]}, "k-right")
    with pytest.raises(Refused, match="before the hello"):
        check_hello(call("trame.state.get"), "k-right")


def test_error_replies_lose_their_trace():
    trace = 'Traceback (most recent call last):\n  File "/home/u/x.py", line 3, in f\nValueError: bad\n'
    reply = {"wslink": "1.0", "id": "rpc:c1:4",
             "error": {"code": -32001, "message": "Exception raised",
                       "data": {"method": "trame.trigger", "exception": "ValueError('bad')\nmore", "trace": trace}}}
    packed = msgpack.packb(reply)
    out = scrub_reply(HEADER.pack(9, 0, len(packed)) + packed)
    ident, offset, total = HEADER.unpack_from(out)
    back = msgpack.unpackb(out[HEADER.size:])
    assert (ident, offset, total) == (9, 0, len(out) - HEADER.size)
    assert back["error"]["data"] == {"method": "trame.trigger", "exception": "ValueError('bad')"}
    assert b"Traceback" not in out and b"x.py" not in out
    result = msgpack.packb({"id": "a", "result": {"error": "a field named error is kept"}})
    chunk = HEADER.pack(1, 0, len(result)) + result
    assert scrub_reply(chunk) == chunk


class _Request:
    def __init__(self, **headers):
        self.headers = _Headers(headers)


class _Headers(dict):
    def getall(self, key, default):
        return [self[key]] if key in self else default


def test_only_this_servers_host_and_page_origin_pass():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        address, again = Address(s), Address(s)
    assert address.url == f"http://127.0.0.1:{port}/?secret={address.secret}" and address.secret[0].isalpha()
    assert len(address.secret) >= 30 and again.secret != address.secret  # random for each launch
    ok = [{"Host": f"127.0.0.1:{port}"}, {"Host": f"LOCALHOST:{port}"},
          {"Host": f"127.0.0.1:{port}", "Origin": f"http://localhost:{port}"}]
    for headers in ok:
        assert address.refusal(_Request(**headers)) is None, headers
    bad = [{}, {"Host": "evil.example.com"}, {"Host": f"evil.example.com:{port}"}, {"Host": f"127.0.0.1:{port + 1}"},
           {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example.com"},
           {"Host": f"127.0.0.1:{port}", "Origin": f"https://127.0.0.1:{port}"},
           {"Host": f"127.0.0.1:{port}", "Origin": "null"}]
    for headers in bad:
        assert address.refusal(_Request(**headers)), headers


def test_a_port_in_use_is_refused_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(landscape.LandscapeError, match=f"port {port} on 127.0.0.1 is in use"):
            listen(port)
        with pytest.raises(landscape.LandscapeError, match="give an IP address"):
            listen(0, "example.com")
        for everywhere in ("0.0.0.0", "::"):
            with pytest.raises(landscape.LandscapeError, match="every interface"):
                listen(0, everywhere)
        sock = listen(0, "localhost")
        assert sock.getsockname()[0] == "127.0.0.1" and sock.getsockname()[1] != port
        sock.close()
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "landscape_cli.cli", "explore", "--problem", "double_well",
                               "--port", str(port), "--no-browser"], capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - started
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1, done.stderr
    assert "in use" in lines[0] and "serving" not in done.stderr
    print(f"port in use refused in {seconds:.1f} s (the process, imports included)")


@pytest.fixture(scope="module")
def explorer():
    app = landscape.viz.explore(problem=landscape.make_problem("double_well"), grid="11x11")
    yield app
    app.close()


def test_the_explorer_refuses_what_no_page_sends(explorer):
    level, position = explorer.level, explorer.state.position
    for bad in (math.inf, math.nan, -math.inf, "1.0", None, True, [1.0]):
        with pytest.raises(landscape.LandscapeError, match="give a finite number"):
            explorer.goto(bad)
    for bad in (-1, 2, 1.5, "0", True, math.nan, 10 ** 30):
        with pytest.raises(landscape.LandscapeError, match="a whole number from 0 to 1"):
            explorer.select(bad)
    for bad in ((math.nan, 1, 10, 10), (1, 2, "3", 4), (1, 2, math.inf, 4)):
        with pytest.raises(landscape.LandscapeError, match="four finite numbers"):
            explorer._on_tree_click(*bad)
    for bad in (math.nan, "abc", 10 ** 9, -1, 2.5, True):
        with pytest.raises(landscape.LandscapeError, match="whole number from 0 to 1000"):
            explorer.slide(bad)
        assert (explorer.level, explorer.state.position, explorer.state.log_scale) == (level, position, False)
    for bad in ("yes", 1, None):
        with pytest.raises(landscape.LandscapeError, match="true or false"):
            explorer.set_log_scale(bad)
        assert (explorer.level, explorer.state.position, explorer.state.log_scale) == (level, position, False)
    explorer.goto(level + 0.25)  # what a page does send still works
    assert explorer.level == level + 0.25 and explorer.state.level_text == f"u = {level + 0.25:.6g}"
    explorer.select(1.0)
    assert "loss" in explorer.state.selected


def test_start_says_it_cannot_serve_inside_a_running_loop(explorer):
    async def in_a_notebook():
        explorer.start(port=0, open_browser=False)

    with pytest.raises(landscape.LandscapeError, match="running event loop"):
        asyncio.run(in_a_notebook())


def test_the_log_switch_keeps_u_exactly_and_recolours_the_surface(explorer):
    import numpy as np

    explorer.goto(0.7125)  # not a slider position on either scale
    counts = explorer.state.counts
    mapper = explorer.view.plotter.actors["surface"].GetMapper()
    loss = np.asarray(explorer.view.meshes.surface.point_data["loss"], dtype=float)
    floor = explorer.levels.log_low  # the colours' floor is the log slider's low end
    for log in (True, False, True, False):
        explorer.set_log_scale(log)
        assert explorer.level == 0.7125 and explorer.state.counts == counts  # u kept exactly, not re-read off the slider
        assert explorer.state.log_scale is log and explorer.state.position == explorer.levels.position(0.7125, log=log)
        assert explorer.state.range_low == f"{explorer.levels.range(log=log)[0]:.4g}"
        colours = np.log10(np.maximum(loss, floor)) if log else loss
        assert mapper.GetArrayName() == ("log10_loss" if log else "loss")
        assert mapper.GetScalarRange() == pytest.approx((colours.min(), colours.max()), rel=1e-12, abs=1e-12)
        assert mapper.GetLookupTable().GetRange() == pytest.approx(mapper.GetScalarRange())
        titles = [bar.GetTitle() for bar in explorer.view.plotter.scalar_bars.values()]
        assert titles == [("log10 " if log else "") + "loss"], titles
    position = explorer.state.position + 1
    explorer.slide(position)  # the slider, then, reads its own scale
    assert explorer.level == explorer.levels.level(position)


def test_each_page_gets_an_explorer_of_its_own_at_the_start(explorer):
    start = explorer._origin[0]
    explorer.goto(start + 0.5)
    tab = explorer.tab()
    try:
        assert tab.level == start and tab.state is not explorer.state and tab.view.plotter is not explorer.view.plotter
        assert tab.state.view_placeholder.startswith("data:image/jpeg;base64,")
        tab.goto(start + 0.25)
        tab.set_log_scale(True)
        assert explorer.level == start + 0.5 and not explorer.log_scale  # one page's moves stay in it
    finally:
        tab.close()


def test_the_sublevel_set_is_the_surface_lightened_in_its_own_scale(explorer):
    """No second surface laid over the first (it z-fought it: grey shards); the colour table is lightened at and
    below u in the scale the colours are drawn in, linear or log10, and nowhere else."""
    import numpy as np
    from matplotlib import colormaps

    plain = np.round(255 * colormaps["viridis"](np.linspace(0.0, 1.0, 1024))).astype(int)
    for log in (False, True, False):
        explorer.set_log_scale(log)
        explorer.goto(0.7125)
        view = explorer.view
        assert "sublevel" not in view.plotter.actors
        low, high = view.plotter.actors["surface"].GetMapper().GetScalarRange()
        lut = np.asarray(view.plotter.actors["surface"].mapper.lookup_table.values, dtype=int)
        centres = low + (np.arange(1024) + 0.5) / 1024 * (high - low)
        below = centres <= (np.log10(0.7125) if log else 0.7125)
        assert 0 < below.sum() < 1024, (log, low, high)
        assert (lut[~below, :3] == plain[~below, :3]).all()  # above u: the colour map itself
        assert (lut[below, :3] > plain[below, :3]).any(axis=1).all()  # at and below u: lighter
    explorer.set_log_scale(False)
