import pytest
import torch
from PIL import Image

from dreamserve.engine.builtin.edit_plan import EditPlan, ground, read, region
from dreamserve.engine.builtin.render import SIZES, XS, YS, Obj, Scene, render

HEXAGON = Obj("hexagon", "blue", 0.3, 0.6, 0.24)
SCENE = Scene("grass field", (HEXAGON, Obj("star", "red", 0.75, 0.25, 0.16)), 7)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return render(SCENE, 256, 256, 2)


def near(a: Obj, b: Obj, tol: float = 0.02) -> bool:
    return (
        (a.shape, a.color) == (b.shape, b.color)
        and abs(a.x - b.x) < tol
        and abs(a.y - b.y) < tol
        and abs(a.size - b.size) < tol
    )


@pytest.mark.parametrize("shape", ["hexagon", "star", "moon", "tree", "cloud", "sun"])
def test_an_object_is_found_by_its_colour_as_the_box_the_renderer_drew(shape: str) -> None:
    obj = Obj(shape, "orange", 0.62, 0.41, 0.2)
    img = render(Scene("night sky", (obj,), 3), 512, 384, 2)  # any size and aspect ratio
    found = ground(img, "orange", shape)
    assert found is not None and near(found, obj, tol=0.03)
    assert ground(img, "green", shape) is None


def test_an_added_object_goes_to_its_cell_at_its_size(image: Image.Image) -> None:
    plan = read("add a large purple flower at the top left", image)
    assert plan == EditPlan(
        (Obj("flower", "purple", XS["left"], YS["top"], SIZES["large"]),), (), "grass field"
    )
    plan = read("draw a yellow heart", image)  # no size or place: medium, in the centre
    assert plan is not None and plan.objects == (Obj("heart", "yellow", 0.5, 0.5, 0.24),)


def test_a_moved_object_leaves_its_old_box_to_the_background(image: Image.Image) -> None:
    plan = read("move the blue hexagon to the top right", image)
    assert plan is not None
    assert near(plan.objects[0], Obj("hexagon", "blue", XS["right"], YS["top"], 0.24))
    assert len(plan.cleared) == 1 and near(plan.cleared[0], HEXAGON)


@pytest.mark.parametrize(("word", "factor"), [("bigger", 1.5), ("larger", 1.5), ("tiny", 0.6)])
def test_a_resized_object_keeps_its_centre(image: Image.Image, word: str, factor: float) -> None:
    plan = read(f"make the blue hexagon {word}", image)
    assert plan is not None
    assert near(plan.objects[0], Obj("hexagon", "blue", 0.3, 0.6, 0.24 * factor))
    assert len(plan.cleared) == (1 if factor < 1 else 0)  # a shrunk one's old outline goes


@pytest.mark.parametrize(
    "text",
    [
        "remove the blue hexagon",  # nothing to draw: the transformer's
        "make the blue hexagon orange",  # a recolour: the transformer copies its shape
        "change the background to snow",
        "move the green hexagon to the left",  # no green object in image 1 (grass is none)
        "make it look nicer",
        "add a star at the top left",  # no colour: no phrase to draw
        "add a red star next to the blue hexagon",  # placed by another object: unplanned
        "add two red stars",
        "make the blue hexagon",  # no change
    ],
)
def test_what_it_cannot_read_is_left_to_the_transformer(image: Image.Image, text: str) -> None:
    assert read(text, image) is None


def test_the_region_covers_the_old_and_new_boxes_with_a_margin(image: Image.Image) -> None:
    plan = read("move the blue hexagon to the top right", image)
    assert plan is not None
    r = region(plan.boxes, (32, 32))
    assert r.shape == (1, 1, 32, 32) and set(r.unique().tolist()) == {0.0, 1.0}
    assert float(r[0, 0, 19, 9]) == 1.0 and float(r[0, 0, 7, 25]) == 1.0  # old, new centres
    assert float(r[0, 0, 31, 31]) == 0.0 and float(r[0, 0, 2, 2]) == 0.0
    box = int(round(0.24 * 32))  # the box's side in latent pixels, grown
    assert int(r[0, 0, 19].sum()) > box
    assert torch.equal(region(plan.boxes, (32, 32)), r)
    old = region(plan.cleared, (32, 32), grow=1.0)  # what is never pasted back from image 1
    assert float(old[0, 0, 19, 9]) == 1.0 and 0 < float(old.sum()) < float(r.sum()) / 2
