"""The Cog peer for bench/service_throughput.py: returns a 1024x1024 image at once.

It does the same work per prediction as dreamserve's instant test generator plus its JPEG
encode: build a 1024x1024 image and write it as a JPEG file Cog sends back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path as _Path

from cog import BasePredictor, Input, Path
from PIL import Image


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.dir = _Path(tempfile.mkdtemp())

    def predict(self, prompt: str = Input(description="prompt")) -> Path:
        out = self.dir / "output.jpg"
        Image.new("RGB", (1024, 1024), (200, 40, 40)).save(out, quality=95)
        return Path(out)
