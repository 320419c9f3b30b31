"""Push wakeups: datagrams between mailboxes, dead peers, the store's notifications."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from dreamserve.jobs.states import Status
from dreamserve.jobs.store import open_store
from dreamserve.jobs.wakeup import CHANGES, SUFFIX, WORK, Mailbox, changed, parse_changed
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
    workers = [open_box(boxes, root, WORK) for _ in range(2)]
    api = open_box(boxes, root, CHANGES)
    sender = open_box(boxes, root, None)
    sender.notify(WORK, "go")
    assert [w.wait(5.0) for w in workers] == [["go"], ["go"]]
    assert api.drain() == []
    sender.notify(CHANGES, changed("abc", "succeeded"))
    assert [parse_changed(m) for m in api.wait(5.0)] == [("abc", "succeeded")]


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
    (root / WORK).mkdir(parents=True)
    dead = root / WORK / f"1-dead{SUFFIX}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(dead))
    sock.close()  # like a kill -9: the file stays, nobody reads it
    live = open_box(boxes, root, WORK)
    open_box(boxes, root, None).notify(WORK)
    assert not dead.exists()
    assert live.wait(5.0) == [""]


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
        store.finish(p.id, "w", Status.SUCCEEDED, ["k"])
        seen = [parse_changed(m) for m in api_box.drain()]
        assert seen == [(p.id, "processing"), (p.id, "processing"), (p.id, "succeeded")]
        q = store.submit(new_prediction())
        worker_box.drain()
        store.request_cancel(q.id)  # a queued one ends at once: the API hears of it
        assert [parse_changed(m) for m in api_box.drain()] == [(q.id, "canceled")]
        r = store.submit(new_prediction())
        worker_box.drain()
        assert store.claim("w", 30.0) is not None
        assert store.release(r.id, "w")  # handed back: the workers hear of it again
        assert worker_box.drain() == [""]
        assert parse_changed(api_box.drain()[-1]) == (r.id, "starting")
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
