"""Edit plans: the boxes an edit changes, read from the instruction and image 1.

Why (MODEL_CARD.md, "Session 38"): of the 56 edits the transformer got wrong on the eval's
draw 0, 46 had the changed object in the right colour at the right place but in the wrong
shape: hexagons, suns and flowers drawn as blobs, as in text-to-image before the expert
(expert.py). The expert draws a shape from a plan, and an edit names its plan in words: "add
a large red flower at the top left" is a box; "move the blue hexagon to the right" and
"make the blue hexagon bigger" name an object of image 1, and image 1 says where it is and
how big. So the planner grounds that object by its colour (the largest region of the named
palette colour: an edit's objects have distinct colours) and the sampler has the expert
draw the changed boxes, old and new, the transformer the rest.

The grounding reads image 1's pixels with the renderer's own palette, and the background by
the nearest render of each (checker.background_of), as a VLM planner reads the input images
for Seedream: it says where things are, never how they are drawn. Instructions it cannot
read (recolour, remove, a new background, references, free wording) keep the transformer
throughout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from dreamserve.engine.builtin.checker import background_of, color_mask, unit_box
from dreamserve.engine.builtin.layout import cover
from dreamserve.engine.builtin.prompts import named_cell, named_objects, normalize
from dreamserve.engine.builtin.render import SIZES, XS, YS, Obj, Scene

READ_PX = 256  # image 1 is read at this size: a small star keeps its points
RESIZE = {"bigger": 1.5, "smaller": 0.6}  # as the training pairs resize (pairs.realize_task)
MAX_SIZE = 0.4
# The region the expert draws: the boxes, old and new, grown by this factor and a latent pixel
# a side, so the outline and the background beside it are the expert's too.
REGION_GROW = 1.3


@dataclass(frozen=True)
class EditPlan:
    objects: tuple[Obj, ...]  # the changed objects, where the edit puts them
    cleared: tuple[Obj, ...]  # where a moved or shrunk object was: background now
    background: str  # image 1's

    @property
    def boxes(self) -> tuple[Obj, ...]:
        """Every box the edit changes: the expert's region (`region`)."""
        return (*self.objects, *self.cleared)


def read(instruction: str, image: Image.Image) -> EditPlan | None:
    """The plan of an edit of `image`, or None when the instruction is not one the planner
    reads (add, move, resize) or names an object image 1 does not hold."""
    low = normalize(instruction)
    named = named_objects(low)
    if not named or re.search(r"\b(background|remove|delete|erase|take away|put it)\b", low):
        return None
    count, size, color, shape = named[0]
    if color is None:  # a phrase the expert can draw names its colour
        return None
    small = image.convert("RGB").resize((READ_PX, READ_PX))  # once: a 4K input is 64x this
    cell = named_cell(low)
    if re.match(r"^\w+ an?\b", low):  # "add a ...": a new object, at its cell
        if len(named) > 1 or count > 1:  # "next to the blue circle", "two stars": unplanned
            return None
        x, y = cell or ("center", "middle")
        new = Obj(shape, color, XS[x], YS[y], SIZES[size or "medium"])
        return EditPlan((new,), (), _background(small, ()))
    found = ground(small, color, shape)
    if found is None:
        return None
    changed = _change(instruction.lower(), low, found, cell)
    if changed is None:
        return None
    kept = (changed.x, changed.y) == (found.x, found.y) and changed.size >= found.size
    cleared = () if kept else (found,)
    return EditPlan((changed,), cleared, _background(small, (found,)))


def _change(raw: str, low: str, obj: Obj, cell: tuple[str, str] | None) -> Obj | None:
    """`obj` as the instruction resizes or moves it; None for a recolour (MODEL_CARD.md,
    "Session 38": its shape is image 1's, which the transformer copies in context, and the
    expert, drawing it from the box and phrase alone, got 3 fewer of 74 right)."""
    for word, factor in (("bigger|larger", RESIZE["bigger"]), ("smaller|tiny", RESIZE["smaller"])):
        if re.search(rf"\b({word})\b", raw):  # before normalize: it reads "tiny" as "small"
            return replace(obj, size=min(obj.size * factor, MAX_SIZE))
    if cell is not None and re.match(r"^(move|place|shift|put)\b", low):
        return replace(obj, x=XS[cell[0]], y=YS[cell[1]])
    return None


def ground(image: Image.Image, color: str, shape: str) -> Obj | None:
    """The `color` `shape` of `image`: its largest region of that palette colour no larger
    than an object can be (a green object on grass: not the grass), as the box of a `shape`
    (the shape's extent within its box is render.py's)."""
    a = np.asarray(image.convert("RGB").resize((READ_PX, READ_PX)), np.float32)
    labels, _ = ndimage.label(color_mask(a, color))
    best: tuple[int, Obj] | None = None
    bx0, by0, bx1, by1 = unit_box(shape)
    for k, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
        w, h = xs.stop - xs.start, ys.stop - ys.start
        area = int((labels[ys, xs] == k).sum())
        if max(w, h) > MAX_SIZE * 1.1 * READ_PX or (best is not None and area <= best[0]):
            continue
        s = max(w / (bx1 - bx0), h / (by1 - by0))
        x, y = xs.start - bx0 * s, ys.start - by0 * s
        best = (area, Obj(shape, color, x / READ_PX, y / READ_PX, s / READ_PX))
    return None if best is None else best[1]


def _background(image: Image.Image, objects: Sequence[Obj]) -> str:
    half = image.resize((READ_PX // 2, READ_PX // 2), Image.Resampling.BOX)
    return background_of(half, Scene("white", tuple(objects)))


def region(
    objects: Sequence[Obj], grid: tuple[int, int], grow: float = REGION_GROW
) -> torch.Tensor:
    """(1, 1, gh, gw) float on a `grid` = (gw, gh) of latent pixels: 1 on the objects' boxes,
    each grown by `grow` and a latent pixel a side."""
    out = torch.zeros(grid[1], grid[0], dtype=torch.bool)
    for o in objects:
        out |= cover(replace(o, size=o.size * grow + 2 / min(grid)), grid)
    return out.float()[None, None]
