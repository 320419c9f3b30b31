"""Edit pairs and reference tasks drawn from the same world as the captions.

A `TaskSpec` fixes the instruction text (so its embedding is cached) and what the edit does;
`realize_task` draws fresh input scenes and the target scene that the instruction implies.
Everything the edit should leave alone (background, star field, other objects) is identical
between input and target, which is what the "untouched region" PSNR of the eval measures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from dreamserve.engine.builtin.captions import ObjSpec, _free_spot, _pick_bg, bg_phrase, pos_phrase
from dreamserve.engine.builtin.render import (
    BACKGROUNDS,
    SHAPES,
    SIZES,
    XS,
    YS,
    Obj,
    Scene,
    allowed_colors,
)

EDIT_OPS = ("recolor", "add", "remove", "move", "resize", "background")
REF_OPS = ("combine", "onto", "restyle")


@dataclass(frozen=True)
class TaskSpec:
    op: str
    text: str
    backgrounds: tuple[str, ...]  # one per input image
    objs: tuple[tuple[ObjSpec, ...], ...]  # the objects of each input image
    arg: str = ""  # op parameter: new colour, "bigger"/"smaller", new background, ...
    cell: tuple[str, str] | None = None  # target cell for add/move


def _distinct_objs(
    rnd: random.Random, bg: str, n: int, avoid: set[str] | None = None
) -> tuple[ObjSpec, ...]:
    colors = [c for c in allowed_colors(bg) if c not in (avoid or set())]
    rnd.shuffle(colors)
    return tuple(ObjSpec(rnd.choice(SHAPES), colors[i]) for i in range(n))


def _name(o: ObjSpec) -> str:
    return f"{o.color} {o.shape}"


def edit_spec(rnd: random.Random, op: str | None = None) -> TaskSpec:
    op = op or rnd.choice(EDIT_OPS)
    bg = _pick_bg(rnd)
    objs = _distinct_objs(rnd, bg, rnd.randint(1, 3))
    a = objs[0]
    cell = (rnd.choice(list(XS)), rnd.choice(list(YS)))
    if op == "recolor":
        new = rnd.choice([c for c in allowed_colors(bg) if c not in {o.color for o in objs}])
        verb = rnd.choice(
            ("make the {} {}", "change the {} to {}", "turn the {} {}", "recolor the {} {}")
        )
        return TaskSpec(op, verb.format(_name(a), new), (bg,), (objs,), arg=new)
    if op == "add":
        b = _distinct_objs(rnd, bg, len(objs) + 1)[-1]
        if b.color in {o.color for o in objs}:
            return edit_spec(rnd, "recolor")
        size = rnd.choice(list(SIZES))
        verb = rnd.choice(("add a {} {}", "put a {} {}", "draw a {} {}"))
        text = verb.format(f"{size} {_name(b)}", pos_phrase(*cell, rnd))
        return TaskSpec(op, text, (bg,), (objs, (replace(b, size=size),)), cell=cell)
    if op == "remove":
        verb = rnd.choice(("remove the {}", "delete the {}", "take away the {}", "erase the {}"))
        return TaskSpec(op, verb.format(_name(a)), (bg,), (objs,))
    if op == "move":
        verb = rnd.choice(("move the {} {}", "place the {} {}", "shift the {} {}"))
        text = verb.format(
            _name(a), pos_phrase(*cell, rnd).replace("at the", "to the").replace("in the", "to the")
        )
        return TaskSpec(op, text, (bg,), (objs,), cell=cell)
    if op == "resize":
        arg = rnd.choice(("bigger", "smaller"))
        word = {
            "bigger": rnd.choice(("bigger", "larger")),
            "smaller": rnd.choice(("smaller", "tiny")),
        }[arg]
        return TaskSpec(op, f"make the {_name(a)} {word}", (bg,), (objs,), arg=arg)
    new_bg = rnd.choice(
        [b for b in BACKGROUNDS if b != bg and all(o.color in allowed_colors(b) for o in objs)]
        or [bg]
    )
    verb = rnd.choice(
        ("replace the background with {}", "change the background to {}", "put it {}")
    )
    phrase = bg_phrase(new_bg, rnd)
    if not verb.startswith("put"):
        phrase = (
            phrase.replace("on a plain", "a plain")
            .removeprefix("in ")
            .removeprefix("on ")
            .removeprefix("at ")
        )
    return TaskSpec("background", verb.format(phrase), (bg,), (objs,), arg=new_bg)


def ref_spec(rnd: random.Random, op: str | None = None) -> TaskSpec:
    op = op or rnd.choice(REF_OPS)
    if op == "combine":
        n = 3 if rnd.random() < 0.25 else 2
        bgs = tuple(_pick_bg(rnd) for _ in range(n))
        seen = set.intersection(*(set(allowed_colors(b)) for b in bgs))  # visible on every input
        pool = _distinct_objs(rnd, bgs[0], n, set(allowed_colors(bgs[0])) - seen)
        objs = tuple((pool[i],) for i in range(n))
        text = rnd.choice(
            (
                f"combine the objects of the {n} images on the background of image 1",
                "put the objects from the other images into image 1",
                f"combine images 1 to {n}, keeping the background of image 1",
            )
        )
        return TaskSpec(op, text, bgs, objs)
    if op == "onto":
        bg2 = _pick_bg(rnd)
        a = _distinct_objs(rnd, bg2, 1)[0]
        bg1 = rnd.choice([b for b in BACKGROUNDS if a.color in allowed_colors(b)])
        text = rnd.choice(
            (
                f"put the {_name(a)} of image 1 on the background of image 2",
                "place the object from image 1 onto the background of image 2",
                f"move the {a.shape} from the first image into the scene of the second image",
            )
        )
        second = _distinct_objs(rnd, bg2, 1, {a.color}) if rnd.random() < 0.5 else ()
        return TaskSpec(op, text, (bg1, bg2), ((a,), second))
    bg1 = _pick_bg(rnd)
    objs1 = _distinct_objs(rnd, bg1, rnd.randint(1, 2))
    new = rnd.choice([c for c in allowed_colors(bg1) if c not in {o.color for o in objs1}])
    text = rnd.choice(
        (
            "restyle image 1 with the colours of image 2",
            "paint the objects of image 1 in the colour of image 2",
            "use the colour of image 2 for the objects in image 1",
        )
    )
    return TaskSpec(op, text, (bg1, "white"), (objs1, (ObjSpec(rnd.choice(SHAPES), new),)), arg=new)


def _place(specs: tuple[ObjSpec, ...], rnd: random.Random, taken: list[Obj]) -> list[Obj]:
    out: list[Obj] = []
    for o in specs:
        s = SIZES[o.size or rnd.choice(("small", "medium"))] * rnd.uniform(0.92, 1.08)
        x, y = _free_spot(taken + out, s, rnd)
        out.append(Obj(o.shape, o.color, x, y, s))
    return out


def _cell_obj(o: ObjSpec, cell: tuple[str, str], s: float, rnd: random.Random) -> Obj:
    return Obj(
        o.shape,
        o.color,
        XS[cell[0]] + rnd.uniform(-0.04, 0.04),
        YS[cell[1]] + rnd.uniform(-0.04, 0.04),
        s,
    )


def realize_task(spec: TaskSpec, rnd: random.Random) -> tuple[list[Scene], Scene]:
    """(input scenes, target scene) for one draw of the task."""
    seeds = [rnd.randrange(1 << 30) for _ in spec.backgrounds]
    if spec.op in REF_OPS:
        return _realize_ref(spec, rnd, seeds)
    bg, objs = spec.backgrounds[0], spec.objs[0]
    anchor: list[Obj] = []
    if spec.cell is not None:  # keep the add/move destination free
        anchor = [_cell_obj(objs[0], spec.cell, SIZES["medium"], rnd)]
    placed = _place(objs, rnd, anchor)
    src = Scene(bg, tuple(placed), seeds[0])
    a, rest = placed[0], placed[1:]
    if spec.op == "recolor":
        tgt = replace(src, objects=(replace(a, color=spec.arg), *rest))
    elif spec.op == "add":
        b = spec.objs[1][0]
        new = _cell_obj(b, spec.cell or ("center", "middle"), SIZES[b.size or "medium"], rnd)
        tgt = replace(src, objects=(*placed, new))
    elif spec.op == "remove":
        tgt = replace(src, objects=tuple(rest))
    elif spec.op == "move":
        tgt = replace(src, objects=(replace(a, x=anchor[0].x, y=anchor[0].y), *rest))
    elif spec.op == "resize":
        f = 1.5 if spec.arg == "bigger" else 0.6
        tgt = replace(src, objects=(replace(a, size=min(a.size * f, 0.4)), *rest))
    else:
        tgt = replace(src, background=spec.arg)
    return [src], tgt


def _realize_ref(spec: TaskSpec, rnd: random.Random, seeds: list[int]) -> tuple[list[Scene], Scene]:
    placed: list[list[Obj]] = []
    taken: list[Obj] = []
    for group in spec.objs:  # no overlaps across images, so the combination is well defined
        objs = _place(group, rnd, taken)
        placed.append(objs)
        taken += objs
    inputs = [
        Scene(bg, tuple(o), s) for bg, o, s in zip(spec.backgrounds, placed, seeds, strict=True)
    ]
    if spec.op == "combine":
        tgt = replace(inputs[0], objects=tuple(taken))
    elif spec.op == "onto":
        tgt = replace(inputs[1], objects=tuple(placed[0]))
    else:
        tgt = replace(inputs[0], objects=tuple(replace(o, color=spec.arg) for o in placed[0]))
    return inputs, tgt


def random_task(rnd: random.Random) -> TaskSpec:
    return ref_spec(rnd) if rnd.random() < 0.3 else edit_spec(rnd)
