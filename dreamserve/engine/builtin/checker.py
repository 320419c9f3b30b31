"""The automatic checker: finds objects in an image by colour, then names their shape.

For each palette colour, pixels within COLOR_TOL of it form a mask; its connected components
above a minimum area are candidate objects. A component's shape is the template (drawn by the
renderer itself, fitted to the component's bounding box) with the highest IoU. Positions are
the fitted centres, as fractions of the image, so the checker reads any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from dreamserve.engine.builtin.render import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    XS,
    YS,
    Obj,
    Scene,
    object_mask,
    render,
)

COLOR_TOL = 70.0
MIN_AREA = 0.003  # of the image's short side squared: a small star covers about 0.01


@dataclass(frozen=True)
class Found:
    color: str
    shape: str
    x: float  # centre, fraction of width
    y: float
    size: float  # fraction of the short side
    iou: float
    area: int


def _unit_boxes() -> dict[str, tuple[float, float, float, float]]:
    """Each shape's bounding box relative to its centre, in units of its size s."""
    n = 400
    out = {}
    for shape in SHAPES:
        ys, xs = np.nonzero(object_mask(Obj(shape, "red", 0.5, 0.5, 0.5), n, n))
        out[shape] = (
            (xs.min() - n / 2) / 200,
            (ys.min() - n / 2) / 200,
            (xs.max() + 1 - n / 2) / 200,
            (ys.max() + 1 - n / 2) / 200,
        )
    return out


_BOXES = _unit_boxes()


def unit_box(shape: str) -> tuple[float, float, float, float]:
    """`shape`'s bounding box (x0, y0, x1, y1) about its centre, in units of its size."""
    return _BOXES[shape]


def _classify(comp: np.ndarray, W: int, H: int) -> tuple[str, float, float, float, float]:
    """Best template for a component crop: (shape, iou, centre x, centre y, size) in crop pixels."""
    ys, xs = np.nonzero(comp)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    best = ("circle", -1.0, 0.0, 0.0, 0.0)
    h, w = comp.shape
    for shape, (bx0, by0, bx1, by1) in _BOXES.items():
        s = ((x1 - x0) / (bx1 - bx0) + (y1 - y0) / (by1 - by0)) / 2
        cx, cy = x0 - bx0 * s, y0 - by0 * s
        tmpl = object_mask(Obj(shape, "red", cx / w, cy / h, s / min(w, h)), w, h)
        inter = np.logical_and(tmpl, comp).sum()
        iou = inter / max(np.logical_or(tmpl, comp).sum(), 1)
        if iou > best[1]:
            best = (shape, float(iou), cx, cy, s)
    return best


def color_mask(a: np.ndarray, name: str) -> np.ndarray:
    """(H, W) bool: the pixels of `a` (H, W, 3 float32 RGB) within COLOR_TOL of palette
    colour `name`."""
    return np.linalg.norm(a - np.array(COLORS[name], np.float32), axis=-1) < COLOR_TOL


def find_objects(img: Image.Image, colors: list[str] | None = None) -> list[Found]:
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    H, W = a.shape[:2]
    found: list[Found] = []
    for name in colors or list(COLORS):
        labels, n = ndimage.label(color_mask(a, name))
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            comp = labels[sl] == k
            if comp.sum() < MIN_AREA * min(W, H) ** 2:
                continue
            pad = np.pad(comp, 4)
            shape, iou, cx, cy, s = _classify(pad, W, H)
            ox, oy = sl[1].start - 4, sl[0].start - 4
            found.append(
                Found(
                    name, shape, (ox + cx) / W, (oy + cy) / H, s / min(W, H), iou, int(comp.sum())
                )
            )
    return found


def cell_of(x: float, y: float) -> tuple[str, str]:
    xn = min(XS, key=lambda k: abs(XS[k] - x))
    yn = min(YS, key=lambda k: abs(YS[k] - y))
    return xn, yn


def matches(f: Found, color: str, shape: str) -> bool:
    return f.color == color and f.shape == shape


def placed_at(found: list[Found], o: Obj, pos_tol: float = 0.15, shape: bool = True) -> bool:
    """Whether a region of o's colour (and shape, unless `shape` is off) sits near o's place."""
    return any(
        f.color == o.color
        and (f.shape == o.shape or not shape)
        and abs(f.x - o.x) < pos_tol
        and abs(f.y - o.y) < pos_tol
        for f in found
    )


def scene_colors(scene: Scene) -> list[str]:
    return sorted({o.color for o in scene.objects})


def scene_found(img: Image.Image, scene: Scene, pos_tol: float = 0.15) -> bool:
    """Every object is there (colour, shape, near its place) and no extra one in those colours."""
    return scene_in(find_objects(img, scene_colors(scene)), scene, pos_tol)


def scene_in(found: list[Found], scene: Scene, pos_tol: float = 0.15) -> bool:
    """scene_found on regions already found (in at least the scene's colours)."""
    for color in scene_colors(scene):
        want = [o for o in scene.objects if o.color == color]
        if sum(f.color == color for f in found) != len(want):
            return False
        if not all(placed_at(found, o, pos_tol) for o in want):
            return False
    return True


def background_of(img: Image.Image, scene: Scene) -> str:
    """The background whose render best matches the pixels no object of `scene` covers."""
    W, H = img.size
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    free = np.ones((H, W), bool)
    for o in scene.objects:
        free &= ~ndimage.binary_dilation(object_mask(o, W, H), iterations=3)
    best, err = "", float("inf")
    for name in BACKGROUNDS:
        ref = np.asarray(render(Scene(name, (), scene.star_seed), W, H), dtype=np.float32)
        e = float(np.abs(a - ref)[free].mean())
        if e < err:
            best, err = name, e
    return best


def psnr(a: Image.Image, b: Image.Image, region: np.ndarray) -> float:
    x = np.asarray(a.convert("RGB"), dtype=np.float64)[region]
    y = np.asarray(b.convert("RGB"), dtype=np.float64)[region]
    mse = float(((x - y) ** 2).mean()) if x.size else 0.0
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
