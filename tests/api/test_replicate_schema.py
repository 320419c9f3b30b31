"""The Cog-shaped openapi_schema: complete, faithful to GenerationRequest, stable ids."""

from __future__ import annotations

from typing import Any

from replicate.run import _has_output_iterator_array_type
from replicate.version import Version

from dreamserve.api import replicate_schema as schema
from dreamserve.request import GenerationRequest


def input_schema() -> dict[str, Any]:
    return dict(schema.openapi_schema()["components"]["schemas"]["Input"])


def test_every_canonical_field_is_described_in_order() -> None:
    props = input_schema()["properties"]
    canonical = [n for n in GenerationRequest.model_fields if n not in schema.HIDDEN_FIELDS]
    assert list(props) == canonical
    assert [p["x-order"] for p in props.values()] == list(range(len(canonical)))
    assert all(p["description"] for p in props.values())


def test_types_defaults_and_ranges() -> None:
    props = input_schema()["properties"]
    assert props["prompt"]["type"] == "string"
    assert props["image_input"] == {
        **props["image_input"],
        "type": "array",
        "items": {"type": "string", "format": "uri"},
        "default": [],
    }
    assert (props["width"]["minimum"], props["width"]["maximum"]) == (1024, 4096)
    assert props["max_images"]["maximum"] == 15
    assert props["seed"]["type"] == "integer" and "default" not in props["seed"]
    guidance = props["guidance_scale"]
    assert guidance["type"] == "number" and "default" not in guidance  # the model's own
    assert (guidance["minimum"], guidance["maximum"]) == (1, 10)


def test_enums_are_cog_style_components() -> None:
    schemas = schema.openapi_schema()["components"]["schemas"]
    size = input_schema()["properties"]["size"]
    assert size["allOf"] == [{"$ref": "#/components/schemas/size"}]
    assert size["default"] == "2K"
    assert schemas["size"]["enum"] == ["1K", "2K", "4K", "custom"]
    assert "match_input_image" in schemas["aspect_ratio"]["enum"]


def test_the_client_does_not_treat_the_output_as_an_iterator() -> None:
    v = Version(**schema.version_json(schema.PUBLIC_NAME))
    assert not _has_output_iterator_array_type(v)


def test_version_ids_are_stable_and_distinct() -> None:
    a, b = (schema.version_id(m) for m in schema.MODELS)
    assert a != b and len(a) == 64
    assert schema.model_for_version(a) == schema.PUBLIC_NAME
    assert schema.model_for_version("nope") is None
