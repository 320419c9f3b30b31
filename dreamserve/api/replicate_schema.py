"""The models this service answers for, in Replicate's shape, with a Cog `openapi_schema`.

The Input schema is derived from GenerationRequest itself (types, defaults, ranges, enums),
so the schema a client reads can never drift from the validation it meets. Its layout follows
what Cog publishes: enums as separate component schemas referenced through allOf, x-order
giving the field order, Output an array of URI strings (not an iterator, so the official
client's `run()` returns a list).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

from dreamserve.request import GenerationRequest

PUBLIC_NAME = "bytedance/seedream-4"
OWN_NAME = "dreamserve/builtin"
MODELS = (PUBLIC_NAME, OWN_NAME)
COG_VERSION = "0.16.8"  # any Cog >= 0.3.9: older ones make the client treat arrays as iterators
VERSION_CREATED_AT = datetime(
    2025, 9, 9, tzinfo=UTC
)  # Seedream 4.0's release; fixed so ids stay stable

# Canonical fields a Replicate client does not set (dialect plumbing).
HIDDEN_FIELDS = frozenset({"preset", "max_input_images"})

DESCRIPTIONS = {
    "prompt": "Text prompt for image generation or editing (at most 2000 characters)",
    "image_input": "Input images (1-10) for editing or as references: URLs, data URLs or "
    "/v1/files URLs",
    "size": "Image resolution: 1K (1024px), 2K (2048px), 4K (4096px), or 'custom' for width/height",
    "aspect_ratio": "Image aspect ratio; 'match_input_image' follows the first input image. "
    "Ignored when size is 'custom'",
    "width": "Image width when size is 'custom' (1024-4096)",
    "height": "Image height when size is 'custom' (1024-4096)",
    "sequential_image_generation": "'auto' lets the model decide to generate a set of related "
    "images (up to max_images); 'disabled' generates a single image",
    "max_images": "Most images generated with sequential_image_generation 'auto'; input images "
    "+ generated images must not exceed 15",
    "enhance_prompt": "Enhance the prompt for higher quality results (slower)",
    "seed": "Random seed; the same seed and inputs give the same image. Leave blank for a "
    "random seed",
    "guidance_scale": "How closely the image follows the prompt (1-10). Leave blank for the "
    "model's default (4 for the built-in model)",
    "num_outputs": "Number of independent images to generate (when not sequential)",
    "output_format": "Format of the output images",
    "output_quality": "Quality when saving jpg or webp (not relevant for png)",
    "safety_checker": "Check outputs with the safety checker",
}


def _cog_property(name: str, spec: dict[str, Any], order: int) -> tuple[dict[str, Any], Any]:
    """One Input property in Cog's layout, and the enum component schema it needs (or None)."""
    spec = dict(spec)
    if "anyOf" in spec:  # Optional[int] = None: Cog shows the non-null type and no default
        branch = next(b for b in spec.pop("anyOf") if b.get("type") != "null")
        spec.update(branch)
        if spec.get("default", "") is None:
            spec.pop("default")
    spec["title"] = name.replace("_", " ").title()
    spec["x-order"] = order
    spec["description"] = DESCRIPTIONS.get(name, spec.get("description", ""))
    if name == "image_input":
        spec["items"] = {"type": "string", "format": "uri"}
    enum_schema = None
    if "enum" in spec:
        enum_schema = {
            "enum": spec.pop("enum"),
            "type": spec.pop("type"),
            "title": name,
            "description": "An enumeration.",
        }
        spec["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
    return spec, enum_schema


@cache
def openapi_schema() -> dict[str, Any]:
    source = GenerationRequest.model_json_schema()
    properties: dict[str, Any] = {}
    components: dict[str, Any] = {}
    names = [n for n in source["properties"] if n not in HIDDEN_FIELDS]
    for order, name in enumerate(names):
        prop, enum_schema = _cog_property(name, source["properties"][name], order)
        properties[name] = prop
        if enum_schema is not None:
            components[name] = enum_schema
    components["Input"] = {
        "type": "object",
        "title": "Input",
        "required": [n for n in source.get("required", []) if n in properties],
        "properties": properties,
    }
    components["Output"] = {
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "title": "Output",
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": components},
    }


@cache
def version_id(model: str) -> str:
    """Stable across restarts and processes: a hash of the model name and its schema."""
    digest = hashlib.sha256(model.encode())
    digest.update(json.dumps(openapi_schema(), sort_keys=True).encode())
    return digest.hexdigest()


def model_for_version(version: str) -> str | None:
    return next((m for m in MODELS if version_id(m) == version), None)


def version_json(model: str) -> dict[str, Any]:
    return {
        "id": version_id(model),
        "created_at": VERSION_CREATED_AT.isoformat().replace("+00:00", "Z"),
        "cog_version": COG_VERSION,
        "openapi_schema": openapi_schema(),
    }


def model_json(model: str, base_url: str) -> dict[str, Any]:
    owner, name = model.split("/")
    return {
        "url": f"{base_url}/v1/models/{model}",
        "owner": owner,
        "name": name,
        "description": "Unified text-to-image generation and precise single-sentence editing "
        "at up to 4K resolution (served by dreamserve)",
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": version_json(model),
    }
