"""``landscape render`` and ``landscape chart`` on the command line."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main

pytest.importorskip("pyvista")


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == code, (result.output, result.stderr)
        return result

    return invoke


@pytest.fixture
def ring_files(tmp_path):
    ring = landscape.make_problem("ring")
    t = torch.linspace(0, math.pi, 17)
    pts = torch.stack([-torch.cos(t), torch.sin(t)], 1)
    arc = landscape.certify(ring, landscape.Path(pts, ring.loss(pts), method="string"), level=0.3)
    line = landscape.certify(ring, landscape.paths.linear_path(ring, pts[0], pts[-1]), level=0.3)
    files = {"arc": landscape.save_path(tmp_path / "arc.pt", ring, arc),
             "line": landscape.save_path(tmp_path / "line.pt", ring, line)}
    for i, m in enumerate(ring.minima.float()):
        files[f"m{i}"] = landscape.save_checkpoint(tmp_path / f"m{i}.pt", ring, m)
    return files


def test_render_an_analytic_problem_and_reuse_its_cached_surface(run, tmp_path):
    cache = tmp_path / "cache"
    first = run("render", "--problem", "ring", "--log", "--size", "320x240", "--cache", cache,
                "-o", tmp_path / "ring.png", "-o", tmp_path / "ring.vtm")
    assert "plane identity: x x y" in first.stdout and "points/s" in first.stdout
    from PIL import Image

    with Image.open(tmp_path / "ring.png") as im:
        assert im.size == (320, 240)
    assert (tmp_path / "ring.vtm").exists() and (tmp_path / "ring").is_dir()
    again = run("render", "--problem", "ring", "--size", "320x240", "--cache", cache, "-o", tmp_path / "b.png",
                "--json")
    summary = json.loads(again.stdout)
    assert summary["surface"]["cached"] is True and summary["files"] == [str(tmp_path / "b.png")]
    assert len([m for m in summary["markers"] if m["kind"] == "minimum"]) == 2


def test_render_minima_and_paths(run, ring_files, tmp_path):
    result = run("render", ring_files["m0"], ring_files["m1"], "--path", ring_files["arc"], "--path",
                 ring_files["line"], "--grid", "31x21", "--no-cache", "--size", "320x240", "--json",
                 "-o", tmp_path / "v.html")
    summary = json.loads(result.stdout)
    assert summary["surface"]["grid"] == [31, 21] and not summary["surface"]["cached"]
    curves = {c["label"]: c for c in summary["curves"]}
    assert curves["arc"]["normalized_length"] == pytest.approx(math.pi / 2, rel=0.01)
    assert curves["arc"]["status"] == "connected" and curves["line"]["status"] == "not_found"
    assert curves["line"]["max_loss"] == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "v.html").read_text().count("OfflineLocalView") >= 1
    assert [m["label"] for m in summary["markers"] if m["kind"] == "minimum"] == ["m0", "m1"]


@pytest.mark.parametrize("args, message", [
    (["--problem", "ring"], "give -o FILE"),
    (["--problem", "ring", "-o", "v.gif"], "unknown output format .gif"),
    (["--problem", "ring", "--grid", "9by9", "-o", "v.png"], "write it as AxB"),
    (["--problem", "ring", "--span", "1,2", "-o", "v.png"], "--span '1,2'"),
    (["--problem", "ring", "--size", "big", "-o", "v.png"], "--size 'big'"),
    (["--problem", "digits_mlp", "-o", "v.png"], "no known minima"),
    (["--problem", "ring", "--plane", "random", "-o", "v.png"], "identity plane"),
    (["-o", "v.png"], "nothing to render"),
])
def test_render_user_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["render", "--no-cache", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_render_refuses_files_of_two_problems(ring_files, tmp_path):
    other = landscape.make_problem("ring", radius=2.0)
    odd = landscape.save_checkpoint(tmp_path / "odd.pt", other, other.minima[0].float())
    result = CliRunner().invoke(main, ["render", str(ring_files["m0"]), str(odd), "-o", str(tmp_path / "v.png")])
    assert result.exit_code == 2 and "render files of one problem together" in result.stderr


def test_chart_commands(run, ring_files, tmp_path):
    out = run("chart", "losses", ring_files["arc"], ring_files["line"], "--x", "arc_over_chord", "-o",
              tmp_path / "l.png", "--json")
    info = json.loads(out.stdout)
    assert info["file"] == str(tmp_path / "l.png") and info["arc"]["status"] == "connected"
    merges = tmp_path / "merges.json"
    merges.write_text(json.dumps({"minima": {"a": 0.0, "b": 0.2, "c": 0.1},
                                  "merges": [{"pair": ["a", "b"], "level": 0.5}, {"pair": ["b", "c"], "level": 0.9}]}))
    tree = json.loads(run("chart", "tree", merges, "--level", 0.6, "--tol", 0.05, "-o", tmp_path / "t.pdf",
                          "--json").stdout)
    assert tree["valleys"] == [["a", "b"], ["c"]] and tree["spurious"] == [["c"]]
    table = tmp_path / "lengths.csv"
    table.write_text("level,width,normalized_length\n0.1,4,1.6\n0.2,4,1.3\n0.1,8,1.2\n0.2,8,1.05\n")
    run("chart", "lengths", table, "--by", "width", "-o", tmp_path / "n.png")
    run("chart", "lengths", table, "--surface", "width", "-o", tmp_path / "s.png")
    exp = landscape.make_problem("exp_linear", dim=6, n_train=30, n_test=10)
    res = landscape.train(exp, [0], optimizer="gd", lr=0.2, steps=300, record_every=10)
    ck = landscape.save_checkpoint(tmp_path / "e.pt", exp, res.thetas[0], trajectory=res.trajectories[0])
    w = json.loads(run("chart", "weights", ck, "-o", tmp_path / "w.png", "--json").stdout)
    assert w["norm_end"] > w["norm_start"] and 0 < w["captured_mean"] <= 1
    for name in ("l.png", "t.pdf", "n.png", "s.png", "w.png"):
        assert (tmp_path / name).stat().st_size > 1000
    bad = run("chart", "weights", ring_files["m0"], "-o", tmp_path / "x.png", code=2)
    assert "holds no trajectory" in bad.stderr
    bad = run("chart", "tree", table, "-o", tmp_path / "x.png", code=2)
    assert "not valid JSON" in bad.stderr


def test_a_vtm_never_deletes_a_folder_it_did_not_write(run, ring_files, tmp_path):
    """``render minima/*.pt -o minima.vtm`` must not remove ``minima/`` (a .vtm keeps its blocks in NAME/)."""
    minima = tmp_path / "minima"
    minima.mkdir()
    for name in ("m0", "m1"):
        (minima / f"{name}.pt").write_bytes(ring_files[name].read_bytes())
    before = {p.name: p.read_bytes() for p in minima.iterdir()}
    out = run("render", minima / "m0.pt", minima / "m1.pt", "--size", "160x120", "-o", tmp_path / "minima.vtm",
              "-q", code=2)  # -q: the plane's progress line (an uncached surface) is not the error
    assert len(out.stderr.strip().splitlines()) == 1 and "minima/" in out.stderr
    assert {p.name: p.read_bytes() for p in minima.iterdir()} == before and not (tmp_path / "minima.vtm").exists()
    # its own block folder is replaced on a second write
    for _ in range(2):
        run("render", minima / "m0.pt", minima / "m1.pt", "--size", "160x120", "-o", tmp_path / "view.vtm")
    assert (tmp_path / "view").is_dir() and not [p for p in tmp_path.iterdir() if p.name.startswith(".view")]
