from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dreamserve.jobs.model import NewPrediction
from dreamserve.jobs.store import SqlStore, open_store


def new_prediction(**overrides: Any) -> NewPrediction:
    fields: dict[str, Any] = {
        "dialect": "replicate",
        "model": "bytedance/seedream-4",
        "version": "v1",
        "input": {"prompt": "a red fox"},
        "request": {"prompt": "a red fox"},
    }
    fields.update(overrides)
    return NewPrediction(**fields)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'dreamserve.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = open_store(store_url, max_attempts=3)
    yield s
    s.close()
