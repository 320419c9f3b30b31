"""Hostile and broken requests: every one is a problem+json 4xx naming the field and rule."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import Route

from dreamserve.api.app import create_app
from dreamserve.api.context import Services
from dreamserve.api.replicate import MAX_PREDICTION_BODY
from tests.api.conftest import BASE_URL, SEEDREAM

pytestmark = pytest.mark.anyio

ELEVEN_IMAGES = [f"https://example.com/{i}.png" for i in range(11)]


def assert_problem(r: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(body)
    assert body["status"] == status
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, body
    assert all(e["rule"] for e in body["errors"])
    assert field in body["detail"]
    return body


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post(SEEDREAM, json=body, headers=headers)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"{not json", "body"),
        (b"", "body"),
        (b'{"input": {"prompt": "x", "guidance_scale": NaN}}', "body"),
        (b"\xff\xfe\x00garbage", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
    ],
)
async def test_malformed_json(client: httpx.AsyncClient, content: bytes, field: str) -> None:
    r = await client.post(SEEDREAM, content=content, headers={"content-type": "application/json"})
    assert_problem(r, 400, field)


async def test_a_body_that_is_not_an_object(client: httpx.AsyncClient) -> None:
    assert_problem(await post(client, ["prompt"]), 422, "body")


async def test_wrong_content_type(client: httpx.AsyncClient) -> None:
    r = await client.post(SEEDREAM, content=b"prompt=x", headers={"content-type": "text/plain"})
    assert_problem(r, 415, "Content-Type")


async def test_a_10_mb_prompt_is_refused(client: httpx.AsyncClient) -> None:
    r = await post(client, {"input": {"prompt": "x" * 10_000_000}})
    assert_problem(r, 422, "input.prompt")


async def test_a_body_over_the_cap_is_refused_before_parsing(client: httpx.AsyncClient) -> None:
    r = await post(client, {"input": {"prompt": "x" * (MAX_PREDICTION_BODY + 1)}})
    assert_problem(r, 413, "body")


async def test_a_body_without_length_is_capped_while_streaming(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(MAX_PREDICTION_BODY // 1_000_000 + 1):
            yield b" " * 1_000_000

    r = await client.post(SEEDREAM, content=chunks(), headers={"content-type": "application/json"})
    assert_problem(r, 413, "body")


@pytest.mark.parametrize(
    ("input_", "field"),
    [
        ({}, "input.prompt"),
        ({"prompt": ""}, "input.prompt"),
        ({"prompt": "   "}, "input.prompt"),
        ({"prompt": "x" * 2001}, "input.prompt"),
        ({"prompt": 42}, "input.prompt"),
        ({"prompt": "x", "image_input": ELEVEN_IMAGES}, "input.image_input"),
        ({"prompt": "x", "image_input": "https://e.com/a.png"}, "input.image_input"),
        ({"prompt": "x", "image_input": [1]}, "input.image_input.0"),
        ({"prompt": "x", "max_images": 16}, "input.max_images"),
        ({"prompt": "x", "max_images": "many"}, "input.max_images"),
        (
            {
                "prompt": "x",
                "sequential_image_generation": "auto",
                "max_images": 10,
                "image_input": [f"https://e.com/{i}.png" for i in range(6)],
            },
            "input.max_images",
        ),
        ({"prompt": "x", "size": "custom", "width": 900}, "input.width"),
        ({"prompt": "x", "aspect_ratio": "5:4"}, "input.aspect_ratio"),
        ({"prompt": "x", "size": "8K"}, "input.size"),
        ({"prompt": "x", "seed": -1}, "input.seed"),
        ({"prompt": "x", "enhance_prompt": "maybe"}, "input.enhance_prompt"),
        ({"prompt": "x", "output_format": "gif"}, "input.output_format"),
    ],
)  # fmt: skip
async def test_invalid_input_names_the_field(
    client: httpx.AsyncClient, input_: dict[str, Any], field: str
) -> None:
    assert_problem(await post(client, {"input": input_}), 422, field)


async def test_missing_input(client: httpx.AsyncClient) -> None:
    assert_problem(await post(client, {"prompt": "x"}), 422, "input")
    assert_problem(await post(client, {"input": "a fox"}), 422, "input")


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Prefer": "wait=0"}, "Prefer"),
        ({"Prefer": "wait=120"}, "Prefer"),
        ({"Prefer": "wait=soon"}, "Prefer"),
        ({"Cancel-After": "2s"}, "Cancel-After"),
        ({"Cancel-After": "tomorrow"}, "Cancel-After"),
        ({"Cancel-After": "1h30"}, "Cancel-After"),
    ],
)
async def test_bad_headers_are_named(
    client: httpx.AsyncClient, headers: dict[str, str], field: str
) -> None:
    assert_problem(await post(client, {"input": {"prompt": "x"}}, **headers), 422, field)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"webhook": "ftp://example.com/hook"}, "webhook"),
        ({"webhook": "not a url"}, "webhook"),
        ({"webhook": "https://"}, "webhook"),
        ({"webhook": 7}, "webhook"),
        ({"webhook_events_filter": ["start", "finished"]}, "webhook_events_filter"),
        ({"webhook_events_filter": "completed"}, "webhook_events_filter"),
        ({"webhook_events_filter": []}, "webhook_events_filter"),
    ],
)
async def test_bad_webhooks_are_named(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str
) -> None:
    body = {"input": {"prompt": "x"}, "webhook": "https://example.com/hook", **extra}
    assert_problem(await post(client, body), 422, field)


async def test_nothing_is_stored_for_a_refused_request(client: httpx.AsyncClient) -> None:
    await post(client, {"input": {"prompt": "x", "size": "8K"}})
    await post(client, {"input": {"prompt": "x"}}, Prefer="wait=0")
    listed = (await client.get("/v1/predictions")).json()
    assert listed["results"] == []


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing-here"), 404, "path")
    assert_problem(await client.delete("/v1/predictions"), 405, "method")


async def test_a_bug_is_a_logged_500_without_internals(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request) -> None:
        raise RuntimeError("secret internals")

    app = create_app(services)
    app.router.routes.append(Route("/v1/broken", broken))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        r = await c.get("/v1/broken")
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in r.text
    assert "secret internals" in caplog.text
