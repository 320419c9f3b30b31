"""The autoencoder: 4x spatial compression into a small latent grid, decoded at 2x.

The encoder maps a (3, 16h, 16w) image to a (C, 4h, 4w) latent, which the DiT reads as
(C*16, h, w) tokens (space-to-depth, `patch`); the decoder maps it back to
(3, 32h, 32w): it is trained against scenes rendered natively at twice the input resolution,
so it learns to draw edges at sub-pixel precision instead of blurring them (ESPCN-style
pixel-shuffle head). Latents are scaled by `latent_scale` so the DiT sees roughly unit variance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResConv(nn.Module):
    """3x3 conv residual block without normalisation (small, shallow net; norms cost CPU time)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        assert self.conv2.bias is not None
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


@dataclass
class AEConfig:
    latent_ch: int = 8
    enc_ch: tuple[int, ...] = (64, 96)  # after each stride-2 stage: /2 /4
    dec_ch: tuple[int, ...] = (96, 64)  # at /4 /2 of the input
    # Residual blocks at the latent's resolution and after the last upsampling. More were
    # grown onto the trained decoder when its one block had stopped gaining
    # (surgery.add_decoder_blocks, MODEL_CARD.md session 25).
    dec_blocks: tuple[int, ...] = (1, 0)
    # The DiT sees patch x patch latent pixels as one token (space-to-depth), so a 4x-down
    # latent still gives one token per 16x16 input pixels. A 4x AE learned several times
    # faster than a 16x one in measured CPU-minutes (24.6 vs 17 dB after 175 steps).
    patch: int = 4
    latent_scale: float = 1.0  # set after training from the latents' std
    latent_noise: float = 0.0  # >0 trains the decoder on noisy latents (slowed early learning)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> AEConfig:
        kw = dict(d)
        kw["enc_ch"] = tuple(kw["enc_ch"])  # type: ignore[arg-type]
        kw["dec_ch"] = tuple(kw["dec_ch"])  # type: ignore[arg-type]
        kw["dec_blocks"] = tuple(kw.get("dec_blocks", (1, 0)))  # type: ignore[arg-type]
        return cls(**kw)  # type: ignore[arg-type]


class Encoder(nn.Module):
    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for i, ch in enumerate(cfg.enc_ch):
            layers.append(nn.Conv2d(prev, ch, 3, stride=2, padding=1))
            if i >= 2:  # residual blocks only at /8 and /16, where they are cheap
                layers.append(ResConv(ch))
            prev = ch
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(prev, cfg.latent_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 16h, 16w) in [-1, 1] -> (B, C, h, w)
        return self.out(F.silu(self.body(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        chs, blocks = cfg.dec_ch, cfg.dec_blocks
        if len(blocks) != 2 or blocks[0] < 1 or blocks[1] < 0:
            raise ValueError(f"dec_blocks {blocks}: two counts (first stage >= 1, last >= 0)")
        self.inp = nn.Conv2d(cfg.latent_ch, chs[0], 3, padding=1)
        # res0 and the later blocks apart so the first (session 1) decoder's keys still load
        self.res0 = ResConv(chs[0])
        self.more0 = nn.Sequential(*(ResConv(chs[0]) for _ in range(blocks[0] - 1)))
        ups: list[nn.Module] = []
        for a, b in zip(chs[:-1], chs[1:], strict=True):
            ups += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(a, b, 3, padding=1),
                nn.SiLU(),
            ]
        self.ups = nn.Sequential(*ups)
        self.more1 = nn.Sequential(*(ResConv(chs[-1]) for _ in range(blocks[1])))
        # (B, 64, 8h, 8w) -> (B, 3*4*4, 8h, 8w) -> pixel shuffle -> (B, 3, 32h, 32w)
        self.head = nn.Conv2d(chs[-1], 3 * 16, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.more0(self.res0(F.silu(self.inp(z))))
        h = self.more1(self.ups(h))
        return F.pixel_shuffle(self.head(h), 4)


class AutoEncoder(nn.Module):
    def __init__(self, cfg: AEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def token_ch(self) -> int:
        """Channels of one DiT token: latent_ch * patch^2."""
        return self.cfg.latent_ch * self.cfg.patch**2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (B, 3, 16h, 16w) -> scaled token latents (B, C*p*p, h, w)."""
        z = self.encoder(x)  # (B, C, 16h/f, 16w/f) with f the encoder's downsampling
        return F.pixel_unshuffle(z, self.cfg.patch) / self.cfg.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled token latents (B, C*p*p, h, w) -> images in about [-1, 1] at (B, 3, 32h, 32w)."""
        return self.decoder(F.pixel_shuffle(z * self.cfg.latent_scale, self.cfg.patch))

    def loss(
        self, x: torch.Tensor, target2x: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        z = self.encoder(x)
        zn = z + self.cfg.latent_noise * z.detach().std() * torch.randn_like(z)
        y = self.decoder(zn)
        l1 = (y - target2x).abs().mean()
        # MSE as well: L1 alone leaves faint halos that cost PSNR on flat regions.
        mse = F.mse_loss(y, target2x)
        reg = 1e-4 * z.pow(2).mean()
        return l1 + mse + reg, {"l1": l1.item(), "mse": mse.item()}
