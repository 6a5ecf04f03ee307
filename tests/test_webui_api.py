"""Searches and errors of the REST API through Flask's test client, on the real SearchEngine.

The engine is ``search.engine.SearchEngine`` over a 120-product index built once per session with
the model stand-ins of ``tests/standin.py`` (LMDB store, RAM index, describe(); no trained model);
each test gets its own copy. Every response is checked against ``webui/openapi.json``
(``checked_client`` in conftest.py).
"""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.webui_api_fixtures import (
    TOKEN,
    add,
    assert_error,
    assert_in_searched_categories,
    bomb_png,
    multi_row,
    png_bytes,
    search,
    searched_categories,
)
from webui.app import create_app


def test_health_and_categories(client, engine):
    assert client.get("/api/health").json == {"status": "ok", "products": len(engine)}
    cats = client.get("/api/categories").json["categories"]
    assert "pants" in cats and "dress" in cats and cats == engine.categories()


def test_auto_search_returns_query_and_results_with_image_urls(client, photo):
    r = search(client, photo, option="auto", k=5)
    assert r.status_code == 200, r.data
    q, results = r.json["query"], r.json["results"]
    assert q["option"] == "auto" and q["category"] in client.get("/api/categories").json["categories"]
    assert {"group", "value", "p"} <= set(q["attributes"][0])
    assert len(q["roi"]) == 4 and isinstance(q["fallback"], bool) and "total" in q["timings_ms"]
    assert 1 <= len(results) <= 5
    assert_in_searched_categories(q, results)
    assert q["category"] in searched_categories(q)
    for hit in results:
        assert {
            "id",
            "title",
            "category",
            "score",
            "hamming",
            "colour_distance",
            "shared_attributes",
            "image_url",
        } <= set(hit)
        image = client.get(hit["image_url"])
        assert image.status_code == 200 and image.mimetype == "image/jpeg"
        Image.open(io.BytesIO(image.data)).verify()


def test_guided_search_keeps_to_the_category(client, photo):
    r = search(client, photo, option="guided", category="pants")
    assert r.status_code == 200, r.data
    assert r.json["query"]["category"] == "pants" and searched_categories(r.json["query"]) == {"pants"}
    assert r.json["results"]
    assert_in_searched_categories(r.json["query"], r.json["results"])


def test_rectangle_search_follows_the_box(client, rows, synth_dump):
    row = multi_row(rows)
    image = (synth_dump.parent / row["image"]).read_bytes()
    answers = []
    for x0, y0, x1, y1, _category in row["boxes"]:
        r = search(client, image, option="rectangle", box=f"{x0},{y0},{x1},{y1}")
        assert r.status_code == 200, r.data
        assert r.json["query"]["roi"] == [x0, y0, x1, y1]
        answers.append([h["id"] for h in r.json["results"]])
    assert answers[0] != answers[1]


def test_k_limits_the_results(client, photo):
    assert len(search(client, photo, option="guided", category="shoes", k=3).json["results"]) == 3


def test_product_and_its_image(client, rows):
    pid = rows[0]["id"]
    r = client.get(f"/api/products/{pid}")
    assert r.status_code == 200 and r.json["id"] == pid and r.json["title"] == rows[0]["title"]
    assert r.json["image_url"] == f"/api/products/{pid}/image"
    image = client.get(r.json["image_url"])
    assert image.status_code == 200 and image.headers["ETag"]
    again = client.get(r.json["image_url"], headers={"If-None-Match": image.headers["ETag"]})
    assert again.status_code == 304
    assert_error(client.get("/api/products/no-such-id"), 404, "no-such-id")
    assert_error(client.get("/api/products/no-such-id/image"), 404, "no-such-id")


def test_stats_report_searches_per_option(client, photo):
    search(client, photo, option="auto")
    search(client, photo, option="guided", category="dress")
    search(client, b"", option="auto")
    stats = client.get("/api/stats").json
    assert stats["products"] == 120
    assert stats["server"]["searches"]["auto"]["count"] == 1
    assert stats["server"]["searches"]["guided"]["p99_ms"] >= stats["server"]["searches"]["guided"]["p50_ms"] > 0
    assert stats["server"]["refused"] == {"400": 1}


def test_openapi_describes_every_api_route(client, app):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    documented = {
        (path, method.upper()) for path, ops in doc["paths"].items() for method in ops if method != "parameters"
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = re.sub(r"<(?:\w+:)?\w+>", "{id}", rule.rule)
            served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served

    def refs(node):
        if isinstance(node, dict):
            yield from ([node["$ref"]] if "$ref" in node else [])
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for ref in refs(doc):
        target = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # a dangling reference fails here


# -- bad requests: every class is a 4xx JSON error naming the problem ---------------------------


def truncated(photo: bytes) -> bytes:
    return photo[: len(photo) // 3]


BAD_SEARCHES = [
    # (id, image, fields, status, words the message must hold)
    ("no file", None, {"option": "auto"}, 400, ["no image", "image"]),
    ("zero bytes", b"", {"option": "auto"}, 400, ["empty", "0 bytes"]),
    ("not an image", b"name,price\nshirt,10\n" * 20, {"option": "auto"}, 400, ["not an image"]),
    ("truncated", "truncated", {"option": "auto"}, 400, ["truncated"]),
    ("decompression bomb", "bomb", {"option": "auto"}, 400, ["decompression bomb"]),
    ("tiny image", png_bytes((4, 4)), {"option": "auto"}, 400, ["too small"]),
    # once a 500: the detector resized a 20000x8 strip to nothing
    ("strip 20000x8", png_bytes((20000, 8)), {"option": "auto"}, 400, ["aspect ratio", "20000x8"]),
    ("unknown option", "photo", {"option": "magic"}, 400, ["'magic'", "auto, guided, rectangle"]),
    ("unknown category", "photo", {"option": "guided", "category": "spacesuit"}, 400, ["'spacesuit'", "pants"]),
    ("guided without category", "photo", {"option": "guided"}, 400, ["needs a category"]),
    ("auto with category", "photo", {"option": "auto", "category": "pants"}, 400, ["auto", "'pants'"]),
    ("rectangle without box", "photo", {"option": "rectangle"}, 400, ["needs a box"]),
    ("box for auto", "photo", {"option": "auto", "box": "1,1,50,50"}, 400, ["'1,1,50,50'", "rectangle"]),
    ("box with 3 numbers", "photo", {"option": "rectangle", "box": "1,2,3"}, 400, ["4 numbers", "'1,2,3'"]),
    ("box of words", "photo", {"option": "rectangle", "box": "a,b,c,d"}, 400, ["numbers", "'a,b,c,d'"]),
    ("box with nan", "photo", {"option": "rectangle", "box": "nan,0,50,50"}, 400, ["finite"]),
    ("degenerate box", "photo", {"option": "rectangle", "box": "50,50,40,90"}, 400, ["degenerate", "50,50,40,90"]),
    ("box of a point", "photo", {"option": "rectangle", "box": "10,10,11,11"}, 400, ["degenerate"]),
    ("box outside the image", "photo", {"option": "rectangle", "box": "10,10,300,200"}, 400, ["outside", "256x256"]),
    ("negative box", "photo", {"option": "rectangle", "box": "-5,0,50,50"}, 400, ["outside"]),
    ("k zero", "photo", {"option": "auto", "k": "0"}, 400, ["k must be", "0"]),
    ("k too big", "photo", {"option": "auto", "k": "100000"}, 400, ["k must be", "100000"]),
    ("k not a number", "photo", {"option": "auto", "k": "ten"}, 400, ["k must be", "'ten'"]),
    ("k fractional", "photo", {"option": "auto", "k": "2.5"}, 400, ["k must be", "'2.5'"]),
]


@pytest.mark.parametrize(
    "image, fields, status, words", [b[1:] for b in BAD_SEARCHES], ids=[b[0] for b in BAD_SEARCHES]
)
def test_bad_search_is_a_clear_4xx_and_changes_nothing(client, engine, photo, image, fields, status, words):
    image = {"photo": photo, "truncated": truncated(photo), "bomb": bomb_png()}.get(image, image)
    before = search(client, photo, option="auto").json
    assert_error(search(client, image, **fields), status, *words)
    assert client.get("/api/health").json == {"status": "ok", "products": 120}
    assert search(client, photo, option="auto").json["results"] == before["results"]


def test_upload_over_the_limit_is_413(engine, photo, checked_client):
    client = checked_client(create_app({"ENGINE": engine, "MAX_CONTENT_LENGTH": 20_000, "TESTING": True}))
    big = png_bytes((400, 400)) + bytes(30_000)
    assert_error(search(client, big, option="auto"), 413, "larger than", "limit")
    assert client.get("/api/health").status_code == 200


def test_a_long_text_field_is_413_naming_the_field_limit_not_the_upload_limit(client, photo):
    # 600 KB in a text field: over Flask's MAX_FORM_MEMORY_SIZE (500,000 bytes), far under the 16 MiB upload limit
    r = search(client, photo, option="guided", category="x" * 600_000)
    assert_error(r, 413, "text field", "500,000 bytes")
    assert not r.json["error"].startswith("the upload is larger"), r.json["error"]
    r = add(client, png_bytes(), id="n9", title="Red pants " * 60_000)
    assert_error(r, 413, "text field", "500,000 bytes")


def test_upload_over_the_limit_names_the_upload_limit(engine, checked_client):
    client = checked_client(create_app({"ENGINE": engine, "MAX_CONTENT_LENGTH": 2**20, "TESTING": True}))
    r = search(client, png_bytes() + bytes(2**20), option="auto")
    assert_error(r, 413, "larger than the 1 MiB upload limit")
    assert "text field" not in r.json["error"]


def test_not_multipart_is_a_clear_400(client):
    r = client.post("/api/search", json={"option": "auto"})
    assert_error(r, 400, "no image")


def test_unknown_endpoint_and_method_are_json(client):
    assert_error(client.get("/api/nothing"), 404, "/api/nothing")
    assert_error(client.get("/api/search"), 405, "GET")


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("GET", "/api/search", {"POST"}),
        ("TRACE", "/api/stats", {"GET"}),
        ("PUT", "/api/products", {"POST"}),
        ("PATCH", "/api/products/x", {"GET", "DELETE"}),
        ("POST", "/api/products/x/image", {"GET"}),
    ],
)
def test_every_405_says_what_is_allowed(client, method, path, allowed):
    # RFC 9110: a 405 carries Allow (Schemathesis' unsupported_method check found it missing)
    r = client.open(path, method=method)
    assert_error(r, 405, method, "use")
    assert allowed <= {m.strip() for m in r.headers["Allow"].split(",")}, r.headers.get("Allow")


HUGE = "Z" * 100_000


@pytest.mark.parametrize(
    "fields",
    [
        {"option": HUGE},
        {"option": "guided", "category": HUGE},
        {"option": "auto", "k": HUGE},
        {"option": "rectangle", "box": HUGE},
        {"option": "rectangle", "box": "1,2,3," + HUGE.replace("Z", "9")},
        {"option": "auto", "box": HUGE},
    ],
    ids=["option", "category", "k", "box", "box of digits", "box for auto"],
)
def test_a_search_error_echoes_at_most_about_100_characters(client, photo, fields):
    r = search(client, photo, **fields)
    assert r.status_code == 400 and len(r.json["error"]) < 400, r.json["error"][:600]


@pytest.mark.parametrize(
    "fields",
    [
        {"id": HUGE, "title": "Red pants"},
        {"id": "x" * 150 + "\x01", "title": "Red pants"},
        {"id": "n1", "title": "Red pants\x00" + HUGE[:900]},
        {"id": "n1", "title": "Red pants", "price": HUGE},
        {"id": "n1", "title": "Red pants", "url": "ftp://" + HUGE[:1500]},
        {"id": "n1", "title": "Red pants", "category": HUGE},
        {"id": "n1", "title": HUGE[:900]},
    ],
    ids=["id", "id with control", "title", "price", "url", "category", "no category"],
)
def test_a_product_error_echoes_at_most_about_100_characters(client, fields):
    r = add(client, png_bytes(), **fields)
    assert r.status_code == 400 and len(r.json["error"]) < 400, r.json["error"][:600]


def test_a_not_found_error_echoes_at_most_about_100_characters(client):
    for path in ("/api/products/" + HUGE, "/api/products/" + HUGE + "/image", "/api/" + HUGE):
        r = client.get(path)
        assert r.status_code == 404 and len(r.json["error"]) < 300, r.json["error"][:600]
    r = client.delete("/api/products/" + HUGE, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404 and len(r.json["error"]) < 300


def test_a_foreign_host_is_refused_when_hosts_are_set(engine, checked_client):
    # DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and reads the API with its own Host
    client = checked_client(create_app({"ENGINE": engine, "ALLOWED_HOSTS": ("localhost", "127.0.0.1", "[::1]")}))
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example"):
        assert_error(client.get("/api/health", headers={"Host": host}), 400, repr(host), "--allowed-hosts")
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    for host in ("localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1:1", "[::1]", "[::1]:8000"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 200, host
    port_bound = checked_client(create_app({"ENGINE": engine, "ALLOWED_HOSTS": "shop.example:8443, ::1"}))
    assert port_bound.get("/api/health", headers={"Host": "shop.example:8443"}).status_code == 200
    assert port_bound.get("/api/health", headers={"Host": "[::1]:5"}).status_code == 200
    assert_error(port_bound.get("/api/health", headers={"Host": "shop.example:80"}), 400, "shop.example:80")


def test_serve_config_allows_loopback_names_on_loopback_and_any_host_elsewhere():
    from webui.serving import ServeConfig

    assert ServeConfig().host_names() == ("localhost", "127.0.0.1", "[::1]")
    assert ServeConfig(host="127.0.0.2").host_names() == ("localhost", "127.0.0.1", "[::1]", "127.0.0.2")
    assert ServeConfig(host="::1").host_names() == ("localhost", "127.0.0.1", "[::1]")
    assert ServeConfig(host="0.0.0.0").host_names() is None
    assert ServeConfig(host="0.0.0.0", allowed_hosts=("Shop.Example",)).host_names() == ("shop.example",)
    assert ServeConfig(allowed_hosts=("*",)).host_names() is None
    for bad in ((), ("",), ("a b",), ("http://x",), ("x:port",)):
        with pytest.raises(ValueError, match="allowed host|no allowed hosts"):
            ServeConfig(allowed_hosts=bad)


class Broken:
    """The engine under test, except that its search fails."""

    def __init__(self, engine):
        self.engine = engine

    def search(self, image, option, *, category=None, box=None, k=20, **narrowing):
        raise RuntimeError("model exploded")

    def __len__(self) -> int:
        return len(self.engine)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_engine_failure_is_a_500_json_and_the_server_goes_on(engine, photo, checked_client):
    client = checked_client(create_app({"ENGINE": Broken(engine)}))  # the 500 is documented: an Error
    r = search(client, photo, option="auto")
    assert r.status_code == 500 and "internal error" in r.json["error"] and "exploded" not in r.json["error"]
    assert client.get("/api/health").json["status"] == "ok"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    box=st.one_of(
        st.text(alphabet="0123456789,.-e nai", max_size=20),
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=3, max_size=5).map(
            lambda v: ",".join(str(x) for x in v)
        ),
    )
)
def test_any_box_is_answered_200_or_400(client, photo, box):
    r = search(client, photo, option="rectangle", box=box)
    assert r.status_code in (200, 400), (box, r.data)
    if r.status_code == 200:
        assert len(r.json["query"]["roi"]) == 4


# -- product updates ----------------------------------------------------------------------------
