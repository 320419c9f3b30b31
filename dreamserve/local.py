"""`dreamserve generate`: run the engine without a server and write the images to a folder.

Same path as a worker (runner.load_inputs + runner.render), minus the store and blobs: inputs
may also be local file paths, progress is a tqdm bar, outputs are named
`<prompt slug>-<seed>-<i>.<ext>` so reruns with the same seed land on the same names.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dreamserve.config import Settings
from dreamserve.engine.base import Progress, load_generator
from dreamserve.media.errors import InputError
from dreamserve.media.fetch import Fetched, Fetcher, too_large
from dreamserve.request import GenerationRequest, RequestInvalid
from dreamserve.runner import Rendered, load_inputs, render

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SLUG_CHARS = 48


def generate_files(inputs: dict[str, Any], out: Path, generator_spec: str) -> int:
    """Validate, generate and write; print each file written. Returns the exit code."""
    try:
        request = GenerationRequest.parse(inputs)
    except RequestInvalid as exc:
        for err in exc.errors:
            _error(f"{err.field}: {err.rule}")
        return EXIT_USAGE
    settings = Settings.load()
    with _Bar() as bar:
        try:
            fetcher = Fetcher(settings)
            try:
                images = load_inputs(
                    request,
                    lambda ref: _read_local_or_fetch(ref, fetcher, settings.fetch_max_bytes),
                    settings.max_input_pixels,
                    bar.update,
                    lambda: False,
                )
            finally:
                fetcher.close()
        except InputError as exc:
            _error(str(exc))
            return EXIT_USAGE
        try:
            generator = load_generator(generator_spec)
        except Exception as exc:  # any import or load failure: say what and stop
            _error(f"could not load generator {generator_spec!r}: {exc}")
            return EXIT_FAILED
        rendered = render(request, images, generator, bar.update, lambda: False)
    for path in write_outputs(rendered, request.prompt, out):
        print(path)
    return EXIT_OK


def write_outputs(rendered: Rendered, prompt: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(rendered.images):
        path = out / f"{slug(prompt)}-{rendered.seed}-{index}.{image.ext}"
        path.write_bytes(image.data)
        paths.append(path)
    return paths


def slug(prompt: str) -> str:
    """ "A red circle, left of a blue star!" -> "a-red-circle-left-of-a-blue-star"."""
    # NFKD splits "é" into "e" + an accent, so accented words keep their letters.
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    text = "-".join(words)[:SLUG_CHARS].rstrip("-")
    return text or "image"


def _read_local_or_fetch(ref: str, fetcher: Fetcher, limit: int) -> Fetched:
    """A local path when the reference is not a URL; otherwise what the service would fetch."""
    if ref[:5].lower() == "data:" or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", ref):
        return fetcher.fetch(ref)
    path = Path(ref).expanduser()
    try:
        if path.stat().st_size > limit:
            raise too_large(limit)
        return Fetched(path.read_bytes(), None, "local file")
    except FileNotFoundError:
        raise InputError(f"no such file: {ref}") from None
    except IsADirectoryError:
        raise InputError(f"is a directory, not an image file: {ref}") from None
    except PermissionError:
        raise InputError(f"cannot read {ref} (permission denied)") from None


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


class _Bar:
    """A tqdm bar over the engine's steps, opened at the first step.

    Notes before the steps (seed, fetched inputs) print as lines; an engine's per-step
    message shows beside the bar instead of scrolling the terminal.
    """

    def __init__(self) -> None:
        self._bar: tqdm[None] | None = None

    def update(self, progress: Progress) -> None:
        if progress.step <= 0:
            if progress.message:
                print(progress.message, file=sys.stderr)
            return
        if self._bar is None:
            self._bar = tqdm(total=progress.total, unit="step", desc="generating", file=sys.stderr)
        if self._bar.total != progress.total:
            self._bar.reset(total=progress.total)
        self._bar.n = progress.step
        if progress.message:
            self._bar.set_postfix_str(progress.message, refresh=False)
        self._bar.refresh()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
