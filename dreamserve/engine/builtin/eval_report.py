"""The eval's tallies and how they are shown: the targets, the table, report.md's rows and
the sample grids. Kept apart from `evaluate`, which draws and checks the images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SIZE = 256
TARGETS = {
    "color_shape": 0.95,
    "position": 0.90,
    "relation": 0.80,
    "count": 0.80,
    "edit": 0.85,
    "edit_psnr_db": 28.0,
    "reference": 0.75,
}


@dataclass
class Tally:
    ok: dict[str, list[bool]] = field(default_factory=dict)
    psnrs: list[float] = field(default_factory=list)
    samples: list[tuple[str, Image.Image]] = field(default_factory=list)

    def add(self, key: str, good: bool) -> None:
        self.ok.setdefault(key, []).append(bool(good))


def strip(imgs: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (SIZE * len(imgs), SIZE), "white")
    for k, im in enumerate(imgs):
        out.paste(im, (k * SIZE, 0))
    return out


def grid(samples: list[tuple[str, Image.Image]], max_width: int = 8 * SIZE) -> Image.Image:
    """Samples left to right, wrapping at max_width, each with its prompt under it."""
    pad, label = 8, 34
    rows: list[list[tuple[str, Image.Image]]] = [[]]
    for text, im in samples:
        used = sum(x.width + pad for _, x in rows[-1])
        if rows[-1] and used + im.width > max_width:
            rows.append([])
        rows[-1].append((text, im))
    width = max(sum(x.width + pad for _, x in row) for row in rows)
    g = Image.new("RGB", (width, (SIZE + label) * len(rows)), "white")
    d = ImageDraw.Draw(g)
    for r, row in enumerate(rows):
        x, y = 0, r * (SIZE + label)
        for text, im in row:
            g.paste(im, (x, y))
            chars = max(im.width // 6, 10)  # the default bitmap font is 6 px a character
            lines = [text[i : i + chars] for i in range(0, min(len(text), 2 * chars), chars)]
            d.multiline_text((x + 2, y + SIZE + 3), "\n".join(lines), fill=(0, 0, 0))
            x += im.width + pad
    return g


def table(t: Tally) -> dict[str, float]:
    rows = {k: float(np.mean(v)) for k, v in sorted(t.ok.items())}
    rows["edit_psnr_db"] = float(np.median(t.psnrs)) if t.psnrs else 0.0
    return rows


def markdown(rows: dict[str, float], counts: dict[str, int]) -> str:
    lines = ["| metric | result | target | met |", "| --- | --- | --- | --- |"]
    for k, v in rows.items():
        target = TARGETS.get(k)
        shown = f"{v:.1f} dB" if k.endswith("_db") else f"{v:.1%} (n={counts.get(k, 0)})"
        tgt = (
            ""
            if target is None
            else (f">= {target:.0f} dB" if k.endswith("_db") else f">= {target:.0%}")
        )
        met = "" if target is None else ("yes" if v >= target else "no")
        lines.append(f"| {k} | {shown} | {tgt} | {met} |")
    return "\n".join(lines) + "\n"
