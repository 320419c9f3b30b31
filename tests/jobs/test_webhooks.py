"""Signatures, the retry policy, and the dispatcher against a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from dreamserve.jobs import webhooks
from dreamserve.jobs.model import Prediction, WebhookDelivery
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore
from tests.jobs.conftest import new_prediction
from tests.support.live import free_port
from tests.support.receiver import webhook_receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    # The example published with the Standard Webhooks spec, which Replicate follows.
    body = b'{"test": 2432232314}'
    sig = webhooks.sign(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_only_an_untampered_fresh_delivery() -> None:
    body = b'{"id":"abc"}'
    now = time.time()
    headers = webhooks.signed_headers(SECRET, "msg_1", body, now)
    assert webhooks.verify(SECRET, headers, body, now=now)
    upper = {k.upper(): v for k, v in headers.items()}
    assert webhooks.verify(SECRET, upper, body, now=now)
    assert not webhooks.verify(SECRET, headers, body + b" ", now=now)
    assert not webhooks.verify("whsec_" + "QUJD", headers, body, now=now)
    assert not webhooks.verify(SECRET, headers, body, now=now + 301)
    assert not webhooks.verify(SECRET, {**headers, "webhook-id": "msg_2"}, body, now=now)
    assert not webhooks.verify(SECRET, {}, body, now=now)
    rotated = {**headers, "webhook-signature": "v1,b2xk " + headers["webhook-signature"]}
    assert webhooks.verify(SECRET, rotated, body, now=now)


def _delivery(event: str, attempts: int, first: float | None) -> WebhookDelivery:
    snap = Prediction("p", "replicate", "m", "v", {}, {}, None, Status.SUCCEEDED, 0.0)
    return WebhookDelivery("msg", "p", event, "http://x", snap, attempts, 0.0, first)


def test_completed_retries_for_ten_minutes_others_give_up_soon() -> None:
    rng = random.Random(1)
    now = 1000.0
    first_retry = webhooks.next_attempt_at(_delivery("completed", 0, None), now, rng)
    assert first_retry is not None and now + 0.5 <= first_retry <= now + 1.0
    late = webhooks.next_attempt_at(_delivery("completed", 12, now - 599), now, rng)
    assert late is not None and late - now <= 60  # capped
    assert webhooks.next_attempt_at(_delivery("completed", 13, now - 600), now, rng) is None
    assert webhooks.next_attempt_at(_delivery("logs", 2, now - 3), now, rng) is not None
    assert webhooks.next_attempt_at(_delivery("logs", 3, now - 7), now, rng) is None


def _render(p: Prediction) -> dict[str, Any]:
    return {"id": p.id, "status": p.status.value, "output": list(p.output)}


def _owe(store: SqlStore, url: str, events: tuple[str, ...] = ("completed",)) -> str:
    p = store.submit(new_prediction(webhook=url, webhook_events_filter=events))
    store.claim("w", 30)
    store.finish(p.id, "w", Status.SUCCEEDED, ["o.png"])
    return p.id


async def _dispatch_until(store: SqlStore, done: Any, timeout: float = 10.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(webhooks.run_dispatcher(store, _render, SECRET, stop))
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await task


def test_dispatcher_retries_until_the_receiver_recovers(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_START", 0.05)
    with webhook_receiver(fail_first=2) as receiver:
        pid = _owe(store, receiver.url, ("start", "completed"))
        asyncio.run(_dispatch_until(store, lambda: len(receiver.accepted()) == 2))
        got = receiver.deliveries
    assert [d.status_sent for d in got[:2]] == [500, 500]
    accepted = {d.json["status"]: d for d in got if d.status_sent == 200}
    assert sorted(accepted) == ["processing", "succeeded"]  # retries may reorder them
    assert accepted["succeeded"].json == {"id": pid, "status": "succeeded", "output": ["o.png"]}
    for d in got:
        assert webhooks.verify(SECRET, d.headers, d.body)
    # A retry is the same message: the same webhook-id, so receivers can deduplicate.
    assert got[0].headers["webhook-id"] in {d.headers["webhook-id"] for d in accepted.values()}
    assert store.deliveries_for(pid) == []  # delivered rows leave the outbox


def test_an_unreachable_receiver_is_retried_later_not_lost(store: SqlStore) -> None:
    port = free_port()  # nothing listens there
    pid = _owe(store, f"http://127.0.0.1:{port}/hook")

    def tried() -> bool:
        rows = store.deliveries_for(pid)
        return bool(rows) and rows[0].attempts >= 1

    asyncio.run(_dispatch_until(store, tried))
    [owed] = store.deliveries_for(pid)
    assert owed.attempts == 1 and owed.first_attempt_at is not None
    assert owed.event == "completed"


def test_redirects_are_not_followed(store: SqlStore) -> None:
    hits: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            hits.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pid = _owe(store, f"http://127.0.0.1:{server.server_address[1]}/hook")

        def tried() -> bool:
            rows = store.deliveries_for(pid)
            return bool(rows) and rows[0].attempts >= 1

        asyncio.run(_dispatch_until(store, tried))
    finally:
        server.shutdown()
        server.server_close()
    assert hits == ["/hook"]  # never /elsewhere
    [owed] = store.deliveries_for(pid)
    assert owed.attempts == 1  # a redirect is a failed delivery, retried later


def test_a_retry_due_while_its_group_is_still_sending_is_not_stranded(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "BACKOFF_START", 0.001)
    calls: list[str] = []

    async def receiver(request: httpx.Request) -> httpx.Response:
        event = json.loads(request.content)["status"]
        calls.append(event)
        if len(calls) == 1:
            return httpx.Response(500)  # the start event fails and is due again at once...
        if event == "succeeded":
            await asyncio.sleep(0.3)  # ...while `completed` of the same group is still sending
        return httpx.Response(200)

    pid = _owe(store, "http://127.0.0.1:9/hook", ("start", "completed"))

    async def run() -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
            task = asyncio.create_task(
                webhooks.run_dispatcher(store, _render, SECRET, stop, client=client)
            )
            deadline = time.monotonic() + 5
            while store.deliveries_for(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            stop.set()
            await task

    asyncio.run(run())
    assert store.deliveries_for(pid) == []
    assert calls == ["processing", "succeeded", "processing"]
