"""openapi.describe: BentoML's generated document rewritten to match what the service does."""

from __future__ import annotations

import copy
from typing import Any

from kubetrain_serving.openapi import ERROR_SCHEMA, IMAGE_FORMAT, describe


def generated() -> dict[str, Any]:
    """The shape BentoML 1.4 generates for the two endpoints (trimmed)."""
    bento_error = {"$ref": "#/components/schemas/InvalidArgument"}
    responses = {
        "200": {"description": "Successful Response"},
        "400": {"content": {"application/json": {"schema": bento_error}}},
        "404": {"description": "Not Found"},
        "500": {"description": "Internal Server Error"},
    }
    return {
        "openapi": "3.0.2",
        "paths": {
            "/predict": {
                "post": {
                    "responses": copy.deepcopy(responses),
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"data": {"type": "string"}},
                                }
                            }
                        }
                    },
                }
            },
            "/classify": {"post": {"responses": copy.deepcopy(responses)}},
            "/readyz": {"get": {"responses": {"200": {}}}},
        },
        "components": {"schemas": {"InvalidArgument": {"type": "object"}}},
    }


def run(doc: dict[str, Any]) -> dict[str, Any]:
    return describe(
        doc, single="/predict", single_field="data", lists={"/classify": "images"}, max_images=8
    )


def test_every_inference_error_status_uses_the_one_error_schema() -> None:
    out = run(generated())
    error = out["components"]["schemas"][ERROR_SCHEMA]
    assert error["required"] == ["error"]
    assert error["properties"]["detail"]["type"] == "array"  # BentoML says string
    assert error["properties"]["detail"]["items"]["required"] == ["loc", "msg"]
    for path in ("/predict", "/classify"):
        responses = out["paths"][path]["post"]["responses"]
        assert "404" not in responses
        for code in ("400", "413", "415", "500", "503"):
            schema = responses[code]["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}, (path, code)
        assert responses["200"] == {"description": "Successful Response"}  # untouched


def test_image_strings_have_the_image_format_and_cannot_be_empty() -> None:
    out = run(generated())
    image = out["components"]["schemas"]["Image"]
    assert image["format"] == IMAGE_FORMAT and image["minLength"] == 1
    body = out["paths"]["/predict"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema["required"] == ["data"]
    assert schema["properties"]["data"] == {"$ref": "#/components/schemas/Image"}


def test_classify_lists_every_encoding_with_its_bounds() -> None:
    content = run(generated())["paths"]["/classify"]["post"]["requestBody"]["content"]
    obj, bare = content["application/json"]["schema"]["anyOf"]
    assert obj["required"] == ["images"] and obj["properties"]["images"] == bare
    assert (bare["minItems"], bare["maxItems"]) == (1, 8)
    form = content["multipart/form-data"]
    assert form["schema"]["additionalProperties"] is False
    assert form["schema"]["properties"]["images"]["items"]["format"] == "binary"
    assert form["encoding"]["images"]["contentType"] == "image/png, image/jpeg"


def test_the_input_is_not_modified_and_other_paths_are_kept() -> None:
    doc = generated()
    before = copy.deepcopy(doc)
    out = run(doc)
    assert doc == before
    assert out["paths"]["/readyz"] == before["paths"]["/readyz"]


def test_a_document_without_the_endpoints_degrades_to_itself_plus_schemas() -> None:
    out = run({"openapi": "3.0.2"})
    assert out["openapi"] == "3.0.2" and ERROR_SCHEMA in out["components"]["schemas"]
