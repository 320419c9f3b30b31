import random

from dreamserve.engine.builtin.captions import ObjSpec, random_spec, realize
from dreamserve.engine.builtin.prompts import enhance, normalize, parse, plan


def test_enhance_maps_vague_words_onto_the_grammar() -> None:
    assert enhance("A big crimson ball top left, at night") == (
        "a large red circle at the top left in a night sky with stars"
    )
    assert enhance("three teal hearts") == "three cyan hearts on a plain white background"
    assert enhance("a navy box to the left of a golden star on the beach") == (
        "a blue square left of a yellow star at the beach by the sea"
    )


def test_parse_reads_what_the_prompt_means_in_the_grammar() -> None:
    count = parse("three red stars on a grass field")  # "stars" is no night sky here
    assert count is not None and (count.kind, count.count) == ("count", 3)
    assert count.background == "grass field" and count.objs == (ObjSpec("star", "red", "small"),)
    rel = parse("a navy box to the left of a golden star on the beach")
    assert rel is not None and (rel.kind, rel.relation) == ("relation", "left of")
    assert [(o.shape, o.color) for o in rel.objs] == [("square", "blue"), ("star", "yellow")]
    one = parse("a big crimson ball top left, at night")
    assert one is not None and one.objs == (ObjSpec("circle", "red", "large", ("left", "top")),)
    assert one.text == enhance("a big crimson ball top left, at night")
    assert parse("a portrait of a cat") is None


def test_two_objects_without_a_relation_word_are_both_kept_side_by_side() -> None:
    both = parse("a sun and a moon")
    assert both is not None and (both.kind, both.relation) == ("relation", "left of")
    assert [(o.shape, o.color) for o in both.objs] == [("sun", "yellow"), ("moon", "yellow")]
    assert enhance("a sun and a moon") == "a yellow sun left of a yellow moon " + (
        "on a plain white background"
    )


def test_several_kinds_of_object_are_read_as_a_scene_of_all_of_them() -> None:
    mixed = parse("two red circles and a navy box on the beach")
    assert mixed is not None and mixed.kind == "scene" and mixed.background == "sea and beach"
    assert mixed.objs == (ObjSpec("circle", "red", "small"),) * 2 + (
        ObjSpec("square", "blue", "small"),
    )
    assert mixed.text == "two red circles and a blue square at the beach by the sea"
    three = parse("a red circle, a blue square and a green star")
    assert three is not None and [o.shape for o in three.objs] == ["circle", "square", "star"]
    assert three.text.startswith("a red circle, a blue square and a green star on a plain")
    scene = realize(mixed, random.Random(0))  # every object gets a box of its own
    assert [(o.shape, o.color) for o in scene.objects] == [(o.shape, o.color) for o in mixed.objs]
    assert len({(o.x, o.y) for o in scene.objects}) == 3


def test_a_night_skys_stars_are_background_not_objects() -> None:
    moon = parse("a night sky with stars and a yellow moon")
    assert moon is not None and moon.background == "night sky"
    assert [(o.shape, o.color) for o in moon.objs] == [("moon", "yellow")]
    stars = parse("three red stars at night")
    assert stars is not None and (stars.kind, stars.count, stars.objs[0].shape) == (
        "count",
        3,
        "star",
    )


def test_parse_reads_every_wording_of_the_caption_grammar_back_to_its_spec() -> None:
    # The layout planner (layout.plan) reads prompts with `parse`: on the model's own grammar
    # it must recover what each caption means ("on black", "in the middle right", "at night
    # under the stars" with no star and no "under" in it).
    rnd = random.Random(5)
    for _ in range(2000):
        spec = random_spec(rnd)
        got = parse(spec.text)
        assert got is not None, spec.text
        assert (got.kind, got.background, got.relation, got.count) == (
            spec.kind,
            spec.background,
            spec.relation,
            spec.count,
        ), spec.text
        assert [(o.shape, o.color) for o in got.objs] == [(o.shape, o.color) for o in spec.objs]
        if spec.kind == "single":
            assert got.objs == spec.objs, spec.text


def test_enhance_leaves_prompts_without_known_objects_alone() -> None:
    assert enhance("a portrait of a cat") == "a portrait of a cat"


def test_normalize_keeps_edit_instructions_readable() -> None:
    assert normalize("Make the crimson ball navy") == "make the red circle blue"


def test_plan_moves_an_object_across_the_frame() -> None:
    parts = plan("four images of a red circle moving from left to right", 15)
    assert len(parts) == 4
    assert "left" in parts[0] and "right" in parts[-1]
    assert all("red circle" in p for p in parts)


def test_plan_splits_an_explicit_list_and_respects_max_images() -> None:
    assert plan("a set of 3: a red star; a blue moon; a green tree", 15) == [
        "a red star",
        "a blue moon",
        "a green tree",
    ]
    assert len(plan("a set of 3: a; b; c", 2)) == 2
    assert plan("a red star", 3) == ["a red star"] * 3


def test_plan_varies_colours_and_backgrounds() -> None:
    colours = plan("3 images of a circle in different colours", 15)
    assert len(set(colours)) == 3
    places = plan("2 images of a yellow sun on different backgrounds", 15)
    assert len(set(places)) == 2 and all("yellow sun" in p for p in places)
