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


def test_not_multipart_is_a_clear_400(client):
    r = client.post("/api/search", json={"option": "auto"})
    assert_error(r, 400, "no image")


def test_unknown_endpoint_and_method_are_json(client):
    assert_error(client.get("/api/nothing"), 404, "/api/nothing")
    assert_error(client.get("/api/search"), 405, "GET")


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
    # webui/openapi.json lists no 500 for /api/search: its body is checked against Error alone
    client = checked_client(create_app({"ENGINE": Broken(engine)}), undocumented=[500])
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
