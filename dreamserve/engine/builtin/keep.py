"""What an edit keeps: the input images' own pixels wherever the transformer kept their latents.

The copy path hands the transformer the latents of input images 1-3 at every target token,
and where an instruction leaves a place alone the transformer returns one of them nearly
unchanged (image 1's in an edit; image 2's background where an object is put onto it; each
image's objects in place when they are combined). Decoding them again loses what the
autoencoder's round trip loses (session 31: small suns, hexagons and flowers come back as
discs; an untouched region came back at ~30 dB). Where the transformer kept a latent
pixel from an input, the output takes that input's pixels there instead, as image editors
composite an edit onto its source: the untouched region is the input, not a re-drawing of
it. Which latent pixels count as kept, and from which input, is read from the
transformer's output alone (its distance from each input's latents), never from the
instruction: one the model changed stays the model's, right or wrong.

Latent pixels (the autoencoder's 8 channels per 4x4 pixels of the 128-pixel frame), not the
transformer's fine tokens (2x2 of them): a token at the edge of a recoloured star holds
too little of the star to pass the share, and pasting it put the old colour's tips back on
the new star (session 32).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamserve.engine.builtin.data import to_tensor
from dreamserve.engine.builtin.dit import DiTConfig

# A latent pixel counts as kept from an input when its mean squared distance from that
# input's is under this share of the input's mean squared latent. Measured per fine token
# with image 1 only on the eval's draw-0 edits (198 held-out tasks, shipped weights;
# MODEL_CARD.md "Session 32"): 0.05, 0.1 and 0.2 all took edit success from 114 to 132, the
# mean PSNR of the untouched region from 30.2 dB to 36.4 / 37.5 / 38.1. The middle one: a
# larger share pastes more of what the model meant to change only slightly. Per latent pixel
# at the same share: edit 132 and 150 of 198 on draws 0 and 1 (fine tokens 133 and 143);
# on draw 2, 138 / 141 / 140 / 141 at 0.05 / 0.1 / 0.2 / 0.3 (session 33). One share for
# every input: images 2-3 at 0.3 took reference 72 / 73 / 73 / 81 -> 72 / 78 / 73 / 84 of
# 99 on draws 0-3, but pasted their backgrounds around other images' objects (white halos
# in restyles; 384 latent pixels pasted worse than decoded on draw 0, against 62), so no.
KEEP_SHARE = 0.1
# Decoded pixels per latent pixel: the autoencoder's latent is 4x down, decoded at 2x.
DECODED_PER_LATENT = 8


@dataclass(frozen=True)
class Kept:
    images: tuple[Image.Image, ...]  # the inputs as given
    which: torch.Tensor  # (1, 1, 4gh, 4gw) long: the input kept at each latent pixel, or -1


def kept_latents(
    z: torch.Tensor, refs: Sequence[torch.Tensor], cfg: DiTConfig, share: float = KEEP_SHARE
) -> torch.Tensor:
    """(1, 1, 4gh, 4gw) long: on each latent pixel, the index of the input whose latents
    (refs, on z's (1, 128, gh, gw) cells) z holds within `share` - the nearest if several -
    or -1 where it holds none."""

    def pixels(x: torch.Tensor) -> torch.Tensor:  # cells -> the autoencoder's latent pixels
        return F.pixel_shuffle(x, cfg.patch)

    dists = torch.stack(
        [
            pixels(z - r).pow(2).mean(1, keepdim=True) / pixels(r).pow(2).mean().clamp_min(1e-8)
            for r in refs
        ]
    )  # (inputs, 1, 1, 4gh, 4gw)
    best, index = dists.min(0)
    return torch.where(best < share, index, torch.full_like(index, -1))


def paste(img: torch.Tensor, kept: Kept) -> torch.Tensor:
    """img (1, 3, H, W) in [0, 1], the decoder's output, with each input's pixels where its
    latents were kept, the seams softened over a few pixels. An input with fewer pixels than
    img is left out: stretched up, it would be blurrier than what the decoder draws."""
    h, w = img.shape[-2:]
    for src, m in _kept_inputs(kept, w, h):
        inp = (to_tensor(src)[None] + 1.0) / 2.0  # (1, 3, h, w) in [0, 1]
        if m.shape[-2:] != (h, w):  # a decoder that is not DECODED_PER_LATENT (tiny configs)
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        img = m * inp + (1.0 - m) * img
    return img


def paste_image(out: Image.Image, kept: Kept) -> Image.Image:
    """`out` at the asked size with each input at least that large taken where its latents
    were kept: the decoder-size mask stretched bilinearly, blended in 8 bits by PIL (a float
    blend of three 4K tensors cost about 2 s of a 4K edit, session 32)."""
    for src, m in _kept_inputs(kept, out.width, out.height):
        alpha = Image.fromarray((m[0, 0].numpy() * 255.0 + 0.5).astype(np.uint8), "L")
        out = Image.composite(src, out, alpha.resize(out.size, Image.Resampling.BILINEAR))
    return out


def _kept_inputs(kept: Kept, w: int, h: int) -> Iterator[tuple[Image.Image, torch.Tensor]]:
    """Each input kept somewhere and at least w x h, box-averaged to w x h (stretched as the
    copy path stretched it), with its soft mask at the decoder's size."""
    for k, image in enumerate(kept.images):
        mask = (kept.which == k).float()
        if image.width < w or image.height < h or not bool(mask.any()):
            continue
        yield image.convert("RGB").resize((w, h), Image.Resampling.BOX), soft_mask(mask)


def soft_mask(mask: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W): the latent-pixel mask at the decoder's output size with its seams ramped
    over 5 pixels; stretched to another size, the ramp scales with it (a pooling at 4K would
    cost seconds)."""
    m = F.interpolate(mask, scale_factor=DECODED_PER_LATENT, mode="nearest")
    return F.avg_pool2d(m, 5, stride=1, padding=2, count_include_pad=False)
