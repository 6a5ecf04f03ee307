"""The Milvus backend against a real Milvus server, started here from PyPI's ``milvus`` package.

The server (Milvus 2.3.5 standalone: embedded etcd, local storage) starts once per session in
about 10 s, so these tests are ``slow``; they skip, saying why, where it cannot be imported or
started. Everything is compared with the embedded engine, the reference: the same ids in the same
order, the same scores and notes, with BIN_FLAT; a recall floor with BIN_IVF_FLAT.
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from search.index import InvertedIndex
from search.narrowing import MAX_K, MAX_OFFSET, Narrowing
from search.protocol import SearchIndex
from search.query import Query
from search.ranking import RankingConfig
from search.rows import PhotoRows
from tests.ranking_helpers import pinned, ranked
from tests.webui_api_fixtures import TOKEN, add, search

pytestmark = pytest.mark.slow

CODE_BYTES, BINS = 8, 6  # small codes: many Hamming ties, at the shortlist's boundary too


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory):
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install '.[test]')")
    from search.milvus_local import local_milvus

    try:
        server = local_milvus(tmp_path_factory.mktemp("milvus"))
        uri = server.__enter__()
    except (ImportError, RuntimeError, OSError) as exc:
        pytest.skip(f"no local Milvus server on this machine: {exc}")
    yield uri
    server.__exit__(None, None, None)


def _random_catalogue(n, seed=0):
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (n // 4, CODE_BYTES), dtype=np.uint8)  # repeated codes: exact ties
    return {
        "ids": [f"p{i:04d}" for i in range(n)],
        "categories": rng.choice(["t-shirt", "pants", "dress"], n).tolist(),
        "attributes": [
            {"colour": str(rng.choice(["red", "blue", "black"])), "fit": str(rng.choice(["slim", "loose"]))}
            for _ in range(n)
        ],
        "codes": pool[rng.integers(0, len(pool), n)],
        "colours": rng.random((n, BINS)).astype(np.float16),
        "photos": [int(x) for x in rng.integers(1, 2**63, n, dtype=np.int64)],
        "prices": [None if i % 7 == 0 else float(rng.integers(5, 100)) for i in range(n)],
    }


def _rows(data, numbers=None) -> PhotoRows:
    return PhotoRows(
        *[data[k] for k in ("ids", "categories", "attributes", "codes", "colours", "photos", "prices")], numbers
    )


def _both(uri, collection, data, numbers=None):
    from search.milvus import MilvusIndex
    from search.milvus_export import CollectionSpec, build_vector_index, create_collection

    ram = InvertedIndex(code_bytes=CODE_BYTES, colour_bins=BINS)
    target = create_collection(uri, CollectionSpec(CODE_BYTES * 8, BINS, collection=collection), replace=True)
    build_vector_index(target)
    milvus = MilvusIndex(uri, collection=collection)
    for index in (ram, milvus):
        index.add(_rows(data, numbers))
    return ram, milvus


def test_milvus_index_answers_as_the_ram_index(milvus_uri):
    data = _random_catalogue(2000)
    ram, milvus = _both(milvus_uri, "unit", data)
    ten = RankingConfig(shortlist=10)
    assert isinstance(ram, SearchIndex) and isinstance(milvus, SearchIndex)
    assert len(milvus) == len(ram) == 2000 and milvus.category_sizes() == ram.category_sizes()
    ids, cats, attrs, codes, colours = (data[k] for k in ("ids", "categories", "attributes", "codes", "colours"))
    narrowings = [
        {},
        {"filters": {"colour": "red"}},
        {"filters": {"colour": "blue", "fit": "slim"}, "offset": 7},
        {"price_min": 20.0, "price_max": 60.0},
        {"price_min": 40.0, "price_max": 40.0, "filters": {"fit": "loose"}},
        {"offset": 25},
        {"filters": {"colour": "black"}, "price_min": 90.0},  # a few products: the note says so
    ]
    for q in range(40):
        kw = narrowings[q % len(narrowings)]
        want = ranked(ram, codes[q], colours[q], cats[q], attrs[q], ten, k=15, **kw)
        got = ranked(milvus, codes[q], colours[q], cats[q], attrs[q], ten, k=15, **kw)
        assert got == want, (q, kw)
    red = {"filters": {"colour": "red"}}
    assert pinned(milvus, ids[:40], codes[0], colours[0], attrs[0], ten, **red) == pinned(
        ram, ids[:40], codes[0], colours[0], attrs[0], ten, **red
    )
    assert milvus.same_photo(data["photos"][5]) == ram.same_photo(data["photos"][5]) == [(ids[5], cats[5])]
    # add, replace and delete are seen by the next search
    assert milvus.delete([ids[3], "no-such-id"]) == ram.delete([ids[3], "no-such-id"]) == 1
    assert ids[3] not in milvus and ids[4] in milvus
    moved = {k: v[4:5] for k, v in data.items()}
    moved["categories"] = ["dress"]
    for index in (ram, milvus):
        index.add(_rows(moved))
    assert ranked(milvus, codes[4], colours[4], "dress", ranking=ten, k=30) == ranked(
        ram, codes[4], colours[4], "dress", ranking=ten, k=30
    )
    assert milvus.category_sizes() == ram.category_sizes()


def test_products_of_several_photos_are_answered_once_at_their_best_photo(milvus_uri):
    """A row a photo (key ``id/n``): the same hits as the embedded index, photo numbers included
    (Milvus' counts are of photos, so only the hits are compared)."""
    base = _random_catalogue(600, seed=5)
    rows = [(i, n) for i in range(600) for n in range(3 if i % 3 == 0 else 1)]
    rng = np.random.default_rng(6)
    data = {k: [v[i] for i, _n in rows] for k, v in base.items()}
    data["codes"] = np.stack(
        [base["codes"][i] if n == 0 else rng.integers(0, 256, CODE_BYTES, np.uint8) for i, n in rows]
    )
    data["colours"] = np.stack(data["colours"])
    data["photos"] = [int(x) for x in rng.integers(1, 2**63, len(rows), dtype=np.int64)]
    numbers = [n for _i, n in rows]
    ram, milvus = _both(milvus_uri, "photos", data, numbers)
    twenty = RankingConfig(shortlist=20)
    assert len(ram) == 600 and ram.photo_count() == milvus.photo_count() == len(rows)
    for q in range(30):
        r = rows.index((q, 0))
        kw = [{}, {"filters": {"colour": "red"}}, {"offset": 15}][q % 3]
        args = (data["codes"][r], data["colours"][r], data["categories"][r], data["attributes"][r])
        want, got = ranked(ram, *args, twenty, k=15, **kw).hits, ranked(milvus, *args, twenty, k=15, **kw).hits
        assert got == want and len({h.id for h in got}) == len(got), (q, kw)
    extra = rows.index((3, 2))  # the third photo of p0003
    assert (
        milvus.same_photo(data["photos"][extra])
        == ram.same_photo(data["photos"][extra])
        == [("p0003", data["categories"][extra])]
    )
    best = pinned(ram, ["p0003"], data["codes"][extra], data["colours"][extra])
    assert pinned(milvus, ["p0003"], data["codes"][extra], data["colours"][extra]) == best and best[0].photo == 2
    assert milvus.delete(["p0003"]) == ram.delete(["p0003"]) == 1 and "p0003" not in milvus
    assert milvus.photo_count() == ram.photo_count() == len(rows) - 3


def test_bad_queries_are_the_embedded_errors(milvus_uri):
    data = _random_catalogue(40, seed=3)
    ram, milvus = _both(milvus_uri, "errors", data)
    code, colour = data["codes"][0], data["colours"][0]
    # a bad page is refused where the narrowing is built, before any backend is asked
    for bad, words in [
        ({"k": 0}, f"k must be an integer from 1 to {MAX_K}"),
        ({"offset": -1}, f"offset must be an integer from 0 to {MAX_OFFSET}"),
        ({"filters": {"colour": "teal"}}, "unknown colour 'teal'"),
    ]:
        with pytest.raises(ValueError, match=words):
            Narrowing.of(**bad)
    unchecked = Narrowing(filters={"colour": "teal"})  # should one reach a backend, each refuses it alike
    for index in (ram, milvus):
        with pytest.raises(ValueError, match="unknown filter colour=teal"):
            index.shortlist(code, "pants", unchecked, 10)
        with pytest.raises(ValueError, match="the query code has 3 bytes"):
            ranked(index, code[:3], colour, "pants")
        with pytest.raises(ValueError, match="unknown category"):
            ranked(index, code, colour, "spaceship")
        with pytest.raises(ValueError, match="codes must be 8 bytes"):
            index.add(PhotoRows(["x"], ["pants"], [{}], np.zeros((1, 4), np.uint8), np.zeros((1, BINS))))


def test_a_search_that_finds_nothing_answers_as_the_ram_index(milvus_uri):
    data = _random_catalogue(40, seed=4)
    ram, milvus = _both(milvus_uri, "nothing", data)
    code, colour = data["codes"][0], data["colours"][0]
    for category, kw in (("skirt", {}), ("pants", {"price_min": 1e9})):  # no product; none in the range
        want = ranked(ram, code, colour, category, **kw)
        assert want.hits == [] and want.note
        assert ranked(milvus, code, colour, category, **kw) == want
    assert pinned(milvus, data["ids"][:5], code, colour, price_min=1e9) == []


def test_named_products_refuse_a_code_of_another_size(milvus_uri):
    data = _random_catalogue(40, seed=5)
    _ram, milvus = _both(milvus_uri, "named_code", data)
    with pytest.raises(ValueError, match="the query code has 1 bytes"):  # else it broadcasts: wrong distances
        milvus.named(data["ids"][:5], data["codes"][0][:1], Narrowing())


def test_ivf_recall_at_10_against_the_exact_answer(milvus_uri):
    """BIN_IVF_FLAT on clustered codes (products of one look share most bits, as real codes do)."""
    from search.milvus import MilvusIndex, insert_rows
    from search.milvus_export import CollectionSpec, build_vector_index, create_collection

    rng = np.random.default_rng(5)
    n, nbytes = 20_000, 32
    centres = rng.integers(0, 2, (200, nbytes * 8), dtype=np.uint8)
    bits = centres[rng.integers(0, 200, n)] ^ (rng.random((n, nbytes * 8)) < 0.08)
    codes = np.packbits(bits.astype(np.uint8), axis=1)
    ids = [f"q{i:05d}" for i in range(n)]
    colours = np.full((n, BINS), 1 / BINS, np.float16)
    ranking = RankingConfig(shortlist=50)
    ram = InvertedIndex(code_bytes=nbytes, colour_bins=BINS)
    ram.add(PhotoRows(ids, ["pants"] * n, [{}] * n, codes, colours))
    target = create_collection(
        milvus_uri, CollectionSpec(nbytes * 8, BINS, collection="ivf", index_type="BIN_IVF_FLAT"), replace=True
    )
    for lo in range(0, n, 5000):
        insert_rows(
            target,
            [
                {"id": ids[i], "category": "pants", "code": codes[i].tobytes(), "colour_histogram": [1 / BINS] * BINS}
                | {"photo": 0, "price": float("nan"), "title": "", "category_path": "", "url": ""}
                | {g: "" for g in ("age_group", "colour", "pattern", "sleeve_length", "garment_length", "neckline")}
                | {"fit": ""}
                for i in range(lo, min(n, lo + 5000))
            ],
        )
    build_vector_index(target, index_type="BIN_IVF_FLAT", nlist=64)
    milvus = MilvusIndex(milvus_uri, collection="ivf", nprobe=8)
    recall = []
    for q in range(50):
        query = codes[q * 97]
        exact = {h.id for h in ranked(ram, query, colours[0], "pants", ranking=ranking, k=10).hits}
        approx = {h.id for h in ranked(milvus, query, colours[0], "pants", ranking=ranking, k=10).hits}
        recall.append(len(exact & approx) / 10)
    assert np.mean(recall) >= 0.9, np.mean(recall)


# -- the whole engine: export, the same 50 queries in all three options, REST add and delete ----------


@pytest.fixture(scope="module")
def engines(standin_index, milvus_uri, tmp_path_factory):
    """The embedded engine and the Milvus one over one exported copy of the stand-in index."""
    from cli.main import main
    from indexer.store import Store
    from search.engine import SearchEngine, load_ram_index
    from search.milvus import MilvusIndex

    index_dir, describer = standin_index
    copy = tmp_path_factory.mktemp("milvus-index") / "index"
    shutil.copytree(index_dir, copy)
    assert main(["export", "milvus", str(copy), "--milvus", milvus_uri, "--collection", "engine", "--quiet"]) == 0
    # the same collection again is refused, unless replaced
    assert main(["export", "milvus", str(copy), "--milvus", milvus_uri, "--collection", "engine", "--quiet"]) == 2
    ranking = RankingConfig(shortlist=5)  # tiers and ties at the boundary on a small catalogue
    ram = load_ram_index(copy)
    store = Store(copy, readonly=False)  # LMDB opens an environment once per process: one store for both
    embedded = SearchEngine(describer=describer, store=store, index=ram, ranking=ranking)
    index = MilvusIndex(milvus_uri, collection="engine", store=store)
    milvus = SearchEngine(describer=describer, store=store, index=index, ranking=ranking)
    yield embedded, milvus
    store.close()  # the two engines share it


def _same(answer: dict) -> dict:
    q = {k: v for k, v in answer["query"].items() if k not in ("id", "timings_ms")}
    return {"query": q, "results": answer["results"]}


def test_fifty_queries_in_all_three_options_answer_as_the_embedded_engine(engines, rows, synth_dump):
    embedded, milvus = engines
    assert len(milvus) == len(embedded) and milvus.stats()["categories"] == embedded.stats()["categories"]
    narrowings = [{}, {"k": 5, "offset": 3}, {"filters": {"fit": "slim"}}, {"price_min": 10, "price_max": 80}]
    compared = 0
    for i, row in enumerate(rows[:50]):
        photo = Image.open(synth_dump.parent / row["image"]).convert("RGB")
        if i % 2:  # a photo that is not in the catalogue: no product pinned as the same photo
            photo = ImageOps.mirror(photo)
        box = ",".join(str(int(v)) for v in row["boxes"][0][:4])
        category = row["boxes"][0][4]
        for option, extra in [("auto", {}), ("guided", {"category": category}), ("rectangle", {"box": box})]:
            kw = {"k": 10, **extra, **narrowings[i % len(narrowings)]}
            query = Query.search(photo, option, **kw)
            want, got = embedded.search(query).to_json(), milvus.search(query).to_json()
            differ = {k: (v, want["query"].get(k)) for k, v in _same(got)["query"].items() if v != want["query"].get(k)}
            assert _same(got) == _same(want), (row["id"], option, kw, differ)
            compared += bool(want["results"])
    assert compared >= 100  # most searches found something to compare


def test_products_added_and_deleted_through_the_api_go_to_milvus(engines, checked_client):
    from webui.app import create_app

    _embedded, milvus = engines
    client = checked_client(create_app({"ENGINE": milvus, "TOKEN": TOKEN, "TESTING": True}))
    buf = io.BytesIO()
    trousers = Image.new("RGB", (96, 160), (245, 245, 245))
    trousers.paste((35, 70, 190), (20, 10, 76, 150))
    trousers.save(buf, "PNG")
    r = add(client, buf.getvalue(), id="via-api", title="Blue trousers", price="12.5")
    assert r.status_code == 201, r.data
    assert "via-api" in milvus.index
    shown = milvus.index.collection.query('id == "via-api"', output_fields=["title", "price", "category"])
    assert shown[0]["title"] == "Blue trousers" and shown[0]["price"] == 12.5 and shown[0]["category"] == "pants"
    found = search(client, buf.getvalue(), option="guided", category="pants", k=5).json
    assert found["results"][0]["id"] == "via-api" and "same photo" in found["query"]["note"]
    assert client.delete("/api/products/via-api", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert "via-api" not in milvus.index
    ids = [h["id"] for h in search(client, buf.getvalue(), option="guided", category="pants", k=50).json["results"]]
    assert "via-api" not in ids


def test_cli_query_with_the_milvus_backend(engines, milvus_uri, rows, synth_dump, tmp_path, monkeypatch, capsys):
    from cli.main import main
    from indexer.describe import Describer

    embedded, milvus = engines
    monkeypatch.setattr(Describer, "load", staticmethod(lambda *a, **k: embedded.describer))
    copy = shutil.copytree(milvus.store.path, tmp_path / "index")  # LMDB: one opening per process and path
    photo = synth_dump.parent / rows[0]["image"]
    argv = ["query", str(copy), str(photo), "--category", rows[0]["boxes"][0][4], "--json"]
    assert main([*argv, "--backend", "milvus", "--milvus", milvus_uri, "--collection", "engine"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["results"] and got["results"][0]["id"] == rows[0]["id"]
    assert main([*argv, "--backend", "milvus"]) == 2
    assert "--backend milvus needs --milvus URI" in capsys.readouterr().err
    assert main([*argv, "--backend", "milvus", "--milvus", milvus_uri, "--collection", "nothing_here"]) == 2
    assert "has no collection 'nothing_here'" in capsys.readouterr().err
    assert main([*argv, "--backend", "milvus", "--milvus", milvus_uri, "--collection", "no-dash"]) == 2
    assert "--collection must be letters, digits and underscores" in capsys.readouterr().err
    assert main([*argv, "--backend", "milvus", "--milvus", "127.0.0.1:1"]) == 2
    assert "--milvus must be a server URI" in capsys.readouterr().err


def test_serve_with_the_milvus_backend_opens_a_milvus_engine(engines, milvus_uri, tmp_path, monkeypatch):
    import webui.serving
    from cli.main import main
    from indexer.describe import Describer
    from search.milvus import MilvusIndex

    embedded, milvus = engines
    monkeypatch.setattr(Describer, "load", staticmethod(lambda *a, **k: embedded.describer))
    opened = []
    monkeypatch.setattr(webui.serving, "serve", lambda index, **kw: opened.append(kw["open_engine"]()))
    copy = shutil.copytree(milvus.store.path, tmp_path / "index")
    argv = ["serve", str(copy), "--backend", "milvus", "--milvus", milvus_uri, "--collection", "engine"]
    assert main(argv) == 0
    (engine,) = opened
    assert isinstance(engine.index, MilvusIndex) and len(engine) == len(embedded)
    assert engine.store.readonly  # no token: nothing is written
    engine.close()
