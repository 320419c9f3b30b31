from __future__ import annotations

from pathlib import Path

import pytest

from dreamserve.config import Settings


def test_flags_win_over_environment_which_wins_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DREAMSERVE_WORKERS", "3")
    monkeypatch.setenv("DREAMSERVE_PORT", "9000")
    monkeypatch.setenv("DREAMSERVE_INSECURE_OPEN", "true")
    monkeypatch.setenv("DREAMSERVE_DATA_DIR", "/tmp/x")
    s = Settings.load(port=8100, host=None)
    assert (s.workers, s.port, s.insecure_open, s.data_dir) == (3, 8100, True, Path("/tmp/x"))
    assert s.host == "127.0.0.1"


def test_base_url_and_loopback() -> None:
    assert Settings(port=8001).base_url == "http://127.0.0.1:8001"
    assert Settings(public_base_url="https://img.example/").base_url == "https://img.example"
    assert Settings(host="::1").base_url == "http://[::1]:8000"
    assert Settings(host="127.0.0.2").is_loopback and not Settings(host="0.0.0.0").is_loopback
