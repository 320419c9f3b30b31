"""The Replicate dialect: its routes, its request body and headers, its prediction JSON.

A thin translation: `input` becomes a GenerationRequest (unknown keys ignored, as Replicate
does), everything else is the shared PredictionService. Written against what the official
client (replicate-python 1.0.x) sends and parses; see `_blocking_status` for the one place
where we answer differently from a naive reading of the state.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dreamserve.api import replicate_schema as schema
from dreamserve.api.auth import request_owner
from dreamserve.api.body import read_json_object
from dreamserve.api.context import services_of
from dreamserve.api.errors import ApiError, invalid
from dreamserve.api.sse import PredictionEvents, event_stream
from dreamserve.config import Settings
from dreamserve.jobs.model import (
    WEBHOOK_EVENTS,
    BadCursor,
    NewPrediction,
    NotFound,
    Prediction,
)
from dreamserve.jobs.states import Status
from dreamserve.request import FieldError, GenerationRequest, RequestInvalid

DIALECT = "replicate"
DEFAULT_WAIT = 60.0
MAX_WAIT = 60
MIN_CANCEL_AFTER = 5.0
PAGE_SIZE = 100
# Inputs may carry images as data URLs (the official client's base64 file encoding does), so
# a prediction body may be far larger than ordinary JSON; bigger files belong in /v1/files.
MAX_PREDICTION_BODY = 16 * 1024 * 1024
_CANCEL_AFTER = re.compile(
    r"(?P<bare>\d{1,9}(?:\.\d+)?)|(?:(?P<h>\d{1,9}(?:\.\d+)?)h)?(?:(?P<m>\d{1,9}(?:\.\d+)?)m)?"
    r"(?:(?P<s>\d{1,9}(?:\.\d+)?)s)?"
)


# --- headers


def parse_prefer(header: str | None) -> float | None:
    """Seconds to hold the request open: `wait` -> 60, `wait=n` -> n (1..60), else None."""
    if header is None:
        return None
    for preference in header.split(","):
        token = preference.strip()
        name, sep, value = token.partition("=")
        if name.strip().lower() != "wait":
            continue  # other preferences (respond-async, ...) are not ours to judge
        if not sep:
            return DEFAULT_WAIT
        value = value.strip()
        if not value.isdigit() or not 1 <= int(value) <= MAX_WAIT:
            raise invalid("Prefer", f"must be 'wait' or 'wait=n' with n from 1 to {MAX_WAIT}")
        return float(value)
    return None


def parse_cancel_after(header: str | None) -> float | None:
    """`30`, `90s`, `5m`, `1h30m45s` -> seconds (at least 5), counted from creation."""
    if header is None:
        return None
    text = header.strip().lower()
    match = _CANCEL_AFTER.fullmatch(text)
    if not text or match is None:
        raise invalid(
            "Cancel-After", "must be a duration such as 30, 90s, 5m or 1h30m45s (h, m, s units)"
        )
    parts = match.groupdict()
    seconds = float(parts["bare"] or 0) + float(parts["s"] or 0)
    seconds += 60 * float(parts["m"] or 0) + 3600 * float(parts["h"] or 0)
    if seconds < MIN_CANCEL_AFTER:
        raise invalid("Cancel-After", f"must be at least {MIN_CANCEL_AFTER:g} seconds")
    return seconds


# --- request body


def _webhook(body: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    url = body.get("webhook")
    events: tuple[str, ...] = WEBHOOK_EVENTS
    if url is None and body.get("webhook_completed") is not None:
        # The client's legacy `webhook_completed` means: only the completed event, there.
        url, events = body["webhook_completed"], ("completed",)
    if url is not None:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid("webhook", "must be an http(s) URL with a host")
    requested = body.get("webhook_events_filter")
    if requested is not None:
        if (
            not isinstance(requested, list)
            or not requested
            or not all(isinstance(e, str) and e in WEBHOOK_EVENTS for e in requested)
        ):
            raise invalid(
                "webhook_events_filter",
                f"must be a non-empty list of {', '.join(WEBHOOK_EVENTS)}",
            )
        events = tuple(e for e in WEBHOOK_EVENTS if e in requested)
    return url, events


def translate_input(raw: Any) -> GenerationRequest:
    """Replicate's `input` -> the canonical request; errors name `input.<field>`."""
    if not isinstance(raw, dict):
        raise invalid("input", "is required and must be a JSON object")
    # A null means "not given" (use the default); dialect plumbing is not settable from here.
    given = {k: v for k, v in raw.items() if v is not None and k not in schema.HIDDEN_FIELDS}
    try:
        return GenerationRequest.parse(given)
    except RequestInvalid as exc:
        errors = [FieldError(f"input.{e.field}", e.rule) for e in exc.errors]
        raise ApiError(422, errors, title="Invalid input") from None


def new_prediction(
    body: dict[str, Any], model: str, owner: str | None, cancel_after: float | None
) -> NewPrediction:
    request = translate_input(body.get("input"))
    webhook, events = _webhook(body)
    return NewPrediction(
        dialect=DIALECT,
        model=model,
        version=schema.version_id(model),
        input=body["input"],
        request=request.model_dump(mode="json"),
        owner=owner,
        webhook=webhook,
        webhook_events_filter=events,
        cancel_after=cancel_after,
    )


# --- response


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def output_urls(prediction: Prediction, settings: Settings) -> list[str]:
    return [f"{settings.base_url}/files/{key}" for key in prediction.output]


def render(prediction: Prediction, settings: Settings) -> dict[str, Any]:
    """A prediction exactly as Replicate's API returns it (also the webhook body)."""
    p = prediction
    url = f"{settings.base_url}/v1/predictions/{p.id}"
    metrics = {k: v for k, v in p.metrics.items() if k in ("predict_time", "total_time")}
    if p.status == Status.SUCCEEDED:
        metrics["image_count"] = len(p.output)
    return {
        "id": p.id,
        "model": p.model,
        "version": p.version,
        "input": p.input,
        "output": output_urls(p, settings) if p.status == Status.SUCCEEDED else None,
        "logs": p.logs or "",
        "error": p.error,
        "status": str(p.status),
        "created_at": iso(p.created_at),
        "started_at": iso(p.started_at),
        "completed_at": iso(p.completed_at),
        "urls": {"get": url, "cancel": f"{url}/cancel", "stream": f"{url}/stream"},
        "metrics": metrics,
        "data_removed": False,
    }


def _blocking_status(body: dict[str, Any]) -> dict[str, Any]:
    """A `Prefer: wait` answer that timed out reports `starting`, even when processing.

    replicate-python 1.0.x (run.py) treats any status other than `starting` in a blocking
    answer as final and returns its (still empty) output; `starting` makes it poll until
    the prediction ends, which is what the caller of `replicate.run()` wants. Replicate's
    own API answers this way too. GET, list and webhooks always show the true status.
    """
    if body["status"] not in ("succeeded", "failed", "canceled"):
        body["status"] = "starting"
    return body


# --- routes


def _model_name(request: Request) -> str:
    name = f"{request.path_params['owner']}/{request.path_params['name']}"
    if name not in schema.MODELS:
        raise ApiError(
            404, FieldError("model", f"{name} is not served here; try {schema.PUBLIC_NAME}")
        )
    return name


def _model_of_version(version: Any) -> str:
    """`version` may be a version id, "owner/name" or "owner/name:version"."""
    if not isinstance(version, str) or not version:
        raise invalid("version", "is required: a version id, owner/name or owner/name:version")
    name, _, vid = version.partition(":")
    if "/" in name:
        if name in schema.MODELS and (not vid or vid == schema.version_id(name)):
            return name
    elif (model := schema.model_for_version(version)) is not None:
        return model
    raise ApiError(404, FieldError("version", f"{version} is not a version served here"))


async def _create(request: Request, model: str | None) -> Response:
    services = services_of(request)
    wait = parse_prefer(request.headers.get("prefer"))
    cancel_after = parse_cancel_after(request.headers.get("cancel-after"))
    body = await read_json_object(request, MAX_PREDICTION_BODY)
    model = model or _model_of_version(body.get("version"))
    new = new_prediction(body, model, request_owner(request), cancel_after)
    prediction = await services.predictions.submit(new, wait)
    rendered = render(prediction, services.settings)
    if wait is not None:
        rendered = _blocking_status(rendered)
    return JSONResponse(rendered, status_code=201, headers={"Location": rendered["urls"]["get"]})


async def create_for_model(request: Request) -> Response:
    return await _create(request, _model_name(request))


async def create_with_version(request: Request) -> Response:
    return await _create(request, None)


async def _prediction(request: Request) -> Prediction:
    prediction_id = request.path_params["prediction_id"]
    try:
        return await services_of(request).predictions.get(prediction_id, request_owner(request))
    except NotFound:
        raise ApiError(404, FieldError("prediction_id", f"no prediction {prediction_id}")) from None


async def get_prediction(request: Request) -> Response:
    return JSONResponse(render(await _prediction(request), services_of(request).settings))


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= PAGE_SIZE:
        raise invalid("limit", f"must be an integer from 1 to {PAGE_SIZE}")
    return int(raw)


async def list_predictions(request: Request) -> Response:
    services = services_of(request)
    limit = _limit(request)
    cursor = request.query_params.get("cursor") or None
    try:
        page = await services.predictions.list(request_owner(request), cursor, limit)
    except BadCursor:
        raise invalid("cursor", "is not a cursor this service returned") from None
    base = f"{services.settings.base_url}/v1/predictions"
    suffix = "" if limit == PAGE_SIZE else f"&limit={limit}"

    def link(c: str | None) -> str | None:
        return None if c is None else f"{base}?cursor={quote(c, safe='')}{suffix}"

    return JSONResponse(
        {
            "previous": link(page.previous_cursor),
            "next": link(page.next_cursor),
            "results": [render(p, services.settings) for p in page.items],
        }
    )


async def cancel_prediction(request: Request) -> Response:
    services = services_of(request)
    prediction_id = request.path_params["prediction_id"]
    try:
        prediction = await services.predictions.cancel(prediction_id, request_owner(request))
    except NotFound:
        raise ApiError(404, FieldError("prediction_id", f"no prediction {prediction_id}")) from None
    return JSONResponse(render(prediction, services.settings))


async def stream_prediction(request: Request) -> Response:
    services = services_of(request)
    prediction = await _prediction(request)  # 404 before the stream starts
    wants_progress = request.query_params.get("progress", "").lower() in ("1", "true", "yes")
    events = PredictionEvents(lambda p: output_urls(p, services.settings), wants_progress)
    snapshots = services.predictions.snapshots(prediction.id, request_owner(request))
    return StreamingResponse(
        event_stream(snapshots, events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def get_model(request: Request) -> Response:
    return JSONResponse(
        schema.model_json(_model_name(request), services_of(request).settings.base_url)
    )


async def list_models(request: Request) -> Response:
    base_url = services_of(request).settings.base_url
    results = [schema.model_json(m, base_url) for m in schema.MODELS]
    return JSONResponse({"previous": None, "next": None, "results": results})


async def list_versions(request: Request) -> Response:
    model = _model_name(request)
    return JSONResponse({"previous": None, "next": None, "results": [schema.version_json(model)]})


async def get_version(request: Request) -> Response:
    model = _model_name(request)
    if request.path_params["version_id"] != schema.version_id(model):
        raise ApiError(404, FieldError("version_id", f"{model} has no such version"))
    return JSONResponse(schema.version_json(model))


async def webhook_secret(request: Request) -> Response:
    return JSONResponse({"key": services_of(request).webhook_secret})


routes: list[BaseRoute] = [
    Route("/v1/models/{owner}/{name}/predictions", create_for_model, methods=["POST"]),
    Route("/v1/models", list_models),
    Route("/v1/models/{owner}/{name}", get_model),
    Route("/v1/models/{owner}/{name}/versions", list_versions),
    Route("/v1/models/{owner}/{name}/versions/{version_id}", get_version),
    Route("/v1/predictions", create_with_version, methods=["POST"]),
    Route("/v1/predictions", list_predictions, methods=["GET"]),
    Route("/v1/predictions/{prediction_id}", get_prediction),
    Route("/v1/predictions/{prediction_id}/cancel", cancel_prediction, methods=["POST"]),
    Route("/v1/predictions/{prediction_id}/stream", stream_prediction),
    Route("/v1/webhooks/default/secret", webhook_secret),
]
