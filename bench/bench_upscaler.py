"""Upscaling quality: the trained upscaler against bilinear, both scored against native renders.

Each scene is rendered at 128 px, encoded and decoded by the shipped autoencoder (256 px: what
the sampler hands to the upscaler), then brought to 1024 px (1K) and 4096 px (4K), each in
one pass, by the trained upscaler (`upscaler.upscale`) and by plain bilinear resizing, and
compared with the renderer drawing the same scene natively at that size:
- PSNR against the native render;
- edge sharpness: the image's squared-gradient energy as a share of the native render's.
  A step edge spread over w pixels keeps its total rise but has 1/w of the energy, so 1.0 is
  as sharp as the renderer and bilinear at 16x scores about 1/16 of what the decode has.
Writes "## Upscaler quality" in BENCHMARKS.md.

    .venv/bin/python -m bench.bench_upscaler [--scenes 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.report import write_section
from dreamserve.engine.builtin import weights
from dreamserve.engine.builtin.captions import random_spec, realize
from dreamserve.engine.builtin.data import render_batch
from dreamserve.engine.builtin.upscaler import edge_energy, upscale

ROOT = Path(__file__).resolve().parents[1]
Method = Callable[[torch.Tensor, int], torch.Tensor]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss(a, b).clamp(min=1e-10)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    m = weights.load()
    rnd = random.Random(2024)
    scenes = [realize(random_spec(rnd), rnd) for _ in range(args.scenes)]
    with torch.inference_mode():
        decoded = ((m.ae.decode(m.ae.encode(render_batch(scenes, 8, 8))) + 1) / 2).clamp(0, 1)
    methods: dict[str, Method] = {
        "trained upscaler": lambda x, n: upscale(m.sr, x, n, n),
        "bilinear": lambda x, n: F.interpolate(x, size=(n, n), mode="bilinear").clamp(0, 1),
    }
    rows = []
    for n in (1024, 4096):
        scores: dict[str, list[float]] = {k: [0.0, 0.0, 0.0] for k in methods}
        for i, scene in enumerate(scenes):
            native = (render_batch([scene], n // 16, n // 16) + 1) / 2  # (1, 3, n, n)
            e_native = edge_energy(native)
            for name, method in methods.items():
                start = time.perf_counter()
                out = method(decoded[i : i + 1], n)
                scores[name][2] += time.perf_counter() - start
                scores[name][0] += psnr(out, native) / len(scenes)
                scores[name][1] += edge_energy(out) / e_native / len(scenes)
        base = scores["bilinear"]
        for name, (db, sharp, secs) in scores.items():
            rows.append(
                f"| {n}x{n} | {name} | {db:.2f} | {sharp:.3f} | {sharp / base[1]:.2f}x "
                f"| {secs / len(scenes):.2f} |"
            )
            print(rows[-1], flush=True)
    body = (
        f"`.venv/bin/python -m bench.bench_upscaler --scenes {args.scenes}` ({args.scenes} "
        f"random scenes, 128 px renders through the shipped autoencoder's encode and 2x decode, "
        f"then to the size; scored against the renderer's native drawing at that size; "
        f"{args.threads} threads).\n\n"
        "| size | method | PSNR dB | edge sharpness (native = 1) | sharpness vs bilinear "
        "| s per image |\n|---|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        "Edge sharpness is the squared-gradient energy as a share of the native render's: an "
        "edge spread over w pixels has 1/w of it. Rerun: `.venv/bin/python -m "
        "bench.bench_upscaler`."
    )
    write_section(ROOT / "BENCHMARKS.md", "Upscaler quality", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
