"""`dreamserve train`: autoencoder first (short), then the DiT with flow matching; resumable.

Checkpoints (out/ckpt.pt) carry the full TrainConfig, both models, the DiT's EMA, the optimiser
states and the step counters; every checkpoint is also exported to out/weights/ in the shipped
format. `--resume` continues from out/ckpt.pt, or, when there is none, from the weights shipped
in the package (models only: optimiser state and step counters are not shipped).
"""

from __future__ import annotations

import copy
import json
import math
import random
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.autoencoder import AEConfig, AutoEncoder
from dreamserve.engine.builtin.data import GRIDS, Pools, build_pools, render_batch, sample_batch
from dreamserve.engine.builtin.dit import DiT, DiTConfig, add_copy_path


@dataclass
class TrainConfig:
    seed: int = 1234
    ae: AEConfig = field(default_factory=AEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    ae_minutes: float = 8.0
    ae_batch: int = 24
    ae_lr: float = 2e-3
    ae_max_steps: int = 10**9
    pool_t2i: int = 9000
    pool_edit: int = 4500
    pool_ref: int = 1500
    mix: tuple[float, float, float] = (0.5, 0.32, 0.18)  # t2i, edit, reference
    batch: tuple[int, int, int] = (32, 24, 16)
    lr: float = 5e-4
    warmup: int = 50
    dit_max_steps: int = 10**9
    text_drop: float = 0.1
    ckpt_minutes: float = 4.0
    threads: int = 2

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        kw = dict(d)
        kw["ae"] = AEConfig.from_dict(kw["ae"])
        kw["dit"] = DiTConfig.from_dict(kw["dit"])
        kw["mix"], kw["batch"] = tuple(kw["mix"]), tuple(kw["batch"])
        return cls(**kw)


CONFIGS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    # For tests: trains a few steps of a toy-sized model in seconds.
    "tiny": TrainConfig(
        ae=AEConfig(latent_ch=4, enc_ch=(8, 8, 8, 8), dec_ch=(8, 8, 8, 8), patch=1),
        dit=DiTConfig(latent_ch=4, dim=32, depth=1, heads=2, mlp_ratio=2.0),
        ae_batch=2,
        ae_max_steps=2,
        pool_t2i=12,
        pool_edit=8,
        pool_ref=6,
        batch=(3, 2, 2),
        dit_max_steps=4,
        warmup=2,
    ),
}


@dataclass
class State:
    cfg: TrainConfig
    ae: AutoEncoder
    dit: DiT
    ema: DiT
    opt_ae: torch.optim.Optimizer
    opt_dit: torch.optim.Optimizer
    ae_step: int = 0
    dit_step: int = 0
    ae_done: bool = False
    seconds: float = 0.0  # training wall time over all runs


def new_state(cfg: TrainConfig) -> State:
    torch.manual_seed(cfg.seed)
    ae, dit = AutoEncoder(cfg.ae), DiT(cfg.dit)
    return State(
        cfg,
        ae,
        dit,
        copy.deepcopy(dit).requires_grad_(False),
        # fused: the per-tensor Python loop of plain AdamW cost ~0.5 s a step on 2 cores
        torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr, weight_decay=0.0, fused=True),
        _dit_optimizer(dit, cfg),
    )


def _dit_optimizer(dit: DiT, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        dit.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.99), fused=True
    )


def grow(state: State, want: TrainConfig) -> State:
    """Resuming a model from before the copy path (DiTConfig.copy_input) adds it.

    The new inputs start at zero, so the grown model computes what the old one did; the DiT's
    AdamW moments restart because a parameter changed shape.
    """
    if not want.dit.copy_input or state.cfg.dit.copy_input:
        return state
    state.dit = add_copy_path(state.dit)
    state.ema = add_copy_path(state.ema).requires_grad_(False)
    state.cfg.dit = state.dit.cfg
    state.opt_dit = _dit_optimizer(state.dit, state.cfg)
    return state


def save(state: State, out: Path) -> None:
    blob = {
        "config": asdict(state.cfg),
        "ae": state.ae.state_dict(),
        "ae_cfg": state.ae.cfg.to_dict(),
        "dit": state.dit.state_dict(),
        "ema": state.ema.state_dict(),
        "opt_ae": state.opt_ae.state_dict(),
        "opt_dit": state.opt_dit.state_dict(),
        "counters": {
            "ae_step": state.ae_step,
            "dit_step": state.dit_step,
            "ae_done": state.ae_done,
            "seconds": state.seconds,
        },
    }
    tmp = out / "ckpt.pt.tmp"
    torch.save(blob, tmp)
    tmp.replace(out / "ckpt.pt")  # atomic: a kill mid-save never leaves a torn checkpoint
    weights.export(state.ae, state.ema, provenance(state), out / "weights")


def load(path: Path) -> State:
    blob = torch.load(path, weights_only=False)
    cfg = TrainConfig.from_dict(blob["config"])
    cfg.ae = AEConfig.from_dict(blob["ae_cfg"])  # carries the measured latent_scale
    state = new_state(cfg)
    state.ae.load_state_dict(blob["ae"])
    state.dit.load_state_dict(blob["dit"])
    state.ema.load_state_dict(blob["ema"])
    state.opt_ae.load_state_dict(blob["opt_ae"])
    state.opt_dit.load_state_dict(blob["opt_dit"])
    for k, v in blob["counters"].items():
        setattr(state, k, v)
    return state


def from_package(cfg: TrainConfig) -> State:
    """Continue from the shipped weights: models only, counters restart from the recorded ones."""
    ae, dit, meta = weights.load()
    cfg.ae, cfg.dit = ae.cfg, dit.cfg
    state = new_state(cfg)
    state.ae.load_state_dict(ae.state_dict())
    state.dit.load_state_dict(dit.state_dict())
    state.ema.load_state_dict(dit.state_dict())
    state.ae_done = True
    state.ae_step, state.dit_step = int(meta.get("ae_steps", 0)), int(meta.get("dit_steps", 0))
    state.seconds = float(meta.get("train_seconds", 0.0))
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
        "dit_steps": state.dit_step,
        "train_seconds": round(state.seconds, 1),
        "seed": state.cfg.seed,
        "commit": commit,
        "torch": torch.__version__,
        "threads": state.cfg.threads,
    }


def ae_step(state: State, rnd: random.Random, pools: Pools, lr: float) -> float:
    """One AE step on aligned random crops (64 px in, 128 px out): convs are local, crops cheap."""
    cfg = state.cfg
    scenes = sample_batch(pools, rnd.choice(("t2i", "edit")), cfg.ae_batch, rnd).target
    # One 256 px render serves both ends: the decoder's target and (2x2-averaged) the input.
    y = render_batch(scenes, 8, 8, scale=2)  # (B, 3, 256, 256)
    x = F.avg_pool2d(y, 2)  # (B, 3, 128, 128)
    i, j = rnd.randrange(5) * 16, rnd.randrange(5) * 16
    loss, parts = state.ae.loss(
        x[:, :, i : i + 64, j : j + 64], y[:, :, 2 * i : 2 * i + 128, 2 * j : 2 * j + 128]
    )
    for g in state.opt_ae.param_groups:
        g["lr"] = lr
    state.opt_ae.zero_grad(set_to_none=True)
    loss.backward()
    state.opt_ae.step()
    state.ae_step += 1
    return parts["mse"]


@torch.no_grad()
def finish_ae(state: State, rnd: random.Random, pools: Pools) -> None:
    """Freeze the AE and set latent_scale so the DiT sees unit-variance latents."""
    scenes = sample_batch(pools, "t2i", 64, rnd).target
    z = state.ae.encoder(render_batch(scenes, 8, 8))
    state.ae.cfg.latent_scale = float(z.std())
    state.cfg.ae = state.ae.cfg
    state.ae_done = True


def dit_step(state: State, rnd: random.Random, pools: Pools, lr: float) -> tuple[str, float, int]:
    cfg = state.cfg
    k = rnd.choices(range(3), weights=cfg.mix)[0]
    kind = ("t2i", "edit", "ref")[k]
    name = "1:1" if rnd.random() < 0.5 else rnd.choice(list(GRIDS))
    gw, gh = GRIDS[name]
    batch = sample_batch(pools, kind, cfg.batch[k], rnd)
    with torch.no_grad():
        x0 = state.ae.encode(render_batch(batch.target, gw, gh))  # (B, C, gh, gw)
        refs = [state.ae.encode(render_batch(slot, gw, gh)) for slot in batch.inputs]
    B = x0.shape[0]
    text, mask = pools.text_batch(batch.texts)
    drop = torch.rand(B) < cfg.text_drop  # classifier-free guidance: learn the no-prompt velocity
    text[drop] = 0.0
    mask[drop] = False
    mask[drop, 0] = True
    t = torch.sigmoid(torch.randn(B))  # logit-normal: most samples at mid noise levels
    noise = torch.randn_like(x0)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    v = state.dit(xt, t, text, mask, refs)
    loss = F.mse_loss(v, noise - x0)
    for g in state.opt_dit.param_groups:
        g["lr"] = lr
    state.opt_dit.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(state.dit.parameters(), 1.0)
    state.opt_dit.step()
    decay = min(0.998, (1 + state.dit_step) / (10 + state.dit_step))
    with torch.no_grad():
        torch._foreach_lerp_(list(state.ema.parameters()), list(state.dit.parameters()), 1 - decay)
    state.dit_step += 1
    return kind, loss.item(), B


def _cosine(frac: float) -> float:
    """Learning-rate factor over a time budget: 1 -> 0.1 along a half cosine."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def run(state: State, out: Path, max_minutes: float | None, log: Any = print) -> None:
    cfg = state.cfg
    torch.set_num_threads(cfg.threads)
    rnd = random.Random(cfg.seed + state.ae_step + state.dit_step)
    t_start = time.monotonic()
    budget = (max_minutes or 1e9) * 60
    pools = build_pools(cfg.seed, cfg.pool_t2i, cfg.pool_edit, cfg.pool_ref, out / "cache", log)
    last_ckpt, last_log = time.monotonic(), time.monotonic()
    tick = time.monotonic()

    def account() -> None:
        nonlocal tick
        now = time.monotonic()
        state.seconds += now - tick
        tick = now

    if not state.ae_done:
        ae_secs = min(cfg.ae_minutes * 60, budget * 0.5)
        ae_start = time.monotonic()
        n = 0
        while time.monotonic() < ae_start + ae_secs and n < cfg.ae_max_steps:
            lr = (
                cfg.ae_lr
                * min(1.0, (n + 1) / 20)
                * _cosine((time.monotonic() - ae_start) / ae_secs)
            )
            mse = ae_step(state, rnd, pools, lr)
            n += 1
            if time.monotonic() - last_log > 30:
                db = 10 * math.log10(4 / max(mse, 1e-10))
                log(f"ae step {state.ae_step} mse {mse:.5f} psnr~{db:.1f}dB")
                last_log = time.monotonic()
        finish_ae(state, rnd, pools)
        account()
        save(state, out)
        log(f"ae done after {state.ae_step} steps, latent_scale {state.ae.cfg.latent_scale:.3f}")
    dit_start, n, samples, losses = time.monotonic(), 0, 0, {"t2i": 0.0, "edit": 0.0, "ref": 0.0}
    dit_budget = max(budget - (dit_start - t_start), 1.0)
    while time.monotonic() - t_start < budget and n < cfg.dit_max_steps:
        frac = (time.monotonic() - dit_start) / dit_budget
        lr = cfg.lr * min(1.0, (n + 1) / cfg.warmup) * _cosine(frac)
        kind, loss, b = dit_step(state, rnd, pools, lr)
        n, samples = n + 1, samples + b
        losses[kind] = 0.9 * losses[kind] + 0.1 * loss if losses[kind] else loss
        if time.monotonic() - last_log > 30:
            rate = samples / (time.monotonic() - dit_start)
            parts = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
            log(f"dit step {state.dit_step} lr {lr:.2e} loss {parts} | {rate:.1f} samples/s")
            last_log = time.monotonic()
        if time.monotonic() - last_ckpt > cfg.ckpt_minutes * 60:
            account()
            save(state, out)
            last_ckpt = time.monotonic()
    account()
    save(state, out)
    minutes = state.seconds / 60
    log(f"done: ae {state.ae_step} steps, dit {state.dit_step} steps, {minutes:.1f} min in all")


def main(
    out: Path, config: str = "default", resume: bool = False, max_minutes: float | None = None
) -> int:
    out.mkdir(parents=True, exist_ok=True)
    if config not in CONFIGS:
        print(f"unknown config {config!r}; choose one of {', '.join(CONFIGS)}")
        return 2
    ckpt = out / "ckpt.pt"
    want = copy.deepcopy(CONFIGS[config])
    if resume and ckpt.exists():
        state = grow(load(ckpt), want)
    elif resume and weights.available():
        state = grow(from_package(copy.deepcopy(want)), want)
    else:
        state = new_state(want)
    (out / "config.json").write_text(json.dumps(asdict(state.cfg), indent=2) + "\n")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    run(state, out, max_minutes, log)
    return 0
