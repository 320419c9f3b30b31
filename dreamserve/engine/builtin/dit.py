"""The diffusion transformer: flow matching over autoencoder latents, one sequence for everything.

Sequence = [text tokens | reference-image latents ... | noisy target latents]. Text tokens are
MiniLM states projected to the model width; every image token gets a 2D position embedding of
its *fractional* position (so any aspect-ratio grid shares one coordinate frame) plus an
embedding saying which image it belongs to (target, image 1, image 2, ...). Editing and
multi-reference generation are therefore the same network as text-to-image (in-context
conditioning, as in FLUX Kontext). Time and the pooled text drive adaLN in every block.

Fine tokens (`split`): the latents arrive as one 128-channel vector per 16x16 input pixels
(the autoencoder's 4x4 space-to-depth), and with split=2 the target is read and written as
2x2 tokens of 32 channels each, one per 8x8 input pixels (DiT's patch 2 instead of patch 4).
Objects here are 1-3 cells wide: with one token per cell a shape lives *inside* a token and
has to be drawn by one linear layer; the split-1 model drew the same blob for every shape word
after 400k samples. With four tokens per cell a shape is mostly *which tokens* are on, the
layout the model had learned. Input images stay one token per cell in the sequence (their
shape is read, not drawn, and fine references would quadruple the sequence); image 1 (with
`copy_refs`, every input) still reaches every fine target token through the copy path.

The copy path (`copy_input`): image 1's latents are also concatenated to the target tokens'
channels (as in InstructPix2Pix), position by position. In-context attention alone has to
*learn* to find the same-position token before it can copy it, which took the first model
more CPU time than it had (62 min: edits kept nothing of the input, 13.8 dB). With the input
at hand in every target token, "keep what the sentence does not change" is a per-token
identity from the first step, and attention is left for what to change.

Every input's copy path (`copy_refs`, from session 15): images 2 and 3 get channels of their
own beside image 1's. In the sequence an input is one token per 16x16 cell, too coarse to
carry a shape, and only image 1 reached the fine target tokens position by position: combined
objects from images 2-3 kept their shapes 9/41 times, against 28/41 after four runs with the
slots (MODEL_CARD.md, sessions 14-21).

The layout plan (`layout`, from session 28; layout.py says why): each fine target token also
takes a `LAYOUT_DIM` vector, the sum of the MiniLM phrase vectors ("red star") of the planned
boxes that cover it plus a channel that is 1 wherever a plan is given, through a zero-
initialised linear layer, so a model grown with it starts as the model it was grown from.

Local convolutions (`local`, from session 6): a 3x3 depthwise convolution over the target
tokens inside every block's MLP (SANA's Mix-FFN). A shape is drawn *around* an object that
may sit anywhere, so each token needs its offset from the object's other tokens; with only
absolute position embeddings attention must learn that for every place separately.

Rotary positions (`rope`, from session 7): queries and keys are turned by 2D rotary angles of
each image token's fractional position (text tokens sit at the origin, unturned), so a score
between two image tokens depends on their offset and what a token learns about its
neighbours holds wherever it sits. From scratch on one-object scenes this is what let a small
DiT draw shapes anywhere; grown onto a trained model at gain 0 it had not switched on after
150 steps (session 7), grown at gain 1 it doubled the shipped model's colour+shape score
(session 8; MODEL_CARD.md).

Unturned pairs (`rope_unturned`, from session 8): with every pair turned, an image query's
score against a text key (at the origin) or against the same object at another place in a
reference image changed with the query's place. The long-wavelength half of the pairs is
left unturned (as FLUX's id axis), a place-free channel for words and content; the short half
carries offsets for drawing, and absolute place still comes from the added embedding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamserve.engine.builtin.refine import Refiner
from dreamserve.engine.builtin.textenc import TEXT_DIM

LAYOUT_DIM = TEXT_DIM + 1  # per fine target token: phrase vectors of the plan, "a plan is given"

# ---------------------------------------------------------------- blocks


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # Per head, how fast the rotary angles turn with position: 1 in a new model; in one
        # grown from a model without them, what surgery.add_rope is given (0 computes as before).
        self.rope_gain = nn.Parameter(torch.ones(heads)) if rope else None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, rope: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if rope is not None and self.rope_gain is not None:
            turn = cos_sin(self.rope_gain[:, None, None] * rope, q.dtype)  # (H, N, head_dim/2)
            q, k = rotate(q, turn), rotate(k, turn)
        # mask: (B, 1, 1, N) True = attend; padding text tokens are never attended to.
        if q.dtype == torch.bfloat16 and q.device.type == "cpu":
            y = _matmul_attention(q, k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, D/H)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


def _matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention as two bf16 matmuls, for bf16 training on a CPU.

    torch's CPU flash-attention backward in bf16 was 3.7x slower than in fp32 here and took 41%
    of a training step; as plain matmuls it runs on the CPU's AMX tiles like every other layer.
    Sequences are short (<= ~300 tokens), so the (N, N) scores are small.
    """
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, N, N)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.float().softmax(-1).to(v.dtype) @ v  # (B, H, N, D/H)


def rope_angles(pos: torch.Tensor, head_dim: int, unturned: float = 0.0) -> torch.Tensor:
    """(N, head_dim / 2) 2D rotary angles for tokens at `pos` (N, 2) = (x, y) in the 0..8
    frame of `grid_pos_embedding`: half the rotated pairs turn with x, half with y, at
    wavelengths from one cell (2 fine tokens) to 32 cells. A token at (0, 0) (every text
    token) is not rotated. `unturned`: the share of each axis's pairs, the longest
    wavelengths, left unturned everywhere (DiTConfig.rope_unturned).
    """
    pairs = head_dim // 4  # per axis
    wavelength = 32.0 ** (torch.arange(pairs, dtype=torch.float32) / max(pairs - 1, 1))
    freqs = 2 * math.pi / wavelength  # (pairs,), shortest wavelength first
    freqs[pairs - round(unturned * pairs) :] = 0.0
    return torch.cat([pos[:, :1] * freqs, pos[:, 1:] * freqs], dim=1)


def cos_sin(angles: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines `rotate` turns by, computed once for both queries and keys."""
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def rotate(x: torch.Tensor, turn: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate (B, H, N, head_dim) queries or keys pairwise by `turn` = `cos_sin` of angles
    ((H or 1), N, head_dim / 2)."""
    cos, sin = turn
    a, b = x[..., 0::2], x[..., 1::2]  # (B, H, N, head_dim / 2)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def grid_positions(gh: int, gw: int) -> torch.Tensor:
    """(gh*gw, 2) fractional (x, y) centres of a token grid, in the 0..8 frame."""
    ys = (torch.arange(gh, dtype=torch.float32) + 0.5) / gh * 8.0
    xs = (torch.arange(gw, dtype=torch.float32) + 0.5) / gw * 8.0
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from (time, pooled text).

    `local` > 0 adds a depthwise `local` x `local` convolution over the target tokens' grid
    inside the MLP (as SANA's Mix-FFN), zero-initialised so the block starts as it was. Why:
    drawing a shape around an object that may sit anywhere needs each token to know its
    offset from the object's other tokens. Attention with absolute positions has to learn
    that offset for every place; a convolution computes it once for all places (DiTConfig).
    """

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, local: int = 0, rope: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads, rope)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)
        )
        self.local: nn.Conv2d | None = None
        if local:
            conv = nn.Conv2d(hidden, hidden, local, padding=local // 2, groups=hidden)
            for p in conv.parameters():
                nn.init.zeros_(p)
            self.local = conv
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        mask: torch.Tensor | None,
        grid: tuple[int, int],
        rope: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """grid: (gh, gw) of the target tokens, which are the last gh*gw of the sequence."""
        s1, sc1, g1, s2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)  # each (B, D)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, sc1), mask, rope)
        h = self.mlp[1](self.mlp[0](modulate(self.norm2(x), s2, sc2)))  # (B, N, hidden)
        if self.local is not None:
            gh, gw = grid
            B, N, H = h.shape
            img = h[:, N - gh * gw :].transpose(1, 2).reshape(B, H, gh, gw)
            near = self.local(img).flatten(2).transpose(1, 2)  # (B, gh*gw, hidden)
            h = torch.cat([h[:, : N - gh * gw], h[:, N - gh * gw :] + near], dim=1)
        return x + g2[:, None] * self.mlp[2](h)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t in [0, 1] (B,) -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = (t[:, None].float() * 1000.0) * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def grid_pos_embedding(gh: int, gw: int, dim: int) -> torch.Tensor:
    """(gh*gw, dim) 2D sin-cos embedding of each token's fractional centre, scaled to 0..8."""
    xx, yy = grid_positions(gh, gw).unbind(1)
    quarter = dim // 4
    freqs = (
        torch.exp(-math.log(100.0) * torch.arange(quarter, dtype=torch.float32) / quarter) * math.pi
    )
    parts = []
    for coord in (xx, yy):
        a = coord[:, None] * freqs[None]
        parts += [torch.sin(a), torch.cos(a)]
    return torch.cat(parts, dim=-1)


# ---------------------------------------------------------------- config


@dataclass
class DiTConfig:
    latent_ch: int = 128  # the autoencoder's token channels: 8 latent channels x 4 x 4
    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 3.0
    max_images: int = 4  # target + up to 3 references per forward during training
    copy_input: bool = True  # image 1's latents also enter the target tokens (module docstring)
    copy_refs: bool = False  # with copy_input: images 2..max_images-1 too (module docstring)
    # Flow time is trained and sampled shifted towards noise: t -> s*t / (1 + (s-1)*t). A token
    # is 16 near-copies of each latent pixel, so its colour survives noise until t ~ 0.95, and
    # layout is decided there; unshifted logit-normal t put only 1.4% of training above t=0.9,
    # shift 4 puts 21% there (SD3 shifts for the same reason at high resolution).
    time_shift: float = 4.0
    patch: int = 4  # latent_ch = the autoencoder's channels x patch^2 (its space-to-depth)
    split: int = 1  # target tokens per cell side (module docstring: fine tokens)
    local: int = 0  # kernel of the depthwise convolution over target tokens per block (Block)
    rope: bool = False  # 2D rotary positions in attention (module docstring)
    rope_unturned: float = 0.0  # share of rotary pairs never turned (module docstring)
    layout: bool = False  # the target tokens read a layout plan (module docstring)
    refine: int = 0  # width of the convolutional head over latent pixels (refine.py); 0: none

    @property
    def copy_slots(self) -> int:
        """How many input images the copy path carries: 0, 1 (image 1), or every input."""
        if not self.copy_input:
            return 0
        return self.max_images - 1 if self.copy_refs else 1

    @property
    def token_ch(self) -> int:
        """Channels of one target token: latent_ch / split^2."""
        return self.latent_ch // self.split**2

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> DiTConfig:
        # Configs written before a field existed describe a model without it: no copy path, no
        # local convolutions, no rotary positions, every rotary pair turned.
        old = {
            "copy_input": False,
            "copy_refs": False,
            "time_shift": 1.5,
            "local": 0,
            "rope": False,
            "rope_unturned": 0.0,
        }
        return cls(**(old | d))  # type: ignore[arg-type]


def to_fine(z: torch.Tensor, cfg: DiTConfig) -> torch.Tensor:
    """(B, latent_ch, gh, gw) cells -> (B, token_ch, split*gh, split*gw) fine tokens."""
    if cfg.split == 1:
        return z
    pixels = F.pixel_shuffle(z, cfg.patch)  # (B, ch, patch*gh, patch*gw): the AE's latent
    return F.pixel_unshuffle(pixels, cfg.patch // cfg.split)


def from_fine(z: torch.Tensor, cfg: DiTConfig) -> torch.Tensor:
    """The inverse of `to_fine`."""
    if cfg.split == 1:
        return z
    return F.pixel_unshuffle(F.pixel_shuffle(z, cfg.patch // cfg.split), cfg.patch)


# ---------------------------------------------------------------- model


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        # Input channels: the token's own latents, then (copy path) each copied input's at the
        # same place, in input order.
        self.latent_in = nn.Linear(cfg.token_ch * (1 + cfg.copy_slots), D)
        # Input images in the sequence, one token per cell (the target's tokens when split=1).
        self.ref_in = nn.Linear(cfg.latent_ch, D) if cfg.split > 1 else None
        self.text_in = nn.Sequential(nn.LayerNorm(TEXT_DIM), nn.Linear(TEXT_DIM, D))
        self.image_id = nn.Embedding(cfg.max_images + 8, D)  # 0 = target, k = input image k
        self.time_mlp = nn.Sequential(nn.Linear(D, D), nn.SiLU(), nn.Linear(D, D))
        self.pool_mlp = nn.Sequential(nn.Linear(TEXT_DIM, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList(
            [Block(D, cfg.heads, cfg.mlp_ratio, cfg.local, cfg.rope) for _ in range(cfg.depth)]
        )
        self.layout_in = nn.Linear(LAYOUT_DIM, D) if cfg.layout else None
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(D, 2 * D)
        self.out = nn.Linear(D, cfg.token_ch)
        side = cfg.patch // cfg.split  # latent pixels per fine token side
        self.refine = Refiner(D, cfg.token_ch, side, cfg.refine) if cfg.refine else None
        for m in (self.ada_out, self.out, *([self.layout_in] if self.layout_in else [])):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _image_tokens(
        self, z: torch.Tensor, index: int, bases: list[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        # z: (B, C, gh, gw) -> (B, gh*gw, D); bases: the copied inputs on the same grid (None:
        # that input is absent or on another grid), one per copy slot
        B, C, gh, gw = z.shape
        if index > 0 and self.ref_in is not None:
            tok = self.ref_in(z.flatten(2).transpose(1, 2))
        else:
            bases = bases or [None] * self.cfg.copy_slots  # an input image copies nothing
            copies = [torch.zeros_like(z) if b is None else b for b in bases]
            z = torch.cat([z, *copies], dim=1)  # (B, C * (1 + copy_slots), gh, gw)
            tok = self.latent_in(z.flatten(2).transpose(1, 2))
        pos = grid_pos_embedding(gh, gw, self.cfg.dim).to(tok.device, tok.dtype)
        return tok + pos[None] + self.image_id.weight[index][None, None]

    def _rope_angles(self, text_len: int, grids: list[tuple[int, int]]) -> torch.Tensor:
        """(N, head_dim / 2) rotary angles of the sequence: text tokens at the origin (never
        turned), then each image's tokens at their fractional positions, in sequence order."""
        pos = [torch.zeros(text_len, 2)] + [grid_positions(gh, gw) for gh, gw in grids]
        return rope_angles(torch.cat(pos), self.cfg.dim // self.cfg.heads, self.cfg.rope_unturned)

    def forward(
        self,
        x: torch.Tensor,  # (B, C, gh, gw) noisy target latents
        t: torch.Tensor,  # (B,) flow time, 1 = pure noise
        text: torch.Tensor,  # (B, L, 384) MiniLM states
        text_mask: torch.Tensor,  # (B, L) bool, True = real token
        refs: list[torch.Tensor] | None = None,  # each (B, C, gh', gw') clean input latents
        layout: torch.Tensor | None = None,  # (B, LAYOUT_DIM, gh*split, gw*split) or None
    ) -> torch.Tensor:
        refs = refs or []
        slots = refs[: self.cfg.copy_slots] + [None] * (self.cfg.copy_slots - len(refs))
        bases = [
            None if r is None or r.shape[2:] != x.shape[2:] else to_fine(r, self.cfg) for r in slots
        ]
        x = to_fine(x, self.cfg)  # (B, token_ch, gh, gw) from here on: the target's own grid
        B, C, gh, gw = x.shape
        # Pooled text for adaLN: mean over real tokens (B, 384).
        m = text_mask.float()[..., None]
        pooled = (text * m).sum(1) / m.sum(1).clamp(min=1.0)
        c = self.time_mlp(timestep_embedding(t, self.cfg.dim)) + self.pool_mlp(pooled)  # (B, D)

        seq = [self.text_in(text)]  # (B, L, D)
        masks = [text_mask]
        for i, r in enumerate(refs):
            seq.append(self._image_tokens(r, i + 1))  # (B, gh'*gw', D)
            masks.append(torch.ones(B, r.shape[2] * r.shape[3], dtype=torch.bool, device=x.device))
        target = self._image_tokens(x, 0, bases)  # (B, gh*gw, D), always last
        if layout is not None and self.layout_in is not None:
            target = target + self.layout_in(layout.flatten(2).transpose(1, 2).to(target.dtype))
        seq.append(target)
        masks.append(torch.ones(B, gh * gw, dtype=torch.bool, device=x.device))
        h = torch.cat(seq, dim=1)  # (B, N, D)
        attn_mask = torch.cat(masks, dim=1)[:, None, None, :]  # (B, 1, 1, N)
        grids = [(r.shape[2], r.shape[3]) for r in refs] + [(gh, gw)]
        rope = self._rope_angles(text.shape[1], grids).to(x.device) if self.cfg.rope else None

        for block in self.blocks:
            h = block(h, c, attn_mask, (gh, gw), rope)
        shift, scale = self.ada_out(F.silu(c)).chunk(2, dim=-1)
        h = modulate(self.norm_out(h[:, -gh * gw :]), shift, scale)  # target tokens only
        v = self.out(h).transpose(1, 2).reshape(B, C, gh, gw)  # predicted velocity
        if self.refine is not None:
            v = self.refine(h, x, v)
        return from_fine(v, self.cfg)  # (B, latent_ch, cells high, cells wide)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Warp flow times in [0, 1] towards 1 (more noise); 0 and 1 stay put."""
    return shift * t / (1 + (shift - 1) * t)


def null_condition(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The "no prompt" text input for classifier-free guidance: one all-zero token.

    Training replaces 10% of prompts with it, so the model learns the unconditional velocity.
    """
    return torch.zeros(batch, 1, TEXT_DIM), torch.ones(batch, 1, dtype=torch.bool)
