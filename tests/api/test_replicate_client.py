"""The official client (replicate-python 1.0.x, async API) against the app, in process.

The public base URL is https here because the client wraps only https: and data: URLs in
FileOutput; over plain http it hands back the URL strings (its behaviour, not ours).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from dreamserve.api.app import create_app
from dreamserve.api.context import Services
from dreamserve.api.replicate_schema import version_id
from dreamserve.jobs.states import Status
from tests.api.conftest import FakeWorker, png_bytes

pytestmark = pytest.mark.anyio

HTTPS_BASE = "https://dreamserve.test"


@pytest.fixture
async def official(services: Services) -> AsyncIterator[replicate.Client]:
    services.settings = replace(services.settings, public_base_url=HTTPS_BASE)
    transport = httpx.ASGITransport(app=create_app(services))
    client = replicate.Client(api_token="r8_any", base_url=HTTPS_BASE, transport=transport)
    client.poll_interval = 0.01
    yield client
    await client._async_client.aclose()


async def worker_loop(worker: FakeWorker, n: int = 1) -> None:
    for _ in range(n):
        await worker.run_one(steps=1)


async def test_async_run_returns_file_outputs_that_read(
    official: replicate.Client, worker: FakeWorker
) -> None:
    work = asyncio.create_task(worker_loop(worker))
    output = await official.async_run("bytedance/seedream-4", input={"prompt": "a fox"})
    await work
    assert isinstance(output, list) and len(output) == 1
    assert isinstance(output[0], FileOutput)
    assert (await output[0].aread()).startswith(b"\x89PNG")


async def test_async_run_polls_after_a_blocking_timeout(
    official: replicate.Client, worker: FakeWorker
) -> None:
    async def late() -> None:
        claim = await worker.claim()
        await asyncio.sleep(1.5)  # past the client's wait=1
        await worker.succeed(claim.prediction.id)

    work = asyncio.create_task(late())
    output = await official.async_run("bytedance/seedream-4", input={"prompt": "x"}, wait=1)
    await work
    assert len(output) == 1 and isinstance(output[0], FileOutput)


async def test_async_run_with_a_version_reference(
    official: replicate.Client, worker: FakeWorker
) -> None:
    work = asyncio.create_task(worker_loop(worker))
    ref = f"bytedance/seedream-4:{version_id('bytedance/seedream-4')}"
    output = await official.async_run(ref, input={"prompt": "x"})
    await work
    assert len(output) == 1


async def test_a_failed_run_raises_model_error(
    official: replicate.Client, worker: FakeWorker
) -> None:
    async def fail() -> None:
        claim = await worker.claim()
        await worker.finish(
            claim.prediction.id, Status.FAILED, error="image_input[0]: not an image"
        )

    work = asyncio.create_task(fail())
    with pytest.raises(ModelError, match="not an image"):
        await official.async_run("bytedance/seedream-4", input={"prompt": "x"})
    await work


async def test_invalid_input_raises_a_replicate_error(official: replicate.Client) -> None:
    with pytest.raises(ReplicateError) as err:
        await official.async_run("bytedance/seedream-4", input={"prompt": "x", "max_images": 16})
    assert err.value.status == 422
    assert "input.max_images" in (err.value.detail or "")


async def test_predictions_create_get_list_cancel(official: replicate.Client) -> None:
    p = await official.predictions.async_create(model="bytedance/seedream-4", input={"prompt": "x"})
    assert p.status == "starting"
    got = await official.predictions.async_get(p.id)
    assert got.id == p.id and got.urls is not None
    page = await official.predictions.async_list()
    assert [r.id for r in page.results] == [p.id]
    await p.async_cancel()
    assert p.status == "canceled"


async def test_models_and_versions(official: replicate.Client) -> None:
    model = await official.models.async_get("bytedance/seedream-4")
    assert model.latest_version is not None
    assert (
        "prompt"
        in model.latest_version.openapi_schema["components"]["schemas"]["Input"]["properties"]
    )


async def test_files_upload_and_use_as_input(
    official: replicate.Client, worker: FakeWorker, services: Services
) -> None:
    f = await official.files.async_create(io.BytesIO(png_bytes()), filename="in.png")
    assert f.urls["get"] == f"{HTTPS_BASE}/v1/files/{f.id}"
    assert (await official.files.async_get(f.id)).size == f.size
    assert [x.id for x in await official.files.async_list()] == [f.id]
    p = await official.predictions.async_create(
        model="bytedance/seedream-4", input={"prompt": "edit", "image_input": [f.urls["get"]]}
    )
    assert services.store.get(p.id).request["image_input"] == [f.urls["get"]]
    assert await official.files.async_delete(f.id)


async def test_stream_events(official: replicate.Client, worker: FakeWorker) -> None:
    p = await official.predictions.async_create(model="bytedance/seedream-4", input={"prompt": "x"})
    work = asyncio.create_task(worker_loop(worker))
    events = [e async for e in p.async_stream()]
    await work
    kinds = [e.event.value for e in events]
    assert kinds[-1] == "done" and "output" in kinds
