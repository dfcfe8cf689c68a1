"""Outputs never lose a user's finished work: a failed write leaves the old file, special files stay special.
(A killed run's temporaries and their cleanup: tests/test_data_loss.py.)"""

import errno
import os
import stat
import threading

import pytest
from click.testing import CliRunner

import landscape
from landscape_cli.cli import main

pyvista = pytest.importorskip("pyvista")


@pytest.fixture
def ring_files(tmp_path):
    ring = landscape.make_problem("ring")
    return [landscape.save_checkpoint(tmp_path / f"m{i}.pt", ring, m.float()) for i, m in enumerate(ring.minima)]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result):
    """Exit 2 and one line on stderr once the progress bar (redrawn in place with carriage returns) is gone."""
    lines = [ln.rsplit("\r", 1)[-1] for ln in result.stderr.split("\n") if ln.rsplit("\r", 1)[-1].strip()]
    return result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output


def truncating(original):
    """A writer that leaves a truncated file, as VTK's and image writers do on a full disk."""
    def write(self, filename, *args, **kwargs):
        original(self, filename, *args, **kwargs)
        with open(filename, "r+b") as fh:
            fh.truncate(max(1, os.path.getsize(filename) // 3))
    return write


@pytest.mark.parametrize("suffix", [".png", ".vtp", ".vts", ".vtk", ".vtm"])
def test_a_full_disk_leaves_the_previous_render_intact(suffix, ring_files, tmp_path, monkeypatch):
    out = tmp_path / f"view{suffix}"
    assert invoke("render", *ring_files, "--size", "160x120", "--grid", "21x21", "--no-cache", "-o", out).exit_code == 0
    before = out.read_bytes()
    if suffix == ".png":
        monkeypatch.setattr(pyvista.Plotter, "screenshot", truncating(pyvista.Plotter.screenshot))
    else:
        monkeypatch.setattr(pyvista.DataObject, "save", truncating(pyvista.DataObject.save))
    result = invoke("render", *ring_files, "--size", "200x150", "--grid", "25x25", "--no-cache", "-o", out)
    assert one_line_error(result) and str(out) in result.stderr
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".view")]


def test_special_files_are_written_through_never_replaced(ring_files, tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("bytes", fifo.read_bytes()))
    reader.start()
    assert invoke("connect", *ring_files, "--level", "0.3", "-o", fifo).exit_code == 0
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and len(got["bytes"]) > 1000
    assert invoke("connect", *ring_files, "--level", "0.3", "-o", "/dev/null").exit_code == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    real = tmp_path / "real.pt"
    real.write_bytes(b"old")
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    assert invoke("connect", *ring_files, "--level", "0.3", "-o", link).exit_code == 0
    assert link.is_symlink() and landscape.load_path(real)[0].status == "connected"
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    result = invoke("connect", *ring_files, "--level", "0.3", "-o", folder)
    assert one_line_error(result) and "it is a folder" in result.stderr and folder.is_dir()


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    """What every output (HTML, JSON, checkpoints) goes through: a full disk mid-write is one error, nothing lost."""
    from landscape.io import atomic_write_bytes, atomic_write_file

    out = tmp_path / "view.html"
    out.write_text("old page")

    def full(tmp):
        tmp.write_text("half a pa")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(landscape.LandscapeError, match="free some disk space"):
        atomic_write_file(out, full)
    assert out.read_text() == "old page" and [p.name for p in tmp_path.iterdir()] == ["view.html"]
    atomic_write_bytes(out, "new page")
    assert out.read_text() == "new page"


def test_non_utf8_names_are_written_and_echoed_back_as_given(tmp_path, ring_files):
    """A file name that is not UTF-8 is a valid name on POSIX: the file is written under it, the name is
    echoed as the same bytes (with a strict stdout encoding too), and ``--json`` shows it as valid JSON."""
    import json
    import subprocess
    import sys

    raw = bytes(tmp_path) + b"/p\xfe.pt"
    env = dict(os.environ, PYTHONIOENCODING="utf-8")  # strict: a surrogate would raise UnicodeEncodeError
    run = [sys.executable, "-c", "from landscape_cli.cli import main; main()"]
    made = subprocess.run([*run, "connect", str(ring_files[0]), str(ring_files[1]), "--method", "linear", "-o",
                           os.fsdecode(raw)], capture_output=True, env=env)
    assert made.returncode == 0, made.stderr
    assert os.path.exists(raw) and raw in made.stdout and b"Traceback" not in made.stderr
    shown = subprocess.run([*run, "info", os.fsdecode(raw), "--json"], capture_output=True, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["file"].endswith("p\\xfe.pt")
    missing = subprocess.run([*run, "info", os.fsdecode(bytes(tmp_path) + b"/gone\xff.pt")], capture_output=True,
                             env=env)
    assert missing.returncode == 2 and missing.stderr.count(b"\n") == 1 and b"gone\xff.pt" in missing.stderr
