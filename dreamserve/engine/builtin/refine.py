"""The refiner: a small convolutional head that redraws the DiT's velocity per latent pixel.

Why (session 30, MODEL_CARD.md): a fine token covers 2x2 latent pixels (8x8 image pixels at
the working size), and circles, hexagons, flowers and suns of one size light up the same
tokens; what tells them apart is where the outline runs *inside* the edge tokens, which the
transformer writes through one linear layer per token. Renders of those shapes noised only
to t = 0.3 came back rounded (a flower as a hexagon, a hexagon as a circle). The refiner
works at the latent pixels themselves: 3x3 convolutions over the noisy latents (where the
outline is now), the transformer's velocity, and features the transformer writes for each
of its latent pixels (what the object is), so an outline is a local pattern drawn next to
its neighbours, as a U-Net's last layers draw it. Its last convolution starts at zero, so a
model grown with it computes what it did.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Refiner(nn.Module):
    def __init__(self, dim: int, token_ch: int, side: int, channels: int) -> None:
        """dim: the transformer's width; token_ch: channels of one fine token, `side`^2 latent
        pixels of token_ch / side^2 channels each; channels: the head's width."""
        super().__init__()
        self.side = side
        pixel_ch = token_ch // side**2  # the autoencoder's latent channels
        self.features = nn.Linear(dim, channels * side**2)
        last = nn.Conv2d(channels, pixel_ch, 3, padding=1)
        assert last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.convs = nn.Sequential(
            nn.Conv2d(channels + 2 * pixel_ch, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            last,
        )

    def forward(self, h: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """h: (B, gh*gw, dim) the target tokens' last hidden states; x, v: (B, token_ch, gh,
        gw) the noisy target and the transformer's velocity, as fine tokens. Returns v
        refined, same shape."""
        B, _, gh, gw = x.shape
        feats = self.features(h).transpose(1, 2).reshape(B, -1, gh, gw)
        feats = F.pixel_shuffle(feats, self.side)  # (B, channels, side*gh, side*gw)
        xp = F.pixel_shuffle(x, self.side).to(feats.dtype)  # (B, pixel_ch, side*gh, side*gw)
        vp = F.pixel_shuffle(v, self.side)
        vp = vp + self.convs(torch.cat([feats, xp, vp.to(feats.dtype)], dim=1)).to(vp.dtype)
        return F.pixel_unshuffle(vp, self.side)
