import torch

from dreamserve.engine.builtin.dit import (
    DiT,
    DiTConfig,
    _matmul_attention,
    shift_time,
)
from dreamserve.engine.builtin.surgery import add_copy_path

SMALL = DiTConfig(latent_ch=4, dim=32, depth=1, heads=2, mlp_ratio=2.0)


def _inputs(refs: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 5, generator=g)
    text = torch.randn(2, 6, 384, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    return (x, torch.tensor([0.3, 0.9]), text, mask) + tuple(
        torch.randn(2, 4, 3, 5, generator=g) for _ in range(refs)
    )


def _perturb(model: DiT) -> DiT:
    # adaLN-Zero starts every block at the identity; make the function non-trivial.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_old_configs_load_without_the_copy_path() -> None:
    d = SMALL.to_dict()
    del d["copy_input"], d["time_shift"]
    old = DiTConfig.from_dict(d)
    assert old.copy_input is False and old.time_shift == 1.5  # as the first model was sampled
    assert DiTConfig().copy_input is True


def test_adding_the_copy_path_keeps_the_models_function() -> None:
    torch.manual_seed(0)
    old = _perturb(DiT(DiTConfig(**{**SMALL.to_dict(), "copy_input": False})))
    new = add_copy_path(old).eval()
    assert new.cfg.copy_input and new.latent_in.in_features == 8
    x, t, text, mask, ref = _inputs(1)
    with torch.no_grad():
        assert torch.allclose(old(x, t, text, mask, [ref]), new(x, t, text, mask, [ref]))
    assert add_copy_path(new) is new


def test_the_copy_path_feeds_image_one_to_the_target_tokens() -> None:
    torch.manual_seed(0)
    model = _perturb(DiT(SMALL))
    x, t, text, mask, ref = _inputs(1)
    with torch.no_grad():
        a = model(x, t, text, mask, [ref])
        # Same input tokens in the sequence, different copy-path input: the output changes.
        w = model.latent_in.weight.clone()
        model.latent_in.weight[:, 4:] = 0.0
        b = model(x, t, text, mask, [ref])
        model.latent_in.weight.copy_(w)
    assert a.shape == x.shape and not torch.allclose(a, b)


def test_time_shift_moves_times_towards_noise_and_keeps_the_ends() -> None:
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    s = shift_time(t, 3.0)
    assert s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.75 and bool((s >= t).all())


def test_bf16_cpu_attention_matches_the_fused_kernel() -> None:
    # Under bf16 autocast on a CPU, attention runs as plain matmuls (dit._matmul_attention):
    # same function as scaled_dot_product_attention, padding masked out.
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 7, 8, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[0, ..., 5:] = False
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(_matmul_attention(q, k, v, mask), want, atol=1e-5)
    model = _perturb(DiT(SMALL))
    x, t, text, tmask, ref = _inputs(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t, text, tmask, [ref])
    assert torch.allclose(low.float(), model(x, t, text, tmask, [ref]), atol=0.05)
