import copy
from dataclasses import replace

from dreamserve.engine.builtin.checkpoint import resume_config
from dreamserve.engine.builtin.train_config import CONFIGS


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
