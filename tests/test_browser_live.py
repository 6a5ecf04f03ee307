"""The page while the catalogue is re-indexed under it, in Debian's Chromium (see test_browser.py).

A waitress server in this process serves the real ``SearchEngine`` over an index directory (the
indexer tests' stand-in models); `build_index` runs into that directory from another process, as
`fashion-search index` would. The page shows the run's progress and, once the server has swapped
the new index in, says so and offers to search again; the new product, indexed with two photos,
then shows the photo that matched.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image, ImageOps

from indexer.bulk import BulkConfig, build_index
from indexer.store import Store
from search.engine import SearchEngine, load_ram_index
from tests.indexer_fakes import fake_describer, fake_models
from tests.test_browser import ARTIFACTS, _check, browser  # noqa: F401 - the module's Chromium
from tests.test_live_reindex import _REINDEX, ROOT
from tests.test_serve import run_in_thread
from webui.app import create_app
from webui.serving import ServeConfig, make_server

pytestmark = pytest.mark.browser


@pytest.fixture
def live(synth_dump, tmp_path):
    """(url, engine, the new dump, the models, the mirrored photo) of a server over 10 products."""
    models = fake_models(tmp_path / "models")
    rows = [json.loads(line) for line in synth_dump.read_text().splitlines()[:12]]
    for r in rows:
        r["image"] = str(synth_dump.parent / r["image"])
    mirrored = tmp_path / "mirrored.jpg"
    ImageOps.mirror(Image.open(rows[11]["image"]).convert("RGB")).save(mirrored, quality=92)
    twin = {**rows[11], "id": "twin", "images": [str(mirrored)]}
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    new.write_text("".join(json.dumps(r) + "\n" for r in [*rows[:10], twin]))
    index = tmp_path / "index"
    build_index(old, models, index, BulkConfig(workers=0, progress=False), describer=fake_describer(models))
    ram = load_ram_index(index)
    engine = SearchEngine(describer=fake_describer(models), store=Store(index, readonly=True), index=ram)
    app = create_app({"ENGINE": engine, "RELOAD_S": 0.1, "INDEX_POLL_MS": 200})
    running = make_server(app, ServeConfig(host="127.0.0.1", port=0, threads=4))
    stop = run_in_thread(running)
    yield f"http://127.0.0.1:{running.effective_port}/", index, new, models, mirrored
    stop()
    app.extensions["fashion_search"].watcher.stop()
    engine.close()


def test_the_page_follows_a_re_index_and_shows_the_photo_that_matched(browser, live, api_contract):  # noqa: F811
    from playwright.sync_api import expect

    url, index, new, models, mirrored = live
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    problems, responses = [], []
    page.on("response", lambda r: responses.append(r) if "/api/" in r.url else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.goto(url)
    expect(page.locator("#catalogue-size")).to_have_text("10 products")
    with page.expect_response(lambda r: r.url.endswith("/api/search")):
        page.set_input_files("#file", str(mirrored))
    expect(page.locator(".card").first).to_be_visible()
    assert "twin" not in page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.id)")
    expect(page.locator("#updated")).to_be_hidden()

    script = _REINDEX.format(root=str(ROOT), dump=str(new), models=str(models), out=str(index))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expect(page.locator("#updated")).to_be_visible()
    expect(page.locator("#updated-text")).to_contain_text("11 products")
    expect(page.locator("#catalogue-size")).to_have_text("11 products")
    page.screenshot(path=str(ARTIFACTS / "live-updated.png"), full_page=True)
    with page.expect_response(lambda r: r.url.endswith("/api/search")):
        page.click("#updated-search")
    card = page.locator(".card").first
    expect(card).to_have_attribute("data-id", "twin")
    expect(card).to_have_attribute("data-photo", "1")  # its second photo is the mirrored one
    expect(card.locator(".photo-badge")).to_have_text("photo 2")
    assert card.locator("img").get_attribute("src").endswith("/api/products/twin/image?photo=1")
    expect(page.locator("#updated")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "live-photo-matched.png"), full_page=True)
    for r in responses:
        if r.status != 304:
            _check(api_contract, r.request.method, r.url, r.status, r.headers, r.body())
    context.close()
    assert not problems, problems
