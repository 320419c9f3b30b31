"""Reading request bodies with limits: a hostile body is a 4xx naming `body`, never a 500.

The body is read with a byte cap (checked against Content-Length first, then while
streaming), so a 10 MB prompt is refused before it is parsed or stored.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from starlette.requests import Request

from dreamserve.api.errors import ApiError
from dreamserve.request import FieldError

MAX_JSON_BYTES = 1024 * 1024


def _too_large(limit: int) -> ApiError:
    return ApiError(413, FieldError("body", f"must be at most {limit} bytes"))


def declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, FieldError("Content-Length", "must be an integer")) from None


async def read_body(request: Request, limit: int) -> bytes:
    length = declared_length(request)
    if length is not None and length > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; accepting them would let them into the stored input.
    raise ValueError(f"{name} is not valid JSON")


async def read_json_object(request: Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object, or an ApiError naming what is wrong with it."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        raise ApiError(415, FieldError("Content-Type", "must be application/json"))
    body = await read_body(request, limit)
    if not body.strip():
        raise ApiError(400, FieldError("body", "is required: a JSON object"))
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        rule = f"must be valid JSON ({exc})" if isinstance(exc, ValueError) else "nests too deep"
        raise ApiError(400, FieldError("body", rule), title="Malformed JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, FieldError("body", "must be a JSON object"), title="Invalid input")
    return data
