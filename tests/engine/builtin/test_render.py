import numpy as np

from dreamserve.engine.builtin.render import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    Obj,
    Scene,
    allowed_colors,
    object_mask,
    render,
)


def test_renders_any_size_exactly() -> None:
    scene = Scene("grass field", (Obj("star", "red", 0.5, 0.3, 0.2),), star_seed=1)
    for w, h in ((128, 128), (300, 77), (96, 400)):
        assert render(scene, w, h).size == (w, h)


def test_object_is_drawn_in_its_colour_at_its_place() -> None:
    img = np.asarray(render(Scene("white", (Obj("square", "blue", 0.25, 0.75, 0.2),)), 200, 200))
    assert tuple(img[150, 50]) == COLORS["blue"]
    assert tuple(img[50, 150]) == (255, 255, 255)


def test_every_shape_has_a_distinct_silhouette() -> None:
    masks = {s: object_mask(Obj(s, "red", 0.5, 0.5, 0.8), 100, 100) for s in SHAPES}
    for a in SHAPES:
        assert masks[a].sum() > 300, a
        for b in SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).sum() > 100, (a, b)


def test_every_background_keeps_several_visible_colours() -> None:
    for bg in BACKGROUNDS:
        assert len(allowed_colors(bg)) >= 6, bg
    assert "white" not in allowed_colors("white")
    assert "black" not in allowed_colors("night sky")


def test_night_sky_stars_follow_the_seed() -> None:
    a = np.asarray(render(Scene("night sky", star_seed=1), 64, 64))
    b = np.asarray(render(Scene("night sky", star_seed=1), 64, 64))
    c = np.asarray(render(Scene("night sky", star_seed=2), 64, 64))
    assert (a == b).all() and (a != c).any()
