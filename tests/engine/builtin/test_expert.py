from dataclasses import replace

import pytest
import torch

from dreamserve.engine.builtin.autoencoder import AutoEncoder
from dreamserve.engine.builtin.dit import LAYOUT_DIM, DiT, timestep_embedding
from dreamserve.engine.builtin.expert import Expert, ExpertConfig, plan_map
from dreamserve.engine.builtin.layout import COORD_DIM
from dreamserve.engine.builtin.render import Obj, Scene, render
from dreamserve.engine.builtin.sample import Sampler, SampleSpec, time_grid
from dreamserve.engine.builtin.textenc import TEXT_DIM, TextEncoder
from dreamserve.engine.builtin.train_config import CONFIGS
from dreamserve.engine.builtin.upscaler import Upscaler

TINY = CONFIGS["tiny"]

SMALL = ExpertConfig(width=16, emb=32)


def _inputs(b: int, h: int, w: int) -> tuple[torch.Tensor, ...]:
    return (
        torch.randn(b, 8, h, w),
        torch.rand(b),
        torch.randn(b, TEXT_DIM),
        torch.randn(b, SMALL.plan_dim, h, w),
    )


def test_a_new_expert_predicts_zeros() -> None:
    # Its last convolution starts at zero, as adaLN-Zero does: training starts from the
    # latents' mean (the autoencoder scales them to about zero mean, unit variance).
    with torch.no_grad():
        v = Expert(SMALL)(*_inputs(2, 32, 32))
    assert v.shape == (2, 8, 32, 32) and float(v.abs().max()) == 0.0


@pytest.mark.parametrize("grid", [(8, 8), (9, 7), (11, 6), (12, 5)])
def test_it_draws_every_aspect_ratio_s_latent_grid(grid: tuple[int, int]) -> None:
    gw, gh = grid  # data.GRIDS: 4x4 latent pixels per token, so /2 twice always divides
    torch.manual_seed(0)
    net = Expert(SMALL)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    with torch.no_grad():
        v = net(*_inputs(1, 4 * gh, 4 * gw))
    assert v.shape == (1, 8, 4 * gh, 4 * gw) and float(v.abs().mean()) > 0


def test_the_plan_reaches_the_velocity_where_it_is() -> None:
    torch.manual_seed(0)
    net = Expert(SMALL)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x, t, pooled, layout = _inputs(1, 32, 32)
    other = layout.clone()
    other[..., 20:, 20:] += 1.0  # another phrase in one corner's box
    with torch.no_grad():
        a, b = net(x, t, pooled, layout), net(x, t, pooled, other)
    diff = (a - b).abs().sum(1)[0]
    # GroupNorm statistics and the levels below carry some of it everywhere, far less.
    assert float(diff[22:, 22:].mean()) > 4 * float(diff[:6, :6].mean())


def test_flow_times_are_read_as_sinusoids() -> None:
    assert timestep_embedding(torch.tensor([0.0, 0.5]), 16).shape == (2, 16)


class Counting(Expert):
    """The expert, recording the flow time of every call."""

    def __init__(self, cfg: ExpertConfig) -> None:
        super().__init__(cfg)
        self.times: list[float] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        self.times.append(float(t[0]))
        return super().forward(x, t, *rest)


def test_the_sampler_hands_a_planned_image_s_last_steps_to_the_expert() -> None:
    torch.manual_seed(0)
    dit = DiT(TINY.dit)
    cfg = ExpertConfig(latent_ch=TINY.ae.latent_ch, width=16, emb=32, max_objects=1)
    ex = Counting(cfg)
    enc = TextEncoder()
    s = Sampler(AutoEncoder(TINY.ae).eval(), dit.eval(), Upscaler(TINY.sr).eval(), enc, ex)
    planned = SampleSpec("a red star on a plain white background", 3, 64, 64, steps=6)
    grid = time_grid(6, dit.cfg.time_shift)
    steps: list[int] = []
    s(planned, [], lambda: steps.append(1))
    # Every step at or below the switch; the transformer drew the ones before.
    assert ex.times == [float(t) for t in grid[:-1] if t <= ex.cfg.t_switch]
    assert s.expert_takes(grid[:-1]) == [float(t) <= ex.cfg.t_switch for t in grid[:-1]]
    assert 0 < len(ex.times) < 6 and len(steps) == 6
    ex.times.clear()
    s(SampleSpec("a portrait of a cat", 3, 64, 64, steps=6), [], lambda: None)
    s(SampleSpec(planned.prompt, 3, 64, 64, steps=6, plan=False), [], lambda: None)
    assert ex.times == []  # no plan: the transformer to the end
    two = SampleSpec("a red star above a blue circle on a grass field", 3, 64, 64, steps=6)
    assert len(objects(s.plan(two, []))) == 2 > ex.cfg.max_objects
    s(two, [], lambda: None)
    assert ex.times == []  # more objects than the expert draws: the transformer's
    rows = s.expert_rows(planned, s.plan(planned, []), 4, 4)  # the tiny AE: patch 1
    assert rows is not None and rows.layout.shape == (2, ex.cfg.plan_dim, 4, 4)
    assert float(rows.layout[1].abs().sum()) == 0.0 and float(rows.pooled[1].abs().sum()) == 0.0
    # "A plan is given" on every latent pixel, then where in the star's box each one lies.
    assert float(rows.layout[0, LAYOUT_DIM - 1].min()) == 1.0
    assert float(rows.layout[0, LAYOUT_DIM:].abs().sum()) > 0.0


def test_the_expert_reads_box_coordinates_after_the_phrases_unless_told_not_to() -> None:
    objs = [(Obj("flower", "red", 0.5, 0.5, 0.5),)]
    vec = {"red flower": torch.ones(TEXT_DIM)}
    with_coords = plan_map(ExpertConfig(), objs, (8, 8), vec)
    without = plan_map(ExpertConfig(coords=False), objs, (8, 8), vec)
    assert with_coords.shape == (1, LAYOUT_DIM + COORD_DIM, 8, 8)
    assert without.shape == (1, LAYOUT_DIM, 8, 8)
    assert torch.equal(with_coords[:, :LAYOUT_DIM], without)
    assert Expert(ExpertConfig(coords=False, width=16, emb=32)).plan[0].in_channels == LAYOUT_DIM


def objects(scene: Scene | None) -> tuple[Obj, ...]:
    assert scene is not None
    return scene.objects


def test_the_expert_is_guided_at_its_share_of_the_request_s_guidance() -> None:
    torch.manual_seed(0)
    ex = Expert(ExpertConfig(latent_ch=TINY.ae.latent_ch, width=16, emb=32, guidance_share=0))
    for w in ex.parameters():  # a new expert predicts zeros, whatever its guidance
        torch.nn.init.normal_(w, std=0.1)
    ae, dit, sr = AutoEncoder(TINY.ae).eval(), DiT(TINY.dit).eval(), Upscaler(TINY.sr).eval()
    s = Sampler(ae, dit, sr, TextEncoder(), ex.eval())
    spec = SampleSpec("a red star on a plain white background", 3, 64, 64)
    rows = s.expert_rows(spec, s.plan(spec, []), 4, 4)
    assert rows is not None
    x, t = torch.randn(1, TINY.ae.latent_ch, 4, 4), torch.tensor(0.5)
    with torch.no_grad():
        unguided = s.expert_latents(x, t, rows, 1.0)
        assert torch.allclose(s.expert_latents(x, t, rows, 7.0), unguided)  # share 0
        ex.cfg = replace(ex.cfg, guidance_share=0.5)
        half = s.expert_latents(x, t, rows, 5.0)
        ex.cfg = replace(ex.cfg, guidance_share=1.0)
        assert torch.allclose(half, s.expert_latents(x, t, rows, 3.0), atol=1e-6)
        assert not torch.allclose(half, unguided)


def test_an_edit_s_changed_boxes_go_to_the_expert_and_the_rest_to_the_transformer() -> None:
    torch.manual_seed(0)
    cfg = ExpertConfig(latent_ch=TINY.ae.latent_ch, width=16, emb=32)
    ex = Counting(cfg)
    ae, dit, sr = AutoEncoder(TINY.ae).eval(), DiT(TINY.dit).eval(), Upscaler(TINY.sr).eval()
    s = Sampler(ae, dit, sr, TextEncoder(), ex.eval())
    img = render(Scene("white", (Obj("hexagon", "blue", 0.3, 0.6, 0.24),)), 64, 64, 2)
    edit = SampleSpec("move the blue hexagon to the right", 3, 64, 64, steps=6)
    s(edit, [img], lambda: None)
    grid = time_grid(6, dit.cfg.time_shift)
    assert ex.times == [float(t) for t in grid[:-1] if t <= cfg.t_switch]
    ex.times.clear()
    s(replace(edit, prompt="remove the blue hexagon"), [img], lambda: None)
    s(replace(edit, plan=False), [img], lambda: None)
    s(edit, [img, img], lambda: None)  # references: no plan read
    assert ex.times == []
    plan = s.edit_plan(edit, [img])
    assert plan is not None and s.edit_plan(replace(edit, plan=False), [img]) is None
    rows = s.edit_rows(plan, 4, 4)
    assert rows.region is not None and rows.region.shape == (1, 1, 4, 4)
    # The velocity: the expert's inside the region, the transformer's outside it.
    v, ve = torch.zeros(1, 8, 4, 4), torch.ones(1, 8, 4, 4)
    mixed = s.blend(v, ve, rows.region)
    assert torch.equal(mixed, rows.region.expand(1, 8, 4, 4))
    assert 0 < float(rows.region.sum()) < 16


def test_an_edit_never_pastes_image_1_back_where_it_moved_an_object_from() -> None:
    # The latent pixels on the old outline hold little of it and pass as kept; pasted, they
    # drew the outline back beside the moved object (session 38).
    ae, dit, sr = AutoEncoder(TINY.ae).eval(), DiT(TINY.dit).eval(), Upscaler(TINY.sr).eval()
    ex = Expert(ExpertConfig(latent_ch=TINY.ae.latent_ch, width=16, emb=32)).eval()
    s = Sampler(ae, dit, sr, TextEncoder(), ex)
    img = render(Scene("white", (Obj("hexagon", "blue", 0.3, 0.6, 0.3),)), 64, 64, 2)
    plan = s.edit_plan(SampleSpec("move the blue hexagon to the right", 3, 64, 64), [img])
    assert plan is not None and len(plan.cleared) == 1
    refs = s.encode_images([img], 4, 4)
    untouched = s.kept_pixels(refs[0], refs, [img])  # the input itself: every pixel kept
    moved = s.kept_pixels(refs[0], refs, [img], plan)
    assert untouched is not None and moved is not None
    assert bool((untouched.which == 0).all())
    gone = moved.which == -1
    assert 0 < int(gone.sum()) < gone.numel() and bool((moved.which[~gone] == 0).all())
    assert bool(gone[0, 0, 2, 1])  # the latent pixel holding the old centre (0.3, 0.6)
