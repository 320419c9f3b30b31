"""`dreamserve generate` without a server: files written, named, sized; errors and exit codes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from dreamserve.cli import app
from dreamserve.local import generate_files, slug
from dreamserve.request import GenerationRequest
from tests.media.images import png_bytes

INSTANT = "tests.support.generators:instant"


def inputs(**overrides: Any) -> dict[str, Any]:
    return {"prompt": "A red circle, left of a blue star!", "size": "1K", "seed": 7, **overrides}


def test_writes_named_files_of_the_exact_size_and_prints_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = inputs(aspect_ratio="16:9", max_images=3, sequential_image_generation="auto")
    code = generate_files(request, tmp_path / "out", INSTANT)

    assert code == 0
    names = [f"a-red-circle-left-of-a-blue-star-7-{i}.jpg" for i in range(3)]
    expected = [tmp_path / "out" / name for name in names]
    assert capsys.readouterr().out.splitlines() == [str(p) for p in expected]
    for path in expected:
        with Image.open(path) as img:
            assert (img.format, img.size) == ("JPEG", (1280, 720))


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        assert generate_files(inputs(output_format="png"), tmp_path / folder, INSTANT) == 0
    name = "a-red-circle-left-of-a-blue-star-7-0.png"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_local_file_and_data_url_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    local = tmp_path / "in.png"
    local.write_bytes(png_bytes((300, 100)))
    as_url = "data:image/png;base64," + base64.b64encode(png_bytes((20, 20))).decode()
    request = inputs(image_input=(str(local), as_url), aspect_ratio="match_input_image")

    assert generate_files(request, tmp_path / "out", INSTANT) == 0

    captured = capsys.readouterr()
    assert "fetched image_input[0] (300x100)" in captured.err
    assert "Using seed: 7" in captured.err
    [written] = captured.out.splitlines()
    expected = GenerationRequest.parse(request).pixel_size((300, 100))
    with Image.open(written) as img:
        assert img.size == expected


def test_invalid_request_names_every_field_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = generate_files({"prompt": "", "size": "9K", "max_images": 20}, tmp_path, INSTANT)
    assert code == 2
    err = capsys.readouterr().err
    for field in ("prompt", "size", "max_images"):
        assert f"error: {field}: " in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("/no/such/file.png", "error: image_input[0]: no such file: /no/such/file.png"),
        ("data:text/plain;base64,aGVsbG8=", "error: image_input[0]: not an image (data URL"),
    ],
)
def test_bad_input_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: str, expected: str
) -> None:
    assert generate_files(inputs(image_input=(ref,)), tmp_path / "out", INSTANT) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_text_file_is_not_an_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert generate_files(inputs(image_input=(str(notes),)), tmp_path / "out", INSTANT) == 2
    assert "image_input[0]: not an image" in capsys.readouterr().err


def test_unloadable_generator_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate_files(inputs(), tmp_path, "no.such.module:factory") == 1
    assert "could not load generator 'no.such.module:factory'" in capsys.readouterr().err


def test_the_cli_command_runs_it(tmp_path: Path) -> None:
    args = ["generate", "two hearts", "--size", "1K", "--aspect-ratio", "2:3", "--seed", "3"]
    args += ["--format", "webp", "-o", str(tmp_path), "--generator", INSTANT]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "two-hearts-3-0.webp"
    assert str(path) in result.output
    with Image.open(path) as img:
        assert (img.format, img.size) == ("WEBP", (832, 1248))


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [("A red circle, left of a blue star!", "a-red-circle-left-of-a-blue-star"),
     ("!!!", "image"), ("x" * 100, "x" * 48), ("Ünïcode café", "unicode-cafe")],
)  # fmt: skip
def test_slug(prompt: str, expected: str) -> None:
    assert slug(prompt) == expected
