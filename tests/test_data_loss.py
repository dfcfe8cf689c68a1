"""The last ways to lose or change a user's data: the cleanup of a killed run's temporaries, a kill inside
a ``.vtm`` replacement, a study store reached through a link, another program's SQLite file, a full disk
under torch's zip writer and VTK's writers, a device given as a text input."""

import errno
import json
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from test_study import wells

import landscape
import landscape.io
from landscape.studies.store import Store
from landscape_cli.cli import main

CLI = [sys.executable, "-c", "from landscape_cli.cli import main; main()"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def shown(stderr):
    """The lines left on a terminal once the progress bar (redrawn in place with carriage returns) is gone."""
    return [ln.rsplit("\r", 1)[-1] for ln in stderr.split("\n") if ln.rsplit("\r", 1)[-1].strip()]


def one_line_error(result):
    return result.exit_code == 2 and len(shown(result.stderr)) == 1 and "Traceback" not in result.output


def killed_in(step):
    """Run ``step()`` in a forked child; True when the child died by SIGKILL (reaped, so its pid is free)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            step()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def records():
    folder = landscape.io._records()
    return sorted(os.listdir(folder)) if folder is not None else []


@pytest.fixture
def ring_files(tmp_path):
    ring = landscape.make_problem("ring")
    return [landscape.save_checkpoint(tmp_path / f"m{i}.pt", ring, m.float()) for i, m in enumerate(ring.minima)]


# ---------------------------------------------------------------- stale temporaries
def test_the_cleanup_removes_a_killed_writers_temporary_and_never_a_look_alike(ring_files, tmp_path):
    d = tmp_path / "d"
    (d / ".path.2024.backup").mkdir(parents=True)
    (d / ".path.2024.backup" / "thesis.tex").write_text("x")
    (d / ".path.1999.notes.txt").write_text("y")
    dead = 2**22 + 12345  # above the default pid_max: no process has it
    (d / f".path.{dead}.abc123def456.pt").write_text("mine, though named like a temporary")

    assert killed_in(lambda: landscape.io.atomic_write(d / "path.pt", lambda fh: (
        fh.write(b"half a checkpoint"), fh.flush(), os.kill(os.getpid(), signal.SIGKILL))))
    left = [p for p in d.iterdir() if p.is_file() and p.read_bytes() == b"half a checkpoint"]
    assert len(left) == 1  # the killed writer's temporary

    assert invoke("connect", *ring_files, "--level", "0.3", "-o", d / "path.pt").exit_code == 0
    assert (d / ".path.2024.backup" / "thesis.tex").read_text() == "x"
    assert (d / ".path.1999.notes.txt").read_text() == "y"
    assert (d / f".path.{dead}.abc123def456.pt").read_text() == "mine, though named like a temporary"
    assert not left[0].exists()
    assert [r for r in records() if not landscape.io._alive(int(r.split(".")[1]))] == []  # its record is gone too
    assert landscape.load_path(d / "path.pt")[0].status == "connected"


def test_a_recorded_name_that_is_no_longer_a_regular_file_is_left_alone(tmp_path):
    """A killed writer's temporary replaced (not by this program) by a folder or a link: neither is removed,
    nor what the link points to; the record goes."""
    (tmp_path / "kept.txt").write_text("kept")
    for make in (os.mkdir, lambda p: os.symlink(tmp_path / "kept.txt", p)):
        read, write = os.pipe()

        def reserve_then_die():
            tmp = landscape.io.temporary(tmp_path, "out", ".pt")
            os.unlink(tmp)
            make(tmp)
            os.write(write, os.fsencode(tmp))
            os.kill(os.getpid(), signal.SIGKILL)

        assert killed_in(reserve_then_die)
        os.close(write)
        tmp = os.fsdecode(os.read(read, 4096))
        os.close(read)
        landscape.io.remove_stale()
        assert os.path.lexists(tmp) and (tmp_path / "kept.txt").read_text() == "kept"
        assert [r for r in records() if not landscape.io._alive(int(r.split(".")[1]))] == []
        os.unlink(tmp) if os.path.islink(tmp) else os.rmdir(tmp)


def test_a_running_writers_temporary_is_left_until_it_dies(tmp_path):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: a writer that takes its time
        try:
            os.write(write, os.fsencode(landscape.io.temporary(tmp_path, "slow", ".pt")))
            signal.pause()
        finally:
            os._exit(0)
    os.close(write)
    tmp = os.fsdecode(os.read(read, 4096))
    os.close(read)
    landscape.io.remove_stale()
    assert os.path.isfile(tmp)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    landscape.io.remove_stale()
    assert not os.path.exists(tmp)


# ---------------------------------------------------------------- a kill inside the .vtm replacement
def _blocks(n_blocks, size):
    import pyvista as pv

    blocks = pv.MultiBlock()
    blocks["surface"] = pv.ImageData(dimensions=(size, size, 1)).cast_to_structured_grid()
    for i in range(n_blocks - 1):
        blocks[f"path {i}"] = pv.Line((0, 0, i), (1, 1, i), resolution=size)
    return blocks


def _total(path):
    import pyvista as pv

    from landscape.viz._output import quiet_vtk

    with quiet_vtk():
        data = pv.read(str(path))
    return [data.get_block_name(i) for i in range(data.n_blocks)], sum(b.n_points for b in data)


def _clean(out):
    """The folder beside ``out`` holds exactly the blocks its index names, and no temporary is left."""
    folder = out.with_suffix("")
    named = {os.path.basename(f) for f in re.findall(r'file="([^"]+)"', out.read_text())}
    assert {p.name for p in folder.iterdir()} == named
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_a_kill_at_any_step_of_a_vtm_replacement_leaves_a_whole_render(tmp_path):
    pytest.importorskip("pyvista")
    from landscape.viz._output import write_multiblock

    out = tmp_path / "x.vtm"
    old, new = _blocks(4, 12), _blocks(2, 20)
    want_old, want_new = (old.keys(), 144 + 3 * 13), (new.keys(), 400 + 21)
    write_multiblock(out, old)
    assert _total(out) == want_old
    seen, step = set(), 0
    while True:
        step += 1

        def kill_at_step(step=step):
            calls = [0]

            def counted(name):
                original = getattr(os, name)

                def op(*args, **kwargs):
                    calls[0] += 1
                    if calls[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return original(*args, **kwargs)
                setattr(os, name, op)
            os.chdir(tmp_path)  # a relative name: the next write, from elsewhere, still finds what it left
            for name in ("replace", "rename", "mkdir", "unlink", "rmdir", "open", "fsync", "chmod"):
                counted(name)
            write_multiblock("x.vtm", new)

        if not killed_in(kill_at_step):
            break  # the write ran to its end: every step before it was a kill point
        state = _total(out)  # read as it is after the kill, before anything cleans up
        assert state in (want_old, want_new), f"a kill at step {step} left {state}"
        seen.add(state == want_new)
        write_multiblock(out, old)  # the next write removes what the killed one left
        assert _total(out) == want_old
        _clean(out)
    assert step > 10 and seen == {False, True}  # kills before and after the switch to the new render
    assert _total(out) == want_new
    _clean(out)


def test_a_failed_or_interrupted_vtm_replacement_keeps_the_old_render_and_its_folder(tmp_path, monkeypatch):
    pyvista = pytest.importorskip("pyvista")
    from landscape.viz._output import write_multiblock

    out = tmp_path / "x.vtm"
    write_multiblock(out, _blocks(3, 10))
    before = {p.name: p.read_bytes() for p in out.with_suffix("").iterdir()}, out.read_bytes()

    def full(self, filename, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pyvista.MultiBlock, "save", full)
    with pytest.raises(landscape.LandscapeError, match="free some disk space"):
        write_multiblock(out, _blocks(2, 30))
    assert ({p.name: p.read_bytes() for p in out.with_suffix("").iterdir()}, out.read_bytes()) == before
    _clean(out)
    monkeypatch.undo()

    def interrupted(*args, **kwargs):  # Ctrl-C once the new blocks are beside the old
        raise KeyboardInterrupt
    monkeypatch.setattr("landscape.viz._output._check_blocks", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_multiblock(out, _blocks(2, 30))
    assert ({p.name: p.read_bytes() for p in out.with_suffix("").iterdir()}, out.read_bytes()) == before
    _clean(out)


# ---------------------------------------------------------------- the study store
def test_the_study_lock_holds_through_a_symbolic_link(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    store = tmp_path / "s.sqlite"
    link = tmp_path / "link.sqlite"
    link.symlink_to(store)
    (tmp_path / "linked").symlink_to(tmp_path)
    with Store(store, study=study, lock=True):
        for other in (link, tmp_path / "linked" / "s.sqlite"):
            with pytest.raises(landscape.LandscapeError, match="being written by a running study"):
                landscape.run_study(study, store=other, workers=0, progress=False)
            assert landscape.study_status(study, store=other)["running"].startswith("pid ")
    assert landscape.run_study(study, store=link, workers=0, progress=False)["ran"] == 2
    assert landscape.study_status(study, store=store)["done"] == 2


def test_a_store_that_is_a_fifo_or_a_loop_of_links_is_one_line_and_leaves_nothing(tmp_path):
    study = landscape.load_study(wells(tmp_path, seeds=1))
    os.mkfifo(tmp_path / "fifo.sqlite")
    (tmp_path / "loop.sqlite").symlink_to(tmp_path / "loop.sqlite")
    before = sorted(os.listdir(tmp_path))
    for name, says in (("fifo.sqlite", "not a regular file"), ("loop.sqlite", "a link to nothing")):
        with pytest.raises(landscape.LandscapeError, match=says) as err:
            landscape.run_study(study, store=tmp_path / name, workers=0, progress=False)
        assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == before  # no lock file, no journal


def test_another_programs_sqlite_file_is_refused_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE meta (name TEXT, size INTEGER)")  # a table of our name, not ours
        db.executemany("INSERT INTO meta VALUES (?, ?)", [(f"row {i}", i) for i in range(200)])
    db.close()
    before = foreign.read_bytes()
    assert before[18:20] == b"\x01\x01"  # a rollback-journal file: WAL mode would make these 2, 2
    study = wells(tmp_path, seeds=1)
    for args in (("study", "status", "--store", foreign), ("study", "status", foreign),
                 ("study", "report", "--store", foreign, "-o", tmp_path / "rep"),
                 ("study", "run", study, "--store", foreign, "--workers", 0, "--quiet")):
        result = invoke(*args)
        assert one_line_error(result) and "another program" in result.stderr, (args, result.output)
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("foreign")) == ["foreign.sqlite"]


# ---------------------------------------------------------------- a full disk
class _FullDisk:
    """``open`` for the atomic writer, whose binary files take ``room`` bytes and then raise ENOSPC."""

    def __init__(self, room):
        self.room = room

    def __call__(self, file, mode="r", *args, **kwargs):
        fh = open(file, mode, *args, **kwargs)
        return _Filling(fh, self.room) if mode == "wb" else fh


class _Filling:
    def __init__(self, fh, room):
        self._fh, self.room = fh, room

    def write(self, data):
        if len(data) > self.room:
            self._fh.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self._fh.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


@pytest.mark.parametrize("room", [100, 700, 3000])
def test_a_full_disk_under_torchs_zip_writer_is_one_line_and_keeps_the_old_file(room, ring_files, tmp_path,
                                                                                 monkeypatch):
    out = tmp_path / "path.pt"
    assert invoke("connect", *ring_files, "--level", "0.3", "-o", out).exit_code == 0
    before = out.read_bytes()
    monkeypatch.setattr(landscape.io, "open", _FullDisk(room), raising=False)
    result = invoke("connect", *ring_files, "--level", "0.3", "--method", "linear", "-o", out)
    assert one_line_error(result), result.output
    assert "free some disk space" in result.stderr and str(out) in result.stderr
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_full_disk_under_align_is_one_line(tmp_path, monkeypatch):
    problem = landscape.make_problem("moons_mlp", width=8, n_train=100, n_test=50)
    g = torch.Generator().manual_seed(0)
    a = landscape.save_checkpoint(tmp_path / "a.pt", problem, problem.init(g))
    b = landscape.save_checkpoint(tmp_path / "b.pt", problem, problem.init(g))
    out = tmp_path / "b_aligned.pt"
    out.write_bytes(b"an earlier alignment")
    monkeypatch.setattr(landscape.io, "open", _FullDisk(500), raising=False)
    result = invoke("align", a, b, "-o", out)
    assert one_line_error(result) and "free some disk space" in result.stderr, result.output
    assert out.read_bytes() == b"an earlier alignment"


def _limited(limit):
    """A child process whose files may not grow past ``limit`` bytes (EFBIG): a full disk without root."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_real_write_failure_under_torchs_zip_writer_is_one_line(tmp_path):
    """The OS refuses the bytes (a file size limit, as a full disk does, without root) while torch's zip writer
    writes a 16 KB path file: one line, the old file kept."""
    problem = landscape.make_problem("digits_mlp", width=16)
    g = torch.Generator().manual_seed(0)
    ends = [landscape.save_checkpoint(tmp_path / f"m{i}.pt", problem, problem.init(g)) for i in range(2)]
    out = tmp_path / "path.pt"
    args = ["connect", *map(str, ends), "--method", "linear", "-o", str(out)]
    assert invoke(*args).exit_code == 0
    before = out.read_bytes()
    assert len(before) > 12000  # past the file object's 8 KiB buffer: the failure comes inside torch.save
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    for limit in (6000,):
        failed = subprocess.run([*CLI, *args], capture_output=True, env=env, timeout=300, preexec_fn=_limited(limit))
        lines = shown(failed.stderr.decode())
        assert failed.returncode == 2 and len(lines) == 1 and f"cannot write {out}" in lines[0], lines[:5]
        assert out.read_bytes() == before


#: Each VTK writer made to fail, through landscape's writer and bare, its C-level stderr kept in a file.
_VTK_FAILS = """
import json, os, sys
import pyvista as pv
import landscape.io
from landscape.viz._output import write_multiblock
from landscape.viz._render import save_checked

folder = sys.argv[1]
blocks = pv.MultiBlock()
blocks["surface"] = pv.ImageData(dimensions=(60, 60, 1)).cast_to_structured_grid()
blocks["path"] = pv.Line((0, 0, 0), (1, 1, 1), resolution=60).tube(radius=0.01)
save, save_blocks = pv.DataObject.save, pv.MultiBlock.save


def unwritable(self, filename, *args, **kwargs):  # the VTK writer's file cannot be opened
    writer = self._WRITERS[os.path.splitext(filename)[1]](filename, self)
    writer.writer.SetFileName(os.path.join(folder, "no such folder", "x"))
    writer.write()


def blocked(self, filename, *args, **kwargs):  # a file where VTK makes the folder of the blocks
    open(os.path.splitext(str(filename))[0], "w").close()
    return save_blocks(self, filename, *args, **kwargs)


said = {}
for suffix in (".vts", ".vtk", ".vtp", ".vtm"):
    data = blocks if suffix == ".vtm" else blocks["path"] if suffix == ".vtp" else blocks["surface"]
    out = os.path.join(folder, "view" + suffix)
    if suffix == ".vtm":
        write = lambda: write_multiblock(out, blocks)
    else:
        write = lambda: landscape.io.atomic_write_file(out, lambda tmp: save_checked(data, tmp))
    write()
    before = open(out, "rb").read()
    pv.DataObject.save, pv.MultiBlock.save = (save, blocked) if suffix == ".vtm" else (unwritable, save_blocks)
    bare = lambda: data.save(os.path.join(folder, "bare" + suffix))
    for who, step in (("landscape", write), ("bare", bare)):
        kept, err = os.dup(2), os.open(os.path.join(folder, who + suffix), os.O_WRONLY | os.O_CREAT)
        os.dup2(err, 2)
        try:
            step()
        except Exception as e:
            said[who + suffix] = str(e)
        finally:
            sys.stderr.flush()
            os.dup2(kept, 2)
    pv.DataObject.save, pv.MultiBlock.save = save, save_blocks
    said["kept" + suffix] = open(out, "rb").read() == before
print(json.dumps(said))
"""


def test_vtk_says_nothing_when_its_writer_fails(tmp_path):
    """VTK prints 20-210 lines on stderr (C level) when a write fails; around landscape's writes it is silent
    and the failure is one error. VTK is made to fail where it opens its files (a full disk needs root to make;
    a file size limit is no substitute: VTK 9.7's XML writers then crash); the same failures outside
    landscape's writers print many lines."""
    pytest.importorskip("pyvista")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", _VTK_FAILS, str(tmp_path)], capture_output=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    said = json.loads(run.stdout.decode().splitlines()[-1])
    for suffix in (".vts", ".vtk", ".vtp", ".vtm"):
        assert said[f"landscape{suffix}"].startswith(f"cannot write {tmp_path / ('view' + suffix)}")
        assert said[f"kept{suffix}"]
        assert (tmp_path / f"landscape{suffix}").read_text() == "", suffix
        assert len((tmp_path / f"bare{suffix}").read_text().splitlines()) >= 5, suffix


# ---------------------------------------------------------------- inputs that never end
def test_a_device_or_huge_file_given_as_text_is_refused_in_one_line(tmp_path):
    result = invoke("chart", "tree", "/dev/zero", "-o", tmp_path / "t.png")
    assert one_line_error(result) and "too large" in result.stderr, result.output
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * 100 + b"}")
    with pytest.raises(landscape.LandscapeError, match="too large for a table"):
        landscape.io.read_text(big, "table", limit=50)
    assert landscape.io.read_text(big, "table", limit=102) == "{" + " " * 100 + "}"
