"""The worker loop with a fake runner: outcomes, cancel within a step, deadlines, lease loss."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dreamserve.config import Settings
from dreamserve.jobs import worker as worker_module
from dreamserve.jobs.model import Prediction
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import SqlStore, open_store
from dreamserve.jobs.worker import Worker, run_worker
from tests.jobs.conftest import new_prediction
from tests.jobs.fakes import FakeInputError, StepRunner


def _worker(store: SqlStore, runner: StepRunner, lease: float = 30.0) -> Worker:
    return Worker(store, runner, lease, input_errors=(FakeInputError,), worker_id="w1")


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=10)
        assert not thread.is_alive()


def _wait(store: SqlStore, prediction_id: str, timeout: float = 10.0) -> Prediction:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = store.get(prediction_id)
        if p.status.terminal:
            return p
        time.sleep(0.01)
    raise AssertionError(f"{prediction_id} still {store.get(prediction_id).status}")


def test_success_records_output_logs_and_metrics(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    assert _worker(store, StepRunner(steps=3)).run_once() is True
    done = store.get(p.id)
    assert done.status is Status.SUCCEEDED
    assert done.output == (f"outputs/{p.id}/output_0.png",)
    assert done.logs == "step 1/3\nstep 2/3\nstep 3/3\n"  # buffered lines all arrive
    assert done.metrics["image_count"] == 1.0 and "predict_time" in done.metrics
    assert _worker(store, StepRunner()).run_once() is False


def test_failures_end_the_prediction_not_the_worker(store: SqlStore) -> None:
    broken = store.submit(new_prediction(request={"prompt": "fail"}))
    bad = store.submit(new_prediction(request={"prompt": "bad input"}))
    fine = store.submit(new_prediction())
    with running(_worker(store, StepRunner(steps=1))):
        assert _wait(store, fine.id).status is Status.SUCCEEDED
    assert store.get(broken.id).status is Status.FAILED
    assert store.get(broken.id).error == "RuntimeError: the engine broke"
    assert store.get(bad.id).error == "image_input[0]: not an image"


def test_cancel_stops_within_one_step(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "CANCEL_CHECK_INTERVAL", 0.0)
    p = store.submit(new_prediction())

    def cancel_at_step_3(pred: Prediction, step: int) -> None:
        if step == 3:
            store.request_cancel(pred.id)

    runner = StepRunner(steps=50, on_step=cancel_at_step_3)
    _worker(store, runner).run_once()
    assert runner.steps_done[p.id] == 3
    done = store.get(p.id)
    assert done.status is Status.CANCELED and done.error is None


def test_cancel_from_the_api_frees_the_worker(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    nxt = store.submit(new_prediction())
    runner = StepRunner(steps=1000, step_seconds=0.01)
    with running(_worker(store, runner)):
        while store.get(p.id).progress is None:
            time.sleep(0.01)
        store.request_cancel(p.id)
        assert _wait(store, p.id).status is Status.CANCELED
        assert runner.steps_done[p.id] < 1000
        store.request_cancel(nxt.id)
        assert _wait(store, nxt.id).status is Status.CANCELED


def test_cancel_after_deadline_stops_a_running_prediction(store: SqlStore) -> None:
    p = store.submit(new_prediction(cancel_after=0.2))
    runner = StepRunner(steps=1000, step_seconds=0.01)
    _worker(store, runner).run_once()
    done = store.get(p.id)
    assert done.status is Status.CANCELED
    assert done.error == "canceled: the Cancel-After deadline passed"
    assert runner.steps_done[p.id] < 1000


def test_a_worker_that_lost_its_lease_stops_and_overwrites_nothing(store: SqlStore) -> None:
    p = store.submit(new_prediction())

    def taken_over_at_step_2(pred: Prediction, step: int) -> None:
        if step == 2:  # this worker looks dead: its lease expires, another worker claims it
            store.recover(now=time.time() + 60)
            assert store.claim("w2", 30) is not None

    runner = StepRunner(steps=50, step_seconds=0.01, on_step=taken_over_at_step_2)
    _worker(store, runner, lease=30).run_once()
    assert runner.steps_done[p.id] < 50
    current = store.get(p.id)
    assert current.status is Status.PROCESSING and current.attempts == 2
    assert store.finish(p.id, "w2", Status.SUCCEEDED, ["x"]).status is Status.SUCCEEDED


def test_heartbeat_keeps_a_long_prediction_alive(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    runner = StepRunner(steps=12, step_seconds=0.05)  # 0.6 s under a 0.3 s lease
    with running(_worker(store, runner, lease=0.3)):
        done = _wait(store, p.id)
        store.recover()
    assert done.status is Status.SUCCEEDED and done.attempts == 1


def test_stopping_releases_the_current_prediction(store: SqlStore) -> None:
    p = store.submit(new_prediction())
    runner = StepRunner(steps=1000, step_seconds=0.01)
    with running(_worker(store, runner)):
        while store.get(p.id).progress is None:
            time.sleep(0.01)
    released = store.get(p.id)  # the context manager stopped the worker
    assert released.status is Status.STARTING and released.attempts == 0
    assert _worker(store, StepRunner(steps=1)).run_once()
    assert store.get(p.id).status is Status.SUCCEEDED


def test_progress_writes_are_throttled(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    real = store.progress

    def counting(*args: object, **kwargs: object) -> bool:
        writes.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "progress", counting)
    p = store.submit(new_prediction())
    _worker(store, StepRunner(steps=200)).run_once()  # 200 instant steps
    assert len(writes) <= 2
    assert store.get(p.id).logs.count("\n") == 200  # yet every log line is kept


def test_concurrent_workers_run_each_prediction_exactly_once(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(4)]  # one store each, as separate processes
    ids = [stores[0].submit(new_prediction()).id for _ in range(60)]
    runs: list[str] = []
    lock = threading.Lock()

    def record(pred: Prediction, step: int) -> None:
        with lock:
            runs.append(pred.id)

    workers = [
        Worker(s, StepRunner(steps=1, on_step=record), 30, worker_id=f"w{i}")
        for i, s in enumerate(stores)
    ]
    with contextlib.ExitStack() as stack:
        for w in workers:
            stack.enter_context(running(w))
        for pid in ids:
            assert _wait(stores[0], pid).status is Status.SUCCEEDED
    assert sorted(runs) == sorted(ids)
    assert all(stores[0].get(pid).attempts == 1 for pid in ids)
    for s in stores:
        s.close()


def test_run_worker_exits_nonzero_when_the_engine_cannot_load(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, generator="tests.jobs.no_such_module:factory")
    assert run_worker(settings) == 1


def test_with_a_mailbox_submits_wake_the_worker_and_busy_it_steps_aside(
    tmp_path: Path, store_url: str, store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dreamserve.jobs.wakeup import WORK, Mailbox

    root = tmp_path / "w"
    mailbox, sender = Mailbox(root, WORK), Mailbox(root)
    api = open_store(store_url, notifier=sender)  # the API's store: it pushes WORK
    seen_busy: list[bool] = []

    def on_step(p: Prediction, step: int) -> None:
        seen_busy.append(not mailbox.idle)

    worker = Worker(store, StepRunner(on_step=on_step), wakeup=mailbox, worker_id="w1")
    try:
        # Polls a minute apart: only the pushed wakeups can get these done in the test.
        monkeypatch.setattr(worker_module, "IDLE_FALLBACK", 60.0)
        with running(worker):
            ids = [api.submit(new_prediction()).id for _ in range(3)]
            assert all(_wait(store, i, timeout=30).status is Status.SUCCEEDED for i in ids)
        assert seen_busy and all(seen_busy)  # out of the idle set while it computes
    finally:
        api.close()
        mailbox.close()
        sender.close()
