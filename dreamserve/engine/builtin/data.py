"""Training batches: caption/task pools with cached text states, rendered and encoded on the fly.

Pools are fixed by the config seed (so `evaluate` can regenerate them and hold their texts
out); scenes are drawn fresh every time, so each cached caption is seen with many images.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamserve.engine.builtin.captions import PromptSpec, random_spec, realize
from dreamserve.engine.builtin.layout import all_phrases, phrase_vectors
from dreamserve.engine.builtin.pairs import TaskSpec, edit_spec, realize_task, ref_spec
from dreamserve.engine.builtin.render import SHAPES, Scene, object_mask, render
from dreamserve.engine.builtin.textenc import MAX_TOKENS, TEXT_DIM, TextEncoder

# Token grids (width, height) per aspect ratio, each about 64 tokens of 16x16 input pixels.
GRIDS: dict[str, tuple[int, int]] = {
    "1:1": (8, 8),
    "4:3": (9, 7),
    "3:4": (7, 9),
    "16:9": (11, 6),
    "9:16": (6, 11),
    "3:2": (10, 7),
    "2:3": (7, 10),
    "21:9": (12, 5),
}
PX = 16  # input pixels per latent token


def grid_for(width: int, height: int) -> tuple[int, int]:
    """The training grid whose aspect ratio is closest to width:height."""
    r = width / height
    return min(GRIDS.values(), key=lambda g: abs(np.log(g[0] / g[1]) - np.log(r)))


def to_tensor(img: object) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    a = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def render_batch(scenes: list[Scene], gw: int, gh: int, scale: int = 1) -> torch.Tensor:
    """(B, 3, gh*16*scale, gw*16*scale) in [-1, 1], antialiased by 2x supersampling."""
    H, W = gh * PX * scale, gw * PX * scale
    imgs = np.stack(
        [np.asarray(render(s, W, H, supersample=2)) for s in scenes]
    )  # (B, H, W, 3) uint8
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    return x.mul_(1 / 127.5).sub_(1.0)


def object_masks(scenes: list[Scene], gw: int, gh: int) -> torch.Tensor:
    """(B, 1, 16gh, 16gw) float: 1 where a scene's objects are, 0 on the background."""
    H, W = gh * PX, gw * PX
    out = np.zeros((len(scenes), 1, H, W), bool)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            out[i, 0] |= object_mask(obj, W, H)
    return torch.from_numpy(out).float()


@dataclass
class Pools:
    t2i: list[PromptSpec]
    edit: list[TaskSpec]
    ref: list[TaskSpec]
    texts: list[str]  # unique texts; row i of `states`
    states: torch.Tensor  # (N, MAX_TOKENS, 384) float16
    lengths: torch.Tensor  # (N,) real tokens per text
    index: dict[str, int]
    focus: tuple[str, ...] = ()  # TrainConfig.shape_focus: the shapes `shapes` keeps, if any
    small_focus: tuple[str, ...] = ()  # TrainConfig.decoder_focus: the shapes `small` keeps

    @functools.cached_property
    def shapes(self) -> list[PromptSpec]:
        """The t2i captions of one object not said to be small: the `shape` batches' pool.

        Why a batch kind of its own: mixed in among counts, relations, edits and references,
        the shape word taught nothing in 400k samples (the model drew one blob for all of
        them). 150 steps of single objects at 0.55 of the image taught it; at this world's
        sizes (large = 0.34) they did not, nor did 85 min of these batches (MODEL_CARD.md).
        """
        ones = [s for s in self.t2i if s.kind == "single" and s.objs[0].size != "small"]
        return [s for s in ones if s.objs[0].shape in self.focus] if self.focus else ones

    @functools.cached_property
    def small(self) -> list[PromptSpec]:
        """The t2i captions with an object said to be small, of a `small_focus` shape if any
        are named: the `small` batches of `--tune-decoder` (TrainConfig.decoder_focus)."""
        return [
            s
            for s in self.t2i
            if any(o.size == "small" and o.shape in (self.small_focus or SHAPES) for o in s.objs)
        ]

    @functools.cached_property
    def composed(self) -> list[PromptSpec]:
        """The t2i captions of two or more objects (relations, counts): `compose` batches.

        Why: these are the rows furthest under their ceilings (MODEL_CARD.md, "Session 26":
        plurals drawn as a field, one object taking the other's shape), and in the default mix
        get the fewest samples: 9% counts and 10% relations, against 50% one-object scenes
        (t2i singles plus the shape batches).
        """
        return [s for s in self.t2i if s.kind in ("relation", "count")]

    @functools.cached_property
    def phrases(self) -> dict[str, torch.Tensor]:
        """Every colour-shape phrase's vector, for layout plans (layout.py): computed once."""
        return phrase_vectors(TextEncoder(), all_phrases())

    def text_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor([self.index[t] for t in texts])
        L = int(self.lengths[rows].max())
        states = self.states[rows, :L].float()
        mask = torch.arange(L)[None] < self.lengths[rows][:, None]
        return states, mask


def make_specs(
    seed: int, n_t2i: int, n_edit: int, n_ref: int
) -> tuple[list[PromptSpec], list[TaskSpec], list[TaskSpec]]:
    rnd = random.Random(seed)
    return (
        [random_spec(rnd) for _ in range(n_t2i)],
        [edit_spec(rnd) for _ in range(n_edit)],
        [ref_spec(rnd) for _ in range(n_ref)],
    )


def build_pools(
    seed: int,
    n_t2i: int,
    n_edit: int,
    n_ref: int,
    cache_dir: Path,
    log: Callable[[str], None] = print,
) -> Pools:
    t2i, edit, ref = make_specs(seed, n_t2i, n_edit, n_ref)
    texts = sorted({s.text for s in t2i} | {s.text for s in edit} | {s.text for s in ref})
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    cache = cache_dir / f"text_states_{key}.pt"
    if cache.exists():
        saved = torch.load(cache)
        states, lengths = saved["states"], saved["lengths"]
    else:
        enc = TextEncoder()
        states = torch.zeros(len(texts), MAX_TOKENS, TEXT_DIM, dtype=torch.float16)
        lengths = torch.zeros(len(texts), dtype=torch.long)
        for i in range(0, len(texts), 128):
            s, m = enc(texts[i : i + 128])
            states[i : i + len(s), : s.shape[1]] = s.half()
            lengths[i : i + len(s)] = m.sum(1)
            if i % 2048 == 0:
                log(f"text states {i}/{len(texts)}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"states": states, "lengths": lengths}, cache)
    return Pools(t2i, edit, ref, texts, states, lengths, {t: i for i, t in enumerate(texts)})


@dataclass
class Batch:
    target: list[Scene]
    inputs: list[list[Scene]]  # per input-image slot, one scene per sample
    texts: list[str]


def sample_batch(pools: Pools, kind: str, size: int, rnd: random.Random) -> Batch:
    """kind: stream.KINDS. A batch's samples share their input count."""
    named = {
        "t2i": pools.t2i,
        "shape": pools.shapes,
        "compose": pools.composed,
        "small": pools.small,
    }
    prompts = named.get(kind)
    if prompts is not None:
        specs = [rnd.choice(prompts) for _ in range(size)]
        return Batch([realize(s, rnd) for s in specs], [], [s.text for s in specs])
    pool = pools.edit if kind == "edit" else pools.ref
    n_in = len(rnd.choice(pool).backgrounds)
    # Draw from the tasks with that many inputs. (Drawing size*4 from the whole pool and
    # keeping the matches came up empty for a rare input count, and crashed a training run.)
    same = [s for s in pool if len(s.backgrounds) == n_in]
    chosen = [rnd.choice(same) for _ in range(size)]
    drawn = [realize_task(s, rnd) for s in chosen]
    inputs = [[d[0][k] for d in drawn] for k in range(n_in)]
    return Batch([d[1] for d in drawn], inputs, [s.text for s in chosen])
