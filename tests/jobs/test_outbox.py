"""Owed webhooks are written with the state change: which events, throttling, order."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dreamserve.jobs import outbox
from dreamserve.jobs.connector import Session
from dreamserve.jobs.model import Prediction
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore
from tests.jobs.conftest import new_prediction

HOOK = "http://127.0.0.1:9/hook"


def _events(store: SqlStore, prediction_id: str) -> list[tuple[str, str]]:
    return [(d.event, d.snapshot.status.value) for d in store.deliveries_for(prediction_id)]


def test_no_webhook_no_rows(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 30)
    store.progress(p.id, "w", 1, 1, "log")
    store.finish(p.id, "w", Status.SUCCEEDED, ["o.png"])
    assert store.deliveries_for(p.id) == []


def test_each_event_is_written_by_its_state_change(store: SqlStore) -> None:
    p = store.submit(new_prediction(webhook=HOOK))
    assert _events(store, p.id) == []  # Replicate sends nothing on create
    store.claim("w", 30)
    assert _events(store, p.id) == [("start", "processing")]
    store.progress(p.id, "w", 1, 2, "hello")
    assert _events(store, p.id)[-1] == ("logs", "processing")
    assert store.deliveries_for(p.id)[-1].snapshot.logs == "hello\n"
    with store.db.write() as tx:  # as if the 500 ms window had passed: output is not deferred
        tx.conn.execute("UPDATE predictions SET webhook_throttled_at = 0")
    store.finish(p.id, "w", Status.SUCCEEDED, ["o.png"])
    tail = store.deliveries_for(p.id)[-2:]
    assert [(d.event, d.snapshot.output) for d in tail] == [
        ("output", ("o.png",)),
        ("completed", ("o.png",)),
    ]
    assert all(d.url == HOOK and d.snapshot.id == p.id for d in tail)
    assert len({d.id for d in store.deliveries_for(p.id)}) == 4  # distinct webhook-ids


def test_filter_is_respected(store: SqlStore) -> None:
    p = store.submit(new_prediction(webhook=HOOK, webhook_events_filter=("completed",)))
    store.claim("w", 30)
    store.progress(p.id, "w", 1, 1, "log")
    store.finish(p.id, "w", Status.FAILED, error="bad input")
    [only] = store.deliveries_for(p.id)
    assert only.event == "completed" and only.snapshot.error == "bad input"


def test_start_is_sent_once_even_when_rerun(store: SqlStore) -> None:
    p = store.submit(new_prediction(webhook=HOOK, webhook_events_filter=("start",)))
    store.claim("w", 10)
    store.recover(now=time.time() + 11)
    store.claim("w2", 10)
    assert _events(store, p.id) == [("start", "processing")]


def test_every_terminal_path_owes_completed(store: SqlStore) -> None:
    canceled = store.submit(new_prediction(webhook=HOOK, webhook_events_filter=("completed",)))
    store.request_cancel(canceled.id)
    dying = store.submit(new_prediction(webhook=HOOK, webhook_events_filter=("completed",)))
    for _ in range(3):
        store.claim("w", 10)
        store.recover(now=time.time() + 11)
    assert _events(store, canceled.id) == [("completed", "canceled")]
    assert _events(store, dying.id) == [("completed", "failed")]


def test_logs_are_throttled_to_one_per_half_second_and_none_is_lost(store: SqlStore) -> None:
    p = store.submit(new_prediction(webhook=HOOK, webhook_events_filter=("logs",)))
    store.claim("w", 30)
    for i in range(10):
        store.progress(p.id, "w", i, 10, f"line {i}")
    rows = store.deliveries_for(p.id)
    # The first goes now; the other nine coalesce into one deferred delivery 500 ms later
    # that carries the newest logs.
    assert len(rows) == 2
    assert rows[1].snapshot.logs.endswith("line 9\n")
    assert store.due_deliveries(time.time(), 10)[0].id == rows[0].id
    assert store.due_deliveries(time.time() + 0.6, 10)[0].id == rows[1].id


def test_completed_is_never_throttled_and_comes_last_with_the_final_state(
    store: SqlStore,
) -> None:
    p = store.submit(new_prediction(webhook=HOOK))
    store.claim("w", 30)
    store.progress(p.id, "w", 1, 2, "a")
    store.progress(p.id, "w", 2, 2, "b")  # deferred
    store.finish(p.id, "w", Status.SUCCEEDED, ["o.png"])
    due = store.due_deliveries(time.time(), 10)  # everything is due now, in order
    assert [d.event for d in due] == ["start", "logs", "logs", "output", "completed"]
    assert all(d.snapshot.status is Status.SUCCEEDED for d in due[2:])


def test_a_change_that_fails_midway_leaves_neither_state_nor_webhook(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = store.submit(new_prediction(webhook=HOOK))
    store.claim("w", 30)
    before = store.deliveries_for(p.id)
    real = outbox.queue_event

    def crash_on_completed(tx: Session, q: Prediction, event: str, *args: Any) -> None:
        real(tx, q, event, *args)  # the output row is written, then the process "dies"
        if event == "completed":
            raise RuntimeError("crash inside the transaction")

    monkeypatch.setattr(outbox, "queue_event", crash_on_completed)
    with pytest.raises(RuntimeError):
        store.finish(p.id, "w", Status.SUCCEEDED, ["o.png"])
    assert store.deliveries_for(p.id) == before
    assert store.get(p.id).status is Status.PROCESSING


def test_finish_needs_a_terminal_status(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    store.claim("w", 30)
    with pytest.raises(ValueError, match="terminal"):
        store.finish(p.id, "w", Status.STARTING)


def test_log_lines_that_come_with_finish_owe_a_logs_event(store: SqlStore) -> None:
    p = store.submit(new_prediction(webhook=HOOK, webhook_events_filter=("logs",)))
    store.claim("w", 30)
    store.finish(p.id, "w", Status.SUCCEEDED, ["o.png"], log="Using seed: 3")
    [logs] = store.deliveries_for(p.id)
    assert logs.event == "logs" and logs.snapshot.logs == "Using seed: 3\n"


def test_snapshots_leave_out_the_canonical_request(store: SqlStore) -> None:
    p = store.submit(
        new_prediction(webhook=HOOK, input={"prompt": "x"}, request={"prompt": "x", "seed": 1})
    )
    store.request_cancel(p.id)
    [completed] = store.deliveries_for(p.id)
    assert completed.snapshot.input == {"prompt": "x"} and completed.snapshot.request == {}
