"""Products of several photos: the dump's ``images``, bulk indexing, search (each product once, at
its best photo), thumbnails by photo, and the API's product add with the image part repeated."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from foundation.dump import MAX_PHOTOS, ProductError, check_product
from foundation.schema import default_schema
from indexer.bulk import BulkConfig, build_index
from indexer.store import Store
from search.engine import SearchEngine, load_ram_index
from search.index import InvertedIndex
from search.narrowing import Narrowing
from search.query import Query
from search.ranking import Probe, RankingConfig
from search.rows import PhotoRows
from search.tiers import search_page
from tests.indexer_fakes import fake_describer, fake_models
from tests.standin import standin_engine
from webui.app import create_app

TOKEN = "photos-token"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return fake_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def photo_dump(synth_dump, tmp_path_factory) -> Path:
    """11 synthetic products; ``multi`` has its photo, a mirrored one, the same bytes again and a
    missing file; ``listed`` gives only ``images``; ``hopeless`` has no usable photo."""
    out = tmp_path_factory.mktemp("photos")
    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[:12]]
    for r in rows:
        r["image"] = str(synth_dump.parent / r["image"])
    first = Path(rows[0]["image"])
    ImageOps.mirror(Image.open(first).convert("RGB")).save(out / "mirrored.jpg", quality=92)
    (out / "copy.jpg").write_bytes(first.read_bytes())
    Image.new("RGB", (200, 200), (230, 230, 230)).save(out / "blank.jpg")
    rows[0] = rows[0] | {"id": "multi", "images": ["mirrored.jpg", "copy.jpg", "missing.jpg"]}
    rows[1] = {k: v for k, v in rows[1].items() if k != "image"} | {
        "id": "listed",
        "images": [rows[1]["image"], rows[2]["image"]],
    }
    rows[3] = rows[3] | {"id": "hopeless", "image": "missing.jpg", "images": ["blank.jpg"]}
    dump = out / "products.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + rows[3:]))
    return dump


@pytest.fixture(scope="module")
def photo_index(photo_dump, models, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("index") / "index"
    summary = build_index(
        photo_dump, models, out, BulkConfig(workers=0, batch_size=4, progress=False), describer=fake_describer(models)
    )
    return out, summary


def test_the_dump_reads_images_beside_image():
    schema = default_schema()
    base = Path("/shop")
    p = check_product(
        {"id": "a", "title": "red dress", "image": "1.jpg", "images": ["2.jpg", "1.jpg", "/abs/3.jpg"]},
        schema=schema,
        base=base,
    )
    paths = [photo.path for photo in p.photos]
    assert paths == [base / "1.jpg", base / "2.jpg", Path("/abs/3.jpg")]  # a path given twice kept once
    assert check_product(p.to_json(), schema=schema) == p  # a dump row again
    p = check_product({"id": "a", "title": "red dress", "images": '["x.jpg", "y.jpg"]'}, schema=schema)  # CSV
    assert [photo.path for photo in p.photos] == [Path("x.jpg"), Path("y.jpg")]
    for row, words in (
        ({"images": []}, "give image or images"),
        ({"images": ["ok.jpg", ""]}, "photo 1 must be a non-empty path"),
        ({"images": ["ok.jpg", 3]}, "photo 1"),
        ({"images": "a.jpg"}, "not valid JSON"),
        ({"images": [f"{i}.jpg" for i in range(MAX_PHOTOS + 1)]}, f"the limit is {MAX_PHOTOS}"),
    ):
        with pytest.raises(ProductError, match=words):
            check_product({"id": "a", "title": "red dress", **row}, schema=schema)


def test_each_photo_is_indexed_under_its_product(photo_index, photo_dump, models):
    index, summary = photo_index
    assert summary["indexed"] == 10 and summary["products"] == 10  # 'hopeless' skipped
    assert summary["photos"] == 10 + 1 + 1  # 'multi' and 'listed' have two photos each
    assert summary["photos_left_out"] == 2  # multi's copy (stored once) and missing file
    report = json.loads((index / "report.json").read_text())
    left = {(p["id"], p["photo"]): p["reason"] for p in report["photos_left_out"]}
    assert "the same bytes as photo 0" in left[("multi", 2)] and "cannot read" in left[("multi", 3)]
    assert {s["id"] for s in report["skipped"]} == {"hopeless"}
    with Store(index) as store:
        multi = store.get("multi")
        assert [Path(p.path).name for p in multi.photos] == [
            Path(store.metadata("multi")["image"]).name,
            "mirrored.jpg",
        ]
        assert store.metadata("multi")["images"][1].endswith("mirrored.jpg")
        first, second = store.thumbnail("multi"), store.thumbnail("multi", 1)
        assert first and second and first != second and store.thumbnail("multi", 2) is None
        assert len(store.get("listed").photos) == 2
    again = build_index(
        photo_dump, models, index, BulkConfig(workers=0, progress=False), describer=fake_describer(models)
    )
    assert again["unchanged"] == 10 and again["indexed"] == 0  # every photo's hash in the content hash


def test_a_search_answers_a_product_once_at_the_photo_that_matched(photo_index, photo_dump, models):
    index, _summary = photo_index
    ram = load_ram_index(index)
    assert len(ram) == 10 and ram.photo_count() == 12
    with Store(index, readonly=False) as store:
        engine = SearchEngine(describer=fake_describer(models), store=store, index=ram)
        mirrored = (photo_dump.parent / "mirrored.jpg").read_bytes()
        category = store.get("multi").photos[1].description.category
        response = engine.search(Query.search(mirrored, "guided", category=category, k=20)).to_json()
        ids = [r["id"] for r in response["results"]]
        assert len(ids) == len(set(ids))
        assert response["results"][0]["id"] == "multi" and response["results"][0]["photo"] == 1
        assert "same photo" in response["query"]["note"]


def ranked(index, code, colour, category, ranking, **narrowing):
    probe = Probe.of(code, colour, {}, index.columns)
    return search_page(index, probe, category, Narrowing.of(**narrowing), ranking)


def test_pages_hold_each_product_once_at_its_best_photo():
    rng = np.random.default_rng(3)
    idx, tiers = InvertedIndex(code_bytes=8, colour_bins=4), RankingConfig(shortlist=100)
    n, photos = 150, 3
    ids = [f"p{i:03d}" for i in range(n) for _ in range(photos)]
    numbers = [j for _ in range(n) for j in range(photos)]
    codes = rng.integers(0, 256, (n * photos, 8), dtype=np.uint8)
    colours = rng.random((n * photos, 4)).astype(np.float32)
    rows = PhotoRows(ids, ["dress"] * len(ids), [{}] * len(ids), codes, colours, numbers=numbers)
    idx.add(rows)
    assert len(idx) == n and idx.photo_count() == n * photos and idx.category_sizes() == {"dress": n}
    q_code, q_colour = codes[7], colours[7]
    whole = ranked(idx, q_code, q_colour, "dress", tiers, k=n)
    assert whole.candidates == n and [h.id for h in whole.hits][0] == "p002" and whole.hits[0].photo == 1
    assert sorted(h.id for h in whole.hits) == sorted(set(ids))
    pages = [h for off in range(0, n, 40) for h in ranked(idx, q_code, q_colour, "dress", tiers, k=40, offset=off).hits]
    assert [h.id for h in pages] == [h.id for h in whole.hits]  # same list, whatever the page size
    assert len({h.tier for h in whole.hits}) > 1  # several tiers of the Hamming order were paged
    r = RankingConfig(shortlist=n * photos)  # one tier
    ham = np.unpackbits(codes ^ q_code, axis=1).sum(1)
    stored = colours.astype(np.float16).astype(np.float32)  # the index keeps float16 histograms
    norm = stored / stored.sum(1, keepdims=True)
    dist = 0.5 * np.abs(norm - q_colour / q_colour.sum()).sum(1)
    score = r.w_appearance * ham / 64 + r.w_colour * dist
    for h in ranked(idx, q_code, q_colour, "dress", r, k=n).hits:  # each at its best photo
        mine = [i for i, pid in enumerate(ids) if pid == h.id]
        best = min(mine, key=lambda i: (round(float(score[i]), 6), numbers[i]))
        assert numbers[best] == h.photo and h.score == pytest.approx(float(score[best]), abs=1e-5)
    assert idx.delete(["p000", "p001"]) == 2 and len(idx) == n - 2 and idx.photo_count() == (n - 2) * photos


def _png(size=(96, 128), colour=(200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    im = Image.new("RGB", size, colour)
    im.paste((20, 20, 160), (10, 10, size[0] // 2, size[1] // 2))
    im.save(buf, "PNG")
    return buf.getvalue()


def test_the_api_adds_a_product_of_several_photos(synth_dump, tmp_path, checked_client):
    with standin_engine(synth_dump, tmp_path / "index", n=12) as engine:
        client = checked_client(create_app({"ENGINE": engine, "TOKEN": TOKEN, "TESTING": True}))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        one, two = _png(), _png((128, 96), (30, 160, 60))

        def add(*photos, pid="multi-1"):
            data = {
                "id": pid,
                "title": "Red pants",
                "image": [(io.BytesIO(p), f"{i}.png") for i, p in enumerate(photos)],
            }
            return client.post("/api/products", data=data, headers=headers, content_type="multipart/form-data")

        r = add(one, two, one)  # the same bytes twice: stored once
        assert r.status_code == 201, r.data
        assert r.json["image_urls"] == ["/api/products/multi-1/image", "/api/products/multi-1/image?photo=1"]
        assert client.get("/api/health").json["products"] == 13
        first, second = client.get(r.json["image_urls"][0]), client.get(r.json["image_urls"][1])
        assert first.mimetype == second.mimetype == "image/jpeg" and first.data != second.data
        assert client.get("/api/products/multi-1/image?photo=2").status_code == 404
        assert client.get("/api/products/multi-1/image?photo=x").status_code == 400
        found = client.post(
            "/api/search",
            data={"image": (io.BytesIO(two), "q.png"), "option": "guided", "category": "pants"},
            content_type="multipart/form-data",
        ).json["results"]
        assert [h["id"] for h in found].count("multi-1") == 1
        hit = next(h for h in found if h["id"] == "multi-1")
        assert hit["photo"] == 1 and hit["image_url"].endswith("?photo=1")
        r = add(one, b"not a photo at all")
        assert r.status_code == 400 and "photo 1" in r.json["error"]
        assert add(*[one] * (MAX_PHOTOS + 1)).status_code == 400
        assert add(one).status_code == 201  # replaced by one photo: the old second photo goes
        assert client.get("/api/products/multi-1/image?photo=1").status_code == 404
