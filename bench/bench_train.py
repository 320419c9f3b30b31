"""Training throughput: DiT samples/s with fp32 matmuls against bf16 ones, in the same run.

`dreamserve train` runs the DiT's matmuls in bf16 where the CPU multiplies bf16 in hardware
(TrainConfig.bf16, train.autocast_bf16). This measures what that buys: the same pre-rendered
batches (text-to-image, edit and reference, the default config's sizes and mix) go through
`train.dit_step` (image encoder, DiT forward and backward, AdamW, EMA) with bf16 off and on,
in alternating slices so that load drifting on a shared machine hits both alike. Rendering is
left out: it is the same in both modes. A third mode, bf16 with the blocks' local
convolutions (dit.Block) taken out, prices those, and the shipped model grown to the default
config's rotary positions (checkpoint.grow, what the next `train --resume` trains) prices
those. Also reports the fp32 and bf16 matmul peaks.
Writes "## Training throughput" in BENCHMARKS.md.

    .venv/bin/python -m bench.bench_train [--threads 2] [--batches 6] [--slices 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_model import matmul_peak
from bench.report import write_section
from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.checkpoint import State, from_package, grow, new_state
from dreamserve.engine.builtin.data import Pools, build_pools
from dreamserve.engine.builtin.dit import Block
from dreamserve.engine.builtin.stream import Rendered, draw
from dreamserve.engine.builtin.train import cpu_has_bf16, dit_step
from dreamserve.engine.builtin.train_config import CONFIGS

ROOT = Path(__file__).resolve().parents[1]
LR = 1e-6  # the steps are real; a tiny rate keeps the model nearly where it started


def samples_per_second(state: State, pools: Pools, work: list[Rendered], bf16: bool) -> float:
    state.cfg.bf16 = bf16
    dit_step(state, work[0], pools, LR)  # warm-up: kernels for this mode
    start = time.perf_counter()
    for batch in work:
        dit_step(state, batch, pools, LR)
    return sum(len(b.texts) for b in work) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--slices", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    cfg = copy.deepcopy(CONFIGS["default"])
    state = from_package(cfg) if weights.available() else new_state(cfg)
    with tempfile.TemporaryDirectory() as cache:
        pools = build_pools(cfg.seed, 300, 150, 60, Path(cache), lambda _: None)
    rnd = random.Random(0)
    work = [draw(pools, cfg.mix, cfg.batch, rnd) for _ in range(args.batches)]
    modes = [("fp32", state, False)]
    if not state.dit.cfg.rope:
        modes.append(("fp32, rotary positions", grow(copy.deepcopy(state), cfg), False))
    if cpu_has_bf16():
        plain = copy.deepcopy(state)
        for block in [*plain.dit.blocks, *plain.ema.blocks]:
            assert isinstance(block, Block)
            block.local = None  # same model less its convolutions: what they cost per step
        modes += [("bf16", state, True), ("bf16, no local convolutions", plain, True)]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in modes}
    for _ in range(args.slices):
        for name, st, bf16 in modes:
            rates[name].append(samples_per_second(st, pools, work, bf16))
    rate = {name: statistics.median(r) for name, r in rates.items()}
    # Without bf16 hardware a 2048^3 bf16 matmul is emulated at ~1 GFLOP/s: 8 of them took
    # minutes and measured nothing this benchmark compares.
    peak32 = matmul_peak()
    peak16 = matmul_peak(dtype=torch.bfloat16) if cpu_has_bf16() else None
    rows = [
        "| DiT matmuls | samples/s (median of slices) | vs fp32 |",
        "| --- | --- | --- |",
        f"| fp32 | {rate['fp32']:.1f} | 1.00x |",
    ]
    labels = {"bf16": "bf16 (autocast; attention as matmuls)"}
    for name, _, _ in modes[1:]:
        r = rate[name]
        rows.append(f"| {labels.get(name, name)} | {r:.1f} | {r / rate['fp32']:.2f}x |")
    kinds = ", ".join(b.kind for b in work)
    body = (
        f"`train.dit_step` on {len(work)} pre-rendered batches ({kinds}; default config sizes), "
        f"{args.slices} alternating slices, torch {torch.__version__} on {args.threads} threads "
        f"of {os.cpu_count()} CPUs. Matmul peaks in the same run (2048^3): fp32 "
        f"{peak32:.0f} GFLOP/s"
        + (
            f", bf16 {peak16:.0f} GFLOP/s ({peak16 / peak32:.1f}x)"
            if peak16 is not None
            else "; this CPU lacks AMX/AVX512-BF16, so bf16 was not measured"
        )
        + ".\n\n"
        + "\n".join(rows)
        + "\n\nRerun: `.venv/bin/python -m bench.bench_train`."
    )
    write_section(ROOT / "BENCHMARKS.md", "Training throughput", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
