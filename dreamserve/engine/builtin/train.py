"""`dreamserve train`: the autoencoder, then the upscaler (both short), then the DiT; resumable.

Every checkpoint (checkpoint.py) is also exported to out/weights/ in the shipped format.
`--resume` continues from out/ckpt.pt, or, when there is none, from the weights shipped in the
package (models only: optimiser state is not shipped). Named configs: train_config.py.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.checkpoint import (
    State,
    from_package,
    grow,
    grow_decoder,
    load,
    new_dit,
    new_state,
    save,
)
from dreamserve.engine.builtin.data import Pools, build_pools
from dreamserve.engine.builtin.dit import DiT, shift_time
from dreamserve.engine.builtin.image_steps import (
    ae_step,
    cosine,
    decoder_step,
    ema_update,
    finish_ae,
    optimize,
    sr_step,
)
from dreamserve.engine.builtin.layout import layout_map
from dreamserve.engine.builtin.stream import Rendered, batches
from dreamserve.engine.builtin.train_config import CONFIGS, TrainConfig

Log = Callable[[str], None]


def flow_times(n: int, shift: float, uniform: float, dev: torch.device) -> torch.Tensor:
    """Shifted logit-normal times (DiTConfig.time_shift), a `uniform` share drawn uniformly."""
    t = shift_time(torch.sigmoid(torch.randn(n, device=dev)), shift)
    flat = torch.rand(n, device=dev)
    return torch.where(torch.rand(n, device=dev) < uniform, flat, t)


def dit_step(state: State, batch: Rendered, pools: Pools, lr: float) -> float:
    cfg, dev = state.cfg, torch.device(state.cfg.device)
    with torch.no_grad():
        x0 = state.ae.encode(batch.target.to(dev, non_blocking=True))  # (B, C, gh, gw)
        refs = [state.ae.encode(x.to(dev, non_blocking=True)) for x in batch.inputs]
    text, mask = (a.to(dev) for a in pools.text_batch(batch.texts))
    plans = plan_maps(cfg, batch, pools, x0)
    loss = flow_loss(state.dit, cfg, x0, (text, mask), refs, batch.objects.to(dev), layout=plans)
    optimize(state.opt_dit, loss, lr, max_norm=1.0)
    ema_update(state.ema, state.dit, state.dit_step)
    state.dit_step += 1
    return loss.item()


def plan_maps(
    cfg: TrainConfig, batch: Rendered, pools: Pools, x0: torch.Tensor
) -> torch.Tensor | None:
    """Layout plans (layout.py) of the target scenes for `cfg.layout_share` of a text-to-image
    batch's samples, on the DiT's fine grid; the other samples get none (an all-zero map, as
    for a prompt the planner cannot read), and so do edit and reference batches."""
    if not cfg.dit.layout or batch.plans is None:
        return None
    split = cfg.dit.split
    maps = layout_map(batch.plans, (x0.shape[3] * split, x0.shape[2] * split), pools.phrases)
    keep = torch.rand(len(batch.plans)) < cfg.layout_share
    return (maps * keep[:, None, None, None]).to(x0.device)


def flow_loss(
    dit: DiT,
    cfg: TrainConfig,
    x0: torch.Tensor,
    text: tuple[torch.Tensor, torch.Tensor],
    refs: list[torch.Tensor],
    objects: torch.Tensor,
    t: torch.Tensor | None = None,
    layout: torch.Tensor | None = None,
) -> torch.Tensor:
    """The flow-matching loss of one batch: x0 (B, C, gh, gw) clean latents, text (states,
    mask), refs the input images' latents, objects (B, 1, 16gh, 16gw) masks, t (B,) flow
    times (default: `flow_times` of the config), layout (B, LAYOUT_DIM, fine grid) plans or
    None. Drops `cfg.text_drop` of the prompts (in place), and their plans with them, so the
    no-prompt velocity is learned for CFG."""
    B, dev = x0.shape[0], x0.device
    states, mask = text
    drop = torch.rand(B, device=dev) < cfg.text_drop
    states[drop] = 0.0
    mask[drop] = False
    mask[drop, 0] = True
    if layout is not None:
        layout[drop] = 0.0
    if t is None:
        t = flow_times(B, cfg.dit.time_shift, cfg.t_uniform, dev)
    noise = torch.randn_like(x0)
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * noise
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast_bf16(cfg)):
        v = dit(xt, t, states, mask, refs, layout)
    return dit_loss(v.float() - (noise - x0), objects, cfg)


def dit_loss(err: torch.Tensor, objects: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Velocity MSE with the latent pixels on objects weighted `object_weight` times, those on
    an object's outline `edge_weight` times when that is set.

    err: (B, latent_ch, gh, gw) cells; objects: (B, 1, 16gh, 16gw) masks at the image's pixels.
    Why: objects are ~6% of a scene and what separates one shape from another ~1%, so with a
    plain MSE the model learned colour, size, place and count and drew one blob for every
    shape word (the shape probe of `dreamserve eval`, sessions 3 and 4). The weights are
    normalised per batch, so the loss keeps its scale.
    """
    p = cfg.dit.patch  # latent pixels per cell side
    err = F.pixel_shuffle(err, p)  # (B, ch, p*gh, p*gw): the autoencoder's latent pixels
    k = objects.shape[-1] // err.shape[-1]  # image pixels per latent pixel side
    on = F.max_pool2d(objects, k)  # any object pixel in it
    w = 1.0 + (cfg.object_weight - 1.0) * on  # (B, 1, p*gh, p*gw)
    if cfg.edge_weight > 0:
        # The outline: latent pixels holding both object and background (a flower's petals
        # and a hexagon's corners are all that tells them from a circle).
        inside = -F.max_pool2d(-objects, k)
        w = w + (cfg.edge_weight - cfg.object_weight) * (on - inside)
    return (w * err.pow(2)).mean() / w.mean()


@functools.cache
def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16); elsewhere it is emulated
    and slower than fp32. False where the flags cannot be read."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_bf16(cfg: TrainConfig) -> bool:
    """TrainConfig.bf16, where the device does bf16 matmuls fast."""
    return cfg.bf16 and (cfg.device.startswith("cuda") or cpu_has_bf16())


class Clock:
    """Training wall time: the budget of this run and the total carried in the checkpoint."""

    def __init__(self, state: State, max_minutes: float | None) -> None:
        self.state, self.start, self.tick = state, time.monotonic(), time.monotonic()
        self.budget = (max_minutes or 1e9) * 60

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def account(self) -> None:
        now = time.monotonic()
        self.state.seconds += now - self.tick
        self.tick = now


StepFn = Callable[[State, random.Random, Pools, float], float]


def train_stage(
    name: str,
    step: StepFn,
    state: State,
    pools: Pools,
    rnd: random.Random,
    limits: tuple[float, int, float],
    log: Log,
) -> None:
    """A short stage (autoencoder, upscaler): warm-up, then cosine decay over its own time.

    limits: (seconds, max steps, peak learning rate). Logs MSE as PSNR (images span [-1, 1]).
    """
    secs, max_steps, peak = limits
    start, last_log, n = time.monotonic(), 0.0, 0
    while time.monotonic() < start + secs and n < max_steps:
        frac = (time.monotonic() - start) / secs
        mse = step(state, rnd, pools, peak * min(1.0, (n + 1) / 20) * cosine(frac))
        n += 1
        if time.monotonic() - last_log > 30:
            db = 10 * math.log10(4 / max(mse, 1e-10))  # peak-to-peak 2
            log(f"{name} step {n} mse {mse:.5f} psnr~{db:.1f}dB")
            last_log = time.monotonic()


def train_ae(state: State, pools: Pools, clock: Clock, rnd: random.Random, log: Log) -> None:
    cfg = state.cfg
    secs = min(cfg.ae_minutes * 60, clock.budget * 0.5)
    train_stage("ae", ae_step, state, pools, rnd, (secs, cfg.ae_max_steps, cfg.ae_lr), log)
    finish_ae(state, rnd, pools)
    clock.account()
    log(f"ae done after {state.ae_step} steps, latent_scale {state.ae.cfg.latent_scale:.3f}")


def train_decoder(
    state: State, pools: Pools, clock: Clock, minutes: float, rnd: random.Random, log: Log
) -> None:
    """`--tune-decoder`: the decoder alone for `minutes`, then the upscaler again (it learned
    the old decoder's output) before the DiT goes on with what is left of the budget."""
    cfg = state.cfg
    secs = min(minutes * 60, max(clock.left(), 1.0))
    # A quarter of the first stage's peak: the decoder is trained already, this refines it.
    # Session 24 tuned at half; a grown decoder diverged there (MODEL_CARD.md, session 25).
    train_stage(
        "decoder", decoder_step, state, pools, rnd, (secs, cfg.ae_max_steps, cfg.ae_lr / 4), log
    )
    state.sr_done = False
    clock.account()
    log(f"decoder tuned for {state.dec_step} steps in all, encoder unchanged")


def train_sr(state: State, pools: Pools, clock: Clock, rnd: random.Random, log: Log) -> None:
    cfg = state.cfg
    secs = min(cfg.sr_minutes * 60, max(clock.left(), 1.0))
    train_stage("upscaler", sr_step, state, pools, rnd, (secs, cfg.sr_max_steps, cfg.sr_lr), log)
    state.sr_done = True
    clock.account()
    log(f"upscaler done after {state.sr_step} steps")


def train_dit(state: State, pools: Pools, clock: Clock, out: Path, log: Log) -> None:
    cfg = state.cfg
    stream = batches(pools, cfg.mix, cfg.batch, cfg.seed + state.dit_step, cfg.workers)
    budget = max(clock.left(), 1.0)
    start, n, samples = time.monotonic(), 0, 0
    last_ckpt = last_log = time.monotonic()
    losses: dict[str, float] = {}
    bar = tqdm(total=round(budget / 60, 1), unit="min", desc="dit", disable=None, leave=False)
    while clock.left() > 0 and n < cfg.dit_max_steps:
        frac = (time.monotonic() - start) / budget
        lr = cfg.lr * min(1.0, (n + 1) / cfg.warmup) * cosine(frac)
        batch = next(stream)
        loss = dit_step(state, batch, pools, lr)
        n, samples = n + 1, samples + len(batch.texts)
        losses[batch.kind] = 0.9 * losses.get(batch.kind, loss) + 0.1 * loss
        if time.monotonic() - last_log > 30:
            rate = samples / (time.monotonic() - start)
            parts = " ".join(f"{k} {v:.4f}" for k, v in sorted(losses.items()))
            log(f"dit step {state.dit_step} lr {lr:.2e} loss {parts} | {rate:.1f} samples/s")
            bar.update(round((time.monotonic() - start) / 60, 1) - bar.n)
            last_log = time.monotonic()
        if time.monotonic() - last_ckpt > cfg.ckpt_minutes * 60:
            clock.account()
            save(state, out)
            last_ckpt = time.monotonic()
    bar.close()


def run(
    state: State, out: Path, max_minutes: float | None, log: Log = print, tune_decoder: float = 0
) -> None:
    cfg = state.cfg
    torch.set_num_threads(cfg.threads)
    clock = Clock(state, max_minutes)
    pools = build_pools(cfg.seed, cfg.pool_t2i, cfg.pool_edit, cfg.pool_ref, out / "cache", log)
    pools = replace(pools, focus=cfg.shape_focus, small_focus=cfg.decoder_focus)
    log(f"training on {cfg.device}, DiT matmuls in {'bf16' if autocast_bf16(cfg) else 'fp32'}")
    if not state.ae_done:
        train_ae(state, pools, clock, random.Random(cfg.seed + state.ae_step), log)
        save(state, out)
    if tune_decoder > 0:
        rnd = random.Random(cfg.seed + state.dec_step)
        train_decoder(state, pools, clock, tune_decoder, rnd, log)
        save(state, out)
    if not state.sr_done:
        train_sr(state, pools, clock, random.Random(cfg.seed + 1 + state.sr_step), log)
        save(state, out)
    train_dit(state, pools, clock, out, log)
    clock.account()
    save(state, out)
    minutes = state.seconds / 60
    steps = f"ae {state.ae_step} (+ decoder {state.dec_step}), upscaler {state.sr_step}, "
    steps += f"dit {state.dit_step}"
    log(f"done: {steps} steps, {minutes:.1f} min in all")


def main(
    out: Path,
    config: str = "default",
    resume: bool = False,
    max_minutes: float | None = None,
    fresh_dit: bool = False,
    rope_gain: float = 0.0,
    lr: float | None = None,
    tune_decoder: float = 0.0,
    decoder_blocks: tuple[int, int] | None = None,
) -> int:
    """`fresh_dit`: keep the autoencoder and upscaler that resuming would (out/ckpt.pt, else
    the shipped ones) and train a new transformer (checkpoint.new_dit). `rope_gain`: where
    rotary gains grown onto a model without them start (checkpoint.grow). `lr`: the DiT's peak
    learning rate instead of the config's; a continuation of a trained model (MODEL_CARD.md,
    session 11) can lose more than it gains by re-warming to the full one. `tune_decoder`:
    minutes of `decoder_step` (then the upscaler again) before the DiT's share of the run.
    `decoder_blocks`: grow the decoder to that many residual blocks per stage first
    (checkpoint.grow_decoder); only with `tune_decoder`, which trains them."""
    if config not in CONFIGS:
        print(f"unknown config {config!r}; choose one of {', '.join(CONFIGS)}")
        return 2
    if decoder_blocks is not None and not tune_decoder > 0:
        print("--decoder-blocks grows the decoder for --tune-decoder to train: give both")
        return 2
    if lr is not None and not 0 < lr <= 1e-2:
        print(f"--lr {lr:g}: the peak learning rate must be above 0 and at most 1e-2")
        return 2
    want = copy.deepcopy(CONFIGS[config])
    want.lr = want.lr if lr is None else lr
    if want.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"config {config!r} trains on {want.device}, and torch sees no CUDA device here")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "ckpt.pt"
    reuse = resume or fresh_dit  # a new transformer still reuses the autoencoder and upscaler
    if reuse and ckpt.exists():
        state = load(ckpt, want)
    elif reuse and weights.available():
        state = from_package(want)
    else:
        state = new_state(want)
    state = new_dit(state, want) if fresh_dit else grow(state, want, rope_gain)
    names = [n for n, _ in state.dit.named_parameters()]
    if want.train_only and not want.under_train_only(names):
        print(f"config {config!r} trains only {want.train_only}, which this DiT does not have")
        return 2
    if decoder_blocks is not None:
        try:
            state = grow_decoder(state, decoder_blocks)
        except ValueError as e:
            print(f"--decoder-blocks: {e}")
            return 2
    (out / "config.json").write_text(json.dumps(asdict(state.cfg), indent=2) + "\n")

    def log(msg: str) -> None:
        tqdm.write(f"[{time.strftime('%H:%M:%S')}] {msg}")

    run(state, out, max_minutes, log, tune_decoder)
    return 0
