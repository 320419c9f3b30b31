"""End to end: a real `dreamserve serve` on a real port, driven by the official replicate client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError

from tests.support.live import LiveServer, running_server
from tests.support.receiver import Delivery, webhook_receiver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running_server(tmp_path_factory.mktemp("serve")) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> replicate.Client:
    return replicate.Client(api_token="unused-while-open", base_url=server.url)


def test_run_returns_files_of_the_exact_size(server: LiveServer, client: replicate.Client) -> None:
    output = client.run(
        "bytedance/seedream-4",
        input={"prompt": "a red circle", "size": "1K", "aspect_ratio": "4:3"},
    )
    # Over plain http the client returns URL strings (it wraps only https:/data: URLs in
    # FileOutput); the URL is served by this service.
    assert len(output) == 1 and isinstance(output[0], str)
    assert output[0].startswith(server.url) and output[0].endswith(".jpg")
    image = Image.open(io.BytesIO(httpx.get(output[0]).content))
    assert (image.format, image.size) == ("JPEG", (1152, 864))


def test_run_makes_a_sequential_set(client: replicate.Client) -> None:
    output = client.run(
        "bytedance/seedream-4",
        input={
            "prompt": "three images of a blue star",
            "size": "1K",
            "aspect_ratio": "16:9",
            "sequential_image_generation": "auto",
            "max_images": 3,
            "output_format": "png",
        },
    )
    sizes = {Image.open(io.BytesIO(httpx.get(url).content)).size for url in output}
    assert len(output) == 3 and sizes == {(1280, 720)}


def test_create_get_list(client: replicate.Client) -> None:
    created = client.models.predictions.create(
        model="bytedance/seedream-4", input={"prompt": "a green square", "size": "1K"}
    )
    created.wait()
    assert created.status == "succeeded"
    fetched = client.predictions.get(created.id)
    assert fetched.id == created.id and fetched.output == created.output
    assert fetched.metrics is not None and fetched.metrics["predict_time"] >= 0
    page = client.predictions.list()
    assert created.id in [p.id for p in page.results]


def test_cancel_a_waiting_prediction(server: LiveServer, client: replicate.Client) -> None:
    # The single worker is kept busy so the second prediction is still queued when canceled.
    blocker = client.models.predictions.create(
        model="bytedance/seedream-4", input={"prompt": "busy", "size": "1K"}
    )
    queued = client.models.predictions.create(
        model="bytedance/seedream-4", input={"prompt": "to cancel", "size": "1K"}
    )
    queued.cancel()
    queued.reload()
    assert queued.status in {"canceled", "succeeded"}  # it may have won the race to a worker
    blocker.wait()
    assert blocker.status == "succeeded"


def test_models_get_describes_the_seedream_input(client: replicate.Client) -> None:
    model = client.models.get("bytedance/seedream-4")
    assert model.latest_version is not None
    schema = model.latest_version.openapi_schema["components"]["schemas"]["Input"]
    assert "prompt" in schema["required"]
    assert schema["properties"]["max_images"]["maximum"] == 15


def test_uploaded_file_is_an_input_image(client: replicate.Client, tmp_path: Path) -> None:
    source = tmp_path / "wide.png"
    Image.new("RGB", (640, 320), "orange").save(source)
    uploaded = client.files.create(source)
    assert uploaded.size == source.stat().st_size
    output = client.run(
        "bytedance/seedream-4",
        input={"prompt": "make it blue", "image_input": [uploaded.urls["get"]], "size": "1K"},
    )
    width, height = Image.open(io.BytesIO(httpx.get(output[0]).content)).size
    # match_input_image keeps the 2:1 input, up to rounding both sides to multiples of 16.
    assert abs(width / height - 2) < 0.03


def test_invalid_input_is_a_422_naming_the_field(client: replicate.Client) -> None:
    with pytest.raises(ReplicateError) as err:
        client.run("bytedance/seedream-4", input={"prompt": "x", "max_images": 16})
    assert err.value.status == 422
    assert "max_images" in str(err.value)


def _verify(delivery: Delivery, secret: str) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    h = delivery.headers
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + delivery.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return f"v1,{expected}" in h["webhook-signature"].split(" ")


def test_webhook_retried_until_the_receiver_recovers(server: LiveServer) -> None:
    secret = httpx.get(f"{server.url}/v1/webhooks/default/secret").json()["key"]
    with webhook_receiver(fail_first=2) as receiver:
        r = httpx.post(
            f"{server.url}/v1/models/bytedance/seedream-4/predictions",
            json={
                "input": {"prompt": "a hooked triangle", "size": "1K"},
                "webhook": receiver.url,
                "webhook_events_filter": ["completed"],
            },
        )
        assert r.status_code == 201, r.text
        done = receiver.wait_for(lambda d: d.json["status"] == "succeeded", timeout=60)
    assert done[0].json["id"] == r.json()["id"]
    assert len(receiver.deliveries) >= 3  # two refused, then accepted
    assert all(_verify(d, secret) for d in receiver.deliveries)


def test_refuses_to_run_open_on_a_public_bind(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dreamserve.cli", "serve", "--host", "0.0.0.0", "--data-dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--insecure-open" in proc.stderr


def test_health_reports_ready_workers(server: LiveServer) -> None:
    body = httpx.get(f"{server.url}/health").json()
    assert body["status"] == "ok" and body["workers_ready"] == body["workers_alive"] == 1


def test_a_worker_is_ready_once_its_wakeup_socket_is_bound(tmp_path: Path) -> None:
    from dreamserve.config import Settings
    from dreamserve.jobs.wakeup import BUSY, WORK
    from dreamserve.server import WorkerPool

    pool = WorkerPool(Settings(data_dir=tmp_path, workers=2))
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])]
    procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
    try:
        for slot, proc in zip(pool.slots, procs, strict=True):
            slot.process = proc
        wake = tmp_path / "wake"
        assert pool.alive() == 2 and pool.ready(wake) == 0  # still loading their engines
        assert pool.ready(None) == 2  # without wakeups, alive is all there is to know
        (wake / WORK).mkdir(parents=True)
        (wake / (WORK + BUSY)).mkdir()
        (wake / WORK / f"{procs[0].pid}-abc123.sock").touch()
        assert pool.ready(wake) == 1
        (wake / (WORK + BUSY) / f"{procs[1].pid}-def456.sock").touch()  # busy is ready too
        assert pool.ready(wake) == 2
        procs[0].kill()
        procs[0].wait()
        assert pool.ready(wake) == 1  # a dead one's leftover socket does not count
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
