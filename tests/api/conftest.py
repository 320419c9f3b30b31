"""The API over a real SqlStore and DirBlobs in tmp_path, called in-process through httpx.

`FakeWorker` plays the worker's part through the store (claim, progress, finish with real
output blobs), so waiting, streaming and cancelling are exercised against real state changes.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from dreamserve.api.app import create_app, wire_services
from dreamserve.api.auth import hash_token, new_token
from dreamserve.api.context import Services
from dreamserve.blobs import DirBlobs
from dreamserve.config import Settings
from dreamserve.jobs.model import Claim, Prediction
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore, open_store

BASE_URL = "http://testserver"
SEEDREAM = "/v1/models/bytedance/seedream-4/predictions"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, public_base_url=BASE_URL, fetch_max_bytes=256 * 1024)


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlStore]:
    s = open_store(settings.store_url)
    yield s
    s.close()


@pytest.fixture
def blobs(tmp_path: Path) -> DirBlobs:
    return DirBlobs(tmp_path / "blobs")


@pytest.fixture
def services(settings: Settings, store: SqlStore, blobs: DirBlobs) -> Services:
    return wire_services(settings, store, blobs, "whsec_dGVzdA==")


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        yield c


def make_key(store: SqlStore, name: str) -> tuple[str, str]:
    """(key id, token) of a new API key."""
    token = new_token()
    key = store.create_key(name, hash_token(token))
    return key.id, token


def png_bytes(size: tuple[int, int] = (8, 8), colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FakeWorker:
    """Does a worker's store calls for one prediction at a time, with real output blobs."""

    store: SqlStore
    blobs: DirBlobs
    worker_id: str = "fake-worker"

    async def claim(self, timeout: float = 5.0) -> Claim:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            claim = await asyncio.to_thread(self.store.claim, self.worker_id, 30.0)
            if claim is not None:
                return claim
            await asyncio.sleep(0.005)
        raise AssertionError("nothing to claim")

    async def step(self, prediction_id: str, step: int, total: int, log: str | None) -> bool:
        return await asyncio.to_thread(
            self.store.progress, prediction_id, self.worker_id, step, total, log
        )

    async def succeed(self, prediction_id: str, count: int = 1) -> Prediction:
        keys = []
        for i in range(count):
            key = f"outputs/{prediction_id}/output_{i}.png"
            self.blobs.put(key, png_bytes(colour="blue"), "image/png", None)
            keys.append(key)
        return await self.finish(prediction_id, Status.SUCCEEDED, keys)

    async def finish(
        self,
        prediction_id: str,
        status: Status,
        output: list[str] | None = None,
        error: str | None = None,
    ) -> Prediction:
        return await asyncio.to_thread(
            self.store.finish, prediction_id, self.worker_id, status, output or [], error, {}
        )

    async def run_one(self, steps: int = 2, count: int = 1) -> Prediction:
        claim = await self.claim()
        pid = claim.prediction.id
        for s in range(1, steps + 1):
            await self.step(pid, s, steps, f"step {s}/{steps}")
        return await self.succeed(pid, count)


@pytest.fixture
def worker(store: SqlStore, blobs: DirBlobs) -> FakeWorker:
    return FakeWorker(store, blobs)
