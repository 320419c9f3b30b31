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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

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
# How near (RGB distance, channels in [0, 1]) a pixel next to kept ones must be to the
# input's colour there, both as decoded and as the kept pixels have it, to be taken from
# the input too (`grow`). Replayed on the eval's tasks of draws 0 / 1 / 2 (session 34):
# none: edit 132 / 150 / 141 and reference 72 / 73 / 73 of 198 and 99; 30 of 255: edit
# 134 / 147 / 144, reference 78 / 77 / 74; 20 gained no reference on draw 1 and 40-60
# pasted an old background beside objects 2-4x as often (pixels further from the true
# target than the decoded ones: at 30, at most 22% as many as it brings nearer in every
# task type but background changes, where 21-77%).
AGREE = 30.0 / 255.0


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


@dataclass(frozen=True)
class Seams:
    """Each input kept somewhere: as given, at the decoder's output size, and its soft mask
    there."""

    images: tuple[Image.Image, ...]  # the inputs as given
    pixels: tuple[torch.Tensor, ...]  # (1, 3, H, W) in [0, 1]: each box-averaged to H x W
    masks: tuple[torch.Tensor, ...]  # (1, 1, H, W) in [0, 1], one per image


def seams(dec: torch.Tensor, kept: Kept) -> Seams:
    """The soft masks of the inputs kept in `dec` (1, 3, H, W), the decoder's output in
    [0, 1]: each input's kept latent pixels, grown into the pixels around them where `dec`
    agrees with that input (`grow`), the seams ramped over 5 pixels."""
    h, w = dec.shape[-2:]
    images, pixels, masks = [], [], []
    for k, image in enumerate(kept.images):
        hard = (kept.which == k).float()
        if not bool(hard.any()):
            continue
        per = h // hard.shape[-2]  # DECODED_PER_LATENT, or fewer in a tiny test config
        hard = F.interpolate(hard, size=(h, w), mode="nearest")
        inp = (to_tensor(_resized(image, w, h))[None] + 1.0) / 2.0
        soft = F.avg_pool2d(grow(hard, inp, dec, per), 5, 1, 2, count_include_pad=False)
        images.append(image)
        pixels.append(inp)
        masks.append(soft)
    return Seams(tuple(images), tuple(pixels), tuple(masks))


def grow(
    hard: torch.Tensor, inp: torch.Tensor, dec: torch.Tensor, per: int = DECODED_PER_LATENT
) -> torch.Tensor:
    """hard (1, 1, H, W) kept pixels -> the same plus every pixel within one latent pixel of
    them (`per` pixels a latent pixel) that has, within AGREE, both the input's colour at the
    nearest kept pixel (it continues what was kept) and the decoded colour (the model drew
    it as the input has it).

    Why: a latent pixel on an object's outline holds object and background both; when the
    background changes, it changes too and is not kept, so the outline came from the decoder,
    rounded (small suns lost their rays, stars their tips: session 34). Its pixels that the
    decoder drew as the input has them are the input's. Both tests, because each alone
    pasted what the model changed: the decoded colour alone put an old background back
    around objects when the new one was near it (cream for white), and continuing the kept
    region alone would paste an unchanged background over a grown object's new edge.
    """
    near = F.max_pool2d(hard, 2 * per + 1, stride=1, padding=per) > 0
    _, (iy, ix) = ndimage.distance_transform_edt(hard[0, 0].numpy() == 0, return_indices=True)
    kept_colour = inp[:, :, torch.from_numpy(iy), torch.from_numpy(ix)]  # (1, 3, H, W)
    same = (inp - kept_colour).pow(2).sum(1, keepdim=True) < AGREE**2
    agree = (dec - inp).pow(2).sum(1, keepdim=True) < AGREE**2
    return torch.where(near & same & agree, torch.ones_like(hard), hard)


def paste(img: torch.Tensor, seams: Seams) -> torch.Tensor:
    """img (1, 3, H, W) in [0, 1], the decoder's output `seams` was made from, with each
    input's pixels where its latents were kept. An input with fewer pixels than img is left
    out: stretched up, it would be blurrier than what the decoder draws."""
    h, w = img.shape[-2:]
    for image, inp, m in zip(seams.images, seams.pixels, seams.masks, strict=True):
        if image.width >= w and image.height >= h:
            img = m * inp + (1.0 - m) * img
    return img


def paste_image(out: Image.Image, seams: Seams) -> Image.Image:
    """`out` at the asked size with each input at least that large taken where its latents
    were kept: the decoder-size mask stretched bilinearly, blended in 8 bits by PIL (a float
    blend of three 4K tensors cost about 2 s of a 4K edit, session 32)."""
    for image, m in zip(seams.images, seams.masks, strict=True):
        if image.width < out.width or image.height < out.height:
            continue
        alpha = Image.fromarray((m[0, 0].numpy() * 255.0 + 0.5).astype(np.uint8), "L")
        src = _resized(image, out.width, out.height)
        out = Image.composite(src, out, alpha.resize(out.size, Image.Resampling.BILINEAR))
    return out


def _resized(image: Image.Image, w: int, h: int) -> Image.Image:
    """An input box-averaged to w x h, stretched as the copy path stretched it."""
    return image.convert("RGB").resize((w, h), Image.Resampling.BOX)
