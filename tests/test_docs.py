"""The documentation: the Sphinx site builds with warnings as errors (docstrings, cross-references, the gallery's
scripts run at their smallest sizes), and every command line shown in the README and the docs parses."""

import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from landscape_cli.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Every page that shows command lines: the README and the site's Markdown pages.
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
PAGES = [p for p in PAGES if "_build" not in p.parts and "auto_examples" not in p.parts]
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|^\.\.\.$|^\$")  # N, NAME, M, ..., $w: stand for a value


def code_blocks(text: str):
    """(info string, body) of every fenced code block."""
    return re.findall(r"^ *```([^\n`]*)\n(.*?)^ *```", text, flags=re.S | re.M)


def shell_lines(text: str) -> list[str]:
    """The shell lines of a page: every line of its bash blocks, and the ``$ `` lines of its other blocks.

    Continuation lines are joined; a heredoc's body (Python fed to ``python -``) is skipped.
    """
    lines = []
    for info, body in code_blocks(text):
        raw = body.splitlines()
        if info.strip() not in ("bash", "sh", "console", "shell"):
            raw = [line[2:] for line in raw if line.startswith("$ ")]
        joined, end = [], None
        for line in raw:
            if end is not None:
                end = None if line.strip() == end else end
                continue
            heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
            if heredoc:
                end = heredoc.group(1)
            if joined and joined[-1].endswith("\\"):
                joined[-1] = joined[-1][:-1] + " " + line.strip()
            else:
                joined.append(line.strip())
        lines += [line for line in joined if line and not line.startswith("#")]
    return lines


def landscape_commands(line: str) -> list[list[str]]:
    """The argument lists of the ``landscape`` (or ``python -m landscape_cli.X``) calls on one shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens, calls, current = list(lexer), [], []
    for token in tokens + [";"]:
        if set(token) <= set(";&|()<>"):
            if current:
                calls.append(current)
            current = []
        else:
            current.append(token)
    found = []
    for call in calls:
        while call and call[0] in ("do", "then", "time", "else"):
            call = call[1:]
        if call[:1] == ["landscape"]:
            found.append(call)
        elif call[:2] == ["python", "-m"] and len(call) > 2 and call[2].startswith("landscape_cli."):
            found.append(["python -m " + call[2], *call[3:]])
    return found


def command_of(call: list[str]) -> tuple[click.Command, list[str], str]:
    """The click command a call runs (subcommands resolved), its own arguments, and its name."""
    if call[0].startswith("python -m "):
        module = importlib.import_module(call[0].split()[-1])
        return module.main, call[1:], call[0]
    command, args, name = main, call[1:], "landscape"
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        sub = command.get_command(click.Context(command), args[0])
        assert sub is not None, f"`{' '.join(call)}`: {name} has no subcommand {args[0]!r}"
        command, args, name = sub, args[1:], f"{name} {args[0]}"
    return command, args, name


def check_parses(call: list[str]) -> None:
    """A --help-level dry check: the subcommands and options exist, option values are given (and in their
    choices), and no argument is left over. Nothing runs: files need not exist."""
    command, args, name = command_of(call)
    if any(a in ("-h", "--help", "-V", "--version") for a in args):
        return
    ctx = click.Context(command, info_name=name)  # the parser only: no callback, no type conversion
    parser = command.make_parser(ctx)
    try:
        values, rest, _ = parser.parse_args(args=list(args))
    except click.UsageError as e:
        raise AssertionError(f"`{' '.join(call)}`: {e.format_message()}") from None
    assert not rest or ctx.allow_extra_args, f"`{' '.join(call)}`: extra arguments {rest}"
    for param in command.params:
        value = values.get(param.name)
        if value is None:
            continue
        if isinstance(param.type, click.Choice):
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if not PLACEHOLDER.match(str(v)):
                    assert str(v) in param.type.choices, f"`{' '.join(call)}`: {param.name}={v!r} not in {param.type.choices}"
    if isinstance(command, click.Group):
        assert False, f"`{' '.join(call)}`: {name} needs a subcommand"


def all_calls():
    calls = []
    for page in PAGES:
        for line in shell_lines(page.read_text()):
            calls += [(page.relative_to(ROOT).as_posix(), call) for call in landscape_commands(line)]
    return calls


CALLS = all_calls()


def test_the_pages_show_commands_of_every_kind():
    pages = {page for page, _ in CALLS}
    assert {"README.md", "docs/guide/commands.md", "docs/guide/symmetry.md", "docs/guide/valleys.md"} <= pages
    shown = {command_of(call)[2] for _, call in CALLS}
    for name in ("train", "info", "align", "connect", "valleys", "render", "explore", "study run", "bench", "chart tree"):
        assert f"landscape {name}" in shown, name


@pytest.mark.parametrize("page, call", CALLS, ids=[f"{p}:{' '.join(c)[:60]}" for p, c in CALLS])
def test_every_command_line_shown_parses(page, call):
    check_parses(call)


@pytest.mark.parametrize("call", [
    "landscape connect a.pt b.pt --methd string",            # an option that does not exist
    "landscape conect a.pt b.pt",                            # a subcommand that does not exist
    "landscape connect a.pt b.pt --method",                  # an option without its value
    "landscape connect a.pt b.pt --method curvy",            # a value outside the choices
    "landscape chart frobnicate x.json",
    "landscape study",                                       # a group without its subcommand
    "landscape info a.pt --jsn",
    "python -m landscape_cli.valley_scaling --sizez 8",
])
def test_a_wrong_command_line_is_caught(call):
    (parsed,) = landscape_commands(call)
    with pytest.raises(AssertionError):
        check_parses(parsed)


def test_shell_lines_join_continuations_and_skip_heredocs():
    text = "```bash\nlandscape train a \\\n    --seeds 0,1   # two\npython - <<'PY'\nlandscape = 1\nPY\n" \
           "for w in 2 4; do landscape align a.pt b.pt -o x$w.pt; done\n```\n```\n$ landscape info x.pt\nout\n```\n"
    lines = shell_lines(text)
    assert lines[0] == "landscape train a  --seeds 0,1   # two" and "landscape = 1" not in lines
    assert [c for line in lines for c in landscape_commands(line)] == [
        ["landscape", "train", "a", "--seeds", "0,1"], ["landscape", "align", "a.pt", "b.pt", "-o", "x$w.pt"],
        ["landscape", "info", "x.pt"]]


@pytest.mark.slow
def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """``sphinx-build -W`` on a copy of docs/ and examples/: a docstring that does not render, a dead
    cross-reference or a gallery script that fails (run at its smallest sizes) fails this test."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed: pip install -e '.[docs]'")
    for name in ("sphinx_gallery", "numpydoc", "sphinx_click", "myst_parser", "pydata_sphinx_theme", "pyvista"):
        pytest.importorskip(name, reason=f"{name} is not installed: pip install -e '.[docs,viz]'")
    for folder in ("docs", "examples", "data/gallery"):  # the build writes its generated pages beside its sources
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("_build", "api", "auto_examples", "__pycache__", "runs"))
    env = dict(os.environ, LANDSCAPE_GALLERY_QUICK="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "html"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                            str(tmp_path / "docs"), str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-4000:]
    assert (out / "index.html").exists() and (out / "cli.html").exists()
    gallery = out / "auto_examples"
    pages = sorted(gallery.glob("plot_*.html"))
    assert 6 <= len(pages) <= 10, pages
    images = list((out / "_images").glob("sphx_glr_plot_*.png"))
    made = {p.stem for p in pages}
    assert made == {re.sub(r"_\d+$", "", i.stem.removeprefix("sphx_glr_")) for i in images if "thumb" not in i.stem}
    api = (out / "api" / "generated")
    import landscape
    for name in landscape.__all__:
        if name != "__version__":
            assert (api / f"landscape.{name}.html").exists(), name
