"""The image models' training steps: the autoencoder (first stage of a new model), the
decoder alone (`--tune-decoder`), the upscaler. `train.py` runs them as timed stages."""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from dreamserve.engine.builtin.checkpoint import State
from dreamserve.engine.builtin.data import Pools, object_masks, render_batch, sample_batch
from dreamserve.engine.builtin.train_config import TrainConfig
from dreamserve.engine.builtin.upscaler import image_gradients


def optimize(
    opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float, max_norm: float | None = None
) -> None:
    """One step at learning rate `lr` (times a group's `lr_scale`), gradients clipped to
    `max_norm` first if given."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_norm is not None:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], max_norm)
    opt.step()


def cosine(frac: float) -> float:
    """Learning-rate factor over a time budget: 1 -> 0.1 along a half cosine."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int) -> None:
    """Move `ema` towards `model` after training step `step` (0 first): the decay ramps up
    to 0.998, so the average is not dominated by a random start."""
    decay = min(0.998, (1 + step) / (10 + step))
    with torch.no_grad():
        averaged: list[torch.Tensor] = list(ema.parameters())
        torch._foreach_lerp_(averaged, list(model.parameters()), 1 - decay)


def gradient_l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the two images' gradients: pays for edges as steep and as placed as the
    target's, which a pixel loss lets soften (the upscaler's and the tuned decoder's term)."""
    (oy, ox), (ty, tx) = image_gradients(out), image_gradients(target)
    return (oy - ty).abs().mean() + (ox - tx).abs().mean()


def ae_crops(
    state: State, rnd: random.Random, pools: Pools, kinds: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned random crops of one batch: (input 64 px, target 128 px at 2x, object mask of
    the target). Convs are local, so crops train them as whole images would, and cost less."""
    cfg = state.cfg
    scenes = sample_batch(pools, rnd.choice(kinds), cfg.ae_batch, rnd).target
    # One 256 px render serves both ends: the decoder's target and (2x2-averaged) the input.
    y = render_batch(scenes, 8, 8, scale=2).to(cfg.device)  # (B, 3, 256, 256)
    x = F.avg_pool2d(y, 2)  # (B, 3, 128, 128)
    i, j = rnd.randrange(5) * 16, rnd.randrange(5) * 16
    big = (slice(None), slice(None), slice(2 * i, 2 * i + 128), slice(2 * j, 2 * j + 128))
    objects = object_masks(scenes, 16, 16)[big].to(cfg.device)  # (B, 1, 128, 128)
    return x[:, :, i : i + 64, j : j + 64], y[big], objects


def ae_step(state: State, rnd: random.Random, pools: Pools, lr: float) -> float:
    """One AE step, encoder and decoder together (the first stage of a new model)."""
    x, y, _ = ae_crops(state, rnd, pools, ("t2i", "edit"))
    loss, parts = state.ae.loss(x, y)
    optimize(state.opt_ae, loss, lr)
    state.ae_step += 1
    return parts["mse"]


def decoder_kinds(cfg: TrainConfig, rnd: random.Random) -> tuple[str, ...]:
    """The batch kinds one decoder step draws from: with `decoder_focus`, half the time only
    `small` (data.Pools.small: small objects of the shapes its round trip loses)."""
    if cfg.decoder_focus and rnd.random() < 0.5:
        return ("small",)
    return ("t2i", "edit", "shape")


def decoder_step(state: State, rnd: random.Random, pools: Pools, lr: float) -> float:
    """One step of `--tune-decoder`: the decoder alone, the encoder frozen.

    The latents the DiT was trained on stay exactly what they were, so a trained transformer
    keeps working and draws through a better decoder. Why (MODEL_CARD.md, session 24): the
    first stage's 8 minutes left a decoder whose round trip of true scenes passed the
    checker's colour+shape test 73% of the time, a ceiling under the 95% target. Its loss
    weights object pixels (dilated by 2) 10x and adds L1 between image gradients, as the
    upscaler's does: thin rays, points and corners are a sliver of the pixels and all of
    what tells a sun from a circle.
    """
    x, y, objects = ae_crops(state, rnd, pools, decoder_kinds(state.cfg, rnd))
    with torch.no_grad():
        z = state.ae.encoder(x)
    out = state.ae.decoder(z)
    err = out - y
    w = 1.0 + 9.0 * F.max_pool2d(objects, 5, 1, 2)
    pixels = (w * (err.abs() + err.pow(2))).mean() / w.mean()
    loss = pixels + 0.5 * gradient_l1(out, y)
    # Clipped: a decoder grown to 3+2 blocks diverged at step ~700 unclipped (MSE 0.002 ->
    # 0.4, session 25) where gradient norms run 0.3-0.5; 1.0 only cuts the spikes.
    optimize(state.opt_ae, loss, lr, max_norm=1.0)
    state.dec_step += 1
    return err.pow(2).mean().item()


def sr_step(state: State, rnd: random.Random, pools: Pools, lr: float) -> float:
    """One upscaler step: a 128 px image to 512 px, against the scene rendered natively there.

    Most inputs are what the sampler hands over (the autoencoder's 2x decode, here of a 64 px
    render); a quarter are clean renders, whose edges sit exactly where the target's do, so
    the slope is also learned from edges the decoder did not blur or move. Loss: MSE plus
    L1 between the image gradients. MSE alone fits edges the decoder may have moved by
    softening them (its slope fell from 16 to 14 in 200 steps); the gradient term pays for
    edges as steep as the target's, and kept them 13% sharper at the same MSE.
    """
    cfg, dev = state.cfg, torch.device(state.cfg.device)
    scenes = sample_batch(pools, rnd.choice(("t2i", "edit")), cfg.sr_batch, rnd).target
    if rnd.random() < 0.75:
        with torch.no_grad():
            x = state.ae.decode(state.ae.encode(render_batch(scenes, 4, 4).to(dev)))  # 128 px
    else:
        x = render_batch(scenes, 8, 8).to(dev)
    y = (render_batch(scenes, 8, 8, scale=4).to(dev) + 1) / 2  # (B, 3, 512, 512)
    out = state.sr(((x + 1) / 2).clamp(0, 1), 512, 512)
    mse = F.mse_loss(out, y)
    loss = mse + 0.5 * gradient_l1(out, y)
    optimize(state.opt_sr, loss, lr)
    state.sr_step += 1
    return 4 * mse.item()  # in [-1, 1] units, as the AE's


@torch.no_grad()
def finish_ae(state: State, rnd: random.Random, pools: Pools) -> None:
    """Freeze the AE and set latent_scale so the DiT sees unit-variance latents."""
    scenes = sample_batch(pools, "t2i", 64, rnd).target
    z = state.ae.encoder(render_batch(scenes, 8, 8).to(state.cfg.device))
    state.ae.cfg.latent_scale = float(z.std())
    state.cfg.ae = state.ae.cfg
    state.ae_done = True
