"""Sending owed webhooks: signatures (Standard Webhooks, as Replicate signs) and the dispatcher.

The outbox rows are written by the store with each state change (outbox.py); this module only
reads due rows, POSTs them and records the outcome, so deliveries owed when the service died are
simply due again when it starts. A failed `completed` delivery is retried with backoff for ten
minutes after its first attempt (Replicate promises "a few" retries; the issue asks for at least
five minutes); other events, which a later event supersedes, give up after a few tries.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from dreamserve.jobs.model import Prediction, Store, WebhookDelivery

log = logging.getLogger("dreamserve.webhooks")

SECRET_PREFIX = "whsec_"
TIMESTAMP_TOLERANCE = 300  # seconds: verify() refuses older or future-dated deliveries

DELIVERY_TIMEOUT = 10.0
BACKOFF_START, BACKOFF_CAP = 1.0, 60.0
COMPLETED_RETRY_SECONDS = 600.0
OTHER_MAX_ATTEMPTS = 4
BATCH = 64
CONCURRENCY = 32
POLL_MIN, POLL_MAX = 0.02, 0.25  # seconds between polls: short after work, longer when idle


# --- signatures


def _key(secret: str) -> bytes:
    """`whsec_` + base64 key bytes (what the API hands out); any other string is used as is."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: float = TIMESTAMP_TOLERANCE,
) -> bool:
    """True when `body` was signed with `secret` within `tolerance` seconds of `now`.

    The signature header may list several space-separated `v1,<sig>` (secret rotation).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp = lower.get("webhook-id"), lower.get("webhook-timestamp")
    if not msg_id or not stamp or not stamp.isdigit():
        return False
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(stamp), body)
    offered = lower.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)


# --- retry policy


def next_attempt_at(d: WebhookDelivery, now: float, rng: random.Random) -> float | None:
    """When to try `d` again after its attempt number d.attempts + 1 failed; None = give up."""
    attempts = d.attempts + 1
    first = d.first_attempt_at if d.first_attempt_at is not None else now
    if d.event == "completed":
        if now - first >= COMPLETED_RETRY_SECONDS:
            return None
    elif attempts >= OTHER_MAX_ATTEMPTS:
        return None
    delay = min(BACKOFF_CAP, BACKOFF_START * 2 ** (attempts - 1))
    return now + rng.uniform(
        delay / 2, delay
    )  # jitter: receivers that failed together recover apart


# --- the dispatcher


class _Dispatcher:
    def __init__(
        self,
        store: Store,
        render: Callable[[Prediction], dict[str, Any]],
        secret: str,
        client: httpx.AsyncClient,
    ) -> None:
        self.store, self.render, self.secret, self.client = store, render, secret, client
        self.rng = random.Random()
        self.in_flight: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(CONCURRENCY)

    async def poll(self) -> int:
        """Start sending what is due; returns how many deliveries it started."""
        if len(self.in_flight) >= BATCH:
            return 0
        due = await asyncio.to_thread(self.store.due_deliveries, time.time(), BATCH)
        groups: dict[str, list[WebhookDelivery]] = {}
        for d in due:
            if d.id not in self.in_flight:
                groups.setdefault(d.prediction_id, []).append(d)
                self.in_flight.add(d.id)
        for group in groups.values():
            task = asyncio.create_task(self._send_in_order(group))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return sum(len(g) for g in groups.values())

    async def _send_in_order(self, group: list[WebhookDelivery]) -> None:
        """One prediction's due deliveries go one after another, so `completed` normally
        arrives last (best effort: a failed earlier event is retried after it)."""
        try:
            async with self.slots:
                for d in group:
                    await self._deliver(d)
        finally:  # canceled at shutdown: unsent rows are claimed in the store, due again later
            self.in_flight.difference_update(d.id for d in group)

    async def _deliver(self, d: WebhookDelivery) -> None:
        try:
            await self._attempt(d)
        finally:
            # Its outcome is recorded: when due again the store hands it out again, and it must
            # not be skipped as "in flight" (it would stay claimed, unsent, for a minute).
            self.in_flight.discard(d.id)

    async def _attempt(self, d: WebhookDelivery) -> None:
        error = await self._post(d)
        try:
            if error is None:
                await asyncio.to_thread(self.store.delivery_done, d.id)
                return
            retry = next_attempt_at(d, time.time(), self.rng)
            when = "giving up" if retry is None else f"retrying in {retry - time.time():.1f}s"
            log.warning("webhook %s (%s) to %s failed: %s; %s", d.id, d.event, d.url, error, when)
            await asyncio.to_thread(self.store.delivery_failed, d.id, retry)
        except Exception:  # the store is unreachable: the claim lapses and it is sent again
            log.exception("could not record the outcome of webhook %s", d.id)

    async def _post(self, d: WebhookDelivery) -> str | None:
        """POST one delivery; None on a 2xx, else why it failed."""
        try:
            body = json.dumps(self.render(d.snapshot), separators=(",", ":")).encode()
            headers = signed_headers(self.secret, d.id, body, time.time())
            response = await self.client.post(
                d.url, content=body, headers=headers, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a rendering bug must not stop the dispatcher
            log.exception("webhook %s could not be prepared", d.id)
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"  # redirects are not followed: they count as failures

    async def drain(self, timeout: float) -> None:
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
            for task in pending:
                task.cancel()


async def run_dispatcher(
    store: Store,
    render: Callable[[Prediction], dict[str, Any]],
    secret: str,
    stop: asyncio.Event,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Deliver owed webhooks until `stop` is set. `render` shapes a snapshot into the body."""
    own_client = client is None
    if client is None:
        client = httpx.AsyncClient(follow_redirects=False, timeout=DELIVERY_TIMEOUT)
    dispatcher = _Dispatcher(store, render, secret, client)
    pause = POLL_MIN
    try:
        while not stop.is_set():
            try:
                started = await dispatcher.poll()
            except Exception:  # a store hiccup must not end webhook delivery for good
                log.exception("webhook poll failed")
                started = 0
            pause = POLL_MIN if started else min(POLL_MAX, pause * 1.5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        await dispatcher.drain(timeout=2.0)
    finally:
        if own_client:
            await client.aclose()
