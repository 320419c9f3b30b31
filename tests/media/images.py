"""Image bytes for media tests: valid images, truncated ones, decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(size: tuple[int, int] = (64, 48), colour: tuple[int, ...] = (200, 30, 40),
              mode: str = "RGB") -> bytes:  # fmt: skip
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, "PNG")
    return buf.getvalue()


def noise_bytes(fmt: str = "PNG", size: tuple[int, int] = (256, 256)) -> bytes:
    """Incompressible pixels, so cutting the file really loses image data."""
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes that declares width x height RGB pixels.

    The IDAT holds one zero-filled row compressed: decoding it for real would need
    width*height*3 bytes, which is what the decoder must refuse to allocate.
    """
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * min(width * 3 + 1, 1 << 16), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
