"""Shipped weights: safetensors (fp16) + config.json in dreamserve/engine/builtin/weights/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from dreamserve.engine.builtin.autoencoder import AEConfig, AutoEncoder
from dreamserve.engine.builtin.dit import DiT, DiTConfig

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def export(ae: AutoEncoder, dit: DiT, meta: dict[str, Any], dest: Path = PACKAGE_WEIGHTS) -> None:
    """Write ae.safetensors, dit.safetensors (fp16) and config.json (both configs + provenance)."""
    dest.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().cpu().half().contiguous() for k, v in ae.state_dict().items()},
        str(dest / "ae.safetensors"),
    )
    save_file(
        {k: v.detach().cpu().half().contiguous() for k, v in dit.state_dict().items()},
        str(dest / "dit.safetensors"),
    )
    config = {"ae": ae.cfg.to_dict(), "dit": dit.cfg.to_dict(), "meta": meta}
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def available(src: Path = PACKAGE_WEIGHTS) -> bool:
    return all((src / n).exists() for n in ("ae.safetensors", "dit.safetensors", "config.json"))


def load(src: Path = PACKAGE_WEIGHTS) -> tuple[AutoEncoder, DiT, dict[str, Any]]:
    """Models in float32, eval mode, plus the `meta` block of config.json."""
    config = json.loads((src / "config.json").read_text())
    ae = AutoEncoder(AEConfig.from_dict(config["ae"]))
    dit = DiT(DiTConfig.from_dict(config["dit"]))
    ae.load_state_dict({k: v.float() for k, v in load_file(str(src / "ae.safetensors")).items()})
    dit.load_state_dict({k: v.float() for k, v in load_file(str(src / "dit.safetensors")).items()})
    return ae.eval(), dit.eval(), config.get("meta", {})
