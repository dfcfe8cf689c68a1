"""Every command of the CLI, driven with generated bad values for every option and file argument: exit status 2,
exactly one line on stderr, no traceback, and no file that existed before is changed."""

import hashlib
import json
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
from landscape.paths.certify import dense_losses
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


# ---------------------------------------------------------------- forged files
def _json_value():
    return st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12),
                     st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))


def _tensor_forgery(tensor):
    """Ways a path's tensor can be forged: other dtypes, values that are not finite, other shapes, not a tensor."""
    return st.sampled_from([
        tensor.to(torch.int64), tensor.to(torch.complex64), tensor.to(torch.float16), tensor > 0,
        torch.where(torch.arange(tensor.shape[0]).view(-1, *[1] * (tensor.dim() - 1)) == 1, math.nan, tensor),
        tensor * math.inf, tensor[:1], tensor.flip(0), tensor.unsqueeze(0), tensor.tolist(), tensor * 1e30])


@st.composite
def forged_path(draw, record):
    """A path record with one to three of its fields forged: claims, levels, tensors, info and meta."""
    out = dict(record)
    fields = draw(st.lists(st.sampled_from(["method", "level", "status", "dense_max_loss", "dense_argmax",
                                             "resolution", "certificate", "bound", "spacing", "evaluations",
                                             "seconds", "info", "meta", "points", "losses", "t", "version"]),
                           min_size=1, max_size=3, unique=True))
    for key in fields:
        if key in ("points", "losses", "t"):
            out[key] = draw(_tensor_forgery(record[key]))
        elif key == "status":
            out[key] = draw(st.one_of(st.sampled_from(["connected", "not_found", "unchecked"]), _json_value()))
        elif key == "certificate":
            out[key] = draw(st.one_of(st.sampled_from(["bound", "grid", "magic"]), _json_value()))
        elif key == "info":
            witness = {"segment": draw(st.integers(-2, 10)), "t": draw(st.floats()), "loss": 9.0}
            out[key] = {**record["info"], "proof": {"status": "refuted", "witness": witness}}
        else:
            out[key] = draw(_json_value())
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_forged_path_file_is_refused_in_one_line_or_its_claim_rechecked(data, workdir, monkeypatch):
    """Whatever a path file says, ``info`` prints the status the file's own points earn at its level, never a proof
    it did not re-run, or refuses the file in one line."""
    monkeypatch.chdir(workdir)
    record = torch.load(workdir / "arc.pt", weights_only=True)
    forged = data.draw(forged_path(record))
    torch.save(forged, workdir / "forged.pt")
    before = snapshot(workdir)
    result = CliRunner().invoke(main, ["info", "--json", "forged.pt"])
    assert snapshot(workdir) == before
    if result.exit_code != 0:
        assert one_line(result), result.output
        return
    shown = json.loads(result.stdout)
    ring = landscape.make_problem("ring")
    points = forged["points"]
    dense = dense_losses(ring, points, shown["resolution"])
    if shown["status"] == "connected":
        assert float(dense.max()) <= shown["level"] and shown["certificate"] == "grid" and shown["bound"] is None
    elif shown["status"] == "not_found":
        assert float(shown["dense_max_loss"]) > shown["level"]  # "inf" where the loss is not finite
    assert shown["info"]["file_claim"]["status"] == (forged.get("status") or "unchecked")
    text = CliRunner().invoke(main, ["info", "forged.pt"])
    assert text.exit_code == 0 and "proven" not in text.output


@st.composite
def study_text(draw):
    """A study file a careless or hostile user might write: any task, parameters of any value, huge ranges, deep
    nesting, values that are not finite."""
    from landscape.studies.tasks import TASKS

    task = draw(st.sampled_from(sorted(TASKS)))
    params = sorted(set(TASKS.options(task)) - {"problem"})
    lines = ["[study]", 'name = "forged"', f'task = "{task}"', "[problem]", 'name = "double_well"', "[grid]"]
    axis = draw(st.sampled_from(params))
    shape = draw(st.sampled_from(["list", "range", "deep", "product"]))
    if shape == "list":
        lines.append(f"{axis} = [{_toml(draw(_json_value()))}]")
    elif shape == "range":
        lines.append(f"{axis} = {{ start = {draw(st.integers(-5, 5))}, stop = {draw(st.integers(-5, 10**12))} }}")
    elif shape == "deep":
        depth = draw(st.integers(30, 3000))
        lines.append(f"{axis} = " + "[" * depth + "]" * depth)
    else:
        lines += [f"{p} = {{ start = 0, stop = {draw(st.integers(1, 10**4))} }}" for p in params[:3]]
    lines.append("[task]")
    for key in draw(st.lists(st.sampled_from(params), max_size=3, unique=True)):
        if key != axis:
            lines.append(f"{key} = {_toml(draw(st.one_of(_json_value(), st.sampled_from(['nan', 'inf', '-inf']))))}")
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    """A value as TOML (json's text is TOML for numbers, strings and arrays; tables inline)."""
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '"none"'
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=study_text(), command=st.sampled_from(["status", "report", "run"]))
def test_a_forged_study_file_is_one_line_quickly_and_runs_nothing(text, command, workdir, monkeypatch):
    """Checked whole when read: a bad value, a huge grid or deep nesting is one line within seconds; a study that
    passes is not run (no store is made: status and report refuse a missing store, run gets no workers' time)."""
    import time

    monkeypatch.chdir(workdir)
    (workdir / "forged.toml").write_text(text)
    before = snapshot(workdir)
    args = ["study", command, "forged.toml"] + (["--workers", "0", "--set", "steps=0"] if command == "run" else [])
    clock = time.perf_counter()
    result = CliRunner().invoke(main, args)
    assert time.perf_counter() - clock < 60
    assert one_line(result), (text[:300], result.output)
    assert snapshot(workdir) == before
