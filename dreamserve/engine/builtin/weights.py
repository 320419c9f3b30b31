"""Shipped weights: safetensors (fp16) + config.json in dreamserve/engine/builtin/weights/.

The expert for the last steps (expert.py) is optional: expert.safetensors and config.json's
"expert" block when a weights directory has one (`dreamserve train-expert`), none otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dreamserve.engine.builtin.autoencoder import AEConfig, AutoEncoder
from dreamserve.engine.builtin.dit import DiT, DiTConfig
from dreamserve.engine.builtin.expert import Expert, ExpertConfig
from dreamserve.engine.builtin.upscaler import SRConfig, Upscaler

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"
FILES = ("ae.safetensors", "dit.safetensors", "sr.safetensors", "config.json")


@dataclass
class Models:
    ae: AutoEncoder
    dit: DiT  # the EMA weights: what samples
    sr: Upscaler
    meta: dict[str, Any]  # provenance: steps, seed, training time, commit
    expert: Expert | None = None  # the EMA weights; None: the transformer draws every step


def export(models: Models, dest: Path = PACKAGE_WEIGHTS) -> None:
    """Write one fp16 safetensors file per model and config.json (configs + provenance)."""
    dest.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[str, torch.nn.Module]] = [
        ("ae", models.ae),
        ("dit", models.dit),
        ("sr", models.sr),
    ]
    if models.expert is not None:
        parts.append(("expert", models.expert))
    for name, model in parts:
        save_file(
            {k: v.detach().cpu().half().contiguous() for k, v in model.state_dict().items()},
            str(dest / f"{name}.safetensors"),
        )
    config: dict[str, Any] = {
        "ae": models.ae.cfg.to_dict(),
        "dit": models.dit.cfg.to_dict(),
        "sr": models.sr.cfg.to_dict(),
        "meta": models.meta,
    }
    if models.expert is not None:
        config["expert"] = models.expert.cfg.to_dict()
    else:
        (dest / "expert.safetensors").unlink(missing_ok=True)  # not a stale one beside it
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def available(src: Path = PACKAGE_WEIGHTS) -> bool:
    return all((src / n).exists() for n in FILES)


def _load_into(model: torch.nn.Module, path: Path) -> None:
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})


def load(src: Path = PACKAGE_WEIGHTS) -> Models:
    """The models in float32 and eval mode, with the `meta` block of config.json."""
    config = json.loads((src / "config.json").read_text())
    ae = AutoEncoder(AEConfig.from_dict(config["ae"]))
    dit = DiT(DiTConfig.from_dict(config["dit"]))
    sr = Upscaler(SRConfig.from_dict(config["sr"]))
    for name, model in (("ae", ae), ("dit", dit), ("sr", sr)):
        _load_into(model, src / f"{name}.safetensors")
    expert = None
    if "expert" in config:
        expert = Expert(ExpertConfig(**config["expert"]))
        _load_into(expert, src / "expert.safetensors")
        expert.eval()
    return Models(ae.eval(), dit.eval(), sr.eval(), config.get("meta", {}), expert)
