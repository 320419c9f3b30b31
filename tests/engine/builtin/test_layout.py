import random
from pathlib import Path

import pytest
import torch

from dreamserve.engine.builtin.autoencoder import AutoEncoder
from dreamserve.engine.builtin.data import Pools, build_pools
from dreamserve.engine.builtin.dit import LAYOUT_DIM, DiT
from dreamserve.engine.builtin.layout import (
    BOX_MARGIN,
    all_phrases,
    box_coords,
    cover,
    covers_all,
    layout_map,
    nearest,
    phrase_vectors,
    plan,
    regions,
)
from dreamserve.engine.builtin.render import Obj, Scene
from dreamserve.engine.builtin.sample import Sampler, SampleSpec
from dreamserve.engine.builtin.stream import draw
from dreamserve.engine.builtin.textenc import TextEncoder
from dreamserve.engine.builtin.train import flow_loss, plan_maps
from dreamserve.engine.builtin.train_config import CONFIGS
from dreamserve.engine.builtin.upscaler import Upscaler

TINY = CONFIGS["tiny"]


@pytest.fixture(scope="module")
def enc() -> TextEncoder:
    return TextEncoder()


def test_a_plan_follows_the_prompt_and_its_seed() -> None:
    three = plan("three teal hearts on a grass field", 5)
    assert three is not None and three.background == "grass field"
    assert [(o.shape, o.color) for o in three.objects] == [("heart", "cyan")] * 3
    assert plan("three teal hearts on a grass field", 5) == three
    assert plan("three teal hearts on a grass field", 6) != three
    rel = plan("a red star above a blue circle", 1)
    assert rel is not None
    star, circle = rel.objects
    assert (star.shape, circle.shape) == ("star", "circle") and star.y < circle.y
    corner = plan("a small green square at the top left", 2)
    assert corner is not None and corner.objects[0].x < 0.3 and corner.objects[0].y < 0.3
    assert plan("a portrait of a cat", 1) is None


def test_phrase_vectors_are_unit_and_tell_colours_and_shapes_apart(enc: TextEncoder) -> None:
    v = phrase_vectors(enc, ["red star", "blue star", "red circle", "red star"])
    assert sorted(v) == ["blue star", "red circle", "red star"]
    assert all(abs(float(x.norm()) - 1.0) < 1e-5 for x in v.values())
    assert float(v["red star"] @ v["blue star"]) < 0.99
    assert float(v["red star"] @ v["red circle"]) < 0.99
    assert len(all_phrases()) == 144 and "red star" in all_phrases()


def test_a_layout_map_covers_each_box_with_its_phrase_and_flags_the_plan() -> None:
    vec = {"red star": torch.ones(LAYOUT_DIM - 1), "blue circle": -torch.ones(LAYOUT_DIM - 1)}
    objs = (Obj("star", "red", 0.25, 0.25, 0.25), Obj("circle", "blue", 0.78, 0.55, 0.02))
    m = layout_map([objs, ()], (16, 8), vec)  # 16 tokens wide, 8 high
    assert m.shape == (2, LAYOUT_DIM, 8, 16)
    assert bool((m[:, -1] == 1).all())  # a plan is given to both samples, empty or not
    star = m[0, 0] > 0
    # The box is 0.25 of the short side (8 tokens): 2 tokens across, centred at (4, 2).
    assert star.sum() == 4 and bool(star[1:3, 3:5].all())
    tiny = m[0, 0] < 0
    assert tiny.sum() == 1 and bool(tiny[4, 12])  # too small for a token: its centre's token
    assert float(m[1, :-1].abs().sum()) == 0.0


def test_box_coordinates_run_across_each_box_and_the_later_object_wins() -> None:
    big = Obj("flower", "red", 0.5, 0.5, 0.5)  # 8 of 16 cells: centred, u from -1 to 1
    top = Obj("sun", "blue", 0.75, 0.5, 0.25)  # drawn after, overlapping big's right edge
    c = box_coords([(big,), (big, top), ()], (16, 16))
    flag, size, u, v = c[0, 0], c[0, 1], c[0, 2], c[0, 3]
    assert torch.allclose(u[8, 4:12], torch.linspace(-0.875, 0.875, 8))
    assert torch.allclose(v[4:12, 8], torch.linspace(-0.875, 0.875, 8))
    # A quarter box past the edge still reads its coordinates (edges blend into it), no more.
    assert bool(flag[8, 3] == 1) and float(u[8, 3]) == pytest.approx(-1.125)
    assert bool(flag[8, 2] == 0) and float(c[0, :, 8, 2].abs().sum()) == 0.0
    assert float(u.abs()[flag > 0].max()) <= BOX_MARGIN
    assert float(size[8, 8]) == 0.5
    # Cell (8, 12) is in both boxes: it reads the sun's (centred on column 12).
    assert float(c[1, 2, 8, 12]) == pytest.approx(0.25) and float(c[1, 1, 8, 12]) == 0.25
    assert float(c[1, 2, 8, 5]) == float(u[8, 5])  # the flower's, where the sun is not
    assert float(c[2].abs().sum()) == 0.0


def test_training_plans_a_share_of_text_to_image_samples_and_drops_them_with_the_prompt(
    tmp_path: Path,
) -> None:
    pools: Pools = build_pools(7, 40, 8, 6, tmp_path, log=lambda _: None)
    rnd = random.Random(0)
    t2i = draw(pools, (1, 0, 0, 0, 0), (64, 2, 2, 2, 2), rnd)
    edit = draw(pools, (0, 1, 0, 0, 0), (2, 2, 2, 2, 2), rnd)
    assert t2i.plans is not None and edit.plans is None
    x0 = torch.zeros(64, 4, t2i.target.shape[2] // 16, t2i.target.shape[3] // 16)
    torch.manual_seed(0)
    maps = plan_maps(TINY, t2i, pools, x0)
    assert maps is not None and maps.shape[2:] == x0.shape[2:]  # tiny: split 1
    planned = float((maps[:, -1, 0, 0] == 1).float().mean())
    assert 0.5 < planned < 0.9  # TrainConfig.layout_share 0.7
    assert plan_maps(TINY, edit, pools, x0[:2]) is None

    dit = DiT(TINY.dit)
    text = torch.randn(64, 5, 384), torch.ones(64, 5, dtype=torch.bool)
    cfg = type(TINY)(**{**TINY.__dict__, "text_drop": 1.0})
    flow_loss(dit, cfg, x0, text, [], t2i.objects, layout=maps)
    assert float(maps.abs().sum()) == 0.0  # every prompt dropped, every plan with it


def _sampler(enc: TextEncoder) -> Sampler:
    torch.manual_seed(0)
    dit = DiT(TINY.dit)
    with torch.no_grad():  # adaLN-Zero and the plan's layer start at zero: make them act
        for p in dit.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return Sampler(AutoEncoder(TINY.ae).eval(), dit.eval(), Upscaler(TINY.sr).eval(), enc)


def test_the_sampler_plans_text_to_image_prompts_it_can_read(enc: TextEncoder) -> None:
    s = _sampler(enc)
    spec = SampleSpec("two red stars on a plain white background", 3, 64, 64, steps=2)
    scene = s.plan(spec, [])
    assert scene is not None and len(scene.objects) == 2
    assert s.plan(SampleSpec("a portrait of a cat", 3, 64, 64), []) is None
    assert s.plan(SampleSpec(spec.prompt, 3, 64, 64, plan=False), []) is None
    assert s.plan(spec, [torch.zeros(1, 4, 4, 4)]) is None  # inputs say where
    c = s.conditions(spec, scene, 4, 4)
    assert c.layout is not None and c.layout.shape == (2, LAYOUT_DIM, 4, 4)
    assert float(c.layout[-1].abs().sum()) == 0.0  # no plan for the no-prompt row
    assert c.regions is None  # one phrase: nothing to split

    def image(sp: SampleSpec) -> bytes:
        return s(sp, [], lambda: None).tobytes()

    assert image(spec) == image(spec)  # deterministic, plan included
    assert image(spec) != image(SampleSpec(spec.prompt, 3, 64, 64, steps=2, plan=False))


def test_a_plan_with_two_phrases_splits_into_regions_with_their_own_prompts() -> None:
    a, b = Obj("star", "red", 0.3, 0.3, 0.2), Obj("circle", "blue", 0.7, 0.7, 0.2)
    two = regions(Scene("grass field", (a, b)))
    assert [(r.prompt, r.objects) for r in two] == [
        ("a red star on a grass field", (a,)),
        ("a blue circle on a grass field", (b,)),
    ]
    pair = regions(Scene("white", (a, a, b)))
    assert pair[0].prompt == "two red stars on a plain white background"
    assert regions(Scene("white", (a, a))) == [] and regions(Scene("white", ())) == []
    mixed = plan("two red circles, a blue square and a green star", 4)
    assert mixed is not None
    assert [r.prompt for r in regions(mixed)] == [
        "two red circles on a plain white background",
        "a blue square on a plain white background",
        "a green star on a plain white background",
    ]
    four = plan("a red circle, a blue square, a green star and a pink heart", 4)
    assert four is not None and len(four.objects) == 4
    assert [r.objects[0].shape for r in regions(four)] == ["circle", "square", "star"]


def test_nearest_gives_every_token_to_the_region_whose_box_is_closest() -> None:
    boxes = torch.zeros(2, 3, 6, dtype=torch.bool)
    boxes[0, 1, 0] = True  # column 0
    boxes[1, :, 4] = True  # column 4
    own = nearest(boxes)
    assert bool((own.sum(0) == 1).all())  # a partition
    assert bool(own[0, :, :2].all()) and bool(own[1, :, 3:].all())
    assert bool(own[0, 1, 2])  # two from each box in its row: the tie goes to the first


def test_regions_that_hold_every_object_draw_every_token_without_the_whole_prompt(
    enc: TextEncoder,
) -> None:
    s = _sampler(enc)
    spec = SampleSpec("a red star above a blue circle on a grass field", 3, 128, 128, steps=2)
    scene = s.plan(spec, [])
    assert scene is not None
    c = s.conditions(spec, scene, 8, 8)
    # Two regions and the no-prompt row: the whole prompt's row is not run (batch 3, not 4).
    assert c.text.shape[0] == 3 and c.layout is not None and c.regions is not None
    whole_tokens = int(s.text([spec.prompt])[1].sum())
    assert bool((c.mask[:2].sum(1) < whole_tokens).all())  # each names one object, not both
    star, circle = scene.objects
    assert c.regions.shape == (2, 1, 8, 8)
    assert bool((c.regions.sum(0) == 1).all())  # each token from exactly one row
    assert bool(c.regions[0, 0][cover(star, (8, 8))].all())
    assert bool(c.regions[1, 0][cover(circle, (8, 8))].all())
    # A region's row plans its own box only.
    assert bool((c.layout[0, 0] == 0)[cover(circle, (8, 8))].all())
    assert bool((c.layout[0, 0] != 0)[cover(star, (8, 8))].all())
    v = torch.arange(2.0)[:, None, None, None].expand(2, 4, 8, 8)  # rows 0, 1
    out = s.composite(v, c.regions)
    assert out.shape == (1, 4, 8, 8)
    assert bool((out[0, 0][c.regions[0, 0]] == 0).all())
    assert bool((out[0, 0][c.regions[1, 0]] == 1).all())
    img = s(spec, [], lambda: None)
    assert img.size == (128, 128)


def test_past_three_phrases_the_whole_prompt_draws_what_the_regions_leave(
    enc: TextEncoder,
) -> None:
    s = _sampler(enc)
    spec = SampleSpec("a red circle, a blue square, a green star and a pink heart", 4, 128, 128)
    scene = s.plan(spec, [])
    assert scene is not None and not covers_all(scene, regions(scene))
    c = s.conditions(spec, scene, 8, 8)
    assert c.text.shape[0] == 5 and c.regions is not None  # prompt, 3 regions, no prompt
    assert c.regions.shape == (4, 1, 8, 8) and bool((c.regions.sum(0) == 1).all())
    heart = next(o for o in scene.objects if o.shape == "heart")
    assert bool(c.regions[0, 0][cover(heart, (8, 8))].any())  # the whole prompt's
    for k, part in enumerate(regions(scene)):  # each region's row owns its boxes
        for obj in part.objects:
            assert bool(c.regions[k + 1, 0][cover(obj, (8, 8))].any())
