"""Push wakeups: datagrams between mailboxes, dead peers, the store's notifications."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamserve.jobs.states import Status
from dreamserve.jobs.store import open_store
from dreamserve.jobs.wakeup import (
    CHANGES,
    MAX_MESSAGE,
    SUFFIX,
    WORK,
    Mailbox,
    changed,
    parse_changed,
    with_final,
)
from tests.jobs.conftest import new_prediction


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # A short path: UNIX socket paths are limited to ~100 bytes.
    return tmp_path / "w"


@pytest.fixture
def boxes(root: Path) -> Iterator[list[Mailbox]]:
    made: list[Mailbox] = []
    yield made
    for box in made:
        box.close()


def open_box(boxes: list[Mailbox], root: Path, listen: str | None) -> Mailbox:
    box = Mailbox(root, listen)
    boxes.append(box)
    return box


def test_a_notify_reaches_every_listener_on_its_channel_only(
    root: Path, boxes: list[Mailbox]
) -> None:
    worker = open_box(boxes, root, WORK)
    apis = [open_box(boxes, root, CHANGES) for _ in range(2)]
    sender = open_box(boxes, root, None)
    sender.notify(WORK, "go")
    assert worker.wait(5.0) == ["go"]
    assert [api.drain() for api in apis] == [[], []]
    sender.notify(CHANGES, changed("abc", "succeeded"))
    for api in apis:
        assert [parse_changed(m) for m in api.wait(5.0)] == [("abc", "succeeded", None)]
    assert worker.drain() == []


def test_notify_without_listeners_and_wait_without_messages_are_quiet(
    root: Path, boxes: list[Mailbox]
) -> None:
    sender = open_box(boxes, root, None)
    sender.notify(WORK)  # no folder yet: nothing to send to, nothing raised
    listener = open_box(boxes, root, WORK)
    assert listener.wait(0.01) == []


def test_a_dead_listeners_socket_is_removed_by_the_next_sender(
    root: Path, boxes: list[Mailbox]
) -> None:
    (root / CHANGES).mkdir(parents=True)
    dead = root / CHANGES / f"1-dead{SUFFIX}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()  # like a kill -9: the file stays, nobody reads it
    live = open_box(boxes, root, CHANGES)
    open_box(boxes, root, None).notify(CHANGES, "x starting")
    assert not dead.exists()
    assert live.wait(5.0) == ["x starting"]


def test_work_skips_a_dead_worker_for_a_live_one(root: Path, boxes: list[Mailbox]) -> None:
    (root / WORK).mkdir(parents=True)
    dead = [root / WORK / f"{n}-dead{SUFFIX}" for n in range(5)]
    for path in dead:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.close()
    live = open_box(boxes, root, WORK)
    open_box(boxes, root, None).notify(WORK)
    assert live.wait(5.0) == [""]  # however the peers were shuffled


def test_close_removes_the_socket_and_poke_wakes_its_own_wait(
    root: Path, boxes: list[Mailbox]
) -> None:
    box = open_box(boxes, root, WORK)
    assert box.path is not None and box.path.exists()
    box.poke()
    assert box.wait(5.0) == [""]
    path = box.path
    box.close()
    assert not path.exists()


def test_a_path_too_long_for_a_socket_falls_back_to_polling(
    tmp_path: Path, boxes: list[Mailbox]
) -> None:
    deep = tmp_path / ("x" * 120)
    box = open_box(boxes, deep, WORK)
    assert not box.listening
    assert box.wait(0.01) == []
    box.notify(WORK)  # sending into that folder fails quietly too


def test_the_store_pushes_work_and_every_status_change(
    tmp_path: Path, root: Path, boxes: list[Mailbox]
) -> None:
    worker_box = open_box(boxes, root, WORK)
    api_box = open_box(boxes, root, CHANGES)
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", notifier=open_box(boxes, root, None))
    try:
        p = store.submit(new_prediction())
        assert worker_box.wait(5.0) == [""]
        claim = store.claim("w", 30.0)
        assert claim is not None
        store.progress(p.id, "w", 1, 2, "step 1")
        store.finish(p.id, "w", Status.SUCCEEDED, ["k"], log="done")
        seen = [parse_changed(m) for m in api_box.drain()]
        assert [s[:2] for s in seen] == [(p.id, "processing")] * 2 + [(p.id, "succeeded")]
        assert seen[0][2] is None and seen[1][2] is None
        final = seen[2][2]  # the end comes with its committed state: no need to read it
        assert final is not None
        assert with_final(p, final) == store.get(p.id)
        q = store.submit(new_prediction())
        worker_box.drain()
        store.request_cancel(q.id)  # a queued one ends at once: the API hears of it
        (message,) = api_box.drain()
        assert parse_changed(message)[:2] == (q.id, "canceled")
        r = store.submit(new_prediction())
        worker_box.drain()
        assert store.claim("w", 30.0) is not None
        assert store.release(r.id, "w")  # handed back: the workers hear of it again
        assert worker_box.drain() == [""]
        assert parse_changed(api_box.drain()[-1]) == (r.id, "starting", None)
    finally:
        store.close()


def test_a_failing_notifier_never_fails_the_store(tmp_path: Path) -> None:
    class Broken:
        def notify(self, channel: str, message: str = "") -> None:
            raise RuntimeError("boom")

    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", notifier=Broken())
    try:
        p = store.submit(new_prediction())
        assert store.get(p.id).status is Status.STARTING
    finally:
        store.close()


def test_listeners_of_one_process_get_distinct_sockets(root: Path, boxes: list[Mailbox]) -> None:
    a, b = open_box(boxes, root, WORK), open_box(boxes, root, WORK)
    assert a.path != b.path
    assert a.path is not None and a.path.name.startswith(f"{os.getpid()}-")


def test_work_wakes_one_idle_worker_and_busy_ones_step_aside(
    root: Path, boxes: list[Mailbox]
) -> None:
    a, b = open_box(boxes, root, WORK), open_box(boxes, root, WORK)
    sender = open_box(boxes, root, None)
    sender.notify(WORK)
    assert sorted([len(a.drain()), len(b.drain())]) == [0, 1]  # one item, one worker
    assert a.set_idle(False) and not a.set_idle(False)  # changed once, then already busy
    for _ in range(5):
        sender.notify(WORK)
    assert a.drain() == [] and len(b.drain()) == 5  # only the idle one is asked
    a.poke()  # a busy mailbox still hears its own messages
    assert a.wait(5.0) == [""]
    assert a.set_idle(True)
    assert b.set_idle(False)
    sender.notify(WORK)
    assert a.wait(5.0) == [""]
    path = b.path
    assert path is not None and path.parent.name == WORK + ".busy"
    b.close()
    assert not path.exists()


def test_changes_reach_every_listener_busy_or_not(root: Path, boxes: list[Mailbox]) -> None:
    apis = [open_box(boxes, root, CHANGES) for _ in range(2)]
    assert not apis[0].set_idle(False)  # only WORK listeners step aside
    open_box(boxes, root, None).notify(CHANGES, "x succeeded")
    assert [api.wait(5.0) for api in apis] == [["x succeeded"], ["x succeeded"]]


def test_dead_busy_sockets_are_swept_when_a_worker_starts(root: Path, boxes: list[Mailbox]) -> None:
    busy = root / (WORK + ".busy")
    busy.mkdir(parents=True)
    dead = busy / f"1-dead{SUFFIX}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()
    live = open_box(boxes, root, WORK)
    assert live.set_idle(False)
    open_box(boxes, root, WORK)  # a new worker starts: the dead one goes, the live one stays
    assert not dead.exists()
    assert live.path is not None and live.path.exists()
    assert live.drain() == []  # and the sweep did not wake it


def test_an_end_state_too_big_for_one_message_is_left_out(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        p = store.submit(new_prediction())
        assert store.claim("w", 30.0) is not None
        done = store.finish(p.id, "w", Status.FAILED, error="x" * MAX_MESSAGE)
    finally:
        store.close()
    message = changed(done.id, done.status, done)
    assert parse_changed(message) == (done.id, "failed", None)  # the waiter reads it instead
    assert parse_changed(f"{done.id} failed {{not json")[2] is None
