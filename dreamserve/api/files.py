"""Files: Replicate's /v1/files API (uploads clients pass as image_input) and output downloads.

Upper half: routes. Lower half: FileService, the part any dialect can reuse. Uploads are
capped at settings.fetch_max_bytes (a larger file could never be used as an input anyway),
counted while the body streams in, and expire after settings.file_ttl. Output files are served
at /files/outputs/... without credentials: their keys carry unguessable prediction ids.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message

from dreamserve.api.auth import request_owner
from dreamserve.api.body import declared_length
from dreamserve.api.context import services_of
from dreamserve.api.errors import ApiError, invalid
from dreamserve.api.replicate import iso
from dreamserve.blobs import Blobs
from dreamserve.config import Settings
from dreamserve.jobs.model import FileRecord, NotFound, Store
from dreamserve.request import FieldError

OUTPUT_PREFIX = "outputs/"
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and the metadata field
MAX_NAME = 255


def _limited(request: Request, limit: int) -> Request:
    """The same request, but reading more than `limit` body bytes raises a 413."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise ApiError(413, FieldError("content", f"must be at most {limit} bytes"))
        return message

    return Request(request.scope, receive)


@dataclass(frozen=True)
class Upload:
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any]


def _metadata(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        metadata = json.loads(str(raw))
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise invalid("metadata", "must be a JSON object")
    return metadata


async def _read_upload(request: Request, max_bytes: int) -> Upload:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise ApiError(415, FieldError("Content-Type", "must be multipart/form-data"))
    too_large = ApiError(413, FieldError("content", f"must be at most {max_bytes} bytes"))
    limit = max_bytes + MULTIPART_OVERHEAD
    length = declared_length(request)
    if length is not None and length > limit:
        raise too_large
    try:
        form = await _limited(request, limit).form(max_files=1, max_fields=8)
    except HTTPException as exc:  # malformed multipart
        raise ApiError(400, FieldError("body", f"malformed multipart: {exc.detail}")) from None
    try:
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise invalid("content", "is required: a file part named 'content'")
        metadata = _metadata(form.get("metadata"))
        data = await content.read()
        if len(data) > max_bytes:
            raise too_large
        name = PurePosixPath(content.filename or "file").name[:MAX_NAME] or "file"
        content_type = content.content_type or "application/octet-stream"
        return Upload(name, content_type, data, metadata)
    finally:
        await form.close()  # spooled temp files: not left for the garbage collector


def _file_json(record: FileRecord, settings: Settings) -> dict[str, Any]:
    url = f"{settings.base_url}/v1/files/{record.id}"
    return {
        "id": record.id,
        "name": record.name,
        "content_type": record.content_type,
        "size": record.size,
        "etag": record.sha256[:32],
        "checksums": {"sha256": record.sha256},
        "metadata": record.metadata,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "urls": {"get": url},
    }


async def create_file(request: Request) -> Response:
    services = services_of(request)
    up = await _read_upload(request, services.settings.fetch_max_bytes)
    owner = request_owner(request)
    record = await services.files.upload(owner, up.name, up.content_type, up.data, up.metadata)
    return JSONResponse(_file_json(record, services.settings), status_code=201)


async def _record(request: Request) -> FileRecord:
    file_id = request.path_params["file_id"]
    try:
        return await services_of(request).files.get(file_id, request_owner(request))
    except NotFound:
        raise ApiError(404, FieldError("file_id", f"no file {file_id}")) from None


async def get_file(request: Request) -> Response:
    return JSONResponse(_file_json(await _record(request), services_of(request).settings))


async def list_files(request: Request) -> Response:
    services = services_of(request)
    records = await services.files.list(request_owner(request))
    results = [_file_json(r, services.settings) for r in records]
    return JSONResponse({"previous": None, "next": None, "results": results})


async def download_file(request: Request) -> Response:
    record = await _record(request)
    return await _blob_response(services_of(request).blobs, record.blob_key, record.name)


async def delete_file(request: Request) -> Response:
    file_id = request.path_params["file_id"]
    try:
        await services_of(request).files.delete(file_id, request_owner(request))
    except NotFound:
        raise ApiError(404, FieldError("file_id", f"no file {file_id}")) from None
    return Response(status_code=204)


async def get_output(request: Request) -> Response:
    key = request.path_params["key"]
    if not key.startswith(OUTPUT_PREFIX):
        raise ApiError(404, FieldError("key", "no such output file"))
    return await _blob_response(services_of(request).blobs, key, None)


def _blob_stat(blobs: Blobs, key: str) -> tuple[str, os.stat_result, str]:
    info = blobs.info(key)
    path = blobs.path(key)
    return str(path), os.stat(path), info.content_type


async def _blob_response(blobs: Blobs, key: str, filename: str | None) -> Response:
    try:
        path, stat, content_type = await asyncio.to_thread(_blob_stat, blobs, key)
    except (KeyError, FileNotFoundError, ValueError):  # missing, expired, or a bad key
        raise ApiError(404, FieldError("key", "no such file (it may have expired)")) from None
    return FileResponse(
        path,
        media_type=content_type,
        stat_result=stat,
        filename=filename,
        content_disposition_type="inline",
    )


routes: list[BaseRoute] = [
    Route("/v1/files", create_file, methods=["POST"]),
    Route("/v1/files", list_files, methods=["GET"]),
    Route("/v1/files/{file_id}", get_file, methods=["GET"]),
    Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
    Route("/v1/files/{file_id}/download", download_file),
    Route("/files/{key:path}", get_output),
]


# --- the service below the routes


def new_file_id() -> str:
    """26 lowercase base32 characters from 16 random bytes, like prediction ids."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


class FileService:
    """Uploaded files: bytes in blobs (expiring), records in the store (owner-scoped)."""

    def __init__(self, store: Store, blobs: Blobs, settings: Settings) -> None:
        self.store, self.blobs, self.settings = store, blobs, settings

    def _upload(
        self, owner: str | None, name: str, content_type: str, data: bytes, metadata: dict[str, Any]
    ) -> FileRecord:
        now = time.time()
        file_id = new_file_id()
        record = FileRecord(
            id=file_id,
            owner=owner,
            name=name,
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            blob_key=f"files/{file_id}",
            metadata=metadata,
            created_at=now,
            expires_at=now + self.settings.file_ttl,
        )
        # Bytes first: a record never points at a blob that is not there.
        self.blobs.put(record.blob_key, data, content_type, record.expires_at)
        self.store.add_file(record)
        return record

    async def upload(
        self, owner: str | None, name: str, content_type: str, data: bytes, metadata: dict[str, Any]
    ) -> FileRecord:
        return await asyncio.to_thread(self._upload, owner, name, content_type, data, metadata)

    def _get(self, file_id: str, owner: str | None) -> FileRecord:
        record = self.store.get_file(file_id, owner)
        if record.expires_at is not None and record.expires_at <= time.time():
            raise NotFound(file_id)
        return record

    async def get(self, file_id: str, owner: str | None) -> FileRecord:
        return await asyncio.to_thread(self._get, file_id, owner)

    async def list(self, owner: str | None, limit: int = 100) -> list[FileRecord]:
        records = await asyncio.to_thread(self.store.list_files, owner, limit)
        now = time.time()
        return [r for r in records if r.expires_at is None or r.expires_at > now]

    def _delete(self, file_id: str, owner: str | None) -> FileRecord:
        record = self.store.delete_file(file_id, owner)
        with contextlib.suppress(KeyError):  # already expired and swept
            self.blobs.delete(record.blob_key)
        return record

    async def delete(self, file_id: str, owner: str | None) -> FileRecord:
        return await asyncio.to_thread(self._delete, file_id, owner)
