"""Writing owed webhooks into the outbox, inside the transaction of the state change.

Because the row is written in the same transaction as the change it reports, a crash can never
leave a change without its webhook or a webhook for a change that did not happen.
Replicate sends `output` and `logs` at most once per 500 ms per prediction, `start` and
`completed` always. A throttled event is deferred to the next free slot rather than dropped,
and later events of the same kind refresh its snapshot, so the receiver still sees the latest
state without being sent more than the limit.
"""

from __future__ import annotations

from dreamserve.jobs import rows
from dreamserve.jobs.connector import Session
from dreamserve.jobs.model import Prediction

THROTTLE_SECONDS = 0.5
THROTTLED = frozenset({"output", "logs"})


def wanted(p: Prediction, event: str) -> bool:
    return bool(p.webhook) and event in p.webhook_events_filter


def queue_event(
    tx: Session, p: Prediction, event: str, now: float, throttled_at: float | None
) -> None:
    """Owe `event` for `p` (a snapshot of it as it is now). `throttled_at` is the prediction's
    webhook_throttled_at column as read in this transaction."""
    if not wanted(p, event) or p.webhook is None:
        return
    snapshot = rows.snapshot_json(p)
    due = now
    if event in THROTTLED:
        if throttled_at is not None and now < throttled_at + THROTTLE_SECONDS:
            args = {"prediction_id": p.id, "event": event, "snapshot": snapshot, "now": now}
            if tx.run("refresh_deferred", **args):
                return
            due = throttled_at + THROTTLE_SECONDS
        tx.run("set_throttled_at", id=p.id, at=due)
    tx.run(
        "insert_delivery",
        id="msg_" + rows.new_id(),
        prediction_id=p.id,
        event=event,
        url=p.webhook,
        snapshot=snapshot,
        now=now,
        due=due,
    )


def queue_final(
    tx: Session, p: Prediction, now: float, throttled_at: float | None, logged: bool
) -> None:
    """The terminal events: `logs` (if the end brought log lines) and `output` (if any),
    deferred events flushed with the final state so nothing stale arrives after `completed`,
    then `completed`. This last burst may come faster than the throttle: it is the end."""
    if not p.webhook:
        return
    if logged:
        queue_event(tx, p, "logs", now, throttled_at)
    if p.output:
        queue_event(tx, p, "output", now, throttled_at)
    tx.run("flush_deferred", prediction_id=p.id, snapshot=rows.snapshot_json(p), now=now)
    queue_event(tx, p, "completed", now, throttled_at)
