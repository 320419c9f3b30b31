"""The `dreamserve` command as a user runs it: keys against a live server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

from tests.support.live import running_server


def cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dreamserve.cli", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout


def create_key(data_dir: Path, name: str) -> tuple[str, str]:
    out = cli("keys", "create", name, "--data-dir", str(data_dir))
    key_id = re.search(r"created key (\S+)", out)
    token = re.search(r"token \(shown once\): (\S+)", out)
    assert key_id and token, out
    return key_id.group(1), token.group(1)


def test_keys_authenticate_isolate_and_revoke(tmp_path: Path) -> None:
    alice_id, alice = create_key(tmp_path, "alice")
    _, bob = create_key(tmp_path, "bob")
    listing = cli("keys", "list", "--data-dir", str(tmp_path))
    assert f"{alice_id}\talice\tactive" in listing and alice not in listing  # never the token

    with running_server(tmp_path) as server:
        assert "runs OPEN" not in server.log()
        as_alice = replicate.Client(api_token=alice, base_url=server.url)
        as_bob = replicate.Client(api_token=bob, base_url=server.url)
        mine = as_alice.models.predictions.create(
            model="bytedance/seedream-4", input={"prompt": "alice's", "size": "1K"}
        )
        assert httpx.get(f"{server.url}/v1/predictions/{mine.id}").status_code == 401
        with pytest.raises(ReplicateError) as err:
            as_bob.predictions.get(mine.id)
        assert err.value.status == 404  # another key's prediction does not exist for bob
        assert mine.id not in [p.id for p in as_bob.predictions.list().results]

        assert "revoked" in cli("keys", "revoke", alice_id, "--data-dir", str(tmp_path))
        with pytest.raises(ReplicateError) as err:
            as_alice.predictions.get(mine.id)
        assert err.value.status == 401
