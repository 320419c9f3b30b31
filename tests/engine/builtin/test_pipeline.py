"""The engine end to end with the shipped weights (skipped only while none are shipped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dreamserve.engine.base import Canceled, Generator, Progress, Task, load_generator
from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.data import render_batch
from dreamserve.engine.builtin.render import Obj, Scene, render
from dreamserve.engine.builtin.sample import DEFAULT_GUIDANCE
from dreamserve.engine.builtin.upscaler import edge_energy, upscale
from dreamserve.request import SIZES_2K, GenerationRequest

pytestmark = pytest.mark.skipif(not weights.available(), reason="no built-in weights shipped yet")


@pytest.fixture(scope="module")
def gen() -> Generator:
    g = load_generator("builtin")
    g.steps = 2  # type: ignore[attr-defined]  # the pipeline is the same at any step count
    return g


def _task(
    w: int = 256, h: int = 256, images: list[Image.Image] | None = None, **kw: object
) -> Task:
    req = GenerationRequest.parse({"prompt": "a red circle on the left", **kw})
    return Task(req, images or [], w, h, seed=int(kw.get("seed", 7)))  # type: ignore[arg-type]


def test_loads_offline_and_is_a_generator(gen: Generator) -> None:
    assert isinstance(gen, Generator) and gen.name == "builtin"


def test_every_aspect_ratio_at_its_exact_size(gen: Generator) -> None:
    for w, h in SIZES_2K.values():
        w, h = w // 8, h // 8  # same aspect ratios, small enough for a quick test
        (img,) = gen.generate(_task(w, h), lambda p: None, lambda: False)
        assert img.size == (w, h)


def test_4k_output_has_the_asked_pixels(gen: Generator) -> None:
    (img,) = gen.generate(_task(4096, 4096), lambda p: None, lambda: False)
    assert img.size == (4096, 4096)


def test_4k_edges_are_drawn_by_the_trained_upscaler_not_stretched() -> None:
    m = weights.load()
    scene = Scene(
        "white", (Obj("star", "blue", 0.4, 0.5, 0.34), Obj("circle", "red", 0.8, 0.3, 0.2))
    )
    with torch.inference_mode():
        decoded = (m.ae.decode(m.ae.encode(render_batch([scene], 8, 8))) + 1) / 2  # 256 px
        out = upscale(m.sr, decoded.clamp(0, 1), 4096, 4096)
    stretched = torch.nn.functional.interpolate(
        decoded.clamp(0, 1), size=(4096, 4096), mode="bilinear"
    )
    # An edge w pixels wide has 1/w of a step's squared-gradient energy: the shipped upscaler's
    # edges are measurably narrower than a bilinear stretch of the same decode.
    assert edge_energy(out) > 1.3 * edge_energy(stretched)
    # ...and in the right place: against the scene drawn natively at 1K, it beats bilinear.
    native = (render_batch([scene], 64, 64) + 1) / 2  # (1, 3, 1024, 1024)
    small = upscale(m.sr, decoded.clamp(0, 1), 1024, 1024)
    bilinear = torch.nn.functional.interpolate(
        decoded.clamp(0, 1), size=(1024, 1024), mode="bilinear"
    )
    assert torch.nn.functional.mse_loss(small, native) < torch.nn.functional.mse_loss(
        bilinear, native
    )


def test_deterministic_and_seed_dependent(gen: Generator) -> None:
    a = gen.generate(_task(seed=3), lambda p: None, lambda: False)[0]
    b = gen.generate(_task(seed=3), lambda p: None, lambda: False)[0]
    c = gen.generate(_task(seed=4), lambda p: None, lambda: False)[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_a_blank_guidance_scale_is_the_models_measured_default(gen: Generator) -> None:
    def pixels(**kw: object) -> np.ndarray:
        return np.asarray(gen.generate(_task(**kw), lambda p: None, lambda: False)[0])

    blank = pixels()
    assert np.array_equal(blank, pixels(guidance_scale=DEFAULT_GUIDANCE))
    assert not np.array_equal(blank, pixels(guidance_scale=2.5))


def test_edit_and_references_take_input_images(gen: Generator) -> None:
    src = render(Scene("white", (Obj("square", "blue", 0.5, 0.5, 0.3),)), 256, 256)
    other = render(Scene("night sky", (), star_seed=2), 256, 256)
    edit = _task(images=[src], prompt="make the blue square red")
    assert gen.generate(edit, lambda p: None, lambda: False)[0].size == (256, 256)
    refs = _task(
        images=[src, other], prompt="put the blue square of image 1 on the background of image 2"
    )
    assert len(gen.generate(refs, lambda p: None, lambda: False)) == 1


def test_input_images_beyond_the_trained_three_are_named_in_the_logs(gen: Generator) -> None:
    src = render(Scene("white", (Obj("square", "blue", 0.5, 0.5, 0.3),)), 64, 64)
    seen: list[Progress] = []
    task = _task(images=[src] * 5, prompt="combine images 1 to 5")
    assert len(gen.generate(task, seen.append, lambda: False)) == 1
    messages = [p.message for p in seen if p.message]
    assert messages == [
        "the built-in model uses the first 3 of the 5 input images "
        "(images 4-5 are ignored); it was trained with at most 3"
    ]


def test_sets_and_independent_outputs(gen: Generator) -> None:
    steps: list[Progress] = []
    task = _task(
        prompt="three images of a red circle moving from left to right",
        sequential_image_generation="auto",
        max_images=3,
    )
    imgs = gen.generate(task, steps.append, lambda: False)
    assert len(imgs) == 3 and steps[-1].step == steps[-1].total == 6
    many = gen.generate(_task(num_outputs=2), lambda p: None, lambda: False)
    assert not np.array_equal(np.asarray(many[0]), np.asarray(many[1]))


def test_cancels_between_steps(gen: Generator) -> None:
    seen: list[Progress] = []
    with pytest.raises(Canceled):
        gen.generate(_task(), seen.append, lambda: len(seen) >= 1)
    assert len(seen) == 1


def test_sampling_from_a_noised_image_keeps_it_from_low_noise() -> None:
    # evaluate.shape_time_probe starts the flow at t0 from a noised render: at t0 = 0 that is
    # the render's latents unchanged, and from t0 = 0.3 the output stays near the render.
    from dreamserve.engine.builtin.sample import Sampler, SampleSpec
    from dreamserve.engine.builtin.textenc import TextEncoder

    m = weights.load()
    sampler = Sampler(m.ae, m.dit, m.sr, TextEncoder())
    img = render(Scene("white", (Obj("star", "red", 0.5, 0.5, 0.34),)), 256, 256, 2)
    (z0,) = sampler.encode_images([img], 8, 8)
    spec = SampleSpec("a large red star in the center on a white background", 3, 256, 256)
    same = sampler.latents(spec, [], lambda: None, start=(z0, 0.0))
    assert torch.equal(same, z0)
    near = sampler.latents(spec, [], lambda: None, start=(z0, 0.3))
    free = sampler.latents(spec, [], lambda: None)
    assert (near - z0).pow(2).mean() < 0.25 * (free - z0).pow(2).mean()


def test_an_edit_keeps_image_1s_own_pixels_where_the_transformer_kept_its_latents() -> None:
    from dataclasses import replace

    from dreamserve.engine.builtin.sample import Sampler, SampleSpec
    from dreamserve.engine.builtin.textenc import TextEncoder

    m = weights.load()
    sampler = Sampler(m.ae, m.dit, m.sr, TextEncoder())
    objs = (Obj("square", "blue", 0.3, 0.3, 0.24), Obj("star", "red", 0.7, 0.7, 0.24))
    spec = SampleSpec("make the blue square green", 5, 256, 256)
    for size in (256, 1024):  # at the decoder's size, and at the output's past the upscaler
        src = render(Scene("sunset", objs), size, size, 2)  # no clamped white to match
        ask = replace(spec, width=size, height=size)
        kept = np.asarray(sampler(ask, [src], lambda: None))
        plain = np.asarray(sampler(replace(ask, keep=False), [src], lambda: None))
        same = (kept == np.asarray(src)).all(-1)
        assert same.mean() > 0.5  # most of the picture is image 1's own pixels
        assert (plain == np.asarray(src)).all(-1).mean() < 0.5 * same.mean()
        square = same[int(0.2 * size) : int(0.4 * size), int(0.2 * size) : int(0.4 * size)]
        assert square.mean() < 0.1  # the square it recoloured is the model's
    small = render(Scene("sunset", objs), 64, 64, 2)  # stretched, it would blur the output
    ask = replace(spec, keep=False)
    assert sampler(spec, [small], lambda: None) == sampler(ask, [small], lambda: None)
