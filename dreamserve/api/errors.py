"""Every error the API answers is application/problem+json (RFC 9457) naming field and rule.

Body: type, title, status, detail, and `errors`: a list of {field, rule} so a client (or a
person reading curl output) knows exactly what to change. Bad client input is always a 4xx;
the catch-all 500 handler exists for our own bugs and logs them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from dreamserve.jobs.model import NotFound
from dreamserve.request import FieldError, RequestInvalid

log = logging.getLogger("dreamserve.api")

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An HTTP error answered as problem+json; `errors` names each field and broken rule."""

    def __init__(
        self,
        status: int,
        errors: FieldError | Sequence[FieldError],
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.errors = [errors] if isinstance(errors, FieldError) else list(errors)
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        return "; ".join(f"{e.field}: {e.rule}" for e in self.errors)


def invalid(field: str, rule: str) -> ApiError:
    """The common case: one field broke one rule (422)."""
    return ApiError(422, FieldError(field, rule), title="Invalid input")


def problem(
    status: int,
    title: str,
    errors: Sequence[FieldError] = (),
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    slug = title.lower().replace(" ", "-")
    if detail is None:
        detail = "; ".join(f"{e.field}: {e.rule}" for e in errors)
    body: dict[str, Any] = {
        "type": f"urn:dreamserve:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail
        if detail is not None
        else "; ".join(f"{e.field}: {e.rule}" for e in errors),
        "errors": [{"field": e.field, "rule": e.rule} for e in errors],
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.title, exc.errors, headers=exc.headers)


async def _request_invalid(request: Request, exc: Exception) -> Response:
    # Dialects usually catch this to name fields in their own terms (Replicate: input.x);
    # this is the fallback so a validation error can never become a 500.
    assert isinstance(exc, RequestInvalid)
    return problem(422, "Invalid input", exc.errors)


async def _not_found(request: Request, exc: Exception) -> Response:
    return problem(404, "Not Found", [FieldError("id", str(exc) or "not found")])


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        errors = [FieldError("path", f"no route for {request.url.path}")]
    elif exc.status_code == 405:
        errors = [FieldError("method", f"{request.method} is not allowed on {request.url.path}")]
    else:
        errors = [FieldError("request", str(exc.detail))]
    title = HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, title, errors, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A 500 is a bug on our side: log it with the traceback; never leak internals to the client.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Internal Server Error", [], detail="an internal error occurred; see logs")


EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {
    ApiError: _api_error,
    RequestInvalid: _request_invalid,
    NotFound: _not_found,
    HTTPException: _http_exception,
    Exception: _unexpected,
}
