"""Contract tests of the Replicate dialect: each endpoint, its headers, its JSON."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any

import httpx
import pytest

from dreamserve.api import replicate
from dreamserve.api.errors import ApiError
from dreamserve.api.replicate_schema import version_id
from dreamserve.blobs import DirBlobs
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore
from tests.api.conftest import BASE_URL, SEEDREAM, FakeWorker

pytestmark = pytest.mark.anyio

PREDICTION_KEYS = {
    "id", "model", "version", "input", "output", "logs", "error", "status", "created_at",
    "started_at", "completed_at", "urls", "metrics", "data_removed",
}  # fmt: skip
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
INPUT = {"prompt": "a red fox in snow", "aspect_ratio": "4:3", "unknown_knob": 7}


async def create(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post(SEEDREAM, json=body, headers=headers)


async def test_create_answers_at_once_with_the_replicate_shape(client: httpx.AsyncClient) -> None:
    r = await create(client, {"input": INPUT})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == PREDICTION_KEYS
    assert body["status"] == "starting"
    assert body["model"] == "bytedance/seedream-4"
    assert body["version"] == version_id("bytedance/seedream-4")
    assert body["input"] == INPUT  # as sent, unknown keys included
    assert body["output"] is None and body["error"] is None and body["data_removed"] is False
    assert ISO_Z.match(body["created_at"]) and body["completed_at"] is None
    url = f"{BASE_URL}/v1/predictions/{body['id']}"
    assert body["urls"] == {"get": url, "cancel": f"{url}/cancel", "stream": f"{url}/stream"}
    assert r.headers["location"] == url


async def test_the_canonical_request_is_stored_with_defaults(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    r = await create(client, {"input": {**INPUT, "preset": "square", "seed": None}})
    stored = store.get(r.json()["id"])
    assert stored.request["aspect_ratio"] == "4:3"
    assert stored.request["size"] == "2K"
    assert stored.request["preset"] is None  # dialect plumbing is not settable from Replicate
    assert "unknown_knob" not in stored.request
    assert stored.dialect == "replicate"


async def test_images_as_data_urls_fit_in_a_prediction_body(client: httpx.AsyncClient) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(b"\0" * 2_000_000).decode()
    r = await create(client, {"input": {"prompt": "x", "image_input": [data_url, data_url]}})
    assert r.status_code == 201


async def test_prefer_wait_answers_when_the_prediction_ends(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    request = asyncio.create_task(create(client, {"input": INPUT}, Prefer="wait"))
    done = await worker.run_one(count=2)
    r = await request
    body = r.json()
    assert r.status_code == 201
    assert body["id"] == done.id
    assert body["status"] == "succeeded"
    assert body["output"] == [
        f"{BASE_URL}/files/outputs/{done.id}/output_0.png",
        f"{BASE_URL}/files/outputs/{done.id}/output_1.png",
    ]
    assert ISO_Z.match(body["completed_at"])
    assert set(body["metrics"]) == {"predict_time", "total_time", "image_count"}
    assert body["metrics"]["image_count"] == 2
    assert "step 2/2" in body["logs"]


async def test_output_urls_download_the_image(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    request = asyncio.create_task(create(client, {"input": INPUT}, Prefer="wait=5"))
    await worker.run_one()
    url = (await request).json()["output"][0]
    r = await client.get(url)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.content.startswith(b"\x89PNG")


async def test_an_expired_output_is_gone(
    client: httpx.AsyncClient, worker: FakeWorker, blobs: DirBlobs
) -> None:
    request = asyncio.create_task(create(client, {"input": INPUT}, Prefer="wait=5"))
    done = await worker.run_one()
    url = (await request).json()["output"][0]
    blobs.put(done.output[0], b"old", "image/png", time.time() - 1)
    r = await client.get(url)
    assert r.status_code == 404
    assert r.json()["errors"][0]["field"] == "key"


async def test_output_route_serves_nothing_but_outputs(client: httpx.AsyncClient) -> None:
    r = await client.get("/files/files/someupload")
    assert r.status_code == 404
    r = await client.get("/files/outputs/nope/output_0.png")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_a_blocking_answer_that_times_out_says_starting(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    """The official client polls only after `starting`; `processing` would end its run()."""
    request = asyncio.create_task(create(client, {"input": INPUT}, Prefer="wait=1"))
    claim = await worker.claim()
    r = await request
    assert r.json()["status"] == "starting"
    got = await client.get(f"/v1/predictions/{claim.prediction.id}")
    assert got.json()["status"] == "processing"  # reads tell the truth


async def test_a_failed_prediction_ends_a_blocking_request(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    request = asyncio.create_task(create(client, {"input": INPUT}, Prefer="wait"))
    claim = await worker.claim()
    await worker.finish(claim.prediction.id, Status.FAILED, error="image_input[0]: not an image")
    body = (await request).json()
    assert body["status"] == "failed"
    assert body["error"] == "image_input[0]: not an image"
    assert body["output"] is None


@pytest.mark.parametrize("version", ["bytedance/seedream-4", "bytedance/seedream-4:{vid}", "{vid}"])
async def test_create_with_version(client: httpx.AsyncClient, version: str) -> None:
    vid = version_id("bytedance/seedream-4")
    r = await client.post(
        "/v1/predictions", json={"version": version.format(vid=vid), "input": INPUT}
    )
    assert r.status_code == 201
    assert r.json()["model"] == "bytedance/seedream-4"
    assert r.json()["version"] == vid


async def test_the_builtin_name_is_served_too(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/dreamserve/builtin/predictions", json={"input": INPUT})
    assert r.status_code == 201
    assert r.json()["version"] == version_id("dreamserve/builtin")


@pytest.mark.parametrize(
    ("version", "status", "field"),
    [
        (None, 422, "version"),
        (12, 422, "version"),
        ("someone/else", 404, "version"),
        ("bytedance/seedream-4:deadbeef", 404, "version"),
        ("0" * 64, 404, "version"),
    ],
)
async def test_bad_versions_are_named(
    client: httpx.AsyncClient, version: Any, status: int, field: str
) -> None:
    r = await client.post("/v1/predictions", json={"version": version, "input": INPUT})
    assert r.status_code == status
    assert r.json()["errors"][0]["field"] == field


async def test_an_unknown_model_is_a_404_naming_it(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/stability-ai/sdxl/predictions", json={"input": INPUT})
    assert r.status_code == 404
    assert r.json()["errors"][0]["field"] == "model"
    r = await client.get("/v1/models/stability-ai/sdxl")
    assert r.status_code == 404


async def test_get_and_missing_prediction(client: httpx.AsyncClient) -> None:
    created = (await create(client, {"input": INPUT})).json()
    r = await client.get(f"/v1/predictions/{created['id']}")
    assert r.status_code == 200
    assert r.json() == created
    r = await client.get("/v1/predictions/doesnotexist")
    assert r.status_code == 404
    assert r.json()["errors"] == [{"field": "prediction_id", "rule": "no prediction doesnotexist"}]


async def test_list_is_newest_first_in_cursor_pages(client: httpx.AsyncClient) -> None:
    ids = [(await create(client, {"input": {"prompt": f"p{i}"}})).json()["id"] for i in range(5)]
    first = (await client.get("/v1/predictions", params={"limit": 2})).json()
    assert [p["id"] for p in first["results"]] == ids[::-1][:2]
    assert first["previous"] is None
    assert first["next"].startswith(f"{BASE_URL}/v1/predictions?cursor=")
    second = (await client.get(first["next"])).json()
    assert [p["id"] for p in second["results"]] == ids[::-1][2:4]
    third = (await client.get(second["next"])).json()
    assert [p["id"] for p in third["results"]] == ids[:1]
    assert third["next"] is None
    back = (await client.get(second["previous"])).json()
    assert [p["id"] for p in back["results"]] == ids[::-1][:2]


async def test_list_refuses_foreign_cursors_and_limits(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/predictions", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "cursor"
    r = await client.get("/v1/predictions", params={"limit": "0"})
    assert r.json()["errors"][0]["field"] == "limit"


async def test_cancel_a_waiting_prediction(client: httpx.AsyncClient) -> None:
    created = (await create(client, {"input": INPUT})).json()
    r = await client.post(f"/v1/predictions/{created['id']}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "canceled"
    assert r.json()["completed_at"] is not None


async def test_cancel_a_running_prediction_waits_for_the_step(
    client: httpx.AsyncClient, worker: FakeWorker
) -> None:
    created = (await create(client, {"input": INPUT})).json()
    claim = await worker.claim()
    cancel = asyncio.create_task(client.post(f"/v1/predictions/{created['id']}/cancel"))
    while not await worker.step(claim.prediction.id, 1, 10, None):  # the worker's next step
        await asyncio.sleep(0.01)
    await worker.finish(claim.prediction.id, Status.CANCELED)
    r = await cancel
    assert r.json()["status"] == "canceled"


async def test_cancel_a_missing_prediction(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/predictions/nope/cancel")
    assert r.status_code == 404


async def test_cancel_after_is_stored_in_seconds(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    r = await create(client, {"input": INPUT}, **{"Cancel-After": "1h30m45s"})
    assert store.get(r.json()["id"]).cancel_after == 5445.0


async def test_webhook_and_filter_are_stored(client: httpx.AsyncClient, store: SqlStore) -> None:
    body = {
        "input": INPUT,
        "webhook": "https://example.com/hook",
        "webhook_events_filter": ["completed", "start"],
    }
    p = store.get((await create(client, body)).json()["id"])
    assert p.webhook == "https://example.com/hook"
    assert p.webhook_events_filter == ("start", "completed")


async def test_webhook_completed_means_only_completed(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    body = {"input": INPUT, "webhook_completed": "http://127.0.0.1:9/done"}
    p = store.get((await create(client, body)).json()["id"])
    assert p.webhook == "http://127.0.0.1:9/done"
    assert p.webhook_events_filter == ("completed",)


async def test_model_and_versions(client: httpx.AsyncClient) -> None:
    model = (await client.get("/v1/models/bytedance/seedream-4")).json()
    assert (model["owner"], model["name"]) == ("bytedance", "seedream-4")
    vid = model["latest_version"]["id"]
    versions = (await client.get("/v1/models/bytedance/seedream-4/versions")).json()
    assert [v["id"] for v in versions["results"]] == [vid]
    version = (await client.get(f"/v1/models/bytedance/seedream-4/versions/{vid}")).json()
    schema = version["openapi_schema"]["components"]["schemas"]
    assert schema["Input"]["required"] == ["prompt"]
    assert schema["Output"]["items"] == {"type": "string", "format": "uri"}
    r = await client.get("/v1/models/bytedance/seedream-4/versions/abc")
    assert r.status_code == 404
    assert r.json()["errors"][0]["field"] == "version_id"


async def test_list_models(client: httpx.AsyncClient) -> None:
    listed = (await client.get("/v1/models")).json()
    names = [f"{m['owner']}/{m['name']}" for m in listed["results"]]
    assert names == ["bytedance/seedream-4", "dreamserve/builtin"]


async def test_webhook_secret(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/webhooks/default/secret")
    assert r.json() == {"key": "whsec_dGVzdA=="}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("wait", 60.0),
        ("wait=1", 1.0),
        ("wait=60", 60.0),
        ("respond-async, wait=5", 5.0),
        ("x=1", None),
    ],
)
def test_parse_prefer(header: str, seconds: float | None) -> None:
    assert replicate.parse_prefer(header) == seconds


@pytest.mark.parametrize("header", ["wait=0", "wait=61", "wait=abc", "wait=1.5", "wait="])
def test_parse_prefer_refuses(header: str) -> None:
    with pytest.raises(ApiError) as err:
        replicate.parse_prefer(header)
    assert err.value.errors[0].field == "Prefer"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("30", 30.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("2h30m", 9000.0),
     ("1h30m45s", 5445.0), ("5", 5.0), (" 10s ", 10.0), ("1.5m", 90.0)],
)  # fmt: skip
def test_parse_cancel_after(header: str, seconds: float) -> None:
    assert replicate.parse_cancel_after(header) == seconds


@pytest.mark.parametrize("header", ["4", "4s", "", "abc", "1d", "1h30", "m", "-10", "30 s", "5m1h"])
def test_parse_cancel_after_refuses(header: str) -> None:
    with pytest.raises(ApiError) as err:
        replicate.parse_cancel_after(header)
    assert err.value.errors[0].field == "Cancel-After"
