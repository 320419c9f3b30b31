"""`dreamserve serve`: one API process, N worker processes, one store.

The API process (this one) never imports torch: workers are separate `dreamserve worker`
processes that load the engine. They learn their settings through DREAMSERVE_* variables and die
with this process (PR_SET_PDEATHSIG), so a kill -9 of the service leaves no orphan computing
under a lease nobody will renew. On start we hold an exclusive lock on the data dir, which makes
it safe to release every lease at once: whatever was running when the last service died re-runs
now instead of after its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING

import uvicorn

from dreamserve.config import Settings
from dreamserve.jobs.wakeup import BUSY, WORK

if TYPE_CHECKING:
    from dreamserve.api.context import Services
    from dreamserve.jobs.wakeup import Mailbox

log = logging.getLogger("dreamserve.server")

MAINTENANCE_SECONDS = 1.0  # how often expired leases and Cancel-After deadlines are enforced
SWEEP_SECONDS = 60.0  # how often expired output and upload files are deleted
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)  # seconds before restarting a dead worker


class DataDirBusy(Exception):
    pass


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data dir; released by the kernel even on kill -9."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = open(data_dir / "serve.lock", "w")  # noqa: SIM115 - held for the lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirBusy(
            f"another `dreamserve serve` is using {data_dir}; stop it or pick another --data-dir"
        ) from None
    try:
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a worker process exactly these settings."""
    env = dict(os.environ)
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is not None:
            env[f"DREAMSERVE_{f.name.upper()}"] = str(value)
    # Test and bench generators are loaded by spec from the working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    return env


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the serve process dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class WorkerSlot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


class WorkerPool:
    """Starts N `dreamserve worker` processes and restarts any that die."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = settings_env(settings)
        self.slots = [WorkerSlot(i) for i in range(settings.workers)]

    def _spawn(self, slot: WorkerSlot) -> None:
        cmd = [sys.executable, "-m", "dreamserve.cli", "worker"]
        slot.process = subprocess.Popen(cmd, env=self.env, preexec_fn=_die_with_parent)
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def alive(self) -> int:
        return sum(1 for s in self.slots if s.process is not None and s.process.poll() is None)

    def ready(self, wake: Path | None) -> int:
        """Alive workers that have loaded their engine: a worker binds its wakeup socket
        (`<pid>-<random>.sock` under `wake`) only then. With no wakeups (`wake` None) being
        alive is all we can know."""
        pids = {str(s.process.pid) for s in self.slots if s.process and s.process.poll() is None}
        if wake is None:
            return len(pids)
        bound: set[str] = set()
        for folder in (WORK, WORK + BUSY):
            with contextlib.suppress(OSError):
                bound.update(e.name.partition("-")[0] for e in os.scandir(wake / folder))
        return len(pids & bound)

    def check(self) -> None:
        """Restart dead workers, with a growing delay so a crash loop does not spin."""
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is None or slot.process.poll() is None:
                continue
            if slot.next_start == 0.0:
                delay = RESTART_BACKOFF[min(slot.restarts, len(RESTART_BACKOFF) - 1)]
                log.warning(
                    "worker %d exited with %s; restarting in %.1fs",
                    slot.index,
                    slot.process.returncode,
                    delay,
                )
                slot.next_start = now + delay
            elif now >= slot.next_start:
                slot.restarts += 1
                slot.next_start = 0.0
                self._spawn(slot)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM lets a worker finish or release its prediction; SIGKILL after timeout."""
        procs = [s.process for s in self.slots if s.process is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + timeout
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait()


def check_open_bind(settings: Settings, has_keys: bool) -> str | None:
    """Why the service must refuse to start, or None. Prints the open-mode notice itself."""
    if has_keys:
        return None
    if settings.is_loopback or settings.insecure_open:
        print(
            f"dreamserve: no API keys exist, so {settings.base_url} runs OPEN (anyone who can "
            "reach it can use it). Create one with `dreamserve keys create NAME`.",
            file=sys.stderr,
        )
        return None
    return (
        f"refusing to serve on {settings.host} with no API keys: anyone on the network could use "
        "it. Create a key with `dreamserve keys create NAME`, bind to 127.0.0.1, or pass "
        "--insecure-open."
    )


def serve(settings: Settings) -> int:
    """Run the service until SIGINT/SIGTERM. Returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        with data_dir_lock(settings.data_dir):
            return asyncio.run(_serve(settings))
    except DataDirBusy as exc:
        print(f"dreamserve: {exc}", file=sys.stderr)
        return 2


async def _serve(settings: Settings) -> int:
    from dreamserve.api.app import build_services, create_app, render_webhook
    from dreamserve.jobs.webhooks import run_dispatcher

    services = build_services(settings)
    mailbox = _push_wakeups(services)
    store = services.store
    refusal = check_open_bind(settings, store.has_keys())
    if refusal:
        print(f"dreamserve: {refusal}", file=sys.stderr)
        return 2
    released = store.release_leases()
    requeued = store.recover()
    if released or requeued:
        log.info("recovered %d interrupted and %d expired predictions", released, requeued)

    pool = WorkerPool(settings)
    wake = mailbox.root if mailbox.listening else None
    services.health = lambda: {
        "workers": settings.workers,
        "workers_alive": pool.alive(),
        "workers_ready": pool.ready(wake),
    }
    pool.start()
    stop = asyncio.Event()
    secret = services.webhook_secret
    tasks = [
        asyncio.create_task(
            run_dispatcher(store, lambda p: render_webhook(p, settings), secret, stop)
        ),
        asyncio.create_task(_maintain(services, pool, stop)),
    ]
    config = uvicorn.Config(
        create_app(services), host=settings.host, port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    print(f"dreamserve: serving on {settings.base_url} with {settings.workers} worker(s)")
    try:
        await server.serve()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await services.predictions.watcher.aclose()
        await asyncio.to_thread(pool.stop)
        mailbox.close()
    return 0


def _push_wakeups(services: Services) -> Mailbox:
    """Workers learn of submits, and this process of changes, by push instead of polling."""
    from dreamserve.jobs.store import SqlStore
    from dreamserve.jobs.wakeup import CHANGES, Mailbox, wake_root
    from dreamserve.service import ChangeWatcher, PredictionService

    mailbox = Mailbox(wake_root(services.settings.data_dir), listen=CHANGES)
    if isinstance(services.store, SqlStore):
        services.store.notifier = mailbox
    watcher = ChangeWatcher(services.store, mailbox)
    services.predictions = PredictionService(services.store, watcher)
    return mailbox


async def _maintain(services: Services, pool: WorkerPool, stop: asyncio.Event) -> None:
    """Enforce leases and deadlines, restart dead workers, sweep expired files.

    Workers run store.recover() too, but only between predictions: while every worker is busy
    on a long one, this pass is what cancels queued predictions past their Cancel-After. An
    idle pass is three indexed reads and takes no write lock.
    """
    store, blobs = services.store, services.blobs
    last_sweep = 0.0
    while not stop.is_set():
        try:
            pool.check()
            await asyncio.to_thread(store.recover)
            if time.monotonic() - last_sweep > SWEEP_SECONDS:
                last_sweep = time.monotonic()
                await asyncio.to_thread(blobs.sweep, time.time())
        except Exception:  # keep maintaining; a failing pass must not stop the service
            log.exception("maintenance pass failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), MAINTENANCE_SECONDS)
