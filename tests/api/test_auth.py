"""API keys: open mode, missing/wrong/revoked keys, owner isolation, the keys commands."""

from __future__ import annotations

import httpx
import pytest

from dreamserve.api import auth
from dreamserve.config import Settings
from dreamserve.jobs.store import SqlStore
from tests.api.conftest import SEEDREAM, make_key, png_bytes

pytestmark = pytest.mark.anyio

BODY = {"input": {"prompt": "a lighthouse"}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_with_no_keys_the_service_is_open(client: httpx.AsyncClient, store: SqlStore) -> None:
    r = await client.post(SEEDREAM, json=BODY)
    assert r.status_code == 201
    assert store.get(r.json()["id"]).owner is None
    # A client that sends some token anyway (the official one always does) still works.
    r = await client.post(SEEDREAM, json=BODY, headers=bearer("r8_whatever"))
    assert r.status_code == 201


async def test_a_key_is_required_once_one_exists(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    make_key(store, "alice")
    for headers in ({}, bearer("ds_wrong"), {"Authorization": "Basic abc"}):
        r = await client.post(SEEDREAM, json=BODY, headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["errors"][0]["field"] == "Authorization"


async def test_bearer_and_token_schemes(client: httpx.AsyncClient, store: SqlStore) -> None:
    key_id, token = make_key(store, "alice")
    for header in (f"Bearer {token}", f"Token {token}", f"bearer  {token} "):
        r = await client.post(SEEDREAM, json=BODY, headers={"Authorization": header})
        assert r.status_code == 201, header
        assert store.get(r.json()["id"]).owner == key_id


async def test_a_revoked_key_stops_working_at_once(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    key_id, token = make_key(store, "alice")
    make_key(store, "bob")
    assert (await client.get("/v1/predictions", headers=bearer(token))).status_code == 200
    store.revoke_key(key_id)
    assert (await client.get("/v1/predictions", headers=bearer(token))).status_code == 401


async def test_a_key_sees_only_its_own_predictions(
    client: httpx.AsyncClient, store: SqlStore
) -> None:
    _, alice = make_key(store, "alice")
    _, bob = make_key(store, "bob")
    mine = (await client.post(SEEDREAM, json=BODY, headers=bearer(alice))).json()["id"]
    await client.post(SEEDREAM, json=BODY, headers=bearer(bob))
    listed = (await client.get("/v1/predictions", headers=bearer(alice))).json()
    assert [p["id"] for p in listed["results"]] == [mine]
    for method, path in (
        ("GET", f"/v1/predictions/{mine}"),
        ("POST", f"/v1/predictions/{mine}/cancel"),
        ("GET", f"/v1/predictions/{mine}/stream"),
    ):
        r = await client.request(method, path, headers=bearer(bob))
        assert r.status_code == 404, path
    assert store.get(mine).status == "starting"  # bob's cancel did nothing


async def test_a_key_sees_only_its_own_files(client: httpx.AsyncClient, store: SqlStore) -> None:
    _, alice = make_key(store, "alice")
    _, bob = make_key(store, "bob")
    files = {"content": ("a.png", png_bytes(), "image/png")}
    file_id = (await client.post("/v1/files", files=files, headers=bearer(alice))).json()["id"]
    assert (await client.get(f"/v1/files/{file_id}", headers=bearer(bob))).status_code == 404
    assert (await client.get("/v1/files", headers=bearer(bob))).json()["results"] == []
    r = await client.get(f"/v1/files/{file_id}/download", headers=bearer(bob))
    assert r.status_code == 404
    assert (await client.delete(f"/v1/files/{file_id}", headers=bearer(bob))).status_code == 404
    assert (await client.get(f"/v1/files/{file_id}", headers=bearer(alice))).status_code == 200


async def test_health_and_outputs_need_no_key(client: httpx.AsyncClient, store: SqlStore) -> None:
    make_key(store, "alice")
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/files/outputs/x/output_0.png")).status_code == 404  # not 401


def test_keys_commands_store_only_a_hash(tmp_path: object) -> None:
    settings = Settings(data_dir=tmp_path / "data")  # type: ignore[operator]
    key, token = auth.create_key(settings, "ci")
    assert token.startswith("ds_") and len(token) > 40
    assert [k.id for k in auth.list_keys(settings)] == [key.id]
    db = (settings.data_dir / "dreamserve.db").read_bytes()
    assert token.encode() not in db
    assert auth.revoke_key(settings, key.id).revoked_at is not None
    assert auth.list_keys(settings)[0].revoked_at is not None


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("Token abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        (None, None),
    ],
)
def test_parse_authorization(header: str | None, token: str | None) -> None:
    assert auth.parse_authorization(header) == token
