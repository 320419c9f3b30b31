"""Outbox delivery bookkeeping, files and API keys."""

from __future__ import annotations

import time

import pytest

from dreamserve.jobs.model import FileRecord, NotFound
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore, open_store
from tests.jobs.conftest import new_prediction


def _owe_completed(store: SqlStore) -> str:
    p = store.submit(
        new_prediction(webhook="http://127.0.0.1:9/h", webhook_events_filter=("completed",))
    )
    store.request_cancel(p.id)
    return p.id


def test_due_deliveries_are_claimed_so_two_dispatchers_never_share_one(store: SqlStore) -> None:
    _owe_completed(store)
    now = time.time()
    first = store.due_deliveries(now, 10)
    assert len(first) == 1 and first[0].attempts == 0 and first[0].first_attempt_at is None
    assert store.due_deliveries(now, 10) == []
    # A dispatcher that died mid-send gives it up after its claim runs out.
    assert [d.id for d in store.due_deliveries(now + 61, 10)] == [first[0].id]


def test_retry_give_up_and_done(store: SqlStore) -> None:
    _owe_completed(store)
    now = time.time()
    [d] = store.due_deliveries(now, 10)
    store.delivery_failed(d.id, next_attempt_at=now + 5)
    assert store.due_deliveries(now + 1, 10) == []
    [again] = store.due_deliveries(now + 6, 10)
    assert again.attempts == 1 and again.first_attempt_at is not None
    store.delivery_failed(d.id, next_attempt_at=None)
    assert store.due_deliveries(now + 10_000, 10) == []
    assert store.deliveries_for(d.prediction_id)[0].attempts == 2  # kept for inspection
    pid = _owe_completed(store)
    [fresh] = store.due_deliveries(time.time(), 10)
    store.delivery_done(fresh.id)
    assert store.deliveries_for(pid) == []


def test_owed_deliveries_survive_a_restart(store_url: str) -> None:
    s = open_store(store_url)
    pid = _owe_completed(s)
    s.close()
    s = open_store(store_url)
    try:
        [d] = s.due_deliveries(time.time(), 10)
        assert d.prediction_id == pid and d.snapshot.status is Status.CANCELED
    finally:
        s.close()


def _file(file_id: str, owner: str | None) -> FileRecord:
    return FileRecord(
        id=file_id,
        owner=owner,
        name="cat.png",
        content_type="image/png",
        size=3,
        sha256="abc",
        blob_key=f"files/{file_id}",
        metadata={"k": "v"},
        created_at=time.time(),
        expires_at=None,
    )


def test_files_are_owner_scoped(store: SqlStore) -> None:
    store.add_file(_file("f1", "alice"))
    store.add_file(_file("f2", "bob"))
    assert store.get_file("f1", owner="alice").metadata == {"k": "v"}
    with pytest.raises(NotFound):
        store.get_file("f2", owner="alice")
    assert [f.id for f in store.list_files("alice", 10)] == ["f1"]
    assert {f.id for f in store.list_files(None, 10)} == {"f1", "f2"}
    with pytest.raises(NotFound):
        store.delete_file("f2", owner="alice")
    assert store.delete_file("f1", owner="alice").id == "f1"
    with pytest.raises(NotFound):
        store.get_file("f1")


def test_keys(store: SqlStore) -> None:
    assert not store.has_keys()
    key = store.create_key("ci", "hash-1")
    assert store.has_keys() and store.key_for_hash("hash-1") == key
    assert store.key_for_hash("hash-2") is None
    assert [k.id for k in store.list_keys()] == [key.id]
    revoked = store.revoke_key(key.id)
    assert revoked.revoked_at is not None
    assert store.key_for_hash("hash-1") is None and not store.has_keys()
    with pytest.raises(NotFound):
        store.revoke_key("nope")


def test_release_leases_frees_deliveries_a_dead_dispatcher_held(store: SqlStore) -> None:
    _owe_completed(store)
    now = time.time()
    [taken] = store.due_deliveries(now, 10)
    assert store.due_deliveries(now, 10) == []
    store.release_leases()  # serve starting again after a kill -9
    assert [d.id for d in store.due_deliveries(now, 10)] == [taken.id]
