"""kill -9 of the whole service at arbitrary instants loses nothing that was accepted.

Each round SIGKILLs `serve` (its workers die with it) at a different moment while predictions
are queued, computing and finishing; the last round runs to the end. Every accepted prediction
must end succeeded (re-run where it was interrupted) and every owed completed webhook must arrive.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import httpx

from tests.support.live import start_server, stop_server
from tests.support.receiver import webhook_receiver

SLOW = {"DREAMSERVE_TEST_STEPS": "10", "DREAMSERVE_TEST_STEP_SECONDS": "0.1"}
GENERATOR = "tests.support.generators:slow"


def _submit(url: str, hook: str, n: int) -> str:
    r = httpx.post(
        f"{url}/v1/models/bytedance/seedream-4/predictions",
        json={
            "input": {"prompt": f"crash test {n}", "size": "1K"},
            "webhook": hook,
            "webhook_events_filter": ["completed"],
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_kill_9_at_any_instant_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(1234)  # fixed, so a failure reproduces
    ids: list[str] = []
    with webhook_receiver() as receiver:
        for round_no in range(4):
            server = start_server(tmp_path, generator=GENERATOR, workers=2, env=SLOW)
            ids += [_submit(server.url, receiver.url, 3 * round_no + k) for k in range(3)]
            time.sleep(rng.uniform(0.05, 1.5))  # somewhere in queue / compute / finish
            server.kill9()

        server = start_server(tmp_path, generator=GENERATOR, workers=2, env=SLOW)
        try:
            deadline = time.monotonic() + 120
            statuses: dict[str, str] = {}
            while time.monotonic() < deadline:
                statuses = {
                    i: httpx.get(f"{server.url}/v1/predictions/{i}").json()["status"] for i in ids
                }
                if all(s == "succeeded" for s in statuses.values()):
                    break
                time.sleep(0.5)
            assert all(s == "succeeded" for s in statuses.values()), statuses

            def completed_ids() -> set[str]:
                return {d.json["id"] for d in receiver.accepted()}

            while time.monotonic() < deadline and not set(ids) <= completed_ids():
                time.sleep(0.2)
            assert set(ids) <= completed_ids()
        finally:
            stop_server(server)
