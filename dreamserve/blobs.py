"""Blobs: output images and uploaded files, stored by key with an optional expiry.

`DirBlobs` keeps each blob as a plain file under its key, so the HTTP layer can answer with
the file itself (`path`), and its metadata (content type, size, expiry) in a JSON sidecar
under `.meta/`. Every write goes to a temp file in the same directory and is renamed into
place, so a process killed at any instant leaves either the old blob or the new one under a
key, never half of one. Keys never start a component with ".", which keeps the sidecars and
temp files out of the key space.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from dreamserve.config import Settings

META_DIR = ".meta"
# A temp file older than this belongs to a writer that died; sweep removes it.
STALE_TEMP_SECONDS = 3600.0


@dataclass(frozen=True)
class BlobInfo:
    content_type: str
    size: int
    expires_at: float | None


class Blobs(Protocol):
    def put(self, key: str, data: bytes, content_type: str, expires_at: float | None) -> None: ...
    def get(self, key: str) -> bytes:
        """The blob's bytes; KeyError when missing or expired."""
        ...

    def path(self, key: str) -> Path:
        """A file holding the blob, for zero-copy responses; KeyError when missing or expired."""
        ...

    def info(self, key: str) -> BlobInfo:
        """Content type, size and expiry; KeyError when missing or expired."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; a missing key is not an error."""
        ...

    def sweep(self, now: float | None = None) -> int:
        """Remove expired blobs (and leftovers of dead writers); return how many blobs went."""
        ...


def check_key(key: str) -> PurePosixPath:
    """A relative path of plain names: no "..", no absolute path, no hidden components."""
    if not key or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid blob key {key!r}")
    path = PurePosixPath(key)
    if path.is_absolute() or any(part.startswith(".") for part in path.parts):
        raise ValueError(f"invalid blob key {key!r}: must be a relative path of plain names")
    if str(path) != key:  # "a//b", "a/./b", trailing "/": one spelling per key
        raise ValueError(f"invalid blob key {key!r}: not in canonical form")
    return path


def open_blobs(settings: Settings) -> DirBlobs:
    """The blob store every process of one service shares: `<data_dir>/blobs`."""
    return DirBlobs(settings.data_dir / "blobs")


class DirBlobs:
    """Blobs as files under `root`; metadata in `root/.meta/<key>.json`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # --- paths

    def _data_path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).parts)

    def _meta_path(self, key: str) -> Path:
        parts = check_key(key).parts
        return self.root.joinpath(META_DIR, *parts[:-1], parts[-1] + ".json")

    # --- writes

    def put(self, key: str, data: bytes, content_type: str, expires_at: float | None) -> None:
        meta = {"content_type": content_type, "size": len(data), "expires_at": expires_at}
        # Metadata first, data second: a kill between the two leaves a sidecar without data
        # (or beside the old data, whose size then disagrees), which reads as missing, rather
        # than data with no (or a stale) expiry.
        _write_atomic(self._meta_path(key), json.dumps(meta).encode())
        _write_atomic(self._data_path(key), data)

    def delete(self, key: str) -> None:
        # Data first: a kill in between leaves a sidecar alone, which reads as missing.
        for path in (self._data_path(key), self._meta_path(key)):
            path.unlink(missing_ok=True)
            _prune_empty_dirs(path.parent, stop=self.root)

    # --- reads

    def info(self, key: str) -> BlobInfo:
        return self._live_info(key, time.time())

    def get(self, key: str) -> bytes:
        info = self._live_info(key, time.time())
        try:
            data = self._data_path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(key) from None
        if len(data) != info.size:  # a put killed between its two renames
            raise KeyError(key)
        return data

    def path(self, key: str) -> Path:
        info = self._live_info(key, time.time())
        data = self._data_path(key)
        try:
            if data.stat().st_size != info.size or not data.is_file():
                raise KeyError(key)
        except FileNotFoundError:
            raise KeyError(key) from None
        return data

    def _live_info(self, key: str, now: float) -> BlobInfo:
        info = self._read_info(self._meta_path(key))
        if info is None or (info.expires_at is not None and info.expires_at <= now):
            raise KeyError(key)
        return info

    @staticmethod
    def _read_info(meta_path: Path) -> BlobInfo | None:
        try:
            raw = json.loads(meta_path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        expires = raw.get("expires_at")
        return BlobInfo(
            content_type=str(raw["content_type"]),
            size=int(raw["size"]),
            expires_at=None if expires is None else float(expires),
        )

    # --- maintenance

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        meta_root = self.root / META_DIR
        removed = 0
        for meta_path in _files(meta_root):
            if _is_temp(meta_path):
                _remove_if_stale(meta_path, now)
                continue
            info = self._read_info(meta_path)
            if info is None or info.expires_at is None or info.expires_at > now:
                continue
            rel = meta_path.relative_to(meta_root)
            key = str(PurePosixPath(*rel.parts).with_suffix(""))
            self.delete(key)
            removed += 1
        for path in _files(self.root, skip=meta_root):
            if _is_temp(path):
                _remove_if_stale(path, now)
        return removed


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden temp file beside `path`, then rename it over `path`.

    No fsync: the guarantee is against a killed process (the page cache survives it), not a
    power cut, and an fsync per output would cap throughput at the disk's flush rate.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        for attempt in range(2):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                break
            except FileNotFoundError:
                # A sweep pruned the (then empty) directory between mkdir and open.
                if attempt:
                    raise
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prune_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove now-empty directories up to (not including) `stop`, so old outputs leave no trail."""
    while directory != stop and stop in directory.parents:
        try:
            directory.rmdir()
        except OSError:  # not empty (or already gone): nothing more to prune
            return
        directory = directory.parent


def _is_temp(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _remove_if_stale(path: Path, now: float) -> None:
    try:
        if path.stat().st_mtime < now - STALE_TEMP_SECONDS:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _files(root: Path, skip: Path | None = None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None:
            dirnames[:] = [d for d in dirnames if here / d != skip]
        for name in filenames:
            yield here / name
