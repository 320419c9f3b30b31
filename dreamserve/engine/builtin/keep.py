"""What an edit keeps: image 1's own pixels wherever the transformer kept its latents.

The copy path hands the transformer image 1's latents at every target token, and where an
instruction leaves a place alone the transformer returns them nearly unchanged. Decoding
them again loses what the autoencoder's round trip loses (session 31: small suns, hexagons
and flowers come back as discs; an untouched region came back at ~30 dB). Where the
transformer kept a fine token's latents, the output takes image 1's pixels there instead,
as image editors composite an edit onto its source: the untouched region is the input, not
a re-drawing of it. Which tokens count as kept is read from the transformer's output alone
(its distance from image 1's latents), never from the instruction: a token the model
changed stays the model's, right or wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamserve.engine.builtin.dit import DiTConfig, to_fine

# A fine token counts as kept when its mean squared distance from image 1's latents is under
# this share of image 1's mean squared latent. Measured on the eval's draw-0 edits (198
# held-out tasks, shipped weights; MODEL_CARD.md "Session 32"): 0.05, 0.1 and 0.2 all took
# edit success from 114 to 132, PSNR of the untouched region 30.1 dB to 36.4 / 37.5 / 38.1.
# The middle one: a larger share pastes more of what the model meant to change slightly.
KEEP_SHARE = 0.1


@dataclass(frozen=True)
class Kept:
    image: Image.Image  # image 1 as given
    mask: torch.Tensor  # (1, 1, fine gh, fine gw) float: 1 where its latents were kept


def kept_tokens(
    z: torch.Tensor, z1: torch.Tensor, cfg: DiTConfig, share: float = KEEP_SHARE
) -> torch.Tensor:
    """(1, 1, fine gh, fine gw): 1 on the fine tokens whose latents z holds within `share`
    of image 1's (z1, on the same token grid), else 0."""
    dist = to_fine(z - z1, cfg).pow(2).mean(1, keepdim=True)
    scale = to_fine(z1, cfg).pow(2).mean().clamp_min(1e-8)
    return (dist < share * scale).float()


def paste(img: torch.Tensor, kept: Kept) -> torch.Tensor:
    """img (1, 3, H, W) in [0, 1] with image 1's pixels on the kept tokens, their seams
    softened over a few pixels. Unchanged where image 1 has fewer pixels than img: stretched
    up, it would be blurrier than what the decoder and upscaler draw."""
    h, w = img.shape[-2:]
    if kept.image.width < w or kept.image.height < h or not bool(kept.mask.any()):
        return img
    # Box-averaged down to img's grid, stretched as the copy path stretched it to the tokens.
    src = kept.image.convert("RGB").resize((w, h), Image.Resampling.BOX)
    inp = torch.from_numpy(np.asarray(src, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    m = soft_mask(kept.mask)
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return m * inp + (1.0 - m) * img


def soft_mask(mask: torch.Tensor) -> torch.Tensor:
    """The token mask at 16 pixels per fine token (the decoder's output size) with its
    seams ramped over 5 pixels; stretched to another size, the ramp scales with it (a
    pooling at 4K would cost seconds)."""
    m = F.interpolate(mask, scale_factor=16, mode="nearest")
    return F.avg_pool2d(m, 5, stride=1, padding=2, count_include_pad=False)
