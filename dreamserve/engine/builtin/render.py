"""The model's world: flat illustrated scenes, drawn at any resolution.

A `Scene` is resolution-free (positions are fractions of width/height, sizes fractions of the
short side), so the same scene renders as a 128 px training image, a 256 px decoder target or
a 4K checker template. Everything here is numpy/PIL; nothing imports torch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

# Twelve object colours, chosen far apart in RGB so the checker can tell them apart.
COLORS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (250, 220, 20),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
    "pink": (250, 120, 190),
    "brown": (130, 80, 35),
    "black": (20, 20, 20),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "cyan": (20, 200, 220),
}
GEOMETRIC = ("circle", "square", "triangle", "star", "heart", "hexagon")
ICONS = ("sun", "moon", "cloud", "tree", "house", "flower")
SHAPES = GEOMETRIC + ICONS
SIZES: dict[str, float] = {"small": 0.16, "medium": 0.24, "large": 0.34}
# Cell centres for the 3x3 position grid (left/center/right x top/middle/bottom).
XS: dict[str, float] = {"left": 0.2, "center": 0.5, "right": 0.8}
YS: dict[str, float] = {"top": 0.22, "middle": 0.5, "bottom": 0.78}

# Each background is a list of bands (top fraction, top colour, bottom colour), top to bottom.
Band = tuple[float, RGB, RGB]
SKY: tuple[RGB, RGB] = ((120, 180, 235), (190, 225, 250))
BACKGROUNDS: dict[str, list[Band]] = {
    "white": [(0.0, (255, 255, 255), (255, 255, 255))],
    "black": [(0.0, (15, 15, 15), (15, 15, 15))],
    "light gray": [(0.0, (205, 205, 205), (205, 205, 205))],
    "cream": [(0.0, (250, 240, 210), (250, 240, 210))],
    "pale blue": [(0.0, (200, 220, 245), (200, 220, 245))],
    "pale green": [(0.0, (205, 235, 200), (205, 235, 200))],
    "day sky": [(0.0, *SKY)],
    "night sky": [(0.0, (10, 15, 45), (35, 45, 95))],
    "sunset": [(0.0, (255, 205, 140), (215, 130, 150))],
    "grass field": [(0.0, *SKY), (0.6, (110, 200, 95), (80, 165, 70))],
    "sea and beach": [
        (0.0, *SKY),
        (0.45, (70, 140, 200), (50, 110, 180)),
        (0.75, (235, 215, 165), (225, 200, 150)),
    ],
    "desert": [(0.0, (150, 200, 240), (215, 230, 245)), (0.55, (230, 195, 130), (210, 165, 100))],
    "snow": [(0.0, (175, 195, 215), (215, 225, 235)), (0.6, (245, 248, 255), (235, 240, 250))],
}
PLAIN = ("white", "black", "light gray", "cream", "pale blue", "pale green")
MIN_CONTRAST = 95.0  # an object colour closer than this to any background colour is not drawn on it


def _dist(a: RGB, b: RGB) -> float:
    return math.dist(a, b)


def allowed_colors(background: str) -> list[str]:
    """Object colours that stay visible (and checkable) on this background."""
    bg = [c for band in BACKGROUNDS[background] for c in band[1:]]
    if background == "night sky":
        bg = bg + [(255, 255, 240)]  # the stars
    return [n for n, c in COLORS.items() if min(_dist(c, b) for b in bg) >= MIN_CONTRAST]


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    x: float  # centre, fraction of width
    y: float  # centre, fraction of height
    size: float  # bounding-box side, fraction of the short side


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...] = ()
    star_seed: int = 0  # where the night sky's stars go; part of the scene, not the caption


@functools.lru_cache(maxsize=64)
def _gradient(name: str, w: int, h: int) -> Image.Image:
    """The background's colour bands (no stars); cached, since training renders few sizes."""
    img = np.zeros((h, w, 3), np.float32)
    bands = BACKGROUNDS[name]
    ys = np.arange(h, dtype=np.float32) / max(h - 1, 1)
    for i, (top, c0, c1) in enumerate(bands):
        bottom = bands[i + 1][0] if i + 1 < len(bands) else 1.0
        rows = (ys >= top) & (ys <= bottom + 1e-6)
        t = (ys[rows] - top)[:, None, None] / max(bottom - top, 1e-6)  # (rows, 1, 1)
        img[rows] = np.array(c0, np.float32) * (1 - t) + np.array(c1, np.float32) * t
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


def _background(name: str, w: int, h: int, star_seed: int) -> Image.Image:
    img = _gradient(name, w, h).copy()
    if name == "night sky":
        d = ImageDraw.Draw(img)
        rng = np.random.default_rng(star_seed)
        r = max(1, round(min(w, h) / 180))
        for sx, sy in rng.random((24, 2)):
            cx, cy = int(sx * (w - 1)), int(sy * (h - 1))
            d.rectangle((cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1), fill=(255, 255, 240))
    return img


def _poly(
    cx: float, cy: float, pts: list[tuple[float, float]], s: float
) -> list[tuple[float, float]]:
    return [(cx + px * s, cy + py * s) for px, py in pts]


def _star_pts() -> list[tuple[float, float]]:
    out = []
    for k in range(10):
        r = 0.5 if k % 2 == 0 else 0.21
        a = -math.pi / 2 + k * math.pi / 5
        out.append((r * math.cos(a), r * math.sin(a) + 0.04))
    return out


def _hex_pts() -> list[tuple[float, float]]:
    return [(0.5 * math.cos(k * math.pi / 3), 0.5 * math.sin(k * math.pi / 3)) for k in range(6)]


_STAR, _HEX = _star_pts(), _hex_pts()


def _ellipse(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float) -> None:
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)


def draw_shape(mask: Image.Image, shape: str, cx: float, cy: float, s: float) -> None:
    """Draw one silhouette of side `s` pixels centred at (cx, cy) into an 'L' mask."""
    d = ImageDraw.Draw(mask)
    h = s / 2
    if shape == "circle":
        _ellipse(d, cx, cy, h)
    elif shape == "square":
        d.rectangle((cx - h * 0.9, cy - h * 0.9, cx + h * 0.9, cy + h * 0.9), fill=255)
    elif shape == "triangle":
        d.polygon(_poly(cx, cy, [(0, -0.5), (0.5, 0.45), (-0.5, 0.45)], s), fill=255)
    elif shape == "star":
        d.polygon(_poly(cx, cy, _STAR, s), fill=255)
    elif shape == "hexagon":
        d.polygon(_poly(cx, cy, _HEX, s), fill=255)
    elif shape == "heart":
        _ellipse(d, cx - 0.24 * s, cy - 0.18 * s, 0.26 * s)
        _ellipse(d, cx + 0.24 * s, cy - 0.18 * s, 0.26 * s)
        d.polygon(_poly(cx, cy, [(-0.49, -0.1), (0.49, -0.1), (0, 0.48)], s), fill=255)
    else:
        _draw_icon(d, shape, cx, cy, s)


def _draw_icon(d: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, s: float) -> None:
    if shape == "sun":
        _ellipse(d, cx, cy, 0.3 * s)
        for k in range(8):
            a = k * math.pi / 4
            tip = (cx + 0.5 * s * math.cos(a), cy + 0.5 * s * math.sin(a))
            b1 = (cx + 0.26 * s * math.cos(a - 0.25), cy + 0.26 * s * math.sin(a - 0.25))
            b2 = (cx + 0.26 * s * math.cos(a + 0.25), cy + 0.26 * s * math.sin(a + 0.25))
            d.polygon([tip, b1, b2], fill=255)
    elif shape == "moon":
        # Masks are per object (object_mask), so cutting with fill=0 erases only this moon.
        _ellipse(d, cx, cy, 0.45 * s)
        r = 0.36 * s
        d.ellipse(
            (cx + 0.25 * s - r, cy - 0.12 * s - r, cx + 0.25 * s + r, cy - 0.12 * s + r), fill=0
        )
    elif shape == "cloud":
        for dx, dy, r in ((-0.25, 0.05, 0.2), (0.0, -0.08, 0.27), (0.25, 0.05, 0.2)):
            _ellipse(d, cx + dx * s, cy + dy * s, r * s)
        d.rectangle((cx - 0.25 * s, cy + 0.05 * s, cx + 0.25 * s, cy + 0.25 * s), fill=255)
    elif shape == "tree":
        _ellipse(d, cx, cy - 0.15 * s, 0.33 * s)
        d.rectangle((cx - 0.08 * s, cy, cx + 0.08 * s, cy + 0.5 * s), fill=255)
    elif shape == "house":
        d.rectangle((cx - 0.35 * s, cy - 0.05 * s, cx + 0.35 * s, cy + 0.45 * s), fill=255)
        d.polygon(_poly(cx, cy, [(0, -0.5), (0.5, -0.05), (-0.5, -0.05)], s), fill=255)
    elif shape == "flower":
        for k in range(6):
            a = k * math.pi / 3
            _ellipse(d, cx + 0.27 * s * math.cos(a), cy + 0.27 * s * math.sin(a), 0.17 * s)
        _ellipse(d, cx, cy, 0.18 * s)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _mask_image(obj: Obj, w: int, h: int) -> tuple[Image.Image, tuple[int, int]]:
    """The object's mask cropped to its bounding box, and where that box sits in the image."""
    s = obj.size * min(w, h)
    x0, y0 = max(int(obj.x * w - 0.6 * s), 0), max(int(obj.y * h - 0.6 * s), 0)
    x1, y1 = min(int(obj.x * w + 0.6 * s) + 2, w), min(int(obj.y * h + 0.6 * s) + 2, h)
    m = Image.new("L", (max(x1 - x0, 1), max(y1 - y0, 1)), 0)
    draw_shape(m, obj.shape, obj.x * w - x0, obj.y * h - y0, s)
    return m, (x0, y0)


def object_mask(obj: Obj, w: int, h: int) -> np.ndarray:
    """Boolean (h, w) mask of one object; also the checker's template."""
    crop, (x0, y0) = _mask_image(obj, w, h)
    out = np.zeros((h, w), bool)
    c = np.asarray(crop) > 127
    out[y0 : y0 + c.shape[0], x0 : x0 + c.shape[1]] = c[: h - y0, : w - x0]
    return out


def render(scene: Scene, w: int, h: int, supersample: int = 1) -> Image.Image:
    """Draw the scene at exactly (w, h). supersample>1 antialiases edges (for training targets)."""
    W, H = w * supersample, h * supersample
    img = _background(scene.background, W, H, scene.star_seed)
    for obj in scene.objects:
        crop, at = _mask_image(obj, W, H)
        img.paste(COLORS[obj.color], (*at, at[0] + crop.width, at[1] + crop.height), crop)
    if supersample > 1:
        img = img.reduce(supersample)
    return img
