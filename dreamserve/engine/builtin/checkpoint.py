"""Training state and its files: out/ckpt.pt (everything) and out/weights/ (what ships).

A checkpoint carries the full TrainConfig, both models, the DiT's EMA, both optimiser states
and the step counters. Resuming keeps what defines the model (its configs, the seed and
caption pools) from the checkpoint, and takes how to train now (schedule, batch sizes,
device, workers) from the named config, so a CPU run can continue on a GPU and back.
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.autoencoder import AEConfig, AutoEncoder
from dreamserve.engine.builtin.dit import DiT
from dreamserve.engine.builtin.surgery import (
    add_copy_path,
    add_decoder_blocks,
    add_layout,
    add_local,
    add_ref_copies,
    add_refiner,
    add_rope,
    split_tokens,
    unturn_pairs,
)
from dreamserve.engine.builtin.train_config import TrainConfig
from dreamserve.engine.builtin.upscaler import Upscaler

MODEL_FIELDS = ("seed", "ae", "sr", "dit", "pool_t2i", "pool_edit", "pool_ref")


@dataclass
class State:
    cfg: TrainConfig
    ae: AutoEncoder
    dit: DiT
    ema: DiT
    sr: Upscaler
    opt_ae: torch.optim.Optimizer
    opt_dit: torch.optim.Optimizer
    opt_sr: torch.optim.Optimizer
    ae_step: int = 0
    dec_step: int = 0  # decoder-only steps after the AE was frozen (image_steps.decoder_step)
    dit_step: int = 0
    sr_step: int = 0
    ae_done: bool = False
    sr_done: bool = False
    seconds: float = 0.0  # training wall time over all runs


def new_state(cfg: TrainConfig) -> State:
    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    ae, dit, sr = AutoEncoder(cfg.ae).to(dev), DiT(cfg.dit).to(dev), Upscaler(cfg.sr).to(dev)
    return State(
        cfg,
        ae,
        dit,
        copy.deepcopy(dit).requires_grad_(False),
        sr,
        _ae_optimizer(ae, cfg),
        _dit_optimizer(dit, cfg),
        torch.optim.AdamW(sr.parameters(), lr=cfg.sr_lr, weight_decay=0.0, fused=True),
    )


def _ae_optimizer(ae: AutoEncoder, cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused: the per-tensor Python loop of plain AdamW cost ~0.5 s a step on 2 cores
    return torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr, weight_decay=0.0, fused=True)


def _dit_optimizer(dit: DiT, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the DiT. The rotary gains (one scalar per head, dit.Attention) train at 10x
    the learning rate and without weight decay: grown from zero onto a trained model, they have
    to travel to ~1 within one run, where every other weight moves by small steps.
    With `cfg.train_only`, only the parameters under those names train, the rest frozen; a
    model that has none of them yet trains whole until `grow` gives them (and a new optimiser).
    """
    named = list(dit.named_parameters())
    only = set(cfg.under_train_only(n for n, _ in named))
    if only:
        for n, p in named:
            p.requires_grad_(n in only)
        named = [(n, p) for n, p in named if n in only]
    gains = [p for n, p in named if n.endswith(".rope_gain")]
    rest = [p for n, p in named if not n.endswith(".rope_gain")]
    groups: list[dict[str, Any]] = [{"params": rest}]
    if gains:
        groups.append({"params": gains, "lr_scale": 10.0, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.99), fused=True)


def resume_config(saved: TrainConfig, want: TrainConfig) -> TrainConfig:
    """The model as saved, trained the way `want` says."""
    return replace(want, **{k: getattr(saved, k) for k in MODEL_FIELDS})


def save(state: State, out: Path) -> None:
    blob = {
        "config": asdict(state.cfg),
        "ae": state.ae.state_dict(),
        "ae_cfg": state.ae.cfg.to_dict(),
        "dit": state.dit.state_dict(),
        "ema": state.ema.state_dict(),
        "sr": state.sr.state_dict(),
        "opt_ae": state.opt_ae.state_dict(),
        "opt_dit": state.opt_dit.state_dict(),
        "opt_sr": state.opt_sr.state_dict(),
        "counters": {
            "ae_step": state.ae_step,
            "dec_step": state.dec_step,
            "dit_step": state.dit_step,
            "sr_step": state.sr_step,
            "ae_done": state.ae_done,
            "sr_done": state.sr_done,
            "seconds": state.seconds,
        },
    }
    tmp = out / "ckpt.pt.tmp"
    torch.save(blob, tmp)
    tmp.replace(out / "ckpt.pt")  # atomic: a kill mid-save never leaves a torn checkpoint
    weights.export(
        weights.Models(state.ae, state.ema, state.sr, provenance(state)), out / "weights"
    )


def load(path: Path, want: TrainConfig | None = None) -> State:
    blob = torch.load(path, weights_only=False, map_location="cpu")
    cfg = TrainConfig.from_dict(blob["config"])
    cfg.ae = AEConfig.from_dict(blob["ae_cfg"])  # carries the measured latent_scale
    if want is not None:
        cfg = resume_config(cfg, want)
    state = new_state(cfg)
    state.ae.load_state_dict(blob["ae"])
    state.dit.load_state_dict(blob["dit"])
    state.ema.load_state_dict(blob["ema"])
    state.opt_ae.load_state_dict(blob["opt_ae"])
    state.opt_dit.load_state_dict(blob["opt_dit"])
    if "sr" in blob:  # checkpoints from before the trained upscaler train it on resuming
        state.sr.load_state_dict(blob["sr"])
        state.opt_sr.load_state_dict(blob["opt_sr"])
    for k, v in blob["counters"].items():
        setattr(state, k, v)
    return state


def from_package(want: TrainConfig) -> State:
    """Continue from the shipped weights: models only, counters restart from the recorded ones."""
    m = weights.load()
    meta = m.meta
    seed = int(meta.get("seed", want.seed))
    state = new_state(replace(want, ae=m.ae.cfg, dit=m.dit.cfg, sr=m.sr.cfg, seed=seed))
    state.ae.load_state_dict(m.ae.state_dict())
    state.dit.load_state_dict(m.dit.state_dict())
    state.ema.load_state_dict(m.dit.state_dict())
    state.sr.load_state_dict(m.sr.state_dict())
    state.ae_done = state.sr_done = True
    state.sr_step = int(meta.get("sr_steps", 0))
    state.ae_step, state.dit_step = int(meta.get("ae_steps", 0)), int(meta.get("dit_steps", 0))
    state.dec_step = int(meta.get("decoder_steps", 0))
    state.seconds = float(meta.get("train_seconds", 0.0))
    return state


def grow(state: State, want: TrainConfig, rope_gain: float = 0.0) -> State:
    """Bring a model from an older config up to `want`: time shift, copy path, fine tokens,
    local convolutions, rotary positions, copy slots for every input, layout plans, the
    refiner.

    A model trained unshifted continues with `want`'s time shift (and is sampled with it).
    A model without the copy path (DiTConfig.copy_input) gains it, a one-token-per-cell
    model is split into `want`'s fine tokens, and one without local convolutions, rotary
    positions, copy slots for every input, layout plans or a refiner gains them (surgery.py:
    each starts from the old function). What a model has and `want` lacks, it keeps: growing
    never removes what was trained.
    Rotary gains grown now start at `rope_gain` (surgery.add_rope: 0 keeps the function), and
    a rotary model takes `want`'s share of unturned pairs (surgery.unturn_pairs).
    The DiT's AdamW moments restart whenever a parameter was added or changed shape.
    """
    for c in (state.cfg.dit, state.dit.cfg, state.ema.cfg):
        c.time_shift = want.dit.time_shift
    have = state.dit.cfg
    copy_path = want.dit.copy_input and not have.copy_input
    local = bool(want.dit.local) and not have.local
    rope = want.dit.rope and not have.rope
    unturn = want.dit.rope and want.dit.rope_unturned != have.rope_unturned
    ref_copies = want.dit.copy_refs and not have.copy_refs
    layout = want.dit.layout and not have.layout
    refine = bool(want.dit.refine) and not have.refine
    changes = (copy_path, local, rope, unturn, ref_copies, layout, refine)
    if not any(changes) and want.dit.split == have.split:
        return state

    def grown(model: DiT) -> DiT:
        model = add_copy_path(model.cpu()) if copy_path else model.cpu()
        model = split_tokens(model, want.dit.split)
        model = add_local(model, want.dit.local) if local else model
        model = add_rope(model, rope_gain) if rope else model
        model = add_ref_copies(model) if ref_copies else model
        model = add_layout(model) if layout else model
        model = add_refiner(model, want.dit.refine) if refine else model
        return unturn_pairs(model, want.dit.rope_unturned) if unturn else model

    dev = torch.device(state.cfg.device)
    had = set(state.ema.state_dict())
    state.dit = grown(state.dit).to(dev)
    state.ema = grown(state.ema).to(dev).requires_grad_(False)
    # Parts grown with a random start (the refiner's) start the same in the EMA as in the
    # model, or the EMA would average toward them from an unrelated random start.
    new = {k: v for k, v in state.dit.state_dict().items() if k not in had}
    state.ema.load_state_dict(new, strict=False)
    state.cfg.dit = state.dit.cfg
    state.opt_dit = _dit_optimizer(state.dit, state.cfg)
    return state


def grow_decoder(state: State, blocks: tuple[int, int]) -> State:
    """The decoder grown to `blocks` residual blocks per stage (surgery.add_decoder_blocks),
    for `--tune-decoder` to train: the one-block decoder had stopped gaining (MODEL_CARD.md,
    session 25). The AE's AdamW moments restart with its new parameters."""
    grown = add_decoder_blocks(state.ae, blocks)  # built on the CPU, the weights copied in
    if grown is state.ae:
        return state
    state.ae = grown.to(torch.device(state.cfg.device))
    state.cfg.ae = state.ae.cfg
    state.opt_ae = _ae_optimizer(state.ae, state.cfg)
    return state


def new_dit(state: State, want: TrainConfig) -> State:
    """Keep the autoencoder and upscaler, start a new transformer of `want`'s config.

    For position machinery that is better learned from the start: a DiT trained from scratch
    with rotary positions drew shapes that one without them did not, while rotary gains grown
    onto the shipped model at 0 had not switched on after 150 steps (MODEL_CARD.md, session 7).
    The step counter and the training time restart with it, so
    the exported provenance describes the new transformer (the card keeps the autoencoder's
    and upscaler's own times).
    """
    torch.manual_seed(want.seed)
    dev = torch.device(state.cfg.device)
    state.cfg.dit = copy.deepcopy(want.dit)
    state.dit = DiT(state.cfg.dit).to(dev)
    state.ema = copy.deepcopy(state.dit).requires_grad_(False)
    state.opt_dit = _dit_optimizer(state.dit, state.cfg)
    state.dit_step, state.seconds = 0, 0.0
    return state


def provenance(state: State) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "ae_steps": state.ae_step,
        "decoder_steps": state.dec_step,
        "dit_steps": state.dit_step,
        "sr_steps": state.sr_step,
        "train_seconds": round(state.seconds, 1),
        "seed": state.cfg.seed,
        "commit": commit,
        "torch": torch.__version__,
        "threads": state.cfg.threads,
        "device": state.cfg.device,
    }
