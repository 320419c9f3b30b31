"""Push wakeups between the processes of one service: "new work" and "prediction X changed".

The store notifies after each commit that matters (a submit: `WORK`; a status, progress or
log change: `CHANGES` with "<id> <status>"), and processes listen on one channel: workers on
`WORK`, API processes on `CHANGES`. A wakeup only ever saves latency: every listener still
polls the store as a fallback, so a lost message delays a prediction but never loses it.

Here (SQLite, one host) each listening process binds a UNIX datagram socket in
`<data_dir>/wake/<channel>/`, and a notify sends one datagram to every socket there. Sends
never block and never raise: a full peer is busy anyway (it drains everything on its next
look), and a socket whose process died is unlinked. PostgreSQL maps the same interface onto
LISTEN/NOTIFY, which is why messages are short strings on named channels and nothing more.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import select
import socket
from pathlib import Path
from typing import Protocol

log = logging.getLogger("dreamserve.wakeup")

WORK = "work"  # the queue has something: workers, try a claim
CHANGES = "changes"  # "<prediction id> <status>": API processes, wake its waiters
MAX_MESSAGE = 256  # bytes; a prediction id and a status fit many times over
SUFFIX = ".sock"


class Notifier(Protocol):
    """What the store needs: fire-and-forget, after commit, never failing the caller."""

    def notify(self, channel: str, message: str = "") -> None: ...


class Mailbox:
    """This process's socket on one channel (optional) plus sending to any channel.

    `listen=None` makes a send-only mailbox (e.g. a CLI command that submits work). With a
    data dir whose path is too long for a UNIX socket (about 100 bytes), listening is off and
    everything falls back to polling; a warning says so.
    """

    def __init__(self, root: Path, listen: str | None = None) -> None:
        self.root = Path(root)
        self.channel = listen
        self.path: Path | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        if listen is not None:
            self._bind(listen)

    def _bind(self, channel: str) -> None:
        folder = self.root / channel
        folder.mkdir(parents=True, exist_ok=True)
        # pid for the humans reading the folder, random so a reused pid never collides.
        path = folder / f"{os.getpid()}-{secrets.token_hex(3)}{SUFFIX}"
        try:
            self._sock.bind(str(path))
        except OSError as exc:  # too long a path, a read-only dir: poll instead
            log.warning("no push wakeups on %s (%s); falling back to polling", path, exc)
            return
        self.path = path

    @property
    def listening(self) -> bool:
        return self.path is not None

    def fileno(self) -> int:
        return self._sock.fileno()

    def notify(self, channel: str, message: str = "") -> None:
        data = message.encode()[:MAX_MESSAGE]
        try:
            peers = list(os.scandir(self.root / channel))
        except OSError:  # nobody ever listened on this channel
            return
        for entry in peers:
            if entry.name.endswith(SUFFIX):
                self._send(entry.path, data)

    def _send(self, path: str, data: bytes) -> None:
        try:
            self._sock.sendto(data, path)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                # Nobody reads there any more: its process died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(path)
            # EAGAIN (its buffer is full) and anything else: the peer's polling covers it.

    def drain(self) -> list[str]:
        """Every message waiting now, oldest first; never blocks."""
        messages: list[str] = []
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except (BlockingIOError, InterruptedError):
                return messages
            except OSError:
                return messages
            messages.append(data.decode(errors="replace"))

    def wait(self, timeout: float) -> list[str]:
        """Block up to `timeout` seconds for messages (a thread's version of add_reader)."""
        if not self.listening:
            select.select([], [], [], max(0.0, timeout))
            return []
        readable, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
        return self.drain() if readable else []

    def poke(self) -> None:
        """Wake this mailbox's own `wait` (e.g. to stop a worker at once)."""
        if self.path is not None:
            self._send(str(self.path), b"")

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None
        self._sock.close()


def wake_root(data_dir: Path) -> Path:
    """Where one service's mailboxes live: beside its store, in the data dir."""
    return Path(data_dir) / "wake"


def changed(prediction_id: str, status: str) -> str:
    return f"{prediction_id} {status}"


def parse_changed(message: str) -> tuple[str, str]:
    """(prediction id, status) from a CHANGES message; status "" when it carried none."""
    prediction_id, _, status = message.partition(" ")
    return prediction_id, status
