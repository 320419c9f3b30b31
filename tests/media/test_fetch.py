"""Fetcher: http(s) against a real server on 127.0.0.1, data URLs, and this service's files."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest

from dreamserve.blobs import DirBlobs
from dreamserve.config import Settings
from dreamserve.jobs.model import FileRecord, NotFound
from dreamserve.media.errors import InputError
from dreamserve.media.fetch import Fetcher, parse_data_url
from tests.media import servers
from tests.media.images import png_bytes
from tests.support.live import free_port

LIMIT = 64 * 1024
PNG = png_bytes()


class FakeFiles:
    """The store's owner-scoped get_file: another owner's file does not exist."""

    def __init__(self, records: list[FileRecord]) -> None:
        self.records = {r.id: r for r in records}

    def get_file(self, file_id: str, owner: str | None = None) -> FileRecord:
        record = self.records.get(file_id)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound(file_id)
        return record


def file_record(file_id: str, owner: str | None, expires_at: float | None = None) -> FileRecord:
    return FileRecord(
        id=file_id, owner=owner, name="in.png", content_type="image/png", size=len(PNG),
        sha256="", blob_key=f"files/{file_id}", metadata={}, created_at=time.time(),
        expires_at=expires_at,
    )  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path, fetch_max_bytes=LIMIT, fetch_timeout=2.0, port=8123,
        public_base_url="https://dream.example/",
    )  # fmt: skip


@pytest.fixture
def fetcher(settings: Settings, tmp_path: Path) -> Iterator[Fetcher]:
    blobs = DirBlobs(tmp_path / "blobs")
    for file_id in ("mine", "theirs", "old"):
        blobs.put(f"files/{file_id}", PNG, "image/png", None)
    files = FakeFiles(
        [file_record("mine", "key-a"), file_record("theirs", "key-b"),
         file_record("old", "key-a", expires_at=time.time() - 1),
         file_record("gone", "key-a")]
    )  # fmt: skip
    f = Fetcher(settings, files, blobs)
    yield f
    f.close()


def message(exc: pytest.ExceptionInfo[InputError]) -> str:
    return str(exc.value)


# --- http(s)


def test_fetches_an_image_over_http_following_a_redirect(fetcher: Fetcher) -> None:
    routes = {"/a.png": servers.body(PNG, "image/png"), "/go": servers.redirect("/a.png")}
    with servers.serve(routes) as base:
        got = fetcher.fetch(f"{base}/go")
    assert got.data == PNG
    assert got.content_type == "image/png"
    assert got.source == "URL"


def test_closed_port_names_host_port_and_reason(fetcher: Fetcher) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(InputError) as exc:
        fetcher.fetch(f"http://127.0.0.1:{port}/x.png")
    assert message(exc) == f"could not connect to 127.0.0.1:{port} (connection refused)"


def test_declared_oversize_body_is_refused(fetcher: Fetcher) -> None:
    with (
        servers.serve({"/big": servers.body(b"\0" * (LIMIT + 1), "image/png")}) as base,
        pytest.raises(InputError) as exc,
    ):
        fetcher.fetch(f"{base}/big")
    assert message(exc) == "larger than 0.0625 MB"


def test_undeclared_oversize_body_is_cut_off_while_streaming(fetcher: Fetcher) -> None:
    # 16 MB offered without a Content-Length; the fetcher must stop near the 64 KB limit.
    route = servers.undeclared(b"\0" * 65536, chunks=256)
    with servers.serve({"/drip": route}) as base, pytest.raises(InputError, match="larger than"):
        fetcher.fetch(f"{base}/drip")


def test_body_at_exactly_the_limit_is_accepted(fetcher: Fetcher) -> None:
    with servers.serve({"/edge": servers.body(b"\1" * LIMIT)}) as base:
        assert len(fetcher.fetch(f"{base}/edge").data) == LIMIT


def test_redirect_loop_is_refused(fetcher: Fetcher) -> None:
    with (
        servers.serve({"/loop": servers.redirect("/loop")}) as base,
        pytest.raises(InputError) as exc,
    ):
        fetcher.fetch(f"{base}/loop")
    assert message(exc) == "too many redirects (more than 5)"


def test_http_error_status_is_reported(fetcher: Fetcher) -> None:
    with servers.serve({}) as base, pytest.raises(InputError) as exc:
        fetcher.fetch(f"{base}/missing.png")
    assert message(exc) == f"{base.removeprefix('http://')} answered HTTP 404"


def test_slow_server_times_out(settings: Settings) -> None:
    fetcher = Fetcher(replace(settings, fetch_timeout=0.2))
    with servers.serve({"/slow": servers.stall(2.0)}) as base, pytest.raises(InputError) as exc:
        fetcher.fetch(f"{base}/slow")
    fetcher.close()
    assert message(exc).startswith("timed out after 0.2 s fetching from 127.0.0.1:")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("ftp://example.com/a.png", "unsupported URL scheme 'ftp'"),
        ("file:///etc/passwd", "unsupported URL scheme 'file'"),
        ("just some words", "not a URL"),
        ("http://", "invalid URL"),
    ],
)
def test_unusable_references(fetcher: Fetcher, ref: str, expected: str) -> None:
    with pytest.raises(InputError) as exc:
        fetcher.fetch(ref)
    assert message(exc).startswith(expected)


# --- data URLs


def test_base64_data_url() -> None:
    got = parse_data_url("data:image/png;base64," + base64.b64encode(PNG).decode(), LIMIT)
    assert (got.data, got.content_type, got.source) == (PNG, "image/png", "data URL")


def test_base64_data_url_with_line_breaks_and_no_padding() -> None:
    text = base64.b64encode(PNG).decode().rstrip("=")
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert parse_data_url("data:image/png;base64," + wrapped, LIMIT).data == PNG


def test_percent_encoded_data_url() -> None:
    got = parse_data_url("data:image/png," + quote_from_bytes(PNG), LIMIT)
    assert got.data == PNG


def test_data_url_without_type_is_text_plain() -> None:
    assert parse_data_url("data:,hello", LIMIT).content_type == "text/plain"


def test_oversize_data_url_is_refused_before_decoding() -> None:
    payload = base64.b64encode(b"\0" * (LIMIT + 1)).decode()
    with pytest.raises(InputError, match="larger than 0.0625 MB"):
        parse_data_url("data:image/png;base64," + payload, LIMIT)
    with pytest.raises(InputError, match="larger than"):
        parse_data_url("data:image/png;base64," + "A" * (10 * LIMIT), LIMIT)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("data:image/png;base64", "malformed data URL (no ',' before the data)"),
        ("data:image/png;base64,!!!notbase64", "malformed data URL (invalid base64)"),
    ],
)
def test_malformed_data_urls(ref: str, expected: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_data_url(ref, LIMIT)
    assert message(exc) == expected


# --- this service's files


@pytest.mark.parametrize(
    "ref",
    [
        "https://dream.example/v1/files/mine",
        "https://dream.example/v1/files/mine/download",
        "/v1/files/mine",
        "/v1/files/mine/download",
    ],
)
def test_own_files_resolve_locally(fetcher: Fetcher, ref: str) -> None:
    got = fetcher.fetch(ref, owner="key-a")
    assert (got.data, got.content_type, got.source) == (PNG, "image/png", "file")


@pytest.mark.parametrize("file_id", ["theirs", "old", "gone", "nonexistent"])
def test_other_keys_expired_or_missing_files_are_not_found(fetcher: Fetcher, file_id: str) -> None:
    with pytest.raises(InputError) as exc:
        fetcher.fetch(f"/v1/files/{file_id}", owner="key-a")
    assert message(exc) == f"file {file_id} not found (or expired)"


def test_files_url_of_another_host_is_fetched_over_http(fetcher: Fetcher) -> None:
    """Only this service's base URL resolves locally; anything else is a normal URL."""
    port = free_port()  # nothing listens there
    with pytest.raises(InputError, match="could not connect"):
        fetcher.fetch(f"http://127.0.0.1:{port}/v1/files/mine", owner="key-a")


def test_files_url_without_a_store(settings: Settings) -> None:
    with pytest.raises(InputError, match="needs the service"):
        Fetcher(settings).fetch("/v1/files/mine")


def test_output_urls_of_this_service_resolve_from_blobs(fetcher: Fetcher) -> None:
    """An earlier prediction's output fed into the next edit: no HTTP loop to ourselves."""
    assert fetcher.blobs is not None
    fetcher.blobs.put("outputs/p1/output_0.png", PNG, "image/png", time.time() + 60)
    for ref in (
        "https://dream.example/files/outputs/p1/output_0.png",
        "/files/outputs/p1/output_0.png",
    ):
        got = fetcher.fetch(ref, owner="anyone")
        assert (got.data, got.content_type) == (PNG, "image/png")


@pytest.mark.parametrize(
    "path", ["outputs/p1/missing.png", "outputs/../files/mine", "outputs/p2/expired.png"]
)
def test_missing_expired_or_escaping_output_urls_are_not_found(fetcher: Fetcher, path: str) -> None:
    assert fetcher.blobs is not None
    fetcher.blobs.put("outputs/p2/expired.png", PNG, "image/png", time.time() - 1)
    with pytest.raises(InputError) as exc:
        fetcher.fetch(f"https://dream.example/files/{path}")
    assert message(exc) == f"output file {path} not found (or expired)"
