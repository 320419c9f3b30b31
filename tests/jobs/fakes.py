"""A fake Runner for worker tests: steps, a sleep per step, behaviour chosen by the prompt."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dreamserve.engine.base import Canceled, CancelFn, Progress, ProgressFn
from dreamserve.jobs.model import Prediction


@dataclass(frozen=True)
class FakeOutput:
    blob_keys: tuple[str, ...]
    seed: int
    metrics: dict[str, float]


class FakeInputError(Exception):
    pass


@dataclass
class StepRunner:
    """prompt "fail" raises RuntimeError, "bad input" FakeInputError; anything else succeeds."""

    steps: int = 3
    step_seconds: float = 0.0
    on_step: Callable[[Prediction, int], None] | None = None
    steps_done: dict[str, int] = field(default_factory=dict)

    def run(
        self, prediction: Prediction, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> FakeOutput:
        self.steps_done[prediction.id] = 0
        for step in range(1, self.steps + 1):
            if should_cancel():
                raise Canceled()
            time.sleep(self.step_seconds)
            self.steps_done[prediction.id] = step
            on_progress(Progress(step, self.steps, f"step {step}/{self.steps}"))
            if self.on_step is not None:
                self.on_step(prediction, step)
        prompt = prediction.request.get("prompt")
        if prompt == "fail":
            raise RuntimeError("the engine broke")
        if prompt == "bad input":
            raise FakeInputError("image_input[0]: not an image")
        return FakeOutput((f"outputs/{prediction.id}/output_0.png",), 7, {"image_count": 1.0})
