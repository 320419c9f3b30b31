"""The sampler: text (+ input images) -> latents -> image at any size, in numbered steps.

1. plan the layout of a text-to-image prompt the caption grammar reads (layout.py), seeded;
   a plan whose boxes carry different phrases is split into one region per phrase; plan an
   edit of one image from its instruction and image 1 (edit_plan.py): the boxes it changes
2. encode the prompt (split into regions: each region's prompt instead) and the no-prompt
   condition with MiniLM
3. encode the input images (edit / references) into latents on the output's token grid
4. draw the starting noise from the seed (a private generator: same seed, same pixels)
5. integrate the flow from t=1 (noise) to t=0 with Euler steps, classifier-free guided, each
   region's tokens predicted from its own prompt; a planned image's low-noise steps go to the
   expert, which draws the outlines at the latent pixels (expert.py), when there is one
   (a planned edit's: in its changed boxes only, the transformer's velocity elsewhere)
6. decode the latents at 2x with the autoencoder; an edit takes the input images' own
   pixels where the transformer kept their latents (keep.py), never where its plan moved
   or shrank an object from
7. draw exactly the asked size with the trained upscaler (area-averaged when smaller), and
   the inputs' kept pixels again where an input is as large as the output
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamserve.engine.builtin import edit_plan
from dreamserve.engine.builtin.autoencoder import AutoEncoder
from dreamserve.engine.builtin.data import PX, grid_for, to_tensor
from dreamserve.engine.builtin.dit import DiT, from_fine, null_condition, shift_time, to_fine
from dreamserve.engine.builtin.edit_plan import EditPlan
from dreamserve.engine.builtin.expert import Expert, plan_map
from dreamserve.engine.builtin.keep import Kept, kept_latents, paste, paste_image, seams
from dreamserve.engine.builtin.layout import (
    covers_all,
    layout_map,
    owners,
    phrase,
    phrase_vectors,
    plan,
    regions,
)
from dreamserve.engine.builtin.prompts import background_words, noun_phrase
from dreamserve.engine.builtin.render import Obj, Scene
from dreamserve.engine.builtin.textenc import TextEncoder, pool
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
    keep: bool = True  # inputs' pixels where the transformer kept their latents (keep.py)


@dataclass(frozen=True)
class Conditions:
    """What every step's one batched forward reads, row by row (R rows)."""

    text: torch.Tensor  # (R, L, 384) MiniLM states: the prompt or each region's, no prompt
    mask: torch.Tensor  # (R, L) which of them are tokens
    layout: torch.Tensor | None  # (R, LAYOUT_DIM, fine gh, fine gw) plans; None: no plan
    regions: torch.Tensor | None  # (R - 1, 1, fine gh, fine gw) bool: which conditional row
    # predicts each fine token (each token in exactly one); None: row 0 predicts them all


@dataclass(frozen=True)
class ExpertRows:
    """What the expert reads at each of its steps: the prompt's row, then no prompt's."""

    pooled: torch.Tensor  # (2, TEXT_DIM) the prompt's unit MiniLM vector; zeros
    layout: torch.Tensor  # (2, plan_dim, 4gh, 4gw) the plan per latent pixel; zeros
    # (1, 1, 4gh, 4gw): where the expert draws, the transformer elsewhere (an edit's changed
    # boxes, edit_plan.region); None: everywhere, and the transformer is not run
    region: torch.Tensor | None = None


def time_grid(steps: int, shift: float) -> torch.Tensor:
    """steps+1 times from 1 to 0, shifted as in training (more steps where layout is decided)."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1), shift)


class Sampler:
    def __init__(
        self,
        ae: AutoEncoder,
        dit: DiT,
        sr: Upscaler,
        text: TextEncoder,
        expert: Expert | None = None,
    ) -> None:
        self.ae, self.dit, self.sr, self.text, self.expert = ae, dit, sr, text, expert
        self.time_shift = dit.cfg.time_shift  # sampled as it was trained
        # Read once, like the time shift (bench.bench_model wraps `dit` in a timer): whether
        # the model reads layout plans, and its grid of fine tokens.
        self.dit_cfg = dit.cfg

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image], gw: int, gh: int) -> list[torch.Tensor]:
        """Step 3: each input image, resized to the grid's pixel size, as (1, C, gh, gw) latents."""
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
        edit: EditPlan | None = None,
    ) -> torch.Tensor:
        """`start` = (clean latents, t0): begin at t0 from those latents noised, not at t=1
        (evaluate.shape_time_probe: at which flow time is a shape decided). `edit`: the
        plan of an edit (edit_plan), whose boxes the expert draws."""
        gw, gh = grid_for(spec.width, spec.height)
        scene = self.plan(spec, refs)  # step 1
        cond = self.conditions(spec, scene, gw, gh)  # steps 1-2
        late = (
            self.expert_rows(spec, scene, gw, gh) if edit is None else self.edit_rows(edit, gw, gh)
        )
        rows = cond.text.shape[0]
        refs_r = [r.expand(rows, -1, -1, -1) for r in refs]
        # Step 4: seeded noise.
        if noise is None:
            noise = seeded_noise(spec.seed, self.ae.token_ch, gh, gw)
        if start is None:
            x, ts = noise.clone(), time_grid(spec.steps, self.time_shift)
        else:
            z0, t0 = start
            x, ts = (1 - t0) * z0 + t0 * noise, torch.linspace(t0, 0.0, spec.steps + 1)
        # Step 5: Euler integration of dx/dt = v, guided: v = v_u + g (v_c - v_u).
        g = guidance_or_default(spec.guidance)
        takes = self.expert_takes(ts[:-1])
        for i in range(spec.steps):
            if late is None or not takes[i]:
                v = self.guided(x, ts[i], cond, refs_r, g)
            else:
                # The expert's clean latents, as the velocity towards them from x at ts[i]
                # (the flow is a straight line from data to noise).
                v = (x - self.expert_latents(x, ts[i], late, g)) / ts[i]
                if late.region is not None:  # an edit's: its boxes only
                    v = self.blend(self.guided(x, ts[i], cond, refs_r, g), v, late.region)
            x = x + (ts[i + 1] - ts[i]) * v
            on_step()
        return x

    def guided(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: Conditions,
        refs: list[torch.Tensor],
        g: float,
    ) -> torch.Tensor:
        """The transformer's guided velocity (1, C, gh, gw) at x and flow time t, in one
        batched forward of cond's rows (refs: the input latents, a row each)."""
        rows = cond.text.shape[0]
        v = self.dit(
            x.expand(rows, -1, -1, -1), t.expand(rows), cond.text, cond.mask, refs, cond.layout
        )
        vc, vu = self.composite(v[:-1], cond.regions), v[-1:]
        return vu + g * (vc - vu)

    def conditions(self, spec: SampleSpec, scene: Scene | None, gw: int, gh: int) -> Conditions:
        """Steps 1-2: the rows of one batched forward per step: the prompt (a plan split into
        regions: each region's prompt instead), and the no-prompt condition last."""
        grid = (gw * self.dit_cfg.split, gh * self.dit_cfg.split)
        parts = regions(scene) if scene is not None else []
        # Regions that hold every object draw every token between them (each region's prompt
        # names the background too), so the whole prompt's row is not run: a two-phrase prompt
        # is a batch of 3 a step, not 4 (session 33). Past MAX_REGIONS it draws the rest.
        whole = scene is None or not parts or not covers_all(scene, parts)
        prompts = [spec.prompt] if whole else []
        prompts += [r.prompt for r in parts]
        states, smask = self.text(prompts)
        unc, umask = null_condition(1)
        rows, L = len(prompts) + 1, max(states.shape[1], 1)
        text = torch.zeros(rows, L, states.shape[2])
        mask = torch.zeros(rows, L, dtype=torch.bool)
        text[:-1, : states.shape[1]], mask[:-1, : states.shape[1]] = states, smask
        text[-1, :1], mask[-1, :1] = unc[0], umask[0]
        if scene is None:
            return Conditions(text, mask, None, None)
        # The plan goes to the prompt's rows only: training drops it with the prompt, so
        # guidance pushes towards plan and prompt together. A region's row plans its boxes.
        plans = [scene.objects] if whole else []
        plans += [r.objects for r in parts]
        objs = [o for p in plans for o in p]
        layout = layout_map(plans, grid, phrase_vectors(self.text, map(phrase, objs)))
        layout = torch.cat([layout, torch.zeros_like(layout[:1])])  # the no-prompt row
        if not parts:
            return Conditions(text, mask, layout, None)
        return Conditions(text, mask, layout, owners(parts, grid, whole))

    def expert_rows(
        self, spec: SampleSpec, scene: Scene | None, gw: int, gh: int
    ) -> ExpertRows | None:
        """The expert's two rows for a planned image; None without an expert, without a
        plan, or for a plan of more objects than it draws (ExpertConfig.max_objects)."""
        if self.expert is None or scene is None:
            return None
        if len(scene.objects) > self.expert.cfg.max_objects:
            return None
        return self.expert_inputs(spec.prompt, scene.objects, gw, gh)

    def edit_plan(self, spec: SampleSpec, images: Sequence[Image.Image]) -> EditPlan | None:
        """Step 1 of an edit of one image: the boxes it changes, when edit_plan reads the
        instruction and there is an expert to draw them; None otherwise or unasked."""
        if self.expert is None or not spec.plan or len(images) != 1:
            return None
        return edit_plan.read(spec.prompt, images[0])

    def edit_rows(self, edit: EditPlan, gw: int, gh: int) -> ExpertRows:
        """The expert's rows for an edit: the changed objects, drawn in their region only."""
        # The expert learnt from captions of whole scenes: one of the changed objects.
        words = [noun_phrase(1, o.color, o.shape) for o in edit.objects]
        caption = f"{' and '.join(words)} {background_words(edit.background)}"
        rows = self.expert_inputs(caption, edit.objects, gw, gh)
        p = self.ae.cfg.patch
        return replace(rows, region=edit_plan.region(edit.boxes, (gw * p, gh * p)))

    def expert_inputs(self, prompt: str, objects: Sequence[Obj], gw: int, gh: int) -> ExpertRows:
        """The prompt's pooled vector and the objects' plan per latent pixel, then zeros."""
        assert self.expert is not None
        p = self.ae.cfg.patch  # latent pixels per token side
        states, mask = self.text([prompt])
        pooled = torch.cat([pool(states, mask), torch.zeros(1, states.shape[-1])])
        vectors = phrase_vectors(self.text, map(phrase, objects))
        layout = plan_map(self.expert.cfg, [list(objects)], (gw * p, gh * p), vectors)
        return ExpertRows(pooled, torch.cat([layout, torch.zeros_like(layout)]))

    def expert_takes(self, ts: torch.Tensor) -> list[bool]:
        """Per step from flow time ts[i]: whether the expert draws it, for a plan it draws
        (expert_rows): every step from its switch on (bench_model counts them with this)."""
        if self.expert is None:
            return [False] * len(ts)
        return [bool(t <= self.expert.cfg.t_switch) for t in ts]

    def expert_latents(
        self, x: torch.Tensor, t: torch.Tensor, rows: ExpertRows, g: float
    ) -> torch.Tensor:
        """The expert's guided clean latents for x (1, C, gh, gw) tokens at flow time t, at
        its share of the request's guidance g above 1 (ExpertConfig.guidance_share)."""
        assert self.expert is not None
        p = self.ae.cfg.patch
        xp = F.pixel_shuffle(x, p).expand(2, -1, -1, -1)  # (2, latent_ch, 4gh, 4gw)
        x0 = self.expert(xp, t.expand(2), rows.pooled, rows.layout)
        # Guided as the transformer is: on a straight flow, guiding the clean latents is
        # guiding the velocity towards them.
        ge = 1.0 + (g - 1.0) * self.expert.cfg.guidance_share
        return F.pixel_unshuffle(x0[1:] + ge * (x0[:1] - x0[1:]), p)

    def blend(self, v: torch.Tensor, ve: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """Velocities on the token grid: the expert's `ve` in `region`, the transformer's `v`
        elsewhere, mixed per latent pixel."""
        p = self.ae.cfg.patch
        mixed = region * F.pixel_shuffle(ve, p) + (1 - region) * F.pixel_shuffle(v, p)
        return F.pixel_unshuffle(mixed, p)

    def composite(self, v: torch.Tensor, regions: torch.Tensor | None) -> torch.Tensor:
        """(1, C, gh, gw): each fine token from the conditional row that owns it (all from
        row 0 without regions)."""
        if regions is None:
            return v[:1]
        fine = to_fine(v, self.dit_cfg)
        return from_fine((fine * regions).sum(0, keepdim=True), self.dit_cfg)

    def plan(self, spec: SampleSpec, refs: list[torch.Tensor]) -> Scene | None:
        """The layout plan of a text-to-image prompt, or None: no plan asked, a model without
        them, input images (they say where things are), or a prompt the grammar cannot read."""
        if not (spec.plan and self.dit_cfg.layout) or refs:
            return None
        return plan(spec.prompt, spec.seed)

    @torch.inference_mode()
    def render(
        self, z: torch.Tensor, width: int, height: int, kept: Kept | None = None
    ) -> Image.Image:
        # Step 6: decode at 2x; step 7: the trained upscaler, then exactly the asked size.
        dec = (self.ae.decode(z) + 1.0).div(2.0).clamp(0, 1)  # (1, 3, 32gh, 32gw)
        cut = None if kept is None else seams(dec, kept)
        img = upscale(self.sr, dec if cut is None else paste(dec, cut), height, width)
        arr = (img[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        out = Image.fromarray(arr)
        if cut is not None and img.shape != dec.shape:  # exact input pixels at the output's
            out = paste_image(out, cut)  # size too, where an input has that many
        return out

    def __call__(
        self, spec: SampleSpec, images: Sequence[Image.Image], on_step: StepFn
    ) -> Image.Image:
        gw, gh = grid_for(spec.width, spec.height)
        refs = self.encode_images(images, gw, gh)
        edit = self.edit_plan(spec, images)
        z = self.latents(spec, refs, on_step, edit=edit)
        kept = self.kept_pixels(z, refs, images, edit) if spec.keep else None
        return self.render(z, spec.width, spec.height, kept)

    def kept_pixels(
        self,
        z: torch.Tensor,
        refs: list[torch.Tensor],
        images: Sequence[Image.Image],
        edit: EditPlan | None = None,
    ) -> Kept | None:
        """The inputs and the latent pixels z kept from each; None without inputs. Never
        where an edit's plan moved or shrank an object from: the latent pixels on its old
        outline hold little of it, pass as kept, and pasted its outline back (session 38)."""
        if not refs:
            return None
        which = kept_latents(z, refs, self.dit_cfg)
        if edit is not None and edit.cleared:
            gone = edit_plan.region(edit.cleared, (which.shape[-1], which.shape[-2]), grow=1.0)
            which = which.masked_fill(gone > 0, -1)
        return Kept(tuple(images[: len(refs)]), which)


def seeded_noise(seed: int, ch: int, gh: int, gw: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, ch, gh, gw, generator=g)
