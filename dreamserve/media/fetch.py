"""Resolve an input reference (http(s) URL, data URL, this service's /v1/files URL) to bytes.

Every source is capped at `settings.fetch_max_bytes` and every network fetch at
`settings.fetch_timeout` in total, so a hostile or broken input costs bounded time and
memory. Failures are InputError with a message the client can act on.
"""

from __future__ import annotations

import base64
import binascii
import errno
import re
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, unquote_to_bytes

import httpx

from dreamserve.blobs import Blobs
from dreamserve.config import Settings
from dreamserve.jobs.model import FileRecord, NotFound
from dreamserve.media.errors import InputError

MAX_REDIRECTS = 5
USER_AGENT = "dreamserve (input fetcher)"
_FILE_PATH = re.compile(r"/v1/files/([A-Za-z0-9_.-]+)(?:/download)?/?")
# Output URLs of earlier predictions (public, like the API serves them): chaining an output
# into the next edit must not loop through HTTP to this very service.
_OUTPUT_PATH = re.compile(r"/files/(outputs/[A-Za-z0-9_./-]+)")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str | None  # as declared by the source; decoding never trusts it
    source: str  # "data URL", "URL", "file", "local file": used in error messages


class FileSource(Protocol):
    """The part of the Store the fetcher needs: owner-scoped file records."""

    def get_file(self, file_id: str, owner: str | None = None) -> FileRecord: ...


def too_large(limit: int) -> InputError:
    return InputError(f"larger than {limit / 2**20:g} MB")


class Fetcher:
    """Fetches input references for one worker process (one pooled HTTP client)."""

    def __init__(
        self,
        settings: Settings,
        files: FileSource | None = None,
        blobs: Blobs | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.settings = settings
        self.files = files
        self.blobs = blobs
        self._client = client
        self._base = settings.base_url

    def fetch(self, ref: str, owner: str | None = None) -> Fetched:
        """The bytes behind `ref`; InputError (without the input's name) when unusable."""
        ref = ref.strip()
        if ref[:5].lower() == "data:":
            return parse_data_url(ref, self.settings.fetch_max_bytes)
        path = self._own_path(ref)
        if path is not None and (match := _FILE_PATH.fullmatch(path)):
            return self._fetch_file(match.group(1), owner)
        if path is not None and (match := _OUTPUT_PATH.fullmatch(path)):
            return self._fetch_output(match.group(1))
        scheme = ref.partition(":")[0].lower() if ":" in ref else ""
        if scheme in ("http", "https"):
            return self._fetch_http(ref)
        if not scheme:
            raise InputError("not a URL (use an https URL, a data URL or a /v1/files URL)")
        raise InputError(
            f"unsupported URL scheme {scheme!r} (use https, http, a data URL or a /v1/files URL)"
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- this service's files

    def _own_path(self, ref: str) -> str | None:
        """The path of a URL on this service (or a bare absolute path); None otherwise."""
        if ref.startswith(self._base + "/"):
            return ref[len(self._base) :]
        return ref if ref.startswith("/") else None

    def _fetch_file(self, file_id: str, owner: str | None) -> Fetched:
        if self.files is None or self.blobs is None:
            raise InputError("a /v1/files URL needs the service's store (not available here)")
        try:
            record = self.files.get_file(file_id, owner)
            if record.expires_at is not None and record.expires_at <= time.time():
                raise KeyError(file_id)
            data = self.blobs.get(record.blob_key)
        except (NotFound, KeyError):
            # Another key's file reads exactly like a missing one: no existence oracle.
            raise InputError(f"file {file_id} not found (or expired)") from None
        if len(data) > self.settings.fetch_max_bytes:
            raise too_large(self.settings.fetch_max_bytes)
        return Fetched(data, record.content_type, "file")

    def _fetch_output(self, key: str) -> Fetched:
        if self.blobs is None:
            raise InputError("an output URL of this service needs its blobs (not available here)")
        try:
            info = self.blobs.info(key)
            data = self.blobs.get(key)
        except (KeyError, ValueError):
            raise InputError(f"output file {key} not found (or expired)") from None
        return Fetched(data, info.content_type, "output file")

    # --- http(s)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                timeout=self.settings.fetch_timeout,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                # Images are compressed already; asking for identity keeps a gzip bomb out.
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            )
        return self._client

    def _fetch_http(self, url: str) -> Fetched:
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InputError(f"invalid URL ({exc})") from None
        if not target.host:
            raise InputError("invalid URL (no host)")
        try:
            return self._stream(target)
        except httpx.TooManyRedirects:
            raise InputError(f"too many redirects (more than {MAX_REDIRECTS})") from None
        except httpx.TimeoutException:
            raise _timed_out(target, self.settings.fetch_timeout) from None
        except httpx.ConnectError as exc:
            raise _connect_failed(target, exc) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise InputError(f"could not fetch from {_host_port(target)} ({exc})") from None

    def _stream(self, url: httpx.URL) -> Fetched:
        limit = self.settings.fetch_max_bytes
        # httpx's timeout bounds each read; this bounds the whole body against a slow drip.
        deadline = time.monotonic() + self.settings.fetch_timeout
        with self.client.stream("GET", url) as resp:
            if resp.status_code >= 400:
                raise InputError(f"{_host_port(resp.url)} answered HTTP {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_large(limit)
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise too_large(limit)
                if time.monotonic() > deadline:
                    raise _timed_out(url, self.settings.fetch_timeout)
            content_type = resp.headers.get("content-type")
        return Fetched(bytes(body), content_type, "URL")


def parse_data_url(ref: str, limit: int) -> Fetched:
    """Decode `data:[<type>][;base64],<payload>` (RFC 2397), refusing more than `limit` bytes."""
    header, comma, payload = ref[5:].partition(",")
    if not comma:
        raise InputError("malformed data URL (no ',' before the data)")
    params = [p.strip() for p in header.split(";")]
    content_type = params[0].lower() or "text/plain"
    if any(p.lower() == "base64" for p in params[1:]):
        # Check the encoded length first: decoding an oversize payload is the cost to avoid.
        # Slack for line breaks, and 3x when the base64 itself is percent-encoded.
        encoded = (limit + 2) // 3 * 4
        slack = 3.0 if "%" in payload else 1.05
        if len(payload) > encoded * slack + 64:
            raise too_large(limit)
        text = unquote(payload) if "%" in payload else payload
        text = "".join(text.split())  # line breaks are allowed in practice
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise InputError("malformed data URL (invalid base64)") from None
    else:
        if len(payload) > 3 * limit:
            raise too_large(limit)
        data = unquote_to_bytes(payload)
    if len(data) > limit:
        raise too_large(limit)
    return Fetched(data, content_type, "data URL")


def _host_port(url: httpx.URL) -> str:
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


def _timed_out(url: httpx.URL, seconds: float) -> InputError:
    return InputError(f"timed out after {seconds:g} s fetching from {_host_port(url)}")


_DNS_ERRNOS = {-2, -3, -5, 8}  # EAI_NONAME, EAI_AGAIN, EAI_NODATA; 8 = macOS EAI_NONAME


def _connect_failed(url: httpx.URL, exc: BaseException) -> InputError:
    """Name the host and the OS's reason: "could not connect to h:p (connection refused)"."""
    err: BaseException | None = exc
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    code = err.errno if isinstance(err, OSError) else None
    text = str(exc)
    if code in _DNS_ERRNOS or "name or service not known" in text.lower():
        return InputError(f"could not resolve host {url.host}")
    if isinstance(err, OSError) and err.strerror:
        reason = err.strerror
    elif code is not None and code > 0:
        reason = errno.errorcode.get(code, str(code))
    else:
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", text) or type(exc).__name__
    return InputError(f"could not connect to {_host_port(url)} ({reason.lower()})")
