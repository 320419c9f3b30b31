from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from dreamserve.jobs import connector
from dreamserve.jobs.connector import SqliteConnector, connect


def test_only_sqlite_urls_are_accepted(tmp_path: Path) -> None:
    assert connect(f"sqlite:///{tmp_path}/a.db").path == tmp_path / "a.db"
    assert connect("sqlite:///data/x.db").path == Path("data/x.db")
    with pytest.raises(ValueError, match="sqlite"):
        connect("postgresql://localhost/db")


def test_a_failed_write_rolls_back(tmp_path: Path) -> None:
    db = SqliteConnector(tmp_path / "t.db")
    db.script("schema")
    with pytest.raises(RuntimeError), db.write() as tx:
        tx.run("put_meta_if_absent", key="k", value="v")
        raise RuntimeError("boom")
    with db.read() as tx:
        assert tx.one("get_meta", key="k") is None
    with db.write() as tx:  # the connection is usable again
        tx.run("put_meta_if_absent", key="k", value="v")
    with db.read() as tx:
        row = tx.one("get_meta", key="k")
    assert row is not None and row["value"] == "v"
    db.close()


def test_each_thread_gets_its_own_connection_in_wal_mode(tmp_path: Path) -> None:
    db = SqliteConnector(tmp_path / "t.db")
    seen: list[int] = []

    def use() -> None:
        with db.read() as tx:
            seen.append(id(tx.conn))
            assert tx.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    use()
    assert len(set(seen)) == 4
    db.close()


def test_busy_writes_are_retried_until_the_lock_frees(tmp_path: Path) -> None:
    db = SqliteConnector(tmp_path / "t.db")
    db.script("schema")
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.1, lambda: other.execute("COMMIT")).start()
    with db.write() as tx:  # would raise "database is locked" without the retry
        tx.run("put_meta_if_absent", key="k", value="v")
    with db.read() as tx:
        assert tx.one("get_meta", key="k") is not None
    other.close()
    db.close()


def test_busy_gives_up_after_the_timeout(tmp_path: Path) -> None:
    db = SqliteConnector(tmp_path / "t.db", busy_timeout_ms=50)
    db.script("schema")
    other = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"), db.write():
        pass
    other.execute("ROLLBACK")
    other.close()
    db.close()


def test_commits_never_checkpoint_but_a_background_thread_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connector, "CHECKPOINT_EVERY", 3)
    db = SqliteConnector(tmp_path / "t.db")
    db.script("schema")  # commit 1
    with db.read() as tx:
        assert tx.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    size_before = (tmp_path / "t.db").stat().st_size
    for key in ("a", "b"):  # commits 2 and 3: the third wakes the checkpointer
        with db.write() as tx:
            tx.run("put_meta_if_absent", key=key, value="x" * 200_000)
    # The rows reach the database file itself only through a checkpoint.
    deadline = time.monotonic() + 30
    while (tmp_path / "t.db").stat().st_size < size_before + 400_000:
        assert time.monotonic() < deadline, "no checkpoint copied the WAL back"
        time.sleep(0.01)
    db.close()
    assert not any(t.name == "wal-checkpoint" and t.is_alive() for t in threading.enumerate())
