"""Prompt handling before sampling: `enhance` (vague words -> the caption grammar) and `plan`
(one set prompt -> one prompt per image). Both are rules over the model's small vocabulary,
so they are deterministic and explainable; they never invent objects the prompt did not name.
"""

from __future__ import annotations

import re

from dreamserve.engine.builtin.captions import (
    BG_WORDS,
    DEFAULT_ICON_COLOR,
    NUMBERS,
    ObjSpec,
    PromptSpec,
    plural,
)
from dreamserve.engine.builtin.render import BACKGROUNDS, COLORS, PLAIN, SHAPES

SYNONYMS: dict[str, str] = {
    "crimson": "red",
    "scarlet": "red",
    "ruby": "red",
    "navy": "blue",
    "azure": "blue",
    "violet": "purple",
    "lilac": "purple",
    "magenta": "pink",
    "rose": "pink",
    "grey": "gray",
    "silver": "gray",
    "turquoise": "cyan",
    "teal": "cyan",
    "aqua": "cyan",
    "golden": "yellow",
    "gold": "yellow",
    "lime": "green",
    "emerald": "green",
    "chocolate": "brown",
    "tan": "brown",
    "ball": "circle",
    "dot": "circle",
    "disc": "circle",
    "disk": "circle",
    "ring": "circle",
    "box": "square",
    "block": "square",
    "cube": "square",
    "rectangle": "square",
    "pyramid": "triangle",
    "hex": "hexagon",
    "home": "house",
    "cottage": "house",
    "hut": "house",
    "cabin": "house",
    "blossom": "flower",
    "daisy": "flower",
    "tulip": "flower",
    "bush": "tree",
    "pine": "tree",
    "big": "large",
    "huge": "large",
    "giant": "large",
    "tiny": "small",
    "little": "small",
    "mid-sized": "medium",
    "crescent": "moon",
}
BG_KEYWORDS: list[tuple[str, str]] = [
    ("night", "night sky"),
    ("stars", "night sky"),
    ("starry", "night sky"),
    ("sunset", "sunset"),
    ("dusk", "sunset"),
    ("evening", "sunset"),
    ("beach", "sea and beach"),
    ("sea", "sea and beach"),
    ("ocean", "sea and beach"),
    ("meadow", "grass field"),
    ("grass", "grass field"),
    ("field", "grass field"),
    ("desert", "desert"),
    ("dunes", "desert"),
    ("snow", "snow"),
    ("winter", "snow"),
    ("sky", "day sky"),
]
POS_X = {"left": "left", "right": "right", "center": "center", "centre": "center"}
# "middle" names the row: the grammar says "in the middle right" and "at the top center".
POS_Y = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom", "middle": "middle"}
RELS = [
    ("to the left of", "left of"),
    ("left of", "left of"),
    ("to the right of", "right of"),
    ("right of", "right of"),
    ("above", "above"),
    ("over", "above"),
    ("on top of", "above"),
    ("below", "below"),
    ("under", "below"),
    ("beneath", "below"),
]
WORD_NUMS = {w: n for n, w in NUMBERS.items()} | {
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
PLURAL = {s + "s": s for s in SHAPES}


def normalize(prompt: str) -> str:
    """Lower case, synonyms replaced by the model's own words, plurals singular."""
    words = re.findall(r"[a-z0-9\-]+|[^a-z0-9\-\s]", prompt.lower())
    out = []
    for w in words:
        base = w[:-1] if w.endswith("s") and w[:-1] in SYNONYMS else w
        out.append(SYNONYMS.get(base, w))
    return " ".join(out)


def _bg_phrases() -> list[tuple[str, str]]:
    """(phrase, background) for every wording the caption grammar uses, longest first."""
    plain = [
        (form.format(bg), bg)
        for bg in PLAIN
        for form in ("on a plain {} background", "against a {} background", "on {}")
    ]
    scenic = [(ph, bg) for bg, phrases in BG_WORDS.items() for ph in phrases]
    return sorted(plain + scenic, key=lambda p: -len(p[0]))


BG_PHRASES = _bg_phrases()


def _split_background(text: str) -> tuple[str, str]:
    """The background a prompt names (white if none) and the prompt without the words that
    named it: "at night under the stars" holds no stars to draw and no relation "under"."""
    for phrase, bg in BG_PHRASES:
        m = re.search(rf"\b{re.escape(phrase)}\b", text)
        if m:
            return bg, f"{text[: m.start()]} {text[m.end() :]}"
    # Free wording: keywords, with the objects' nouns taken out ("red stars" is no night sky).
    bg = _background(re.sub(rf"\b({'|'.join(SHAPES)})s?\b", " ", text)) or "white"
    if bg == "night sky":  # "a night sky with stars and a moon": the sky's stars, no object
        text = re.sub(r"\b(with|under|full of)( the)? stars\b", " ", text)
    return bg, text


def _background(text: str) -> str | None:
    for name in PLAIN:
        if re.search(rf"\b(plain )?{name} background\b", text):
            return name
    for key, name in BG_KEYWORDS:
        if re.search(rf"\b{key}\b", text):
            return name
    return None


def named_objects(text: str) -> list[tuple[int, str | None, str | None, str]]:
    """(count, size, colour, shape) for each shape mentioned, in order."""
    nouns = "|".join(sorted(set(SHAPES) | set(PLURAL), key=len, reverse=True))
    nums, colors = "|".join(WORD_NUMS), "|".join(COLORS)
    pat = (
        rf"(?:\b(\d+|{nums}|a|an|one)\s+)?(?:(small|medium|large)\s+)?"
        rf"(?:({colors})\s+)?\b({nouns})\b"
    )
    found = []
    for m in re.finditer(pat, text):
        num, size, color, noun = m.groups()
        count = int(num) if num and num.isdigit() else WORD_NUMS.get(num or "", 1)
        found.append((max(1, min(count, 4)), size, color, PLURAL.get(noun, noun)))
    return found


def named_cell(text: str) -> tuple[str, str] | None:
    """The (x, y) cell a position phrase names, or None when it names none."""
    xs = [POS_X[w] for w in re.findall(rf"\b({'|'.join(POS_X)})\b", text)]
    ys = [POS_Y[w] for w in re.findall(rf"\b({'|'.join(POS_Y)})\b", text)]
    if not xs and not ys:
        return None
    return (xs[0] if xs else "center"), (ys[0] if ys else "middle")


def _position(cell: tuple[str, str] | None) -> str:
    if cell is None:
        return ""
    x, y = cell
    if (x, y) == ("center", "middle"):
        return "in the center"
    if y == "middle":
        return f"on the {x}"
    return f"at the {y}" if x == "center" else f"at the {y} {x}"


def parse(prompt: str) -> PromptSpec | None:
    """What a text-to-image prompt means in the caption grammar (objects, colours, sizes, one
    position, a relation or a count, the background), its `text` the prompt rewritten in that
    grammar; None when it names no shape the model knows. Words it does not know are dropped,
    a missing colour becomes the icon's own (or red), a missing background plain white."""
    bg, text = _split_background(normalize(prompt))
    found = named_objects(text)
    if not found:
        return None
    bgp = background_words(bg)
    objs = [
        ObjSpec(shape, color or DEFAULT_ICON_COLOR.get(shape, "red"), size)
        for _, size, color, shape in found
    ]
    if len(objs) >= 2:
        said = [rel for phrase, rel in RELS if re.search(rf"\b{phrase}\b", text)]
        # Two single objects and no relation word ("a sun and a moon", "... next to ..."):
        # side by side in the order named, the nearest the grammar has. Read as one object,
        # the rewrite and the plan dropped the second.
        if said or (len(found) == 2 and all(n == 1 for n, *_ in found)):
            rel = said[0] if said else "left of"
            a, b = (ObjSpec(o.shape, o.color) for o in objs[:2])
            core = f"{noun_phrase(1, a.color, a.shape)} {rel} {noun_phrase(1, b.color, b.shape)}"
            return PromptSpec("relation", bg, (a, b), f"{core} {bgp}", relation=rel)
        return _scene([n for n, *_ in found], objs, bg, bgp)
    count, (o, *_) = found[0][0], objs
    if count > 1 or re.search(r"\b(one|single|exactly)\b", text):
        text_n = f"{NUMBERS[count]} {o.color} {o.shape}{'s' if count > 1 else ''} {bgp}"
        # Sized as the grammar sizes counts (captions.count_spec), unless the prompt says.
        o = ObjSpec(o.shape, o.color, o.size or ("small" if count > 2 else "medium"))
        return PromptSpec("count", bg, (o,), text_n, count=count)
    cell = named_cell(text.replace(" left of", "").replace(" right of", ""))
    o = ObjSpec(o.shape, o.color, o.size, cell)
    noun = " ".join(w for w in (o.size, o.color, o.shape) if w)
    return PromptSpec(
        "single", bg, (o,), " ".join(w for w in ("a", noun, _position(cell), bgp) if w)
    )


def _scene(counts: list[int], objs: list[ObjSpec], bg: str, bgp: str) -> PromptSpec:
    """Several kinds of object and no relation ("two red circles and a blue square"): one
    ObjSpec per object to draw, placed anywhere. The grammar never writes these; read as
    its first object's count, the others were dropped (until session 29)."""
    total = sum(counts)
    drawn: list[ObjSpec] = []
    nouns = []
    for n, o in zip(counts, objs, strict=True):
        # Sized as the grammar sizes counts (captions.count_spec), unless the prompt says.
        drawn += [ObjSpec(o.shape, o.color, o.size or ("small" if total > 2 else "medium"))] * n
        nouns.append(noun_phrase(n, o.color, o.shape, o.size))
    listed = f"{', '.join(nouns[:-1])} and {nouns[-1]}"
    return PromptSpec("scene", bg, tuple(drawn), f"{listed} {bgp}")


def noun_phrase(n: int, color: str, shape: str, size: str | None = None) -> str:
    """How the rewrites name n objects of one kind: "a red star", "a large red star",
    "three red stars" (the count kind says "one" for its single object: `parse`)."""
    words = " ".join(w for w in (size, color, plural(shape) if n > 1 else shape) if w)
    return f"{NUMBERS[n] if n > 1 else 'a'} {words}"


def enhance(prompt: str) -> str:
    """Rewrite a text-to-image prompt into the caption grammar; unchanged if no shape is named."""
    spec = parse(prompt)
    return prompt if spec is None else spec.text


def background_words(bg: str) -> str:
    """How the grammar's own rewrites (`parse`, `enhance`) name a background."""
    return f"on a plain {bg} background" if bg in PLAIN else _bg_words(bg)


def _bg_words(bg: str) -> str:
    return {
        "day sky": "in a blue day sky",
        "night sky": "in a night sky with stars",
        "sunset": "at sunset",
        "grass field": "on a grass field",
        "sea and beach": "at the beach by the sea",
        "desert": "in the desert",
        "snow": "in the snow",
    }[bg]


def plan(prompt: str, max_images: int) -> list[str]:
    """One prompt per image of a sequential set (at most max_images, at least one)."""
    text = prompt.strip()
    body = text.split(":", 1)[1] if ":" in text else text
    if ";" in body:
        parts = [p.strip() for p in body.split(";") if p.strip()]
        return parts[:max_images] or [text]
    low = normalize(text)
    m = re.match(
        rf"^(?:a set of |a series of )?(\d+|{'|'.join(WORD_NUMS)})\s+"
        r"(?:images?|pictures?|frames?)\s+(?:of|showing)\s+(.*)$",
        low,
    )
    n = max_images
    subject = low
    if m:
        n = min(max_images, int(m.group(1)) if m.group(1).isdigit() else WORD_NUMS[m.group(1)])
        subject = m.group(2)
    return _vary(subject, max(n, 1))


def _vary(subject: str, n: int) -> list[str]:
    """Split a 'moving from A to B' or 'in different colours/backgrounds' subject into n prompts."""
    move = re.search(
        r"\bmoving from (?:the )?(left|right|top|bottom) to (?:the )?(left|right|top|bottom)\b",
        subject,
    )
    if move:
        base = subject[: move.start()].strip()
        a, b = move.groups()
        axis = (
            ["left", "center", "right"] if a in ("left", "right") else ["top", "middle", "bottom"]
        )
        if a in ("right", "bottom"):
            axis.reverse()
        cells = [axis[round(i * 2 / max(n - 1, 1))] for i in range(n)]
        return [f"{base} {_cell_words(c)}" for c in cells]
    if re.search(r"\bdifferent colou?rs\b", subject):
        base = re.sub(r"\s*\bin different colou?rs\b", "", subject)
        shape = next((s for s in SHAPES if s in base), "circle")
        palette = [c for c in COLORS if c not in ("white", "black")]
        return [
            re.sub(rf"\b({'|'.join(COLORS)}) {shape}", shape, base).replace(
                shape, f"{palette[i % len(palette)]} {shape}", 1
            )
            for i in range(n)
        ]
    if re.search(r"\bdifferent (backgrounds|places|scenes)\b", subject):
        base = re.sub(r"\s*\b(on|in|at) different (backgrounds|places|scenes)\b", "", subject)
        scenic = [b for b in BACKGROUNDS if b not in PLAIN]
        return [f"{base} {_bg_words(scenic[i % len(scenic)])}" for i in range(n)]
    return [subject] * n


def _cell_words(cell: str) -> str:
    return {"center": "in the center", "middle": "in the center"}.get(
        cell, f"on the {cell}" if cell in ("left", "right") else f"at the {cell}"
    )
