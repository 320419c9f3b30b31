from dreamserve.engine.builtin.prompts import enhance, normalize, plan


def test_enhance_maps_vague_words_onto_the_grammar() -> None:
    assert enhance("A big crimson ball top left, at night") == (
        "a large red circle at the top left in a night sky with stars"
    )
    assert enhance("three teal hearts") == "three cyan hearts on a plain white background"
    assert enhance("a navy box to the left of a golden star on the beach") == (
        "a blue square left of a yellow star at the beach by the sea"
    )


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
