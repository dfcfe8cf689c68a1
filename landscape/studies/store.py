"""The results store of a study: one SQLite file, one row per task, written by the driver alone.

Every finished task is committed on its own (``synchronous=FULL`` in WAL mode), so killing the
driver at any moment loses at most the tasks that were running. A second driver on the same store
is refused by an advisory lock (released by the operating system when the holder dies, even by
SIGKILL). Readers (``landscape study status``) may look while a run writes.

Tables::

    meta(key, value)      format = "landscape-study", schema, study, task, spec (the study as JSON,
                          Study.to_dict), toml (the file's text), source, created, updated
    tasks(id, idx, task, params, status, figures, error, attempts, seconds, started, finished,
          worker, device, versions)
                          status is "pending", "done" or "failed"; params, figures and versions are
                          JSON; id is the task's hash (landscape.studies.study.task_id)
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path as FilePath

from .._errors import LandscapeError
from .study import Study, canonical, load_study, study_from_json

FORMAT = "landscape-study"
SCHEMA = 1
STATUSES = ("pending", "done", "failed")

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    task TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    figures TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    seconds REAL,
    started REAL,
    finished REAL,
    worker TEXT,
    device TEXT,
    versions TEXT
);
"""


class Store:
    """A study's results on disk.

    Parameters
    ----------
    path : str or Path
    study : Study, optional
        Opening for a run: the file is created if missing, and a store holding another study is an
        error. Without it the store must exist (status, report).
    lock : bool
        Take the writer's lock (for a run); refused while another driver holds it.

    Raises
    ------
    LandscapeError
        A missing, corrupt or foreign file; a store of another study; a store newer than this
        landscape; a store another run is writing.
    """

    def __init__(self, path, *, study=None, lock: bool = False):
        self.path = FilePath(path)
        self._lock = None
        if study is None and not self.path.is_file():
            raise LandscapeError(f"{self.path}: no such study store; run the study first (landscape study run)")
        if self.path.is_dir():
            raise LandscapeError(f"{self.path} is a folder; name a file for the study store")
        if self.path.is_symlink() and not self.path.exists():
            raise LandscapeError(f"{self.path} is a link to nothing (or a loop of links); name a file for the study "
                                 "store")
        if self.path.exists() and not self.path.is_file():
            raise LandscapeError(f"{self.path} is not a regular file (a FIFO or a device); name a file for the study "
                                 "store")
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if fresh and study is None:  # reading must not write: an empty file stays as it is
            raise LandscapeError(f"{self.path}: an empty study store (no study has run in it); run the study first "
                                 "(landscape study run)")
        if not fresh:
            self._check_header()
        try:
            if not fresh and not self._probe():  # created on a full disk or killed before its first commit
                if study is None:
                    raise LandscapeError(f"{self.path}: an empty study store (no study has run in it); run the "
                                         "study first (landscape study run)")
                fresh = True
            if lock:
                self._take_lock()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if fresh:
                self._create(study)
            self._check_meta(study)
            problems = [r[0] for r in self.db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(problems[:3]))
        except sqlite3.DatabaseError as err:
            self.close()
            raise LandscapeError(f"{self.path}: corrupt study store ({err}); move it aside to start afresh, "
                                 "or restore a copy") from None
        except OSError as err:
            self.close()
            raise LandscapeError(f"cannot open {self.path}: {err.strerror or err}; choose another --store") from None
        except LandscapeError:
            self.close()
            raise

    # ---------------------------------------------------------------- opening
    def _check_header(self):
        with open(self.path, "rb") as fh:
            head = fh.read(16)
        if head != b"SQLite format 3\x00":
            raise LandscapeError(f"{self.path}: not a study store (not an SQLite file); pass another --store")

    def _probe(self) -> bool:
        """Whether the file holds tables, read through a read-only connection: the file of another program is
        refused before anything writes to it (a read-write open turns on WAL mode, changing its header).

        Raises
        ------
        LandscapeError
            An SQLite file with tables that are not a study store's.
        """
        uri = FilePath(os.path.abspath(self.path)).as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            try:
                ours = {"meta", "tasks"} <= tables and dict(db.execute(
                    "SELECT key, value FROM meta WHERE key = 'format'")).get("format") == FORMAT
            except sqlite3.OperationalError:  # a table named meta without our columns
                ours = False
        finally:
            db.close()
        if tables and not ours:
            raise LandscapeError(f"{self.path}: an SQLite file of another program, not a study store; "
                                 "pass another --store")
        return bool(tables)

    def _take_lock(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no advisory locks on this platform
            return
        lock_path = _lock_path(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock_path, "a+")
        except OSError as err:
            raise LandscapeError(f"cannot create {lock_path}: {err.strerror or err}; choose another --store") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LandscapeError(f"{self.path} is being written by a running study ({holder}); wait for it to end "
                                 "or pass another --store") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename}")
        fh.flush()
        self._lock = fh

    def _create(self, study):
        now = str(time.time())
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for statement in _TABLES.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("format", FORMAT), ("schema", str(SCHEMA)), ("study", study.name), ("task", study.task),
                ("created", now), *_spec_rows(study)])

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_meta(self, study):
        names = self._tables()
        if not {"meta", "tasks"} <= names:
            raise LandscapeError(f"{self.path}: an SQLite file of another program, not a study store; "
                                 "pass another --store")
        self.meta = dict(self.db.execute("SELECT key, value FROM meta"))
        if self.meta.get("format") != FORMAT:
            raise LandscapeError(f"{self.path}: an SQLite file of another program, not a study store; "
                                 "pass another --store")
        schema = self.meta.get("schema", "")
        if not (schema.isascii() and schema.isdigit()) or int(schema) > SCHEMA:
            raise LandscapeError(f"{self.path}: store schema {schema!r} is newer than this landscape reads "
                                 f"({SCHEMA}); upgrade landscape")
        if study is not None and (self.meta.get("study"), self.meta.get("task")) != (study.name, study.task):
            raise LandscapeError(f"{self.path} holds study {self.meta.get('study')!r} (task "
                                 f"{self.meta.get('task')!r}), not {study.name!r} (task {study.task!r}); "
                                 "pass another --store")

    def close(self):
        db = getattr(self, "db", None)
        if db is not None:
            db.close()
            self.db = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- writing
    def add_tasks(self, study, tasks) -> int:
        """Insert the study's tasks not yet in the store (as pending) and record its current spec.

        Returns the number of new tasks.
        """
        with _guard(self, "write"), self.db:
            self.db.execute("BEGIN IMMEDIATE")
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO tasks (id, idx, task, params) VALUES (?, ?, ?, ?)",
                [(t.id, t.index, study.task, canonical(t.params)) for t in tasks])
            added = self.db.total_changes - before
            self.db.executemany("UPDATE tasks SET idx = ? WHERE id = ?", [(t.index, t.id) for t in tasks])
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", _spec_rows(study))
        self.meta.update(_spec_rows(study))
        return added

    def study(self):
        """The study as last run on this store (its file may have changed since)."""
        return study_from_json(self.meta.get("spec"), str(self.path))

    def record(self, task_id: str, outcome: dict) -> None:
        """Write one task's outcome (from :func:`landscape.studies.tasks.execute_task`) and commit it."""
        figures = outcome.get("figures")
        with _guard(self, "write"), self.db:
            self.db.execute(
                "UPDATE tasks SET status = ?, figures = ?, error = ?, attempts = attempts + 1, seconds = ?, "
                "started = ?, finished = ?, worker = ?, device = ?, versions = ? WHERE id = ?",
                (outcome["status"], None if figures is None else json.dumps(figures), outcome.get("error"),
                 outcome.get("seconds"), outcome.get("started"), outcome.get("finished"), outcome.get("worker"),
                 outcome.get("device"), json.dumps(outcome.get("versions") or {}), task_id))

    # ---------------------------------------------------------------- reading
    def statuses(self) -> dict[str, str]:
        """Task id -> status, for every row."""
        with _guard(self, "read"):
            return dict(self.db.execute("SELECT id, status FROM tasks"))

    def rows(self, ids=None) -> list[dict]:
        """Rows as dicts (JSON columns decoded), in grid order; only ``ids`` when given."""
        with _guard(self, "read"):
            cur = self.db.execute("SELECT * FROM tasks ORDER BY idx, id")
            values = cur.fetchall()
        cols = [c[0] for c in cur.description]
        keep = None if ids is None else set(ids)
        out = []
        for row_values in values:
            row = dict(zip(cols, row_values))
            if keep is not None and row["id"] not in keep:
                continue
            for key in ("params", "figures", "versions"):
                row[key] = self._decode(row, key)
            out.append(row)
        return out

    def _decode(self, row: dict, key: str):
        """A JSON column of a row; text that is not JSON (a store edited or damaged) is a one-line error naming
        the task and the column."""
        if row[key] is None:
            return None
        try:
            return json.loads(row[key])
        except (TypeError, ValueError) as err:
            raise LandscapeError(f"{self.path}: the {key} of task {row['id']} are not JSON ({err}); move the store "
                                 "aside to start afresh, or restore a copy") from None

    def counts(self, ids=None) -> dict[str, int]:
        """How many tasks are pending, done and failed (among ``ids`` when given)."""
        out = dict.fromkeys(STATUSES, 0)
        keep = None if ids is None else set(ids)
        for tid, status in self.statuses().items():
            if keep is None or tid in keep:
                out[status] = out.get(status, 0) + 1
        return out


class _guard:
    """SQLite errors while reading or writing an open store become one-line user errors."""

    def __init__(self, store, doing):
        self.store, self.doing = store, doing

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        if kind is not None and issubclass(kind, sqlite3.Error):
            hint = ("free some disk space and rerun: finished tasks are kept" if "full" in str(err)
                    else "move it aside to start afresh, or restore a copy")
            raise LandscapeError(f"{self.store.path}: cannot {self.doing} the study store ({err}); {hint}") from None
        return False


def _spec_rows(study) -> list[tuple[str, str]]:
    return [("spec", canonical(study.to_dict())), ("toml", study.text), ("source", study.source),
            ("updated", str(time.time()))]


def store_path(study, store=None) -> FilePath:
    """The store a study uses: ``store`` if given, else ``<study name>.sqlite`` in the working folder."""
    return FilePath(store) if store is not None else FilePath(f"{study.name}.sqlite")


def read_study(study, store):
    """The study, its store's path and the store's rows, for status and reports (reads only).

    ``study`` is a :class:`Study`, a TOML file or a built-in name, or None to take the study the
    store was last run with; a store made for another study is an error.
    """
    if study is None and store is None:
        raise LandscapeError("name a study (TOML file or built-in name) or a --store")
    if study is not None and not isinstance(study, Study):
        study = load_study(study)
    path = store_path(study, store) if study is not None else FilePath(store)
    with Store(path) as db:
        if study is None:
            study = db.study()
        elif (db.meta.get("study"), db.meta.get("task")) != (study.name, study.task):
            raise LandscapeError(f"{path} holds study {db.meta.get('study')!r}, not {study.name!r}; "
                                 "pass another --store")
        rows = db.rows()
    return study, path, rows


def is_running(path) -> str | None:
    """Who holds the writer's lock of a store (``"pid N on host"``), or None when no run is writing it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return None
    lock_path = _lock_path(path)
    if not lock_path.exists():
        return None
    with open(lock_path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            return fh.read().strip() or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def _lock_path(path) -> FilePath:
    """The writer's lock of a store: beside the file itself, so that every name of it (a symbolic link, a
    path through a linked folder) takes the same lock."""
    real = FilePath(os.path.realpath(path))
    return real.with_name(real.name + ".lock")
