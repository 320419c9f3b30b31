"""Layout plans: where each object of a prompt goes, as a map the transformer reads.

Why: the transformer alone draws counts as a field of objects whatever the number, and in
two-object prompts gives one object the other's shape (MODEL_CARD.md, sessions 26-27). Neither
more data nor training on count scenes from scratch taught it the number: it learns how
likely an object is at each place, not how many there are in all, nor which word belongs to
which object. LLM-grounded diffusion (Lian et al., 2023) splits that job in two: a planner
turns the prompt into boxes, one per object, each with its own short phrase, and the
diffusion model draws each phrase in its box. Here the planner is the caption grammar itself
(`prompts.parse`, then `captions.realize` seeded with the request's seed): a prompt it can
read gets the boxes of a scene drawn from the distribution training draws from.

The transformer reads the plan per fine target token (dit.DiTConfig.layout): the sum of the
unit MiniLM vectors of the phrases ("red star") of the boxes covering the token, and one
channel that is 1 everywhere when a plan is given (so "no box here" differs from "no plan").
A box says where and how big, never which shape: drawing the shape is still the model's job.
Training gives the plan of the target scene to `TrainConfig.layout_share` of the text-to-image
samples, so prompts the planner cannot read are drawn as before.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dreamserve.engine.builtin.captions import realize
from dreamserve.engine.builtin.dit import LAYOUT_DIM
from dreamserve.engine.builtin.prompts import background_words, noun_phrase, parse
from dreamserve.engine.builtin.render import COLORS, SHAPES, Obj, Scene
from dreamserve.engine.builtin.textenc import TextEncoder, pool


def phrase(obj: Obj) -> str:
    """The short phrase a planned box carries."""
    return f"{obj.color} {obj.shape}"


def all_phrases() -> list[str]:
    """Every phrase a box can carry: one per colour and shape."""
    return [phrase(Obj(shape, color, 0.0, 0.0, 0.0)) for color in COLORS for shape in SHAPES]


def phrase_vectors(encoder: TextEncoder, phrases: Iterable[str]) -> dict[str, torch.Tensor]:
    """Each phrase's MiniLM vector: its token states averaged, scaled to unit length (as the
    sentence-transformers model this encoder comes from pools)."""
    names = sorted(set(phrases))
    if not names:
        return {}
    return dict(zip(names, pool(*encoder(names)), strict=True))


def plan(prompt: str, seed: int) -> Scene | None:
    """A scene whose objects' boxes are the layout for `prompt`, or None when the grammar
    cannot read it. Deterministic in (prompt, seed)."""
    spec = parse(prompt)
    return None if spec is None else realize(spec, random.Random(seed))


def layout_map(
    objects: Sequence[Sequence[Obj]],
    grid: tuple[int, int],
    vectors: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """(B, LAYOUT_DIM, gh, gw) maps, one per sample's planned objects, on a token grid of
    `grid` = (gw, gh) tokens (the DiT's fine target grid).

    A token is covered by a box when its centre lies inside the object's bounding box
    (`Obj.size` of the short side, as render.py draws it), or is the token holding the
    object's centre (a small object on a coarse grid still gets one token).
    """
    gw, gh = grid
    out = torch.zeros(len(objects), LAYOUT_DIM, gh, gw)
    for i, objs in enumerate(objects):
        out[i, -1] = 1.0
        for o in objs:
            out[i, :-1] += vectors[phrase(o)][:, None, None] * cover(o, grid)
    return out


def cover(obj: Obj, grid: tuple[int, int]) -> torch.Tensor:
    """(gh, gw) bool: the tokens of a `grid` = (gw, gh) whose centre lies in the object's box,
    or that hold its centre."""
    gw, gh = grid
    xs, ys = (np.arange(gw) + 0.5) / gw, (np.arange(gh) + 0.5) / gh  # token centres, fractions
    half = obj.size * min(gw, gh) / 2  # box half-side, in tokens
    inx = np.abs(xs - obj.x) * gw <= max(half, 0.5)
    iny = np.abs(ys - obj.y) * gh <= max(half, 0.5)
    return torch.from_numpy(iny[:, None] & inx[None, :])


# Where in its box each latent pixel lies, for the expert (expert.ExpertConfig.coords): in-box
# flag, the box's size, u and v (-1 to 1 across the box), and sin/cos of pi*f*u, pi*f*v.
COORD_FREQS = (1, 2, 4)
COORD_DIM = 4 + 4 * len(COORD_FREQS)
BOX_MARGIN = 1.25  # coordinates run a quarter box past the box, where edges blend into it


def box_coords(objects: Sequence[Sequence[Obj]], grid: tuple[int, int]) -> torch.Tensor:
    """(B, COORD_DIM, gh, gw): each cell's place in the planned box over it (zeros: no box).

    Why: a box's phrase vector is the same in every cell of the box, so a convolutional net
    must find the box's edges to learn where a petal goes; GLIGEN gives each phrase its box
    coordinates for the same reason. Where boxes overlap the later object wins, as render.py
    draws it on top."""
    gw, gh = grid
    xs = torch.arange(gw, dtype=torch.float32).add(0.5).div(gw)[None, :]  # (1, gw) fractions
    ys = torch.arange(gh, dtype=torch.float32).add(0.5).div(gh)[:, None]  # (gh, 1)
    out = torch.zeros(len(objects), COORD_DIM, gh, gw)
    for i, objs in enumerate(objects):
        for o in objs:
            half = max(o.size * min(gw, gh) / 2, 0.5)  # box half-side, in cells
            u = ((xs - o.x) * gw / half).expand(gh, gw)
            v = ((ys - o.y) * gh / half).expand(gh, gw)
            inside = (u.abs() <= BOX_MARGIN) & (v.abs() <= BOX_MARGIN)
            waves = [
                w(torch.pi * f * c)
                for f in COORD_FREQS
                for c in (u, v)
                for w in (torch.sin, torch.cos)
            ]
            feats = torch.stack([torch.ones_like(u), torch.full_like(u, o.size), u, v, *waves])
            out[i] = torch.where(inside, feats, out[i])
    return out


# Each region is a row in every step's batch (in place of the whole prompt's when the regions
# hold every object: sample.Sampler.conditions). Session 29's 2-core CPU took 0.67 s for a 1K
# request of one phrase, 1.04 / 1.25 / 1.48 s for batches of 4 / 5 / 6 rows, against the
# 1.5 s target: three regions (4 rows) keep a margin, and only free prompts name more kinds.
MAX_REGIONS = 3


@dataclass(frozen=True)
class Region:
    """The boxes of one phrase of a plan, and a prompt that names only their objects."""

    prompt: str
    objects: tuple[Obj, ...]


def regions(scene: Scene) -> list[Region]:
    """One region per phrase when a plan's boxes carry two or more different phrases, else none.

    Why: in two-object prompts the transformer gives one object the other's shape about half
    the time, although each box carries its own phrase (MODEL_CARD.md, session 28): it takes
    shapes from the prompt's words. The sampler therefore predicts each region's tokens from
    a prompt that names that region's objects alone (Sampler.conditions), as LLM-grounded
    diffusion draws each box from its own phrase. Past MAX_REGIONS phrases the whole prompt
    draws what the regions leave.
    """
    groups: dict[str, list[Obj]] = {}
    for o in scene.objects:
        groups.setdefault(phrase(o), []).append(o)
    if len(groups) < 2:
        return []
    bg = background_words(scene.background)
    first = list(groups.values())[:MAX_REGIONS]  # the rest are drawn by the whole prompt
    return [Region(_alone(objs, bg), tuple(objs)) for objs in first]


def covers_all(scene: Scene, parts: Sequence[Region]) -> bool:
    """Whether the regions hold every object of the plan (no phrase past MAX_REGIONS)."""
    return sum(len(r.objects) for r in parts) == len(scene.objects)


def nearest(boxes: torch.Tensor) -> torch.Tensor:
    """(R, gh, gw) bool boxes -> (R, gh, gw) bool: each token given to the region whose box
    is nearest (Euclidean, token centres; ties to the earlier region), so every token is in
    exactly one. A region's box and the tokens around it are its own."""
    r, gh, gw = boxes.shape
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    at = torch.stack([yy.flatten(), xx.flatten()], 1).float()  # (T, 2)
    dist = torch.stack([torch.cdist(at, at[b.flatten()]).amin(1) for b in boxes])  # (R, T)
    owner = dist.argmin(0)  # (T,)
    return (owner[None] == torch.arange(r)[:, None]).view(r, gh, gw)


def owners(parts: Sequence[Region], grid: tuple[int, int], whole: bool) -> torch.Tensor:
    """(rows, 1, gh, gw) bool on the fine grid: which conditional row predicts each token.
    Regions alone: each token from the region whose boxes are nearest. With the whole
    prompt's row first: each region's boxes grown by one token (so a shape's edge comes from
    the same prompt as its middle; later regions win overlaps), the whole prompt elsewhere."""
    boxes = torch.stack([torch.stack([cover(o, grid) for o in r.objects]).any(0) for r in parts])
    if not whole:
        return nearest(boxes)[:, None]
    own = F.max_pool2d(boxes[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0
    for i in range(len(parts) - 1):
        own[i] &= ~own[i + 1 :].any(0)
    return torch.cat([~own.any(0, keepdim=True), own])[:, None]


def _alone(objs: Sequence[Obj], background: str) -> str:
    """A prompt in the grammar's words for these objects (one phrase) alone on the background."""
    return f"{noun_phrase(len(objs), objs[0].color, objs[0].shape)} {background}"
