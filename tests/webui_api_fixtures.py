"""Fixtures and helpers of the REST API tests (registered as a pytest plugin in conftest.py)."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.standin import build_standin_index, open_standin_engine, standin_describer
from webui.app import create_app

TOKEN = "s3cret-token"
WEBUI = Path(__file__).resolve().parents[1] / "webui"


@pytest.fixture(scope="session")
def standin_index(synth_dump, tmp_path_factory):
    """The synthetic catalogue indexed once with the stand-ins; each test searches a copy."""
    describer = standin_describer()
    return build_standin_index(synth_dump, tmp_path_factory.mktemp("standin") / "index", describer), describer


@pytest.fixture
def engine(standin_index, tmp_path):
    """A fresh engine per test, on a copy of the index: updates made by one test stay out of the others."""
    index_dir, describer = standin_index
    shutil.copytree(index_dir, tmp_path / "index")
    with open_standin_engine(tmp_path / "index", describer) as engine:
        yield engine


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


def add(client, image: bytes | None, token: str | None = TOKEN, **fields):
    data = dict(fields)
    if image is not None:
        data["image"] = (io.BytesIO(image), "p.png")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/products", data=data, headers=headers, content_type="multipart/form-data")
