"""Running a study: local worker processes by default, an existing Dask cluster when one is named.

Both are ``concurrent.futures`` executors, so one driver loop serves them: a
``ProcessPoolExecutor`` over spawned processes (no dependency beyond the standard library; a
local run needs no ``distributed``), or ``distributed.Client(...).get_executor()``. The driver
submits tasks, and writes each outcome to the store as it arrives; it is the store's only writer.
Scheduling, retries of lost workers and placement are the executor's; nothing here schedules.

Resuming is the store's job: a rerun finds every task already done and runs the rest (and, unless
told otherwise, retries the failed ones).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import math
import os
import signal
import threading
import time

from .._device import DEVICES, passive_workers
from .._errors import LandscapeError
from .._progress import redraw_interval
from .store import Store, read_study, store_path
from .study import Study, load_study
from .tasks import execute_task


def run_study(study, *, store=None, workers: int | None = None, scheduler: str | None = None,
              scheduler_file: str | None = None, device: str = "auto", threads: int | None = None,
              resources: dict | None = None, retry_failed: bool = True, progress: bool = True) -> dict:
    """Run the unfinished tasks of a study and store each result as it arrives.

    Parameters
    ----------
    study : Study, str or Path
        A :class:`Study`, a TOML file or a built-in study's name.
    store : str or Path, optional
        The SQLite results store; ``<study name>.sqlite`` in the working folder by default.
    workers : int, optional
        Local worker processes (spawned); default: one per GPU when the study runs on CUDA, else one
        per CPU core. ``0`` runs the tasks in this process, one after the other. Ignored with a scheduler.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``); the tasks run on its workers.
    scheduler_file : str, optional
        A Dask scheduler file (as written by ``dask scheduler --scheduler-file`` or dask-mpi).
    device : {"auto", "cpu", "cuda"}
        Resolved by each worker: ``auto`` uses the worker's GPU when it has one. On a cluster whose
        workers declare a ``GPU`` resource (``dask worker --resources GPU=1``, dask-cuda), each task
        of a study not pinned to the CPU holds one GPU.
    threads : int, optional
        Torch threads per task; default: the cores shared among local workers (untouched on Dask,
        whose workers set their own).
    resources : dict, optional
        Dask resources each task needs, overriding the GPU rule above (e.g. ``{"GPU": 0.5}``).
    retry_failed : bool
        Rerun tasks that failed in an earlier run.
    progress : bool
        A tqdm bar on stderr: tasks done / total, rate and ETA.

    Returns
    -------
    dict
        ``study``, ``store``, ``executor``, ``tasks`` (in the study), ``ran`` (this run), ``done``,
        ``failed``, ``pending`` (in the study, after the run), ``seconds``, ``errors`` (the first
        few failures: ``id``, ``point``, ``error`` line).

    Raises
    ------
    LandscapeError
        A bad study, store, scheduler or option. A failing task is recorded, never raised.
    KeyboardInterrupt
        On Ctrl-C or SIGTERM; finished results are in the store and a rerun resumes.
    """
    study = study if isinstance(study, Study) else load_study(study)
    if workers is not None and workers < 0:
        raise LandscapeError(f"--workers must be >= 0, got {workers}")
    DEVICES.lookup(str(device).partition(":")[0])
    if not (scheduler or scheduler_file):
        from .._device import resolve_device

        resolve_device(device)  # a local run on CUDA needs a GPU here
    start = time.perf_counter()
    tasks = study.tasks()
    path = store_path(study, store)
    with Store(path, study=study, lock=True) as db, _terminate_on_sigterm():
        db.add_tasks(study, tasks)
        status = db.statuses()
        todo = [t for t in tasks if status[t.id] == "pending" or (retry_failed and status[t.id] == "failed")]
        finished = len(tasks) - len(todo)
        failed = 0
        with _executor(len(todo), workers, scheduler, scheduler_file, device, threads, resources) as ex:
            bar = _progress(study.name, len(tasks), finished, progress)
            try:
                for task, outcome in ex.run(study, todo):
                    db.record(task.id, outcome)
                    failed += outcome["status"] != "done"
                    bar.update(1)
                    if failed:
                        bar.set_postfix(failed=failed, refresh=False)
            finally:
                bar.close()
        ids = [t.id for t in tasks]
        counts = db.counts(ids)
        errors = [{"id": r["id"], "point": _point(tasks, r["id"]), "error": last_line(r["error"])}
                  for r in db.rows(ids) if r["status"] == "failed"][:5]
        summary = {"study": study.name, "store": str(path), "executor": ex.describe, "tasks": len(tasks),
                   "ran": len(todo), **counts, "seconds": time.perf_counter() - start, "errors": errors}
    return summary


def last_line(text: str | None) -> str:
    """The last non-empty line of an error text (the exception and its message)."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _point(tasks, tid):
    return next((t.point for t in tasks if t.id == tid), {})


# ---------------------------------------------------------------- executors
class _Executor:
    """Context manager yielding ``run(study, tasks) -> iterator of (task, outcome)``."""

    describe = ""

    def __init__(self, device, threads):
        self.device, self.threads = device, threads

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, study, tasks):
        raise NotImplementedError

    def _drive(self, pool, study, tasks, window, submit_kwargs, devices=None):
        """Keep ``window`` tasks in flight; yield each outcome as it completes.

        ``devices``, one per slot of the window, pins each task in flight to its own device.
        """
        queue = collections.deque(tasks)
        free = list(devices) if devices else [self.device] * window
        flight = {}
        broken = False
        try:
            while queue or flight:
                while queue and free and not broken:
                    try:
                        fut = pool.submit(execute_task, study.task, queue[0].params, free[-1], self.threads,
                                          **submit_kwargs(study, queue[0]))
                    except cf.BrokenExecutor:
                        broken = True  # the caller starts a new pool for the rest
                        break
                    flight[fut] = (queue.popleft(), free.pop())
                if not flight:
                    return
                done, _ = cf.wait(flight, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    task, device = flight.pop(fut)
                    free.append(device)
                    yield task, self._outcome(fut)
        finally:
            for fut in flight:
                fut.cancel()

    def _outcome(self, fut):
        try:
            return fut.result()
        except Exception as err:  # noqa: BLE001 - the task's process died or the cluster lost it
            now = time.time()
            return {"status": "failed", "figures": None, "error": self._lost(err), "seconds": None,
                    "started": None, "finished": now, "worker": None, "device": None, "versions": {}}

    def _lost(self, err):
        return f"{type(err).__name__}: {err}"


class _InProcess(_Executor):
    describe = "in-process"

    def run(self, study, tasks):
        for task in tasks:
            yield task, execute_task(study.task, task.params, self.device, self.threads)


class _LocalPool(_Executor):
    """Spawned worker processes, one task per worker in flight (so a crash names its suspects).

    On a machine with GPUs and a study not pinned to the CPU, each task in flight holds its own GPU
    (``cuda:i``), as many workers as GPUs by default.
    """

    def __init__(self, n, n_tasks, device, threads):
        import multiprocessing

        import torch

        gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
        if n is None:
            n = gpus or _cores()
        self.n = max(1, min(n, n_tasks))
        super().__init__(device, threads if threads else max(1, _cores() // self.n))
        self.ctx = multiprocessing.get_context("spawn")
        self.devices = [f"cuda:{i % gpus}" for i in range(self.n)] if gpus and device in ("auto", "cuda") else None
        self.describe = f"local, {self.n} worker process{'es' if self.n > 1 else ''}, {self.threads} thread(s) each" \
            + (f", {min(gpus, self.n)} GPU(s)" if self.devices else "")
        self.pool = None

    def _new_pool(self):
        passive_workers()  # the workers' OpenMP threads sleep while they wait: they share the cores
        return cf.ProcessPoolExecutor(self.n, mp_context=self.ctx, initializer=_init_worker, initargs=(os.getpid(),))

    def run(self, study, tasks):
        remaining = {t.id: t for t in tasks}
        while remaining:  # a pool broken by a dying worker fails its tasks in flight; the rest go on anew
            self.pool = self._new_pool()
            for task, outcome in self._drive(self.pool, study, list(remaining.values()), self.n, lambda s, t: {},
                                             self.devices):
                del remaining[task.id]
                yield task, outcome
            self._stop(wait=True)

    def _lost(self, err):
        if isinstance(err, cf.BrokenExecutor):
            return ("BrokenProcessPool: a worker process died (a crash, out of memory, or killed) while running "
                    "this task or one beside it; rerun to retry")
        return super()._lost(err)

    def _stop(self, wait):
        if self.pool is None:
            return
        if not wait:  # interrupted: stop the tasks in flight now, then let the pool tidy up after them
            procs = list((getattr(self.pool, "_processes", None) or {}).values())
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

    def __exit__(self, kind, *exc):
        self._stop(wait=kind is None)
        return False


class _Dask(_Executor):
    """An existing Dask cluster, through ``distributed.Client.get_executor``."""

    def __init__(self, scheduler, scheduler_file, device, threads, resources):
        try:
            import distributed
        except ImportError:
            raise LandscapeError("running on a Dask cluster needs distributed: pip install 'landscape[dist]'") from None
        super().__init__(device, threads)
        where = scheduler or f"scheduler file {scheduler_file}"
        if scheduler and scheduler.startswith("tcp://"):
            _probe(scheduler)
        try:
            self.client = distributed.Client(scheduler, scheduler_file=scheduler_file, timeout="20s",
                                             set_as_default=False)
        except (OSError, TimeoutError, ValueError) as err:
            raise LandscapeError(f"cannot reach the Dask scheduler at {where} ({err}); check the address, or "
                                 "start one with `dask scheduler` and `dask worker ADDRESS`") from None
        workers = self.client.scheduler_info().get("workers", {})
        if resources is None and device != "cpu" and any("GPU" in w.get("resources", {})
                                                         for w in workers.values()):
            resources = {"GPU": 1}
        self.resources = resources
        self.describe = f"dask {self.client.scheduler.address}, {len(workers)} worker(s)" + (
            f", resources {resources}" if resources else "")

    def run(self, study, tasks):
        pool = self.client.get_executor(pure=False, resources=self.resources) if self.resources else \
            self.client.get_executor(pure=False)
        yield from self._drive(pool, study, tasks, max(1, len(tasks)),
                               lambda s, t: {"key": f"{s.name}-{t.id}"})

    def __exit__(self, *exc):
        self.client.close()
        return False


def _probe(address: str) -> None:
    """Fail at once, not after the client's timeout, when nothing listens at a tcp:// address."""
    import socket

    host, _, port = address[len("tcp://"):].rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise LandscapeError(f"--scheduler {address!r} must look like tcp://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise LandscapeError(f"cannot reach the Dask scheduler at {address} ({err.strerror or err}); check the "
                             "address, or start one with `dask scheduler` and `dask worker ADDRESS`") from None


def _executor(n_tasks, workers, scheduler, scheduler_file, device, threads, resources) -> _Executor:
    if scheduler or scheduler_file:
        return _Dask(scheduler, scheduler_file, device, threads, resources)
    if n_tasks == 0:
        idle = _InProcess(device, threads)
        idle.describe = "nothing to run"
        return idle
    if workers == 0:
        return _InProcess(device, threads)
    return _LocalPool(workers, n_tasks, device, threads)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _init_worker(parent: int) -> None:
    """In each local worker: ignore Ctrl-C (the driver stops the pool) and die with the driver."""
    from tqdm import tqdm

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a thread lock for tqdm instead of its default process-shared semaphore, which a worker stopped by the
    # driver could not release (the resource tracker then warns of a leak)
    tqdm.set_lock(threading.RLock())

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # the driver is gone (even by SIGKILL): nobody will read our results

    threading.Thread(target=watch, daemon=True, name="landscape-parent-watch").start()


class _terminate_on_sigterm:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does."""

    def __enter__(self):
        self.old = None
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(name, total, initial, enabled):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"study {name}", unit="task", disable=not enabled,
                dynamic_ncols=True, mininterval=redraw_interval(), smoothing=0.1)


def study_status(study=None, *, store=None) -> dict:
    """Counts and timings of a study's store without running anything.

    Parameters
    ----------
    study : Study, str or Path, optional
        The study (its tasks decide what "total" means); when None, the one kept in the store.
    store : str or Path, optional

    Returns
    -------
    dict
        ``study``, ``store``, ``running`` (who is writing it now, or None), ``tasks``, ``done``,
        ``failed``, ``pending``, ``other`` (rows of tasks no longer in the study), ``task_seconds``
        (sum over done tasks), ``mean_seconds``, ``workers`` (distinct), ``errors`` (first few).
    """
    from .store import is_running

    study, path, rows = read_study(study, store)
    tasks = study.tasks()
    ids = {t.id for t in tasks}
    mine = [r for r in rows if r["id"] in ids]
    counts = collections.Counter(r["status"] for r in mine)
    missing = len(ids) - len(mine)  # tasks added to the file since the last run
    secs = [r["seconds"] for r in mine if r["status"] == "done" and r["seconds"] is not None]
    points = {t.id: t.point for t in tasks}
    return {
        "study": study.name, "task": study.task, "store": str(path), "running": is_running(path),
        "tasks": len(tasks), "done": counts["done"], "failed": counts["failed"],
        "pending": counts["pending"] + missing, "other": len(rows) - len(mine),
        "task_seconds": math.fsum(secs), "mean_seconds": math.fsum(secs) / len(secs) if secs else None,
        "workers": len({r["worker"] for r in mine if r["worker"]}),
        "errors": [{"id": r["id"], "point": points[r["id"]], "error": last_line(r["error"])}
                   for r in mine if r["status"] == "failed"][:5],
    }
