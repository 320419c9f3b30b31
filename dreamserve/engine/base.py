"""The Generator seam: what every engine (built-in model, diffusers, test doubles) implements.

The worker fetches and decodes input images (media/) before calling an engine, so engines
never touch the network; the worker also resizes and encodes what comes back, so an engine
may return images near the asked size and the output still has exactly the pixels asked for.
This module must stay importable without torch: the API process reads capabilities from it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL.Image import Image

from dreamserve.request import GenerationRequest


@dataclass(frozen=True)
class Progress:
    """One step of work: `step` of `total` done; `message` becomes a log line when set."""

    step: int
    total: int
    message: str | None = None


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


class Canceled(Exception):
    """Raised by an engine when should_cancel() returned True between steps."""


@dataclass(frozen=True)
class Capabilities:
    text_to_image: bool = True
    edit: bool = True
    max_references: int = 10
    sequential: bool = True
    max_side: int = 4096


@dataclass(frozen=True)
class Task:
    """Everything an engine needs for one prediction, already fetched and resolved."""

    request: GenerationRequest
    images: Sequence[Image]  # decoded image_input, in order
    width: int  # exact output size (request.pixel_size of the first input)
    height: int
    seed: int  # resolved: the request's seed, or one the worker drew and will report


@runtime_checkable
class Generator(Protocol):
    name: str
    capabilities: Capabilities

    def generate(self, task: Task, on_progress: ProgressFn, should_cancel: CancelFn) -> list[Image]:
        """Return the output images; raise Canceled if should_cancel() turns True."""
        ...


BUILTIN = "builtin"


def load_generator(spec: str) -> Generator:
    """Load an engine by name ("builtin") or by import path ("package.module:factory").

    The factory is called with no arguments and returns a Generator.
    """
    if spec == BUILTIN:
        spec = "dreamserve.engine.builtin.pipeline:BuiltinGenerator"
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"generator {spec!r}: use 'builtin' or 'package.module:factory'")
    factory = getattr(importlib.import_module(module_name), attr)
    gen = factory()
    if not isinstance(gen, Generator):
        raise TypeError(f"generator {spec!r} does not implement the Generator protocol")
    return gen
