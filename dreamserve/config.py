"""Settings from flags and DREAMSERVE_* environment variables (flags win)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    workers: int = 1
    generator: str = "builtin"  # "builtin" or "package.module:factory"
    public_base_url: str | None = None  # defaults to http://{host}:{port}
    output_ttl: float = 3600.0  # seconds an output file stays downloadable
    file_ttl: float = 24 * 3600.0  # seconds an uploaded /v1/files file lives
    insecure_open: bool = False  # allow running without API keys on a non-loopback bind
    lease_seconds: float = 30.0
    max_attempts: int = 3  # claims before a prediction whose worker keeps dying is failed
    fetch_timeout: float = 20.0
    fetch_max_bytes: int = 30 * 1024 * 1024
    max_input_pixels: int = 36_000_000
    webhook_secret: str | None = None  # generated and kept in the data dir when unset

    @property
    def store_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'dreamserve.db'}"

    @property
    def base_url(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @classmethod
    def load(cls, **flags: Any) -> Settings:
        """Defaults, then DREAMSERVE_<FIELD> from the environment, then non-None flags."""
        base = cls()
        env: dict[str, Any] = {}
        for f in fields(cls):
            raw = os.environ.get(f"DREAMSERVE_{f.name.upper()}")
            if raw is not None:
                env[f.name] = _coerce(getattr(base, f.name), raw, f.name)
        given = {k: v for k, v in flags.items() if v is not None}
        merged = replace(base, **{**env, **given})
        return replace(merged, data_dir=Path(merged.data_dir))


def _coerce(default: Any, raw: str, name: str) -> Any:
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, Path) or name == "data_dir":
        return Path(raw)
    return raw
