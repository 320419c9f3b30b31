"""The prediction service every dialect calls: submit, get, list, cancel, wait and stream.

Dialects translate wire formats; what they share lives here. Store calls are synchronous (one
short SQL transaction each), so they run in the default thread pool and never block the event
loop. Waiting (`Prefer: wait`) and streaming (SSE) do not poll the store per request: one
`ChangeWatcher` per process wakes only the waiters of the predictions that changed, from the
workers' push wakeups (jobs/wakeup.py) when it has a mailbox, and from polling
`store.changes()` (a fallback for lost wakeups) while anybody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from dreamserve.jobs.model import NewPrediction, Page, Prediction, Store
from dreamserve.jobs.states import Status
from dreamserve.jobs.wakeup import Mailbox, parse_changed, with_final

log = logging.getLogger("dreamserve.service")

WATCH_INTERVAL = 0.005  # seconds between change polls while someone waits (no push wakeups)
FALLBACK_INTERVAL = 0.1  # with push wakeups polling only catches a lost message
WATCH_LINGER = 0.5  # seconds the poll loop outlives its last user: sequential waits reuse it
WATCH_BATCH = 10_000  # ids per changes() call
WATCH_ERROR_BACKOFF = 0.5  # seconds to pause after a failed poll (e.g. database busy)
RECENT_CHANGES = 4096  # ids remembered for waiters that register just after a change
CANCEL_SETTLE = 2.0  # seconds a cancel request waits for the worker to stop (one step)
STREAM_HEARTBEAT = 15.0  # seconds between snapshots of an unchanged, still running prediction
TERMINAL = frozenset(s.value for s in Status if s.terminal)


class Waiter:
    """One subscriber: its event, what wakes it, and the end state a wakeup brought."""

    __slots__ = ("event", "terminal_only", "final")

    def __init__(self, terminal_only: bool) -> None:
        self.event = asyncio.Event()
        self.terminal_only = terminal_only
        self.final: dict[str, Any] | None = None  # committed end state a wakeup brought


class ChangeWatcher:
    """Wakes the waiters of changed predictions: from push wakeups when a mailbox is given,
    and from one polling task per process that catches whatever a lost wakeup missed.

    The polling task runs only while someone uses the watcher (and WATCH_LINGER after): with
    nobody waiting it exits and costs nothing. A user first registers, then the watcher
    establishes its baseline sequence number, and only then does the user read the
    prediction (or submit it); so no change can slip between that read and the first poll.
    Changes are also remembered (`may_have_ended`) for a waiter that registers only after
    the change happened, which lets `submit` skip re-reading the row it just wrote.
    """

    def __init__(
        self, store: Store, mailbox: Mailbox | None = None, interval: float | None = None
    ) -> None:
        self._store = store
        self._mailbox = mailbox if mailbox is not None and mailbox.listening else None
        if interval is None:
            interval = WATCH_INTERVAL if self._mailbox is None else FALLBACK_INTERVAL
        self._interval = interval
        self._waiters: dict[str, set[Waiter]] = {}
        # id -> whether its latest known change may be terminal (None: unknown, so maybe).
        self._recent: OrderedDict[str, bool | None] = OrderedDict()
        self._users = 0
        self._linger_until = 0.0
        self._seq: int | None = None  # high-water mark of changes already dispatched
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> bool:
        return self._task is not None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[None]:
        """Keep the watcher running (its baseline set) for the duration of the block."""
        self._users += 1
        try:
            self._attach()
            await self._ensure_running()
            yield
        finally:
            self._users -= 1
            self._linger_until = time.monotonic() + WATCH_LINGER

    @contextlib.asynccontextmanager
    async def watching(
        self, prediction_id: str, terminal_only: bool = False
    ) -> AsyncIterator[Waiter]:
        """A waiter whose event is set whenever `prediction_id` changes (clear it before each
        read); with `terminal_only`, a pushed change to a non-terminal status does not set it."""
        waiter = Waiter(terminal_only)
        self._waiters.setdefault(prediction_id, set()).add(waiter)
        try:
            async with self.session():
                yield waiter
        finally:
            waiters = self._waiters.get(prediction_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[prediction_id]

    async def aclose(self) -> None:
        """Stop polling and reading wakeups now (at shutdown), whoever still waits."""
        if self._reader_loop is not None and self._mailbox is not None:
            with contextlib.suppress(Exception):
                self._reader_loop.remove_reader(self._mailbox.fileno())
            self._reader_loop = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def may_have_ended(self, prediction_id: str) -> bool:
        """Whether a change seen since the baseline may have made it terminal."""
        return self._recent.get(prediction_id, False) is not False

    def _attach(self) -> None:
        """Read pushed wakeups on the running loop (again when tests switch loops)."""
        if self._mailbox is None:
            return
        loop = asyncio.get_running_loop()
        if self._reader_loop is loop:
            return
        if self._reader_loop is not None and not self._reader_loop.is_closed():
            with contextlib.suppress(Exception):
                self._reader_loop.remove_reader(self._mailbox.fileno())
        loop.add_reader(self._mailbox.fileno(), self._on_wakeups)
        self._reader_loop = loop

    def _on_wakeups(self) -> None:
        assert self._mailbox is not None
        for message in self._mailbox.drain():
            prediction_id, status, final = parse_changed(message)
            if prediction_id:
                self._note(prediction_id, status in TERMINAL if status else None, final)

    def _note(
        self, prediction_id: str, terminal: bool | None, final: dict[str, Any] | None = None
    ) -> None:
        """Remember the change and wake who it concerns; `terminal` None means unknown."""
        known = self._recent.pop(prediction_id, False)
        # A later non-terminal wakeup must not hide an earlier one that may have ended it.
        self._recent[prediction_id] = known if terminal is False else terminal
        if len(self._recent) > RECENT_CHANGES:
            self._recent.popitem(last=False)
        for waiter in self._waiters.get(prediction_id, ()):
            if terminal is not False or not waiter.terminal_only:
                waiter.final = final if terminal else None
                waiter.event.set()

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
        # What was remembered before this baseline may be stale; what comes after is not.
        self._recent.clear()
        ready.set_result(None)
        # The check and the exit happen in one step of the loop, so a subscriber that comes
        # later always finds _task None and starts a fresh task.
        while self._waiters or self._users or time.monotonic() < self._linger_until:
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
            self._note(prediction_id, None)


class PredictionService:
    """What the HTTP layer does with predictions, independent of any wire format."""

    def __init__(self, store: Store, watcher: ChangeWatcher | None = None) -> None:
        self.store = store
        self.watcher = watcher or ChangeWatcher(store)

    async def submit(self, new: NewPrediction, wait: float | None = None) -> Prediction:
        """Persist the prediction (durable before we answer); with `wait`, block up to that
        many seconds (counted from now) for it to finish."""
        started = time.monotonic()
        if wait is None:
            return await asyncio.to_thread(self.store.submit, new)
        # Watching from before the write means any change to the new row is seen, so the row
        # just written need not be read back before waiting.
        async with self.watcher.session():
            prediction = await asyncio.to_thread(self.store.submit, new)
            remaining = wait - (time.monotonic() - started)
            return await self.wait_until_done(prediction.id, remaining, new.owner, prediction)

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
        self,
        prediction_id: str,
        timeout: float,
        owner: str | None = None,
        known: Prediction | None = None,
    ) -> Prediction:
        """The prediction once terminal, or as it is after `timeout` seconds.

        `known` is the prediction as read inside a watcher session that is still open: it
        stands in for the first read unless a change since may have ended it, and with the
        end state a wakeup brings it stands in for the last read too.
        """
        deadline = time.monotonic() + timeout
        submitted = known
        async with self.watcher.watching(prediction_id, terminal_only=True) as waiter:
            if known is not None and self.watcher.may_have_ended(prediction_id):
                known = None
            while True:
                waiter.event.clear()
                final, waiter.final = waiter.final, None
                prediction = (
                    known or _ended(submitted, final) or await self.get(prediction_id, owner)
                )
                known = None
                remaining = deadline - time.monotonic()
                if prediction.status.terminal or remaining <= 0:
                    return prediction
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), remaining)

    async def snapshots(
        self, prediction_id: str, owner: str | None = None, heartbeat: float = STREAM_HEARTBEAT
    ) -> AsyncIterator[Prediction]:
        """The prediction now and after every change, ending with its terminal state.

        Also yields (an unchanged snapshot) every `heartbeat` seconds so a stream can send a
        keep-alive through proxies that close idle connections.
        """
        async with self.watcher.watching(prediction_id) as waiter:
            while True:
                waiter.event.clear()
                prediction = await self.get(prediction_id, owner)
                yield prediction
                if prediction.status.terminal:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.event.wait(), heartbeat)


def _ended(submitted: Prediction | None, final: dict[str, Any] | None) -> Prediction | None:
    """The submitted prediction in the end state a wakeup brought; None to read it instead."""
    if submitted is None or final is None:
        return None
    try:
        return with_final(submitted, final)
    except (KeyError, TypeError, ValueError, IndexError):  # not what changed() writes: read
        log.warning("malformed end state in a wakeup for %s; reading it", submitted.id)
        return None


def health_report(store_ok: bool, extra: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """Readiness: the store answers and, when the process runs workers, one is ready to take
    work (alive, its engine loaded; `workers_ready`, or `workers_alive` where not known)."""
    workers = int(extra.get("workers", 0) or 0)
    alive = int(extra.get("workers_alive", workers) or 0)
    able = int(extra.get("workers_ready", alive) or 0)
    ready = store_ok and (workers == 0 or able > 0)
    return ready, {"status": "ok" if ready else "unavailable", "store": store_ok, **extra}
