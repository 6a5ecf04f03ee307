"""The REST API through Flask's test client, on the real SearchEngine and on the browser test's fake.

Every test runs twice: on ``search.engine.SearchEngine`` over a 120-product index built with the
model stand-ins of ``tests/webui_fake.py`` (LMDB store, RAM index, describe(); no trained model),
and on ``FakeEngine``, which serves the browser test. Every response either receives is checked
against ``webui/openapi.json`` (``checked_client`` in conftest.py).
"""

from __future__ import annotations

import inspect
import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from search.engine import SearchEngine
from search.protocol import ENGINE_METHODS, Engine
from tests.webui_fake import FakeEngine, build_standin_index, open_standin_engine, standin_describer
from webui.app import create_app

TOKEN = "s3cret-token"
WEBUI = Path(__file__).resolve().parents[1] / "webui"


@pytest.fixture(scope="session")
def standin_index(synth_dump, tmp_path_factory):
    """The synthetic catalogue indexed once with the stand-ins; each test searches a copy."""
    describer = standin_describer()
    return build_standin_index(synth_dump, tmp_path_factory.mktemp("standin") / "index", describer), describer


@pytest.fixture(scope="session")
def fake_engine(synth_dump):
    return FakeEngine(synth_dump)


@pytest.fixture(params=["SearchEngine", "FakeEngine"])
def engine(request, tmp_path):
    """A fresh engine per test: updates made by one test stay out of the others."""
    if request.param == "FakeEngine":
        yield request.getfixturevalue("fake_engine").copy()
        return
    index_dir, describer = request.getfixturevalue("standin_index")
    shutil.copytree(index_dir, tmp_path / "index")
    engine = open_standin_engine(tmp_path / "index", describer)
    yield engine
    engine.store.close()


@pytest.fixture
def app(engine):
    return create_app({"ENGINE": engine, "TOKEN": TOKEN, "TESTING": True})


@pytest.fixture
def client(app, checked_client):
    return checked_client(app)


@pytest.fixture(scope="session")
def rows(synth_dump) -> list[dict]:
    return [json.loads(line) for line in synth_dump.read_text().splitlines()]


@pytest.fixture(scope="session")
def photo(synth_dump, rows) -> bytes:
    """A catalogue photo with two or more garments, as JPEG bytes."""
    row = next(r for r in rows if len(r["boxes"]) >= 2)
    return (synth_dump.parent / row["image"]).read_bytes()


def multi_row(rows):
    return next(r for r in rows if len(r["boxes"]) >= 2)


def search(client, image: bytes | None, **fields):
    data = {k: str(v) for k, v in fields.items()}
    if image is not None:
        data["image"] = (io.BytesIO(image), "query.jpg")
    return client.post("/api/search", data=data, content_type="multipart/form-data")


def png_bytes(size=(64, 48), colour=(200, 30, 35)) -> bytes:
    """A product shot: a block of ``colour`` on a white ground (a uniform image is refused as blank)."""
    w, h = size
    im = Image.new("RGB", size, (250, 250, 250))
    im.paste(colour, (w // 4, h // 4, w - w // 4, h - h // 4))
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def bomb_png(width=30_000, height=30_000) -> bytes:
    """A tiny PNG whose header claims 900 megapixels: Pillow's bomb guard must refuse it."""
    data = bytearray(png_bytes((8, 8)))
    # IHDR data starts at byte 16 (8 signature + 4 length + 4 type); its CRC follows the 13 data bytes.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def searched_categories(query: dict) -> set[str]:
    """The categories a search looked in: ``searched`` (auto may hedge over a few), else its category."""
    return {s["category"] for s in query.get("searched") or [{"category": query["category"]}]}


def same_photo(query: dict) -> str | None:
    """The product whose very photo the query is, when the engine says so in the note."""
    found = re.search(r"the same photo as product '([^']*)'", query.get("note") or "")
    return found.group(1) if found else None


def assert_in_searched_categories(query: dict, results: list[dict]) -> None:
    """Every result is of a category the query searched, except the product whose very photo the
    query is: the engine finds that one whatever the category, and ranks it first."""
    pinned = same_photo(query)
    if pinned is not None:
        assert results and results[0]["id"] == pinned, (pinned, results[:1])
        results = results[1:]
    searched = searched_categories(query)
    assert all(h["category"] in searched for h in results), (searched, [h["category"] for h in results])


def assert_error(response, status: int, *words: str):
    assert response.status_code == status, response.data
    assert response.is_json
    message = response.json["error"]
    for word in words:
        assert word.lower() in message.lower(), message


# -- the good paths ---------------------------------------------------------------------------


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

    def search(self, image, option, *, category=None, box=None, k=20):
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


def add(client, image: bytes | None, token: str | None = TOKEN, **fields):
    data = dict(fields)
    if image is not None:
        data["image"] = (io.BytesIO(image), "p.png")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/products", data=data, headers=headers, content_type="multipart/form-data")


def test_updates_need_the_token(client, engine, rows):
    image = png_bytes()
    assert_error(add(client, image, token=None, id="new-1", title="Red pants"), 401, "token")
    assert_error(add(client, image, token="wrong", id="new-1", title="Red pants"), 401, "token")
    assert_error(client.delete("/api/products/" + rows[0]["id"]), 401, "token")
    assert len(engine) == 120 and engine.product("new-1") is None and engine.product(rows[0]["id"]) is not None


def test_updates_are_off_without_a_start_up_token(engine, checked_client):
    client = checked_client(create_app({"ENGINE": engine}))
    assert_error(add(client, png_bytes(), token="anything", id="x", title="Red pants"), 403, "--token")


def test_add_search_and_delete_a_product(client, engine, photo):
    hostile = "<script>alert(1)</script> Red pants"
    r = add(client, png_bytes((120, 200)), id="new 1", title=hostile, price="19.5", url="https://shop/new1")
    assert r.status_code == 201, r.data
    assert r.json["id"] == "new 1" and r.json["title"] == hostile
    assert r.json["image_url"] == "/api/products/new%201/image"
    assert client.get("/api/health").json["products"] == 121
    assert client.get("/api/products/new 1").json["price"] == 19.5
    assert client.get(r.json["image_url"]).status_code == 200
    found = search(client, png_bytes((120, 200)), option="guided", category="pants", k=200).json["results"]
    assert hostile in [h["title"] for h in found]

    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert client.delete("/api/products/new 1", headers=headers).json == {"deleted": "new 1"}
    assert_error(client.delete("/api/products/new 1", headers=headers), 404, "new 1")
    assert_error(client.get("/api/products/new 1"), 404)
    found = search(client, png_bytes((120, 200)), option="guided", category="pants", k=200).json["results"]
    assert "new 1" not in [h["id"] for h in found]


def test_an_id_is_one_url_path_segment(client, engine):
    for pid in ("new/1", "..", "a\\b"):
        assert_error(add(client, png_bytes(), id=pid, title="Red pants"), 400, repr(pid), "path segment")
    assert len(engine) == 120


@pytest.mark.parametrize(
    "image, fields, words",
    [
        (None, {"id": "n1", "title": "Red pants"}, ["no image"]),
        (b"", {"id": "n1", "title": "Red pants"}, ["empty"]),
        ("png", {"title": "Red pants"}, ["needs an id"]),
        ("png", {"id": "n1"}, ["title or a category_path"]),
        ("png", {"id": "n1", "title": "Red pants", "price": "cheap"}, ["price", "'cheap'"]),
        ("png", {"id": "n1", "title": "Red pants", "price": "-3"}, ["price", "'-3'"]),
        ("png", {"id": "x" * 300, "title": "Red pants"}, ["id is 300 characters"]),
        ("png", {"id": "n1", "title": "Lovely thing"}, ["no fashion category"]),
    ],
    ids=["no image", "empty image", "no id", "no text", "price word", "negative price", "long id", "no category"],
)
def test_bad_product_is_a_clear_400(client, engine, image, fields, words):
    r = add(client, png_bytes() if image == "png" else image, **fields)
    assert_error(r, 400, *words)
    assert len(engine) == 120


# -- the page -----------------------------------------------------------------------------------


def test_page_is_served_with_its_assets_and_nothing_from_the_network(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/app.js", "/static/app.css"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200
    for path in [*(WEBUI / "templates").iterdir(), *(WEBUI / "static").iterdir()]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), (
            f"{path.name} loads from the network"
        )


def test_page_script_never_writes_html():
    script = (WEBUI / "static" / "app.js").read_text(encoding="utf-8")
    assert not re.search(r"\.(?:innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", script)


# -- start-up -----------------------------------------------------------------------------------


def test_create_app_needs_an_engine_or_an_index(tmp_path):
    import webui

    assert webui.create_app is create_app
    with pytest.raises(ValueError, match="ENGINE .* or INDEX"):
        create_app({})
    with pytest.raises(FileNotFoundError, match="no index at"):
        create_app({"INDEX": tmp_path / "missing"})


def test_serve_command_refuses_a_missing_index(tmp_path, capsys):
    from cli.main import main

    assert main(["serve", str(tmp_path / "missing"), "--port", "0"]) == 2
    assert "no index at" in capsys.readouterr().err


def test_serve_command_refuses_bad_allowed_hosts(tmp_path, capsys):
    from cli.main import main

    assert main(["serve", str(tmp_path), "--port", "0", "--allowed-hosts", ","]) == 2
    assert "no allowed hosts" in capsys.readouterr().err


def test_product_category_field_is_checked_and_used(client, engine):
    assert_error(add(client, png_bytes(), id="n2", title="Lovely thing", category="spacesuit"), 400, "'spacesuit'")
    r = add(client, png_bytes(), id="n2", title="Lovely thing", category="skirt")
    assert r.status_code == 201 and r.json["category"] == "skirt"


# -- the engine protocol ------------------------------------------------------------------------


def test_the_protocol_declares_the_methods_create_app_checks():
    declared = {n for n, v in vars(Engine).items() if inspect.isfunction(v) and v.__qualname__ == f"Engine.{n}"}
    assert declared == set(ENGINE_METHODS)


@pytest.mark.parametrize("cls", [SearchEngine, FakeEngine])
@pytest.mark.parametrize("name", ENGINE_METHODS)
def test_engines_have_the_protocols_signatures(cls, name):
    want = inspect.signature(getattr(Engine, name), eval_str=True)
    assert inspect.signature(getattr(cls, name), eval_str=True) == want


def test_both_engines_are_engines_and_anything_else_is_refused(engine):
    assert isinstance(engine, Engine)

    class Half:
        def __len__(self) -> int:
            return 0

        def categories(self) -> list[str]:
            return []

    with pytest.raises(TypeError, match="Half is not a search engine: it has no search, product, thumbnail, add, del"):
        create_app({"ENGINE": Half()})


# -- the document and the validators agree -------------------------------------------------------


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
