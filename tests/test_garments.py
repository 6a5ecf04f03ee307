"""Auto answers every garment of the photo (shop the look): the engine, the API and the CLI's rows,
on the stand-in engine with the detector's garments set by the test."""

from __future__ import annotations

import io
import json
import time
from contextlib import contextmanager, nullcontext

import pytest
from PIL import Image

from search.query import Query
from tests.indexer_fakes import FakeROI
from tests.webui_api_fixtures import search


@contextmanager
def garments_found(engine, photo: bytes):
    """The stand-in detector finds two garments in ``photo``: a top at its upper left (small, but
    the detector is surer of it) and trousers over most of it."""
    w, h = Image.open(io.BytesIO(photo)).size
    top = (0, 0, w // 2, h // 2)
    bottom = (w // 4, h // 4, w, h)
    detector = engine.describer.detector
    detector.found = [FakeROI(top, "tops", 0.95), FakeROI(bottom, "bottoms", 0.7)]
    try:
        yield top, bottom
    finally:
        detector.found = []


def test_auto_searches_every_garment_and_answers_the_likeliest_meant_first(engine, photo):
    with garments_found(engine, photo) as (top, bottom):
        answer = engine.search(Query.search(photo, "auto", k=5))
    assert [g.box for g in answer.garments] == [bottom, top]  # 0.7 x sqrt(9/16) > 0.95 x sqrt(1/4)
    for g in answer.garments:
        assert not g.fallback and g.results
        searched = {c for c, _p in g.searched}
        assert g.category in searched
        # the product whose very photo this is comes first in a garment, whatever its category
        pinned = g.results[0].id if g.note and "the same photo as product" in g.note else None
        assert all(r.category in searched for r in g.results if r.id != pinned), (searched, g.results)
    out = answer.to_json()
    assert out["query"]["garment"] == 0 and out["query"]["roi"] == list(bottom)
    assert out["results"] == out["garments"][0]["results"]
    assert [g["garment"] for g in out["garments"]] == [0, 1]


def test_each_garment_crop_is_encoded_once_for_every_category_read(engine, photo):
    predictor = engine.describer.predictor
    encoded, features = [], predictor.features
    predictor.features = lambda images: encoded.append(len(images)) or features(images)
    try:
        with garments_found(engine, photo):
            engine.search(Query.search(photo=photo))
    finally:
        del predictor.features
    assert encoded == [2]  # the two crops, once: the category read and the guided decodes share it


def test_a_rerun_answers_another_garment_with_its_own_narrowing(engine, photo):
    with garments_found(engine, photo) as (top, _bottom):
        first = engine.search(Query.search(photo, "auto", k=3))
    other = engine.search(Query.rerun(first.query_id, garment=1, k=2, offset=1))
    assert other.garment == 1 and other.selected.box == top
    assert other.to_json()["query"]["offset"] == 1
    ranked = [r.id for r in engine.search(Query.rerun(first.query_id, garment=1, k=3)).results]
    assert [r.id for r in other.results] == ranked[1:3]  # the narrowing is that garment's page
    assert [r.id for r in other.garments[0].results] == [r.id for r in first.garments[0].results][:2]
    with pytest.raises(ValueError, match="garment 5 is not in that answer"):
        engine.search(Query.rerun(first.query_id, garment=5))


def test_no_garment_found_describes_the_whole_photo_as_before(engine, photo):
    answer = engine.search(Query.search(photo, "auto", k=3))
    assert len(answer.garments) == 1  # the stand-in detector found none: one garment, as auto always did


def test_a_querys_timings_are_the_whole_photos_stage_by_stage(engine, photo, monkeypatch):
    """The detector's pass counts wherever it ran (auto and an unguided describe run it before the
    batched describe), and the stages add up to no more than the total."""
    stages = ("prepare", "detector", "attributes", "appearance", "colour", "same_photo", "search", "answer")
    detector = engine.describer.detector
    raw = detector.raw

    def slow_raw(images):
        time.sleep(0.05)
        return raw(images)

    monkeypatch.setattr(detector, "raw", slow_raw)
    w, h = Image.open(io.BytesIO(photo)).size
    for option, fields, several in (
        ("auto", {}, False),
        ("auto", {}, True),
        ("guided", {"category": "shoes"}, False),
        ("rectangle", {"box": (0, 0, w // 2, h // 2)}, False),
    ):
        with garments_found(engine, photo) if several else nullcontext():
            t = engine.search(Query.search(photo, option, k=3, **fields)).timings_ms
        assert set(stages) <= set(t), (option, t)
        assert t["detector"] >= 50, (option, several, t)
        assert sum(t[s] for s in stages) <= t["total"] + 0.1, (option, t)


def test_the_api_offers_every_garment_and_reruns_another(client, engine, photo):
    with garments_found(engine, photo) as (top, _bottom):
        r = search(client, photo, option="auto", k=3)
    assert r.status_code == 200, r.data
    body = r.json
    assert len(body["garments"]) == 2 and body["query"]["garment"] == 0
    assert all(h["image_url"] for g in body["garments"] for h in g["results"])
    again = search(client, None, query_id=body["query"]["id"], garment=1, k=3)
    assert again.status_code == 200, again.data
    assert again.json["query"]["garment"] == 1 and again.json["query"]["roi"] == list(top)
    assert again.json["results"] == again.json["garments"][1]["results"]
    refused = search(client, photo, option="auto", garment=1)
    assert refused.status_code == 400 and "query_id" in refused.json["error"]


def test_the_cli_rows_name_their_garment(engine, photo):
    from cli.search import _jsonl, _table

    with garments_found(engine, photo):
        out = engine.search(Query.search(photo, "auto", k=2)).to_json()
    rows = [json.loads(line) for line in _jsonl(out).splitlines()]
    assert {r["garment"] for r in rows} == {0, 1}
    assert all(r["garment_category"] == out["garments"][r["garment"]]["category"] for r in rows)
    assert "2 garments found" in _table(out)
