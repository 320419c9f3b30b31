"""Rendered training batches: drawn in the training loop, or ahead of it by worker processes.

On the 2-core CPU rendering is about 10% of a step (the transformer is the rest), so it runs
inline (`workers=0`) and the draw order follows one seeded `random.Random`. On a GPU the
transformer step takes milliseconds and rendering (numpy + PIL, single-threaded) would be
nearly all of it, so `workers>0` renders in DataLoader processes, each with its own seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dreamserve.engine.builtin.data import GRIDS, Pools, object_masks, render_batch, sample_batch
from dreamserve.engine.builtin.render import Obj

KINDS = ("t2i", "edit", "ref", "shape", "compose")


@dataclass
class Rendered:
    kind: str
    target: torch.Tensor  # (B, 3, 16gh, 16gw) in [-1, 1]
    inputs: list[torch.Tensor]  # per input-image slot, (B, 3, 16gh, 16gw)
    texts: list[str]  # rows of Pools.states
    objects: torch.Tensor  # (B, 1, 16gh, 16gw): 1 on the target's objects (train.dit_loss)
    # Text-to-image batches: each target scene's objects, its layout plan (layout.py); None
    # for edits and references, whose input images already say where things are.
    plans: list[tuple[Obj, ...]] | None = None


def draw(
    pools: Pools, mix: tuple[float, ...], sizes: tuple[int, ...], rnd: random.Random
) -> Rendered:
    """One batch: a task kind by `mix`, an aspect ratio (half square), scenes, renders."""
    k = rnd.choices(range(len(KINDS)), weights=mix)[0]
    gw, gh = GRIDS["1:1" if rnd.random() < 0.5 else rnd.choice(list(GRIDS))]
    b = sample_batch(pools, KINDS[k], sizes[k], rnd)
    inputs = [render_batch(slot, gw, gh) for slot in b.inputs]
    target = render_batch(b.target, gw, gh)
    plans = None if b.inputs else [scene.objects for scene in b.target]
    return Rendered(KINDS[k], target, inputs, b.texts, object_masks(b.target, gw, gh), plans)


class _Endless(IterableDataset[Rendered]):
    def __init__(self, pools: Pools, mix: tuple[float, ...], sizes: tuple[int, ...], seed: int):
        self.pools, self.mix, self.sizes, self.seed = pools, mix, sizes, seed

    def __iter__(self) -> Iterator[Rendered]:
        info = get_worker_info()
        rnd = random.Random(self.seed * 1009 + (info.id if info is not None else 0))
        while True:
            yield draw(self.pools, self.mix, self.sizes, rnd)


def batches(
    pools: Pools, mix: tuple[float, ...], sizes: tuple[int, ...], seed: int, workers: int
) -> Iterator[Rendered]:
    """An endless stream of batches; with workers, forked processes share `pools` read-only."""
    stream = _Endless(pools, mix, sizes, seed)
    if workers <= 0:
        return iter(stream)  # no worker info here: the stream is seeded as worker 0
    loader = DataLoader(
        stream,
        batch_size=None,  # items are whole batches already
        num_workers=workers,
        prefetch_factor=4,
    )
    return iter(loader)
