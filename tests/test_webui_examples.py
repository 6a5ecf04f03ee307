"""Example photos: the demo's step that draws them, the folder the server reads once, the route that
serves only the listed ones, and the page's "Try an example" strip (fixtures: tests/webui_api_fixtures.py)."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catalogues.synth import KINDS, synthesize
from cli.demo import EXAMPLES, prepare, run_demo, write_examples
from cli.main import build_parser
from tests.webui_api_fixtures import png_bytes, search
from webui.app import create_app
from webui.examples import MANIFEST, load_examples


@pytest.fixture(scope="module")
def drawn(tmp_path_factory) -> Path:
    """Two example photos as the demo draws them."""
    folder = tmp_path_factory.mktemp("examples") / "examples"
    write_examples(folder, 2, seed=7)
    return folder


@pytest.fixture
def examples(drawn, tmp_path) -> Path:
    """The drawn examples, beside a photo of the folder that the manifest does not list and one outside it."""
    folder = shutil.copytree(drawn, tmp_path / "examples")
    (folder / "unlisted.jpg").write_bytes((folder / "outfit-1.jpg").read_bytes())
    (tmp_path / "outside.jpg").write_bytes((folder / "outfit-1.jpg").read_bytes())
    return folder


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_the_demo_draws_outfits_of_two_or_three_garments_that_are_no_catalogue_photo(drawn, tmp_path):
    listed = json.loads((drawn / MANIFEST).read_text())["examples"]
    assert [row["image"] for row in listed] == ["outfit-1.jpg", "outfit-2.jpg"]
    assert sorted(p.name for p in drawn.iterdir()) == ["examples.json", "outfit-1.jpg", "outfit-2.jpg"]
    for row in listed:
        assert 2 <= len(row["categories"]) <= 3 and set(row["categories"]) <= set(KINDS)
        assert [b[4] for b in row["boxes"]] == row["categories"]
        with Image.open(drawn / row["image"]) as im:
            assert im.format == "JPEG"
            width, height = im.size
        assert all(0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height for x0, y0, x1, y1, _ in row["boxes"])
    # the same seed draws the same photos; the catalogue of that seed holds none of them
    again = write_examples(tmp_path / "again", 2, seed=7).parent
    assert all(np.array_equal(_pixels(drawn / n), _pixels(again / n)) for n in ("outfit-1.jpg", "outfit-2.jpg"))
    catalogue = synthesize(tmp_path / "catalogue", 4, seed=7, progress=False).parent
    for photo in (catalogue / "images").iterdir():
        assert not any(np.array_equal(_pixels(photo), _pixels(drawn / n)) for n in ("outfit-1.jpg", "outfit-2.jpg"))
    assert list(load_examples(drawn)) == ["outfit-1.jpg", "outfit-2.jpg"]
    assert load_examples(drawn)["outfit-1.jpg"].categories == tuple(listed[0]["categories"])


def test_prepare_draws_the_examples_once(tmp_path, capsys):
    home = tmp_path / "demo"
    # every other step's output is there: only the examples are built
    for done in ("catalogue/products.jsonl", "models/attributes.pt", "models/detector.pt", "models/appearance.pt"):
        (home / done).parent.mkdir(parents=True, exist_ok=True)
        (home / done).touch()
    (home / "index").mkdir()
    (home / "index" / "DONE").touch()
    prepare(home, n=10, progress=False)
    out = capsys.readouterr().out
    assert "[demo] example photos: building" in out and "[demo] attribute model: cached" in out
    assert len(load_examples(home / EXAMPLES)) == 4
    prepare(home, n=10, progress=False)
    assert "[demo] example photos: cached" in capsys.readouterr().out


def test_the_demo_serves_its_examples_and_says_to_try_one(tmp_path, monkeypatch, capsys):
    import cli.demo
    import webui.serving

    served = {}
    monkeypatch.setattr(cli.demo, "prepare", lambda home, n, seed: home / "index")
    monkeypatch.setattr(webui.serving, "serve", lambda index, config: served.update(index=index, config=config))
    assert run_demo(tmp_path, 10, 0, port=0) == 0
    assert served["config"].examples == tmp_path / EXAMPLES
    assert 'click a photo under "Try an example"' in capsys.readouterr().out


def test_serve_takes_an_examples_folder(tmp_path, monkeypatch):
    import webui.serving
    from cli.webui import _serve

    args = build_parser().parse_args(["serve", str(tmp_path), "--examples", str(tmp_path / "ex")])
    served = {}
    monkeypatch.setattr(webui.serving, "serve", lambda index, **kw: served.update(kw))
    assert _serve(args) == 0 and served["config"].examples == tmp_path / "ex"
    assert build_parser().parse_args(["serve", str(tmp_path)]).examples is None
    monkeypatch.undo()
    # a missing folder is said before the port is bound (a busy one would say PortError) or a model loaded
    held = webui.serving.bind_sockets("127.0.0.1", 0)
    try:
        busy = webui.serving.ServeConfig(port=held[0].getsockname()[1], examples=tmp_path / "ex")
        with pytest.raises(FileNotFoundError, match="no examples folder"):
            webui.serving.serve(tmp_path, config=busy)
    finally:
        for sock in held:
            sock.close()


def test_the_route_serves_a_listed_example_and_nothing_else(engine, examples, checked_client):
    client = checked_client(create_app({"ENGINE": engine, "EXAMPLES": examples, "TESTING": True}))
    r = client.get("/examples/outfit-1.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert r.data == (examples / "outfit-1.jpg").read_bytes()
    assert client.get("/examples/outfit-1.jpg", headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    for odd in (
        "unlisted.jpg",
        MANIFEST,
        "..%2Foutside.jpg",
        "../outside.jpg",
        "%2e%2e/outside.jpg",
        "",
        "OUTFIT-1.JPG",
    ):
        assert client.get(f"/examples/{odd}").status_code == 404, odd
    assert client.get("/examples/..%2F..%2Fpyproject.toml").status_code == 404
    assert client.post("/examples/outfit-1.jpg").status_code == 405


def test_the_page_offers_the_examples_only_when_configured(engine, examples, checked_client):
    page = checked_client(create_app({"ENGINE": engine, "EXAMPLES": examples})).get("/").get_data(as_text=True)
    assert "Try an example" in page
    buttons = re.findall(r'<button type="button" class="example" data-example="([^"]+)"', page)
    assert buttons == ["outfit-1.jpg", "outfit-2.jpg"]
    assert 'src="/examples/outfit-1.jpg"' in page and 'alt="an example: ' in page

    plain = checked_client(create_app({"ENGINE": engine}))
    page = plain.get("/").get_data(as_text=True)
    assert "Try an example" not in page and 'class="example"' not in page
    assert plain.get("/examples/outfit-1.jpg").status_code == 404


def test_an_example_is_searched_like_an_upload(engine, examples, checked_client):
    client = checked_client(create_app({"ENGINE": engine, "EXAMPLES": examples}))
    r = search(client, client.get("/examples/outfit-2.jpg").data, option="auto", k=5)
    assert r.status_code == 200, r.data
    assert r.json["query"]["option"] == "auto" and r.json["results"]


def test_a_folder_without_a_list_offers_its_photos_by_name(tmp_path):
    (tmp_path / "b.png").write_bytes(png_bytes())
    jpeg = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(jpeg, "JPEG")
    (tmp_path / "a.jpg").write_bytes(jpeg.getvalue())
    (tmp_path / "notes.txt").write_text("not a photo")
    found = load_examples(tmp_path)
    assert list(found) == ["a.jpg", "b.png"] and found["b.png"].mimetype == "image/png"
    assert found["a.jpg"].label == "an example photo"


@pytest.mark.parametrize(
    ("listed", "error", "words"),
    [
        ([{"image": "../outside.jpg"}], ValueError, "file of the folder"),
        ([{"image": ".hidden.jpg"}], ValueError, "not starting with '.'"),
        ([{"image": "notes.txt"}], ValueError, "ending in"),
        ([{"image": "missing.jpg"}], FileNotFoundError, "no example photo"),
        ([{"image": "fake.jpg"}], ValueError, "not a photo"),
        ([{"image": "outfit-1.jpg"}, {"image": "outfit-1.jpg"}], ValueError, "twice"),
        ({"image": "outfit-1.jpg"}, ValueError, "not a list of examples"),
    ],
)
def test_a_bad_list_is_refused_at_start_up_naming_what_is_wrong(examples, listed, error, words):
    (examples / "fake.jpg").write_text("not a photo")
    (examples / MANIFEST).write_text(json.dumps({"examples": listed}))
    with pytest.raises(error, match=re.escape(words)):
        load_examples(examples)


def test_an_example_over_the_upload_limit_or_a_missing_folder_is_refused(examples, engine, tmp_path):
    with pytest.raises(ValueError, match="larger than the upload limit"):
        create_app({"ENGINE": engine, "EXAMPLES": examples, "MAX_CONTENT_LENGTH": 100})
    with pytest.raises(FileNotFoundError, match="no examples folder"):
        create_app({"ENGINE": engine, "EXAMPLES": tmp_path / "nowhere"})
