"""The LMDB store: records round-trip without pickle, one transaction per write, versions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from foundation.images import make_thumbnail
from indexer.description import Description
from indexer.store import Photo, ProductRecord, Store, StoreFormatError


def _record(pid: str, seed: int = 0) -> ProductRecord:
    rng = np.random.default_rng(seed)
    colour = rng.random(132).astype(np.float32)
    desc = Description(
        category="pants",
        attributes={"great_category": ("bottoms", 0.99), "category": ("pants", 1.0), "colour": ("blue", 0.8)},
        categories=[("pants", 1.0)],
        roi=(1, 2, 30, 40),
        fallback=False,
        code=rng.integers(0, 256, 232, dtype=np.uint8),
        colour=(colour / colour.sum()).astype(np.float16),
    )
    photos = (Photo("images/x.jpg", f"x{seed}", desc),)
    return ProductRecord(pid, f"blue pants {pid}", "men/bottoms", 19.5, None, photos, f"h{seed}")


def test_round_trip_iteration_and_thumbnails(tmp_path):
    with Store(tmp_path, readonly=False) as store:
        assert len(store) == 0 and store.version() == 0
        thumb = make_thumbnail(Image.new("RGB", (600, 300), (10, 200, 30)))
        store.put([_record("b", 1), _record("a", 2)], {"a": thumb})
        assert store.version() == 1
    with Store(tmp_path) as store:
        assert len(store) == 2 and "a" in store and "zz" not in store
        got = store.get("a")
        want = _record("a", 2)
        assert got.title == want.title and got.price == 19.5 and got.content_hash == "h2"
        (photo,) = got.photos
        assert photo.path == "images/x.jpg" and photo.image_hash == "x2"
        np.testing.assert_array_equal(photo.description.code, want.photos[0].description.code)
        np.testing.assert_array_equal(photo.description.colour, want.photos[0].description.colour)
        assert photo.description.colour.dtype == np.float16
        assert photo.description.attributes["colour"] == ("blue", 0.8) and photo.description.roi == (1, 2, 30, 40)
        assert [r.id for r in store.iter_records()] == ["a", "b"]
        assert store.thumbnail("a")[:2] == b"\xff\xd8" and store.thumbnail("b") is None
        assert store.metadata("a")["attributes"] == {"great_category": "bottoms", "category": "pants", "colour": "blue"}
        assert store.hashes() == {"a": "h2", "b": "h1"}
        with pytest.raises(PermissionError, match="read-only"):
            store.put([_record("c")])


def test_replace_delete_and_version(tmp_path):
    with Store(tmp_path, readonly=False) as store:
        store.put([_record("a", 1)])
        store.put([_record("a", 5)])
        assert len(store) == 1 and store.get("a").content_hash == "h5"
        assert store.delete(["a", "missing"]) == 1
        assert len(store) == 0 and store.get("a") is None and store.version() == 3


def test_a_store_of_an_older_format_is_refused_and_a_bulk_run_empties_it(tmp_path):
    with Store(tmp_path, readonly=False) as store:
        store.put([_record("a")], {"a": b"jpeg"})
        with store.env.begin(write=True) as txn:
            txn.delete(b"format", db=store._meta)  # format 1 wrote none
    for readonly in (True, False):
        with pytest.raises(StoreFormatError, match=r"format 1, and this version reads format 2.*fashion-search index"):
            Store(tmp_path, readonly=readonly)
    with Store(tmp_path, readonly=False, reindex=True) as store:  # what the bulk indexer opens
        assert len(store) == 0 and store.thumbnail("a") is None
    with Store(tmp_path) as store:
        assert len(store) == 0


def test_a_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="fashion-search index"):
        Store(tmp_path / "nothing")


def test_add_products_describes_and_stores(tmp_path):
    from indexer.products import add_products, product_from_fields
    from tests.indexer_fakes import fake_describer, fake_models

    describer = fake_describer(fake_models(tmp_path / "models"))
    photo = Image.new("RGB", (80, 100), (200, 30, 35))
    photo.paste((20, 20, 200), (20, 20, 60, 80))
    with Store(tmp_path / "index", readonly=False) as store:
        product = product_from_fields({"id": "p1", "title": "red midi dress", "price": 30.0})
        (record,) = add_products(store, describer, [(product, photo)])
        assert record.photos[0].description.category == "dress"  # from the title
        meta = store.metadata("p1")
        assert meta["title"] == "red midi dress" and meta["category"] == "dress" and meta["price"] == 30.0
        assert store.thumbnail("p1")
        with pytest.raises(ValueError, match="id"):
            product_from_fields({"title": "dress"})
