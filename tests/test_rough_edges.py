"""Rough edges a new user meets first: a factory given parameters it does not take, `info` on a plain state_dict,
the documentation's own-model snippet run as written, and the figures the README and the docs quote for the main
job (the text is read wherever it lives: README.md or the Sphinx site's pages under docs/)."""

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import landscape
from landscape.minima.train import checkpoint_name
from landscape.problems.user import load_user_problem
from landscape_cli.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
#: The README and every Markdown page of the docs site, by path: the figures and snippets live in one of them.
PAGES = {p.relative_to(ROOT).as_posix(): p.read_text()
         for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
         if "_build" not in p.parts and "auto_examples" not in p.parts}
TEXT = "\n".join(PAGES.values())
#: The command-line overview (the usage list that moved from the README to the docs).
COMMANDS_PAGE = PAGES["docs/guide/commands.md"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write ``name.py`` into a fresh current folder, as a user would, and forget it afterwards."""
    monkeypatch.chdir(tmp_path)

    def write(name: str, source: str) -> Path:
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.delitem(sys.modules, name, raising=False)
        return tmp_path

    yield write
    for name in [p.stem for p in tmp_path.glob("*.py")]:
        sys.modules.pop(name, None)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


NO_ARGS = """
import torch
from torch import nn
def factory():
    x = torch.linspace(-1, 1, 16)[:, None]
    return nn.Sequential(nn.Linear(1, 3), nn.Tanh(), nn.Linear(3, 1)), (x, x ** 2), "mse"
def widened(width, depth=1):
    return factory()
"""


@pytest.mark.parametrize("args, named", [(("train", "noargs_a:factory", "-w", 4), "width"),
                                         (("info", "x.pt", "--problem", "noargs_a:factory", "-p", "foo=1"), "foo")])
def test_a_factory_given_a_parameter_it_does_not_take_is_one_line_exit_2(user_module, args, named):
    folder = user_module("noargs_a", NO_ARGS)
    made = load_user_problem("noargs_a:factory")
    torch.save(made.layout.unflatten(made.init(torch.Generator().manual_seed(0))), folder / "x.pt")
    result = run(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "noargs_a:factory" in lines[0] and "takes no parameters" in lines[0] and named in lines[0]


def test_the_refusal_names_the_parameters_the_factory_accepts(user_module):
    user_module("noargs_b", NO_ARGS)
    with pytest.raises(landscape.LandscapeError, match=r"takes width, depth, not foo"):
        load_user_problem("noargs_b:widened", width=2, foo=1)
    assert load_user_problem("noargs_b:widened", width=2, depth=3).dim == 10  # accepted ones still pass


def own_model_block() -> tuple[str, str]:
    """The own-model snippet (docs/guide/problems.md) and the page that shows it."""
    found = [(b, page) for page, text in PAGES.items() for b in re.findall(r"```python\n(.*?)```", text, flags=re.S)
             if "class MyNet" in b and "def factory" in b]
    assert len(found) == 1, f"the own-model snippet should be shown once (user guide, Problems): {len(found)} found"
    return found[0]


def test_own_model_snippet_runs_as_written(user_module):
    block, page = own_model_block()
    folder = user_module("mymodule", block)
    assert "imported from the current folder" in PAGES[page] and "PYTHONPATH" in PAGES[page]
    problem = load_user_problem("mymodule:factory")
    wide = load_user_problem("mymodule:factory", width=16)
    assert (problem.dim, wide.dim) == (4 * 8 + 8 + 8 * 3 + 3, 4 * 16 + 16 + 16 * 3 + 3)
    from_dataset = load_user_problem("mymodule:factory_from_dataset")
    theta = problem.init(torch.Generator().manual_seed(1))
    assert torch.allclose(problem.loss(theta), from_dataset.loss(theta))  # tensors or a Dataset: the same loss

    # a plain state_dict of the user's own model: info says so and evaluates the loss and the gradient norm
    torch.save(problem.layout.unflatten(theta), folder / "my.pt")
    result = run("info", "my.pt", "--problem", "mymodule:factory")
    assert result.exit_code == 0, result.output
    assert "plain state_dict" in result.stdout and "recorded loss" not in result.stdout
    d = json.loads(run("info", "my.pt", "--problem", "mymodule:factory", "--json").stdout)
    loss, grad = problem.loss_and_grad(theta[None])
    assert d["source"] == "state_dict" and d["recorded_loss"] is None
    assert d["losses"]["train"] == pytest.approx(float(loss[0]), rel=1e-6)
    assert d["grad_norm"] == pytest.approx(float(grad[0].norm()), rel=1e-5) and d["grad_norm"] > 0
    assert f"train {float(loss[0]):.6g}" in result.stdout and "|grad L|" in result.stdout


def test_a_landscape_checkpoint_still_shows_its_recorded_loss(tmp_path):
    out = tmp_path / "m"
    rows = json.loads(run("train", "deep_linear", "--seeds", "0", "-o", out, "--steps", 20, "--json").stdout)
    text = run("info", rows[0]["file"]).stdout
    assert "recorded loss" in text and "plain state_dict" not in text
    assert json.loads(run("info", rows[0]["file"], "--json").stdout)["source"] == "checkpoint"


def test_figures_for_the_main_job_match_the_code():
    problem = landscape.make_problem(landscape.problems.embedded.DEFAULT_PROBLEM)
    quoted = {int(d.replace(",", "")) for d in re.findall(r"digits 64-100-100-10, D = ([\d,]+)", TEXT)}
    assert quoted == {problem.dim} == {17_610}
    # the file names the main job (`landscape train --seeds 0,1 -o minima/`) writes, as the README and docs use them
    names = {checkpoint_name(problem, seed) for seed in (0, 1)}
    for page, text in PAGES.items():
        quoted_names = set(re.findall(r"minima/(digits_mlp_\w+?\.pt)", text))
        assert quoted_names <= {checkpoint_name(problem, s) for s in range(10)}, page
    assert names <= set(re.findall(r"minima/(digits_mlp_\w+?\.pt)", README))  # the main job's own command
    usage = COMMANDS_PAGE.split("```")[1]  # the usage list: its width-64 aside is a comment, not a command
    assert "landscape train" in usage and "-w 64" not in usage and "w64" not in usage
    tour = [b for b in re.findall(r"```bash\n(.*?)```", README, flags=re.S) if "landscape train" in b]
    assert tour and all("-w 64" not in b and "w64" not in b for b in tour)


def test_quick_valleys_time_agrees_between_readme_and_study_list():
    description = landscape.load_study("quick_valleys").description  # as `landscape study list` shows it
    claim = re.search(r"study run quick_valleys .*?2 tasks, (about \d+ s)", TEXT).group(1)
    assert description.startswith(claim + ":")
