"""Growing a trained DiT (or decoder) into a newer shape without starting over.

Each function returns a model that computes what the old one did (the copy path), or what it
did on smooth latents (fine tokens), so training continues from the old model's knowledge of
text, colour and layout instead of from noise. How the shipped model got each: MODEL_CARD.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import torch
from torch import nn

from dreamserve.engine.builtin.autoencoder import AutoEncoder
from dreamserve.engine.builtin.dit import DiT

M = TypeVar("M", bound=nn.Module)


def _load_grown(new: M, old: nn.Module, is_new: Callable[[str], bool]) -> M:
    """`new` with every weight of `old` loaded into it; the only parameters `old` may lack
    are the grown ones, which `is_new` names (they keep `new`'s initialisation)."""
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert not unexpected and all(is_new(k) for k in missing), (missing, unexpected)
    return new


def add_copy_path(old: DiT) -> DiT:
    """A copy-path DiT that computes exactly what `old` (built without one) computes.

    The new input columns start at zero, so training continues from the old model's function
    and grows the copy path from there.
    """
    if old.cfg.copy_input:
        return old
    return _widen_input(old, DiT(replace(old.cfg, copy_input=True)))


def add_ref_copies(old: DiT) -> DiT:
    """`old` (copying image 1) with copy slots for every input (DiTConfig.copy_refs), computing
    what `old` computes: the new slots' input columns start at zero."""
    if old.cfg.copy_refs:
        return old
    if not old.cfg.copy_input:
        raise ValueError("the model has no copy path to extend: add_copy_path first")
    return _widen_input(old, DiT(replace(old.cfg, copy_refs=True)))


def _widen_input(old: DiT, new: DiT) -> DiT:
    """Load `old` into `new`, whose target input layer takes more channels: the new columns
    (after the old ones) start at zero."""
    state = old.state_dict()
    w = state["latent_in.weight"]  # (D, C_old)
    extra = new.latent_in.in_features - w.shape[1]
    state["latent_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra)], dim=1)
    new.load_state_dict(state)
    return new


def split_tokens(old: DiT, split: int) -> DiT:
    """A DiT with `split` x `split` target tokens per cell, started from a one-token-per-cell one.

    Everything but the target's input and output layers is kept: the blocks see the same width
    and the same fractional positions. Input images keep the old input layer (`ref_in`), so
    they are seen exactly as before. A fine token's input weights are the old token's, summed
    over the cell's sub-tokens, and its output weights are the average: on a latent that is
    constant across a cell, each fine token starts as the old token, each output as the old
    output.
    """
    if old.cfg.split == split:
        return old
    if old.cfg.split != 1:
        raise ValueError(f"can only split a one-token-per-cell model, not split={old.cfg.split}")
    cfg = replace(old.cfg, split=split)
    new = DiT(cfg)
    state = old.state_dict()
    ch, q, D = cfg.latent_ch // cfg.patch**2, cfg.patch // split, cfg.dim
    w_in, groups = state.pop("latent_in.weight"), 1 + cfg.copy_slots  # own + copied inputs
    state["ref_in.weight"] = w_in[:, : cfg.latent_ch].clone()
    state["ref_in.bias"] = state["latent_in.bias"].clone()
    # Channel index c*patch^2 + i*patch + j, with i = sub-token row * q + a (and j alike).
    parts = w_in.view(D, groups, ch, split, q, split, q).sum(dim=(3, 5))  # (D, groups, ch, q, q)
    state["latent_in.weight"] = parts.reshape(D, groups * cfg.token_ch)
    w_out, b_out = state["out.weight"], state["out.bias"]  # (latent_ch, D), (latent_ch,)
    state["out.weight"] = w_out.view(ch, split, q, split, q, D).mean(dim=(1, 3)).reshape(-1, D)
    state["out.bias"] = b_out.view(ch, split, q, split, q).mean(dim=(1, 3)).reshape(-1)
    new.load_state_dict(state)
    return new


def add_local(old: DiT, kernel: int) -> DiT:
    """A DiT with each block's local convolution (dit.Block), computing what `old` computes.

    The convolutions are zero-initialised, so only they are new; everything else is loaded.
    """
    if old.cfg.local == kernel:
        return old
    if old.cfg.local:
        raise ValueError(f"the model already has {old.cfg.local}x{old.cfg.local} convolutions")
    return _load_grown(DiT(replace(old.cfg, local=kernel)), old, lambda k: ".local." in k)


def add_layout(old: DiT) -> DiT:
    """A DiT that reads layout plans (DiTConfig.layout, layout.py), computing what `old`
    computes: the plan's input layer starts at zero; everything else is loaded."""
    if old.cfg.layout:
        return old
    new = DiT(replace(old.cfg, layout=True))
    return _load_grown(new, old, lambda k: k.startswith("layout_in."))


def add_refiner(old: DiT, channels: int) -> DiT:
    """A DiT with the convolutional head over latent pixels (refine.py), computing what `old`
    computes: the head's last convolution starts at zero; everything else is loaded."""
    if old.cfg.refine:
        return old
    new = DiT(replace(old.cfg, refine=channels))
    return _load_grown(new, old, lambda k: k.startswith("refine."))


def add_rope(old: DiT, gain: float = 0.0) -> DiT:
    """A DiT with rotary positions in attention (DiTConfig.rope); everything else is loaded.

    At `gain` 0 every head's rotary gain starts at zero, so the new model computes what `old`
    computes and no query or key is turned until training turns them. Grown at zero they had
    not switched on after 150 steps (MODEL_CARD.md, session 7); at 1 they are on from the first
    step, as in a new model, and the rest of the trained model is kept.
    """
    if old.cfg.rope:
        return old
    new = _load_grown(DiT(replace(old.cfg, rope=True)), old, lambda k: k.endswith(".rope_gain"))
    with torch.no_grad():
        for name, p in new.named_parameters():
            if name.endswith(".rope_gain"):
                p.fill_(gain)
    return new


def unturn_pairs(model: DiT, share: float) -> DiT:
    """`model` with the longest-wavelength `share` of its rotary pairs left unturned
    (DiTConfig.rope_unturned). No weight changes: those pairs of every query and key stop
    turning with position, so the function changes where they had turned, and training goes
    on from there."""
    model.cfg = replace(model.cfg, rope_unturned=share)
    return model


def add_decoder_blocks(old: AutoEncoder, blocks: tuple[int, int]) -> AutoEncoder:
    """`old` with `blocks` residual blocks in its decoder's two stages (AEConfig.dec_blocks),
    computing what `old` computes: each new block's last convolution starts at zero, so it
    starts as the identity. The encoder, and so every latent a DiT was trained on, is kept."""
    have = old.cfg.dec_blocks
    if tuple(blocks) == tuple(have):
        return old
    if any(b < h for b, h in zip(blocks, have, strict=True)):
        raise ValueError(f"decoder blocks {blocks}: growing never removes any of {have}")
    new = AutoEncoder(replace(old.cfg, dec_blocks=tuple(blocks)))
    return _load_grown(new, old, lambda k: ".more" in k)
