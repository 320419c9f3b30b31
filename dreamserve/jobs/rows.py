"""Translation between database rows and the records of model.py; ids and page cursors."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, replace
from typing import Any

from dreamserve.jobs.connector import Row
from dreamserve.jobs.model import ApiKey, BadCursor, FileRecord, Prediction, WebhookDelivery
from dreamserve.jobs.states import Status


def new_id() -> str:
    """26 lowercase base32 characters from 16 random bytes, like Replicate's prediction ids."""
    return base64.b32encode(os.urandom(16)).decode("ascii").rstrip("=").lower()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def prediction(row: Row) -> Prediction:
    step, total = row["progress_step"], row["progress_total"]
    return Prediction(
        id=row["id"],
        dialect=row["dialect"],
        model=row["model"],
        version=row["version"],
        input=json.loads(row["input"]),
        request=json.loads(row["request"]),
        owner=row["owner"],
        status=Status(row["status"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        output=tuple(json.loads(row["output"])),
        logs=row["logs"],
        error=row["error"],
        progress=None if step is None else (step, total),
        metrics=json.loads(row["metrics"]),
        webhook=row["webhook"],
        webhook_events_filter=events_filter(row),
        cancel_after=row["cancel_after"],
        cancel_requested=bool(row["cancel_requested"]),
        attempts=row["attempts"],
    )


def events_filter(row: Row) -> tuple[str, ...]:
    return tuple(json.loads(row["webhook_events_filter"]))


def snapshot_json(p: Prediction) -> str:
    """The prediction as a webhook will show it. `request` is left out: no wire format shows
    it, and with data-URL images it doubles megabytes in every owed delivery."""
    return dumps(asdict(replace(p, request={})))


def snapshot(text: str) -> Prediction:
    data = json.loads(text)
    data["status"] = Status(data["status"])
    data["output"] = tuple(data["output"])
    data["webhook_events_filter"] = tuple(data["webhook_events_filter"])
    if data["progress"] is not None:
        data["progress"] = tuple(data["progress"])
    return Prediction(**data)


def delivery(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        prediction_id=row["prediction_id"],
        event=row["event"],
        url=row["url"],
        snapshot=snapshot(row["snapshot"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        first_attempt_at=row["first_attempt_at"],
    )


def file_record(row: Row) -> FileRecord:
    return FileRecord(
        id=row["id"],
        owner=row["owner"],
        name=row["name"],
        content_type=row["content_type"],
        size=row["size"],
        sha256=row["sha256"],
        blob_key=row["blob_key"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def api_key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"], name=row["name"], created_at=row["created_at"], revoked_at=row["revoked_at"]
    )


# Cursors are opaque to clients: base64url of the direction and the (created_at, id) boundary.
# repr() of a float round-trips exactly, so no row is skipped or repeated at a page edge.
OLDER, NEWER = "o", "n"


def encode_cursor(direction: str, created_at: float, prediction_id: str) -> str:
    raw = f"{direction}|{created_at!r}|{prediction_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        direction, created_at, prediction_id = raw.split("|")
        if direction not in (OLDER, NEWER):
            raise ValueError(direction)
        return direction, float(created_at), prediction_id
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise BadCursor(f"cursor {cursor!r} is not one this service issued") from exc
