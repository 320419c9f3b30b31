"""keep.py: an edit keeps image 1's pixels where the transformer kept its latents."""

from __future__ import annotations

import torch
from PIL import Image

from dreamserve.engine.builtin.dit import DiTConfig, from_fine, to_fine
from dreamserve.engine.builtin.keep import KEEP_SHARE, Kept, kept_tokens, paste

CFG = DiTConfig(split=2)  # 128-channel cells read as 2x2 fine tokens of 32 channels


def test_only_the_tokens_the_transformer_moved_away_are_its_own() -> None:
    torch.manual_seed(0)
    z1 = torch.randn(1, CFG.latent_ch, 4, 4)
    fine = to_fine(z1, CFG).clone()
    fine[:, :, 3, 5] += 2.0  # changed: far past the share
    fine[:, :, 0, 0] += 0.5 * KEEP_SHARE**0.5  # nudged: a quarter of the share
    mask = kept_tokens(from_fine(fine, CFG), z1, CFG)
    assert mask.shape == (1, 1, 8, 8)
    assert mask[0, 0, 3, 5] == 0 and mask[0, 0, 0, 0] == 1 and int(mask.sum()) == 63


def _halves() -> torch.Tensor:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4] = 1.0  # the left half kept
    return mask


def test_kept_tokens_take_image_1s_pixels_and_the_rest_stay_the_models() -> None:
    img = torch.zeros(1, 3, 64, 64)
    white = Image.new("RGB", (128, 128), "white")  # larger than img: box-averaged down
    out = paste(img, Kept(white, _halves()))
    assert out.shape == img.shape
    assert float(out[..., :30].min()) == 1.0  # image 1's own pixels
    assert float(out[..., 34:].max()) == 0.0  # the model's
    seam = out[0, 0, 0, 31:33]
    assert float(seam.min()) > 0.0 and float(seam.max()) < 1.0  # softened, not a hard cut


def test_an_image_1_smaller_than_the_output_is_not_stretched_over_it() -> None:
    img = torch.zeros(1, 3, 64, 64)
    small = Image.new("RGB", (32, 64), "white")
    assert torch.equal(paste(img, Kept(small, _halves())), img)
    assert torch.equal(paste(img, Kept(Image.new("RGB", (64, 64)), torch.zeros(1, 1, 8, 8))), img)
