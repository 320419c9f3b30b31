import copy
from dataclasses import replace

import pytest
import torch

from dreamserve.engine.builtin.autoencoder import AEConfig, AutoEncoder
from dreamserve.engine.builtin.dit import DiT, DiTConfig, to_fine
from dreamserve.engine.builtin.surgery import (
    add_copy_path,
    add_decoder_blocks,
    add_local,
    add_ref_copies,
    add_rope,
    split_tokens,
)

# 16 latent channels per cell: one AE channel pixel-unshuffled by a 4x4 patch.
CELLS = DiTConfig(latent_ch=16, patch=4, dim=32, depth=1, heads=2, mlp_ratio=2.0)


def _perturb(model: DiT) -> DiT:
    # adaLN-Zero starts every block (and the output) at zero; make the function non-trivial.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _text() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([0.3, 0.9])
    return t, torch.randn(2, 6, 384, generator=g), torch.ones(2, 6, dtype=torch.bool)


def test_adding_the_copy_path_keeps_the_models_function() -> None:
    torch.manual_seed(0)
    old = _perturb(DiT(DiTConfig(**{**CELLS.to_dict(), "copy_input": False})))
    new = add_copy_path(old).eval()
    assert new.cfg.copy_input and new.latent_in.in_features == 32
    t, text, mask = _text()
    x, ref = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        assert torch.allclose(old(x, t, text, mask, [ref]), new(x, t, text, mask, [ref]))
    assert add_copy_path(new) is new


def test_adding_copy_slots_for_every_input_keeps_the_function_and_they_then_train() -> None:
    torch.manual_seed(0)
    old = _perturb(DiT(replace(CELLS, split=2)))  # copies image 1 into 4-channel fine tokens
    new = add_ref_copies(old).eval()
    assert new.cfg.copy_refs and new.latent_in.in_features == 4 * (1 + 3)
    t, text, mask = _text()
    x, refs = torch.randn(2, 16, 3, 5), [torch.randn(2, 16, 3, 5) for _ in range(3)]
    with torch.no_grad():
        assert torch.allclose(old(x, t, text, mask, refs), new(x, t, text, mask, refs), atol=1e-6)
    # The new columns are zero, but not their gradient: image 2's slot starts learning.
    new.train()
    new(x, t, text, mask, refs).square().mean().backward()
    grad = new.latent_in.weight.grad
    assert grad is not None and grad[:, 8:16].abs().sum() > 0
    assert add_ref_copies(new) is new
    try:
        add_ref_copies(DiT(replace(CELLS, copy_input=False)))
    except ValueError as e:
        assert "no copy path" in str(e)
    else:
        raise AssertionError("copy slots need the copy path they extend")


def _cell_constant(b: int, gh: int, gw: int) -> torch.Tensor:
    """Cell latents whose 4x4 latent pixels are equal within each cell, per channel."""
    per_cell = torch.randn(b, 1, gh, gw)
    latent = torch.nn.functional.interpolate(per_cell, scale_factor=4, mode="nearest")
    return torch.nn.functional.pixel_unshuffle(latent, 4)  # (b, 16, gh, gw)


def test_splitting_starts_each_fine_token_as_its_cells_old_token() -> None:
    torch.manual_seed(0)
    old = _perturb(DiT(CELLS))
    new = split_tokens(old, 2).eval()
    assert new.cfg.split == 2 and new.out.out_features == 4 and new.latent_in.in_features == 8
    x, base = _cell_constant(2, 3, 5), _cell_constant(2, 3, 5)
    fine, fine_base = to_fine(x, new.cfg), to_fine(base, new.cfg)  # (2, 4, 6, 10)
    with torch.no_grad():
        cell_in = old.latent_in(torch.cat([x, base], 1).flatten(2).transpose(1, 2))
        fine_in = new.latent_in(torch.cat([fine, fine_base], 1).flatten(2).transpose(1, 2))
        # Every fine token of a cell embeds like the old cell token (input and copy path).
        per_cell = cell_in.transpose(1, 2).reshape(2, -1, 3, 5)
        want = per_cell.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        assert torch.allclose(fine_in.transpose(1, 2).reshape(2, -1, 6, 10), want, atol=1e-5)
        # A hidden state written out by the fine output layer gives each latent pixel the
        # old output averaged over the four sub-token positions that pixel can take.
        h = torch.randn(7, CELLS.dim)
        old_px = old.out(h).view(7, 1, 2, 2, 2, 2).mean(dim=(2, 4))  # (7, ch, a, b)
        assert torch.allclose(new.out(h).view(7, 1, 2, 2), old_px, atol=1e-5)
    # The reference images go through the old input layer unchanged.
    assert torch.equal(new.ref_in.weight, old.latent_in.weight[:, :16])  # type: ignore[union-attr]


def test_split_is_idempotent_and_refuses_a_resplit() -> None:
    new = split_tokens(DiT(CELLS), 2)
    assert split_tokens(new, 2) is new
    try:
        split_tokens(new, 4)
    except ValueError as e:
        assert "split=2" in str(e)
    else:
        raise AssertionError("re-splitting a split model should be refused")


def test_adding_local_convolutions_keeps_the_function_and_they_then_train() -> None:
    torch.manual_seed(0)
    old = _perturb(split_tokens(DiT(CELLS), 2))
    new = add_local(old, 3).eval()
    assert new.cfg.local == 3 and all(b.local is not None for b in new.blocks)
    t, text, mask = _text()
    x, ref = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        assert torch.allclose(old(x, t, text, mask, [ref]), new(x, t, text, mask, [ref]))
    # Zero weights still get a gradient: the convolution's input is the MLP's hidden state.
    new(x, t, text, mask, [ref]).pow(2).sum().backward()
    conv = new.blocks[0].local
    assert conv is not None and conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert add_local(new, 3) is new


def test_the_local_convolution_sees_neighbours_on_every_aspect_grid() -> None:
    torch.manual_seed(0)
    model = _perturb(DiT(DiTConfig(**{**CELLS.to_dict(), "split": 2, "local": 3})))
    t, text, mask = _text()
    for gh, gw in ((3, 5), (4, 4), (5, 2)):
        x = torch.randn(2, 16, gh, gw)
        with torch.no_grad():
            a = model(x, t, text, mask)
            poked = x.clone()
            poked[:, :, 0, 0] += 1.0  # one corner cell
            b = model(poked, t, text, mask)
            plain = copy.deepcopy(model)
            for block in plain.blocks:
                block.local = None
            c = plain(x, t, text, mask)
        assert a.shape == (2, 16, gh, gw) and not torch.allclose(a, b)
        assert not torch.allclose(a, c)  # the convolutions take part on this grid


def test_adding_rotary_positions_keeps_the_function_and_their_gains_then_train() -> None:
    torch.manual_seed(0)
    old = _perturb(split_tokens(DiT(CELLS), 2))
    new = add_rope(old).eval()
    assert new.cfg.rope
    t, text, mask = _text()
    x, ref = torch.randn(2, 16, 3, 5), torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        assert torch.allclose(old(x, t, text, mask, [ref]), new(x, t, text, mask, [ref]))
    # At zero gain the angles vanish, yet the gain still gets a gradient (d angle / d gain is
    # the position), so training can turn the rotation on.
    new(x, t, text, mask, [ref]).pow(2).sum().backward()
    gain = new.blocks[0].attn.rope_gain
    assert gain is not None and gain.grad is not None and gain.grad.abs().sum() > 0
    assert add_rope(new) is new


def test_rotary_positions_grown_at_gain_one_are_on_and_keep_the_other_weights() -> None:
    torch.manual_seed(0)
    old = _perturb(split_tokens(DiT(CELLS), 2))
    new = add_rope(old, gain=1.0).eval()
    gains = [b.attn.rope_gain for b in new.blocks]
    assert all(g is not None and torch.equal(g, torch.ones_like(g)) for g in gains)
    kept = {k: v for k, v in new.state_dict().items() if not k.endswith(".rope_gain")}
    assert all(torch.equal(v, old.state_dict()[k]) for k, v in kept.items())
    t, text, mask = _text()
    x = torch.randn(2, 16, 3, 5)
    with torch.no_grad():
        assert not torch.allclose(old(x, t, text, mask), new(x, t, text, mask), atol=1e-4)


def test_growing_the_decoder_keeps_the_function_and_the_new_blocks_then_train() -> None:
    torch.manual_seed(0)
    old = AutoEncoder(AEConfig(latent_ch=4, enc_ch=(8, 8), dec_ch=(8, 8), patch=1)).eval()
    with torch.no_grad():  # trained blocks have non-zero residuals: make res0 one of them
        old.decoder.res0.conv2.weight.normal_(0, 0.1)
    new = add_decoder_blocks(old, (3, 2)).eval()
    assert new.cfg.dec_blocks == (3, 2) and old.cfg.dec_blocks == (1, 0)
    assert len(new.decoder.more0) == 2 and len(new.decoder.more1) == 2
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = old.encode(x)
    assert torch.equal(z, new.encode(x))  # the encoder, so the DiT's latents, as they were
    with torch.no_grad():
        assert torch.allclose(old.decode(z), new.decode(z), atol=1e-6)
    # A new block's zeroed last convolution still gets a gradient (its input is not zero).
    new.decode(z).pow(2).sum().backward()
    grad = new.decoder.more1[0].conv2.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert add_decoder_blocks(new, (3, 2)) is new


def test_growing_the_decoder_never_removes_a_trained_block() -> None:
    grown = AutoEncoder(AEConfig(latent_ch=4, enc_ch=(8, 8), dec_ch=(8, 8), dec_blocks=(2, 1)))
    with pytest.raises(ValueError, match="never removes"):
        add_decoder_blocks(grown, (1, 1))
    with pytest.raises(ValueError, match="two counts"):
        AutoEncoder(AEConfig(dec_blocks=(0, 1)))
