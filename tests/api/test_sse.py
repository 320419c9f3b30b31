"""urls.stream: Server-Sent Events, checked with the official client's own decoder."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from replicate.stream import EventSource, ServerSentEvent

from dreamserve.api.sse import format_event
from dreamserve.jobs.states import Status
from tests.api.conftest import SEEDREAM, FakeWorker

pytestmark = pytest.mark.anyio


def decode(text: str) -> list[ServerSentEvent]:
    """Parse a stream body exactly as replicate-python 1.0.x does."""
    decoder = EventSource.Decoder()
    events = []
    for line in text.split("\n"):
        event = decoder.decode(line)
        if event is not None:
            events.append(event)
    return events


def named(events: list[ServerSentEvent]) -> list[tuple[str, str]]:
    return [(e.event.value, e.data) for e in events]


async def start(
    client: httpx.AsyncClient, query: str = ""
) -> tuple[str, asyncio.Task[httpx.Response]]:
    prediction_id = (await client.post(SEEDREAM, json={"input": {"prompt": "x"}})).json()["id"]
    stream = client.get(f"/v1/predictions/{prediction_id}/stream{query}")
    return prediction_id, asyncio.create_task(stream)


async def test_a_successful_stream(client: httpx.AsyncClient, worker: FakeWorker) -> None:
    pid, task = await start(client)
    await worker.run_one(steps=2, count=2)
    r = await task
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    events = named(decode(r.text))
    logs = "\n".join(data for name, data in events if name == "logs")
    assert "step 1/2" in logs and "step 2/2" in logs
    outputs = [data for name, data in events if name == "output"]
    assert outputs == [
        f"http://testserver/files/outputs/{pid}/output_0.png",
        f"http://testserver/files/outputs/{pid}/output_1.png",
    ]
    assert events[-1] == ("done", "{}")
    ids = [e.id for e in decode(r.text)]
    assert len(set(ids)) == len(ids)  # the client drops events without an id


async def test_progress_events_only_when_asked(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    _, plain = await start(client)
    await worker.run_one(steps=3)
    assert "event: progress" not in (await plain).text  # the official client would choke on it
    _, task = await start(client, "?progress=true")
    claim = await worker.claim()
    await worker.step(claim.prediction.id, 1, 4, None)
    await asyncio.sleep(0.1)  # let the stream see the step before the next change
    await worker.succeed(claim.prediction.id)
    text = (await task).text
    progress = [
        json.loads(line[6:]) for line in text.split("\n") if line.startswith('data: {"step')
    ]
    assert {"step": 1, "total": 4, "percentage": 25.0} in progress


async def test_a_canceled_stream(client: httpx.AsyncClient) -> None:
    pid, task = await start(client)
    await client.post(f"/v1/predictions/{pid}/cancel")
    events = named(decode((await task).text))
    assert events[-1] == ("done", '{"reason": "canceled"}')


async def test_a_failed_stream(client: httpx.AsyncClient, worker: FakeWorker) -> None:
    _, task = await start(client)
    claim = await worker.claim()
    await worker.finish(claim.prediction.id, Status.FAILED, error="boom")
    events = named(decode((await task).text))
    assert ("error", '{"detail": "boom"}') in events
    assert events[-1] == ("done", '{"reason": "error"}')


async def test_a_finished_prediction_streams_its_end_at_once(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    pid = (await client.post(SEEDREAM, json={"input": {"prompt": "x"}})).json()["id"]
    await worker.run_one(steps=1)
    r = await client.get(f"/v1/predictions/{pid}/stream")
    events = named(decode(r.text))
    assert [n for n, _ in events] == ["logs", "output", "done"]


async def test_streaming_a_missing_prediction_is_a_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/predictions/nope/stream")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_multiline_data_survives() -> None:
    events = decode(format_event("logs", "line one\nline two", 7))
    assert events[0].data == "line one\nline two"
    assert events[0].id == "7"
