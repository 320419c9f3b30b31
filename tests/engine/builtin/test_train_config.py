from dataclasses import asdict, replace

import pytest

from dreamserve.engine.builtin.checkpoint import resume_config
from dreamserve.engine.builtin.stream import KINDS
from dreamserve.engine.builtin.train_config import CONFIGS, TrainConfig


def sample_share(cfg: TrainConfig, kind: str) -> float:
    """The expected share of training samples (not batches) that are of `kind`."""
    per_kind = [m * b for m, b in zip(cfg.mix, cfg.batch, strict=True)]
    return per_kind[KINDS.index(kind)] / sum(per_kind)


def test_refmix_is_the_default_schedule_with_nearly_twice_the_reference_samples() -> None:
    default, refmix = CONFIGS["default"], CONFIGS["refmix"]
    assert replace(refmix, mix=default.mix) == default  # only the mix differs
    assert round(sample_share(default, "ref"), 2) == 0.09
    assert round(sample_share(refmix, "ref"), 2) == 0.15


def test_resuming_the_shipped_models_checkpoint_with_refmix_keeps_the_model() -> None:
    saved = replace(CONFIGS["default"], seed=99)  # the seed is the model's, so it must survive
    cfg = resume_config(saved, CONFIGS["refmix"])
    assert cfg == replace(CONFIGS["refmix"], seed=99)
    assert (cfg.dit, cfg.ae, cfg.seed) == (saved.dit, saved.ae, 99)


def test_compose_gives_relations_and_counts_the_one_object_scenes_samples() -> None:
    default, compose = CONFIGS["default"], CONFIGS["compose"]
    assert replace(compose, mix=default.mix) == default  # only the mix differs
    assert sample_share(default, "compose") == 0.0  # the shipped schedule has none
    assert round(sample_share(compose, "compose"), 2) == 0.35
    for kind in ("edit", "ref"):  # what edits and references get is kept
        assert sample_share(compose, kind) == pytest.approx(sample_share(default, kind))


def test_a_config_saved_before_compose_batches_loads_with_none() -> None:
    saved = asdict(CONFIGS["default"])
    saved["mix"], saved["batch"] = [0.3, 0.25, 0.15, 0.3], [32, 24, 16, 32]
    cfg = TrainConfig.from_dict(saved)
    assert cfg.mix == (0.3, 0.25, 0.15, 0.3, 0.0) and cfg.batch == (32, 24, 16, 32, 32)
