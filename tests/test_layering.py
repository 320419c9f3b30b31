"""House rule: the API process never imports torch (it would cost seconds and hundreds of MB)."""

from __future__ import annotations

import subprocess
import sys

API_MODULES = ("dreamserve.server", "dreamserve.api.app", "dreamserve.service", "dreamserve.cli")
HEAVY = ("torch", "transformers", "sentence_transformers")


def test_the_api_process_never_imports_torch() -> None:
    code = (
        f"import sys; import {', '.join(API_MODULES)}; "
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported by the API process: {out.stdout.strip()}"
