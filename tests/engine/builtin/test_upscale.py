import torch

from dreamserve.engine.builtin.upscale import upscale


def _edge(n: int) -> torch.Tensor:
    img = torch.zeros(1, 3, n, n)
    img[:, :, :, n // 2 :] = 1.0
    img[:, :, :, n // 2] = 0.5  # an antialiased edge pixel
    return img


def test_exact_size_and_sharp_edges() -> None:
    out = upscale(_edge(16), 160, 128)
    assert out.shape == (1, 3, 160, 128)
    row = out[0, 0, 80]
    ramp = ((row > 0.05) & (row < 0.95)).sum().item()
    # bilinear leaves a ramp about 8 output pixels wide; snapping keeps it to a few
    bilinear = torch.nn.functional.interpolate(_edge(16), size=(160, 128), mode="bilinear")
    assert ramp <= 4 < ((bilinear[0, 0, 80] > 0.05) & (bilinear[0, 0, 80] < 0.95)).sum().item()


def test_smooth_gradients_stay_smooth() -> None:
    grad = torch.linspace(0, 0.05, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16).contiguous()
    out = upscale(grad, 64, 64)
    bilinear = torch.nn.functional.interpolate(grad, size=(64, 64), mode="bilinear")
    assert (out - bilinear).abs().max() < 0.005  # no snapping: only the light pre-blur


def test_downscale_is_an_area_average() -> None:
    assert upscale(torch.ones(1, 3, 32, 32), 8, 8).shape == (1, 3, 8, 8)
