"""The records the store keeps and the Store protocol every implementation satisfies.

Small frozen dataclasses cross the process boundary (API <-> store <-> worker); the store
owns every status change (states.check_transition) and is the only shared state.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dreamserve.jobs.states import Status

WEBHOOK_EVENTS = ("start", "output", "logs", "completed")


@dataclass(frozen=True)
class NewPrediction:
    """What a dialect submits: the client's input as sent, and its canonical translation."""

    dialect: str  # "replicate", ...; picks the JSON shape of reads and webhooks
    model: str  # e.g. "bytedance/seedream-4"
    version: str
    input: dict[str, Any]  # exactly what the client sent, echoed back in the prediction
    request: dict[str, Any]  # GenerationRequest.model_dump(): what the worker runs
    owner: str | None = None  # API key id; None when the service runs open
    webhook: str | None = None
    webhook_events_filter: tuple[str, ...] = ("start", "output", "logs", "completed")
    cancel_after: float | None = None  # seconds from created_at, then auto-cancel


@dataclass(frozen=True)
class Prediction:
    id: str
    dialect: str
    model: str
    version: str
    input: dict[str, Any]
    request: dict[str, Any]
    owner: str | None
    status: Status
    created_at: float  # unix seconds
    started_at: float | None = None
    completed_at: float | None = None
    output: tuple[str, ...] = ()  # blob keys, in order; dialects turn them into URLs
    logs: str = ""
    error: str | None = None
    progress: tuple[int, int] | None = None  # (step, total) of the running computation
    metrics: dict[str, float] = field(default_factory=dict)  # predict_time, total_time, ...
    webhook: str | None = None
    webhook_events_filter: tuple[str, ...] = WEBHOOK_EVENTS
    cancel_after: float | None = None
    cancel_requested: bool = False
    attempts: int = 0  # claims so far; > 1 means it was re-run after a worker died

    @property
    def deadline(self) -> float | None:
        return None if self.cancel_after is None else self.created_at + self.cancel_after


@dataclass(frozen=True)
class Claim:
    """A prediction a worker now holds, with the lease it must keep renewing."""

    prediction: Prediction
    worker_id: str
    lease_expires_at: float


@dataclass(frozen=True)
class Page:
    items: tuple[Prediction, ...]
    next_cursor: str | None  # older items
    previous_cursor: str | None  # newer items


@dataclass(frozen=True)
class WebhookDelivery:
    """An owed webhook: a snapshot of the prediction at the event, shaped by its dialect later."""

    id: str
    prediction_id: str
    event: str  # one of WEBHOOK_EVENTS
    url: str
    snapshot: Prediction  # as it was at the event; its `request` is left empty
    attempts: int
    created_at: float
    first_attempt_at: float | None = None  # a completed event retries for minutes after this


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str | None
    name: str
    content_type: str
    size: int
    sha256: str
    blob_key: str
    metadata: dict[str, Any]
    created_at: float
    expires_at: float | None


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    created_at: float
    revoked_at: float | None


class NotFound(Exception):
    pass


class BadCursor(ValueError):
    """A page cursor this service did not issue (a client error, not a server one)."""


class Store(Protocol):
    """Durable predictions. Every method is one transaction; every one is safe to retry."""

    # --- API side
    def submit(self, new: NewPrediction) -> Prediction: ...
    def get(self, prediction_id: str, owner: str | None = None) -> Prediction: ...
    def list(self, owner: str | None, cursor: str | None, limit: int) -> Page: ...
    def request_cancel(self, prediction_id: str, owner: str | None = None) -> Prediction:
        """Cancel now if not yet claimed; else flag it so the worker stops within one step."""
        ...

    # --- worker side
    def claim(self, worker_id: str, lease_seconds: float) -> Claim | None: ...
    def heartbeat(self, prediction_id: str, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the worker lost it (re-claimed elsewhere)."""
        ...

    def progress(
        self, prediction_id: str, worker_id: str, step: int, total: int, log: str | None
    ) -> bool:
        """Record progress/logs; returns whether the worker should cancel."""
        ...

    def should_stop(self, prediction_id: str, worker_id: str) -> bool:
        """The cheap check between steps: cancel asked for, deadline passed, or lease lost."""
        ...

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
        """End a claimed prediction; `log` appends last log lines in the same transaction. A
        worker that no longer holds the lease changes nothing and gets the current row."""
        ...

    def release(self, prediction_id: str, worker_id: str) -> bool:
        """Give a claimed prediction back to the queue (worker shutting down); the claim does not
        count as an attempt. False when the worker no longer held it."""
        ...

    # --- maintenance (any process)
    def recover(self, now: float | None = None) -> int:
        """Re-queue predictions whose lease expired (or fail them after too many tries) and
        cancel unclaimed ones past their Cancel-After deadline. Returns how many it touched."""
        ...

    def release_leases(self) -> int:
        """Re-queue every claimed prediction at once (never failing one: a killed service is not
        its fault) and free deliveries a dead dispatcher held. Only safe while no worker runs:
        serve calls it at start, holding the data-dir lock, so that work re-runs now."""
        ...

    # --- change feed (wakes `Prefer: wait` requests and SSE streams)
    def changes(self, after_seq: int, limit: int) -> tuple[builtins.list[str], int]:
        """Ids of predictions changed after `after_seq`, and the new high-water mark."""
        ...

    def last_seq(self) -> int:
        """The current high-water mark: where a new watcher starts."""
        ...

    def queue_depth(self) -> int: ...
    def get_or_create_meta(self, key: str, factory: Callable[[], str]) -> str:
        """A shared setting (e.g. the webhook secret): the stored value, or factory()'s."""
        ...

    # --- webhook outbox
    def due_deliveries(self, now: float, limit: int) -> builtins.list[WebhookDelivery]:
        """Take up to `limit` due deliveries in send order. Taken rows are not handed out again
        for a minute (unless their outcome is recorded first), so dispatchers never share one."""
        ...

    def delivery_done(self, delivery_id: str) -> None: ...
    def delivery_failed(self, delivery_id: str, next_attempt_at: float | None) -> None:
        """Schedule a retry, or give up when next_attempt_at is None."""
        ...

    # --- files and keys
    def add_file(self, record: FileRecord) -> None: ...
    def get_file(self, file_id: str, owner: str | None = None) -> FileRecord: ...
    def list_files(self, owner: str | None, limit: int) -> builtins.list[FileRecord]: ...
    def delete_file(self, file_id: str, owner: str | None = None) -> FileRecord: ...
    def create_key(self, name: str, token_hash: str) -> ApiKey: ...
    def key_for_hash(self, token_hash: str) -> ApiKey | None:
        """The active key with this hash; None for unknown and revoked keys alike."""
        ...

    def list_keys(self) -> builtins.list[ApiKey]: ...
    def revoke_key(self, key_id: str) -> ApiKey: ...
    def has_keys(self) -> bool: ...
