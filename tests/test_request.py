"""The canonical request: every rule names its field; the size table matches DESIGN.md."""

from __future__ import annotations

from typing import Any

import pytest

from dreamserve.request import PRESETS, SIZES_2K, GenerationRequest, RequestInvalid


def errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as exc:
        GenerationRequest.parse(data)
    return {e.field: e.rule for e in exc.value.errors}


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({}, "prompt", "required"),
        ({"prompt": "   "}, "prompt", "white space"),
        ({"prompt": "x" * 2001}, "prompt", "2000"),
        ({"prompt": "a", "image_input": ["u"] * 11}, "image_input", "at most 10"),
        ({"prompt": "a", "max_images": 16}, "max_images", "15"),
        (
            {"prompt": "a", "sequential_image_generation": "auto", "max_images": 10,
             "image_input": ["u"] * 6},
            "max_images", "must not exceed 15",
        ),
        ({"prompt": "a", "size": "custom", "width": 900}, "width", "1024"),
        ({"prompt": "a", "height": 5000}, "height", "4096"),
        ({"prompt": "a", "aspect_ratio": "5:4"}, "aspect_ratio", "21:9"),
        ({"prompt": "a", "size": "8K"}, "size", "4K"),
        ({"prompt": "a", "output_quality": 10}, "output_quality", "20"),
        ({"prompt": "a", "guidance_scale": 11}, "guidance_scale", "10"),
        ({"prompt": "a", "output_format": "gif"}, "output_format", "webp"),
        ({"prompt": 5}, "prompt", "string"),
        ({"prompt": "a", "preset": "huge"}, "preset", "square_hd"),
    ],
)  # fmt: skip
def test_each_rule_names_its_field(data: dict[str, Any], field: str, words: str) -> None:
    found = errors(data)
    assert field in found, found
    assert words in found[field]


def test_all_broken_fields_are_reported_at_once() -> None:
    assert {"size", "output_format"} <= set(
        errors({"prompt": "a", "size": "x", "output_format": "y"})
    )


def test_sizes_follow_the_published_table() -> None:
    for ratio, (w, h) in SIZES_2K.items():
        assert GenerationRequest(prompt="a", size="2K", aspect_ratio=ratio).pixel_size() == (w, h)
        assert GenerationRequest(prompt="a", size="1K", aspect_ratio=ratio).pixel_size() == (
            w // 2,
            h // 2,
        )


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [("1:1", (4096, 4096)), ("4:3", (4096, 3072)), ("16:9", (4096, 2304)),
     ("3:2", (4096, 2736)), ("2:3", (2736, 4096)), ("21:9", (4096, 1760))],
)  # fmt: skip
def test_4k_caps_the_long_side_at_4096_with_a_short_side_of_16s(
    ratio: str, expected: tuple[int, int]
) -> None:
    size = GenerationRequest(prompt="a", size="4K", aspect_ratio=ratio).pixel_size()  # type: ignore[arg-type]
    assert size == expected and size[0] % 16 == 0 and size[1] % 16 == 0


def test_match_input_image_keeps_the_first_inputs_shape() -> None:
    req = GenerationRequest(prompt="a", size="2K", aspect_ratio="match_input_image")
    w, h = req.pixel_size((640, 480))
    assert abs(w / h - 4 / 3) < 0.01 and w % 16 == 0 and h % 16 == 0
    assert req.pixel_size(None) == (2048, 2048)  # no input: square


def test_custom_and_presets_are_exact() -> None:
    custom = GenerationRequest(prompt="a", size="custom", width=1500, height=1100)
    assert custom.pixel_size() == (1500, 1100)
    for name, size in PRESETS.items():
        assert GenerationRequest(prompt="a", preset=name).pixel_size() == size


def test_image_count() -> None:
    assert GenerationRequest(prompt="a", num_outputs=3).image_count == 3
    auto = GenerationRequest(prompt="a", sequential_image_generation="auto", max_images=5)
    assert auto.image_count == 5
