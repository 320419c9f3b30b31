import copy
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dreamserve.cli import app
from dreamserve.engine.builtin import checkpoint, train, weights
from dreamserve.engine.builtin.image_steps import decoder_kinds
from dreamserve.engine.builtin.train_config import CONFIGS


@pytest.mark.slow
def test_trains_a_few_steps_checkpoints_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny") == 0
    ckpt = out / "ckpt.pt"
    state = checkpoint.load(ckpt)
    assert state.ae_done and state.ae_step == 2 and state.dit_step == 4
    assert state.sr_done and state.sr_step == 2  # the upscaler stage ran, and only once
    assert state.cfg.dit.dim == 32  # the checkpoint carries its config
    assert weights.available(out / "weights")
    meta = json.loads((out / "weights" / "config.json").read_text())["meta"]
    assert meta["dit_steps"] == 4 and meta["seed"] == state.cfg.seed

    assert train.main(out=out, config="tiny", resume=True) == 0
    again = checkpoint.load(ckpt)
    assert again.ae_step == 2 and again.sr_step == 2 and again.dit_step == 8  # DiT continued


@pytest.mark.slow
def test_tuning_the_decoder_keeps_the_encoder_and_trains_the_upscaler_again(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny") == 0
    before = checkpoint.load(out / "ckpt.pt")
    assert train.main(out=out, config="tiny", resume=True, tune_decoder=1.0) == 0
    after = checkpoint.load(out / "ckpt.pt")
    assert after.dec_step == 2 and after.ae_step == 2  # steps capped by the tiny config
    assert after.sr_step == 4 and after.dit_step == 8  # the upscaler ran again, the DiT went on
    enc, dec = before.ae.encoder.state_dict(), before.ae.decoder.state_dict()
    assert all(torch.equal(v, after.ae.encoder.state_dict()[k]) for k, v in enc.items())
    assert after.ae.cfg.latent_scale == before.ae.cfg.latent_scale  # the DiT's latents as were
    assert not all(torch.equal(v, after.ae.decoder.state_dict()[k]) for k, v in dec.items())
    meta = json.loads((out / "weights" / "config.json").read_text())["meta"]
    assert meta["decoder_steps"] == 2


@pytest.mark.slow
def test_a_decoder_grown_for_tuning_ships_and_resumes_with_its_blocks(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny") == 0
    grown = dict(resume=True, tune_decoder=1.0, decoder_blocks=(2, 1))
    assert train.main(out=out, config="tiny", **grown) == 0  # type: ignore[arg-type]
    after = checkpoint.load(out / "ckpt.pt")
    assert after.ae.cfg.dec_blocks == (2, 1) and after.dec_step == 2
    assert len(after.ae.decoder.more0) == 1 and len(after.ae.decoder.more1) == 1
    shipped = weights.load(out / "weights")  # config.json carries the blocks to build
    assert shipped.ae.cfg.dec_blocks == (2, 1)
    ae, tuned = shipped.ae.decoder.state_dict(), after.ae.decoder.state_dict()
    assert all(torch.allclose(v, tuned[k].half().float()) for k, v in ae.items())
    # Shrinking is refused with the rule; the checkpoint keeps its blocks.
    shrink = dict(resume=True, tune_decoder=1.0, decoder_blocks=(1, 1))
    assert train.main(out=out, config="tiny", **shrink) == 2  # type: ignore[arg-type]
    assert checkpoint.load(out / "ckpt.pt").ae.cfg.dec_blocks == (2, 1)


def test_decoder_blocks_without_tuning_are_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train.main(out=tmp_path, config="tiny", decoder_blocks=(2, 1)) == 2
    assert "--tune-decoder" in capsys.readouterr().out
    assert not (tmp_path / "ckpt.pt").exists()


@pytest.mark.parametrize("blocks", ["3", "3,x", "3,2,1", "-1,2"])
def test_the_cli_names_the_form_of_decoder_blocks(tmp_path: Path, blocks: str) -> None:
    args = ["train", "--out", str(tmp_path), "--tune-decoder", "1", "--decoder-blocks", blocks]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "FIRST,LAST" in result.output, result.output
    assert not (tmp_path / "ckpt.pt").exists()


def test_unknown_config_is_refused(tmp_path: Path) -> None:
    assert train.main(out=tmp_path, config="nope") == 2


@pytest.mark.slow
def test_a_resumed_run_trains_at_the_peak_learning_rate_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny") == 0
    assert train.main(out=out, config="tiny", resume=True, lr=1e-4) == 0
    state = checkpoint.load(out / "ckpt.pt")
    assert state.cfg.lr == 1e-4 and json.loads((out / "config.json").read_text())["lr"] == 1e-4
    # No time limit keeps the cosine at its peak, and warm-up is over: the last step ran at it.
    used = [g["lr"] / g.get("lr_scale", 1.0) for g in state.opt_dit.param_groups]
    assert used == [pytest.approx(1e-4)] * len(used)


@pytest.mark.parametrize("lr", [0.0, -1e-4, 0.5])
def test_a_peak_learning_rate_out_of_range_is_refused_with_the_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lr: float
) -> None:
    assert train.main(out=tmp_path / "run", config="tiny", lr=lr) == 2
    assert "above 0 and at most 1e-2" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.slow
def test_resuming_a_model_from_before_the_copy_path_grows_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    old = copy.deepcopy(CONFIGS["tiny"])
    old.dit.copy_input, old.dit.copy_refs, old.dit.time_shift = False, False, 1.0
    state = checkpoint.new_state(old)
    state.ae_done = True
    out.mkdir()
    checkpoint.save(state, out)
    assert train.main(out=out, config="tiny", resume=True) == 0
    grown = checkpoint.load(out / "ckpt.pt")
    # Both copy paths grown: image 1's, then one slot per other input (4 channels each).
    assert grown.cfg.dit.copy_refs and grown.dit.latent_in.in_features == 4 * (1 + 3)
    assert grown.ema.cfg.time_shift == CONFIGS["tiny"].dit.time_shift  # exported with the EMA
    assert grown.dit_step == 4


def _tiny_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dit_value: float | None = None
) -> Path:
    """A "package" holding a tiny model, so the tests stay fast and never touch the real one.

    dit_value: fill the transformer's weights with it (something a new one never starts from).
    """
    pkg = tmp_path / "pkg"
    tiny = checkpoint.new_state(copy.deepcopy(CONFIGS["tiny"]))
    if dit_value is not None:
        with torch.no_grad():
            for p in tiny.ema.parameters():
                p.fill_(dit_value)
    meta = {"ae_steps": 7, "sr_steps": 3, "dit_steps": 11, "train_seconds": 3600.0}
    weights.export(weights.Models(tiny.ae, tiny.ema, tiny.sr, meta), pkg)
    monkeypatch.setattr(weights, "PACKAGE_WEIGHTS", pkg)
    monkeypatch.setattr(weights.load, "__defaults__", (pkg,))
    monkeypatch.setattr(weights.available, "__defaults__", (pkg,))
    return pkg


@pytest.mark.slow
def test_resume_without_a_checkpoint_continues_from_shipped_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_package(tmp_path, monkeypatch)
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny", resume=True) == 0
    state = checkpoint.load(out / "ckpt.pt")
    assert state.ae_done and state.ae_step == 7  # the shipped AE is kept, not retrained
    assert state.sr_done and state.sr_step == 3  # and so is the upscaler
    assert state.dit_step == 11 + 4 and state.seconds >= 3600.0


@pytest.mark.slow
def test_a_new_transformer_keeps_the_shipped_autoencoder_and_upscaler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _tiny_package(tmp_path, monkeypatch, dit_value=0.5)
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny", fresh_dit=True) == 0
    state = checkpoint.load(out / "ckpt.pt")
    assert state.ae_step == 7 and state.sr_step == 3  # kept, not retrained
    shipped_ae = weights.load(pkg).ae.state_dict()
    assert all(
        torch.allclose(v, shipped_ae[k], atol=1e-3) for k, v in state.ae.state_dict().items()
    )
    # The shipped hour is not carried over: a few tiny steps take seconds even on a busy CPU
    # (a 5 s shipped time made this fail when 4 steps took 5.7 s beside another job).
    assert state.dit_step == 4 and state.seconds < 600.0  # the transformer's own count and time
    assert not any((p == 0.5).all() for p in state.dit.parameters())


def test_a_gpu_config_without_a_gpu_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert train.main(out=tmp_path, config="gpu") == 2
    assert "no CUDA device" in capsys.readouterr().out


def test_flow_times_lean_towards_noise_but_cover_all_of_0_to_1() -> None:
    torch.manual_seed(0)
    t = train.flow_times(20000, 4.0, 0.15, torch.device("cpu"))
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert 0.15 < float((t > 0.9).float().mean()) < 0.35
    assert float((t < 0.2).float().mean()) > 0.02


def test_bf16_autocast_only_where_the_hardware_multiplies_bf16(tmp_path: Path) -> None:
    amx, old = tmp_path / "amx", tmp_path / "old"
    amx.write_text("flags\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    old.write_text("flags\t: fpu avx2\n")
    assert train.cpu_has_bf16(amx) and not train.cpu_has_bf16(old)
    assert not train.cpu_has_bf16(tmp_path / "missing")
    cfg = copy.deepcopy(CONFIGS["default"])
    assert train.autocast_bf16(copy.deepcopy(CONFIGS["gpu"]))
    cfg.bf16 = False
    assert not train.autocast_bf16(cfg)


@pytest.mark.slow
def test_resuming_a_checkpoint_from_before_the_upscaler_trains_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    state = checkpoint.new_state(copy.deepcopy(CONFIGS["tiny"]))
    state.ae_done = True
    out.mkdir()
    checkpoint.save(state, out)
    blob = torch.load(out / "ckpt.pt", weights_only=False)
    for key in ("sr", "opt_sr"):
        del blob[key]
    for key in ("sr_step", "sr_done"):
        del blob["counters"][key]
    del blob["config"]["sr"]
    torch.save(blob, out / "ckpt.pt")
    assert train.main(out=out, config="tiny", resume=True) == 0
    again = checkpoint.load(out / "ckpt.pt")
    assert again.sr_done and again.sr_step == 2 and again.dit_step == 4


def test_the_dit_loss_weights_object_pixels_and_keeps_its_scale() -> None:
    cfg = copy.deepcopy(CONFIGS["default"])  # cells of 4x4 latent pixels, 16 px per cell
    err = torch.zeros(1, 128, 2, 2)
    objects = torch.zeros(1, 1, 32, 32)
    objects[..., :16, :16] = 1.0  # one object over the top-left cell
    on_object = err.clone()
    on_object[:, :, 0, 0] = 1.0  # an error there ...
    off_object = err.clone()
    off_object[:, :, 1, 1] = 1.0  # ... costs object_weight times one on the background
    a, b = train.dit_loss(on_object, objects, cfg), train.dit_loss(off_object, objects, cfg)
    assert torch.isclose(a, cfg.object_weight * b)
    # With no objects (or a weight of 1) it is the plain MSE.
    plain = torch.randn(2, 128, 2, 3)
    assert torch.isclose(train.dit_loss(plain, torch.zeros(2, 1, 32, 48), cfg), plain.pow(2).mean())


def test_an_edge_weight_weights_the_outline_above_the_inside() -> None:
    cfg = replace(copy.deepcopy(CONFIGS["default"]), edge_weight=30.0)
    objects = torch.zeros(1, 1, 32, 32)
    objects[..., 2:14, 2:14] = 1.0  # an object inside the top-left cell, its rim partly off
    err = torch.zeros(1, 128, 2, 2)
    rim, inside, background = err.clone(), err.clone(), err.clone()
    # Cell (0,0) holds latent pixels 0-3 of each side: pixel 0 is half object (rim), 1 whole.
    rim.view(1, 8, 4, 4, 2, 2)[:, 0, 0, 0, 0, 0] = 1.0
    inside.view(1, 8, 4, 4, 2, 2)[:, 0, 1, 1, 0, 0] = 1.0
    background.view(1, 8, 4, 4, 2, 2)[:, 0, 0, 0, 1, 1] = 1.0
    r, i, b = (train.dit_loss(e, objects, cfg) for e in (rim, inside, background))
    assert torch.isclose(r, 30.0 * b) and torch.isclose(i, cfg.object_weight * b)


def test_a_shape_focus_names_only_shapes() -> None:
    with pytest.raises(ValueError, match="'hexagonn'"):
        replace(CONFIGS["default"], shape_focus=("circle", "hexagonn"))
    with pytest.raises(ValueError, match="decoder_focus: \\['suns'\\]"):
        replace(CONFIGS["smallround"], decoder_focus=("suns",))


def test_a_config_that_trains_only_parts_the_dit_lacks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(train.CONFIGS, "odd", replace(CONFIGS["tiny"], train_only=("nothing.",)))
    assert train.main(out=tmp_path, config="odd") == 2
    assert "('nothing.',), which this DiT does not have" in capsys.readouterr().out


def test_a_decoder_focus_gives_the_decoder_small_batches_half_the_time() -> None:
    rnd = random.Random(0)
    focused = [decoder_kinds(CONFIGS["smallround"], rnd) for _ in range(400)]
    assert 150 < focused.count(("small",)) < 250
    assert all(k == ("t2i", "edit", "shape") for k in focused if k != ("small",))
    plain = {decoder_kinds(CONFIGS["default"], rnd) for _ in range(50)}
    assert plain == {("t2i", "edit", "shape")}
