"""Built-in model speed: request to encoded file at 1K, 2K and 4K on this CPU, side by side.

Runs the worker's own path (dreamserve.runner.render: generate, resize, encode) with the
shipped weights and reports the best of REPEATS wall times per size, the share of that time
spent in the text encoder, the transformer, the decoder (autoencoder decode + sharp upscale)
and the image encoder (JPEG/PNG), and the transformer's FLOP/s against a matmul peak measured
in the same run with the same thread count. Writes "## Built-in model speed" in BENCHMARKS.md.

    .venv/bin/python -m bench.bench_model [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.report import write_section
from dreamserve.engine.builtin.pipeline import BuiltinGenerator
from dreamserve.engine.builtin.render import Obj, Scene
from dreamserve.engine.builtin.render import render as draw
from dreamserve.engine.builtin.sample import SampleSpec, time_grid
from dreamserve.request import GenerationRequest
from dreamserve.runner import render

ROOT = Path(__file__).resolve().parents[1]
# One phrase: one batch of 2 per step (prompt, no prompt). Two and three phrases: a row per
# phrase in place of the prompt's (sample.Conditions.regions): each kind of object a prompt
# names costs one more row (four, past layout.MAX_REGIONS: three regions, the whole prompt's
# row for the fourth kind, no prompt: five rows).
# Edit: one input image of the output's size, whose latents join the sequence and whose
# pixels are pasted back where the transformer kept them (keep.py) at the output's size. A
# planned edit (edit_plan.py) runs the transformer every step and the expert as well on the
# last ones, for the boxes it changes.
PROMPTS = {
    "one phrase": "a large red star at the top left on a grass field",
    "two phrases": "a red star above a blue circle on a grass field",
    "three phrases": "two red circles, a blue square and a green star on a grass field",
    "edit": "make the red star blue",
    "planned edit": "move the red star to the bottom right",
}
EDITS = (PROMPTS["edit"], PROMPTS["planned edit"])
EDITED = Scene("grass field", (Obj("star", "red", 0.25, 0.25, 0.34),))
TARGETS = {"1K": 1.5, "2K": 3.0, "4K": 8.0}


def cpu_name() -> str:
    """The CPU's model name (machines differ between runs: say which one was timed)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def matmul_peak(n: int = 2048, reps: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """Best observed GFLOP/s of an n x n matmul in `dtype` (the machine's practical peak)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


class Timers:
    """Wraps methods to add their wall time to named buckets."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.originals: list[tuple[Any, str, Any]] = []

    def restore(self) -> None:
        for obj, attr, fn in reversed(self.originals):
            setattr(obj, attr, fn)

    def wrap(self, obj: Any, attr: str, bucket: str) -> None:
        fn: Callable[..., Any] = getattr(obj, attr)
        self.originals.append((obj, attr, fn))

        def timed(*args: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds[bucket] = self.seconds.get(bucket, 0.0) + time.perf_counter() - t

        setattr(obj, attr, timed)


def dit_steps(gen: BuiltinGenerator, prompt: str) -> int:
    """How many of the sampler's steps the transformer draws for `prompt`: all of them, or
    those before the expert's switch when the sampler gives the expert its last steps (an
    edit's expert draws only the boxes it changes: the transformer runs every step)."""
    s = gen.sampler
    spec = SampleSpec(prompt, 1, 1024, 1024, steps=gen.steps)
    # The sampler's own decision (expert, plan, ExpertConfig.max_objects), on the 1:1 grid.
    if prompt in EDITS or s.expert is None or s.expert_rows(spec, s.plan(spec, []), 8, 8) is None:
        return gen.steps
    return gen.steps - sum(s.expert_takes(time_grid(gen.steps, s.time_shift)[:-1]))


def dit_flops(gen: BuiltinGenerator, prompt: str) -> float:
    """FLOPs of one guided transformer call on the 1:1 grid, with the rows the sampler runs
    for `prompt` (the prompt, one per region, no prompt) and their plans."""
    gh = gw = 8
    dit = gen.sampler.dit
    refs = [torch.randn(1, dit.cfg.latent_ch, gh, gw)] if prompt in EDITS else []
    spec = SampleSpec(prompt, 1, 1024, 1024)
    c = gen.sampler.conditions(spec, gen.sampler.plan(spec, refs), gw, gh)
    rows = c.text.shape[0]
    x = torch.randn(rows, dit.cfg.latent_ch, gh, gw)
    refs = [r.expand(rows, -1, -1, -1) for r in refs]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        dit(x, torch.rand(rows), c.text, c.mask, refs, c.layout)
    return float(counter.get_total_flops())


def run_size(
    gen: BuiltinGenerator, size: str, prompt: str, repeats: int, fmt: str
) -> dict[str, float]:
    inputs = {"prompt": prompt, "size": size, "aspect_ratio": "1:1", "seed": 1}
    req = GenerationRequest.parse(inputs | {"output_format": fmt})
    w, h = req.pixel_size(None)
    images = [draw(EDITED, w, h)] if prompt in EDITS else []
    best: dict[str, float] = {}
    for _ in range(repeats):
        timers = Timers()
        s = gen.sampler
        timers.wrap(s, "text", "text encoder")
        timers.wrap(s, "dit", "transformer")
        if s.expert is not None:
            timers.wrap(s, "expert_latents", "expert")
        timers.wrap(s, "render", "decoder + upscale")
        t = time.perf_counter()
        out = render(req, images, gen, lambda p: None, lambda: False)
        total = time.perf_counter() - t
        timers.restore()
        if not best or total < best["total"]:
            best = dict(timers.seconds) | {
                "total": total,
                "image encoder": out.metrics["encode_time"],
            }
    return best


COLUMNS = ("text encoder", "transformer", "expert", "decoder + upscale", "image encoder")
PIXELS = {"1K": "1024x1024", "2K": "2048x2048", "4K": "4096x4096"}


def table(
    rows: dict[tuple[str, str], dict[str, float]], peak: float, flops: dict[str, float]
) -> str:
    head = [
        "size",
        "prompt",
        "total s",
        "target s",
        "met",
        *COLUMNS,
        "transformer GFLOP/s",
        "% of peak",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for (size, label), r in rows.items():
        tot = r["total"]
        gflops = flops[label] / max(r.get("transformer", 1e-9), 1e-9) / 1e9
        cells = [
            f"{size} ({PIXELS[size]})",
            label,
            f"{tot:.2f}",
            f"{TARGETS[size]}",
            "yes" if tot <= TARGETS[size] else "no",
            *(f"{100 * r.get(k, 0.0) / tot:.0f}%" for k in COLUMNS),
            f"{gflops:.1f}",
            f"{100 * gflops / peak:.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--format", default="jpg", choices=("jpg", "png", "webp"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    gen = BuiltinGenerator()
    peak = matmul_peak()
    steps = {label: dit_steps(gen, p) for label, p in PROMPTS.items()}
    flops = {label: dit_flops(gen, p) * steps[label] for label, p in PROMPTS.items()}
    one = PROMPTS["one phrase"]
    run_size(gen, "1K", one, 1, args.format)  # warm-up: first calls allocate and pick kernels
    rows = {
        (size, label): run_size(gen, size, p, args.repeats, args.format)
        for size in ("1K", "2K", "4K")
        for label, p in PROMPTS.items()
    }
    body = (
        f"Request to encoded {args.format.upper()} file (dreamserve.runner.render, "
        "1:1), "
        f"best of {args.repeats}, torch {torch.__version__} on {args.threads} threads of "
        f"{os.cpu_count()} CPUs ({cpu_name()}); {gen.steps} sampling steps with "
        "classifier-free guidance"
        + (
            f", the last {gen.steps - steps['one phrase']} of a prompt planned as at most "
            f"{gen.sampler.expert.cfg.max_objects} objects drawn by the weights' expert "
            "(expert.py). "
            if gen.sampler.expert is not None
            else ". "
        )
        + f'"one phrase" is "{one}" (batch 2 per step: prompt, no prompt); "two phrases" is '
        f'"{PROMPTS["two phrases"]}" (batch 3: each phrase of its layout plan is drawn '
        "from its own prompt, and no row for the whole prompt); "
        f'"three phrases" is "{PROMPTS["three phrases"]}" (batch 4); '
        f'"edit" is "{PROMPTS["edit"]}" with one input image of the output\'s size (its '
        "latents join the sequence; its pixels are pasted where the transformer kept them, "
        "counted in decoder + upscale); "
        f'"planned edit" is "{PROMPTS["planned edit"]}", whose plan (edit_plan.py) the '
        "expert draws in the boxes it changes on the last steps, beside the transformer. "
        f"Matmul peak measured in the same run: {peak:.1f} GFLOP/s (fp32 2048^3). "
        "Transformer work per image: "
        + ", ".join(f"{label} {f / 1e9:.2f} GFLOP" for label, f in flops.items())
        + ".\n\n"
        + table(rows, peak, flops)
        + "\n\nShares are of the total; the rest is Python glue, seeding and resizing. "
        "Rerun: `.venv/bin/python -m bench.bench_model`."
    )
    write_section(ROOT / "BENCHMARKS.md", "Built-in model speed", body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
