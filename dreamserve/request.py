"""GenerationRequest: the canonical Seedream 4.0 input every dialect translates into.

Dialects map their own field names onto this model; validation happens here once, so every
dialect rejects the same bad input with the same rule. Errors are `RequestInvalid`, a list of
(field, rule) pairs the HTTP layer turns into a 422 naming each field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Size = Literal["1K", "2K", "4K", "custom"]
AspectRatio = Literal[
    "1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9", "match_input_image"
]
OutputFormat = Literal["jpg", "png", "webp"]

MAX_PROMPT_CHARS = 2000
MAX_INPUT_IMAGES = 10  # Seedream 4.0 on Replicate; runware allows 14 (see max_input_images below)
MAX_TOTAL_IMAGES = 15  # input images + generated images
MIN_CUSTOM_SIDE, MAX_SIDE = 1024, 4096

# Published Seedream 4.0 pixel sizes at 2K; 1K halves them, 4K doubles them (capped, below).
SIZES_2K: dict[str, tuple[int, int]] = {
    "1:1": (2048, 2048),
    "4:3": (2304, 1728),
    "3:4": (1728, 2304),
    "16:9": (2560, 1440),
    "9:16": (1440, 2560),
    "3:2": (2496, 1664),
    "2:3": (1664, 2496),
    "21:9": (3024, 1296),
}
SCALE = {"1K": 0.5, "2K": 1.0, "4K": 2.0}

# fal-style presets (eachlabs `image_size`): exact pixel sizes below the custom range.
PRESETS: dict[str, tuple[int, int]] = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}


@dataclass(frozen=True)
class FieldError:
    field: str
    rule: str


class RequestInvalid(ValueError):
    """One or more fields broke a rule. `errors` names each field and the rule it broke."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.rule}" for e in errors))


class GenerationRequest(BaseModel):
    """The Seedream 4.0 inputs, with Replicate's defaults."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    image_input: tuple[str, ...] = ()
    size: Size = "2K"
    aspect_ratio: AspectRatio = "match_input_image"
    width: int = Field(default=2048, ge=MIN_CUSTOM_SIDE, le=MAX_SIDE)
    height: int = Field(default=2048, ge=MIN_CUSTOM_SIDE, le=MAX_SIDE)
    sequential_image_generation: Literal["disabled", "auto"] = "disabled"
    max_images: int = Field(default=1, ge=1, le=MAX_TOTAL_IMAGES)
    enhance_prompt: bool = True
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    # None: the engine's own default (the built-in model's is its measured best, MODEL_CARD.md).
    guidance_scale: float | None = Field(default=None, ge=1.0, le=10.0)
    num_outputs: int = Field(default=1, ge=1, le=MAX_TOTAL_IMAGES)
    output_format: OutputFormat = "jpg"
    output_quality: int = Field(default=95, ge=20, le=99)
    safety_checker: bool = True
    # A dialect-specific exact size (eachlabs presets such as square 512x512) that bypasses
    # the 1024-4096 custom range; None means "use size/aspect_ratio/width/height".
    preset: str | None = None
    # How many input images this dialect allows (Replicate 10, runware 14). Kept in the stored
    # request so the worker's re-validation applies the same limit the dialect accepted.
    max_input_images: int = Field(default=MAX_INPUT_IMAGES, ge=1, le=14)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> GenerationRequest:
        if not self.prompt.strip():
            raise ValueError("prompt: must contain text, not only white space")
        if len(self.image_input) > self.max_input_images:
            raise ValueError(f"image_input: at most {self.max_input_images} images")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset: must be one of {', '.join(PRESETS)}")
        if self.sequential_image_generation == "auto":
            total = len(self.image_input) + self.max_images
            if total > MAX_TOTAL_IMAGES:
                raise ValueError(
                    f"max_images: input images ({len(self.image_input)}) + max_images "
                    f"({self.max_images}) must not exceed {MAX_TOTAL_IMAGES}"
                )
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> GenerationRequest:
        """Validate a canonical dict; raise RequestInvalid naming every broken field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RequestInvalid(_field_errors(exc)) from None

    @property
    def image_count(self) -> int:
        """Upper bound on the images this request produces."""
        if self.sequential_image_generation == "auto":
            return self.max_images
        return self.num_outputs

    def pixel_size(self, first_input: tuple[int, int] | None = None) -> tuple[int, int]:
        """The exact (width, height) of every output image.

        `first_input` is the first input image's (width, height), used by match_input_image.
        """
        if self.preset is not None:
            return PRESETS[self.preset]
        if self.size == "custom":
            return (self.width, self.height)
        ratio = self.aspect_ratio
        if ratio == "match_input_image":
            if first_input is None:
                ratio = "1:1"
            else:
                return _match_input(first_input, SCALE[self.size])
        w2k, h2k = SIZES_2K[ratio]
        return _cap(w2k * SCALE[self.size], h2k * SCALE[self.size])


def _match_input(first_input: tuple[int, int], scale: float) -> tuple[int, int]:
    """Keep the input's aspect ratio at the pixel area of this size's 1:1 image."""
    w, h = first_input
    area = (2048 * scale) ** 2
    ratio = w / h
    return _cap(_round16(math.sqrt(area * ratio)), _round16(math.sqrt(area / ratio)))


def _round16(x: float) -> int:
    return max(16, int(round(x / 16.0)) * 16)


def _cap(w: float, h: float) -> tuple[int, int]:
    """Past a long side of 4096, scale to exactly 4096 with the short side a multiple of 16.

    Sizes within the limit pass through unchanged (1K halves the table exactly: 1512x648).
    """
    if max(w, h) <= MAX_SIDE:
        return (int(w), int(h))
    if w >= h:
        return (MAX_SIDE, _round16(h * MAX_SIDE / w))
    return (_round16(w * MAX_SIDE / h), MAX_SIDE)


def _field_errors(exc: ValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"])
        if err["type"] == "value_error":
            # Our own cross-field rules carry "field: rule" in the message.
            text = msg.removeprefix("Value error, ")
            field, _, rule = text.partition(": ")
            out.append(FieldError(field or loc or "input", rule or text))
        elif err["type"] == "missing":
            out.append(FieldError(loc, "is required"))
        else:
            out.append(FieldError(loc or "input", msg))
    return out
