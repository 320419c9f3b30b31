from __future__ import annotations

import pytest

from dreamserve.jobs import queries


def test_parse_names_blocks_and_drops_comment_lines() -> None:
    text = "-- header\n-- name: a\n-- why\nSELECT 1;\n\n-- name: b\nSELECT 2\nFROM t;\n"
    assert queries.parse(text) == {"a": "SELECT 1;", "b": "SELECT 2\nFROM t;"}


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_the_shipped_file_loads_with_every_query_the_store_uses() -> None:
    sql = queries.load("sqlite")
    for name in ("schema", "claim_next", "record_progress", "finish_prediction", "claim_due"):
        assert sql[name].strip()
