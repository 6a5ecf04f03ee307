"""The API over the real SearchEngine: LMDB store, RAM index and describe(), on a 12-product index.

The attribute model and the detector are the indexer tests' stand-ins and the appearance code
is a 256-bit average hash (a GoogLeNet forward pass per product costs seconds on this shared
CPU), so this checks the contract between the web layer and the engine (shapes, types, updates
reaching the index), not search quality.
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.standin import standin_engine
from tests.test_webui_api import assert_in_searched_categories
from webui.app import create_app

N_PRODUCTS = 12
TOKEN = "engine-token"


@pytest.fixture(scope="module")
def engine(synth_dump, tmp_path_factory):
    with standin_engine(synth_dump, tmp_path_factory.mktemp("index"), n=N_PRODUCTS) as engine:
        yield engine


@pytest.fixture(scope="module")
def client(engine, checked_client):
    """Every response is checked against webui/openapi.json (conftest.py)."""
    return checked_client(create_app({"ENGINE": engine, "TOKEN": TOKEN, "TESTING": True}))


@pytest.fixture(scope="module")
def photo(synth_dump) -> bytes:
    row = json.loads(synth_dump.read_text().splitlines()[0])
    return (synth_dump.parent / row["image"]).read_bytes()


def search(client, image: bytes, **fields):
    return client.post(
        "/api/search", data={"image": (io.BytesIO(image), "q.jpg"), **fields}, content_type="multipart/form-data"
    )


def test_the_three_options_answer_as_documented(client, photo):
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]
    doc = schemas["SearchResponse"]
    hit_fields = set(schemas["Result"]["required"])
    query_fields = set(doc["properties"]["query"]["required"])
    # a rectangle with a category: the stand-in model's own pick from the crop may name a category
    # with no product in this 12-product index
    for fields in (
        {"option": "auto"},
        {"option": "guided", "category": "shoes"},
        {"option": "rectangle", "box": "20,30,200,220", "category": "shoes"},
    ):
        r = search(client, photo, **fields)
        assert r.status_code == 200, r.data
        q = r.json["query"]
        assert query_fields <= set(q) and q["option"] == fields["option"]
        assert r.json["results"], fields
        for hit in r.json["results"]:
            assert hit_fields <= set(hit)
            assert isinstance(hit["hamming"], int) and isinstance(hit["score"], float)
            assert client.get(hit["image_url"]).mimetype == "image/jpeg"
            assert client.get(f"/api/products/{hit['id']}").json["category"] == hit["category"]
        assert_in_searched_categories(q, r.json["results"])
        # one garment answered for a guide or a rectangle; its results are the answer's
        assert r.json["garments"][q["garment"]]["results"] == r.json["results"]
        if fields["option"] != "auto":
            assert len(r.json["garments"]) == 1
        if fields["option"] == "guided":
            assert q["category"] == "shoes"
        if fields["option"] == "rectangle":
            assert q["roi"] == [20, 30, 200, 220] and q["category"] == "shoes"


def test_bad_requests_leave_the_index_as_it_was(client, photo):
    before = search(client, photo, option="guided", category="shoes").json["results"]
    for fields in (
        {"option": "guided", "category": "spacesuit"},
        {"option": "rectangle", "box": "0,0,999,999"},
        {"option": "auto", "k": "0"},
    ):
        assert search(client, photo, **fields).status_code == 400
    assert search(client, b"GIF89a", option="auto").status_code == 400
    assert client.get("/api/health").json == {"status": "ok", "products": N_PRODUCTS}
    assert search(client, photo, option="guided", category="shoes").json["results"] == before


def test_added_product_is_found_then_deleted(client, photo):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    buf = io.BytesIO()
    trousers = Image.new("RGB", (96, 160), (245, 245, 245))  # a uniform photo is refused as a placeholder
    trousers.paste((35, 70, 190), (20, 10, 76, 150))
    trousers.save(buf, "PNG")
    r = client.post(
        "/api/products",
        headers=auth,
        content_type="multipart/form-data",
        data={"id": "added-1", "title": "Blue trousers", "image": (io.BytesIO(buf.getvalue()), "p.png")},
    )
    assert r.status_code == 201, r.data
    assert r.json["category"] == "pants"
    assert client.get("/api/health").json["products"] == N_PRODUCTS + 1
    ids = [h["id"] for h in search(client, buf.getvalue(), option="guided", category="pants", k=50).json["results"]]
    assert "added-1" in ids
    assert client.delete("/api/products/added-1", headers=auth).status_code == 200
    ids = [h["id"] for h in search(client, buf.getvalue(), option="guided", category="pants", k=50).json["results"]]
    assert "added-1" not in ids and client.get("/api/health").json["products"] == N_PRODUCTS
