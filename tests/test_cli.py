"""The command line: every user error is one line on stderr with exit status 2."""

import json

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_problems_lists_the_registry(run):
    result = run("problems")
    assert result.exit_code == 0
    for name in landscape.PROBLEMS:
        assert name in result.output
    rows = json.loads(run("problems", "--json").output)
    assert {r["name"] for r in rows} == set(landscape.PROBLEMS)


def test_train_then_info_reads_the_same_loss(run, tmp_path):
    out = tmp_path / "m"
    result = run("train", "deep_linear", "--seeds", "0..2", "-o", out, "--steps", 50, "--lr", 0.01, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["seed"] for r in rows] == [0, 1, 2]
    info = json.loads(run("info", *[r["file"] for r in rows], "--json").stdout)
    for row, d in zip(rows, info):
        assert d["recorded_loss"] == pytest.approx(row["loss"], rel=1e-6)
        assert d["losses"]["train"] == pytest.approx(row["loss"], rel=1e-5)
    human = run("info", rows[0]["file"])
    assert "deep_linear D=120 seed=0" in human.output


def test_width_and_params(run, tmp_path):
    result = run("train", "moons_mlp", "-w", 5, "-p", "depth=1", "-p", "n_train=50", "--seeds", 3, "--steps", 5,
                 "-o", tmp_path, "--json")
    assert result.exit_code == 0
    ck = landscape.load_checkpoint(json.loads(result.stdout)[0]["file"])
    assert ck.problem.params["width"] == 5 and ck.problem.params["depth"] == 1 and ck.seed == 3


@pytest.mark.parametrize("args, message", [
    (["train", "nope"], "unknown problem 'nope'"),
    (["train", "ring", "--seeds", "a..b"], "--seeds 'a..b'"),
    (["train", "ring", "-p", "radius"], "must look like key=value"),
    (["train", "ring", "-p", "colour=2"], "has no parameter"),
    (["train", "ring", "--device", "cuda:0" if not torch.cuda.is_available() else "tpu"], "device"),
    (["info", "missing.pt"], "missing.pt: no such file"),
])
def test_user_errors_are_one_line_exit_2(args, message, tmp_path):
    result = CliRunner().invoke(main, args + (["-o", str(tmp_path)] if args[0] == "train" else []))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_corrupt_checkpoint_on_the_command_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    result = CliRunner().invoke(main, ["info", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith("landscape: error: ") and "bad.pt" in result.stderr


def test_bench_prints_batched_loop_and_peak(run):
    result = run("bench", "-k", 4, "--seconds", 0.01, "--beads", 3, "--bead-steps", 2, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["mm_gflops"] > 0
    names = [r["problem"] for r in report["evaluator"]]
    assert any("quadratic_regression" in n for n in names) and any("width=512" in n for n in names)
    for row in report["evaluator"]:
        assert row["batched_points_per_s"] > 0 and row["loop_points_per_s"] > 0 and row["batched_gflops"] > 0
        assert row["plain_points_per_s"] > 0  # the problem's own nn.Module, forward and backward
        assert [s["k"] for s in row["scaling"]] == [1, 4] and all(s["us"] > 0 and s["cpu_us"] > 0 for s in row["scaling"])
    assert [p["points"] for p in report["planes"]] == [51 * 51] * 2
    assert all(p["cpu_s"] > 0 and p["module_cpu_s"] > 0 for p in report["planes"])
    # one DSS round, 3 beads x 2 steps (+ the beads' last check) then 6 segments checked at 32 + the last knot
    for row in report["path_refinement"]:
        assert row["beads"] == 3 and row["evaluations"] == 3 * 3 + 6 * 32 + 1
        assert row["batched_s"] > 0 and row["bead_by_bead_s"] > 0


def test_the_plain_module_of_the_bench_computes_the_problems_loss():
    """The bench's nn.Module baseline is the same function: its loss at θ is the problem's (so its speed is
    comparable), and its gradient too."""
    import copy

    problem = landscape.make_problem("moons_mlp", width=6, n_train=50, n_test=10)
    theta = problem.init(torch.Generator().manual_seed(0))
    module = copy.deepcopy(problem.module_)
    with torch.no_grad():
        for p, value in zip(module.parameters(), problem.layout.unflatten(theta[None]).values()):
            p.copy_(value[0])
    x, y = problem._splits["train"]
    value = problem._batched_loss(module(x).unsqueeze(0), y.unsqueeze(0))[0]
    value.backward()
    loss, grad = problem.loss_and_grad(theta)
    torch.testing.assert_close(value.detach(), loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.cat([p.grad.flatten() for p in module.parameters()]), grad, rtol=1e-5, atol=1e-6)


def test_help_answers_without_importing_torch_and_is_the_real_help():
    import subprocess
    import sys

    from landscape_cli._index import group_help, help_text

    assert help_text() == group_help(main)  # the static index says what the real group says
    code = ("import sys; sys.argv = ['landscape', '--help']; import landscape_cli; landscape_cli.main(); "
            "print([m for m in ('torch', 'numpy', 'landscape') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]" and out.startswith("Usage: landscape [OPTIONS] COMMAND [ARGS]...")
    assert all(f"  {name} " in out for name in main.commands)


def test_problems_answers_from_its_cache_without_importing_torch(tmp_path):
    """The first ``landscape problems`` computes the listing (torch) and keeps it; the next ones print it from the
    cache without importing torch, the same text and JSON; a cache of another install or a broken one is ignored."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = ("import sys\nsys.argv = ['landscape', *sys.argv[1:]]\nimport landscape_cli\ntry:\n"
            "    landscape_cli.main()\nfinally:\n    print('torch' in sys.modules)")  # the full command ends in sys.exit

    def listing(*args):
        lines = subprocess.run([sys.executable, "-c", code, "problems", *args], capture_output=True, text=True,
                               env=env, check=True).stdout.splitlines()
        return "\n".join(lines[:-1]), lines[-1] == "True"

    expected = {args: CliRunner().invoke(main, ["problems", *args]).output.rstrip("\n") for args in ((), ("--json",))}
    cache = tmp_path / "landscape" / "problems.json"
    first, imported = listing()
    assert first == expected[()] and imported and cache.is_file()
    for args in ((), ("--json",)):
        again, imported = listing(*args)
        assert again == expected[args] and not imported
    stored = json.loads(cache.read_text())
    for broken in (json.dumps({**stored, "key": "another install"}), "{not json", json.dumps({"key": stored["key"]})):
        cache.write_text(broken)
        out, imported = listing()
        assert out == expected[()] and imported  # recomputed, and the cache rewritten
    assert json.loads(cache.read_text())["key"] == stored["key"]


def test_version_answers_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys; sys.argv = ['landscape', '--version']; import landscape_cli; landscape_cli.main(); "
            "print([m for m in ('torch', 'numpy', 'landscape') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"landscape, version {landscape.__version__}", "[]"]
    full = CliRunner().invoke(main, ["-V"])  # the same answer from the full command line
    assert full.exit_code == 0 and full.output.strip() == f"landscape, version {landscape.__version__}"


def test_bench_real_measures_a_million_parameters_batched_and_looped(run):
    from landscape.bench import real_cnn

    big = real_cnn()
    assert big.dim == 1_015_114 and big.n_samples() == 5000 and tuple(big.data()[0].shape[1:]) == (1, 16, 16)
    result = run("bench", "--real", "--real-images", 32, "-k", 2, "--memory", "4GiB", "--json")
    report = json.loads(result.stdout)
    assert report["dim"] == 1_015_114 and report["samples"] == 32 and report["k"] == 2
    assert report["grad_difference"] < 1e-4  # the batched evaluator and the nn.Module loop compute one gradient
    assert report["batched_points_per_s"] > 0 and report["loop_points_per_s"] > 0 and report["loop_peak_bytes"] > 0
    connect = report["connect"]
    assert connect["status"] in ("connected", "not_found") and connect["evaluations"] >= 9
    assert connect["memory"]["budget"] == 4 << 30 and connect["memory"]["k"] >= 1


def test_bench_problems_are_named_as_elsewhere_user_factories_included():
    """``--problem usernets:resnet`` was read as the problem "usernets" with a parameter "resnet" (refused)."""
    from landscape_cli._common import capture_lines, split_problem

    assert split_problem("digits_mlp") == ("digits_mlp", {})
    assert split_problem("digits_mlp:width=256,depth=3") == ("digits_mlp", {"width": 256, "depth": 3})
    assert split_problem("usernets:resnet") == ("usernets:resnet", {})
    assert split_problem("my.nets:resnet:width=8") == ("my.nets:resnet", {"width": 8})
    lines = capture_lines({"evaluator": "wide", "points": 2, "seconds": 0.1, "loss": 0.25, "notes": ["n"]})
    assert "wide evaluator" in lines[0] and "functional_call" not in lines[0] and lines[1] == "note        n"
