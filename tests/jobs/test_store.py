"""The store contract: lifecycle, owner scoping, paging, cancel paths, leases, change feed."""

from __future__ import annotations

import time

import pytest

from dreamserve.jobs.model import BadCursor, NotFound
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore, open_store
from tests.jobs.conftest import new_prediction


def test_submit_is_durable_and_readable_from_another_connection(
    store: SqlStore, store_url: str
) -> None:
    p = store.submit(new_prediction(input={"prompt": "x", "n": [1, 2]}))
    assert p.status is Status.STARTING
    assert len(p.id) == 26 and p.id.islower() and p.id.isalnum()
    other = open_store(store_url)
    try:
        again = other.get(p.id)
    finally:
        other.close()
    assert again == p
    assert again.input == {"prompt": "x", "n": [1, 2]}


def test_ids_are_unique(store: SqlStore) -> None:
    ids = {store.submit(new_prediction()).id for _ in range(50)}
    assert len(ids) == 50


def test_full_lifecycle_records_times_metrics_and_output(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    claim = store.claim("w1", lease_seconds=30)
    assert claim is not None and claim.prediction.id == p.id
    assert claim.prediction.status is Status.PROCESSING
    assert claim.prediction.attempts == 1 and claim.prediction.started_at is not None
    assert store.claim("w2", 30) is None  # nothing else queued
    assert store.progress(p.id, "w1", 3, 10, "step 3") is False
    mid = store.get(p.id)
    assert mid.progress == (3, 10) and mid.logs == "step 3\n"
    done = store.finish(p.id, "w1", Status.SUCCEEDED, ["a.png", "b.png"], metrics={"steps": 10})
    assert done.status is Status.SUCCEEDED
    assert done.output == ("a.png", "b.png")
    assert done.completed_at is not None and done.started_at is not None
    assert done.metrics["steps"] == 10
    assert done.metrics["predict_time"] == pytest.approx(done.completed_at - done.started_at)
    assert done.metrics["total_time"] == pytest.approx(done.completed_at - done.created_at)
    assert store.get(p.id) == done


def test_claims_oldest_first(store: SqlStore) -> None:
    first = store.submit(new_prediction())
    second = store.submit(new_prediction())
    c1, c2 = store.claim("w", 30), store.claim("w", 30)
    assert c1 is not None and c2 is not None
    assert (c1.prediction.id, c2.prediction.id) == (first.id, second.id)


def test_owner_scoping(store: SqlStore) -> None:
    mine = store.submit(new_prediction(owner="alice"))
    theirs = store.submit(new_prediction(owner="bob"))
    assert store.get(mine.id, owner="alice").id == mine.id
    with pytest.raises(NotFound):
        store.get(theirs.id, owner="alice")
    with pytest.raises(NotFound):
        store.request_cancel(theirs.id, owner="alice")
    assert store.get(theirs.id).status is Status.STARTING  # untouched by alice's attempt
    assert [p.id for p in store.list("alice", None, 10).items] == [mine.id]
    assert {p.id for p in store.list(None, None, 10).items} == {mine.id, theirs.id}
    with pytest.raises(NotFound):
        store.get("nosuchprediction")


def test_pages_newest_first_both_ways(store: SqlStore) -> None:
    ids = [store.submit(new_prediction()).id for _ in range(7)]
    newest_first = ids[::-1]
    page1 = store.list(None, None, 3)
    assert [p.id for p in page1.items] == newest_first[:3]
    assert page1.previous_cursor is None and page1.next_cursor is not None
    page2 = store.list(None, page1.next_cursor, 3)
    assert [p.id for p in page2.items] == newest_first[3:6]
    page3 = store.list(None, page2.next_cursor, 3)
    assert [p.id for p in page3.items] == newest_first[6:]
    assert page3.next_cursor is None and page3.previous_cursor is not None
    back = store.list(None, page3.previous_cursor, 3)
    assert [p.id for p in back.items] == newest_first[3:6]
    back = store.list(None, back.previous_cursor, 3)
    assert [p.id for p in back.items] == newest_first[:3]
    assert back.previous_cursor is None and back.next_cursor is not None


def test_a_bad_cursor_is_a_client_error(store: SqlStore) -> None:
    for cursor in ("garbage!", "aGVsbG8", ""):
        with pytest.raises(BadCursor):
            store.list(None, cursor, 10)


def test_cancel_before_claim_ends_it_at_once(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    c = store.request_cancel(p.id)
    assert c.status is Status.CANCELED and c.completed_at is not None
    assert "predict_time" not in c.metrics and c.metrics["total_time"] >= 0
    assert store.claim("w", 30) is None


def test_cancel_while_processing_flags_it_for_the_worker(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 30)
    flagged = store.request_cancel(p.id)
    assert flagged.status is Status.PROCESSING and flagged.cancel_requested
    assert store.progress(p.id, "w", 1, 5, None) is True
    done = store.finish(p.id, "w", Status.CANCELED)
    assert done.status is Status.CANCELED


def test_cancel_of_a_finished_prediction_is_a_no_op(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 30)
    done = store.finish(p.id, "w", Status.SUCCEEDED, ["x.png"])
    assert store.request_cancel(p.id) == done


def test_lease_expiry_reruns_then_gives_up_after_max_attempts(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    for attempt in (1, 2, 3):
        claim = store.claim(f"w{attempt}", lease_seconds=10)
        assert claim is not None and claim.prediction.attempts == attempt
        assert store.recover(now=time.time()) == 0  # lease still valid
        assert store.recover(now=time.time() + 11) == 1
    failed = store.get(p.id)
    assert failed.status is Status.FAILED
    assert failed.error == "worker died while running this prediction (3 attempts)"
    assert store.claim("w4", 10) is None


def test_a_worker_that_lost_its_lease_cannot_overwrite(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("old", lease_seconds=10)
    store.recover(now=time.time() + 11)
    claim = store.claim("new", lease_seconds=10)
    assert claim is not None and claim.prediction.attempts == 2
    assert store.heartbeat(p.id, "old", 10) is False
    assert store.heartbeat(p.id, "new", 10) is True
    assert store.progress(p.id, "old", 1, 2, "stale") is True  # told to stop
    stale = store.finish(p.id, "old", Status.FAILED, error="boom")
    assert stale.status is Status.PROCESSING and stale.error is None
    done = store.finish(p.id, "new", Status.SUCCEEDED, ["y.png"])
    assert done.status is Status.SUCCEEDED and "stale" not in done.logs


def test_heartbeat_keeps_the_lease(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", lease_seconds=1)
    assert store.heartbeat(p.id, "w", lease_seconds=100)
    assert store.recover(now=time.time() + 50) == 0
    assert store.get(p.id).status is Status.PROCESSING


def test_release_leases_requeues_everything_claimed(store: SqlStore) -> None:
    a, b = store.submit(new_prediction()), store.submit(new_prediction())
    store.claim("w", 600)
    store.claim("w", 600)
    assert store.release_leases() == 2
    assert {store.get(a.id).status, store.get(b.id).status} == {Status.STARTING}
    again = store.claim("w2", 600)
    assert again is not None and again.prediction.attempts == 2


def test_release_by_a_stopping_worker_does_not_count_as_an_attempt(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 30)
    assert store.release(p.id, "w") is True
    assert store.release(p.id, "w") is False
    assert store.get(p.id).attempts == 0
    claim = store.claim("w2", 30)
    assert claim is not None and claim.prediction.attempts == 1


def test_a_canceled_prediction_whose_worker_died_ends_canceled(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 10)
    store.request_cancel(p.id)
    store.recover(now=time.time() + 11)
    assert store.get(p.id).status is Status.CANCELED


def test_cancel_after_deadline(store: SqlStore) -> None:
    running = store.submit(new_prediction(cancel_after=5))
    queued = store.submit(new_prediction(cancel_after=5))
    claim = store.claim("w", 600)
    assert claim is not None and claim.prediction.id == running.id
    assert store.recover(now=time.time()) == 0
    assert store.recover(now=time.time() + 6) == 2
    canceled = store.get(queued.id)
    assert canceled.status is Status.CANCELED
    assert canceled.error == "canceled: the Cancel-After deadline passed"
    assert store.get(running.id).cancel_requested  # the worker stops at its next step
    assert store.progress(running.id, "w", 1, 2, None) is True


def test_an_overdue_prediction_is_never_claimed(store: SqlStore) -> None:
    p = store.submit(new_prediction(cancel_after=5))
    with store.db.write() as tx:  # move the stored deadline into the past
        tx.conn.execute("UPDATE predictions SET deadline = 0 WHERE id = ?", (p.id,))
    assert store.claim("w", 30) is None
    assert store.recover() == 1
    assert store.get(p.id).status is Status.CANCELED


def test_changes_feed(store: SqlStore) -> None:
    start = store.last_seq()
    assert store.changes(start, 100) == ([], start)
    a = store.submit(new_prediction())
    b = store.submit(new_prediction())
    ids, mark = store.changes(start, 100)
    assert ids == [a.id, b.id] and mark > start
    assert store.changes(mark, 100) == ([], mark)
    store.claim("w", 30)  # a changes again
    ids2, mark2 = store.changes(mark, 100)
    assert ids2 == [a.id] and mark2 > mark
    first, mark_a = store.changes(start, 1)  # limits page through without gaps
    rest, _ = store.changes(mark_a, 100)
    assert first + rest == [b.id, a.id]


def test_queue_depth_and_meta(store: SqlStore, store_url: str) -> None:
    store.submit(new_prediction())
    store.submit(new_prediction())
    store.claim("w", 30)
    assert store.queue_depth() == 1
    secret = store.get_or_create_meta("webhook_secret", lambda: "first")
    other = open_store(store_url)
    try:
        assert other.get_or_create_meta("webhook_secret", lambda: "second") == secret == "first"
    finally:
        other.close()


def test_schema_creation_is_idempotent(store_url: str) -> None:
    for _ in range(2):
        s = open_store(store_url)
        s.submit(new_prediction())
        s.close()
    s = open_store(store_url)
    assert len(s.list(None, None, 10).items) == 2
    s.close()


def test_a_killed_service_never_fails_a_prediction_it_was_running(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    for _ in range(5):  # more service restarts than max_attempts
        assert store.claim("w", 600) is not None
        store.release_leases()
    assert store.get(p.id).status is Status.STARTING
    assert store.get(p.id).attempts == 5


def test_pages_of_one_owner_skip_other_owners(store: SqlStore) -> None:
    mine = []
    for i in range(6):
        p = store.submit(new_prediction(owner="alice" if i % 2 else "bob"))
        if i % 2:
            mine.append(p.id)
    page = store.list("alice", None, 2)
    assert [p.id for p in page.items] == mine[::-1][:2]
    rest = store.list("alice", page.next_cursor, 2)
    assert [p.id for p in rest.items] == mine[::-1][2:] and rest.next_cursor is None
    assert [p.id for p in store.list("alice", rest.previous_cursor, 2).items] == mine[::-1][:2]


def test_should_stop_between_steps(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 30)
    assert store.should_stop(p.id, "w") is False
    assert store.should_stop(p.id, "someone-else") is True  # not the lease holder
    store.request_cancel(p.id)
    assert store.should_stop(p.id, "w") is True
    late = store.submit(new_prediction(cancel_after=5))
    store.claim("w", 30)
    with store.db.write() as tx:
        tx.conn.execute("UPDATE predictions SET deadline = 0 WHERE id = ?", (late.id,))
    assert store.should_stop(late.id, "w") is True
    assert store.should_stop("nosuchprediction", "w") is True
