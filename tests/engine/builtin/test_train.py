import json
from pathlib import Path

import pytest

from dreamserve.engine.builtin import train, weights


@pytest.mark.slow
def test_trains_a_few_steps_checkpoints_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert train.main(out=out, config="tiny") == 0
    ckpt = out / "ckpt.pt"
    state = train.load(ckpt)
    assert state.ae_done and state.ae_step == 2 and state.dit_step == 4
    assert state.cfg.dit.dim == 32  # the checkpoint carries its config
    assert weights.available(out / "weights")
    meta = json.loads((out / "weights" / "config.json").read_text())["meta"]
    assert meta["dit_steps"] == 4 and meta["seed"] == state.cfg.seed

    assert train.main(out=out, config="tiny", resume=True) == 0
    again = train.load(ckpt)
    assert again.ae_step == 2 and again.dit_step == 8  # AE kept, DiT continued


def test_unknown_config_is_refused(tmp_path: Path) -> None:
    assert train.main(out=tmp_path, config="nope") == 2
