"""Push wakeups between the processes of one service: "new work" and "prediction X changed".

The store notifies after each commit that matters (a submit: `WORK`; a status, progress or
log change: `CHANGES` with "<id> <status>"), and processes listen on one channel: workers on
`WORK`, API processes on `CHANGES`. A wakeup only ever saves latency: every listener still
polls the store as a fallback, so a lost message delays a prediction but never loses it.

Here (SQLite, one host) each listening process binds a UNIX datagram socket in
`<data_dir>/wake/<channel>/`, and a notify sends one datagram to every socket there, except on
WORK: one item needs one worker, and waking them all cost each loser a claim attempt (about
1 ms of CPU per prediction with two workers), so a busy worker steps out of the folder
(`set_idle(False)`) and a WORK notify wakes one idle worker. Sends never block and never raise:
a full peer is busy anyway (it drains everything on its next look), and a socket whose process
died is unlinked. PostgreSQL maps the same interface onto LISTEN/NOTIFY (there every listener
hears a WORK notify and SKIP LOCKED sorts them out), which is why messages are short strings
on named channels and nothing more.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import secrets
import select
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from dreamserve.jobs.model import Prediction
from dreamserve.jobs.states import Status

log = logging.getLogger("dreamserve.wakeup")

WORK = "work"  # the queue has something: workers, try a claim
CHANGES = "changes"  # "<prediction id> <status>": API processes, wake its waiters
ONE_LISTENER = frozenset({WORK})  # channels whose notify wakes one (idle) listener, not all
MAX_MESSAGE = 8000  # bytes: PostgreSQL's NOTIFY payload limit; longer ones are not sent
# What a prediction's row can change after submit. A wakeup for a finished prediction carries
# these as they were committed (when they fit), so a waiter that holds the prediction as
# submitted answers without reading the row back: one store call fewer per `Prefer: wait`.
MUTABLE = (
    "status", "started_at", "completed_at", "output", "logs", "error", "progress", "metrics",
    "cancel_requested", "attempts",
)  # fmt: skip
SUFFIX = ".sock"
BUSY = ".busy"  # <channel>.busy/: where a busy listener's socket waits out its work


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
        self.idle = True
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
        if channel in ONE_LISTENER:
            (self.root / (channel + BUSY)).mkdir(exist_ok=True)
            _remove_dead(self.root / (channel + BUSY))  # senders never look in there

    def set_idle(self, idle: bool) -> bool:
        """On a ONE_LISTENER channel, join (idle) or leave (busy) the listeners a notify may
        wake; messages still arrive either way. True when the state changed."""
        if self.path is None or self.channel not in ONE_LISTENER or idle == self.idle:
            return False
        folder = self.channel if idle else self.channel + BUSY
        target = self.root / folder / self.path.name
        try:
            os.rename(self.path, target)  # the bound socket moves with its file
        except OSError as exc:
            log.warning("could not move %s (%s)", self.path, exc)
            return False
        self.path, self.idle = target, idle
        return True

    @property
    def listening(self) -> bool:
        return self.path is not None

    def fileno(self) -> int:
        return self._sock.fileno()

    def notify(self, channel: str, message: str = "") -> None:
        data = message.encode()
        if len(data) > MAX_MESSAGE:
            log.warning("wakeup on %s not sent: %d bytes is over the limit", channel, len(data))
            return
        try:
            peers = [e.path for e in os.scandir(self.root / channel) if e.name.endswith(SUFFIX)]
        except OSError:  # nobody ever listened on this channel
            return
        if channel in ONE_LISTENER:
            random.shuffle(peers)  # spread the work; the first that takes it is enough
        for path in peers:
            if self._send(path, data) and channel in ONE_LISTENER:
                return

    def _send(self, path: str, data: bytes) -> bool:
        try:
            self._sock.sendto(data, path)
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                # Nobody reads there any more: its process died without cleaning up.
                with contextlib.suppress(OSError):
                    os.unlink(path)
            # ENOENT (it just moved: busy now), EAGAIN (its buffer is full), anything else:
            # the peer's polling covers it.
            return False
        return True

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


def _remove_dead(folder: Path) -> None:
    """Unlink the sockets of dead processes (connect is refused; a live one is not woken)."""
    for entry in os.scandir(folder):
        if not entry.name.endswith(SUFFIX):
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(entry.path)
            except ConnectionRefusedError:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:
                pass


def wake_root(data_dir: Path) -> Path:
    """Where one service's mailboxes live: beside its store, in the data dir."""
    return Path(data_dir) / "wake"


def changed(prediction_id: str, status: str, final: Prediction | None = None) -> str:
    """A CHANGES message: "<id> <status>", plus the committed MUTABLE fields of a finished
    prediction when they fit in one message."""
    message = f"{prediction_id} {status}"
    if final is None:
        return message
    state = json.dumps({k: getattr(final, k) for k in MUTABLE}, separators=(",", ":"))
    with_state = f"{message} {state}"
    return with_state if len(with_state.encode()) <= MAX_MESSAGE else message


def parse_changed(message: str) -> tuple[str, str, dict[str, Any] | None]:
    """(prediction id, status, final fields or None) from a CHANGES message; status "" when it
    carried none."""
    prediction_id, _, rest = message.partition(" ")
    status, _, state = rest.partition(" ")
    final = None
    if state:
        try:
            final = json.loads(state)
        except ValueError:
            final = None
    return prediction_id, status, final if isinstance(final, dict) else None


def with_final(submitted: Prediction, final: dict[str, Any]) -> Prediction:
    """The prediction as submitted, brought to its committed final state."""
    progress = final["progress"]
    return replace(
        submitted,
        status=Status(final["status"]),
        started_at=final["started_at"],
        completed_at=final["completed_at"],
        output=tuple(final["output"]),
        logs=final["logs"],
        error=final["error"],
        progress=None if progress is None else (progress[0], progress[1]),
        metrics=final["metrics"],
        cancel_requested=bool(final["cancel_requested"]),
        attempts=final["attempts"],
    )
