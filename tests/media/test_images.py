"""decode (limits, hostile inputs, EXIF, alpha), resize_exact and encode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dreamserve.media.errors import InputError
from dreamserve.media.fetch import Fetched
from dreamserve.media.images import decode, encode, resize_exact, to_rgb
from tests.media.images import bomb_png, noise_bytes, png_bytes

MAX_PIXELS = 36_000_000


def fetched(data: bytes, content_type: str | None = "image/png", source: str = "URL") -> Fetched:
    return Fetched(data, content_type, source)


def test_decodes_a_png_to_rgb() -> None:
    img = decode(fetched(png_bytes((64, 48), (200, 30, 40))), MAX_PIXELS)
    assert (img.mode, img.size) == ("RGB", (64, 48))
    assert img.getpixel((10, 10)) == (200, 30, 40)


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (8000, 8000)])
def test_decompression_bomb_fails_before_any_pixel_is_decoded(
    width: int, height: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above Pillow's own bomb limit (10 Gpx) and between its limit and ours (64 Mpx)."""
    data = bomb_png(width, height)
    assert len(data) < 1024

    def must_not_load(self: Image.Image) -> None:
        raise AssertionError("decoded pixels of an image over the limit")

    monkeypatch.setattr(Image.Image, "load", must_not_load)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", must_not_load)
    with pytest.raises(InputError) as exc:
        decode(fetched(data), MAX_PIXELS)
    assert str(exc.value).startswith("image too large")
    assert "the limit is 36 megapixels" in str(exc.value)


def test_bomb_message_names_the_declared_size_when_known() -> None:
    with pytest.raises(InputError) as exc:
        decode(fetched(bomb_png(8000, 8000)), MAX_PIXELS)
    assert str(exc.value) == "image too large: 8000x8000 pixels (the limit is 36 megapixels)"


def test_text_is_not_an_image_and_the_message_says_what_it_was() -> None:
    with pytest.raises(InputError) as exc:
        decode(fetched(b"hello world", "text/plain", "data URL"), MAX_PIXELS)
    assert str(exc.value) == "not an image (data URL of type text/plain)"


def test_unknown_bytes_labelled_as_an_image() -> None:
    with pytest.raises(InputError) as exc:
        decode(fetched(b"\x00\x01garbage" * 20, "image/png"), MAX_PIXELS)
    assert str(exc.value).startswith("not an image in a supported format (PNG, JPEG, WEBP")


def test_formats_outside_the_allow_list_are_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "ICO")
    with pytest.raises(InputError, match="not an image in a supported format"):
        decode(fetched(buf.getvalue(), None), MAX_PIXELS)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_a_clear_error(fmt: str) -> None:
    data = noise_bytes(fmt)
    with pytest.raises(InputError) as exc:
        decode(fetched(data[: len(data) // 2]), MAX_PIXELS)
    assert str(exc.value).startswith(f"truncated or corrupt {fmt} image (")


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display turned 90 degrees clockwise
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)

    upright = decode(fetched(buf.getvalue(), "image/jpeg"), MAX_PIXELS)

    assert upright.size == (20, 40)
    r, g, b = upright.getpixel((10, 2))  # the left band is now on top
    assert r > 200 and b < 60


def test_alpha_is_flattened_on_white() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 5, 10))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    rgb = decode(fetched(buf.getvalue()), MAX_PIXELS)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((1, 1)) == (255, 0, 0)
    assert rgb.getpixel((8, 8)) == (255, 255, 255)


def test_palette_transparency_and_16_bit_grey_convert_sensibly() -> None:
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((0, 0)) == (255, 255, 255)

    grey16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(grey16).getpixel((0, 0))[0] >= 254
    grey16_mid = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert 120 <= to_rgb(grey16_mid).getpixel((0, 0))[0] <= 135


def test_rgb_input_is_not_copied() -> None:
    img = Image.new("RGB", (4, 4))
    assert to_rgb(img) is img


# --- resize_exact


def test_resize_is_a_no_op_at_the_asked_size() -> None:
    img = Image.new("RGB", (32, 16), (1, 2, 3))
    assert resize_exact(img, (32, 16)) is img


@pytest.mark.parametrize(
    ("src", "dst"), [((100, 100), (64, 48)), ((64, 48), (1024, 1024)), ((30, 70), (77, 13))]
)
def test_resize_gives_exactly_the_asked_size(src: tuple[int, int], dst: tuple[int, int]) -> None:
    assert resize_exact(Image.new("RGB", src), dst).size == dst


def test_resize_crops_a_different_aspect_instead_of_stretching() -> None:
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (50, 0, 150, 100))  # red centre square between blue margins
    out = np.asarray(resize_exact(img, (50, 50))).astype(int)
    assert out.shape == (50, 50, 3)
    assert (out[:, :, 0] > 240).all() and (out[:, :, 2] < 15).all()  # no blue margin left


# --- encode


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_encode_formats_round_trip(fmt: str, pil_format: str) -> None:
    img = Image.new("RGB", (96, 64), (20, 140, 220))
    back = Image.open(io.BytesIO(encode(img, fmt, 90)))
    assert (back.format, back.size) == (pil_format, (96, 64))
    pixel = back.convert("RGB").getpixel((5, 5))
    assert all(abs(a - b) <= 4 for a, b in zip(pixel, (20, 140, 220), strict=True))


def test_png_is_lossless_and_quality_changes_jpeg_size() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode(img, "png", 20)))), pixels)
    assert len(encode(img, "jpg", 20)) < len(encode(img, "jpg", 99))


def test_encode_flattens_rgba_for_jpeg() -> None:
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    back = Image.open(io.BytesIO(encode(img, "jpg", 95)))
    assert back.mode == "RGB"
    assert back.getpixel((4, 4))[0] > 245
