"""Every command of the CLI, driven with generated bad values for every option and file argument: exit status 2,
exactly one line on stderr, no traceback, and no file that existed before is changed."""

import hashlib
import math
import os
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import landscape
from landscape_cli._common import Real
from landscape_cli.cli import main


def commands(group=main, path=()):
    """(command path, command) for every leaf command of the group."""
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def options():
    """(command path, option flag, its type) for every option that takes a value."""
    out = []
    for path, cmd in commands():
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.is_flag and param.opts[0] != "--help":
                out.append((path, max(param.opts, key=len), param.type))
    return out


OPTIONS = options()


def test_every_numeric_option_declares_its_range():
    """A plain int or float option would take -1, 1e30, nan or inf: each one says what it accepts instead."""
    loose = [(" ".join(p), flag) for p, flag, kind in OPTIONS
             if type(kind) in (click.types.IntParamType, click.types.FloatParamType)
             or isinstance(kind, click.FloatRange)]
    assert loose == []
    ranged = [kind for _, _, kind in OPTIONS if isinstance(kind, click.IntRange)]
    assert all(k.min is not None and k.max is not None for k in ranged)


def bad_values(kind):
    """Values the type must refuse."""
    if isinstance(kind, click.IntRange):
        return [str(kind.min - 1), str(kind.max + 1), "abc", "1.5", "nan", ""]
    if isinstance(kind, Real):
        out = ["nan", "inf", "-inf", "abc", ""]
        if kind.min is not None:
            out.append(repr(kind.min - 1.0) if not kind.min_open else repr(kind.min))
        if kind.max is not None:
            out.append(repr(kind.max + 1.0) if not kind.max_open else repr(kind.max))
        return out
    if isinstance(kind, click.Choice):
        return ["no-such-choice", ""]
    return []


CASES = [(path, flag, value) for path, flag, kind in OPTIONS for value in bad_values(kind)]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def one_line(result) -> bool:
    lines = [ln.rsplit("\r", 1)[-1] for ln in result.stderr.split("\n") if ln.rsplit("\r", 1)[-1].strip()]
    return result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output


def test_there_are_many_cases():
    assert len(CASES) > 300 and len({c[0] for c in CASES}) >= 10


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder of files a user might have: two minima, a path, an empty file, a text file, a folder."""
    folder = tmp_path_factory.mktemp("work")
    ring = landscape.make_problem("ring")
    for i, m in enumerate(ring.minima):
        landscape.save_checkpoint(folder / f"m{i}.pt", ring, m.float())
    t = torch.linspace(0, math.pi, 9)
    pts = torch.stack([-torch.cos(t), torch.sin(t)], 1)
    landscape.save_path(folder / "arc.pt", ring, landscape.certify(ring, landscape.Path(pts, ring.loss(pts)), 0.3))
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.txt").write_text("not a checkpoint\n")
    (folder / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')  # text in another encoding than UTF-8
    (folder / "dir.pt").mkdir()
    return folder


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(CASES))
def test_a_bad_option_value_is_one_line_and_changes_nothing(case, workdir, monkeypatch):
    path, flag, value = case
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    result = CliRunner().invoke(main, [*path, flag, value])
    assert one_line(result), (path, flag, value, result.output)
    assert snapshot(workdir) == before


FILE_COMMANDS = [("info",), ("connect",), ("align",), ("valleys",), ("render",), ("chart", "losses"),
                 ("chart", "tree"), ("chart", "weights"), ("study", "run"), ("study", "status"), ("study", "report")]
BAD_FILES = ["missing.pt", "empty.pt", "notes.txt", "latin1.toml", "dir.pt", "/dev/null"]


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("bad", BAD_FILES)
@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_a_bad_input_file_is_one_line_and_changes_nothing(command, bad, first, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    good = "arc.pt" if command == ("chart", "losses") else "m0.pt"
    files = [bad, good] if first else [good, bad]
    if command in (("info",), ("chart", "tree"), ("chart", "weights")) or command[0] == "study":
        files = [bad]
    extra = ["-o", "out.png"] if command[0] in ("render", "chart") else []
    result = CliRunner().invoke(main, [*command, *files, *extra])
    assert one_line(result), (command, files, result.output)
    assert snapshot(workdir) == before
    assert not os.path.exists(workdir / "out.png")
