"""The caption grammar: structured prompt specs, their varied wordings, and scenes that fit them.

A `PromptSpec` is what a caption means (objects, attributes, relation, count, background);
`realize` draws a fresh random scene that satisfies it, so one caption (whose text embedding is
computed once and cached) is seen with many different images during training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dreamserve.engine.builtin.render import (
    BACKGROUNDS,
    PLAIN,
    SHAPES,
    SIZES,
    XS,
    YS,
    Obj,
    Scene,
    allowed_colors,
)

DEFAULT_ICON_COLOR = {
    "sun": "yellow",
    "moon": "yellow",
    "cloud": "white",
    "tree": "green",
    "house": "brown",
    "flower": "pink",
}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS = ("above", "below", "left of", "right of")
REL_WORDS = {
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath"),
    "left of": ("left of", "to the left of", "on the left of"),
    "right of": ("right of", "to the right of", "on the right of"),
}
BG_WORDS: dict[str, tuple[str, ...]] = {
    "day sky": ("in a blue day sky", "against a daytime sky", "in the sky on a sunny day"),
    "night sky": (
        "in a night sky with stars",
        "at night under the stars",
        "against a starry night sky",
    ),
    "sunset": ("at sunset", "against a sunset sky", "in the evening glow of a sunset"),
    "grass field": ("on a grass field", "in a green meadow", "over a grassy field"),
    "sea and beach": ("at the beach by the sea", "over the sea and beach", "on a seaside beach"),
    "desert": ("in the desert", "over desert dunes", "in a sandy desert"),
    "snow": ("in the snow", "on a snowy landscape", "in a winter snow scene"),
}


def bg_phrase(bg: str, rnd: random.Random) -> str:
    if bg in PLAIN:
        return rnd.choice((f"on a plain {bg} background", f"on {bg}", f"against a {bg} background"))
    return rnd.choice(BG_WORDS[bg])


def pos_phrase(xn: str, yn: str, rnd: random.Random) -> str:
    if (xn, yn) == ("center", "middle"):
        return rnd.choice(("in the center", "in the middle", "at the center"))
    if yn == "middle":
        return rnd.choice((f"on the {xn}", f"at the {xn} side", f"in the middle {xn}"))
    if xn == "center":
        return rnd.choice((f"at the {yn}", f"at the {yn} center", f"near the {yn}"))
    upper = "upper" if yn == "top" else "lower"
    return rnd.choice((f"at the {yn} {xn}", f"in the {yn}-{xn} corner", f"in the {upper} {xn}"))


def plural(shape: str) -> str:
    return shape + "s"


@dataclass(frozen=True)
class ObjSpec:
    shape: str
    color: str
    size: str | None = None  # None: any size
    pos: tuple[str, str] | None = None  # (x name, y name); None: anywhere


@dataclass(frozen=True)
class PromptSpec:
    kind: str  # "single" | "relation" | "count"; "scene" only from prompts.parse
    background: str
    objs: tuple[ObjSpec, ...]
    text: str
    relation: str | None = None
    count: int = 1


def _noun(o: ObjSpec, rnd: random.Random, with_size: bool = True) -> str:
    words = [o.size] if (with_size and o.size) else []
    if not (
        o.shape in DEFAULT_ICON_COLOR
        and DEFAULT_ICON_COLOR[o.shape] == o.color
        and rnd.random() < 0.4
    ):
        words.append(o.color)
    return " ".join([*words, o.shape])


def _pick_bg(rnd: random.Random) -> str:
    return "white" if rnd.random() < 0.12 else rnd.choice(list(BACKGROUNDS))


def _obj(rnd: random.Random, bg: str, avoid: str | None = None) -> ObjSpec:
    colors = [c for c in allowed_colors(bg) if c != avoid]
    return ObjSpec(rnd.choice(SHAPES), rnd.choice(colors))


def single_spec(rnd: random.Random) -> PromptSpec:
    bg = _pick_bg(rnd)
    o = _obj(rnd, bg)
    size = rnd.choice(list(SIZES)) if rnd.random() < 0.7 else None
    pos = (rnd.choice(list(XS)), rnd.choice(list(YS))) if rnd.random() < 0.8 else None
    o = ObjSpec(o.shape, o.color, size, pos)
    noun = _noun(o, rnd)
    where = pos_phrase(*pos, rnd) if pos else ""
    bgp = bg_phrase(bg, rnd)
    form = rnd.randrange(3)
    if form == 0:
        text = " ".join(w for w in ("a", noun, where, bgp) if w)
    elif form == 1:
        text = f"{bgp}, a {noun}" + (f" {where}" if where else "")
    else:
        text = f"an illustration of a {noun}" + (f" {where}" if where else "") + f" {bgp}"
    return PromptSpec("single", bg, (o,), text)


def relation_spec(rnd: random.Random) -> PromptSpec:
    bg = _pick_bg(rnd)
    a = _obj(rnd, bg)
    b = _obj(rnd, bg, avoid=a.color)
    rel = rnd.choice(RELATIONS)
    words = rnd.choice(REL_WORDS[rel])
    core = f"a {_noun(a, rnd)} {words} a {_noun(b, rnd)}"
    text = f"{core} {bg_phrase(bg, rnd)}" if rnd.random() < 0.6 else f"{bg_phrase(bg, rnd)}, {core}"
    return PromptSpec("relation", bg, (a, b), text, relation=rel)


def count_spec(rnd: random.Random) -> PromptSpec:
    bg = _pick_bg(rnd)
    n = rnd.randint(1, 4)
    o = _obj(rnd, bg)
    o = ObjSpec(o.shape, o.color, "small" if n > 2 else rnd.choice(("small", "medium")))
    num = NUMBERS[n] if n > 1 or rnd.random() < 0.5 else rnd.choice(("a single", "one"))
    noun = f"{o.color} {plural(o.shape) if n > 1 else o.shape}"
    form = rnd.randrange(3)
    if form == 0:
        text = f"{num} {noun} {bg_phrase(bg, rnd)}"
    elif form == 1:
        text = f"{bg_phrase(bg, rnd)}, {num} {noun}"
    else:
        text = f"exactly {num} {noun} {bg_phrase(bg, rnd)}"
    return PromptSpec("count", bg, (o,), text, count=n)


def random_spec(rnd: random.Random) -> PromptSpec:
    r = rnd.random()
    if r < 0.45:
        return single_spec(rnd)
    return relation_spec(rnd) if r < 0.75 else count_spec(rnd)


def _size(o: ObjSpec, rnd: random.Random) -> float:
    name = o.size or rnd.choice(list(SIZES))
    return SIZES[name] * rnd.uniform(0.92, 1.08)


def _free_spot(placed: list[Obj], s: float, rnd: random.Random) -> tuple[float, float]:
    """A random centre whose object does not overlap those already placed."""
    lo, hi = 0.04 + s / 2, 0.96 - s / 2
    x, y = rnd.uniform(lo, hi), rnd.uniform(lo, hi)
    for _ in range(200):
        if all(max(abs(x - p.x), abs(y - p.y)) > (s + p.size) / 2 * 1.1 for p in placed):
            break
        x, y = rnd.uniform(lo, hi), rnd.uniform(lo, hi)
    return x, y


def realize(spec: PromptSpec, rnd: random.Random) -> Scene:
    """A fresh scene that satisfies the spec (positions jittered inside their cell)."""
    objs: list[Obj] = []
    if spec.kind == "relation":
        a, b = spec.objs
        sa, sb = SIZES["medium"] * rnd.uniform(0.85, 1.1), SIZES["medium"] * rnd.uniform(0.85, 1.1)
        cx, cy = rnd.uniform(0.38, 0.62), rnd.uniform(0.38, 0.62)
        d = (sa + sb) / 2 * 0.75 + rnd.uniform(0.03, 0.08)
        dx, dy = {"above": (0, -d), "below": (0, d), "left of": (-d, 0), "right of": (d, 0)}[
            spec.relation or "above"
        ]
        objs = [
            Obj(a.shape, a.color, cx + dx, cy + dy, sa),
            Obj(b.shape, b.color, cx - dx, cy - dy, sb),
        ]
    else:
        for o in spec.objs:
            for _ in range(spec.count):
                s = _size(o, rnd)
                if o.pos is not None:
                    x = XS[o.pos[0]] + rnd.uniform(-0.05, 0.05)
                    y = YS[o.pos[1]] + rnd.uniform(-0.05, 0.05)
                else:
                    x, y = _free_spot(objs, s, rnd)
                objs.append(Obj(o.shape, o.color, x, y, s))
    return Scene(spec.background, tuple(objs), star_seed=rnd.randrange(1 << 30))
