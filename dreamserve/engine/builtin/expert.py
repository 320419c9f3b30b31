"""The expert: a small U-Net over the latent pixels that finishes a planned image.

Why (MODEL_CARD.md, sessions 29-35): the transformer places, colours and sizes objects, and
draws flowers, hexagons and suns as discs. Those shapes light up the same fine tokens as a
circle of their size; their outlines run inside the edge tokens, which the transformer
writes through one linear layer per token, and even from renders noised only to t = 0.3 it
smooths them. Neither more of those shapes in training, an outline-weighted loss, a
convolutional head grown onto the transformer nor classifier guidance drew one more of
them. eDiff-I (Balaji et al., 2022) and SDXL's refiner split the flow between models: the
late steps decide detail, not layout. Here the steps from `ExpertConfig.t_switch` on go to a
network built for detail: 3x3 convolutions at the autoencoder's latent pixels (4x4 pixels
of a 128-pixel frame), two levels down so a large object's whole outline is in view, each
latent pixel told which phrase ("red flower") its planned box carries, as the transformer
is told per token, and where in that box it lies (layout.box_coords, from session 36: with
the phrase alone a petal's place had to be found from the box's edges). It predicts the
clean latents; trained on renders whose objects are often drawn as circles
(expert_train.py), it is taught to draw the shape the phrase names rather than the one the
transformer handed it. Session 37 found it draws best when it takes over early (t_switch
0.9: 6 of the 10 steps, of plans up to `max_objects`): the planner's boxes already fix the
layout, and a disc the transformer has drawn is harder to undo than noise.

It runs only where a layout plan is: text-to-image prompts the grammar reads, and edits that
add, move or resize an object (edit_plan.py, session 38), where it draws the changed boxes
and the transformer the rest. Other edits and references keep the transformer to the end,
and weights without an expert sample as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dreamserve.engine.builtin.dit import LAYOUT_DIM, timestep_embedding
from dreamserve.engine.builtin.layout import COORD_DIM, box_coords, layout_map
from dreamserve.engine.builtin.render import Obj
from dreamserve.engine.builtin.textenc import TEXT_DIM


@dataclass(frozen=True)
class ExpertConfig:
    latent_ch: int = 8  # the autoencoder's channels per latent pixel
    width: int = 64  # channels at the latent pixels; x2 at each level below
    levels: int = 3  # latent pixels, /2, /4: a large object (11 latent pixels) in one view
    blocks: int = 2  # residual blocks per level, on the way down and on the way up
    emb: int = 256  # the flow time and the pooled prompt, read by every block
    # The flow time (the DiT's, shifted) from which the expert draws the image: step 5 of
    # the sampler's 10 (t = 0.857). Session 37: with session 36's expert, trained around
    # 0.5, colour+shape of 100 singles was 71% from 0.5, 79% from 0.7, 83% from 0.9, 82%
    # from 1.0: the boxes of a plan are layout enough, and the transformer's early steps
    # handed it outlines it had to undo.
    t_switch: float = 0.9
    # Each latent pixel also reads where in its planned box it lies (layout.box_coords).
    coords: bool = True
    # The plans it draws: those of at most this many objects. Switched in at 0.5, session
    # 36's expert drew two-object and count scenes worse than the transformer (relation 44 ->
    # 38%, count 98 -> 91%) and drew single objects only; from 0.9 it draws them better
    # (relation 44 -> 60%, count 97 -> 96%, draw 0). Counts are trained and measured up to 4;
    # larger plans ("six stars", scenes of several kinds) stay with the transformer.
    max_objects: int = 4
    # Its classifier-free guidance is 1 + share x (the request's guidance - 1): 2.5 at the
    # default 4, and none when the request asks for none. Session 37, 100 singles from 0.9
    # (colour+shape, position of 75): guidance 6: 66, 49; 4 (the transformer's): 83, 60;
    # 2.5: 91, 67; 2: 91, 68; 1.5: 86, 64.
    guidance_share: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def plan_dim(self) -> int:
        return LAYOUT_DIM + (COORD_DIM if self.coords else 0)


# The ExpertConfig fields that say how the sampler calls the expert, not what it is: chosen
# by evaluation, so a resumed or re-exported expert takes them from the code
# (expert_train.load).
SAMPLING_FIELDS = ("t_switch", "max_objects", "guidance_share")


def plan_map(
    cfg: ExpertConfig,
    objects: Sequence[Sequence[Obj]],
    grid: tuple[int, int],
    vectors: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """(B, cfg.plan_dim, gh, gw): the plan the expert reads per latent pixel of a `grid` =
    (gw, gh): the phrase vectors of the boxes over it, then where in its box it lies."""
    phrases = layout_map(objects, grid, vectors)
    return torch.cat([phrases, box_coords(objects, grid)], 1) if cfg.coords else phrases


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice; the second norm scaled and shifted by the embedding."""

    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.film = nn.Linear(emb, 2 * c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(e)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Stack(nn.Module):
    """Residual blocks in a row, each reading the embedding."""

    def __init__(self, blocks: list[ResBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, e)
        return h


class Expert(nn.Module):
    def __init__(self, cfg: ExpertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = [cfg.width * min(2**k, 2) for k in range(cfg.levels)]  # 64, 128, 128
        self.time = nn.Sequential(nn.Linear(128, cfg.emb), nn.SiLU(), nn.Linear(cfg.emb, cfg.emb))
        self.text = nn.Linear(TEXT_DIM, cfg.emb)
        self.stem = nn.Conv2d(cfg.latent_ch, w[0], 3, padding=1)
        # The plan per latent pixel; each level below reads it again, pooled to its size.
        self.plan = nn.ModuleList(nn.Conv2d(cfg.plan_dim, c, 1) for c in w)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        for k, c in enumerate(w):
            self.down.append(Stack([ResBlock(c, c, cfg.emb) for _ in range(cfg.blocks)]))
            if k:  # into level k: a strided conv from the level above
                self.pool.append(nn.Conv2d(w[k - 1], c, 3, stride=2, padding=1))
        self.up = nn.ModuleList()
        for k in reversed(range(cfg.levels - 1)):
            c = w[k]
            first = ResBlock(w[k + 1] + c, c, cfg.emb)  # upsampled deeper level + the skip
            rest = [ResBlock(c, c, cfg.emb) for _ in range(cfg.blocks - 1)]
            self.up.append(Stack([first, *rest]))
        self.out_norm = nn.GroupNorm(8, w[0])
        self.out = nn.Conv2d(w[0], cfg.latent_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # a new expert predicts zeros (the latents' mean)
        assert self.out.bias is not None
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, pooled: torch.Tensor, layout: torch.Tensor
    ) -> torch.Tensor:
        """x: (B, latent_ch, H, W) noisy latent pixels (H, W divisible by 2^(levels-1));
        t: (B,) flow times; pooled: (B, TEXT_DIM) the prompt's unit MiniLM vector (zeros:
        no prompt); layout: (B, plan_dim, H, W) the plan per latent pixel (plan_map; zeros: none).
        Returns the clean latent pixels it predicts, (B, latent_ch, H, W)."""
        e = F.silu(self.time(timestep_embedding(t, 128)) + self.text(pooled))  # (B, emb)
        h = self.stem(x) + self.plan[0](layout)  # (B, w0, H, W)
        skips = []
        for k, level in enumerate(self.down):
            if k:
                h = self.pool[k - 1](h) + self.plan[k](F.avg_pool2d(layout, 2**k))
            h = level(h, e)
            skips.append(h)
        h = skips.pop()  # the deepest level
        for level in self.up:
            s = skips.pop()  # (B, c, 2h, 2w)
            h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = level(torch.cat([h, s], dim=1), e)
        return self.out(F.silu(self.out_norm(h)))
