import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dreamserve.cli import app
from dreamserve.engine.builtin import expert_train, weights
from dreamserve.engine.builtin.autoencoder import AutoEncoder
from dreamserve.engine.builtin.data import Pools, build_pools
from dreamserve.engine.builtin.dit import DiT
from dreamserve.engine.builtin.expert import SAMPLING_FIELDS, ExpertConfig
from dreamserve.engine.builtin.expert_train import (
    ExpertTrainConfig,
    expert_loss,
    fix_batch,
    from_weights,
    load,
    main,
    new_state,
    save,
    train,
)
from dreamserve.engine.builtin.train_config import CONFIGS
from dreamserve.engine.builtin.upscaler import Upscaler

CFG = ExpertTrainConfig(model=ExpertConfig(width=16, emb=32), batch=4, ckpt_minutes=0.0)


def test_a_short_run_trains_saves_resumes_and_ships_its_ema(tmp_path: Path) -> None:
    pools = build_pools(7, 40, 8, 6, tmp_path / "cache", log=lambda _: None)
    ae = AutoEncoder(CONFIGS["default"].ae).eval()
    state = new_state(CFG)
    before = [p.clone() for p in state.ema.parameters()]
    train(state, ae, pools, 5.0, tmp_path, log=lambda _: None, max_steps=3)
    assert state.step == 3 and (tmp_path / "expert.pt").exists()  # saved during the run
    moved = [not torch.equal(a, b) for a, b in zip(before, state.ema.parameters(), strict=True)]
    assert any(moved)
    save(state, tmp_path)
    again = load(tmp_path / "expert.pt", ExpertTrainConfig(lr=5e-4))
    assert again.step == state.step and again.cfg.lr == 5e-4  # the schedule from now on
    assert again.cfg.model == CFG.model  # the model as saved
    # When the sampler calls it is chosen at resume; the architecture stays as saved.
    sampled = {"t_switch": 0.7, "max_objects": 2, "guidance_share": 0.25}
    moved_on = load(tmp_path / "expert.pt", ExpertTrainConfig(model=ExpertConfig(**sampled)))
    assert moved_on.cfg.model == replace(CFG.model, **sampled)
    for a, b in zip(state.ema.parameters(), again.ema.parameters(), strict=True):
        assert torch.equal(a, b)
    loss = expert_loss(
        again.net, ae, fix_batch(pools, again.cfg, random.Random(0)), pools, again.cfg
    )
    assert loss.ndim == 0 and float(loss.detach()) > 0
    # Shipped with the other models, and read back as they are (fp16 on disk).
    tiny = CONFIGS["tiny"]
    models = weights.Models(ae, DiT(tiny.dit), Upscaler(tiny.sr), {}, state.ema)
    weights.export(models, tmp_path / "weights")
    back = weights.load(tmp_path / "weights")
    assert back.expert is not None and back.expert.cfg == CFG.model
    for a, b in zip(state.ema.parameters(), back.expert.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    weights.export(weights.Models(ae, DiT(tiny.dit), Upscaler(tiny.sr), {}), tmp_path / "weights")
    assert weights.load(tmp_path / "weights").expert is None
    assert not (tmp_path / "weights" / "expert.safetensors").exists()  # no stale expert


def test_a_batch_hands_the_expert_its_scenes_with_some_objects_drawn_as_circles(
    tmp_path: Path,
) -> None:
    pools = build_pools(7, 40, 8, 6, tmp_path, log=lambda _: None)
    rnd = random.Random(3)
    every = replace(CFG, circle_share=1.0, kinds=("shape",), batch=6)
    b = fix_batch(pools, every, rnd)
    assert b.target.shape == b.source.shape and len(b.plans) == len(b.texts) == 6
    assert any(o.shape != "circle" for p in b.plans for o in p)  # so redrawing shows
    assert not torch.equal(b.target, b.source)
    none = fix_batch(pools, replace(every, circle_share=0.0), random.Random(3))
    assert torch.equal(none.target, none.source)  # nothing redrawn: the render itself


def test_the_command_refuses_what_it_cannot_train_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(tmp_path / "a", 1.0, source=tmp_path / "none") == 2
    assert "no weights in" in capsys.readouterr().out
    assert main(tmp_path / "b", 1.0, lr=0.5) == 2
    assert "--lr 0.5: the peak learning rate must be above 0" in capsys.readouterr().out
    assert main(tmp_path / "c", 0.0) == 2  # nothing to export
    assert "--minutes 0 exports a trained expert" in capsys.readouterr().out
    assert main(tmp_path / "d", 1.0, focus=("hexagon", "blob")) == 2
    assert "--focus blob: not a shape; the shapes are circle," in capsys.readouterr().out
    assert not any((tmp_path / d).exists() for d in "abcd")


def test_focus_keeps_the_one_object_batches_to_the_named_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = CONFIGS["tiny"]
    ae = AutoEncoder(CONFIGS["default"].ae)
    weights.export(weights.Models(ae, DiT(tiny.dit), Upscaler(tiny.sr), {}), tmp_path / "src")
    small = build_pools(7, 400, 8, 6, tmp_path / "cache", log=lambda _: None)
    monkeypatch.setattr(expert_train, "build_pools", lambda *a, **k: small)
    seen: list[Pools] = []
    monkeypatch.setattr(expert_train, "train", lambda _s, _a, pools, *a, **k: seen.append(pools))
    focus = ("flower", "hexagon")
    assert main(tmp_path / "run", 1.0, source=tmp_path / "src", focus=focus) == 0
    (pools,) = seen
    assert pools.shapes and {s.objs[0].shape for s in pools.shapes} == set(focus)
    batch = fix_batch(pools, replace(CFG, kinds=("shape",), batch=8), random.Random(0))
    assert {o.shape for p in batch.plans for o in p} <= set(focus)
    saved = torch.load(tmp_path / "run" / "expert.pt", weights_only=False)
    assert tuple(saved["config"]["shape_focus"]) == focus  # the run says what it trained on


def test_zero_minutes_exports_the_saved_expert_as_this_code_samples_it(tmp_path: Path) -> None:
    tiny = CONFIGS["tiny"]
    src = tmp_path / "src"
    ae = AutoEncoder(CONFIGS["default"].ae)
    weights.export(weights.Models(ae, DiT(tiny.dit), Upscaler(tiny.sr), {}), src)
    old = replace(CFG.model, t_switch=0.4, max_objects=1, guidance_share=0.25)
    state = new_state(replace(CFG, model=old))
    state.step = 5
    save(state, tmp_path)
    assert main(tmp_path, 0.0, source=src) == 0
    back = weights.load(tmp_path / "weights")
    assert back.expert is not None and back.meta["expert_steps"] == 5  # not trained further
    now = {k: getattr(ExpertConfig(), k) for k in SAMPLING_FIELDS}
    assert back.expert.cfg == replace(CFG.model, **now)
    for a, b in zip(state.ema.parameters(), back.expert.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)


def test_a_run_can_go_on_from_the_expert_a_weights_directory_ships(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A new machine has the shipped weights but not the run's expert.pt (session 38).
    tiny = CONFIGS["tiny"]
    ae = AutoEncoder(CONFIGS["default"].ae)
    bare = weights.Models(ae, DiT(tiny.dit), Upscaler(tiny.sr), {})
    weights.export(bare, tmp_path / "bare")
    assert main(tmp_path / "a", 1.0, source=tmp_path / "bare", go_on=True) == 2
    assert "which has none: leave --go-on out" in capsys.readouterr().out
    assert not (tmp_path / "a").exists()
    old = replace(CFG.model, t_switch=0.4, guidance_share=0.25)
    trained = new_state(replace(CFG, model=old)).ema
    for p in trained.parameters():  # not a new expert's zeros
        torch.nn.init.normal_(p, std=0.1)
    meta = {"expert_steps": 7, "expert_seconds": 3.0}
    weights.export(replace(bare, meta=meta, expert=trained), tmp_path / "ship")
    ship = weights.load(tmp_path / "ship")
    assert ship.expert is not None
    state = from_weights(ship.expert, ship.meta, ExpertTrainConfig(lr=3e-4))
    assert (state.step, state.seconds, state.cfg.lr) == (7, 3.0, 3e-4)
    now = {k: getattr(ExpertConfig(), k) for k in SAMPLING_FIELDS}
    assert state.cfg.model == replace(old, **now)  # sampled as this code says
    params = zip(trained.parameters(), state.net.parameters(), state.ema.parameters(), strict=True)
    for a, b, c in params:
        assert torch.allclose(a, b, atol=1e-3) and torch.equal(b, c)
        assert b.dtype == torch.float32
    assert not state.opt.state  # a fresh optimiser


def test_the_cli_reads_focus_as_comma_separated_shapes(tmp_path: Path) -> None:
    args = ["train-expert", "--minutes", "1", "--out", str(tmp_path / "x")]
    result = CliRunner().invoke(app, [*args, "--focus", "hexagon, blob"])
    assert result.exit_code == 2 and "--focus blob: not a shape" in result.output, result.output
    assert not (tmp_path / "x").exists()
