import random

import pytest
import torch
import torch.nn.functional as F

from dreamserve.engine.builtin.captions import random_spec, realize
from dreamserve.engine.builtin.data import render_batch
from dreamserve.engine.builtin.upscaler import SRConfig, Upscaler, upscale


def _edge(n: int) -> torch.Tensor:
    img = torch.zeros(1, 3, n, n)
    img[:, :, :, n // 2 :] = 1.0
    img[:, :, :, n // 2] = 0.5  # an antialiased edge pixel
    return img


def _ramp(row: torch.Tensor) -> int:
    return int(((row > 0.05) & (row < 0.95)).sum())


def test_exact_size_and_edges_sharper_than_bilinear_from_the_start() -> None:
    net = Upscaler(SRConfig()).eval()
    out = upscale(net, _edge(16), 160, 128)
    assert out.shape == (1, 3, 160, 128)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # bilinear leaves a ramp about 8 output pixels wide; the edge model keeps it to a few
    bilinear = F.interpolate(_edge(16), size=(160, 128), mode="bilinear")
    assert _ramp(out[0, 0, 80]) <= 4 < _ramp(bilinear[0, 0, 80])


def test_smooth_gradients_stay_smooth() -> None:
    net = Upscaler(SRConfig()).eval()
    grad = torch.linspace(0, 0.05, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16).contiguous()
    out = upscale(net, grad, 64, 64)
    bilinear = F.interpolate(grad, size=(64, 64), mode="bilinear")
    assert (out - bilinear).abs().max() < 0.005  # no snapping: only the light de-ripple filter


def test_smaller_sizes_are_an_area_average() -> None:
    net = Upscaler(SRConfig()).eval()
    assert upscale(net, torch.ones(1, 3, 32, 32), 8, 8).shape == (1, 3, 8, 8)


@pytest.mark.slow
def test_a_few_training_steps_fit_native_renders_better() -> None:
    # What `dreamserve train` does in its upscaler stage, on clean renders: 64 px -> 256 px.
    torch.manual_seed(0)
    rnd = random.Random(0)
    scenes = [realize(random_spec(rnd), rnd) for _ in range(4)]
    x = (render_batch(scenes, 4, 4) + 1) / 2  # (4, 3, 64, 64)
    y = (render_batch(scenes, 4, 4, scale=4) + 1) / 2  # (4, 3, 256, 256)
    net = Upscaler(SRConfig())
    with torch.no_grad():
        before = F.mse_loss(net(x, 256, 256), y)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(40):
        loss = F.mse_loss(net(x, 256, 256), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert F.mse_loss(net(x, 256, 256), y) < 0.97 * before
