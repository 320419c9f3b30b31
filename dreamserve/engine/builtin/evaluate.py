"""`dreamserve eval`: score the model on held-out prompts with the automatic checker.

Prompts and tasks come from a seed the training never used. A text-to-image prompt whose text
is in the training pools is skipped, so every one scored is unseen. Edit sentences come from a
small grammar ("change the pink house to green"), so for some edit types nearly every sentence
is in the 4500-task pool: each edit tries 50 draws for an unseen sentence and otherwise keeps a
seen one (the report counts them as `edit_seen_text`), so that every edit type is scored; its
scene is always new. Images are generated at the decoder's native 256 px (1:1) and checked
there; edits are scored against the input image. `--draw` picks another held-out set.
Beside the targets, `ceiling:*` rows score the autoencoder's round trip of true scenes: the
most a transformer could reach through this decoder and checker.
Rows with a colon split a target: per edit or reference task, per asked number (`count:3`),
and two failure modes that are not targets: `count:over` (more objects drawn than asked) and
`relation:leak` (an object drawn with the other asked object's shape instead of its own).
Writes report.json, report.md (the table), grid.png (samples with their prompts) and
shapes.png (`shape_probe`: does the shape word change the drawing?) and shape_time.png
(`shape_time_probe`: from which flow time does the model keep a shape it is given?).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.captions import (
    ObjSpec,
    PromptSpec,
    count_spec,
    realize,
    relation_spec,
    single_spec,
)
from dreamserve.engine.builtin.checker import (
    Found,
    background_of,
    cell_of,
    find_objects,
    placed_at,
    psnr,
    scene_colors,
    scene_in,
)
from dreamserve.engine.builtin.data import grid_for, make_specs
from dreamserve.engine.builtin.eval_report import (
    SIZE,
    Tally,
    grid,
    markdown,
    strip,
    table,
)
from dreamserve.engine.builtin.pairs import (
    EDIT_OPS,
    REF_OPS,
    TaskSpec,
    edit_spec,
    realize_task,
    ref_spec,
)
from dreamserve.engine.builtin.render import SHAPES, SIZES, Obj, Scene, object_mask, render
from dreamserve.engine.builtin.sample import Sampler, SampleSpec, guidance_or_default
from dreamserve.engine.builtin.textenc import TextEncoder

EVAL_SEED = 987_654  # never used by training (training pools use TrainConfig.seed)


def _held_out(
    make: Callable[[random.Random], PromptSpec], n: int, seen: set[str], rnd: random.Random
) -> list[PromptSpec]:
    out: list[PromptSpec] = []
    while len(out) < n:
        s = make(rnd)
        if s.text not in seen:
            out.append(s)
    return out


def check_t2i(img: Image.Image, spec: PromptSpec, t: Tally) -> None:
    found = find_objects(img, sorted({o.color for o in spec.objs}))
    if spec.kind == "single":
        o = spec.objs[0]
        hits = [f for f in found if f.color == o.color and f.shape == o.shape]
        t.add("color_shape", bool(hits))
        if o.pos is not None:
            t.add("position", any(cell_of(f.x, f.y) == o.pos for f in hits))
    elif spec.kind == "relation":
        a, b = spec.objs
        rel = spec.relation or ""
        fa = [f for f in found if f.color == a.color and f.shape == a.shape]
        fb = [f for f in found if f.color == b.color and f.shape == b.shape]
        t.add("relation", bool(fa and fb) and _placed(fa[0], fb[0], rel))
        # Not a target: the largest regions of the two colours, shapes ignored, placed as
        # asked. It tells a wrong layout from wrong shapes when relation fails.
        ca = sorted((f for f in found if f.color == a.color), key=lambda f: -f.area)
        cb = sorted((f for f in found if f.color == b.color), key=lambda f: -f.area)
        t.add("relation_layout", bool(ca and cb) and _placed(ca[0], cb[0], rel))
        t.add("relation:leak", _leaked(a, b, ca) or _leaked(b, a, cb))
    else:
        n = sum(f.color == spec.objs[0].color for f in found)
        right = n == spec.count
        t.add("count", right)
        # Not targets: accuracy per asked number, and how often more were drawn than asked
        # (session 26: plurals came out as a field of 5-15 objects, whatever the number).
        t.add(f"count:{spec.count}", right)
        t.add("count:over", n > spec.count)


def _leaked(obj: ObjSpec, other: ObjSpec, in_color: list[Found]) -> bool:
    """Not a target: `obj` drawn in its colour (`in_color`: the regions of that colour) with
    the other asked object's shape and never its own (session 26: "a green square below a
    blue moon" -> two squares). It tells a shape bound to the wrong object from a shape
    drawn badly."""
    mine = {f.shape for f in in_color}
    return obj.shape != other.shape and obj.shape not in mine and other.shape in mine


def _placed(a: Found, b: Found, relation: str) -> bool:
    """Whether a sits `relation` b (above / below / left of / right of), by their centres."""
    dx, dy = a.x - b.x, a.y - b.y
    return {"above": dy < -0.05, "below": dy > 0.05, "left of": dx < -0.05, "right of": dx > 0.05}[
        relation
    ]


def _changed_region(src: Scene, tgt: Scene, n: int) -> np.ndarray:
    """Pixels an edit may change: where input and target renders differ, grown by 3 px."""
    a = np.asarray(render(src, n, n), dtype=np.int16)
    b = np.asarray(render(tgt, n, n), dtype=np.int16)
    return ndimage.binary_dilation(np.abs(a - b).sum(-1) > 0, iterations=3)


def check_task(img: Image.Image, spec: TaskSpec, inputs: list[Scene], tgt: Scene, t: Tally) -> None:
    found = find_objects(img, scene_colors(tgt))  # a combine target holds every input's objects
    good = scene_in(found, tgt)
    if spec.op == "background" or spec.op == "onto":
        good = good and background_of(img, tgt) == tgt.background
    row = "reference" if spec.op in REF_OPS else "edit"
    t.add(row, good)
    t.add(f"{row}:{spec.op}", good)  # per task type: which one a drift in the row comes from
    if spec.op == "combine":
        check_combine(found, inputs, t)
    if row == "reference":
        return
    if spec.op == "background":  # the objects are what must stay: score their pixels
        keep = np.zeros((SIZE, SIZE), bool)
        for o in inputs[0].objects:
            keep |= ndimage.binary_erosion(object_mask(o, SIZE, SIZE), iterations=2)
    else:
        keep = ~_changed_region(inputs[0], tgt, SIZE)
    t.psnrs.append(psnr(img, render(inputs[0], SIZE, SIZE, 2), keep))


def check_combine(found: list[Found], inputs: list[Scene], t: Tally) -> None:
    """Not targets: each asked object on its own, by the input it comes from. Until the copy
    slots (DiTConfig.copy_refs) only image 1 reached the fine target tokens, and shapes from
    the other images were lost (MODEL_CARD.md, sessions 14-15): these rows measure that gap."""
    for k, scene in enumerate(inputs):
        for o in scene.objects:
            if k == 0:
                t.add("combine:image_1", placed_at(found, o))
            else:
                t.add("combine:other_images", placed_at(found, o))
                t.add("combine:other_in_place", placed_at(found, o, shape=False))


def evaluate(
    sampler: Sampler,
    samples: int,
    seen: set[str],
    steps: int = 10,
    guidance: float | None = None,
    draw: int = 0,
    plan: bool = True,
    keep: bool = True,
) -> Tally:
    """`draw` 0: the prompts, scenes and noise of every column in MODEL_CARD.md. Another
    number draws a fresh held-out set, so that a checkpoint picked for its draw-0 scores
    (where the scatter between near-identical models is ~5 points a row) can be confirmed on
    prompts and seeds it was not picked on. `plan` False scores the transformer without
    layout plans (layout.py), as a prompt the planner cannot read is drawn; `keep` False
    scores edits and references without the inputs' kept pixels (keep.py), as decoded."""
    rnd = random.Random(EVAL_SEED + draw)
    ceiling_rnd = random.Random(EVAL_SEED + draw + 1)  # its own draws: the rest stay as they were
    seed0 = 100_000 * draw
    t = Tally()
    t2i = _held_out(single_spec, samples, seen, rnd) + _held_out(relation_spec, samples, seen, rnd)
    t2i += _held_out(count_spec, samples, seen, rnd)
    per_op = max(samples // 3, 2)
    bar = tqdm(total=len(t2i) + per_op * (len(EDIT_OPS) + len(REF_OPS)), unit="image", desc="eval")
    for i, spec in enumerate(t2i):
        bar.update()
        img = sampler(
            SampleSpec(spec.text, seed0 + 1000 + i, SIZE, SIZE, guidance, steps, plan),
            [],
            lambda: None,
        )
        check_t2i(img, spec, t)
        check_ceiling(sampler, spec, ceiling_rnd, t)
        if i % max(samples, 1) < 4:
            t.samples.append((spec.text, img))
    tasks = [_unseen_edit(rnd, op, seen) for op in EDIT_OPS for _ in range(per_op)]
    t.ok["edit_seen_text"] = [task.text in seen for task in tasks]  # a share, not a score
    # Reference instructions are a few fixed sentences: what is held out is their images.
    tasks += [ref_spec(rnd, op) for op in REF_OPS for _ in range(per_op)]
    for i, task in enumerate(tasks):
        bar.update()
        inputs, tgt = realize_task(task, rnd)
        imgs = [render(s, SIZE, SIZE, 2) for s in inputs]
        ask = SampleSpec(task.text, seed0 + 5000 + i, SIZE, SIZE, guidance, steps, keep=keep)
        out = sampler(ask, imgs, lambda: None)
        check_task(out, task, inputs, tgt, t)
        inner = Tally()  # its PSNR is not the model's: only the ceiling rows are kept
        check_task(round_trip(sampler, tgt, imgs if keep else []), task, inputs, tgt, inner)
        add_ceiling(inner, t)
        if i % per_op == 0:
            t.samples.append((task.text, strip([*imgs, out])))
    bar.close()
    return t


def check_ceiling(sampler: Sampler, spec: PromptSpec, rnd: random.Random, t: Tally) -> None:
    """Not targets: the text-to-image checks on the autoencoder's round trip of a true scene
    for the prompt, as `ceiling:<row>`. No transformer can score above them: they are what
    the decoder, upscaler and checker let through. Session 24 found colour+shape there at
    73%, under its 95% target (MODEL_CARD.md)."""
    inner = Tally()
    check_t2i(round_trip(sampler, realize(spec, rnd)), spec, inner)
    add_ceiling(inner, t)


def round_trip(sampler: Sampler, scene: Scene, inputs: Sequence[Image.Image] = ()) -> Image.Image:
    """A true scene as the sampler would draw it from perfect latents: render, encode,
    decode, upscale; with a task's input images, their pixels kept where the scene's latents
    are theirs (keep.py), as the sampler keeps them."""
    gw, gh = grid_for(SIZE, SIZE)
    refs = sampler.encode_images(inputs, gw, gh) if inputs else []
    z = sampler.encode_images([render(scene, SIZE, SIZE, 2)], gw, gh)[0]
    return sampler.render(z, SIZE, SIZE, sampler.kept_pixels(z, refs, inputs))


def add_ceiling(inner: Tally, t: Tally) -> None:
    """The target rows of `inner` (not the per-type ones) into t, as `ceiling:<row>`."""
    for key, oks in inner.ok.items():
        if ":" not in key:
            for ok in oks:
                t.add(f"ceiling:{key}", ok)


def shape_probe(sampler: Sampler, seed: int = 7) -> Image.Image:
    """Every shape word in one prompt, one seed: 'a large red <shape> in the center ...'.

    Each column differs from the next only in the shape word and starts from the same noise,
    so the row shows at a glance how much the model draws what the word says (the session-3
    model drew the same blob for all twelve). Labels name the shape the checker sees.
    """
    tiles = []
    for shape in SHAPES:
        img = sampler(_probe_spec(shape, seed), [], lambda: None)
        tiles.append((f"{shape} -> {_red_shape(img)}", img))
    return grid(tiles, max_width=6 * (SIZE + 8))


def probe_prompt(shape: str, where: str = " in the center") -> str:
    """The shape probes' prompt (also shape_study's, which moves the object)."""
    return f"a large red {shape}{where} on a white background"


def _probe_spec(shape: str, seed: int) -> SampleSpec:
    return SampleSpec(probe_prompt(shape), seed, SIZE, SIZE)


def _red_shape(img: Image.Image) -> str:
    """The shape the checker sees in the largest red region, or 'nothing'."""
    seen = sorted(find_objects(img, ["red"]), key=lambda f: -f.area)[:1]
    return seen[0].shape if seen else "nothing"


def shape_time_probe(sampler: Sampler, seed: int = 7) -> Image.Image:
    """Renders of four large shapes, noised to flow time t and denoised with their prompt.

    Each row is one shape: the render, then the output from t = 0.3, 0.5, 0.7 and 0.85. The
    column where the outline is lost is where the model's knowledge of the shape word has to
    take over. Session 5 found star, square, heart and triangle kept from t = 0.5-0.7 and lost
    from 0.85; session 30 found the round shapes the model draws as discs (flower, hexagon,
    sun; circle beside them) lost from 0.5, some from 0.3 (MODEL_CARD.md), so those are shown.
    """
    tiles = []
    gw, gh = grid_for(SIZE, SIZE)
    for shape in ("flower", "hexagon", "sun", "circle"):
        img = render(Scene("white", (Obj(shape, "red", 0.5, 0.5, SIZES["large"]),)), SIZE, SIZE, 2)
        z0 = sampler.encode_images([img], gw, gh)[0]
        tiles.append((f"render: {shape}", img))
        spec = _probe_spec(shape, seed)
        for t0 in (0.3, 0.5, 0.7, 0.85):
            out = sampler.render(
                sampler.latents(spec, [], lambda: None, start=(z0, t0)), SIZE, SIZE
            )
            tiles.append((f"t={t0} -> {_red_shape(out)}", out))
    return grid(tiles, max_width=5 * (SIZE + 8))


def _unseen_edit(rnd: random.Random, op: str, seen: set[str], tries: int = 50) -> TaskSpec:
    task = edit_spec(rnd, op)
    for _ in range(tries - 1):
        if task.text not in seen:
            break
        task = edit_spec(rnd, op)
    return task


def main(
    checkpoint: Path | None = None,
    samples: int = 50,
    out: Path = Path("eval"),
    guidance: float | None = None,
    draw: int = 0,
    plan: bool = True,
    keep: bool = True,
    expert: bool = True,
) -> int:
    torch.manual_seed(0)
    src = checkpoint if checkpoint is not None else weights.PACKAGE_WEIGHTS
    if checkpoint is not None and checkpoint.is_file():
        src = checkpoint.parent / "weights"  # a run's ckpt.pt: score its exported EMA weights
    models = weights.load(src)
    meta = models.meta
    seed = int(meta.get("seed", 1234))
    t2i, edit, ref = make_specs(seed, 9000, 4500, 1500)
    seen = {s.text for s in t2i} | {s.text for s in edit}
    start = time.monotonic()
    late = models.expert if expert else None
    sampler = Sampler(models.ae, models.dit, models.sr, TextEncoder(), late)
    tally = evaluate(sampler, samples, seen, guidance=guidance, draw=draw, plan=plan, keep=keep)
    rows = table(tally)
    counts = {k: len(v) for k, v in tally.ok.items()} | {"edit_psnr_db": len(tally.psnrs)}
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "weights": str(src),
        "meta": meta,
        "samples": samples,
        "guidance": guidance_or_default(guidance),
        "draw": draw,
        "plan": plan and models.dit.cfg.layout,
        "keep": keep,
        "expert": late is not None,
        "seconds": round(time.monotonic() - start, 1),
        "results": rows,
        "counts": counts,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(rows, counts))
    grid(tally.samples).save(out / "grid.png")
    shape_probe(sampler).save(out / "shapes.png")
    shape_time_probe(sampler).save(out / "shape_time.png")
    print(markdown(rows, counts))
    names = ("report.json", "report.md", "grid.png", "shapes.png", "shape_time.png")
    print("wrote " + ", ".join(str(out / n) for n in names))
    return 0
