"""Filters, attribute edits, price ranges, pages and re-runs by query id through the REST API.

Every test runs on the real ``SearchEngine`` over the stand-in index of
``tests/webui_api_fixtures.py``, with each product's attribute columns set to the synthetic
catalogue's own labels (``tests.standin.label_like_the_catalogue``; the model stand-ins predict
none): the index as a perfect attribute model would have filled it. Every response is checked
against webui/openapi.json.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.standin import label_like_the_catalogue
from tests.webui_api_fixtures import TOKEN, assert_error, search
from webui.app import create_app


@pytest.fixture
def engine(engine, synth_dump):
    """The API tests' engine, its index labelled like the catalogue."""
    label_like_the_catalogue(engine, synth_dump)
    return engine


@pytest.fixture
def client(engine, checked_client):
    return checked_client(create_app({"ENGINE": engine, "TOKEN": TOKEN, "TESTING": True}))


def rerun(client, query_id, **fields):
    return search(client, None, query_id=query_id, **fields)


def search_with(client, image, filters=(), **fields):
    """A search with repeated ``filter`` fields."""
    data = {k: str(v) for k, v in fields.items()}
    data["filter"] = list(filters)
    if image is not None:
        data["image"] = (io.BytesIO(image), "query.jpg")
    return client.post("/api/search", data=data, content_type="multipart/form-data")


def _common_pair(rows, category):
    """A (colour, sleeve_length) that several products of ``category`` share."""
    from collections import Counter

    pairs = Counter(
        (r["attributes"]["colour"], r["attributes"]["sleeve_length"])
        for r in rows
        if r["attributes"]["category"] == category
    )
    return pairs.most_common(1)[0][0]


def test_filters_narrow_every_result_and_say_so(client, photo, rows):
    colour, sleeve = _common_pair(rows, "longsleeve")
    r = search_with(
        client, photo, [f"colour={colour}", f"sleeve_length={sleeve}"], option="guided", category="longsleeve"
    )
    assert r.status_code == 200, r.data
    q, results = r.json["query"], r.json["results"]
    assert results
    for hit in results:
        assert hit["attributes"]["colour"] == colour and hit["attributes"]["sleeve_length"] == sleeve, hit
    assert q["filters"] == [f"colour={colour}", f"sleeve_length={sleeve}"]
    edited = {a["group"]: a["value"] for a in q["attributes"] if a.get("edited")}
    assert edited == {"colour": colour, "sleeve_length": sleeve}
    want = {r["id"] for r in rows if r["attributes"]["category"] == "longsleeve"}
    want = {i for i in want if next(x for x in rows if x["id"] == i)["attributes"]["colour"] == colour}
    assert {h["id"] for h in results} <= want


def test_a_rerun_by_query_id_needs_no_photo_and_edits_the_search(client, photo, rows):
    first = search(client, photo, option="guided", category="t-shirt", k=50)
    assert first.status_code == 200, first.data
    qid = first.json["query"]["id"]
    same = rerun(client, qid, k=50)
    assert same.status_code == 200, same.data
    assert [h["id"] for h in same.json["results"]] == [h["id"] for h in first.json["results"]]
    assert same.json["query"]["id"] == qid and same.json["query"]["category"] == "t-shirt"
    colour = first.json["results"][-1]["attributes"]["colour"]
    edited = search_with(client, None, [f"colour={colour}"], query_id=qid, k=50)
    assert edited.status_code == 200, edited.data
    ids = [h["id"] for h in edited.json["results"]]
    assert ids and all(h["attributes"]["colour"] == colour for h in edited.json["results"])
    assert set(ids) == {h["id"] for h in first.json["results"] if h["attributes"]["colour"] == colour}
    assert edited.json["query"]["filters"] == [f"colour={colour}"]


def test_prices_bound_the_results(client, photo):
    everything = search(client, photo, option="guided", category="shoes", k=200).json["results"]
    prices = sorted(h["price"] for h in everything)
    lo, hi = prices[len(prices) // 4], prices[3 * len(prices) // 4]
    r = search(client, photo, option="guided", category="shoes", k=200, price_min=lo, price_max=hi)
    assert r.status_code == 200, r.data
    got = r.json["results"]
    assert got and all(lo <= h["price"] <= hi for h in got)
    assert {h["id"] for h in got} == {h["id"] for h in everything if lo <= h["price"] <= hi}
    assert r.json["query"]["filters"] == [f"price_min={lo:g}", f"price_max={hi:g}"]


def test_offset_pages_through_the_results(client, photo):
    whole = search(client, photo, option="guided", category="shoes", k=12)
    assert whole.json["query"]["more"] is True and whole.json["query"]["offset"] == 0
    qid = whole.json["query"]["id"]
    pages = [rerun(client, qid, k=4, offset=o).json for o in (0, 4, 8)]
    assert [h["id"] for p in pages for h in p["results"]] == [h["id"] for h in whole.json["results"]]
    assert all(p["query"]["more"] for p in pages)
    n = len(search(client, photo, option="guided", category="shoes", k=200).json["results"])
    last = rerun(client, qid, k=5, offset=n - 2).json
    assert len(last["results"]) == 2 and last["query"]["more"] is False
    assert rerun(client, qid, k=5, offset=n).json["results"] == []


def test_a_filter_of_a_group_the_category_lacks_narrows_nothing(client, photo):
    plain = search(client, photo, option="guided", category="shoes")
    r = search_with(client, photo, ["sleeve_length=long"], option="guided", category="shoes")
    assert r.status_code == 200, r.data
    assert [h["id"] for h in r.json["results"]] == [h["id"] for h in plain.json["results"]]
    assert r.json["query"]["filters"] == []


def test_an_edited_colour_steers_the_colour_term(engine, client, photo):
    from indexer.colour import swatch_histogram

    r = search_with(client, photo, ["colour=blue"], option="guided", category="jacket", k=50)
    assert r.status_code == 200 and r.json["results"], r.data
    swatch = swatch_histogram(engine.schema.colour_swatches["blue"], engine.describer.colour).astype(np.float32)
    swatch /= swatch.sum()
    for hit in r.json["results"]:
        own = engine.store.get(hit["id"]).photos[0].description.colour.astype(np.float32)
        own /= own.sum()
        assert hit["colour_distance"] == pytest.approx(0.5 * float(np.abs(own - swatch).sum()), abs=2e-3)


BAD = [
    # (id, filters, fields, status, words)
    ("unknown group", ["shape=round"], {}, 400, ["'shape'", "colour"]),
    ("unknown value", ["colour=teal"], {}, 400, ["'teal'", "black"]),
    ("no equals sign", ["red"], {}, 400, ["group=value", "'red'"]),
    ("category as a filter", ["category=pants"], {}, 400, ["option=guided"]),
    ("a group twice", ["colour=red", "colour=blue"], {}, 400, ["colour is already 'red'"]),
    ("price not a number", [], {"price_min": "cheap"}, 400, ["price_min", "'cheap'"]),
    ("negative price", [], {"price_max": "-3"}, 400, ["price_max", "non-negative"]),
    (
        "price range upside down",
        [],
        {"price_min": "50", "price_max": "10"},
        400,
        ["price_min 50 is above price_max 10"],
    ),
    ("offset negative", [], {"offset": "-1"}, 400, ["offset must be", "-1"]),
    ("offset too deep", [], {"offset": "1001"}, 400, ["offset must be", "1000", "1001"]),
    ("offset not a number", [], {"offset": "next"}, 400, ["offset", "'next'"]),
]


@pytest.mark.parametrize("filters, fields, status, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_filter_price_or_offset_is_a_clear_400(client, photo, filters, fields, status, words):
    assert_error(search_with(client, photo, filters, option="guided", category="pants", **fields), status, *words)


def test_a_bad_query_id_is_a_clear_4xx(client, photo):
    qid = search(client, photo, option="auto").json["query"]["id"]
    assert_error(rerun(client, "A" * 16), 404, "'AAAAAAAAAAAAAAAA'", "expired", "photo again")
    assert_error(rerun(client, "short"), 400, "query_id", "'short'")
    assert_error(search(client, photo, query_id=qid), 400, "query_id", "no image")
    assert_error(rerun(client, qid, option="guided", category="pants"), 400, "no option, category")
    assert_error(rerun(client, qid, box="1,1,20,20"), 400, "no box")


def test_an_expired_query_is_forgotten(engine, client, photo):
    from search.recent import RecentQueries

    now = [0.0]
    engine.recent = RecentQueries(capacity=2, ttl_s=60, clock=lambda: now[0])
    first = search(client, photo, option="auto").json["query"]["id"]
    now[0] = 30.0
    assert rerun(client, first).status_code == 200  # a use refreshes its time
    now[0] = 80.0
    assert rerun(client, first).status_code == 200
    now[0] = 141.0
    assert_error(rerun(client, first), 404, "expired")
    ids = [search(client, photo, option="auto").json["query"]["id"] for _ in range(3)]
    assert_error(rerun(client, ids[0]), 404)  # the oldest of three, over a capacity of two
    assert rerun(client, ids[2]).status_code == 200
