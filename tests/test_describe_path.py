"""One describe path: bulk indexing, the API's product add and a search see a photo identically."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

import search.engine as engine_module
from foundation.images import ImageError
from indexer.bulk import BulkConfig, build_index
from indexer.describe import describe_query
from indexer.prepare import WORKING_SIDE, guide_category, prepare_image
from indexer.store import Store
from search.engine import SearchEngine, load_ram_index
from search.query import Query
from tests.indexer_fakes import fake_describer, fake_models


def _rotated_photo() -> bytes:
    """A 1600x900 JPEG stored sideways with EXIF orientation 6: upright it is 900x1600."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8)
    arr[200:700, 400:1200] = (180, 40, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("path")
    models = fake_models(root / "models")
    photo = _rotated_photo()
    (root / "p1.jpg").write_bytes(photo)
    row = {"id": "p1", "image": "p1.jpg", "title": "red midi dress", "price": 30.0, "url": "https://shop/p1"}
    (root / "dump.jsonl").write_text(json.dumps(row) + "\n")
    build_index(
        root / "dump.jsonl",
        models,
        root / "index",
        BulkConfig(workers=0, progress=False),
        describer=fake_describer(models),
    )
    with Store(root / "index") as store:
        bulk = store.get("p1")
    return root, photo, row, bulk


def test_bulk_api_add_and_search_give_byte_identical_descriptions(indexed, monkeypatch):
    root, photo, row, bulk = indexed
    describer = fake_describer(root / "index" / "models")
    index = load_ram_index(root / "index")
    store = Store(root / "index", readonly=False)
    # the engine signs with the models the index was built with, as bulk did
    describer.signature = json.loads((root / "index" / "index.json").read_text())["models_signature"]
    with SearchEngine(describer=describer, store=store, index=index) as engine:
        seen = []  # what the search's describe (indexer.describe.describe_query) saw

        def described(*args, **kw):
            looks = describe_query(*args, **kw)
            seen.append(looks[0][0][0])
            return looks

        monkeypatch.setattr(engine_module, "describe_query", described)
        engine.add({k: v for k, v in row.items() if k != "image"} | {"id": "p2"}, photo)
        added = store.get("p2")
        response = engine.search(Query.search(photo, "guided", category="dress", k=5)).to_json()
    (query,) = seen
    bulk_photo, added_photo = bulk.photos[0].description, added.photos[0].description
    assert bulk_photo.roi == added_photo.roi == query.roi
    assert bulk_photo.roi[3] > 900  # in the upright photo's own pixels (900x1600)
    for other in (added_photo, query):
        assert other.code.tobytes() == bulk_photo.code.tobytes()
        assert other.colour.tobytes() == bulk_photo.colour.tobytes()
    assert added.content_hash == bulk.content_hash  # same bytes, same fields, same models
    assert response["results"][0]["hamming"] == 0
    assert response["query"]["roi"] == list(bulk_photo.roi)


def test_the_working_size_bounds_what_the_models_see():
    prepared = prepare_image(_rotated_photo())
    assert prepared.original_size == (900, 1600)
    assert max(prepared.image.size) == WORKING_SIDE and prepared.image.size[0] < prepared.image.size[1]
    assert prepared.to_original((0, 0, *prepared.image.size)) == (0, 0, 900, 1600)


def test_blank_and_strip_photos_are_refused_before_any_model():
    with pytest.raises(ImageError, match="blank"):
        prepare_image(Image.new("RGB", (300, 200), (120, 120, 120)))
    strip = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 2600, 3), dtype=np.uint8)).save(strip, "PNG")
    with pytest.raises(ImageError, match="aspect ratio"):
        prepare_image(strip.getvalue())


def test_category_precedence_explicit_then_text_then_label(indexed):
    from foundation.schema import default_schema

    schema = default_schema()
    assert guide_category(schema, explicit="pants", texts=("dresses",), label="skirt") == "pants"
    assert guide_category(schema, texts=("women/dresses", "red midi dress"), label="skirt") == "dress"
    assert guide_category(schema, texts=("new arrival",), label="skirt") == "skirt"
    assert guide_category(schema, texts=("new arrival",)) is None
    with pytest.raises(ValueError, match="robe"):
        guide_category(schema, explicit="robe")


def test_one_product_validation_for_dump_rows_and_api_adds(tmp_path):
    from foundation.dump import ProductError, read_dump
    from foundation.schema import default_schema
    from indexer.products import product_from_fields

    schema = default_schema()
    bad = {
        "emoji": ({"id": "\U0001f457" * 200, "title": "dress"}, "bytes in UTF-8"),
        "slash": ({"id": "qa-4/image", "title": "dress"}, "one URL path segment"),
        "dots": ({"id": "..", "title": "dress"}, "dot segment"),
        "control": ({"id": "a\x07b", "title": "dress"}, "control characters"),
        "long title": ({"id": "t", "title": "x" * 5_000_000}, "5000000 characters long; the limit is 1000"),
        "category": ({"id": "c", "title": "dress", "category": "r" * 300_000}, "unknown category"),
    }
    for name, (fields, words) in bad.items():
        with pytest.raises(ProductError, match=words) as err:
            product_from_fields(fields, schema)
        assert len(str(err.value)) < 300, name  # the bad value is not echoed back whole
    rows = [{**fields, "image": "p.jpg"} for fields, _ in bad.values()]
    rows.append({"id": "good", "image": "p.jpg", "title": "dress"})
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "broken", "title": }\n')
    from foundation.dump import DumpReport

    report = DumpReport()
    assert [p.id for p in read_dump(dump, schema=schema, report=report, check_images=False)] == ["good"]
    reasons = [p.reason for p in report.problems]
    assert len(reasons) == len(bad) + 1
    assert reasons[-1] == "not valid JSON: Expecting value at character 27 of the line"
    assert all(len(r) < 300 for r in reasons)


def test_a_bulk_run_skips_strips_and_boxes_outside_the_photo(tmp_path):
    models = fake_models(tmp_path / "models")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (8, 2600, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    rows = [
        {"id": "strip", "image": "strip.png", "title": "scarf"},
        {"id": "box", "image": "ok.png", "title": "dress", "boxes": [[0, 0, 5000, 5000, "dress"]]},
        {"id": "ok", "image": "ok.png", "title": "dress"},
    ]
    (tmp_path / "dump.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = build_index(
        tmp_path / "dump.jsonl",
        models,
        tmp_path / "index",
        BulkConfig(workers=0, progress=False),
        describer=fake_describer(models),
    )
    assert summary["indexed"] == 1 and summary["skipped"] == 2
    report = json.loads((tmp_path / "index" / "report.json").read_text())
    why = {s["id"]: (s["field"], s["reason"]) for s in report["skipped"]}
    assert why["strip"][0] == "image" and "aspect ratio" in why["strip"][1]
    assert why["box"] == ("boxes", "box 0 [0.0, 0.0, 5000.0, 5000.0] lies outside the 256x256 image")


def test_auto_hedges_across_the_likeliest_categories():
    from indexer.hedge import hedge_categories

    assert hedge_categories([("dress", 0.5), ("skirt", 0.2), ("coat", 0.15), ("hat", 0.1)]) == [
        ("dress", 0.5),
        ("skirt", 0.2),
        ("coat", 0.15),
    ]
    assert hedge_categories([("dress", 0.85), ("skirt", 0.1)]) == [("dress", 0.85)]
    assert hedge_categories([("dress", 0.6), ("skirt", 0.03)]) == [("dress", 0.6)]  # too unlikely to search


def test_auto_hedges_across_the_garments_first_then_the_categories_of_one():
    from foundation.schema import default_schema
    from indexer.hedge import hedge_categories

    great = default_schema().great_category
    # a top (a T-shirt or a shirt) and trousers: the trousers are searched before the second top
    assert hedge_categories([("t-shirt", 0.4), ("shirt", 0.3), ("pants", 0.3)], great) == [
        ("t-shirt", 0.4),
        ("pants", 0.3),
        ("shirt", 0.3),
    ]
    got = hedge_categories([("t-shirt", 0.3), ("shirt", 0.1), ("pants", 0.3), ("shoes", 0.3)], great)
    assert got == [("t-shirt", 0.3), ("pants", 0.3), ("shoes", 0.3)]  # three garments fill the slots
    # one top, unsure which: both categories of it
    assert hedge_categories([("t-shirt", 0.55), ("longsleeve", 0.4), ("pants", 0.05)], great)[:2] == [
        ("t-shirt", 0.55),
        ("longsleeve", 0.4),
    ]


def test_a_catalogue_photo_is_found_whatever_the_category_guess(indexed):
    root, photo, _row, _bulk = indexed
    index = load_ram_index(root / "index")
    store = Store(root / "index", readonly=False)
    with SearchEngine(describer=fake_describer(root / "index" / "models"), store=store, index=index) as engine:
        for option, category in (("guided", "pants"), ("guided", "hat"), ("auto", None)):
            response = engine.search(Query.search(photo, option, category=category, k=3)).to_json()
            assert response["results"][0]["id"] == "p1", (option, category)
            assert "the same photo as product 'p1'" in response["query"]["note"]
        auto = engine.search(Query.search(photo, "auto", k=3)).to_json()["query"]
        assert auto["searched"][0]["category"] == auto["category"]


class _UnsurePredictor:
    """Unguided, it hesitates between two tops; guided, it takes the guide."""

    def __init__(self):
        from tests.indexer_fakes import FakePredictor

        self.inner = FakePredictor()
        self.schema = self.inner.schema

    def features(self, images):
        return self.inner.features(images)

    def predict(self, images, guides=None, *, beam=1, features=None):
        out = self.inner.predict(images, guides, beam=beam)
        unsure = [("t-shirt", 0.5), ("longsleeve", 0.4), ("pants", 0.1)]
        return [
            p if guides is not None and guides[i] else type(p)("t-shirt", p.attributes, unsure)
            for i, p in enumerate(out)
        ]


def test_a_rectangle_without_a_category_hedges_like_auto_and_keeps_its_box(indexed):
    root, photo, _row, _bulk = indexed
    describer = fake_describer(root / "index" / "models")
    describer.predictor = _UnsurePredictor()
    index = load_ram_index(root / "index")  # opens and closes the store: LMDB allows one open per process
    store = Store(root / "index", readonly=True)
    box = (100, 300, 700, 1200)  # in the upright 900x1600 photo
    with SearchEngine(describer=describer, store=store, index=index) as engine:

        def described(*args, **kw) -> dict:
            return engine.search(Query.search(photo, *args, k=3, **kw)).to_json()["query"]

        drawn = described("rectangle", box=box)
        assert [s["category"] for s in drawn["searched"]] == ["t-shirt", "longsleeve"]
        assert drawn["roi"] == list(box) and not drawn["fallback"]
        named = described("rectangle", box=box, category="pants")
        assert [s["category"] for s in named["searched"]] == ["pants"]  # the shopper said what it is
        guided = described("guided", category="dress")
        assert [s["category"] for s in guided["searched"]] == ["dress"]


def test_the_engine_ranks_with_the_weights_saved_with_the_appearance_model(indexed):
    from search.ranking import RankingConfig

    root, _photo, _row, _bulk = indexed
    describer = fake_describer(root / "index" / "models")
    describer.coder.ranking = {"w_appearance": 3.0, "w_colour": 0.5, "w_shared": 0.0}
    index = load_ram_index(root / "index")
    with Store(root / "index", readonly=True) as store:
        r = SearchEngine(describer=describer, store=store, index=index).ranking
        assert (r.w_appearance, r.w_colour, r.w_shared, r.shortlist) == (3.0, 0.5, 0.0, RankingConfig().shortlist)
        mine = SearchEngine(describer=describer, store=store, index=index, ranking=RankingConfig(w_colour=9.0))
        assert mine.ranking == RankingConfig(w_colour=9.0)  # the caller's weights win
