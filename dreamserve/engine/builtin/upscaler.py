"""The trained upscaler: from the decoder's 2x image to any output size, edges drawn sharp.

Scenes are flat colour regions, so across an edge every output pixel is a mix of (mostly) two
colours. The upscaler draws that mix at the output's resolution instead of stretching it:
1. a learned 4x4 depthwise filter (starts as a box) takes out the decoder's 4-pixel ripple;
2. per low-res pixel, the darkest and brightest colour of its 5x5 neighbourhood are the two
   colours an edge there mixes;
3. a small conv net at the low resolution reads the image and those two colours and predicts,
   per pixel, how steep the edge is and where it sits (a slope and an offset);
4. at the output size, each pixel's bilinear value is projected onto the line between the two
   colours and re-drawn through a sigmoid of that slope (times the scale factor, so an edge
   stays about one output pixel wide at any size), blended in where local contrast says there
   is an edge at all (two learned thresholds; smooth gradients keep the bilinear value).

Every parameter is fitted by `dreamserve train` against the renderer drawing the same scene
natively at 4x the decoder's size (`image_steps.sr_step`). A plain sub-pixel conv net (ESPCN) was
tried first and stayed at bilinear within the stage's few hundred steps: edges are ~2% of the
pixels, and the net's cheapest answer was to add nothing. This structure starts where a
sharpening upscaler should (the last layer is zero, so step 0 draws edges with the initial
slope) and training tunes it. Cost: one small conv net at the decoder's resolution and a few
element-wise passes over the output.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class SRConfig:
    ch: int = 16
    window: int = 5  # low-res neighbourhood for the two colours: decoded edges ramp ~3-4 px

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SRConfig:
        return cls(**d)  # type: ignore[arg-type]


def _extremes(img: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the darkest and brightest colour of its window^2 neighbourhood (B, 3, h, w)."""
    B, C, h, w = img.shape
    r = window // 2
    patches = F.unfold(F.pad(img, (r, r, r, r), mode="replicate"), window)
    patches = patches.view(B, C, window * window, h, w)
    luma = 0.299 * patches[:, 0] + 0.587 * patches[:, 1] + 0.114 * patches[:, 2]  # (B, K, h, w)
    pick = luma.argmin(1, keepdim=True), luma.argmax(1, keepdim=True)
    lo, hi = (patches.gather(2, i[:, None].expand(B, C, 1, h, w)).squeeze(2) for i in pick)
    return lo, hi


class Upscaler(nn.Module):
    def __init__(self, cfg: SRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.deripple = nn.Conv2d(3, 3, 4, groups=3, bias=False)
        nn.init.constant_(self.deripple.weight, 1 / 16)
        self.edges = nn.Sequential(
            nn.Conv2d(9, cfg.ch, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(cfg.ch, cfg.ch, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(cfg.ch, 2, 3, padding=1),  # (log slope change, offset) per pixel
        )
        last = self.edges[-1]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.log_slope = nn.Parameter(torch.tensor(math.log(16.0)))  # per unit t, per 1x scale
        self.contrast = nn.Parameter(torch.tensor([0.06, 0.06]))  # edge blend: start, width

    def forward(self, img: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """img (B, 3, h, w) in [0, 1] -> (B, 3, height, width), scale factor > 1."""
        scale = max(height / img.shape[-2], width / img.shape[-1])
        x = self.deripple(F.pad(img, (2, 1, 2, 1), mode="replicate"))  # (B, 3, h, w)
        lo, hi = _extremes(x, self.cfg.window)
        edge = self.edges(torch.cat([x, lo, hi], dim=1))  # (B, 2, h, w)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)

        # Bilinear, not nearest, for the colours and the edge maps: no block seams.
        xu, lo, hi, edge = up(x), up(lo), up(hi), up(edge)
        d = hi - lo
        dd = (d * d).sum(1, keepdim=True)  # (B, 1, H, W)
        t = ((xu - lo) * d).sum(1, keepdim=True) / dd.clamp(min=1e-6)
        slope = torch.exp(self.log_slope + edge[:, :1]) * scale
        snapped = lo + torch.sigmoid((t - 0.5 - edge[:, 1:]) * slope) * d
        start, span = self.contrast[0], self.contrast[1].abs() + 1e-3
        blend = (((dd + 1e-8).sqrt() - start) / span).clamp(0.0, 1.0)  # eps: finite gradient at 0
        return xu + blend * (snapped - xu)


def image_gradients(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical and horizontal neighbour differences of (B, C, H, W) images: the training
    loss compares them, and their squared sum measures how sharp edges are (an edge spread
    over w pixels has 1/w of a step's)."""
    return img[..., 1:, :] - img[..., :-1, :], img[..., :, 1:] - img[..., :, :-1]


def edge_energy(img: torch.Tensor) -> float:
    """Sum of squared image gradients: how sharp the edges are (bench, tests)."""
    return float(sum(g.pow(2).sum() for g in image_gradients(img)))


@torch.no_grad()
def upscale(net: Upscaler, img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """img (B, 3, h, w) in [0, 1] -> exactly (B, 3, height, width) in [0, 1]."""
    if height <= img.shape[-2] and width <= img.shape[-1]:
        return F.interpolate(img, size=(height, width), mode="area")
    return net(img, height, width).clamp(0.0, 1.0)
