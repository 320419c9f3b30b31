"""keep.py: an edit keeps the inputs' pixels where the transformer kept their latents."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dreamserve.engine.builtin.dit import DiTConfig
from dreamserve.engine.builtin.keep import (
    AGREE,
    KEEP_SHARE,
    Kept,
    grow,
    kept_latents,
    paste,
    paste_image,
    seams,
)

CFG = DiTConfig(split=2)  # 128-channel cells: 8 latent channels x 4x4 latent pixels


def test_each_latent_pixel_is_kept_from_the_input_it_matches_or_is_the_models() -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(2, 1, CFG.latent_ch, 2, 2)
    px, px2 = F.pixel_shuffle(z1, 4).clone(), F.pixel_shuffle(z2, 4)  # (1, 8, 8, 8)
    px[:, :, 3, 5] += 2.0  # changed: far past the share
    px[:, :, 0, 0] += 0.5 * KEEP_SHARE**0.5  # nudged: a quarter of the share
    px[:, :, 6, 1] = px2[:, :, 6, 1]  # image 2's, as a combine keeps its objects
    which = kept_latents(F.pixel_unshuffle(px, 4), [z1, z2], CFG)
    assert which.shape == (1, 1, 8, 8)
    assert which[0, 0, 3, 5] == -1 and which[0, 0, 0, 0] == 0 and which[0, 0, 6, 1] == 1
    assert int((which == 0).sum()) == 62


def _halves() -> torch.Tensor:
    which = torch.full((1, 1, 8, 8), -1)  # 8 latent pixels a side: a 64-pixel decode
    which[..., :4] = 0  # the left half kept from image 1
    which[..., 6:] = 1  # the right quarter from image 2
    return which


def test_kept_tokens_take_their_inputs_pixels_and_the_rest_stay_the_models() -> None:
    img = torch.zeros(1, 3, 64, 64)
    white = Image.new("RGB", (128, 128), "white")  # larger than img: box-averaged down
    gray = Image.new("RGB", (64, 64), (51, 51, 51))
    out = paste(img, seams(img, Kept((white, gray), _halves())))
    assert out.shape == img.shape
    assert float(out[..., :30].min()) == 1.0  # image 1's own pixels
    assert float(out[..., 34:46].max()) == 0.0  # the model's
    assert torch.allclose(out[..., 50:], torch.tensor(0.2))  # image 2's
    seam = out[0, 0, 0, 31:33]
    assert float(seam.min()) > 0.0 and float(seam.max()) < 1.0  # softened, not a hard cut


def test_an_input_smaller_than_the_output_is_not_stretched_over_it() -> None:
    img = torch.zeros(1, 3, 64, 64)
    small = Image.new("RGB", (32, 64), "white")
    assert torch.equal(paste(img, seams(img, Kept((small, small), _halves()))), img)
    nothing = torch.full((1, 1, 8, 8), -1)
    white = Image.new("RGB", (64, 64), "white")
    assert torch.equal(paste(img, seams(img, Kept((white,), nothing))), img)


def test_at_the_asked_size_kept_pixels_are_the_inputs_own_and_small_inputs_stay_out() -> None:
    black = Image.new("RGB", (256, 256))  # the upscaled output: 4x the 64-pixel decode
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8))
    gray = Image.new("RGB", (128, 128), (51, 51, 51))  # smaller than the output: left out
    dec = torch.zeros(1, 3, 64, 64)  # black, as the model drew it: far from the noise
    out = np.asarray(paste_image(black, seams(dec, Kept((noise, gray), _halves()))))
    assert out.shape == (256, 256, 3)
    src = np.asarray(noise)
    assert np.array_equal(out[:, :112], src[:, :112])  # exactly image 1's
    assert int(out[:, 140:].max()) == 0  # the model's: image 2 is too small to stretch
    seam = out[:, 116:132]  # ramped from image 1's to the model's black
    assert bool((seam <= src[:, 116:132]).all()) and not np.array_equal(seam, src[:, 116:132])
    assert seam.any()


def test_a_decoder_of_another_scale_gets_the_mask_stretched_to_its_size() -> None:
    img = torch.zeros(1, 3, 32, 32)  # 4 pixels a latent pixel, as a tiny config decodes
    out = paste(img, seams(img, Kept((Image.new("RGB", (32, 32), "white"),), _halves())))
    assert float(out[..., :12].min()) == 1.0 and float(out[..., 20:].max()) == 0.0


def test_pixels_next_to_kept_ones_are_the_inputs_where_the_decoder_drew_them_so() -> None:
    hard = torch.zeros(1, 1, 32, 32)
    hard[..., :8] = 1.0  # the left column of latent pixels kept (8 decoded pixels each)
    inp = torch.zeros(1, 3, 32, 32)
    inp[..., :20] = 1.0  # a white object reaching past the kept column to x = 20
    dec = inp.clone()
    dec[..., 16:, 8:20] = 1.0 - 0.9 * AGREE / 3**0.5  # near white: still the object
    dec[..., 24:, 8:20] = 0.0  # drawn otherwise: the model's
    out = grow(hard, inp, dec)
    assert bool((out[..., :24, :16] == 1).all())  # grown by one latent pixel where they agree
    assert not bool(out[..., 16:].any())  # no further, though they agree there too
    assert not bool(out[..., 24:, 8:].any())  # not where the decoder drew something else


def test_a_background_edit_keeps_an_objects_own_pixels_out_to_its_outline() -> None:
    which = torch.full((1, 1, 8, 8), -1)
    which[..., 2:6, 2:6] = 0  # the object's middle kept from image 1: pixels 16-47
    src = np.zeros((64, 64, 3), np.uint8)
    src[12:52, 12:52] = 255  # the object reaches 4 pixels past the kept latent pixels
    dec = torch.full((1, 3, 64, 64), 0.5)  # the new background
    dec[..., 12:52, 12:52] = 1.0 - 0.5 * AGREE / 3**0.5  # the object as decoded: near, not exact
    out = paste(dec, seams(dec, Kept((Image.fromarray(src),), which)))
    assert bool((out[0, :, 14:50, 14:50] == 1.0).all())  # the input's own pixels, rim too
    assert bool((out[0, :, 30, :10] == 0.5).all())  # the new background stays the model's


def test_an_old_background_near_the_new_one_is_not_pasted_back_around_a_kept_object() -> None:
    which = torch.full((1, 1, 8, 8), -1)
    which[..., 2:6, 2:6] = 0  # the object's middle kept: pixels 16-47
    src = torch.full((1, 3, 64, 64), 0.5)  # the old background
    src[..., 12:52, 12:52] = 1.0  # the object
    dec = src.clone()
    dec[..., :12, :] += 0.9 * AGREE / 3**0.5  # a new background near the old one
    dec[..., 52:, :] += 0.9 * AGREE / 3**0.5
    dec[..., :12] += 0.9 * AGREE / 3**0.5
    dec[..., 52:] += 0.9 * AGREE / 3**0.5
    out = grow(F.interpolate((which == 0).float(), size=(64, 64)), src, dec)
    assert bool((out[..., 12:52, 12:52] == 1).all())  # the object's own outline
    assert not bool(out[..., 8:12, 20:40].any())  # not the old background beside it
