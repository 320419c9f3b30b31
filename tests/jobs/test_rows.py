from __future__ import annotations

import pytest

from dreamserve.jobs import rows
from dreamserve.jobs.model import BadCursor


def test_cursor_round_trips_exactly() -> None:
    created = 1763700000.123456789
    cursor = rows.encode_cursor(rows.OLDER, created, "abc")
    assert rows.decode_cursor(cursor) == (rows.OLDER, created, "abc")


@pytest.mark.parametrize("cursor", ["", "%%%", "eHx5fHo", "b3x4fGE"])
def test_foreign_cursors_are_bad_cursors(cursor: str) -> None:
    with pytest.raises(BadCursor):
        rows.decode_cursor(cursor)
