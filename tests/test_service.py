"""PredictionService and its ChangeWatcher over a real store (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamserve.jobs.model import NewPrediction
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore, open_store
from dreamserve.jobs.wakeup import CHANGES, Mailbox
from dreamserve.service import ChangeWatcher, PredictionService, health_report

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    s = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield s
    s.close()


class CountingStore:
    """The real store, counting change polls: the watcher must not poll for nobody."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.polls = 0

    def changes(self, after_seq: int, limit: int) -> tuple[list[str], int]:
        self.polls += 1
        return self._store.changes(after_seq, limit)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def new(prompt: str = "a fox", owner: str | None = None) -> NewPrediction:
    return NewPrediction(
        dialect="replicate", model="m/n", version="v", input={"prompt": prompt},
        request={"prompt": prompt}, owner=owner,
    )  # fmt: skip


async def finish_soon(store: SqlStore, delay: float = 0.05) -> None:
    await asyncio.sleep(delay)
    claim = await asyncio.to_thread(store.claim, "w", 30.0)
    assert claim is not None
    await asyncio.sleep(delay)
    await asyncio.to_thread(store.finish, claim.prediction.id, "w", Status.SUCCEEDED, ["k"])


async def test_submit_without_wait_answers_at_once(store: SqlStore) -> None:
    service = PredictionService(store)  # type: ignore[arg-type]
    p = await service.submit(new(), None)
    assert p.status == Status.STARTING
    assert store.get(p.id).id == p.id  # durable before the answer
    assert not service.watcher.active


async def test_submit_with_wait_returns_the_terminal_state(store: SqlStore) -> None:
    service = PredictionService(store)  # type: ignore[arg-type]
    worker = asyncio.create_task(finish_soon(store))
    p = await service.submit(new(), 5.0)
    await worker
    assert p.status == Status.SUCCEEDED
    assert p.output == ("k",)


async def test_wait_gives_up_after_the_timeout(store: SqlStore) -> None:
    service = PredictionService(store)  # type: ignore[arg-type]
    p = await service.submit(new(), 0.05)
    assert p.status == Status.STARTING


async def test_the_watcher_costs_nothing_when_nobody_waits(store: SqlStore) -> None:
    counting = CountingStore(store)
    service = PredictionService(counting)  # type: ignore[arg-type]
    await service.submit(new(), 0.05)
    for _ in range(500):  # the watcher notices within one poll that nobody waits any more
        if not service.watcher.active:
            break
        await asyncio.sleep(0.01)
    assert not service.watcher.active
    polls = counting.polls
    assert polls > 0
    await asyncio.sleep(0.1)
    assert counting.polls == polls


async def test_many_waiters_share_one_watcher(store: SqlStore) -> None:
    counting = CountingStore(store)
    service = PredictionService(counting)  # type: ignore[arg-type]
    ids = [(await service.submit(new(f"p{i}"), None)).id for i in range(20)]
    waits = [asyncio.create_task(service.wait_until_done(pid, 5.0)) for pid in ids]
    await asyncio.sleep(0.05)
    polls_while_waiting = counting.polls
    for _ in ids:
        claim = await asyncio.to_thread(store.claim, "w", 30.0)
        assert claim is not None
        await asyncio.to_thread(store.finish, claim.prediction.id, "w", Status.SUCCEEDED, [])
    done = await asyncio.gather(*waits)
    assert all(p.status == Status.SUCCEEDED for p in done)
    # One poll per interval (5 ms) for everyone together, so at most ~11 in those 50 ms; one
    # poll per waiter would be ~200.
    assert polls_while_waiting < 40


async def test_a_waiter_wakes_on_cancel(store: SqlStore) -> None:
    service = PredictionService(store)  # type: ignore[arg-type]
    p = await service.submit(new(), None)
    wait = asyncio.create_task(service.wait_until_done(p.id, 5.0))
    await asyncio.sleep(0.02)
    canceled = await service.cancel(p.id)
    assert canceled.status == Status.CANCELED
    assert (await wait).status == Status.CANCELED


async def test_snapshots_follow_changes_to_the_end(store: SqlStore) -> None:
    service = PredictionService(store)  # type: ignore[arg-type]
    p = await service.submit(new(), None)
    worker = asyncio.create_task(finish_soon(store))
    seen = [s.status async for s in service.snapshots(p.id, heartbeat=5.0)]
    await worker
    assert seen[0] == Status.STARTING
    assert seen[-1] == Status.SUCCEEDED


async def test_owner_scoping_applies_to_waits(store: SqlStore) -> None:
    from dreamserve.jobs.model import NotFound

    service = PredictionService(store)  # type: ignore[arg-type]
    p = await service.submit(new(owner="alice"), None)
    with pytest.raises(NotFound):
        await service.wait_until_done(p.id, 0.1, owner="bob")
    with pytest.raises(NotFound):
        await service.cancel(p.id, owner="bob")


def test_health_report() -> None:
    assert health_report(True, {})[0]
    assert health_report(True, {"workers": 2, "workers_alive": 1})[0]
    assert not health_report(True, {"workers": 2, "workers_alive": 0})[0]
    # Alive but still loading the engine: not ready to take work yet.
    assert not health_report(True, {"workers": 2, "workers_alive": 2, "workers_ready": 0})[0]
    assert health_report(True, {"workers": 2, "workers_alive": 2, "workers_ready": 1})[0]
    ready, body = health_report(False, {"queue_depth": None})
    assert not ready and body["status"] == "unavailable"


# --- push wakeups (jobs/wakeup.py): the watcher hears of changes instead of polling for them


class GetCountingStore(CountingStore):
    def __init__(self, store: SqlStore) -> None:
        super().__init__(store)
        self.gets = 0

    def get(self, prediction_id: str, owner: str | None = None) -> object:
        self.gets += 1
        return self._store.get(prediction_id, owner)


@pytest.fixture
def pushed(tmp_path: Path) -> Iterator[tuple[SqlStore, Mailbox]]:
    """A store that pushes its changes, and the API's mailbox that hears them."""
    root = tmp_path / "w"
    listener, sender = Mailbox(root, CHANGES), Mailbox(root)
    s = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", notifier=sender)
    yield s, listener
    s.close()
    listener.close()
    sender.close()


async def test_a_pushed_finish_wakes_the_waiter_and_the_row_is_read_once(
    pushed: tuple[SqlStore, Mailbox],
) -> None:
    store, mailbox = pushed
    counting = GetCountingStore(store)
    # Polls an hour apart: only a pushed wakeup can end this wait in time.
    watcher = ChangeWatcher(counting, mailbox, interval=3600.0)  # type: ignore[arg-type]
    service = PredictionService(counting, watcher)  # type: ignore[arg-type]
    try:
        worker = asyncio.create_task(finish_soon(store))
        p = await service.submit(new(), 30.0)
        await worker
        assert p.status == Status.SUCCEEDED and p.output == ("k",)
        assert counting.polls == 0
        # The submit's own row stands in for the first read, the claim (processing) does not
        # wake a waiter that waits for the end, and the finish's wakeup brings the committed
        # end state: no read at all, and the same answer a read gives.
        assert counting.gets == 0
        assert p == store.get(p.id)
    finally:
        await watcher.aclose()


async def test_a_lost_wakeup_costs_latency_not_the_answer(
    tmp_path: Path, pushed: tuple[SqlStore, Mailbox]
) -> None:
    _, mailbox = pushed
    quiet = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")  # the same db, pushing nothing
    try:
        watcher = ChangeWatcher(quiet, mailbox, interval=0.02)
        service = PredictionService(quiet, watcher)
        worker = asyncio.create_task(finish_soon(quiet))
        p = await service.submit(new(), 30.0)
        await worker
        assert p.status == Status.SUCCEEDED  # the fallback poll found it
        await watcher.aclose()
    finally:
        quiet.close()


async def test_streams_wake_on_every_pushed_change(pushed: tuple[SqlStore, Mailbox]) -> None:
    store, mailbox = pushed
    watcher = ChangeWatcher(store, mailbox, interval=3600.0)
    service = PredictionService(store, watcher)
    try:
        p = await service.submit(new(), None)
        worker = asyncio.create_task(finish_soon(store))
        seen = [s.status async for s in service.snapshots(p.id, heartbeat=30.0)]
        await worker
        assert seen == [Status.STARTING, Status.PROCESSING, Status.SUCCEEDED]
    finally:
        await watcher.aclose()
