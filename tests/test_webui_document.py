"""webui/openapi.json and the form validators agree (fixtures: tests/webui_api_fixtures.py)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.webui_api_fixtures import add, assert_error, png_bytes, search


def _doc_validator(schema: dict):
    """A JSON Schema validator for a piece of webui/openapi.json, its references resolved in the document."""
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    from webui.api import load_openapi

    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(load_openapi()))
    return Draft202012Validator({"$ref": "urn:openapi#" + schema["$ref"].removeprefix("#")}, registry=registry)


def _component(name: str):
    return _doc_validator({"$ref": f"#/components/schemas/{name}"})


def _form_schema(path: str) -> dict:
    from webui.api import load_openapi

    return load_openapi()["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]


def test_the_document_states_the_forms_own_patterns():
    from webui import forms
    from webui.api import load_openapi

    doc = load_openapi()
    schemas = doc["components"]["schemas"]
    assert schemas["ProductId"]["pattern"] == forms.ID_PATTERN
    assert schemas["Box"]["pattern"] == forms.BOX_PATTERN
    add = _form_schema("/api/products")
    assert add["properties"]["title"]["pattern"] == add["properties"]["category_path"]["pattern"] == forms.TEXT_PATTERN
    assert add["properties"]["url"]["pattern"] == forms.URL_PATTERN
    assert {b["properties"][f]["pattern"] for b in add["anyOf"] for f in b["required"]} == {forms.NOT_BLANK_PATTERN}
    from foundation.schema import default_schema

    assert schemas["Category"]["enum"] == list(default_schema().category_names)
    from search.narrowing import filter_tokens

    assert schemas["Filter"]["enum"] == filter_tokens(default_schema())
    assert schemas["QueryId"]["pattern"] == forms.QUERY_ID_PATTERN
    search = _form_schema("/api/search")["properties"]
    assert search["filter"]["maxItems"] == len(default_schema().attribute_groups)
    assert search["offset"]["maximum"] == forms.MAX_OFFSET


def test_the_served_document_lists_the_servers_own_categories(client, engine):
    doc = client.get("/api/openapi.json").json
    assert doc["components"]["schemas"]["Category"]["enum"] == engine.categories()


def _accepted(parse, value) -> bool:
    from webui.forms import RequestError

    try:
        parse(value)
    except RequestError:
        return False
    return True


ID_EXAMPLES = ["a", "new 1", " a", "a ", "a\u3000", ".", "..", "...", "a/b", "a\\b", "a\tb", "x" * 200, "x" * 201, ""]


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.sampled_from(ID_EXAMPLES), st.text(max_size=210), st.text(alphabet=" ./\\\ta\x85", max_size=4))
)
def test_the_document_allows_exactly_the_ids_the_server_accepts(value):
    from webui.forms import parse_id

    # Python's re lets `$` match before a final newline; ECMA-262, which JSON Schema's pattern
    # follows (and the server, with re.fullmatch), does not. Bytes are beyond JSON Schema.
    if value.endswith("\n") or len(value.encode("utf-8", "surrogatepass")) > 511:
        return
    assert _component("ProductId").is_valid(value) == _accepted(parse_id, value), value


@settings(max_examples=200, deadline=None)
@given(
    title=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["", "  ", "\t", "Red dress", " Red dress\t"])),
    path=st.one_of(st.none(), st.text(max_size=10), st.sampled_from(["", " ", "\u3000", "women/dress"])),
    url=st.one_of(
        st.none(), st.text(max_size=20), st.sampled_from(["", " ", "http://x", " HTTPS://x ", "/p", "ftp://x"])
    ),
)
def test_the_document_allows_exactly_the_product_fields_the_server_accepts(title, path, url):
    from webui.forms import parse_product

    fields = {"id": "p1", "title": title, "category_path": path, "url": url, "category": "dress"}
    fields = {k: v for k, v in fields.items() if v is not None}
    if any(v.endswith("\n") for v in fields.values()):
        return  # Python's `$` before a final newline: see above
    schema = _doc_validator({"$ref": "#/paths/~1api~1products/post/requestBody/content/multipart~1form-data/schema"})
    documented = schema.is_valid({**fields, "image": "photo"})
    assert documented == _accepted(lambda f: parse_product(f, ["dress"]), fields), fields


def test_a_price_is_a_non_negative_number():
    from webui.forms import parse_price

    for good in ("0", "19.5", "1e3", "-0.0", ".5", "7."):
        assert _accepted(parse_price, good), good
    for bad in ("", " 5", "-1", "inf", "nan", "cheap", "1_0", "\u0663", "1e999"):
        assert not _accepted(parse_price, bad), bad


SEARCH_OPTIONS = [None, "auto", "guided", "rectangle", "", "magic"]
SEARCH_CATEGORIES = [None, "dress", "", "spacesuit"]
SEARCH_BOXES = [None, "10,10,60,60", " 10 , 10,60,60 ", "", "1,2,3", "a,b,c,d", "10,10,9999,60"]
SEARCH_KS = [None, "5", "0", "201", "", "2.5", "ten"]


def test_the_document_allows_exactly_the_searches_the_server_accepts():
    import itertools

    from webui.forms import parse_search

    class Files(dict):
        pass

    photo = png_bytes((120, 100))
    schema = _doc_validator({"$ref": "#/paths/~1api~1search/post/requestBody/content/multipart~1form-data/schema"})
    disagree = []
    for option, category, box, k in itertools.product(SEARCH_OPTIONS, SEARCH_CATEGORIES, SEARCH_BOXES, SEARCH_KS):
        fields = {
            n: v for n, v in (("option", option), ("category", category), ("box", box), ("k", k)) if v is not None
        }
        body = {**fields, "image": "photo"}
        if k is not None and re.fullmatch(r"-?[0-9]+", k):
            body["k"] = int(k)
        files = Files(image=type("Upload", (), {"read": lambda self: photo, "filename": "q.png"})())
        server = _accepted(lambda f, files=files: parse_search(f, files, ["dress"]), fields)
        # a box outside the photo is beyond JSON Schema: the document says so in words
        documented = schema.is_valid(body) and box != "10,10,9999,60"
        if server != documented:
            disagree.append((fields, server, documented))
    assert not disagree, disagree[:5]


def test_an_empty_field_is_refused_not_ignored(client, photo):
    assert_error(search(client, photo, option=""), 400, "option ''")
    assert_error(search(client, photo, option="auto", category=""), 400, "category ''")
    assert_error(search(client, photo, option="auto", k=""), 400, "k must be")
    assert_error(search(client, photo, option="auto", box=""), 400, "only for option=rectangle")
    assert_error(add(client, png_bytes(), id="", title="Red pants"), 400, "needs an id")
    assert_error(add(client, png_bytes(), id="n1", title="Red pants", category=""), 400, "category ''")
    assert_error(add(client, png_bytes(), id=" n1", title="Red pants"), 400, "white space")


NARROWINGS = [
    {},
    {"filter": ["colour=red"]},
    {"filter": ["colour=red", "sleeve_length=long"]},
    {"filter": ["colour=teal"]},
    {"filter": ["shape=round"]},
    {"filter": ["category=dress"]},
    {"filter": ["red"]},
    {"price_min": "10"},
    {"price_min": "10", "price_max": "20.5"},
    {"price_max": "-1"},
    {"price_min": "ten"},
    {"offset": "0"},
    {"offset": "1000"},
    {"offset": "1001"},
    {"offset": "-1"},
    {"offset": "2.5"},
]
QUERY_IDS = [None, "AbCdEfGh_-123456", "short", "AbCdEfGh_-1234567", "AbCdEfGh_-12345!"]


def test_the_document_allows_exactly_the_narrowings_and_reruns_the_server_accepts():
    import itertools

    from webui.forms import parse_search

    photo = png_bytes((120, 100))
    upload = type("Upload", (), {"read": lambda self: photo, "filename": "q.png"})()
    schema = _doc_validator({"$ref": "#/paths/~1api~1search/post/requestBody/content/multipart~1form-data/schema"})
    disagree = []
    for narrowing, query_id, with_image, option in itertools.product(
        NARROWINGS, QUERY_IDS, (True, False), (None, "auto", "guided")
    ):
        fields = dict(narrowing)
        if query_id is not None:
            fields["query_id"] = query_id
        if option is not None:
            fields["option"] = option
        if option == "guided":
            fields["category"] = "dress"
        files = {"image": upload} if with_image else {}
        body = {**fields, **({"image": "photo"} if with_image else {})}
        for name in ("price_min", "price_max", "offset"):
            if name in body and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", body[name]):
                body[name] = float(body[name]) if "." in body[name] else int(body[name])
        server = _accepted(lambda f, files=files: parse_search(f, files, ["dress"]), fields)
        if server != schema.is_valid(body):
            disagree.append((body, server))
    assert not disagree, disagree[:5]


def test_price_min_above_price_max_is_refused_as_the_document_says_in_words():
    from webui.forms import parse_search

    photo = png_bytes((120, 100))
    files = {"image": type("Upload", (), {"read": lambda self: photo, "filename": "q.png"})()}
    assert not _accepted(lambda f: parse_search(f, files, ["dress"]), {"price_min": "30", "price_max": "20"})
    assert not _accepted(lambda f: parse_search(f, files, ["dress"]), {"filter": ["colour=red", "colour=blue"]})
    described = _form_schema("/api/search")["properties"]
    assert "not below price_min" in described["price_max"]["description"]
    assert "at most one value per group" in described["filter"]["description"]
