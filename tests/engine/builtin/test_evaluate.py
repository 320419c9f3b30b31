import json
import random
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
import torch
from PIL import Image

from dreamserve.engine.builtin import evaluate, train
from dreamserve.engine.builtin.captions import ObjSpec, PromptSpec
from dreamserve.engine.builtin.checker import find_objects, scene_colors
from dreamserve.engine.builtin.eval_report import Tally, table
from dreamserve.engine.builtin.render import Obj, Scene, render
from dreamserve.engine.builtin.sample import Sampler, SampleSpec


@pytest.mark.slow
def test_eval_scores_a_checkpoint_and_writes_report_and_grid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train.main(out=run, config="tiny") == 0
    out = tmp_path / "eval"
    assert evaluate.main(checkpoint=run / "ckpt.pt", samples=2, out=out) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("color_shape", "relation", "count", "edit", "reference", "edit_psnr_db"):
        assert key in report["results"]
    for op in ("combine", "onto", "restyle"):  # per-task rows beside the reference target
        assert report["counts"][f"reference:{op}"] == 2
    assert report["counts"]["combine:image_1"] == 2  # one object from image 1 per task
    assert report["counts"]["color_shape"] == 2
    assert report["counts"]["count:over"] == report["counts"]["relation:leak"] == 2
    assert Image.open(out / "grid.png").width > 256
    assert Image.open(out / "shapes.png").height > 2 * 256  # 12 shapes, 6 a row
    assert Image.open(out / "shape_time.png").size[1] > 4 * 256  # 4 shapes, 5 tiles a row
    assert "| metric | result | target | met |" in (out / "report.md").read_text()
    assert report["plan"] is True  # the tiny config reads layout plans, as served
    assert evaluate.main(checkpoint=run / "ckpt.pt", samples=2, out=out, plan=False) == 0
    assert json.loads((out / "report.json").read_text())["plan"] is False


def test_edits_prefer_sentences_the_training_never_saw() -> None:
    rnd = random.Random(0)
    first = evaluate.edit_spec(random.Random(0), "recolor")
    task = evaluate._unseen_edit(rnd, "recolor", {first.text})
    assert task.op == "recolor" and task.text != first.text


def _rows(spec: PromptSpec, *objs: Obj) -> dict[str, float]:
    """check_t2i's rows for a true render of `objs` on white."""
    t = Tally()
    evaluate.check_t2i(render(Scene("white", objs), 256, 256), spec, t)
    return table(t)


def _above(a: ObjSpec, b: ObjSpec) -> PromptSpec:
    text = f"a {a.color} {a.shape} above a {b.color} {b.shape} on a white background"
    return PromptSpec("relation", "white", (a, b), text, relation="above")


def test_relation_layout_tells_a_wrong_layout_from_wrong_shapes() -> None:
    spec = _above(ObjSpec("circle", "red"), ObjSpec("square", "blue"))

    def scored(top: str, top_y: float) -> dict[str, float]:
        return _rows(
            spec, Obj(top, "red", 0.5, top_y, 0.25), Obj("square", "blue", 0.5, 1 - top_y, 0.25)
        )

    assert scored("circle", 0.25) | {"edit_psnr_db": 0} == {
        "relation": 1.0,
        "relation:leak": 0.0,
        "relation_layout": 1.0,
        "edit_psnr_db": 0,
    }
    assert scored("star", 0.25)["relation"] == 0.0  # placed right, drawn wrong
    assert scored("star", 0.25)["relation_layout"] == 1.0
    assert scored("circle", 0.75)["relation_layout"] == 0.0  # drawn right, placed wrong


def test_leak_row_tells_a_shape_bound_to_the_wrong_object_from_a_shape_drawn_badly() -> None:
    spec = _above(ObjSpec("square", "green"), ObjSpec("moon", "blue"))

    def leak(bottom: str) -> float:
        objs = (Obj("square", "green", 0.5, 0.25, 0.25), Obj(bottom, "blue", 0.5, 0.75, 0.25))
        return _rows(spec, *objs)["relation:leak"]

    assert leak("moon") == 0.0  # both right
    assert leak("square") == 1.0  # the moon wears the square's shape
    assert leak("heart") == 0.0  # wrong, but not the other object's shape


def test_count_rows_split_by_asked_number_and_flag_too_many() -> None:
    def rows(asked: int, drawn: int) -> dict[str, float]:
        spec = PromptSpec("count", "white", (ObjSpec("heart", "red", "small"),), "x", count=asked)
        grid = [(0.2 + 0.3 * (k % 3), 0.2 + 0.3 * (k // 3)) for k in range(drawn)]
        return _rows(spec, *(Obj("heart", "red", x, y, 0.12) for x, y in grid))

    assert rows(3, 3) | {"edit_psnr_db": 0} == {
        "count": 1.0,
        "count:3": 1.0,
        "count:over": 0.0,
        "edit_psnr_db": 0,
    }
    assert rows(2, 5)["count:2"] == 0.0 and rows(2, 5)["count:over"] == 1.0
    assert rows(4, 2)["count:over"] == 0.0  # too few is wrong, but not over


def test_combine_rows_tell_a_shape_lost_from_the_other_images_from_a_wrong_place() -> None:
    task = evaluate.ref_spec(random.Random(3), "combine")
    inputs, tgt = evaluate.realize_task(task, random.Random(4))
    first = set(inputs[0].objects)

    def blob(o: Obj) -> Obj:  # the right colour in the right place, the wrong shape
        return replace(o, shape="square" if o.shape != "square" else "circle")

    drawn = replace(tgt, objects=tuple(o if o in first else blob(o) for o in tgt.objects))
    t = Tally()
    evaluate.check_combine(find_objects(render(drawn, 256, 256), scene_colors(tgt)), inputs, t)
    rows = table(t)
    assert rows["combine:image_1"] == 1.0
    assert rows["combine:other_images"] == 0.0  # shapes lost...
    assert rows["combine:other_in_place"] == 1.0  # ...by objects brought to their places


class _RoundTrip:
    """A sampler's image paths without a model: encode keeps the image, render returns it
    (lossless) or a blank one (a decoder that loses everything). Generating records the
    prompt and seed and draws nothing."""

    def __init__(self, lossless: bool = True) -> None:
        self.lossless, self.last = lossless, Image.new("RGB", (256, 256))
        self.asked: list[tuple[str, int]] = []

    def __call__(self, spec: SampleSpec, images: object, on_step: object) -> Image.Image:
        self.asked.append((spec.prompt, spec.seed))
        return Image.new("RGB", (spec.width, spec.height), "white")

    def encode_images(self, images: list[Image.Image], gw: int, gh: int) -> list[torch.Tensor]:
        self.last = images[0]
        return [torch.zeros(1, 1, gh, gw)]

    def kept_pixels(self, *args: object) -> None:
        return None  # the lossless round trip needs none of image 1's pixels

    def render(self, z: torch.Tensor, width: int, height: int, kept: object = None) -> Image.Image:
        return self.last if self.lossless else Image.new("RGB", (width, height), "white")


def test_ceiling_rows_score_the_round_trip_of_a_true_scene() -> None:
    spec = evaluate.single_spec(random.Random(1))
    for lossless, want in ((True, True), (False, False)):
        t = Tally()
        evaluate.check_ceiling(cast(Sampler, _RoundTrip(lossless)), spec, random.Random(2), t)
        assert t.ok["ceiling:color_shape"] == [want]
        assert "color_shape" not in t.ok  # the target rows are the model's alone


def test_draw_zero_repeats_the_held_out_set_and_another_draw_is_fresh() -> None:
    def asked(draw: int) -> list[tuple[str, int]]:
        fake = _RoundTrip()
        evaluate.evaluate(cast(Sampler, fake), 2, set(), draw=draw)
        return fake.asked

    first, again, other = asked(0), asked(0), asked(1)
    assert first == again
    assert len(other) == len(first)
    t2i = slice(0, 6)  # 2 single, relation, count (reference sentences are a fixed few)
    assert not {p for p, _ in first[t2i]} & {p for p, _ in other[t2i]}  # new prompts...
    assert not {s for _, s in first} & {s for _, s in other}  # ...and new noise


def test_a_lossless_round_trip_puts_every_ceiling_row_at_100_percent() -> None:
    rows = table(evaluate.evaluate(cast(Sampler, _RoundTrip()), 3, set()))
    ceilings = {k: v for k, v in rows.items() if k.startswith("ceiling:")}
    rows_asked = ("color_shape", "position", "relation", "relation_layout", "count", "edit")
    assert set(ceilings) == {f"ceiling:{k}" for k in (*rows_asked, "reference")}
    assert all(v == 1.0 for v in ceilings.values())  # the checker passes every true scene
    assert rows["color_shape"] == 0.0  # the model's rows are its own (it drew blank images)
