import copy
from dataclasses import replace

import pytest
import torch

from dreamserve.engine.builtin.autoencoder import AEConfig
from dreamserve.engine.builtin.checkpoint import grow, grow_decoder, new_state, resume_config
from dreamserve.engine.builtin.dit import LAYOUT_DIM, DiTConfig
from dreamserve.engine.builtin.image_steps import optimize
from dreamserve.engine.builtin.train_config import CONFIGS, TrainConfig


def _fine_tiny(depth: int = 1, **grown: object) -> tuple[TrainConfig, TrainConfig]:
    """A tiny config with fine tokens, and the same grown by `grown` (DiTConfig fields)."""
    fine = DiTConfig(latent_ch=16, patch=4, dim=32, depth=depth, heads=2, mlp_ratio=2.0, split=2)
    have = replace(copy.deepcopy(CONFIGS["tiny"]), dit=fine)
    return have, replace(copy.deepcopy(have), dit=replace(fine, **grown))


def _trained(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for g in opt.param_groups for p in g["params"]}


def test_resuming_keeps_the_model_and_takes_the_schedule_and_hardware_from_the_config() -> None:
    saved = replace(copy.deepcopy(CONFIGS["default"]), seed=99, pool_t2i=10, lr=1e-9)
    cfg = resume_config(saved, CONFIGS["gpu"])
    assert (cfg.seed, cfg.pool_t2i, cfg.dit, cfg.ae) == (99, 10, saved.dit, saved.ae)
    assert (cfg.device, cfg.workers, cfg.lr, cfg.batch) == (
        "cuda",
        CONFIGS["gpu"].workers,
        CONFIGS["gpu"].lr,
        CONFIGS["gpu"].batch,
    )


def test_growing_splits_a_one_token_per_cell_model_into_the_configs_fine_tokens() -> None:
    cells = DiTConfig(latent_ch=16, patch=4, dim=32, depth=1, heads=2, mlp_ratio=2.0)
    have = replace(copy.deepcopy(CONFIGS["tiny"]), dit=cells)
    want = replace(copy.deepcopy(CONFIGS["tiny"]), dit=replace(cells, split=2))
    state = grow(new_state(have), want)
    assert state.cfg.dit.split == state.dit.cfg.split == state.ema.cfg.split == 2
    assert state.dit.out.out_features == 4 and not state.ema.out.weight.requires_grad
    # The optimiser trains the grown model's parameters, not the old ones.
    opt_params = {id(p) for g in state.opt_dit.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in state.dit.parameters()}
    assert grow(state, want) is state  # nothing left to grow


def test_growing_adds_the_configs_local_convolutions_to_a_model_without_them() -> None:
    have, want = _fine_tiny(depth=2, local=3)
    state = grow(new_state(have), want)
    assert state.cfg.dit.local == state.dit.cfg.local == state.ema.cfg.local == 3
    assert all(b.local is not None for b in state.ema.blocks)
    assert _trained(state.opt_dit) == {id(p) for p in state.dit.parameters()}
    assert grow(state, want) is state


def test_growing_adds_layout_plans_starting_as_the_model_it_was_grown_from() -> None:
    tiny = copy.deepcopy(CONFIGS["tiny"])
    have = replace(tiny, dit=replace(tiny.dit, layout=False))
    state = new_state(have)
    with torch.no_grad():
        for p in state.dit.parameters():  # adaLN-Zero starts at zero: make the model act
            p.add_(0.1 * torch.randn_like(p))
    old = copy.deepcopy(state.dit).eval()
    state = grow(state, tiny)
    assert state.cfg.dit.layout and state.dit.layout_in is not None
    assert state.ema.layout_in is not None
    x, t = torch.randn(1, 4, 4, 4), torch.tensor([0.5])
    text, mask = torch.randn(1, 3, 384), torch.ones(1, 3, dtype=torch.bool)
    plan = torch.randn(1, LAYOUT_DIM, 4, 4)
    with torch.no_grad():
        assert torch.equal(old(x, t, text, mask), state.dit.eval()(x, t, text, mask, None, plan))
    assert grow(state, tiny) is state


def test_growing_adds_rotary_positions_and_never_removes_what_a_model_has() -> None:
    fine = DiTConfig(latent_ch=16, patch=4, dim=32, depth=2, heads=2, mlp_ratio=2.0, split=2)
    have = replace(copy.deepcopy(CONFIGS["tiny"]), dit=replace(fine, local=3))
    want = replace(copy.deepcopy(CONFIGS["tiny"]), dit=replace(fine, local=3, rope=True))
    state = grow(new_state(have), want)
    assert state.cfg.dit.rope and state.dit.cfg.rope and state.ema.cfg.rope
    assert all(b.attn.rope_gain is not None for b in state.ema.blocks)
    # The gains, grown at zero, train at 10x the learning rate and without weight decay.
    gains = {id(b.attn.rope_gain) for b in state.dit.blocks}
    rest, fast = state.opt_dit.param_groups
    assert {id(p) for p in fast["params"]} == gains and not gains & {id(p) for p in rest["params"]}
    optimize(state.opt_dit, sum(p.sum() for p in state.dit.parameters()), 1e-4)
    assert (rest["lr"], fast["lr"], fast["weight_decay"]) == (1e-4, pytest.approx(1e-3), 0.0)
    # A config without convolutions or rotary positions leaves a model that has them as it is
    # (it used to raise "the model already has 3x3 convolutions").
    plain = replace(copy.deepcopy(CONFIGS["tiny"]), dit=fine)
    assert grow(state, plain) is state and state.dit.cfg.local == 3 and state.dit.cfg.rope


def test_rotary_gains_grown_at_a_chosen_gain_start_there_in_the_model_and_its_ema() -> None:
    fine = DiTConfig(latent_ch=16, patch=4, dim=32, depth=2, heads=2, mlp_ratio=2.0, split=2)
    have = replace(copy.deepcopy(CONFIGS["tiny"]), dit=fine)
    want = replace(copy.deepcopy(CONFIGS["tiny"]), dit=replace(fine, rope=True))
    state = grow(new_state(have), want, rope_gain=1.0)
    for model in (state.dit, state.ema):
        gains = [b.attn.rope_gain for b in model.blocks]
        assert all(g is not None and bool((g == 1.0).all()) for g in gains)


def test_growing_leaves_the_configs_share_of_rotary_pairs_unturned() -> None:
    fine = DiTConfig(latent_ch=16, patch=4, dim=32, depth=2, heads=2, mlp_ratio=2.0, split=2)
    turned = replace(copy.deepcopy(CONFIGS["tiny"]), dit=replace(fine, rope=True))
    want = replace(copy.deepcopy(CONFIGS["tiny"]), dit=replace(fine, rope=True, rope_unturned=0.5))
    for have in (replace(copy.deepcopy(CONFIGS["tiny"]), dit=fine), turned):  # grown; rotary
        state = grow(new_state(have), want)
        cfgs = (state.cfg.dit, state.dit.cfg, state.ema.cfg)
        assert all(c.rope and c.rope_unturned == 0.5 for c in cfgs)
        assert grow(state, want) is state


def test_a_config_from_before_decoder_blocks_builds_the_one_block_decoder() -> None:
    old = {k: v for k, v in AEConfig().to_dict().items() if k != "dec_blocks"}
    assert AEConfig.from_dict(old).dec_blocks == (1, 0)
    assert AEConfig.from_dict({**old, "dec_blocks": [3, 2]}).dec_blocks == (3, 2)  # from JSON


def test_growing_the_decoder_gives_the_optimiser_its_new_parameters() -> None:
    state = new_state(copy.deepcopy(CONFIGS["tiny"]))
    before = sum(p.numel() for p in state.ae.parameters())
    state = grow_decoder(state, (2, 1))
    assert state.cfg.ae.dec_blocks == (2, 1) and state.ae.cfg is state.cfg.ae
    params = {id(p) for g in state.opt_ae.param_groups for p in g["params"]}
    assert params == {id(p) for p in state.ae.parameters()}
    assert sum(p.numel() for p in state.ae.parameters()) > before


def test_growing_adds_the_configs_refiner_to_the_model_and_its_ema() -> None:
    have, want = _fine_tiny(refine=8)
    state = grow(new_state(have), want)
    assert state.cfg.dit.refine == state.dit.cfg.refine == state.ema.cfg.refine == 8
    assert state.ema.refine is not None and not state.ema.refine.convs[0].weight.requires_grad
    assert state.dit.refine is not None  # its random start is the EMA's too
    assert torch.equal(state.ema.refine.convs[0].weight, state.dit.refine.convs[0].weight)
    assert _trained(state.opt_dit) == {id(p) for p in state.dit.parameters()}
    assert grow(state, want) is state


def test_train_only_freezes_all_but_the_named_parameters() -> None:
    have, want = _fine_tiny(refine=8)
    have, want = (replace(c, train_only=("refine.",)) for c in (have, want))
    state = grow(new_state(have), want)  # as from_package: the model lacks them at first
    assert state.dit.refine is not None
    assert _trained(state.opt_dit) == {id(p) for p in state.dit.refine.parameters()}
    assert not any(p.requires_grad for n, p in state.dit.named_parameters() if "refine" not in n)
