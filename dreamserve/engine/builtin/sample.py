"""The sampler: text (+ input images) -> latents -> image at any size, in numbered steps.

1. encode the prompt with MiniLM, and the no-prompt condition for guidance
2. encode the input images (edit / references) into latents on the output's token grid
3. draw the starting noise from the seed (a private generator: same seed, same pixels)
4. plan the layout of a text-to-image prompt the caption grammar reads (layout.py), seeded too
5. integrate the flow from t=1 (noise) to t=0 with Euler steps, classifier-free guided
6. decode the latents at 2x with the autoencoder
7. draw exactly the asked size with the trained upscaler (area-averaged when smaller)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dreamserve.engine.builtin.autoencoder import AutoEncoder
from dreamserve.engine.builtin.data import PX, grid_for, to_tensor
from dreamserve.engine.builtin.dit import DiT, null_condition, shift_time
from dreamserve.engine.builtin.layout import layout_map, phrase, phrase_vectors, plan
from dreamserve.engine.builtin.textenc import TextEncoder
from dreamserve.engine.builtin.upscaler import Upscaler, upscale

StepFn = Callable[[], None]  # called after every denoising step (progress + cancel check)

# Classifier-free guidance when a request leaves it blank. Swept on the step-26915 model over
# the eval's 150 held-out text-to-image prompts (MODEL_CARD.md, "Guidance"): colour+shape found
# in 14/50 at 2.5 (the old default), 17 at 3, 20 at 4, 18 at 5, 21 at 6.5.
DEFAULT_GUIDANCE = 4.0


def guidance_or_default(guidance: float | None) -> float:
    return DEFAULT_GUIDANCE if guidance is None else guidance


@dataclass(frozen=True)
class SampleSpec:
    prompt: str
    seed: int
    width: int
    height: int
    guidance: float | None = None  # None: DEFAULT_GUIDANCE (a request that leaves it blank)
    steps: int = 10
    plan: bool = True  # a layout plan where the model reads them and the prompt allows one


def time_grid(steps: int, shift: float) -> torch.Tensor:
    """steps+1 times from 1 to 0, shifted as in training (more steps where layout is decided)."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1), shift)


class Sampler:
    def __init__(self, ae: AutoEncoder, dit: DiT, sr: Upscaler, text: TextEncoder) -> None:
        self.ae, self.dit, self.sr, self.text = ae, dit, sr, text
        self.time_shift = dit.cfg.time_shift  # sampled as it was trained
        # Read once, like the time shift: whether the model reads layout plans, on which grid.
        self.plans, self.split = dit.cfg.layout, dit.cfg.split

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image], gw: int, gh: int) -> list[torch.Tensor]:
        """Step 2: each input image, resized to the grid's pixel size, as (1, C, gh, gw) latents."""
        out = []
        for im in images:
            small = im.convert("RGB").resize((gw * PX, gh * PX), Image.Resampling.BOX)
            out.append(self.ae.encode(to_tensor(small)[None]))
        return out

    @torch.inference_mode()
    def latents(
        self,
        spec: SampleSpec,
        refs: list[torch.Tensor],
        on_step: StepFn,
        noise: torch.Tensor | None = None,
        start: tuple[torch.Tensor, float] | None = None,
    ) -> torch.Tensor:
        """`start` = (clean latents, t0): begin at t0 from those latents noised, not at t=1
        (evaluate.shape_time_probe: at which flow time is a shape decided)."""
        gw, gh = grid_for(spec.width, spec.height)
        # Step 1: prompt and no-prompt conditions, batched together for one forward per step.
        cond, cmask = self.text([spec.prompt])
        unc, umask = null_condition(1)
        L = max(cond.shape[1], 1)
        text = torch.zeros(2, L, cond.shape[2])
        mask = torch.zeros(2, L, dtype=torch.bool)
        text[0, : cond.shape[1]], mask[0, : cond.shape[1]] = cond[0], cmask[0]
        text[1, :1], mask[1, :1] = unc[0], umask[0]
        refs2 = [r.expand(2, -1, -1, -1) for r in refs]
        # Step 3: seeded noise.
        if noise is None:
            noise = seeded_noise(spec.seed, self.ae.token_ch, gh, gw)
        if start is None:
            x, ts = noise.clone(), time_grid(spec.steps, self.time_shift)
        else:
            z0, t0 = start
            x, ts = (1 - t0) * z0 + t0 * noise, torch.linspace(t0, 0.0, spec.steps + 1)
        # Step 4: the layout plan, for the prompt's branch only (training drops it with the
        # prompt, so guidance pushes towards plan and prompt together).
        planned = self.layout(spec, refs, gw, gh)
        if planned is not None:
            planned = torch.cat([planned, torch.zeros_like(planned)])
        # Step 5: Euler integration of dx/dt = v, guided: v = v_u + g (v_c - v_u).
        g = guidance_or_default(spec.guidance)
        for i in range(spec.steps):
            t = ts[i].expand(2)
            v = self.dit(x.expand(2, -1, -1, -1), t, text, mask, refs2, planned)
            v = v[1:] + g * (v[:1] - v[1:])
            x = x + (ts[i + 1] - ts[i]) * v
            on_step()
        return x

    def layout(
        self, spec: SampleSpec, refs: list[torch.Tensor], gw: int, gh: int
    ) -> torch.Tensor | None:
        """(1, LAYOUT_DIM, fine grid) plan of a text-to-image prompt, or None: no plan asked,
        a model without them, input images (they say where things are), or a prompt the
        caption grammar cannot read."""
        if not (spec.plan and self.plans) or refs:
            return None
        scene = plan(spec.prompt, spec.seed)
        if scene is None:
            return None
        vectors = phrase_vectors(self.text, (phrase(o) for o in scene.objects))
        return layout_map([scene.objects], (gw * self.split, gh * self.split), vectors)

    @torch.inference_mode()
    def render(self, z: torch.Tensor, width: int, height: int) -> Image.Image:
        # Step 6: decode at 2x; step 7: the trained upscaler, then exactly the asked size.
        img = (self.ae.decode(z) + 1.0) / 2.0  # (1, 3, 32gh, 32gw) in ~[0, 1]
        img = upscale(self.sr, img.clamp(0, 1), height, width)
        arr = (img[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(arr)

    def __call__(
        self, spec: SampleSpec, images: Sequence[Image.Image], on_step: StepFn
    ) -> Image.Image:
        gw, gh = grid_for(spec.width, spec.height)
        refs = self.encode_images(images, gw, gh)
        return self.render(self.latents(spec, refs, on_step), spec.width, spec.height)


def seeded_noise(seed: int, ch: int, gh: int, gw: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, ch, gh, gw, generator=g)
