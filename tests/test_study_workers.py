"""Studies on real worker processes: a Dask LocalCluster, the local pool, the CLI killed mid-run."""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import landscape

from test_study import wells


def _cli(*args):
    exe = Path(sys.executable).with_name("landscape")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "landscape_cli.cli"]
    return head + [str(a) for a in args]


def _done(store) -> int:
    if not Path(store).exists():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT count(*) FROM tasks WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _snapshot(store) -> dict:
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, status, figures, attempts, started, finished, worker FROM tasks").fetchall()
    return {r[0]: r[1:] for r in rows}


def _children(pid) -> list:
    psutil = pytest.importorskip("psutil")
    return psutil.Process(pid).children(recursive=True)


def _wait_gone(procs, seconds=20.0) -> list:
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=seconds)
    return alive


def test_dask_local_cluster_and_local_pool_give_identical_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    study = landscape.load_study(wells(tmp_path, seeds=2))
    # the workers declare a GPU resource (as `dask worker --resources GPU=1` does): each task then holds one
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  scheduler_port=0, silence_logs=logging.ERROR, resources={"GPU": 1}) as cluster:
        on_dask = landscape.run_study(study, store=tmp_path / "dask.sqlite", scheduler=cluster.scheduler_address,
                                      threads=1, progress=False)
    local = landscape.run_study(study, store=tmp_path / "local.sqlite", workers=2, threads=1, progress=False)
    assert on_dask["executor"].startswith("dask") and "2 worker(s), resources {'GPU': 1}" in on_dask["executor"]
    assert local["executor"].startswith("local, 2 worker processes")
    assert on_dask["done"] == local["done"] == 4 and on_dask["failed"] == local["failed"] == 0
    a = {r["id"]: r for r in landscape.study_results(study, store=tmp_path / "dask.sqlite")}
    b = {r["id"]: r for r in landscape.study_results(study, store=tmp_path / "local.sqlite")}
    assert set(a) == set(b) == {t.id for t in study.tasks()}
    for tid in a:
        assert a[tid]["figures"] == b[tid]["figures"]  # identical, to the last bit
    assert len({r["worker"] for r in a.values()}) == 2  # both dask workers worked
    assert all(str(os.getpid()) not in r["worker"] for r in b.values())  # the pool, not this process


def test_cli_killed_mid_run_resumes_without_losing_or_repeating_a_task(tmp_path):
    path = wells(tmp_path, seeds=5, steps=500)  # 10 tasks of about half a second
    store = tmp_path / "kill.sqlite"
    args = _cli("study", "run", path, "--store", store, "--workers", 2, "--no-report")
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while _done(store) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the study did not start"
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.kill()  # SIGKILL: no handler runs, no cleanup
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    before = _snapshot(store)
    done_before = {k: v for k, v in before.items() if v[0] == "done"}
    assert 2 <= len(done_before) < 10  # killed mid-run
    assert not _wait_gone(workers), "worker processes outlived the killed driver"

    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"ran {10 - len(done_before)} task(s)" in rerun.stdout
    assert "10/10" in rerun.stderr  # the progress bar counts the whole study
    after = _snapshot(store)
    study = landscape.load_study(path)
    assert set(after) == {t.id for t in study.tasks()} and len(after) == 10  # every task, exactly once
    assert all(v[0] == "done" and v[2] == 1 for v in after.values())  # each computed once
    for tid, row in done_before.items():
        assert after[tid] == row  # earlier results unchanged: same figures, same timestamps, same worker


def test_sigterm_stops_the_run_cleanly(tmp_path):
    path = wells(tmp_path, seeds=6, steps=600)
    store = tmp_path / "term.sqlite"
    proc = subprocess.Popen(_cli("study", "run", path, "--store", store, "--workers", 2, "--no-report"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while _done(store) < 1:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.05)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1].startswith("landscape: interrupted")
    assert not _wait_gone(workers, 10)
    status = landscape.study_status(path, store=store)
    assert status["running"] is None and status["done"] >= 1 and status["done"] + status["pending"] == 12


def test_a_worker_that_dies_fails_its_task_and_the_study_goes_on(tmp_path, monkeypatch):
    (tmp_path / "crashy.py").write_text(
        "import os\nimport landscape\n\n"
        "def make(crash=False):\n"
        "    if crash:\n"
        "        os._exit(3)  # the worker process dies, as on a segfault or the OOM killer\n"
        "    return landscape.make_problem('double_well')\n")
    monkeypatch.chdir(tmp_path)
    study = landscape.load_study({
        "study": {"name": "crashy", "task": "train_minima"}, "problem": {"name": "crashy:make"},
        "grid": {"problem": {"crash": [False, True]}, "seed": [0, 1]},
        "task": {"optimizer": "gd", "lr": 0.1, "steps": 100, "float64": True}})
    summary = landscape.run_study(study, store=tmp_path / "c.sqlite", workers=1, progress=False)
    assert (summary["tasks"], summary["done"], summary["failed"]) == (4, 2, 2)
    assert [e["point"] for e in summary["errors"]] == [{"problem.crash": True, "seed": 0},
                                                      {"problem.crash": True, "seed": 1}]
    assert all("a worker process died" in e["error"] for e in summary["errors"])


def test_tasks_in_flight_never_share_a_gpu(monkeypatch):
    """The local pool pins each task in flight to its own device (checked with threads and a fake task)."""
    import concurrent.futures as cf
    import threading

    import torch

    from landscape.studies import run as _run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    pool = _run._LocalPool(None, 7, "auto", None)
    assert pool.n == 2 and pool.devices == ["cuda:0", "cuda:1"] and "2 GPU(s)" in pool.describe
    assert _run._LocalPool(None, 7, "cpu", None).devices is None
    busy, clashes, lock = set(), [], threading.Lock()

    def fake(task, params, device, threads):
        with lock:
            clashes.append(device in busy)
            busy.add(device)
        time.sleep(0.02 * (1 + params["i"] % 3))
        with lock:
            busy.discard(device)
        return {"status": "done", "device": device}

    monkeypatch.setattr(_run, "execute_task", fake)
    study = type("S", (), {"task": "fake"})()
    tasks = [landscape.studies.study.Task(str(i), i, {"i": i}, {}) for i in range(7)]
    with cf.ThreadPoolExecutor(2) as ex:
        out = list(pool._drive(ex, study, tasks, 2, lambda s, t: {}, pool.devices))
    assert len(out) == 7 and not any(clashes)
    assert {o["device"] for _, o in out} == {"cuda:0", "cuda:1"}
