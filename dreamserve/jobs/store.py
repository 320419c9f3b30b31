"""SqlStore: the one Store implementation, over a Connector (SQLite now, PostgreSQL later).

Every public method is one short transaction; each status change goes through
states.check_transition, bumps the change sequence (the API's watcher wakes waiters from it) and
queues its webhooks in the same transaction (outbox.py). After the commit, an optional notifier
pushes a wakeup (jobs/wakeup.py): WORK for something to claim, CHANGES for a changed prediction.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from dreamserve.jobs import outbox, rows
from dreamserve.jobs.connector import Connector, Row, Session, connect
from dreamserve.jobs.model import Claim, NewPrediction, NotFound, Page, Prediction
from dreamserve.jobs.states import Status, check_transition
from dreamserve.jobs.store_records import RecordsMixin
from dreamserve.jobs.wakeup import CHANGES, WORK, Notifier, changed

log = logging.getLogger("dreamserve.store")

SCHEMA_VERSION = 1


class SchemaTooNew(RuntimeError):
    pass


class SqlStore(RecordsMixin):
    def __init__(
        self, db: Connector, max_attempts: int = 3, notifier: Notifier | None = None
    ) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.notifier = notifier
        self._create_schema()

    def _notify(
        self,
        work: bool = False,
        changes: Sequence[tuple[str, str]] = (),
        final: Prediction | None = None,
    ) -> None:
        """Push wakeups after a commit; only ever latency is at stake, so nothing raises.
        `final`: a prediction that just ended, announced with its committed state."""
        if self.notifier is None:
            return
        try:
            for prediction_id, status in changes:
                self.notifier.notify(CHANGES, changed(prediction_id, status))
            if final is not None:
                self.notifier.notify(CHANGES, changed(final.id, final.status, final))
            if work:
                self.notifier.notify(WORK)
        except Exception:
            log.exception("push wakeup failed; listeners fall back to polling")

    def _create_schema(self) -> None:
        self.db.script("schema")
        with self.db.write() as tx:
            row = tx.one("schema_version")
            if row is None:
                tx.run("set_schema_version", version=SCHEMA_VERSION)
            elif row["version"] > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"the store has schema {row['version']}; this dreamserve knows up to "
                    f"{SCHEMA_VERSION}: upgrade dreamserve"
                )

    def close(self) -> None:
        self.db.close()

    # --- API side

    def submit(self, new: NewPrediction) -> Prediction:
        now = time.time()
        params: dict[str, Any] = {
            "id": rows.new_id(),
            "dialect": new.dialect,
            "model": new.model,
            "version": new.version,
            "input": rows.dumps(new.input),
            "request": rows.dumps(new.request),
            "owner": new.owner,
            "created_at": now,
            "webhook": new.webhook,
            "webhook_events_filter": rows.dumps(list(new.webhook_events_filter)),
            "cancel_after": new.cancel_after,
            "deadline": None if new.cancel_after is None else now + new.cancel_after,
        }
        with self.db.write() as tx:
            row = tx.one("insert_prediction", seq=_next_seq(tx), **params)
        self._notify(work=True)
        assert row is not None
        return rows.prediction(row)

    def get(self, prediction_id: str, owner: str | None = None) -> Prediction:
        with self.db.read() as tx:
            row = tx.one("get_prediction", id=prediction_id)
        return rows.prediction(_owned(row, prediction_id, owner))

    def list(self, owner: str | None, cursor: str | None, limit: int) -> Page:
        """Newest first. `next_cursor` pages to older items, `previous_cursor` to newer ones."""
        limit = max(1, limit)
        if cursor is None:
            direction, created_at, last_id = rows.OLDER, float("inf"), ""
        else:
            direction, created_at, last_id = rows.decode_cursor(cursor)
        query = "list_older" if direction == rows.OLDER else "list_newer"
        if owner is not None:
            query += "_of_owner"
        with self.db.read() as tx:
            found = tx.all(query, owner=owner, created_at=created_at, id=last_id, limit=limit + 1)
        more = len(found) > limit
        items = [rows.prediction(r) for r in found[:limit]]
        if direction == rows.NEWER:
            items.reverse()
        if not items:
            return Page((), None, None)
        older = more if direction == rows.OLDER else True
        newer = cursor is not None if direction == rows.OLDER else more
        first, last = items[0], items[-1]
        return Page(
            tuple(items),
            rows.encode_cursor(rows.OLDER, last.created_at, last.id) if older else None,
            rows.encode_cursor(rows.NEWER, first.created_at, first.id) if newer else None,
        )

    def request_cancel(self, prediction_id: str, owner: str | None = None) -> Prediction:
        now = time.time()
        with self.db.write() as tx:
            row = _owned(tx.one("get_prediction", id=prediction_id), prediction_id, owner)
            status = Status(row["status"])
            canceled = None
            if status is Status.STARTING:
                canceled = self._complete(tx, row, Status.CANCELED, now)
            elif status is Status.PROCESSING and not row["cancel_requested"]:
                flagged = tx.one("flag_cancel", seq=_next_seq(tx), id=prediction_id)
                assert flagged is not None
                row = flagged
        if canceled is None:
            return rows.prediction(row)
        self._notify(final=canceled)
        return canceled

    # --- worker side

    def claim(self, worker_id: str, lease_seconds: float) -> Claim | None:
        now = time.time()
        # A plain read first: idle workers polling must not take the write lock.
        with self.db.read() as tx:
            if tx.one("any_claimable", now=now) is None:
                return None
        lease = now + lease_seconds
        with self.db.write() as tx:
            args = {"worker_id": worker_id, "lease": lease, "now": now}
            row = tx.one("claim_next", seq=_next_seq(tx), **args)
            if row is None:
                return None
            check_transition(Status.STARTING, Status.PROCESSING)
            p = rows.prediction(row)
            if row["started_at"] == now:  # the first claim: Replicate's `start` event
                outbox.queue_event(tx, p, "start", now, row["webhook_throttled_at"])
        self._notify(changes=[(p.id, p.status.value)])
        return Claim(p, worker_id, lease)

    def heartbeat(self, prediction_id: str, worker_id: str, lease_seconds: float) -> bool:
        lease = time.time() + lease_seconds
        with self.db.write() as tx:
            return tx.run("heartbeat", id=prediction_id, worker_id=worker_id, lease=lease) > 0

    def progress(
        self, prediction_id: str, worker_id: str, step: int, total: int, log: str | None
    ) -> bool:
        now = time.time()
        line = _line(log)
        args = {"id": prediction_id, "worker_id": worker_id, "step": step, "total": total}
        with self.db.write() as tx:
            row = tx.one("record_progress", seq=_next_seq(tx), log=line, **args)
            if row is None:
                return True  # the lease is gone: whoever holds it now does the work
            # The full row (input can be megabytes of data URLs) only when a webhook needs it.
            if line and row["webhook"] and "logs" in rows.events_filter(row):
                full = tx.one("get_prediction", id=prediction_id)
                assert full is not None
                p = rows.prediction(full)
                outbox.queue_event(tx, p, "logs", now, full["webhook_throttled_at"])
        self._notify(changes=[(prediction_id, Status.PROCESSING.value)])
        return _stop(row, now)

    def should_stop(self, prediction_id: str, worker_id: str) -> bool:
        with self.db.read() as tx:
            row = tx.one("stop_state", id=prediction_id)
        if row is None or row["status"] != Status.PROCESSING or row["worker_id"] != worker_id:
            return True
        return _stop(row, time.time())

    def finish(
        self,
        prediction_id: str,
        worker_id: str,
        status: Status,
        output: Sequence[str] = (),
        error: str | None = None,
        metrics: dict[str, float] | None = None,
        log: str | None = None,
    ) -> Prediction:
        if not status.terminal:
            raise ValueError(f"finish needs a terminal status, not {status}")
        now = time.time()
        with self.db.write() as tx:
            row = tx.one("get_prediction", id=prediction_id)
            if row is None:
                raise NotFound(prediction_id)
            if row["status"] != Status.PROCESSING or row["worker_id"] != worker_id:
                return rows.prediction(row)  # lost the lease: the current holder decides
            done = self._complete(tx, row, status, now, output, error, metrics, _line(log))
        self._notify(final=done)
        return done

    def release(self, prediction_id: str, worker_id: str) -> bool:
        now = time.time()
        with self.db.write() as tx:
            row = tx.one("get_prediction", id=prediction_id)
            if row is None or row["status"] != Status.PROCESSING or row["worker_id"] != worker_id:
                return False
            status = self._requeue_or_end(tx, row, now, refund=1, may_fail=False)
        self._notify(status is Status.STARTING, [(prediction_id, status.value)])
        return True

    # --- maintenance

    def recover(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        checks = ("expired_leases", "overdue_unclaimed", "overdue_claimed")
        with self.db.read() as tx:  # the common case, nothing to do, takes no write lock
            if not any(tx.all(name, now=now) for name in checks):
                return 0
        changes: builtins.list[tuple[str, str]] = []
        with self.db.write() as tx:
            expired = tx.all("expired_leases", now=now)
            for row in expired:
                status = self._requeue_or_end(tx, row, now, refund=0, may_fail=True)
                changes.append((row["id"], status.value))
            unclaimed = tx.all("overdue_unclaimed", now=now)
            for row in unclaimed:
                self._complete(tx, row, Status.CANCELED, now, error=DEADLINE_ERROR)
                changes.append((row["id"], Status.CANCELED.value))
            # The worker sees the flag at its next step and finishes the prediction canceled.
            claimed = tx.all("overdue_claimed", now=now)
            for row in claimed:
                tx.run("flag_cancel", seq=_next_seq(tx), id=row["id"])
        self._notify(any(s == Status.STARTING.value for _, s in changes), changes)
        return len(expired) + len(unclaimed) + len(claimed)

    def release_leases(self) -> int:
        """The claim counts as an attempt, but a killed service is not the prediction's fault:
        it is always re-run (max_attempts guards against predictions that kill their worker,
        which recover() sees as an expired lease). Deliveries a dead dispatcher had taken are
        due again at once too."""
        now = time.time()
        with self.db.write() as tx:
            held = tx.all("all_leases")
            statuses = [self._requeue_or_end(tx, r, now, refund=0, may_fail=False) for r in held]
            tx.run("release_deliveries")
        self._notify(Status.STARTING in statuses)
        return len(held)

    def _requeue_or_end(
        self, tx: Session, row: Row, now: float, refund: int, may_fail: bool
    ) -> Status:
        """A claim ended without a result: re-run it, unless it was to be canceled anyway or
        (`may_fail`) its workers keep dying: then it fails with the reason, not silently.
        `refund` takes the claim back off the attempt count."""
        p = rows.prediction(row)
        if p.cancel_requested or (p.deadline is not None and now >= p.deadline):
            error = DEADLINE_ERROR if not p.cancel_requested else None
            return self._complete(tx, row, Status.CANCELED, now, error=error).status
        if may_fail and p.attempts >= self.max_attempts:
            error = f"worker died while running this prediction ({p.attempts} attempts)"
            return self._complete(tx, row, Status.FAILED, now, error=error).status
        check_transition(p.status, Status.STARTING)
        tx.run("requeue", seq=_next_seq(tx), id=p.id, refund=refund)
        return Status.STARTING

    def _complete(
        self,
        tx: Session,
        row: Row,
        status: Status,
        now: float,
        output: Sequence[str] = (),
        error: str | None = None,
        metrics: dict[str, float] | None = None,
        log: str = "",
    ) -> Prediction:
        check_transition(Status(row["status"]), status)
        merged = dict(metrics or {})
        if row["attempt_started_at"] is not None:
            merged["predict_time"] = now - row["attempt_started_at"]
        merged["total_time"] = now - row["created_at"]
        done = tx.one(
            "finish_prediction",
            seq=_next_seq(tx),
            id=row["id"],
            status=status.value,
            output=rows.dumps(list(output)),
            error=error,
            metrics=rows.dumps(merged),
            log=log,
            now=now,
        )
        assert done is not None
        p = rows.prediction(done)
        outbox.queue_final(tx, p, now, done["webhook_throttled_at"], logged=bool(log))
        return p

    # --- change feed

    def changes(self, after_seq: int, limit: int) -> tuple[builtins.list[str], int]:
        with self.db.read() as tx:
            found = tx.all("changes", after=after_seq, limit=limit)
        return [r["id"] for r in found], (found[-1]["seq"] if found else after_seq)

    def last_seq(self) -> int:
        with self.db.read() as tx:
            row = tx.one("last_seq")
        return int(row["value"]) if row else 0

    def queue_depth(self) -> int:
        with self.db.read() as tx:
            row = tx.one("queue_depth")
        return int(row["n"]) if row else 0

    def get_or_create_meta(self, key: str, factory: Callable[[], str]) -> str:
        with self.db.read() as tx:
            row = tx.one("get_meta", key=key)
        if row is not None:
            return str(row["value"])
        value = factory()
        with self.db.write() as tx:  # two processes may race here: the first write wins
            tx.run("put_meta_if_absent", key=key, value=value)
            row = tx.one("get_meta", key=key)
        assert row is not None
        return str(row["value"])


DEADLINE_ERROR = "canceled: the Cancel-After deadline passed"


def _next_seq(tx: Session) -> int:
    row = tx.one("next_seq")
    assert row is not None
    return int(row["value"])


def _stop(row: Row, now: float) -> bool:
    """A cancel was asked for, or the Cancel-After deadline passed."""
    return bool(row["cancel_requested"]) or (row["deadline"] is not None and now >= row["deadline"])


def _line(log: str | None) -> str:
    """Log text as stored: newline-terminated lines."""
    return "" if not log else log if log.endswith("\n") else log + "\n"


def _owned(row: Row | None, prediction_id: str, owner: str | None) -> Row:
    """Another owner's prediction is indistinguishable from a missing one."""
    if row is None or (owner is not None and row["owner"] != owner):
        raise NotFound(prediction_id)
    return row


def open_store(url: str, max_attempts: int = 3, notifier: Notifier | None = None) -> SqlStore:
    """Open (and create or upgrade) the store at `url`, e.g. "sqlite:///data/dreamserve.db"."""
    return SqlStore(connect(url), max_attempts=max_attempts, notifier=notifier)
