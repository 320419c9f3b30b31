"""BuiltinGenerator: the shipped model behind the Generator seam.

Text-to-image, editing, references and sets.

Loads the package's weights and MiniLM offline at construction. One call produces either
`max_images` planned images of a set (sequential_image_generation="auto") or `num_outputs`
independent images, each exactly task.width x task.height, deterministic in (request, seed).
"""

from __future__ import annotations

import os

import torch
from PIL.Image import Image

from dreamserve.engine.base import Canceled, CancelFn, Capabilities, Progress, ProgressFn, Task
from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.prompts import enhance, normalize, plan
from dreamserve.engine.builtin.sample import Sampler, SampleSpec
from dreamserve.engine.builtin.textenc import TextEncoder

STEPS = 10
MAX_REFS = 3  # trained with up to 3 input images; later ones are ignored (said in MODEL_CARD.md)
SEED_STRIDE = 7919  # independent outputs use seed + i * stride


def ignored_images(n: int) -> str:
    return (
        f"the built-in model uses the first {MAX_REFS} of the {n} input images "
        f"(images {MAX_REFS + 1}-{n} are ignored); it was trained with at most {MAX_REFS}"
    )


class BuiltinGenerator:
    name = "builtin"
    capabilities = Capabilities(
        text_to_image=True, edit=True, max_references=10, sequential=True, max_side=4096
    )

    def __init__(self, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if threads:
            torch.set_num_threads(threads)
        if not weights.available():
            raise RuntimeError("no built-in weights shipped in dreamserve/engine/builtin/weights/")
        m = weights.load()
        self.meta = m.meta
        self.sampler = Sampler(m.ae, m.dit, m.sr, TextEncoder(), m.expert)
        self.steps = STEPS

    def prompts(self, task: Task) -> list[tuple[str, int]]:
        """(prompt, seed) per output image."""
        req = task.request
        fix = (
            (lambda p: enhance(p) if not task.images else normalize(p))
            if req.enhance_prompt
            else (lambda p: p)
        )
        if req.sequential_image_generation == "auto":
            parts = plan(req.prompt, req.max_images)
            # Different prompts share the seed (same noise keeps shapes alike across the set);
            # repeated prompts need different seeds to differ at all.
            same = len(set(parts)) < len(parts)
            return [
                (fix(p), (task.seed + (i * SEED_STRIDE if same else 0)) % 2**31)
                for i, p in enumerate(parts)
            ]
        return [
            (fix(req.prompt), (task.seed + i * SEED_STRIDE) % 2**31) for i in range(req.num_outputs)
        ]

    def generate(self, task: Task, on_progress: ProgressFn, should_cancel: CancelFn) -> list[Image]:
        jobs = self.prompts(task)
        total = len(jobs) * self.steps
        done = 0

        def step() -> None:
            nonlocal done
            done += 1
            on_progress(Progress(done, total))
            if should_cancel():
                raise Canceled()

        if should_cancel():
            raise Canceled()
        images = list(task.images)[:MAX_REFS]
        if len(task.images) > MAX_REFS:
            on_progress(Progress(0, total, message=ignored_images(len(task.images))))
        out = []
        for prompt, seed in jobs:
            spec = SampleSpec(
                prompt, seed, task.width, task.height, task.request.guidance_scale, self.steps
            )
            out.append(self.sampler(spec, images, step))
        return out
