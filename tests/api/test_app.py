"""The app's wiring: /health, build_services over a data dir, webhook bodies per dialect."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dreamserve.api.app import build_services, create_app, render_webhook
from dreamserve.api.context import Services
from dreamserve.config import Settings
from tests.api.conftest import BASE_URL, SEEDREAM, FakeWorker

pytestmark = pytest.mark.anyio


async def test_health_without_workers_is_ready(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["queue_depth"] == 0


async def test_health_reports_workers_and_queue(
    client: httpx.AsyncClient, services: Services
) -> None:
    await client.post(SEEDREAM, json={"input": {"prompt": "x"}})
    services.health = lambda: {"workers": 2, "workers_alive": 2}
    body = (await client.get("/health")).json()
    assert body["queue_depth"] == 1
    assert body["workers_alive"] == 2
    services.health = lambda: {"workers": 2, "workers_alive": 0}
    r = await client.get("/health")
    assert r.status_code == 503
    assert r.json()["status"] == "unavailable"


async def test_webhook_body_is_the_prediction_json(
    client: httpx.AsyncClient, services: Services, worker: FakeWorker
) -> None:
    created = (await client.post(SEEDREAM, json={"input": {"prompt": "x"}})).json()
    done = await worker.run_one()
    body = render_webhook(done, services.settings)
    assert body == (await client.get(f"/v1/predictions/{created['id']}")).json()
    assert body["status"] == "succeeded"


async def test_build_services_over_a_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_base_url=BASE_URL)
    services = build_services(settings)
    assert services.webhook_secret.startswith("whsec_")
    # The secret is kept: a restart (or a second API process) signs with the same one.
    assert build_services(settings).webhook_secret == services.webhook_secret
    app = create_app(services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        r = await c.post(SEEDREAM, json={"input": {"prompt": "x"}})
        assert r.status_code == 201
        r = await c.get("/v1/webhooks/default/secret")
        assert r.json() == {"key": services.webhook_secret}


def test_a_configured_secret_wins(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_secret="whsec_Zml4ZWQ=")
    assert build_services(settings).webhook_secret == "whsec_Zml4ZWQ="


def test_the_api_never_imports_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dreamserve.api.app, dreamserve.api.files, dreamserve.service;"
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0
