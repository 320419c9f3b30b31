"""Server-Sent Events for a prediction, in the event vocabulary of Replicate's streams.

Events: `output` (one per output URL), `logs` (new log text), `error`, and a final `done`
(data `{}`, or `{"reason": "canceled"}` / `{"reason": "error"}`). Every event carries an `id`:
the official Python client drops events without one. It also rejects event names it does not
know, so step `progress` events (JSON {step, total, percentage}) are sent only to clients that
ask for them with `?progress=true`; everyone else sees the steps in the logs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from dreamserve.jobs.model import Prediction
from dreamserve.jobs.states import Status

KEEP_ALIVE = ": keep-alive\n\n"


def format_event(event: str, data: str, event_id: int) -> str:
    # A data field cannot hold a newline: each line of the payload is its own `data:` line.
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\nid: {event_id}\n{lines}\n"


@dataclass
class PredictionEvents:
    """Turns successive snapshots of one prediction into the events not sent yet."""

    output_urls: Callable[[Prediction], Sequence[str]]
    progress: bool = False
    _outputs_sent: int = 0
    _logs_sent: int = 0
    _progress_sent: tuple[int, int] | None = None
    _next_id: int = 0

    def _event(self, name: str, data: str) -> str:
        self._next_id += 1
        return format_event(name, data, self._next_id)

    def diff(self, prediction: Prediction) -> list[str]:
        events: list[str] = []
        logs = prediction.logs or ""
        if len(logs) < self._logs_sent:  # re-run after a worker died: its logs start over
            self._logs_sent = 0
        if len(logs) > self._logs_sent:
            events.append(self._event("logs", logs[self._logs_sent :].rstrip("\n")))
            self._logs_sent = len(logs)
        if self.progress and prediction.progress and prediction.progress != self._progress_sent:
            step, total = prediction.progress
            pct = round(100.0 * step / total, 1) if total else 0.0
            payload = {"step": step, "total": total, "percentage": pct}
            events.append(self._event("progress", json.dumps(payload)))
            self._progress_sent = prediction.progress
        urls = self.output_urls(prediction)
        for url in urls[self._outputs_sent :]:
            events.append(self._event("output", url))
        self._outputs_sent = max(self._outputs_sent, len(urls))
        if prediction.status.terminal:
            events.extend(self._final(prediction))
        return events

    def _final(self, prediction: Prediction) -> list[str]:
        if prediction.status == Status.FAILED:
            detail = json.dumps({"detail": prediction.error or "prediction failed"})
            return [self._event("error", detail), self._event("done", '{"reason": "error"}')]
        if prediction.status == Status.CANCELED:
            return [self._event("done", '{"reason": "canceled"}')]
        return [self._event("done", "{}")]


async def event_stream(
    snapshots: AsyncIterator[Prediction], events: PredictionEvents
) -> AsyncIterator[str]:
    """The SSE body: events for every change, a keep-alive comment when nothing changed."""
    async for prediction in snapshots:
        chunk = events.diff(prediction)
        yield "".join(chunk) if chunk else KEEP_ALIVE
