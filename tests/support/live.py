"""Start a real `dreamserve serve` on a free 127.0.0.1 port and wait until it is ready.

Shared by the end-to-end tests and bench/ so both exercise the same real process tree.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def kill9(self) -> None:
        """SIGKILL the serve process; its workers die with it (PR_SET_PDEATHSIG)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    data_dir: Path,
    generator: str = "tests.support.generators:instant",
    workers: int = 1,
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    ready_timeout: float = 60.0,
) -> LiveServer:
    port = port or free_port()
    root = Path(__file__).resolve().parents[2]
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), full_env.get("PYTHONPATH")]))
    cmd = [
        sys.executable, "-m", "dreamserve.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
        "--workers", str(workers), "--generator", generator, *extra_args,
    ]  # fmt: skip
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"serve-{port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", data_dir, proc, log_path)
    wait_ready(server, ready_timeout, want_workers=workers)
    return server


def wait_ready(server: LiveServer, timeout: float, want_workers: int = 1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"dreamserve exited with {server.process.returncode}:\n{server.log()}"
            )
        try:
            r = httpx.get(f"{server.url}/health", timeout=1.0)
            if r.status_code == 200 and r.json().get("workers_alive", 0) >= want_workers:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"dreamserve was not ready in {timeout}s:\n{server.log()}")


def stop_server(server: LiveServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


@contextmanager
def running_server(data_dir: Path, **kwargs: object) -> Iterator[LiveServer]:
    server = start_server(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_server(server)
