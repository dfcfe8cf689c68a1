"""``landscape connect`` and ``landscape info`` on path files, end to end."""

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main

KEYS = {"status", "level", "method", "max_loss", "barrier", "linear_max_loss", "normalized_length", "n_points",
        "evaluations", "seconds", "bn", "resolution", "n_beads", "endpoint_losses", "files"}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def himmelblau_minima(tmp_path):
    problem = landscape.make_problem("himmelblau")
    files = []
    for i in range(4):
        files.append(tmp_path / f"h{i}.pt")
        landscape.save_checkpoint(files[-1], problem, problem.minima[i], seed=i)
    return files


def test_connect_prints_json_writes_the_path_and_info_reads_it(himmelblau_minima, tmp_path):
    a, b = himmelblau_minima[0], himmelblau_minima[1]
    out = tmp_path / "p.pt"
    result = run("connect", a, b, "--level", 80, "--float64", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert KEYS <= set(report)
    assert report["status"] == "connected" and report["method"] == "string" and report["level"] == 80
    assert report["linear_max_loss"] >= report["max_loss"] >= 67.7192 - 1e-3  # the saddle between them
    assert report["files"] == [str(a), str(b)] and report["bn"] is None
    path, problem, meta = landscape.load_path(out)
    assert path.status == "connected" and meta["endpoints"] == [str(a), str(b)]
    assert path.max_loss == pytest.approx(report["max_loss"])
    assert torch.equal(path.points[0], problem.minima[0]) and torch.equal(path.points[-1], problem.minima[1])
    described = json.loads(run("info", out, "--json").stdout)
    assert described["kind"] == "path" and described["status"] == "connected"
    assert described["normalized_length"] == pytest.approx(report["normalized_length"])
    human = run("info", out, a).output
    assert "path of himmelblau D=2, method string, connected at level 80" in human
    assert "himmelblau D=2 seed=0" in human  # a minimum next to it is still described as one


def test_connect_human_summary_and_default_level(himmelblau_minima):
    result = run("connect", himmelblau_minima[0], himmelblau_minima[3], "--method", "neb")
    assert result.exit_code == 0, result.output
    text = result.output
    # both minima have loss 0: the default level (0.1) is far below the saddle (13.3): not found
    assert "level       0.1  (10% above the worse endpoint)" in text
    assert "NOT FOUND" in text and "linear      max loss" in text and "normalized length" in text


def test_options_reach_the_method(himmelblau_minima):
    result = run("connect", himmelblau_minima[0], himmelblau_minima[3], "--level", 20, "--method", "bezier",
                 "-O", "bends=2", "-O", "steps=40", "--json")
    report = json.loads(result.stdout)
    assert report["info"]["bends"] == 2 and report["info"]["steps"] <= 40


@pytest.mark.parametrize("extra, message", [
    (["-O", "colour=1"], "has no option(s) ['colour']"),
    (["--bn", "frozen"], "has no BatchNorm layers"),
    (["--resolution", "0"], "Invalid value for '--resolution'"),
])
def test_bad_options_are_one_line(himmelblau_minima, extra, message):
    result = CliRunner().invoke(main, ["connect", str(himmelblau_minima[0]), str(himmelblau_minima[1]), *extra])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_mismatched_checkpoints_name_both_files(himmelblau_minima, tmp_path):
    ring = landscape.make_problem("ring")
    other = tmp_path / "ring0.pt"
    landscape.save_checkpoint(other, ring, ring.minima[0])
    result = CliRunner().invoke(main, ["connect", str(himmelblau_minima[0]), str(other)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(himmelblau_minima[0]) in lines[0] and str(other) in lines[0]
    assert "different problems" in lines[0]


def test_user_batchnorm_network_end_to_end(tmp_path, monkeypatch):
    (tmp_path / "bnnet.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(40, 2, generator=g)
            y = (x[:, :1] * x[:, 1:]).tanh()
            return nn.Sequential(nn.Linear(2, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 1)), (x, y), "mse"
    """))
    monkeypatch.chdir(tmp_path)
    trained = run("train", "bnnet:build", "--seeds", "0,1", "--steps", 30, "--lr", 0.05, "-o", "m", "--json")
    assert trained.exit_code == 0, trained.output
    a, b = (r["file"] for r in json.loads(trained.stdout))
    result = run("connect", a, b, "--problem", "bnnet:build", "--method", "linear", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bn"] == "recompute"
    # the endpoints' losses: training used recomputed statistics, so "recompute" reproduces them
    ck = landscape.load_checkpoint(a, problem=landscape.make_problem("bnnet:build"))
    assert report["endpoint_losses"][0] == pytest.approx(ck.loss, rel=1e-5)
    # each file holds its own minimum's BatchNorm statistics: no one frozen loss is both networks' function
    frozen = run("connect", a, b, "--problem", "bnnet:build", "--bn", "frozen", "--method", "linear", "--json")
    assert frozen.exit_code != 0 and "hold different BatchNorm running statistics" in frozen.output
    # one file's statistics make bn="frozen" the trained network: its loss is the recorded one
    problem = landscape.make_problem("bnnet:build")
    ck = landscape.load_checkpoint(a, problem=problem)
    problem.bn = "frozen"
    assert float(problem.loss(ck.theta)) == pytest.approx(ck.loss, rel=1e-5)


def test_connect_and_valleys_talk_while_they_work_unless_quiet(himmelblau_minima):
    """A progress line on stderr names the stage and counts the loss evaluations; --quiet leaves stderr empty
    and the answer unchanged."""
    a, b = himmelblau_minima[:2]
    # a fixed memory budget: the default (half the free memory) moves between two calls
    loud = CliRunner().invoke(main, ["connect", str(a), str(b), "--level", "120", "--json", "--memory", "1GiB"])
    quiet = CliRunner().invoke(main, ["connect", str(a), str(b), "--level", "120", "--json", "--memory", "1GiB", "-q"])
    assert loud.exit_code == 0 and quiet.exit_code == 0, loud.output
    assert "connect (string): search (string)" in loud.stderr and "loss evaluations" in loud.stderr
    assert "certificate (auto)" in loud.stderr and quiet.stderr == ""
    same = [_timeless(json.loads(r.stdout)) for r in (loud, quiet)]
    assert same[0] == same[1]
    shown = CliRunner().invoke(main, ["valleys", *map(str, himmelblau_minima), "--level", "120"])
    assert shown.exit_code == 0 and f"valleys of {len(himmelblau_minima)} minima: level 120" in shown.stderr
    assert CliRunner().invoke(main, ["valleys", *map(str, himmelblau_minima), "--level", "120", "-q"]).stderr == ""


def _timeless(value):
    """A JSON answer without its timings (every ``seconds``, at any depth)."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value
