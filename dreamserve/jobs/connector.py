"""The database seam: sessions that run named queries, and the SQLite implementation.

The store speaks only to `Connector`: `read()` for single consistent statements and `write()`
for one short transaction. A PostgreSQL connector (a pool, SKIP LOCKED claims) plugs in here
later without touching the store.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from dreamserve.jobs import queries

log = logging.getLogger("dreamserve.connector")

Row = Mapping[str, Any]
T = TypeVar("T")


class Session(Protocol):
    def all(self, query: str, /, **params: Any) -> list[Row]: ...
    def one(self, query: str, /, **params: Any) -> Row | None: ...
    def run(self, query: str, /, **params: Any) -> int:
        """Execute; returns the number of rows changed."""
        ...


class Connector(Protocol):
    dialect: str

    def read(self) -> AbstractContextManager[Session]:
        """Single statements, each consistent on its own (no transaction held open)."""
        ...

    def write(self) -> AbstractContextManager[Session]:
        """One write transaction: committed on exit, rolled back on an exception."""
        ...

    def script(self, name: str) -> None:
        """Run a multi-statement block (the schema) in one transaction."""
        ...

    def close(self) -> None: ...


BUSY_PAUSE_MIN, BUSY_PAUSE_MAX = 0.0001, 0.002  # seconds between tries for a busy database


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def retry_busy(fn: Callable[[], T], timeout: float) -> T:
    """Call fn until it stops failing with SQLITE_BUSY, for up to `timeout` seconds.

    SQLite's own busy handler sleeps 1, 2, 5, 10, ... 100 ms between tries, so a writer that
    finds the lock taken for 0.3 ms waits 5 or 10 ms, and under many concurrent writers those
    waits pile up into p99s of a second. Tries every 0.1-2 ms instead.
    """
    deadline, pause = None, BUSY_PAUSE_MIN
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            now = time.monotonic()
            deadline = now + timeout if deadline is None else deadline
            if now >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, BUSY_PAUSE_MAX)


CHECKPOINT_EVERY = 200  # commits of one process between its WAL checkpoints (~1000 pages)


class _Checkpointer:
    """Copies the WAL back into the database on a background thread, off the request path.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses 1000 WAL pages and
    fsyncs the WAL and the database (10-35 ms measured here). That COMMIT held the process's
    write lock, so every other writer of the process queued behind it: the benchmark's p99
    submits waited 20-50 ms on it. Commits now only count, and every CHECKPOINT_EVERY of them
    wake this thread, whose PASSIVE checkpoint blocks neither readers nor writers.
    """

    def __init__(self, connection: Callable[[], sqlite3.Connection]) -> None:
        self._connection = connection
        self._wake = threading.Event()
        self._closed = False
        self._commits = 0
        self._thread: threading.Thread | None = None

    def committed(self) -> None:
        """Called after each commit (under the write lock, so the count needs no lock)."""
        self._commits += 1
        if self._commits < CHECKPOINT_EVERY:
            return
        self._commits = 0
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:  # busy (another process checkpoints): the next one will do
                log.debug("WAL checkpoint skipped", exc_info=True)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class _SqliteSession:
    def __init__(
        self, conn: sqlite3.Connection, sql: dict[str, str], retry_timeout: float | None
    ) -> None:
        self.conn, self.sql, self.retry_timeout = conn, sql, retry_timeout

    def all(self, query: str, /, **params: Any) -> list[Row]:
        def run() -> list[Row]:
            return self.conn.execute(self.sql[query], params).fetchall()

        # Reads outside a transaction may be retried; inside one the lock is already ours.
        return run() if self.retry_timeout is None else retry_busy(run, self.retry_timeout)

    def one(self, query: str, /, **params: Any) -> Row | None:
        rows = self.all(query, **params)
        return rows[0] if rows else None

    def run(self, query: str, /, **params: Any) -> int:
        return self.conn.execute(self.sql[query], params).rowcount


class SqliteConnector:
    """One connection per thread (the API calls the store from a thread pool).

    Writers in this process queue on a Python lock before BEGIN IMMEDIATE, which wakes the next
    one the moment the previous one commits; against other processes (workers, other API
    processes) BEGIN IMMEDIATE is retried every few tenths of a millisecond (retry_busy) rather
    than by SQLite's coarse busy handler, which is therefore off after connection setup.
    """

    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.sql = queries.load(self.dialect)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._checkpointer = _Checkpointer(self._connection)
        path.parent.mkdir(parents=True, exist_ok=True)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, no implicit transactions.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            # Switching a new database to WAL takes an exclusive lock, and SQLite can answer
            # SQLITE_BUSY here without calling the busy handler when several connections open
            # it at once (seen as a flaky "database is locked" with three threads), so retry.
            retry_busy(
                lambda: conn.execute("PRAGMA journal_mode = WAL"), self.busy_timeout_ms / 1000
            )
            # In WAL mode NORMAL survives any process crash (kill -9); only an OS crash or power
            # loss can roll back the last commits.
            conn.execute("PRAGMA synchronous = NORMAL")
            # After a burst the WAL is cut back to this size instead of staying at its peak.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # _Checkpointer does it, off-path
            conn.execute("PRAGMA busy_timeout = 0")  # retry_busy waits instead, finer grained
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[_SqliteSession]:
        yield _SqliteSession(self._connection(), self.sql, self.busy_timeout_ms / 1000)

    @contextmanager
    def write(self) -> Iterator[_SqliteSession]:
        conn = self._connection()
        with self._write_lock:
            # In WAL mode only taking the write lock can be busy: COMMIT never waits on readers.
            retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), self.busy_timeout_ms / 1000)
            try:
                yield _SqliteSession(conn, self.sql, None)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._checkpointer.committed()

    def script(self, name: str) -> None:
        """Run a multi-statement block (the schema) in one transaction."""
        with self.write() as tx:
            for statement in self.sql[name].split(";\n"):
                if statement.strip():
                    tx.conn.execute(statement)

    def close(self) -> None:
        self._checkpointer.close()
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def connect(url: str) -> SqliteConnector:
    """`sqlite:///relative/path.db` or `sqlite:////absolute/path.db`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"store URL {url!r}: only sqlite:///path is supported so far")
    return SqliteConnector(Path(url[len(prefix) :]))
