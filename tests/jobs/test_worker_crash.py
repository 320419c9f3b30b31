"""A worker process killed with SIGKILL mid-prediction loses nothing: the prediction re-runs
(at once via release_leases, as `serve` does at start, or when its lease expires) and ends, and
its webhooks are owed. SIGTERM hands the prediction back instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dreamserve.config import Settings
from dreamserve.jobs.model import Prediction
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore, open_store
from tests.jobs.conftest import new_prediction

ROOT = Path(__file__).resolve().parents[2]


def _spawn(store_url: str, lease: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.jobs.worker_main", store_url, str(lease)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def _until(
    store: SqlStore, prediction_id: str, check: Callable[[Prediction], bool], timeout: float = 20.0
) -> Prediction:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = store.get(prediction_id)
        if check(p):
            return p
        time.sleep(0.02)
    raise AssertionError(f"{prediction_id}: condition not met; now {store.get(prediction_id)}")


def _computing(p: Prediction) -> bool:
    return p.status is Status.PROCESSING and p.progress is not None


def _ended(p: Prediction) -> bool:
    return p.status.terminal


def _kill_mid_prediction(store: SqlStore, store_url: str, lease: float) -> str:
    p = store.submit(new_prediction(webhook="http://127.0.0.1:9/h"))
    proc = _spawn(store_url, lease)
    try:
        _until(store, p.id, _computing)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert store.get(p.id).status is Status.PROCESSING  # nobody holds it any more
    return p.id


def _rerun(store: SqlStore, store_url: str, prediction_id: str) -> Prediction:
    proc = _spawn(store_url, 30)
    try:
        done = _until(store, prediction_id, _ended)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    return done


def test_sigkill_then_release_leases_reruns_at_once(store: SqlStore, store_url: str) -> None:
    pid = _kill_mid_prediction(store, store_url, lease=30)
    assert store.release_leases() == 1
    done = _rerun(store, store_url, pid)
    assert done.status is Status.SUCCEEDED and done.attempts == 2
    events = [d.event for d in store.deliveries_for(pid)]
    assert events.count("start") == 1 and events[-1] == "completed"


def test_sigkill_then_lease_expiry_reruns(store: SqlStore, store_url: str) -> None:
    pid = _kill_mid_prediction(store, store_url, lease=1)
    assert store.recover(now=time.time() + 2) == 1
    done = _rerun(store, store_url, pid)
    assert done.status is Status.SUCCEEDED and done.attempts == 2


def test_sigterm_hands_the_prediction_back(store: SqlStore, store_url: str) -> None:
    p = store.submit(new_prediction())
    proc = _spawn(store_url, 30)
    try:
        _until(store, p.id, _computing)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    back = store.get(p.id)
    assert back.status is Status.STARTING and back.attempts == 0


def test_the_worker_command_releases_on_sigterm_and_a_new_one_finishes(tmp_path: Path) -> None:
    """run_worker for real: the shipped Runner with a test generator, signals wired."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DREAMSERVE_DATA_DIR": str(tmp_path),
        "DREAMSERVE_GENERATOR": "tests.support.generators:slow",
        "DREAMSERVE_TEST_STEPS": "20",
        "DREAMSERVE_TEST_STEP_SECONDS": "0.05",
    }
    cmd = [sys.executable, "-m", "dreamserve.cli", "worker"]
    store = open_store(Settings.load(data_dir=tmp_path).store_url)
    try:
        request = {"prompt": "a fox", "size": "1K", "aspect_ratio": "1:1", "seed": 3}
        p = store.submit(new_prediction(request=request))
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        try:
            _until(store, p.id, _computing)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        assert store.get(p.id).status is Status.STARTING
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        try:
            done = _until(store, p.id, _ended, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
    finally:
        store.close()
    assert done.status is Status.SUCCEEDED, done.error
    assert done.output == (f"outputs/{p.id}/output_0.jpg",)
    assert "Using seed: 3" in done.logs
