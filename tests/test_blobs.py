"""DirBlobs: round trips, expiry, sweeping, atomic writes and keys that try to escape."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import dreamserve.blobs as blobs_module
from dreamserve.blobs import BlobInfo, DirBlobs, check_key


@pytest.fixture
def blobs(tmp_path: Path) -> DirBlobs:
    return DirBlobs(tmp_path / "blobs")


def test_put_get_info_path_round_trip(blobs: DirBlobs) -> None:
    blobs.put("outputs/p1/output_0.jpg", b"\xff\xd8jpeg", "image/jpeg", None)

    assert blobs.get("outputs/p1/output_0.jpg") == b"\xff\xd8jpeg"
    assert blobs.info("outputs/p1/output_0.jpg") == BlobInfo("image/jpeg", 6, None)
    path = blobs.path("outputs/p1/output_0.jpg")
    assert path.read_bytes() == b"\xff\xd8jpeg"
    assert path.is_relative_to(blobs.root)


def test_put_replaces_an_existing_blob(blobs: DirBlobs) -> None:
    blobs.put("files/a", b"old", "text/plain", None)
    blobs.put("files/a", b"newer", "image/png", 2e9)

    assert blobs.get("files/a") == b"newer"
    assert blobs.info("files/a") == BlobInfo("image/png", 5, 2e9)


def test_missing_key_raises_key_error(blobs: DirBlobs) -> None:
    for read in (blobs.get, blobs.info, blobs.path):
        with pytest.raises(KeyError):
            read("files/none")


def test_expired_blob_reads_as_missing_until_swept(blobs: DirBlobs) -> None:
    blobs.put("outputs/old/output_0.png", b"x", "image/png", time.time() - 1)
    blobs.put("outputs/new/output_0.png", b"y", "image/png", time.time() + 3600)
    blobs.put("files/forever", b"z", "image/png", None)

    for read in (blobs.get, blobs.info, blobs.path):
        with pytest.raises(KeyError):
            read("outputs/old/output_0.png")
    assert blobs.get("outputs/new/output_0.png") == b"y"

    assert blobs.sweep() == 1
    assert not (blobs.root / "outputs" / "old").exists()  # no empty directories left behind
    assert blobs.get("outputs/new/output_0.png") == b"y"
    assert blobs.get("files/forever") == b"z"
    assert blobs.sweep(now=time.time() + 7200) == 1
    assert blobs.get("files/forever") == b"z"
    assert blobs.sweep() == 0


def test_delete_is_idempotent(blobs: DirBlobs) -> None:
    blobs.put("files/a", b"1", "text/plain", None)
    blobs.delete("files/a")
    blobs.delete("files/a")
    with pytest.raises(KeyError):
        blobs.get("files/a")


def test_data_without_metadata_is_missing(blobs: DirBlobs) -> None:
    """A stray file under the root (no sidecar) is never served."""
    (blobs.root / "files").mkdir()
    (blobs.root / "files" / "stray").write_bytes(b"?")
    with pytest.raises(KeyError):
        blobs.get("files/stray")


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x", "files/../../x", "files/..", ".meta/files/a.json", "a//b",
     "a/./b", "files/", "a\\b", "files/.hidden"],
)  # fmt: skip
def test_keys_that_escape_or_alias_are_rejected(blobs: DirBlobs, key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        blobs.put(key, b"x", "text/plain", None)
    with pytest.raises(ValueError):
        blobs.get(key)


def test_a_write_killed_midway_leaves_the_old_blob_whole(
    blobs: DirBlobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs.put("files/a", b"old contents", "text/plain", None)

    def die(src: object, dst: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill between writing and renaming

    monkeypatch.setattr(blobs_module.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        blobs.put("files/a", b"new contents that never land", "text/plain", None)
    monkeypatch.undo()

    assert blobs.get("files/a") == b"old contents"
    leftovers = [p for p in blobs.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_sweep_removes_temp_files_of_dead_writers_only_when_stale(blobs: DirBlobs) -> None:
    blobs.put("files/a", b"1", "text/plain", None)
    stale = blobs.root / "files" / ".a.dead.tmp"
    fresh = blobs.root / "files" / ".a.alive.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = time.time() - 2 * blobs_module.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))

    blobs.sweep()

    assert not stale.exists()
    assert fresh.exists()
    assert blobs.get("files/a") == b"1"


def test_a_put_killed_between_metadata_and_data_reads_as_missing(
    blobs: DirBlobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never serve old bytes under new metadata (a Content-Length that lies)."""
    blobs.put("files/a", b"old", "text/plain", None)
    real_replace = os.replace
    calls = []

    def die_on_second(src: str, dst: str) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(blobs_module.os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        blobs.put("files/a", b"much longer", "image/png", None)
    monkeypatch.undo()

    for read in (blobs.get, blobs.path):
        with pytest.raises(KeyError):
            read("files/a")
    blobs.put("files/a", b"much longer", "image/png", None)  # the re-run heals it
    assert blobs.get("files/a") == b"much longer"
