"""Test-only generators, loaded by spec (e.g. `--generator tests.support.generators:instant`).

They never ship as a default: the service's default is the built-in model. Each draws a flat
image whose colour comes from the prompt and seed, so tests can tell outputs apart.
Worker subprocesses import these by spec, so the repo root must be on PYTHONPATH there.
"""

from __future__ import annotations

import hashlib
import os
import time

from PIL import Image

from dreamserve.engine.base import Canceled, CancelFn, Capabilities, Progress, ProgressFn, Task


def _colour(text: str, seed: int, index: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{text}|{seed}|{index}".encode()).digest()
    return (digest[0], digest[1], digest[2])


class TestGenerator:
    """Draws flat images; `steps` steps of `step_seconds` each, checking cancel every step."""

    name = "test"
    capabilities = Capabilities()

    def __init__(self, steps: int = 1, step_seconds: float = 0.0, fail: bool = False) -> None:
        self.steps = steps
        self.step_seconds = step_seconds
        self.fail = fail

    def generate(
        self, task: Task, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> list[Image.Image]:
        for step in range(1, self.steps + 1):
            if should_cancel():
                raise Canceled()
            if self.step_seconds:  # sleep(0) still yields the CPU: "instant" must not
                time.sleep(self.step_seconds)
            on_progress(Progress(step, self.steps, f"step {step}/{self.steps}"))
        if self.fail:
            raise RuntimeError("the test generator was asked to fail")
        req = task.request
        count = req.max_images if req.sequential_image_generation == "auto" else req.num_outputs
        return [
            Image.new("RGB", (task.width, task.height), _colour(req.prompt, task.seed, i))
            for i in range(count)
        ]


def instant() -> TestGenerator:
    """One step, no waiting: for contract tests and throughput benchmarks."""
    return TestGenerator()


def slow() -> TestGenerator:
    """DREAMSERVE_TEST_STEPS steps of DREAMSERVE_TEST_STEP_SECONDS: cancel, stream, crash tests."""
    steps = int(os.environ.get("DREAMSERVE_TEST_STEPS", "50"))
    seconds = float(os.environ.get("DREAMSERVE_TEST_STEP_SECONDS", "0.1"))
    return TestGenerator(steps=steps, step_seconds=seconds)


def failing() -> TestGenerator:
    return TestGenerator(fail=True)
