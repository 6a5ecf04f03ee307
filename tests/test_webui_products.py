"""Products, the page and the engine Protocol through the REST API (fixtures: tests/webui_api_fixtures.py)."""

from __future__ import annotations

import inspect
import re

import pytest

from search.protocol import Engine
from tests.webui_api_fixtures import TOKEN, WEBUI, add, assert_error, png_bytes, search
from webui.app import create_app


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
    # once a 500 after a full describe: 200 characters, 800 bytes, over LMDB's 511-byte keys
    assert_error(add(client, png_bytes(), id="\U0001f457" * 200, title="Red pants"), 400, "511")
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


def test_create_app_checks_every_method_the_protocol_declares():
    declared = {n for n, v in vars(Engine).items() if inspect.isfunction(v) and v.__qualname__ == f"Engine.{n}"}
    assert {"__len__", "search", "add", "delete", "close"} <= declared and "rerun" not in declared

    def having(names):
        return type("Partial", (), {n: lambda self, *a, **kw: None for n in names})()

    assert isinstance(having(declared), Engine)
    for name in sorted(declared):
        with pytest.raises(TypeError, match="Partial is not a search engine"):
            create_app({"ENGINE": having(declared - {name})})


def test_the_engine_is_an_engine_and_anything_else_is_refused(engine):
    assert isinstance(engine, Engine)

    class Half:
        def __len__(self) -> int:
            return 0

        def categories(self) -> list[str]:
            return []

    with pytest.raises(TypeError, match=r"ENGINE Half is not a search engine \(search.protocol.Engine\)"):
        create_app({"ENGINE": Half()})


# -- the document and the validators agree -------------------------------------------------------
