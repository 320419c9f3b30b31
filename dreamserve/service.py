"""The prediction service every dialect calls: submit, get, list, cancel, wait and stream.

Dialects translate wire formats; what they share lives here. Store calls are synchronous (one
short SQL transaction each), so they run in the default thread pool and never block the event
loop. Waiting (`Prefer: wait`) and streaming (SSE) do not poll the store per request: one
`ChangeWatcher` per process polls `store.changes()` and wakes only the waiters of the
predictions that changed, and it stops polling as soon as nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from dreamserve.jobs.model import NewPrediction, Page, Prediction, Store

log = logging.getLogger("dreamserve.service")

WATCH_INTERVAL = 0.005  # seconds between change polls while someone waits
WATCH_BATCH = 10_000  # ids per changes() call
WATCH_ERROR_BACKOFF = 0.5  # seconds to pause after a failed poll (e.g. database busy)
CANCEL_SETTLE = 2.0  # seconds a cancel request waits for the worker to stop (one step)
STREAM_HEARTBEAT = 15.0  # seconds between snapshots of an unchanged, still running prediction


class ChangeWatcher:
    """One polling task per process that wakes the waiters of changed predictions.

    The task runs only while someone is subscribed: with no waiters it exits and costs
    nothing. A subscriber first registers, then the watcher establishes its baseline sequence
    number, and only then does the subscriber read the prediction; so no change can slip
    between that read and the first poll.
    """

    def __init__(self, store: Store, interval: float = WATCH_INTERVAL) -> None:
        self._store = store
        self._interval = interval
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._seq: int | None = None  # high-water mark of changes already dispatched
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    @property
    def active(self) -> bool:
        return self._task is not None

    @contextlib.asynccontextmanager
    async def watching(self, prediction_id: str) -> AsyncIterator[asyncio.Event]:
        """An event set whenever `prediction_id` changes (clear it before each read)."""
        event = asyncio.Event()
        self._waiters.setdefault(prediction_id, set()).add(event)
        try:
            await self._ensure_running()
            yield event
        finally:
            waiters = self._waiters.get(prediction_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[prediction_id]

    async def _ensure_running(self) -> None:
        if self._task is None:
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(self._ready), name="change-watcher")
        assert self._ready is not None
        # shield: one subscriber giving up must not cancel the baseline others await.
        await asyncio.shield(self._ready)

    async def _run(self, ready: asyncio.Future[None]) -> None:
        try:
            # Start at the head: changes made while nobody waited concern nobody.
            self._seq = await asyncio.to_thread(self._store.last_seq)
        except Exception as exc:  # the subscribers see the error; the next one retries
            self._task = None
            ready.set_exception(exc)
            return
        ready.set_result(None)
        # The check and the exit happen in one step of the loop, so a subscriber that comes
        # later always finds _task None and starts a fresh task.
        while self._waiters:
            await asyncio.sleep(self._interval)
            await self._poll()
        self._task = None

    async def _poll(self) -> None:
        assert self._seq is not None
        try:
            ids, seq = await asyncio.to_thread(self._store.changes, self._seq, WATCH_BATCH)
        except Exception:
            log.exception("polling the store for changes failed; retrying")
            await asyncio.sleep(WATCH_ERROR_BACKOFF)
            return
        self._seq = seq
        for prediction_id in ids:
            for event in self._waiters.get(prediction_id, ()):
                event.set()


class PredictionService:
    """What the HTTP layer does with predictions, independent of any wire format."""

    def __init__(self, store: Store, watcher: ChangeWatcher | None = None) -> None:
        self.store = store
        self.watcher = watcher or ChangeWatcher(store)

    async def submit(self, new: NewPrediction, wait: float | None = None) -> Prediction:
        """Persist the prediction (durable before we answer); with `wait`, block up to that
        many seconds (counted from now) for it to finish."""
        started = time.monotonic()
        prediction = await asyncio.to_thread(self.store.submit, new)
        if wait is None:
            return prediction
        remaining = wait - (time.monotonic() - started)
        return await self.wait_until_done(prediction.id, remaining, new.owner)

    async def get(self, prediction_id: str, owner: str | None = None) -> Prediction:
        return await asyncio.to_thread(self.store.get, prediction_id, owner)

    async def list(self, owner: str | None, cursor: str | None, limit: int) -> Page:
        return await asyncio.to_thread(self.store.list, owner, cursor, limit)

    async def cancel(
        self, prediction_id: str, owner: str | None = None, settle: float = CANCEL_SETTLE
    ) -> Prediction:
        """Request the cancel; a running one stops within one step, so give it that long
        to answer with the final state rather than a still-processing snapshot."""
        prediction = await asyncio.to_thread(self.store.request_cancel, prediction_id, owner)
        if prediction.status.terminal or settle <= 0:
            return prediction
        return await self.wait_until_done(prediction_id, settle, owner)

    async def wait_until_done(
        self, prediction_id: str, timeout: float, owner: str | None = None
    ) -> Prediction:
        """The prediction once terminal, or as it is after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        async with self.watcher.watching(prediction_id) as changed:
            while True:
                changed.clear()
                prediction = await self.get(prediction_id, owner)
                remaining = deadline - time.monotonic()
                if prediction.status.terminal or remaining <= 0:
                    return prediction
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)

    async def snapshots(
        self, prediction_id: str, owner: str | None = None, heartbeat: float = STREAM_HEARTBEAT
    ) -> AsyncIterator[Prediction]:
        """The prediction now and after every change, ending with its terminal state.

        Also yields (an unchanged snapshot) every `heartbeat` seconds so a stream can send a
        keep-alive through proxies that close idle connections.
        """
        async with self.watcher.watching(prediction_id) as changed:
            while True:
                changed.clear()
                prediction = await self.get(prediction_id, owner)
                yield prediction
                if prediction.status.terminal:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), heartbeat)


def health_report(store_ok: bool, extra: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Readiness: the store answers and, when the process runs workers, one is alive."""
    workers = int(extra.get("workers", 0) or 0)
    alive = int(extra.get("workers_alive", workers) or 0)
    ready = store_ok and (workers == 0 or alive > 0)
    return ready, {"status": "ok" if ready else "unavailable", "store": store_ok, **extra}
