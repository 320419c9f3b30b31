import random

import numpy as np

from dreamserve.engine.builtin.captions import random_spec, realize
from dreamserve.engine.builtin.checker import (
    background_of,
    cell_of,
    find_objects,
    psnr,
    scene_found,
)
from dreamserve.engine.builtin.render import SHAPES, Obj, Scene, render


def test_finds_every_shape_by_colour_and_shape() -> None:
    for shape in SHAPES:
        img = render(Scene("day sky", (Obj(shape, "red", 0.3, 0.6, 0.24),)), 256, 256, 2)
        (f,) = find_objects(img, ["red"])
        assert f.shape == shape
        assert abs(f.x - 0.3) < 0.05 and abs(f.y - 0.6) < 0.05
        assert cell_of(f.x, f.y) == ("left", "middle")


def test_ground_truth_renders_pass_and_wrong_scenes_fail() -> None:
    rnd = random.Random(0)
    for _ in range(30):
        scene = realize(random_spec(rnd), rnd)
        img = render(scene, 256, 256, 2)
        assert scene_found(img, scene)
        o = scene.objects[0]
        other = "circle" if o.shape != "circle" else "square"
        wrong = Scene(scene.background, (Obj(other, o.color, o.x, o.y, o.size), *scene.objects[1:]))
        assert not scene_found(img, wrong)


def test_background_and_psnr() -> None:
    scene = Scene("sunset", (Obj("heart", "blue", 0.5, 0.5, 0.3),))
    img = render(scene, 128, 128)
    assert background_of(img, scene) == "sunset"
    everywhere = np.ones((128, 128), bool)
    assert psnr(img, img, everywhere) == 99.0
    assert psnr(img, render(Scene("desert", scene.objects), 128, 128), everywhere) < 20
