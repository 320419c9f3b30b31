"""/v1/files: upload (multipart, as the official client sends it), get, list, download, delete."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import pytest

from dreamserve.api.context import Services
from tests.api.conftest import BASE_URL, png_bytes

pytestmark = pytest.mark.anyio

FILE_KEYS = {
    "id", "name", "content_type", "size", "etag", "checksums", "metadata", "created_at",
    "expires_at", "urls",
}  # fmt: skip


async def upload(client: httpx.AsyncClient, data: bytes, **form: str) -> httpx.Response:
    files = {"content": ("photo.png", data, "image/png")}
    return await client.post("/v1/files", files=files, data=form)


async def test_upload_answers_like_replicate(client: httpx.AsyncClient) -> None:
    data = png_bytes()
    r = await upload(client, data, metadata=json.dumps({"purpose": "test"}))
    assert r.status_code == 201
    body = r.json()
    assert set(body) == FILE_KEYS
    assert body["name"] == "photo.png"
    assert body["content_type"] == "image/png"
    assert body["size"] == len(data)
    assert body["checksums"] == {"sha256": hashlib.sha256(data).hexdigest()}
    assert body["metadata"] == {"purpose": "test"}
    assert body["urls"] == {"get": f"{BASE_URL}/v1/files/{body['id']}"}
    assert body["expires_at"] > body["created_at"]


async def test_get_list_download_delete(client: httpx.AsyncClient) -> None:
    data = png_bytes(colour="green")
    created = (await upload(client, data)).json()
    got = await client.get(f"/v1/files/{created['id']}")
    assert got.json() == created
    listed = (await client.get("/v1/files")).json()
    assert [f["id"] for f in listed["results"]] == [created["id"]]
    download = await client.get(f"/v1/files/{created['id']}/download")
    assert download.status_code == 200
    assert download.content == data
    assert download.headers["content-type"] == "image/png"
    assert (await client.delete(f"/v1/files/{created['id']}")).status_code == 204
    assert (await client.get(f"/v1/files/{created['id']}")).status_code == 404
    assert (await client.get(f"/v1/files/{created['id']}/download")).status_code == 404
    assert (await client.delete(f"/v1/files/{created['id']}")).status_code == 404


async def test_an_expired_file_is_gone(client: httpx.AsyncClient, services: Services) -> None:
    created = (await upload(client, png_bytes())).json()
    record = services.store.get_file(created["id"])
    services.blobs.put(record.blob_key, b"x", "image/png", time.time() - 1)
    r = await client.get(f"/v1/files/{created['id']}/download")
    assert r.status_code == 404


async def test_an_upload_over_the_cap_is_a_413(client: httpx.AsyncClient) -> None:
    r = await upload(client, b"\0" * (256 * 1024 + 1))  # the test settings cap at 256 KiB
    assert r.status_code == 413
    assert r.json()["errors"][0]["field"] == "content"


async def test_bad_uploads_name_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/files", json={"content": "x"})
    assert r.status_code == 415
    assert r.json()["errors"][0]["field"] == "Content-Type"
    r = await client.post("/v1/files", data={"metadata": "{}"}, files={"other": ("a", b"x")})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "content"
    r = await upload(client, png_bytes(), metadata="[1, 2]")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "metadata"
    r = await client.post(
        "/v1/files", content=b"--nope", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert 400 <= r.status_code < 500
