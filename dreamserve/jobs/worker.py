"""The worker loop: claim a prediction, keep its lease alive, run it, record the outcome.

`dreamserve worker` (and each worker `serve` starts) runs `run_worker`. The loop is built to
never die from one prediction: every outcome, an exception included, becomes a finished
prediction, and a failure of the store itself only costs a pause. If the process is killed,
its lease lapses and the store re-runs the prediction elsewhere (or `serve` releases it at once).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Protocol

from dreamserve.config import Settings
from dreamserve.engine.base import Canceled, CancelFn, Progress, ProgressFn
from dreamserve.jobs.model import Claim, Prediction, Store
from dreamserve.jobs.states import Status
from dreamserve.jobs.store import DEADLINE_ERROR
from dreamserve.jobs.wakeup import WORK, Mailbox

log = logging.getLogger("dreamserve.worker")

IDLE_MIN, IDLE_MAX, IDLE_GROWTH = 0.001, 0.1, 1.3  # seconds between polls of an idle queue
# With push wakeups an idle worker polls only to catch a lost one.
IDLE_FALLBACK = 0.1
RECOVER_EVERY = 1.0  # seconds between store.recover() passes (expired leases, deadlines)
PROGRESS_INTERVAL = 0.1  # at most ~10 progress writes a second
CANCEL_CHECK_INTERVAL = 0.05  # between cheap reads of the cancel flag when no write told us
STORE_ERROR_PAUSE = 0.5


class RunResult(Protocol):
    @property
    def blob_keys(self) -> tuple[str, ...]: ...
    @property
    def metrics(self) -> dict[str, float]: ...


class PredictionRunner(Protocol):
    """dreamserve.runner.Runner, or a test double."""

    def run(
        self, prediction: Prediction, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> RunResult: ...


class Job:
    """One claimed prediction: throttled progress writes and the should_cancel answer."""

    def __init__(self, store: Store, claim: Claim, stopping: threading.Event) -> None:
        self.store, self.claim, self.stopping = store, claim, stopping
        self.id, self.worker_id = claim.prediction.id, claim.worker_id
        self.deadline = claim.prediction.deadline
        self.lost = threading.Event()  # set by the heartbeat when another worker took it
        self.cancel_requested = False
        self.logs: list[str] = []
        self.unsent: Progress | None = None
        self.last_write = self.last_check = time.monotonic()

    def on_progress(self, progress: Progress) -> None:
        if progress.message:
            self.logs.append(progress.message)
        self.unsent = progress
        if time.monotonic() - self.last_write >= PROGRESS_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write the newest progress and the buffered log lines."""
        if self.unsent is None:
            return
        p, lines = self.unsent, self.take_logs()
        self.unsent = None
        self.last_write = self.last_check = time.monotonic()
        try:
            if self.store.progress(self.id, self.worker_id, p.step, p.total, lines):
                self.cancel_requested = True
        except Exception:  # progress is best effort: the computation must not fail for it
            log.exception("prediction %s: progress not recorded", self.id)

    def take_logs(self) -> str | None:
        lines, self.logs = self.logs, []
        return "\n".join(lines) if lines else None

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def should_cancel(self) -> bool:
        if self.cancel_requested or self.lost.is_set() or self.stopping.is_set():
            return True
        if self.past_deadline():
            return True
        # Progress writes are throttled, so between them a cheap read keeps a cancel within
        # one step (or CANCEL_CHECK_INTERVAL when steps are faster than that).
        if time.monotonic() - self.last_check >= CANCEL_CHECK_INTERVAL:
            self.last_check = time.monotonic()
            try:
                self.cancel_requested = self.store.should_stop(self.id, self.worker_id)
            except Exception:
                log.exception("prediction %s: cancel flag not read", self.id)
        return self.cancel_requested


class Worker:
    def __init__(
        self,
        store: Store,
        runner: PredictionRunner,
        lease_seconds: float = 30.0,
        input_errors: Sequence[type[Exception]] = (),
        worker_id: str | None = None,
        wakeup: Mailbox | None = None,
    ) -> None:
        self.store, self.runner, self.lease_seconds = store, runner, lease_seconds
        self.wakeup = wakeup if wakeup is not None and wakeup.listening else None
        self.input_errors = tuple(input_errors)
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stopping = threading.Event()
        self.stopped = threading.Event()  # the loop has ended: the heartbeat may end too
        self.current: Job | None = None

    def stop(self) -> None:
        """Stop claiming; the current prediction stops at its next step and is released."""
        self.stopping.set()
        if self.wakeup is not None:
            self.wakeup.poke()  # an idle loop waits on the mailbox, not on `stopping`

    def run(self) -> None:
        beat = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
        beat.start()
        idle, next_recover = IDLE_MIN, 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_recover:
                    next_recover = time.monotonic() + RECOVER_EVERY
                    self.store.recover()
                ran = self.run_once()
            except Exception:  # the store failed us; the leases protect the work
                log.exception("worker %s: store error; pausing", self.id)
                self.stopping.wait(STORE_ERROR_PAUSE)
                continue
            if ran:
                idle = IDLE_MIN
            elif self.wakeup is not None:
                # Back among the idle workers a submit wakes; what was submitted while we
                # were still busy woke nobody, so look once more before waiting.
                if not self.wakeup.set_idle(True):
                    self.wakeup.wait(IDLE_FALLBACK)  # a submit's WORK wakeup ends it at once
            else:
                self.stopping.wait(idle)
                idle = min(IDLE_MAX, idle * IDLE_GROWTH)
        self.stopped.set()
        beat.join(timeout=1.0)

    def run_once(self) -> bool:
        """Claim and run one prediction; False when the queue was empty."""
        claim = self.store.claim(self.id, self.lease_seconds)
        if claim is None:
            return False
        if self.wakeup is not None and self.wakeup.set_idle(False):
            self._pass_on()
        job = Job(self.store, claim, self.stopping)
        self.current = job
        try:
            self._execute(job)
        finally:
            self.current = None
        return True

    def _pass_on(self) -> None:
        """A submit wakes one idle worker; if more is queued, wake another for it."""
        assert self.wakeup is not None
        try:
            if self.store.queue_depth() > 0:
                self.wakeup.notify(WORK)
        except Exception:  # the others' polling covers it
            log.exception("worker %s: could not pass on the queue", self.id)

    def _execute(self, job: Job) -> None:
        p = job.claim.prediction
        try:
            result = self.runner.run(p, job.on_progress, job.should_cancel)
        except Canceled:
            self._canceled(job)
        except self.input_errors as exc:
            self._finish(job, Status.FAILED, error=str(exc))
        except Exception as exc:
            log.exception("prediction %s failed", p.id)
            self._finish(job, Status.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            self._finish(job, Status.SUCCEEDED, result.blob_keys, metrics=result.metrics)

    def _canceled(self, job: Job) -> None:
        if job.lost.is_set():
            log.warning("prediction %s: lease lost; left to its new worker", job.id)
        elif job.past_deadline():  # first: the store's cancel flag also says so then
            self._finish(job, Status.CANCELED, error=DEADLINE_ERROR)
        elif job.cancel_requested:
            self._finish(job, Status.CANCELED)
        elif self.stopping.is_set():
            self.store.release(job.id, self.id)  # re-runs right away on another worker
        else:
            self._finish(job, Status.CANCELED)

    def _finish(
        self,
        job: Job,
        status: Status,
        output: tuple[str, ...] = (),
        error: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        self.store.finish(
            job.id, self.id, status, output, error=error, metrics=metrics, log=job.take_logs()
        )

    def _heartbeat(self) -> None:
        """Renew the current lease every lease/3 seconds; a refusal means another worker has
        it, so the job stops at its next step instead of computing for nothing."""
        while not self.stopped.wait(self.lease_seconds / 3):
            job = self.current
            if job is None:
                continue
            try:
                if not self.store.heartbeat(job.id, self.id, self.lease_seconds):
                    job.lost.set()
            except Exception:
                log.exception("heartbeat for %s failed", job.id)


def run_worker(settings: Settings) -> int:
    """The `dreamserve worker` process: load the engine once, then run until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from dreamserve.engine.base import load_generator
    from dreamserve.jobs.store import open_store
    from dreamserve.jobs.wakeup import wake_root
    from dreamserve.runner import InputError, Runner

    store = open_store(settings.store_url, max_attempts=settings.max_attempts)
    try:
        generator = load_generator(settings.generator)
    except Exception:
        log.exception("could not load generator %r", settings.generator)
        return 1
    runner = Runner(settings, store, generator)
    # Bound only now that the engine is loaded: `serve` counts a worker as ready by its socket.
    mailbox = Mailbox(wake_root(settings.data_dir), listen=WORK)
    store.notifier = mailbox
    worker = Worker(
        store, runner, settings.lease_seconds, input_errors=(InputError,), wakeup=mailbox
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("worker %s: signal %d, stopping", worker.id, signum)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker %s ready (generator %s)", worker.id, generator.name)
    try:
        worker.run()
    finally:
        runner.close()
        store.close()
        mailbox.close()
    return 0
