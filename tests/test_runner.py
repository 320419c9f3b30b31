"""Runner: inputs to stored outputs with the test generators (sizes, formats, seeds, cancel)."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image

from dreamserve.blobs import DirBlobs
from dreamserve.config import Settings
from dreamserve.engine.base import Canceled, Generator, Progress
from dreamserve.jobs.model import FileRecord, NotFound, Prediction, Store
from dreamserve.jobs.states import Status
from dreamserve.request import PRESETS, SIZES_2K, GenerationRequest
from dreamserve.runner import InputError, Runner, RunOutput
from tests.media import servers
from tests.media.images import bomb_png, png_bytes
from tests.support.generators import TestGenerator as StepGenerator
from tests.support.generators import failing, instant
from tests.support.live import free_port


class NoFiles:
    def get_file(self, file_id: str, owner: str | None = None) -> FileRecord:
        raise NotFound(file_id)


def data_url(data: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def prediction(pid: str = "p1", **inputs: Any) -> Prediction:
    request = GenerationRequest.parse({"prompt": "a red circle", **inputs})
    return Prediction(
        id=pid, dialect="replicate", model="bytedance/seedream-4", version="v", input=inputs,
        request=request.model_dump(mode="json"), owner=None, status=Status.PROCESSING,
        created_at=time.time(),
    )  # fmt: skip


@pytest.fixture
def blobs(tmp_path: Path) -> DirBlobs:
    return DirBlobs(tmp_path / "blobs")


def make_runner(tmp_path: Path, blobs: DirBlobs, generator: Generator | None = None) -> Runner:
    settings = Settings(data_dir=tmp_path, output_ttl=600.0, fetch_timeout=2.0)
    return Runner(settings, cast(Store, NoFiles()), generator or instant(), blobs=blobs)


def run(runner: Runner, pred: Prediction, log: list[Progress] | None = None) -> RunOutput:
    sink = log if log is not None else []
    return runner.run(pred, sink.append, lambda: False)


def output_images(blobs: DirBlobs, out: RunOutput) -> list[Image.Image]:
    return [Image.open(io.BytesIO(blobs.get(key))) for key in out.blob_keys]


ALL_SIZES: list[dict[str, Any]] = (
    [{"size": s, "aspect_ratio": r} for s in ("1K", "2K", "4K") for r in SIZES_2K]
    + [{"size": "custom", "width": 1024, "height": 4096}]
    + [{"preset": p} for p in PRESETS]
)


@pytest.mark.parametrize("inputs", ALL_SIZES, ids=str)
def test_every_size_and_aspect_ratio_is_exact(
    tmp_path: Path, blobs: DirBlobs, inputs: dict[str, Any]
) -> None:
    pred = prediction(**inputs, output_format="png")
    expected = GenerationRequest.parse(pred.request).pixel_size()
    out = run(make_runner(tmp_path, blobs, StepGenerator()), pred)
    [img] = output_images(blobs, out)
    assert img.size == expected


class NearlyRightSize:
    """Returns images a little off the asked size, as a real engine may (multiples of 16)."""

    name = "nearly"
    capabilities = instant().capabilities

    def generate(self, task: Any, on_progress: Any, should_cancel: Any) -> list[Image.Image]:
        return [Image.new("RGB", (task.width // 16 * 16 + 16, task.height // 16 * 16), "red")]


def test_outputs_off_the_asked_size_are_resized_exactly(tmp_path: Path, blobs: DirBlobs) -> None:
    pred = prediction(size="1K", aspect_ratio="21:9", output_format="png")
    out = run(make_runner(tmp_path, blobs, NearlyRightSize()), pred)
    assert output_images(blobs, out)[0].size == (1512, 648)


@pytest.mark.parametrize("size", ["1K", "2K", "4K"])
@pytest.mark.parametrize("first_size", [(640, 480), (100, 300), (2000, 700)])
def test_match_input_image_follows_the_first_input(
    tmp_path: Path, blobs: DirBlobs, size: str, first_size: tuple[int, int]
) -> None:
    first, second = png_bytes(first_size), png_bytes((100, 300))
    pred = prediction(
        size=size, aspect_ratio="match_input_image", image_input=[data_url(first), data_url(second)]
    )
    log: list[Progress] = []
    out = run(make_runner(tmp_path, blobs), pred, log)
    [img] = output_images(blobs, out)
    assert img.size == GenerationRequest.parse(pred.request).pixel_size(first_size)
    assert img.width / img.height == pytest.approx(first_size[0] / first_size[1], rel=0.03)
    messages = [p.message for p in log]
    assert f"fetched image_input[0] ({first_size[0]}x{first_size[1]})" in messages
    assert "fetched image_input[1] (100x300)" in messages


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_formats_keys_and_expiry(
    tmp_path: Path, blobs: DirBlobs, fmt: str, pil_format: str
) -> None:
    pred = prediction("pred-fmt", size="1K", aspect_ratio="1:1", output_format=fmt, num_outputs=2)
    before = time.time()
    out = run(make_runner(tmp_path, blobs), pred)
    assert out.blob_keys == (f"outputs/pred-fmt/output_0.{fmt}", f"outputs/pred-fmt/output_1.{fmt}")
    for key, img in zip(out.blob_keys, output_images(blobs, out), strict=True):
        assert img.format == pil_format
        info = blobs.info(key)
        assert info.content_type == f"image/{'jpeg' if fmt == 'jpg' else fmt}"
        assert info.expires_at is not None and before + 600 <= info.expires_at <= time.time() + 600


def test_sequential_sets_store_every_image(tmp_path: Path, blobs: DirBlobs) -> None:
    pred = prediction(size="1K", sequential_image_generation="auto", max_images=4)
    out = run(make_runner(tmp_path, blobs), pred)
    assert len(out.blob_keys) == 4
    assert len({blobs.get(k) for k in out.blob_keys}) == 4  # the test generator varies colour


def test_a_given_seed_reproduces_the_same_bytes(tmp_path: Path, blobs: DirBlobs) -> None:
    runner = make_runner(tmp_path, blobs)
    log: list[Progress] = []
    a = run(runner, prediction("a", seed=1234, size="1K"), log)
    b = run(runner, prediction("b", seed=1234, size="1K"))
    c = run(runner, prediction("c", seed=1235, size="1K"))
    assert a.seed == b.seed == 1234
    assert blobs.get(a.blob_keys[0]) == blobs.get(b.blob_keys[0]) != blobs.get(c.blob_keys[0])
    assert Progress(0, 1, "Using seed: 1234") in log


def test_without_a_seed_one_is_drawn_and_reported(tmp_path: Path, blobs: DirBlobs) -> None:
    runner = make_runner(tmp_path, blobs)
    log: list[Progress] = []
    seeds = {run(runner, prediction(str(i), size="1K"), log).seed for i in range(3)}
    assert len(seeds) > 1
    assert all(0 <= s < 2**31 for s in seeds)
    assert {f"Using seed: {s}" for s in seeds} <= {p.message for p in log}


def test_metrics_are_reported(tmp_path: Path, blobs: DirBlobs) -> None:
    out = run(make_runner(tmp_path, blobs), prediction(size="1K"))
    assert set(out.metrics) >= {"fetch_time", "generate_time", "encode_time", "image_count"}
    assert all(v >= 0 for v in out.metrics.values())
    assert out.metrics["image_count"] == 1


def test_engine_progress_is_passed_through(tmp_path: Path, blobs: DirBlobs) -> None:
    log: list[Progress] = []
    run(make_runner(tmp_path, blobs, StepGenerator(steps=3)), prediction(size="1K"), log)
    assert [(p.step, p.total) for p in log if p.step > 0] == [(1, 3), (2, 3), (3, 3)]


def test_cancel_propagates_and_stores_nothing(tmp_path: Path, blobs: DirBlobs) -> None:
    runner = make_runner(tmp_path, blobs, StepGenerator(steps=10))
    calls = iter(range(100))
    with pytest.raises(Canceled):
        runner.run(prediction("gone", size="1K"), lambda p: None, lambda: next(calls) >= 3)
    assert not (blobs.root / "outputs" / "gone").exists()


def test_cancel_before_fetching_inputs(tmp_path: Path, blobs: DirBlobs) -> None:
    pred = prediction(image_input=[data_url(png_bytes())])
    with pytest.raises(Canceled):
        make_runner(tmp_path, blobs).run(pred, lambda p: None, lambda: True)


@pytest.mark.parametrize(
    ("index", "ref", "expected"),
    [
        (1, data_url(b"plain words", "text/plain"), "not an image (data URL of type text/plain)"),
        (0, data_url(bomb_png(100_000, 100_000)), "image too large"),
        (2, "ftp://example.com/x.png", "unsupported URL scheme 'ftp'"),
    ],
)
def test_bad_inputs_are_input_errors_naming_the_input(
    tmp_path: Path, blobs: DirBlobs, index: int, ref: str, expected: str
) -> None:
    refs = [data_url(png_bytes())] * 3
    refs[index] = ref
    with pytest.raises(InputError) as exc:
        run(make_runner(tmp_path, blobs), prediction(image_input=refs))
    assert str(exc.value).startswith(f"image_input[{index}]: {expected}")


def test_closed_port_input(tmp_path: Path, blobs: DirBlobs) -> None:
    port = free_port()  # nothing listens there
    pred = prediction(image_input=[f"http://127.0.0.1:{port}/in.png"])
    with pytest.raises(InputError) as exc:
        run(make_runner(tmp_path, blobs), pred)
    assert str(exc.value) == (
        f"image_input[0]: could not connect to 127.0.0.1:{port} (connection refused)"
    )


def test_input_over_http(tmp_path: Path, blobs: DirBlobs) -> None:
    with servers.serve({"/in.png": servers.body(png_bytes((300, 200)), "image/png")}) as base:
        pred = prediction(size="1K", image_input=[f"{base}/in.png"])
        log: list[Progress] = []
        run(make_runner(tmp_path, blobs), pred, log)
    assert "fetched image_input[0] (300x200)" in [p.message for p in log]


def test_generator_failure_propagates(tmp_path: Path, blobs: DirBlobs) -> None:
    with pytest.raises(RuntimeError, match="asked to fail"):
        run(make_runner(tmp_path, blobs, failing()), prediction(size="1K"))


def test_a_stored_request_with_more_inputs_than_replicate_allows(
    tmp_path: Path, blobs: DirBlobs
) -> None:
    """runware allows 14 inputs; the bound is not in the stored dump, the runner restores it."""
    refs = [data_url(png_bytes((16, 16)))] * 14
    request = GenerationRequest.parse({"prompt": "x", "image_input": refs, "max_input_images": 14})
    pred = prediction(size="1K")
    pred = Prediction(**{**pred.__dict__, "request": request.model_dump(mode="json")})
    assert len(run(make_runner(tmp_path, blobs), pred).blob_keys) == 1


def test_a_corrupt_stored_request_is_an_input_error(tmp_path: Path, blobs: DirBlobs) -> None:
    pred = prediction()
    pred = Prediction(**{**pred.__dict__, "request": {"prompt": ""}})
    with pytest.raises(InputError, match="invalid request"):
        run(make_runner(tmp_path, blobs), pred)
