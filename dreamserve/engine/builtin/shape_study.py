"""How fast does the DiT learn shape words, by where the object sits? (MODEL_CARD.md)

    python -m dreamserve.engine.builtin.shape_study --place centre --steps 150,400

fine-tunes a copy of the shipped DiT on one-object scenes only and, before the first step and
after each listed one, counts the probe images in which the checker finds the asked colour and
shape (with `--place count`: the asked number of objects). It measures the model, not a
recipe to ship: the probes read the live weights (no EMA), and nothing is saved. Places:

- centre: "a large red <shape> in the center on a white background", always in the centre
- anywhere: "a large red <shape> on a white background", the centre anywhere in 0.2-0.8
- grammar: the caption grammar's single objects that name a position and are not small, in
  any colour and on any background (the `shape` batches' positioned captions)
- count: "three red stars on a white background", 1-4 small objects of one shape anywhere
  (as the caption grammar places counts); not about shapes: whether the model can learn the
  number words when it is given nothing else to learn (MODEL_CARD.md, "Session 27")

Probes: for centre and anywhere, their own prompt for each of the 12 shapes with 3 seeds; for
grammar, 36 captions drawn from the evaluation seed; for count, each number 1-4 with 9 shapes
(a hit: exactly that many red regions, as the evaluation's count row counts). `--times LO,HI`
trains on flow times drawn uniformly from [LO, HI] instead of the config's shifted
logit-normal ones.

`--scratch DIM` trains a new DiT (width DIM, 4 blocks, 64-dim heads, fine tokens) instead,
with `--local` and `--rope` choosing its position machinery, at learning rate 1e-3: two runs
that differ in one flag see the same batches, flow times and noise, so their logged losses
compare step by step (how rotary positions were chosen, MODEL_CARD.md). On the shipped model
`--rope` grows rotary positions onto it first (surgery.add_rope), their gains at
`--rope-gain` (0: the shipped function; 1: on from the first step).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.captions import (
    NUMBERS,
    ObjSpec,
    PromptSpec,
    plural,
    realize,
    single_spec,
)
from dreamserve.engine.builtin.checker import find_objects, matches
from dreamserve.engine.builtin.data import object_masks, render_batch
from dreamserve.engine.builtin.dit import DiT, DiTConfig
from dreamserve.engine.builtin.eval_report import SIZE, grid
from dreamserve.engine.builtin.evaluate import EVAL_SEED, probe_prompt
from dreamserve.engine.builtin.image_steps import optimize
from dreamserve.engine.builtin.render import SHAPES, SIZES, Obj, Scene
from dreamserve.engine.builtin.sample import Sampler, SampleSpec
from dreamserve.engine.builtin.surgery import add_local, add_rope
from dreamserve.engine.builtin.textenc import TextEncoder
from dreamserve.engine.builtin.train import flow_loss
from dreamserve.engine.builtin.train_config import TrainConfig

PLACES = ("centre", "anywhere", "grammar", "count")
Probe = tuple[str, str, str, int, int | None]  # prompt, colour, shape, seed, count (or None)


def _template(place: str, shape: str) -> str:
    return probe_prompt(shape) if place == "centre" else probe_prompt(shape, where="")


def _positioned(rnd: random.Random) -> PromptSpec:
    """A grammar caption of one object that names its position and is not small."""
    while True:
        spec = single_spec(rnd)
        if spec.objs[0].pos is not None and spec.objs[0].size != "small":
            return spec


def _counted(shape: str, n: int) -> PromptSpec:
    """n small red objects of one shape on white: the count place's caption and meaning."""
    noun = f"red {plural(shape)}" if n > 1 else f"red {shape}"
    text = f"{NUMBERS[n]} {noun} on a white background"
    return PromptSpec("count", "white", (ObjSpec(shape, "red", "small"),), text, count=n)


def draw(place: str, rnd: random.Random) -> tuple[str, Scene]:
    """One training example (caption, scene) for `place`."""
    if place == "grammar":
        spec = _positioned(rnd)
        return spec.text, realize(spec, rnd)
    if place == "count":
        spec = _counted(rnd.choice(SHAPES), rnd.randint(1, 4))
        return spec.text, realize(spec, rnd)
    shape = rnd.choice(SHAPES)
    x, y = (0.5, 0.5) if place == "centre" else (rnd.uniform(0.2, 0.8), rnd.uniform(0.2, 0.8))
    return _template(place, shape), Scene("white", (Obj(shape, "red", x, y, SIZES["large"]),))


def probes(place: str, n: int = 36) -> list[Probe]:
    every: list[Probe]
    if place == "count":
        every = [
            (_counted(s, k).text, "red", s, 7 + i, k)
            for i, s in enumerate(SHAPES[:9])
            for k in NUMBERS
        ]
    elif place != "grammar":
        every = [(_template(place, s), "red", s, seed, None) for seed in (7, 8, 9) for s in SHAPES]
    else:
        rnd = random.Random(EVAL_SEED)
        specs = [_positioned(rnd) for _ in range(n)]
        every = [
            (s.text, s.objs[0].color, s.objs[0].shape, 1000 + i, None) for i, s in enumerate(specs)
        ]
    return every[:n]


# The default guidance when the studies in MODEL_CARD.md were measured (the service's is 4).
GUIDANCE = 2.5


def score(
    sampler: Sampler,
    todo: list[Probe],
    shots: list[tuple[str, Image.Image]],
    guidance: float = GUIDANCE,
) -> int:
    """How many probe images hold an object of the asked colour and shape (a count probe:
    exactly the asked number of regions of its colour); each image is appended to `shots`
    with a label saying what was asked and what was found."""
    hits = 0
    for prompt, color, shape, seed, count in todo:
        # No layout plan: the study fine-tunes without them, and measures the transformer.
        spec = SampleSpec(prompt, seed, SIZE, SIZE, guidance, 10, plan=False)
        img = sampler(spec, [], lambda: None)
        found = find_objects(img, [color])
        if count is None:
            hit = any(matches(f, color, shape) for f in found)
            label = f"{color} {shape}: {'found' if hit else 'not found'}"
        else:
            hit = len(found) == count
            label = f"{count} asked: {len(found)} found"
        shots.append((label, img))
        hits += hit
    return hits


def scratch_config(dim: int, local: int, rope: bool) -> DiTConfig:
    """A new small DiT on the shipped autoencoder's fine tokens (no copy path: no inputs)."""
    return DiTConfig(
        dim=dim, depth=4, heads=max(dim // 64, 2), split=2, local=local, rope=rope,
        copy_input=False,
    )  # fmt: skip


def _model(shipped: DiT, local: int, rope: bool, scratch: int | None, gain: float) -> DiT:
    if scratch is not None:
        return DiT(scratch_config(scratch, local, rope))
    dit = add_local(shipped, local) if local else shipped
    return add_rope(dit, gain) if rope else dit


def study(
    place: str,
    steps: list[int],
    local: int = 0,
    batch: int = 32,
    n_probes: int = 36,
    times: tuple[float, float] | None = None,
    src: Path = weights.PACKAGE_WEIGHTS,
    log: Callable[[str], None] = print,
    rope: bool = False,
    scratch: int | None = None,
    out: Path | None = None,
    rope_gain: float = 0.0,
    guidance: float = GUIDANCE,
) -> list[tuple[int, int, float]]:
    """(step, probe hits, mean loss since the last probe) before training and after each of
    `steps`; `times` (lo, hi): flow times uniform in that range; src: the weights to start
    from (and the autoencoder and upscaler to draw with); scratch: a new DiT of that width;
    out: a folder for each probe's images (`<place>-<step>.png`); rope_gain: where rotary
    gains grown onto the shipped model start; guidance: the probes' (1: none)."""
    models, enc, cfg = weights.load(src), TextEncoder(), TrainConfig()
    dit = _model(models.dit, local, rope, scratch, rope_gain)
    cfg.dit = dit.cfg
    lr, warmup = (cfg.lr, 20) if scratch is None else (1e-3, 50)
    torch.manual_seed(0)  # after building: same batches' noise and times, whatever the model
    opt = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    rnd, todo, start = random.Random(0), probes(place, n_probes), time.monotonic()
    losses: list[float] = []

    def probe(step: int) -> tuple[int, int, float]:
        shots: list[tuple[str, Image.Image]] = []
        hits = score(Sampler(models.ae, dit.eval(), models.sr, enc), todo, shots, guidance)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            grid(shots).save(out / f"{place}-{step}.png")
        mean = sum(losses) / max(len(losses), 1)
        took = time.monotonic() - start
        log(f"{place} step {step}: {hits}/{len(todo)}, loss {mean:.4f} ({took:.0f} s)")
        dit.train()
        losses.clear()
        return step, hits, mean

    rows = [probe(0)]
    for step in range(1, max(steps, default=0) + 1):
        texts, scenes = zip(*(draw(place, rnd) for _ in range(batch)), strict=True)
        with torch.no_grad():
            x0 = models.ae.encode(render_batch(list(scenes), 8, 8))  # (B, C, 8, 8)
            states, mask = enc(list(texts))
        text = (states.clone(), mask.clone())  # flow_loss drops prompts in place
        t = None if times is None else times[0] + (times[1] - times[0]) * torch.rand(batch)
        loss = flow_loss(dit, cfg, x0, text, [], object_masks(list(scenes), 8, 8), t)
        optimize(opt, loss, lr * min(1.0, step / warmup), max_norm=1.0)
        losses.append(loss.item())
        if step in steps:
            rows.append(probe(step))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--place", choices=PLACES, default="centre")
    p.add_argument("--steps", default="150,400", help="comma-separated steps to probe after")
    p.add_argument("--local", type=int, default=0, help="add KxK local convolutions first")
    p.add_argument("--times", default=None, help="LO,HI: train on flow times uniform in it")
    p.add_argument("--weights", type=Path, default=weights.PACKAGE_WEIGHTS, help="start from")
    p.add_argument("--rope", action="store_true", help="rotary positions (grown or new)")
    p.add_argument("--rope-gain", type=float, default=0.0, help="grown rotary gains start")
    p.add_argument("--scratch", type=int, default=None, help="DIM: train a new DiT this wide")
    p.add_argument("--out", type=Path, default=None, help="write each probe's images here")
    p.add_argument("--guidance", type=float, default=GUIDANCE, help="the probes' guidance")
    p.add_argument("--threads", type=int, default=TrainConfig().threads, help="torch threads")
    args = p.parse_args(argv)
    times = None
    if args.times is not None:
        lo, hi = (float(x) for x in args.times.split(","))
        times = (lo, hi)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = [int(s) for s in args.steps.split(",")]
    study(
        args.place, steps, args.local, times=times, src=args.weights, rope=args.rope,
        scratch=args.scratch, out=args.out, rope_gain=args.rope_gain, guidance=args.guidance,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
