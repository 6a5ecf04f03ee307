"""The OpenAPI document served at ``/api/openapi.json``: ``webui/openapi.json`` (the shapes and the
words) with its patterns, limits and enumerations filled in from the definitions the code checks
with (``webui.forms``, ``search.query``, ``foundation.schema``), so none is typed twice."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from foundation.dump import MAX_PHOTOS, MAX_TEXT, MAX_URL
from foundation.schema import default_schema
from search.narrowing import filter_tokens
from search.query import DEFAULT_K, MAX_GARMENTS, MAX_K, MAX_OFFSET, OPTIONS, QUERY_ID_PATTERN
from webui import forms

TEMPLATE = Path(__file__).with_name("openapi.json")
SEARCH = ("paths", "/api/search", "post", "requestBody", "content", "multipart/form-data", "schema", "properties")
PRODUCT = ("paths", "/api/products", "post", "requestBody", "content", "multipart/form-data", "schema")
PHOTO = ("paths", "/api/products/{id}/image", "get", "parameters", 0, "schema")
SCHEMAS = ("components", "schemas")


def _at(doc: dict, path: Sequence) -> dict:
    for key in path:
        doc = doc[key]
    return doc


def openapi_document(categories: Sequence[str] | None = None) -> dict:
    """The document, with ``categories`` (default: the schema's) in ``Category``'s enum."""
    schema = default_schema()
    doc = json.loads(TEMPLATE.read_text(encoding="utf-8"))
    fill = [
        (SEARCH + ("option",), {"enum": list(OPTIONS), "default": OPTIONS[0]}),
        (SEARCH + ("k",), {"minimum": 1, "maximum": MAX_K, "default": DEFAULT_K}),
        (SEARCH + ("filter",), {"maxItems": len(schema.attribute_groups)}),
        (SEARCH + ("offset",), {"minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
        (SEARCH + ("garment",), {"minimum": 0, "maximum": MAX_GARMENTS - 1, "default": 0}),
        (PRODUCT + ("properties", "title"), {"maxLength": MAX_TEXT, "pattern": forms.TEXT_PATTERN}),
        (PRODUCT + ("properties", "category_path"), {"maxLength": MAX_TEXT, "pattern": forms.TEXT_PATTERN}),
        (PRODUCT + ("properties", "url"), {"maxLength": MAX_URL, "pattern": forms.URL_PATTERN}),
        (PRODUCT + ("anyOf", 0, "properties", "title"), {"pattern": forms.NOT_BLANK_PATTERN}),
        (PRODUCT + ("anyOf", 1, "properties", "category_path"), {"pattern": forms.NOT_BLANK_PATTERN}),
        (PHOTO, {"minimum": 0, "maximum": MAX_PHOTOS - 1, "default": 0}),
        (SCHEMAS + ("Category",), {"enum": list(categories or schema.category_names)}),
        (SCHEMAS + ("ProductId",), {"maxLength": forms.MAX_ID, "pattern": forms.ID_PATTERN}),
        (SCHEMAS + ("Box",), {"pattern": forms.BOX_PATTERN}),
        (SCHEMAS + ("QueryId",), {"pattern": QUERY_ID_PATTERN}),
        (SCHEMAS + ("Filter",), {"enum": filter_tokens(schema)}),
        (SCHEMAS + ("SearchResponse", "properties", "query", "properties", "option"), {"enum": list(OPTIONS)}),
    ]
    for path, values in fill:
        _at(doc, path).update(values)
    return doc
