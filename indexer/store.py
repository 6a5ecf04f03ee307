"""The index directory: an LMDB store of described products plus what the daemon needs to start.

Layout::

    INDEX/store.lmdb/   products (id -> record), thumbnails (id -> JPEG of the first stored photo,
                        id/n -> of photo n), meta (the store's format, version, the last finished
                        bulk run)
    INDEX/index.json    models manifest, code bytes, colour bins, dump, build settings
    INDEX/models/       a copy of the model files, so ``serve`` and ``query`` need nothing else
    INDEX/report.json   the last bulk run's skipped rows
    INDEX/progress.json the bulk run's progress (running, done or failed), rewritten as it goes

A record is serialised without pickle: a 4-byte length, UTF-8 JSON metadata (the product's
fields and, under ``photos``, each photo's path, hash and description), then the raw code bytes
and the colour histogram bytes of each photo in turn; a photo's number is its place among them.
Every write is one LMDB transaction, so a killed process leaves the store as it was after its last
commit. A store of another format (``FORMAT``) is refused, with what to do.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb
import numpy as np

from foundation.atomic import atomic_write_text
from indexer.description import Description

logger = logging.getLogger(__name__)

STORE_DIR = "store.lmdb"
INDEX_JSON = "index.json"
MODELS_DIR = "models"
REPORT_JSON = "report.json"
PROGRESS_JSON = "progress.json"
FORMAT = 2  # 2: a record lists its photos (1: the first photo's fields flat, the others under "more")
MAP_SIZE = 1 << 40  # address space only: the file grows as data is written
THUMB_SIZE = 256
_DB_PRODUCTS, _DB_THUMBS, _DB_META = b"products", b"thumbnails", b"meta"


class StoreFormatError(ValueError):
    """A store written in another format than this version's: it must be indexed again."""


@dataclass
class Photo:
    """One stored photo of a product."""

    path: str  # as the dump gave it ("" for a photo sent through the API)
    image_hash: str  # sha256 prefix of the photo's bytes: a query with the same bytes finds it
    description: Description  # timings_ms left empty


def _description_head(d: Description) -> dict:
    return {
        "category": d.category,
        "attributes": [[g, v, round(p, 5)] for g, (v, p) in d.attributes.items()],
        "categories": [[c, round(p, 5)] for c, p in d.categories],
        "roi": list(d.roi),
        "fallback": d.fallback,
        "code": int(np.asarray(d.code).size),
        "colour": [int(np.asarray(d.colour).size), np.asarray(d.colour).dtype.str],
    }


def _description_bytes(d: Description) -> bytes:
    return np.ascontiguousarray(d.code, np.uint8).tobytes() + np.ascontiguousarray(d.colour).tobytes()


def _read_description(head: dict, raw: bytes, off: int) -> tuple[Description, int]:
    code = np.frombuffer(raw, np.uint8, head["code"], off)
    off += head["code"]
    count, dtype = head["colour"]
    colour = np.frombuffer(raw, np.dtype(dtype), count, off)
    desc = Description(
        category=head["category"],
        attributes={g: (v, p) for g, v, p in head["attributes"]},
        categories=[(c, p) for c, p in head["categories"]],
        roi=tuple(head["roi"]),
        fallback=head["fallback"],
        code=code,
        colour=colour,
    )
    return desc, off + colour.nbytes


def thumbnail_key(product_id: str, number: int = 0) -> bytes:
    """Photo ``number``'s thumbnail key: the id for the first photo, ``id/n`` for the others (``/``
    never occurs in an id)."""
    return (product_id if number == 0 else f"{product_id}/{number}").encode()


@dataclass
class ProductRecord:
    id: str
    title: str
    category_path: str
    price: float | None
    url: str | None
    photos: tuple[Photo, ...]  # at least one; photo n is ``photos[n]``
    content_hash: str

    def metadata(self) -> dict:
        first = self.photos[0]
        d = first.description
        return {
            "id": self.id,
            "title": self.title,
            "category_path": self.category_path,
            "price": self.price,
            "url": self.url,
            "image": first.path,
            "category": d.category,
            "attributes": {g: v for g, (v, _p) in d.attributes.items()},
            "roi": list(d.roi),
            "fallback": d.fallback,
            "images": [p.path for p in self.photos],
        }

    def to_bytes(self) -> bytes:
        head = {
            "id": self.id,
            "title": self.title,
            "category_path": self.category_path,
            "price": self.price,
            "url": self.url,
            "hash": self.content_hash,
            "photos": [
                {"path": p.path, "image_hash": p.image_hash, **_description_head(p.description)} for p in self.photos
            ],
        }
        meta = json.dumps(head, separators=(",", ":")).encode()
        body = b"".join(_description_bytes(p.description) for p in self.photos)
        return struct.pack("<I", len(meta)) + meta + body

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> ProductRecord:
        raw = bytes(raw)
        (n,) = struct.unpack_from("<I", raw)
        head = json.loads(raw[4 : 4 + n])
        photos, off = [], 4 + n
        for p in head["photos"]:
            desc, off = _read_description(p, raw, off)
            photos.append(Photo(p["path"], p["image_hash"], desc))
        return cls(
            head["id"], head["title"], head["category_path"], head["price"], head["url"], tuple(photos), head["hash"]
        )


class Store:
    """The LMDB store of an index directory.

    Args:
        path: the index directory (``store.lmdb`` inside it is the LMDB environment).
        readonly: open for reading only; a missing index is then an error.
        reindex: a store of another format is emptied, to be indexed again (the bulk indexer),
            instead of refused (:class:`StoreFormatError`).
    """

    def __init__(self, path: str | Path, *, readonly: bool = True, reindex: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        lmdb_path = self.path / STORE_DIR
        if readonly and not lmdb_path.is_dir():
            raise FileNotFoundError(f"no index at {self.path}: build one with `fashion-search index`")
        if not readonly:
            lmdb_path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(lmdb_path),
            map_size=MAP_SIZE,
            max_dbs=4,
            readonly=readonly,
            subdir=True,
            readahead=False,
            max_readers=256,
        )
        self._products = self.env.open_db(_DB_PRODUCTS, create=not readonly)
        self._thumbs = self.env.open_db(_DB_THUMBS, create=not readonly)
        self._meta = self.env.open_db(_DB_META, create=not readonly)
        try:
            self._check_format(reindex=reindex and not readonly)
        except BaseException:
            self.env.close()
            raise

    def _check_format(self, *, reindex: bool) -> None:
        """Refuse (or, with ``reindex``, empty) a store of another format; mark a new one with ours."""
        with self.env.begin() as txn:
            raw = txn.get(b"format", db=self._meta)
            empty = txn.stat(self._products)["entries"] == 0
        found = int(raw) if raw else None if empty else 1  # format 1 did not say
        if found == FORMAT:
            return
        if found is not None and not reindex:
            raise StoreFormatError(
                f"the index at {self.path} holds a store of format {found}, and this version reads format "
                f"{FORMAT}: index the dump again (`fashion-search index DUMP --models MODELS --out {self.path}`)"
            )
        if self.readonly:  # an empty store that says nothing: nothing to misread
            return
        with self.env.begin(write=True) as txn:
            if found is not None:
                logger.warning("the store at %s is of format %d: its products are indexed again", self.path, found)
                txn.drop(self._products, delete=False)
                txn.drop(self._thumbs, delete=False)
                self._bump(txn)
            txn.put(b"format", str(FORMAT).encode(), db=self._meta)

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        with self.env.begin() as txn:
            return txn.stat(self._products)["entries"]

    def __contains__(self, product_id: str) -> bool:
        with self.env.begin() as txn:
            return txn.get(product_id.encode(), db=self._products) is not None

    def get(self, product_id: str) -> ProductRecord | None:
        with self.env.begin() as txn:
            raw = txn.get(str(product_id).encode(), db=self._products)
        return None if raw is None else ProductRecord.from_bytes(raw)

    def metadata(self, product_id: str) -> dict | None:
        record = self.get(product_id)
        return None if record is None else record.metadata()

    def thumbnail(self, product_id: str, number: int = 0) -> bytes | None:
        """Photo ``number``'s thumbnail (``ProductRecord.photos``' order)."""
        with self.env.begin() as txn:
            return txn.get(thumbnail_key(str(product_id), number), db=self._thumbs)

    def iter_records(self) -> Iterator[ProductRecord]:
        """Every record, in id order, from one read snapshot."""
        with self.env.begin(buffers=True) as txn:
            for _key, raw in txn.cursor(db=self._products):
                yield ProductRecord.from_bytes(raw)

    def hashes(self) -> dict[str, str]:
        """id -> content hash of every record (what an incremental run compares against)."""
        out = {}
        with self.env.begin(buffers=True) as txn:
            for key, raw in txn.cursor(db=self._products):
                raw = bytes(raw)
                (n,) = struct.unpack_from("<I", raw)
                out[bytes(key).decode()] = json.loads(raw[4 : 4 + n])["hash"]
        return out

    def version(self) -> int:
        """A counter bumped by every write: a RAM snapshot of an older version is stale."""
        return self._counter(b"version")

    def built(self) -> int:
        """A counter bumped when a bulk run finishes: a server serving this index re-loads then."""
        return self._counter(b"built")

    def _counter(self, key: bytes) -> int:
        with self.env.begin() as txn:
            raw = txn.get(key, db=self._meta)
        return int(raw) if raw else 0

    def progress(self) -> dict | None:
        """What ``progress.json`` says of the last bulk run, None when there is none or it cannot be read."""
        try:
            return json.loads((self.path / PROGRESS_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def info(self) -> dict:
        path = self.path / INDEX_JSON
        info = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        info["products"] = len(self)
        info["version"] = self.version()
        return info

    def models_dir(self) -> Path:
        return self.path / MODELS_DIR

    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in (self.path / STORE_DIR).iterdir())

    # -- writing ----------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.readonly:
            raise PermissionError(f"the store {self.path} is open read-only")

    def put(self, records: Iterable[ProductRecord], thumbnails: dict[str, bytes | list[bytes]] | None = None) -> int:
        """Add or replace records (and their thumbnails: one, or one a stored photo in the record's
        order) in one transaction; a replaced product's old photos go."""
        self._check_writable()
        thumbnails = thumbnails or {}
        n = 0
        with self.env.begin(write=True) as txn:
            for r in records:
                key = r.id.encode()
                txn.put(key, r.to_bytes(), db=self._products)
                if r.id in thumbnails:
                    thumbs = thumbnails[r.id]
                    self._drop_thumbnails(txn, r.id)
                    for number, data in enumerate([thumbs] if isinstance(thumbs, bytes) else thumbs):
                        txn.put(thumbnail_key(r.id, number), data, db=self._thumbs)
                n += 1
            self._bump(txn)
        return n

    def _drop_thumbnails(self, txn, product_id: str) -> None:
        txn.delete(product_id.encode(), db=self._thumbs)
        prefix = f"{product_id}/".encode()
        cursor = txn.cursor(db=self._thumbs)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                if not cursor.delete():
                    break

    def delete(self, ids: Iterable[str]) -> int:
        """Remove products (and thumbnails) in one transaction; returns how many existed."""
        self._check_writable()
        n = 0
        with self.env.begin(write=True) as txn:
            for pid in ids:
                key = str(pid).encode()
                n += bool(txn.delete(key, db=self._products))
                self._drop_thumbnails(txn, str(pid))
            self._bump(txn)
        return n

    def mark_built(self) -> int:
        """Say that a bulk run has finished (``built``); returns the new count."""
        self._check_writable()
        with self.env.begin(write=True) as txn:
            return self._count_up(txn, b"built")

    def write_progress(self, progress: dict) -> None:
        self._check_writable()
        atomic_write_text(self.path / PROGRESS_JSON, json.dumps(progress) + "\n")

    def _bump(self, txn) -> None:
        self._count_up(txn, b"version")

    def _count_up(self, txn, key: bytes) -> int:
        raw = txn.get(key, db=self._meta)
        value = (int(raw) if raw else 0) + 1
        txn.put(key, str(value).encode(), db=self._meta)
        return value

    def write_info(self, info: dict) -> None:
        self._check_writable()
        atomic_write_text(
            self.path / INDEX_JSON, json.dumps({"format": FORMAT, **info}, indent=1, sort_keys=True) + "\n"
        )
