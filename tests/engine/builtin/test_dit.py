from dataclasses import replace

import torch
import torch.nn.functional as F

from dreamserve.engine.builtin.dit import (
    DiT,
    DiTConfig,
    _matmul_attention,
    cos_sin,
    from_fine,
    grid_positions,
    rope_angles,
    rotate,
    shift_time,
    to_fine,
)
from dreamserve.engine.builtin.refine import Refiner

SMALL = DiTConfig(latent_ch=4, dim=32, depth=1, heads=2, mlp_ratio=2.0)


def _inputs(refs: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 5, generator=g)
    text = torch.randn(2, 6, 384, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    return (x, torch.tensor([0.3, 0.9]), text, mask) + tuple(
        torch.randn(2, 4, 3, 5, generator=g) for _ in range(refs)
    )


def _perturb(model: DiT) -> DiT:
    # adaLN-Zero starts every block at the identity; make the function non-trivial.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_old_configs_load_without_the_copy_path() -> None:
    d = SMALL.to_dict()
    del d["copy_input"], d["time_shift"], d["rope"]
    old = DiTConfig.from_dict(d)
    assert old.copy_input is False and old.time_shift == 1.5  # as the first model was sampled
    assert old.rope is False and old.copy_refs is False and old.copy_slots == 0
    assert DiTConfig().copy_input is True


def test_the_copy_path_feeds_image_one_to_the_target_tokens() -> None:
    torch.manual_seed(0)
    model = _perturb(DiT(SMALL))
    x, t, text, mask, ref = _inputs(1)
    with torch.no_grad():
        a = model(x, t, text, mask, [ref])
        # Same input tokens in the sequence, different copy-path input: the output changes.
        w = model.latent_in.weight.clone()
        model.latent_in.weight[:, 4:] = 0.0
        b = model(x, t, text, mask, [ref])
        model.latent_in.weight.copy_(w)
    assert a.shape == x.shape and not torch.allclose(a, b)


def test_copy_refs_gives_every_input_its_own_slot_in_the_target_tokens() -> None:
    torch.manual_seed(0)
    cfg = replace(SMALL, copy_refs=True)  # max_images 4: 3 slots
    model = _perturb(DiT(cfg))
    assert cfg.copy_slots == 3 and model.latent_in.in_features == 4 * 4
    x, t, text, mask, r1, r2 = _inputs(2)
    with torch.no_grad():
        a = model(x, t, text, mask, [r1, r2])
        # Image 2's slot (columns 8:12) carries it: zeroing that slot changes the output,
        # zeroing the empty third slot (no image 3 given) does not.
        w = model.latent_in.weight.clone()
        model.latent_in.weight[:, 12:] = 0.0
        same = model(x, t, text, mask, [r1, r2])
        model.latent_in.weight[:, 8:12] = 0.0
        b = model(x, t, text, mask, [r1, r2])
        model.latent_in.weight.copy_(w)
        # An input on another grid is seen only in the sequence: its slot stays empty.
        small = torch.randn(2, 4, 2, 2)
        c = model(x, t, text, mask, [r1, small])
        model.latent_in.weight[:, 8:] = 0.0
        d = model(x, t, text, mask, [r1, small])
    assert torch.allclose(a, same) and not torch.allclose(a, b) and torch.allclose(c, d)
    assert DiTConfig(copy_input=False, copy_refs=True).copy_slots == 0


def test_time_shift_moves_times_towards_noise_and_keeps_the_ends() -> None:
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    s = shift_time(t, 3.0)
    assert s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.75 and bool((s >= t).all())


def test_bf16_cpu_attention_matches_the_fused_kernel() -> None:
    # Under bf16 autocast on a CPU, attention runs as plain matmuls (dit._matmul_attention):
    # same function as scaled_dot_product_attention, padding masked out.
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 7, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(_matmul_attention(q, k, v, mask), want, atol=1e-5)
    model = _perturb(DiT(SMALL))
    x, t, text, tmask, ref = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t, text, tmask, [ref])
    assert torch.allclose(low.float(), model(x, t, text, tmask, [ref]), atol=0.05)


def test_fine_tokens_are_the_autoencoders_latent_pixels_two_by_two() -> None:
    cfg = DiTConfig(split=2)  # 128 = 8 AE channels x 4 x 4 per cell
    latent = torch.randn(1, 8, 24, 32)  # the AE's latent of a 96x128 px image
    cells = torch.nn.functional.pixel_unshuffle(latent, 4)  # (1, 128, 6, 8): as ae.encode
    fine = to_fine(cells, cfg)
    assert torch.equal(fine, torch.nn.functional.pixel_unshuffle(latent, 2))  # (1, 32, 12, 16)
    assert torch.equal(from_fine(fine, cfg), cells)
    assert to_fine(cells, DiTConfig()) is cells  # split 1: one token per cell


def test_a_fine_token_model_keeps_the_cell_interface() -> None:
    torch.manual_seed(0)
    cfg = DiTConfig(**{**SMALL.to_dict(), "latent_ch": 16, "patch": 4, "split": 2})
    model = _perturb(DiT(cfg))
    assert cfg.token_ch == 4 and model.ref_in is not None
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(2, 16, 3, 5, generator=g), torch.randn(2, 16, 3, 5, generator=g)
    text, mask = torch.randn(2, 6, 384, generator=g), torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        v = model(x, torch.tensor([0.3, 0.9]), text, mask, [ref])
        assert v.shape == x.shape
        # The fine tokens see the cell's sub-pixels: changing one latent pixel of one cell
        # changes the prediction there.
        x2 = x.clone()
        x2[:, 0, 1, 2] += 1.0
        assert not torch.allclose(model(x2, torch.tensor([0.3, 0.9]), text, mask, [ref]), v)


def test_rotary_scores_depend_only_on_the_offset_between_tokens() -> None:
    # What rotary positions are for: a query at p and a key at p' score the same as at p + d
    # and p' + d, so what a token learns about its neighbours holds wherever it sits.
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(p: tuple[float, float], p2: tuple[float, float]) -> float:
        rq = rotate(q, cos_sin(rope_angles(torch.tensor([p]), 16), q.dtype))
        rk = rotate(k, cos_sin(rope_angles(torch.tensor([p2]), 16), k.dtype))
        return float((rq * rk).sum())

    base = score((1.25, 2.75), (2.0, 3.5))
    assert abs(score((4.25, 0.75), (5.0, 1.5)) - base) < 1e-4
    assert abs(score((1.25, 2.75), (2.5, 3.5)) - base) > 1e-3  # another offset, another score


def test_rotary_angles_keep_norms_and_leave_text_at_the_origin_unturned() -> None:
    x = torch.randn(2, 2, 5, 16)
    pos = torch.cat([torch.zeros(1, 2), grid_positions(2, 2)])  # a text token, then a 2x2 grid
    y = rotate(x, cos_sin(rope_angles(pos, 16), x.dtype))
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, :, 0], x[:, :, 0])
    assert not torch.allclose(y[:, :, 1:], x[:, :, 1:])


def test_a_rotary_model_runs_with_references_and_at_zero_gain_is_the_flat_model() -> None:
    torch.manual_seed(0)
    cfg = DiTConfig(**{**SMALL.to_dict(), "dim": 64, "rope": True, "local": 3})
    model = _perturb(DiT(cfg))
    x, t, text, mask, ref = _inputs(1)
    refs = [ref, torch.randn(2, 4, 4, 4)]  # image 2 on another grid than the target's 3x5
    flat = DiT(DiTConfig(**{**cfg.to_dict(), "rope": False})).eval()
    _, unexpected = flat.load_state_dict(model.state_dict(), strict=False)
    assert unexpected == ["blocks.0.attn.rope_gain"]
    with torch.no_grad():
        v = model(x, t, text, mask, refs)
        assert v.shape == x.shape
        assert not torch.allclose(v, flat(x, t, text, mask, refs))
        model.blocks[0].attn.rope_gain.zero_()  # how surgery.add_rope grows it
        assert torch.allclose(model(x, t, text, mask, refs), flat(x, t, text, mask, refs))


def test_unturned_rotary_pairs_are_the_longest_wavelengths_and_match_the_same_everywhere() -> None:
    pos = grid_positions(3, 3)
    angles = rope_angles(pos, 32, unturned=0.5)  # 8 pairs per axis: x's 0-7, then y's 8-15
    for axis in (slice(0, 8), slice(8, 16)):
        a = angles[:, axis]
        assert (a[:, :4] != 0).any(dim=0).all()  # the four shortest wavelengths turn
        assert torch.equal(a[:, 4:], torch.zeros_like(a[:, 4:]))  # the four longest do not
    # A query's score against an unturned key (a text token at the origin) through the
    # unturned pairs is the same wherever the query is.
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    scores = rotate(q.expand(1, 1, 9, 32), cos_sin(angles, q.dtype)) * k
    free = torch.cat([scores[..., 8:16], scores[..., 24:32]], dim=-1).sum(-1)  # pairs 4-7, 12-15
    assert torch.allclose(free, free[..., :1].expand_as(free), atol=1e-5)
    assert torch.equal(rope_angles(pos, 32, unturned=1.0), torch.zeros(9, 16))


def test_a_refiner_grown_at_zero_is_the_model_it_was_grown_from() -> None:
    torch.manual_seed(0)
    cfg = DiTConfig(**{**SMALL.to_dict(), "latent_ch": 16, "patch": 4, "split": 2})
    plain = _perturb(DiT(cfg))
    refined = DiT(replace(cfg, refine=8)).eval()
    refined.load_state_dict(plain.state_dict(), strict=False)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 16, 3, 5, generator=g), torch.randn(1, 6, 384, generator=g)
    args = (torch.tensor([0.3]), text, torch.ones(1, 6, dtype=torch.bool))
    with torch.no_grad():
        assert torch.equal(refined(x, *args), plain(x, *args))  # its last convolution at zero
        assert refined.refine is not None
        torch.nn.init.normal_(refined.refine.convs[-1].weight, std=0.1)
        v = refined(x, *args)
    assert v.shape == x.shape and not torch.allclose(v, plain(x, *args))


def test_the_refiner_redraws_each_latent_pixel_from_its_neighbourhood() -> None:
    torch.manual_seed(0)
    head = Refiner(dim=32, token_ch=4, side=2, channels=8)  # fine tokens of 2x2 latent pixels
    torch.nn.init.normal_(head.convs[-1].weight, std=0.1)
    h, v = torch.randn(1, 3 * 5, 32), torch.randn(1, 4, 3, 5)
    x = torch.randn(1, 4, 3, 5)
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1.0  # latent pixel (0, 0)
    with torch.no_grad():
        a, b = head(h, x, v), head(h, x2, v)
    diff = (F.pixel_shuffle(a, 2) - F.pixel_shuffle(b, 2)).abs()[0, 0]  # (6, 10) latent pixels
    # Three 3x3 convolutions reach three latent pixels: (0, 0) moves only pixels within 3.
    assert diff[:4, :4].sum() > 0 and diff[4:].sum() == 0 and diff[:, 4:].sum() == 0
