"""The one lifecycle of a prediction and its allowed transitions.

Every status change in the code base goes through `check_transition`, so the rules live here
and nowhere else. Dialects rename statuses on the way out (see DESIGN.md), never in storage.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    STARTING = "starting"  # accepted and durable, waiting for a worker
    PROCESSING = "processing"  # a worker holds its lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

# processing -> starting is the re-run of a prediction whose worker died (its lease expired).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.STARTING: frozenset({Status.PROCESSING, Status.CANCELED, Status.FAILED}),
    Status.PROCESSING: frozenset(
        {Status.STARTING, Status.SUCCEEDED, Status.FAILED, Status.CANCELED}
    ),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, current: Status, new: Status) -> None:
        super().__init__(f"cannot move a prediction from {current} to {new}")
        self.current, self.new = current, new


def check_transition(current: Status, new: Status) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(current, new)
