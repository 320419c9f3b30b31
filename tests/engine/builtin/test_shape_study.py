import random
from typing import cast

import pytest
from PIL import Image, ImageDraw

from dreamserve.engine.builtin import shape_study
from dreamserve.engine.builtin.captions import NUMBERS, plural
from dreamserve.engine.builtin.checker import cell_of
from dreamserve.engine.builtin.render import SHAPES
from dreamserve.engine.builtin.sample import Sampler, SampleSpec


def test_each_place_draws_the_object_where_its_name_says() -> None:
    rnd = random.Random(1)
    for _ in range(20):
        text, scene = shape_study.draw("centre", rnd)
        (o,) = scene.objects
        assert (o.x, o.y) == (0.5, 0.5) and "center" in text and o.shape in text
        text, scene = shape_study.draw("anywhere", rnd)
        (o,) = scene.objects
        assert 0.2 <= o.x <= 0.8 and 0.2 <= o.y <= 0.8 and "center" not in text
        _, scene = shape_study.draw("grammar", rnd)
        assert len(scene.objects) == 1


def test_grammar_probes_are_positioned_single_objects_not_small() -> None:
    todo = shape_study.probes("grammar", 12)
    assert len(todo) == 12 and len({p[0] for p in todo}) > 6
    assert all(shape in SHAPES and count is None for _, _, shape, _, count in todo)
    assert shape_study.probes("centre")[:12] == [
        (f"a large red {s} in the center on a white background", "red", s, 7, None) for s in SHAPES
    ]
    assert cell_of(0.5, 0.5) == ("center", "middle")


def test_count_scenes_hold_as_many_objects_as_their_caption_says() -> None:
    rnd, words = random.Random(2), {word: n for n, word in NUMBERS.items()}
    seen = set()
    for _ in range(40):
        text, scene = shape_study.draw("count", rnd)
        n = words[text.split()[0]]
        assert len(scene.objects) == n and text.endswith("on a white background")
        assert all(o.color == "red" and o.shape == scene.objects[0].shape for o in scene.objects)
        seen.add(n)
    assert seen == {1, 2, 3, 4}


def test_count_probes_ask_each_number_as_often() -> None:
    todo = shape_study.probes("count")
    assert len(todo) == 36 and {p[4] for p in todo} == {1, 2, 3, 4}
    assert [p[4] for p in todo].count(3) == 9
    assert todo[2][0] == f"three red {plural(todo[2][2])} on a white background"


def test_a_count_probe_hits_on_exactly_its_number_at_the_asked_guidance() -> None:
    asked: list[float | None] = []

    def two_squares(spec: SampleSpec, inputs: object, progress: object) -> Image.Image:
        asked.append(spec.guidance)
        img = Image.new("RGB", (spec.width, spec.height), "white")
        for x in (40, 160):
            ImageDraw.Draw(img).rectangle((x, 100, x + 50, 150), fill=(220, 30, 30))
        return img

    todo = [p for p in shape_study.probes("count") if p[2] == "square"]  # numbers 1-4
    shots: list[tuple[str, Image.Image]] = []
    hits = shape_study.score(cast(Sampler, two_squares), todo, shots, guidance=1.0)
    assert hits == 1 and asked == [1.0] * 4  # only "two" has two
    assert [label for label, _ in shots][:2] == ["1 asked: 2 found", "2 asked: 2 found"]


@pytest.mark.slow
def test_a_study_probes_before_training_and_after_each_listed_step() -> None:
    logged: list[str] = []
    out = shape_study.study(
        "anywhere", [1, 2], local=3, batch=2, n_probes=2, times=(0.6, 0.9), log=logged.append
    )
    assert [step for step, _, _ in out] == [0, 1, 2]
    assert all(0 <= hits <= 2 for _, hits, _ in out)
    assert out[0][2] == 0.0 and out[1][2] > 0.0  # no loss before the first step
    assert logged[0].startswith("anywhere step 0: ") and "/2" in logged[-1]


@pytest.mark.slow
def test_scratch_runs_that_differ_in_one_flag_see_the_same_first_batch() -> None:
    # The comparison rotary positions were chosen by: a new model, same data and noise.
    # adaLN-Zero makes a new DiT output zero, so the first step's loss is the same for both.
    kw = {"batch": 2, "n_probes": 1, "scratch": 64, "log": lambda _: None}
    flat = shape_study.study("anywhere", [1], **kw)  # type: ignore[arg-type]
    turned = shape_study.study("anywhere", [1], rope=True, **kw)  # type: ignore[arg-type]
    assert flat[1][2] == pytest.approx(turned[1][2]) and flat[1][2] > 0.0
